// tether.js: the JavaScript client of the tether gateway (SPEC §14), one
// dependency-free ES module for browsers and Node 18+.
//
//   const client = await connect("ws://localhost:8080/", { token });
//   client.on("chat", (data, message) => ...);
//   const reply = await client.request("slow.call", { n: 1 }, { timeout: 2000 });
//   await client.subscribe("lobby");
//   await client.publish("lobby", "chat", { text: "hi" });
//   for await (const message of client) ...;
//   client.close();

/** An error reply of the gateway, or a local failure; `code` says which
 * (`timeout`, `disconnected`, `closed`, `connect_failed`, `no_websocket`, or a
 * gateway code such as `forbidden`). */
export class TetherError extends Error {
  constructor(code, message, data) {
    super(message ? `${code}: ${message}` : code);
    this.name = "TetherError";
    this.code = code;
    this.data = data;
  }
}

/** Full-jitter backoff: a random pause in [0, min(ceiling, base * 2^attempt)]
 * ms, so that many clients cut off together do not come back in step. */
export function backoffDelay(attempt, { base = 500, ceiling = 30000 } = {}) {
  const bound = Math.min(ceiling, base * 2 ** Math.min(attempt, 30));
  return Math.random() * bound;
}

/** Close codes after which trying again cannot help: kicked by the host. */
const FINAL_CLOSE_CODES = new Set([4010]);
/** Close codes that say the credentials are bad: a refreshed token may help. */
const CREDENTIAL_CLOSE_CODES = new Set([4001, 4003]);
/** The requestId of heartbeat probes; requests use numbers. */
const PROBE_ID = "tether.probe";
const OPEN = 1;

const DEFAULTS = {
  timeout: 10000, // default of request(), ms
  openTimeout: 10000, // from the socket's creation to `authenticated`, ms
  reconnect: true,
  backoff: { base: 500, ceiling: 30000 },
  pingInterval: 20000, // the gateway's ping_interval_s, ms
  pingTimeout: 10000, // grace after a missed ping before the peer is dead, ms
  refreshBefore: 60, // seconds before expiresAt to call refreshToken
  maxQueue: 1000, // messages an async iterator keeps before dropping the oldest
};

/** Connects and authenticates; resolves with a {@link Client}. */
export async function connect(url, options = {}) {
  const client = new Client(url, options);
  await client._start();
  return client;
}

export class Client {
  constructor(url, options = {}) {
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this.options.backoff = { ...DEFAULTS.backoff, ...(options.backoff || {}) };
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    /** The last `authenticated` data (clientId, sub, permissions, rooms, expiresAt). */
    this.session = null;
    this._token = typeof options.token === "function" ? null : options.token;
    this._handlers = new Map();
    this._iterators = new Set();
    this._pending = new Map();
    /** room -> {offset, epoch} for the rooms subscribed to (SPEC §10). */
    this.rooms = new Map();
    this._nextId = 1;
    this._ws = null;
    this._ready = false;
    this._waiters = [];
    this._closed = false;
    this._attempt = 0;
    this._upSince = 0;
    this._timers = new Set();
    this._refreshTimer = null;
    this._watchdog = null;
  }

  // -- the public shape ------------------------------------------------------

  /** `handler(data, message)` for each `event` that is not a reply; `"*"`
   * for every one. Local events: `disconnected` {code, reason},
   * `reconnecting` {attempt, delay}, `resubscribed` {room, recovered, offset,
   * epoch}, `refreshed` {expiresAt}, `closed` {code, reason}. Returns a
   * function that removes the handler. */
  on(event, handler) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(handler);
    return () => this.off(event, handler);
  }

  off(event, handler) {
    const set = this._handlers.get(event);
    if (set) set.delete(handler);
  }

  /** An async iterator of messages (all, or only `event`s), ending at close(). */
  events(event) {
    const queue = [];
    let wake = null;
    const entry = {
      event,
      push: (message) => {
        if (queue.length >= this.options.maxQueue) queue.shift();
        queue.push(message);
        if (wake) wake();
      },
      end: () => {
        entry.ended = true;
        if (wake) wake();
      },
      ended: false,
    };
    this._iterators.add(entry);
    const iterators = this._iterators;
    return {
      async next() {
        while (!queue.length && !entry.ended) {
          await new Promise((resolve) => (wake = resolve));
          wake = null;
        }
        if (queue.length) return { value: queue.shift(), done: false };
        iterators.delete(entry);
        return { value: undefined, done: true };
      },
      async return() {
        iterators.delete(entry);
        entry.end();
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }

  [Symbol.asyncIterator]() {
    return this.events();
  }

  /** Sends `event` and resolves with the reply's data; rejects with a
   * TetherError (the error reply's code, or `timeout`; waiting for a
   * reconnection counts toward the timeout; `disconnected` when the
   * connection is lost before the reply). */
  async request(event, data, { timeout } = {}) {
    if (this._closed) throw new TetherError("closed", "the client was closed");
    const ms = timeout ?? this.options.timeout;
    const deadline = Date.now() + ms;
    await this._whenReady(ms);
    return this._ask(event, data, Math.max(0, deadline - Date.now()));
  }

  /** Joins `room`; on every reconnection the client subscribes again and
   * recovers what it missed (SPEC §10). Resolves with the `subscribed` data. */
  async subscribe(room, options) {
    const reply = await this.request("subscribe", { room }, options);
    this.rooms.set(room, {
      offset: reply && typeof reply.offset === "number" ? reply.offset : null,
      epoch: reply && reply.epoch !== undefined ? reply.epoch : null,
    });
    return reply;
  }

  async unsubscribe(room, options) {
    this.rooms.delete(room);
    return this.request("unsubscribe", { room }, options);
  }

  /** Resolves with the `published` data ({room, delivered}). */
  async publish(room, event, data, options) {
    return this.request("publish", { room, event, data }, options);
  }

  /** Drops the connection and opens a new one (re-subscribing and
   * recovering), e.g. after the network changed. */
  reconnect() {
    const ws = this._ws;
    if (this._closed || this._opening || !ws) return;
    try {
      ws.close(1000);
    } catch {
      // already closing
    }
    this._lost(ws, 1000, "reconnect requested");
  }

  /** Closes for good: pending requests reject with code `closed`. */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._ready = false;
    this._stopTimers();
    if (this._abortOpen) this._abortOpen(new TetherError("closed", "the client was closed"));
    const ws = this._ws;
    this._detach();
    if (ws) {
      try {
        ws.close(1000);
      } catch {
        // already closing
      }
    }
    this._failPending("closed", "the client was closed");
    this._wake(new TetherError("closed", "the client was closed"));
    for (const it of this._iterators) it.end();
    this._iterators.clear();
  }

  get connected() {
    return this._ready;
  }

  // -- connecting ------------------------------------------------------------

  async _start() {
    if (!this.WebSocket) {
      throw new TetherError(
        "no_websocket",
        "no global WebSocket: pass {WebSocket} (e.g. from the ws package)",
      );
    }
    try {
      await this._open();
    } catch (e) {
      this._closed = true;
      this._stopTimers();
      throw e;
    }
  }

  /** The token for a new connection: the last refreshed one, else the
   * option's. One that is expired (by its `exp`) or was refused gets
   * replaced through `refreshToken` first, e.g. after a long outage. */
  async _currentToken() {
    const source = this.options.token;
    let token = this._token || (typeof source === "function" ? await source() : source);
    const exp = tokenExpiry(token);
    const stale = this._needsRefresh || (exp !== null && exp * 1000 <= Date.now() + 1000);
    if (stale && this.options.refreshToken) {
      token = await this.options.refreshToken();
      this._token = token;
      this._needsRefresh = false;
    }
    return token;
  }

  /** One connection up to `authenticated`, then re-subscribes. */
  async _open() {
    this._opening = true;
    try {
      await this._openOnce();
    } finally {
      this._opening = false;
    }
  }

  async _openOnce() {
    const token = await this._currentToken();
    if (this._closed) throw new TetherError("closed", "the client was closed");
    const protocols = token ? ["tether.v1", `tether.bearer.${token}`] : ["tether.v1"];
    const ws = new this.WebSocket(this.url, protocols);
    this._ws = ws;
    const authenticated = await new Promise((resolve, reject) => {
      const fail = (error) => {
        this._abortOpen = null;
        clearTimeout(timer);
        this._detach();
        try {
          ws.close();
        } catch {
          // not open yet
        }
        reject(error);
      };
      const timer = setTimeout(
        () => fail(new TetherError("connect_failed", `not authenticated within ${this.options.openTimeout} ms`)),
        this.options.openTimeout,
      );
      ws.onmessage = (e) => {
        const message = parse(e.data);
        if (!message) return;
        this._seen();
        if (message.event === "connected") {
          if (!(message.data && message.data.authenticated)) {
            fail(new TetherError("auth_failed", "the gateway did not accept the token"));
          }
        } else if (message.event === "authenticated") {
          clearTimeout(timer);
          resolve(message);
        } else if (message.event === "error") {
          const error = message.data || {};
          fail(new TetherError(error.code || "connect_failed", error.message, error));
        }
      };
      ws.onclose = (e) =>
        fail(new TetherError("connect_failed", `closed ${e.code}${e.reason ? ` ${e.reason}` : ""} before authentication`));
      ws.onerror = () => {}; // a close follows
      this._abortOpen = fail;
    });
    this._abortOpen = null;
    if (this._closed) throw new TetherError("closed", "the client was closed");
    ws.onmessage = (e) => this._receive(ws, e.data);
    ws.onclose = (e) => this._lost(ws, e.code, e.reason || "");
    if (typeof ws.on === "function") {
      // The ws package shows the gateway's pings: they prove the peer alive.
      ws.on("ping", () => this._seen());
    }
    this._session(authenticated.data);
    this._startWatchdog(ws);
    await this._resubscribe();
    this._upSince = Date.now();
    this._ready = true;
    this._wake(null);
    this._dispatch(authenticated);
  }

  _session(data) {
    this.session = data || null;
    this._scheduleRefresh();
  }

  async _resubscribe() {
    for (const [room, state] of [...this.rooms]) {
      const data = { room };
      if (state.epoch !== null && state.offset !== null) {
        data.since = { offset: state.offset, epoch: state.epoch };
      }
      let reply;
      try {
        reply = await this._ask("subscribe", data, this.options.timeout);
      } catch (e) {
        if (e.code === "room_not_allowed" || e.code === "forbidden") {
          // The token no longer allows it: leave it, keep the others.
          this.rooms.delete(room);
          this._emit("resubscribed", { room, recovered: false, error: e.code });
          continue;
        }
        throw e;
      }
      const recovered = Boolean(reply && reply.recovered);
      if (reply && reply.epoch !== undefined && reply.epoch !== state.epoch) {
        // A new history: what follows is counted from the lower of the new
        // current offset and the one asked for, so nothing sent is dropped.
        const current = typeof reply.offset === "number" ? reply.offset : null;
        state.epoch = reply.epoch;
        state.offset = current === null || state.offset === null ? current : Math.min(current, state.offset);
      }
      this._emit("resubscribed", {
        room,
        recovered,
        offset: reply ? reply.offset : undefined,
        epoch: reply ? reply.epoch : undefined,
      });
    }
  }

  /** The connection `ws` ended (closed by either side, or found dead). */
  _lost(ws, code, reason) {
    if (ws !== this._ws) return;
    this._detach();
    this._ready = false;
    this._stopTimers();
    this._failPending("disconnected", `the connection was lost (${code}${reason ? ` ${reason}` : ""})`);
    if (this._closed) return;
    this._emit("disconnected", { code, reason });
    if (this._opening) return; // _open fails and its caller decides
    // Backoff starts over only after a connection that lasted: a gateway
    // that accepts and drops at once is not hammered.
    if (Date.now() - this._upSince > this.options.backoff.ceiling) this._attempt = 0;
    const renewable = this.options.refreshToken || typeof this.options.token === "function";
    const hopeless = CREDENTIAL_CLOSE_CODES.has(code) && !renewable;
    if (!this.options.reconnect || FINAL_CLOSE_CODES.has(code) || hopeless) {
      this._emit("closed", { code, reason });
      this.close();
      return;
    }
    if (CREDENTIAL_CLOSE_CODES.has(code) && this.options.refreshToken) {
      this._token = null; // the next connection asks for a fresh one
      this._needsRefresh = true;
    }
    this._reconnectLater();
  }

  _reconnectLater() {
    const delay = backoffDelay(this._attempt, this.options.backoff);
    this._attempt += 1;
    this._emit("reconnecting", { attempt: this._attempt, delay });
    this._later(delay, async () => {
      if (this._closed) return;
      try {
        await this._open();
      } catch {
        if (this._closed) return;
        const ws = this._ws;
        this._detach();
        this._ready = false;
        this._stopTimers();
        this._failPending("disconnected", "the connection was lost while reopening");
        try {
          if (ws) ws.close();
        } catch {
          // never opened
        }
        this._reconnectLater();
      }
    });
  }

  /** Stops listening to the current socket (it may still be closing). */
  _detach() {
    const ws = this._ws;
    this._ws = null;
    if (!ws) return;
    ws.onmessage = null;
    ws.onclose = null;
    // Kept as a no-op: the ws package throws an error event nobody listens to
    // (closing while still connecting).
    ws.onerror = () => {};
  }

  // -- liveness and token refresh ----------------------------------------------

  _seen() {
    this._lastSeen = Date.now();
    this._probed = false;
  }

  /** Dead-peer detection: the gateway pings every `pingInterval`. A
   * connection silent that long (browsers hide pings; the gateway's interval
   * may be longer) also sends a `ping` event, whose `pong` proves the peer
   * alive. Nothing for `pingInterval + pingTimeout` → reconnect (code 4000). */
  _startWatchdog(ws) {
    const { pingInterval, pingTimeout } = this.options;
    if (!(pingInterval > 0)) return;
    this._seen();
    const every = Math.max(100, Math.min(pingInterval, pingTimeout) / 4);
    this._watchdog = setInterval(() => {
      if (ws !== this._ws) return;
      const idle = Date.now() - this._lastSeen;
      if (idle > pingInterval + pingTimeout) {
        if (typeof ws.terminate === "function") ws.terminate();
        else ws.close();
        this._lost(ws, 4000, "dead peer: no ping from the gateway");
      } else if (idle >= pingInterval && !this._probed && ws.readyState === OPEN) {
        this._probed = true;
        ws.send(JSON.stringify({ event: "ping", requestId: PROBE_ID }));
      }
    }, every);
  }

  /** Calls `refreshToken` `refreshBefore` seconds before `expiresAt` (at
   * most half the time left) and sends `auth` with the new token, which
   * extends the session in place (SPEC §4 `token_expired`). If the gateway
   * refuses it, the client reconnects with the new token and recovers. */
  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    const expiresAt = this.session && this.session.expiresAt;
    if (!this.options.refreshToken || typeof expiresAt !== "number") return;
    const left = expiresAt * 1000 - Date.now();
    const margin = Math.min(this.options.refreshBefore * 1000, left / 2);
    this._refreshTimer = setTimeout(() => this._refresh(), Math.max(0, left - margin));
  }

  async _refresh() {
    const ws = this._ws;
    let token;
    try {
      token = await this.options.refreshToken();
    } catch {
      this._later(1000, () => this._refresh());
      return;
    }
    if (this._closed || ws !== this._ws) return;
    this._token = token;
    try {
      const data = await this._ask("auth", { token }, this.options.timeout);
      this._session(data);
      this._emit("refreshed", { expiresAt: data ? data.expiresAt : null });
    } catch {
      // Not accepted in place: a new connection with the new token, recovering.
      if (ws === this._ws) this.reconnect();
    }
  }

  _later(ms, fn) {
    const timer = setTimeout(() => {
      this._timers.delete(timer);
      fn();
    }, ms);
    this._timers.add(timer);
  }

  _stopTimers() {
    clearInterval(this._watchdog);
    clearTimeout(this._refreshTimer);
    this._watchdog = null;
    this._refreshTimer = null;
    if (this._closed) {
      for (const t of this._timers) clearTimeout(t);
      this._timers.clear();
    }
  }

  // -- messages --------------------------------------------------------------

  _whenReady(ms) {
    if (this._ready) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      const timer = setTimeout(() => {
        this._waiters = this._waiters.filter((w) => w !== waiter);
        reject(new TetherError("timeout", `not connected within ${ms} ms`));
      }, ms);
      waiter.timer = timer;
      this._waiters.push(waiter);
    });
  }

  _wake(error) {
    const waiters = this._waiters;
    this._waiters = [];
    for (const w of waiters) {
      clearTimeout(w.timer);
      if (error) w.reject(error);
      else w.resolve();
    }
  }

  _ask(event, data, ms) {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) {
      return Promise.reject(new TetherError("disconnected", "not connected"));
    }
    const requestId = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(requestId);
        reject(new TetherError("timeout", `no reply to ${event} within ${ms} ms`));
      }, ms);
      this._pending.set(requestId, { resolve, reject, timer });
      const message = { event, requestId };
      if (data !== undefined) message.data = data;
      ws.send(JSON.stringify(message));
    }).then((reply) => {
      if (reply.event === "error") {
        const error = reply.data || {};
        throw new TetherError(error.code || "error", error.message, error);
      }
      return reply.data;
    });
  }

  _failPending(code, text) {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(new TetherError(code, text));
    }
  }

  _receive(ws, text) {
    if (ws !== this._ws) return;
    this._seen();
    const message = parse(text);
    if (!message) return;
    if (message.requestId !== undefined) {
      const pending = this._pending.get(message.requestId);
      if (pending) {
        this._pending.delete(message.requestId);
        clearTimeout(pending.timer);
        pending.resolve(message);
      }
      return; // a late reply, or the heartbeat's pong
    }
    if (typeof message.room === "string" && typeof message.offset === "number") {
      const state = this.rooms.get(message.room);
      if (state && state.offset !== null) {
        // A message recovery already delivered, sent again: drop it.
        if (message.offset <= state.offset) return;
        state.offset = message.offset;
      } else if (state) {
        state.offset = message.offset;
      }
    }
    this._dispatch(message);
  }

  _emit(event, data) {
    this._dispatch({ event, data, local: true });
  }

  _dispatch(message) {
    for (const key of [message.event, "*"]) {
      const handlers = this._handlers.get(key);
      if (!handlers) continue;
      for (const handler of [...handlers]) {
        try {
          const result = handler(message.data, message);
          if (result && typeof result.catch === "function") result.catch(reportHandlerError);
        } catch (e) {
          reportHandlerError(e);
        }
      }
    }
    for (const it of this._iterators) {
      if (it.event === undefined || it.event === message.event) it.push(message);
    }
  }
}

function parse(text) {
  if (typeof text !== "string") return null; // the gateway sends text frames only
  try {
    const message = JSON.parse(text);
    return message && typeof message === "object" && !Array.isArray(message) ? message : null;
  } catch {
    return null;
  }
}

/** The `exp` claim of a JWT (UNIX seconds), or null when it has none or
 * is not a JWT. Read only to know when to refresh; the gateway verifies. */
function tokenExpiry(token) {
  if (typeof token !== "string") return null;
  const payload = token.split(".")[1];
  if (!payload) return null;
  try {
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const exp = JSON.parse(json).exp;
    return typeof exp === "number" ? exp : null;
  } catch {
    return null;
  }
}

function reportHandlerError(error) {
  console.error("tether: an event handler failed:", error);
}
