// tether.js against the real gateway (run by tests/js_client.rs, which starts
// it and passes TETHER_URL, TETHER_TOKENS, TETHER_CONTROL and
// TETHER_NODE_MODULES): `node --test clients/js/test/`.
// The tests share one gateway and run in order (restart and freeze affect all).

import { test } from "node:test";
import assert from "node:assert/strict";
import { createConnection } from "node:net";
import { createRequire } from "node:module";
import { join } from "node:path";
import { connect, backoffDelay, TetherError } from "../tether.js";

const URL = process.env.TETHER_URL;
const TOKENS = JSON.parse(process.env.TETHER_TOKENS || "{}");
const require = createRequire(join(process.env.TETHER_NODE_MODULES || ".", "x.js"));
// Node 20 has no global WebSocket: the ws package (it also shows pings).
const WebSocket = require("ws");
const OPTIONS = { WebSocket, backoff: { base: 100, ceiling: 1000 }, timeout: 5000 };

const open = (token, extra = {}) => connect(URL, { token, ...OPTIONS, ...extra });

/** The next `event` on `client` (data), or a rejection after `ms`. */
function next(client, event, ms = 5000) {
  const waiting = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms);
    const off = client.on(event, (data) => {
      clearTimeout(timer);
      off();
      resolve(data);
    });
  });
  waiting.catch(() => {}); // a test that fails earlier leaves it unawaited
  return waiting;
}

/** Asks the Rust test to act on the gateway; resolves with its answer. */
function control(command) {
  return new Promise((resolve, reject) => {
    const socket = createConnection(Number(process.env.TETHER_CONTROL), "127.0.0.1");
    let answer = "";
    socket.on("data", (chunk) => {
      answer += chunk;
      if (answer.endsWith("\n")) {
        socket.end();
        resolve(answer.trim());
      }
    });
    socket.on("error", reject);
    socket.write(`${command}\n`);
  });
}

/** Runs `body(...clients)` with a client per spec (a token, or [token,
 * options]), closing them all after. */
async function withClients(specs, body) {
  const clients = [];
  try {
    for (const spec of specs) {
      const [token, extra] = Array.isArray(spec) ? spec : [spec, {}];
      clients.push(await open(token, extra));
    }
    return await body(...clients);
  } finally {
    for (const client of clients) client.close();
  }
}

const codeOf = (promise) => promise.then(() => "resolved", (e) => e.code);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("backoff has full jitter under a ceiling", () => {
  for (let attempt = 0; attempt < 40; attempt++) {
    const delay = backoffDelay(attempt, { base: 100, ceiling: 1000 });
    assert.ok(delay >= 0 && delay <= Math.min(1000, 100 * 2 ** attempt), `${attempt}: ${delay}`);
  }
  const spread = new Set(Array.from({ length: 20 }, () => Math.round(backoffDelay(5))));
  assert.ok(spread.size > 10, "delays are random");
});

test("no WebSocket: a clear error", { skip: Boolean(globalThis.WebSocket) }, async () => {
  await assert.rejects(connect(URL, { token: TOKENS.alice }), (e) => e instanceof TetherError && e.code === "no_websocket");
});

test("connect resolves once authenticated; a bad token is refused", async () => {
  const alice = await open(TOKENS.alice);
  assert.equal(alice.connected, true);
  assert.equal(alice.session.sub, "alice");
  assert.ok(alice.session.clientId);
  assert.equal(typeof alice.session.expiresAt, "number");
  alice.close();
  assert.equal(alice.connected, false);
  await assert.rejects(open("not.a.token"), (e) => e.code === "connect_failed");
});

test("request/response through a host, error codes, timeout", async () => {
  await withClients([TOKENS.host, TOKENS.alice], async (host, alice) => {
    await host.request("host.register", { events: { "slow.call": null, "echo.call": null } });
    host.on("host.request", (request) => {
      if (request.event === "echo.call") {
        host.request("host.reply", { id: request.id, event: "echo.result", data: request.data }).catch(() => {});
      } // slow.call: never answered
    });
    assert.deepEqual(await alice.request("echo.call", { n: 7 }), { n: 7 });
    assert.equal((await alice.request("whoami")).sub, "alice");
    assert.equal(await codeOf(alice.request("no.such.event")), "unknown_event");
    assert.equal(await codeOf(alice.request("subscribe", { room: "elsewhere" })), "room_not_allowed");
    assert.equal(await codeOf(alice.publish("chat_1", "said", {})), "forbidden");
    assert.equal(await codeOf(alice.request("subscribe", {})), "invalid_data");
    const error = await alice.request("host.clients").catch((e) => e);
    assert.ok(error instanceof Error && error.code === "forbidden" && error.message.includes("forbidden"));
    const started = Date.now();
    assert.equal(await codeOf(alice.request("slow.call", {}, { timeout: 300 })), "timeout");
    assert.ok(Date.now() - started < 3000);
    // Pending requests reject with a clear code on reconnect and on close.
    const lost = codeOf(alice.request("slow.call", {}, { timeout: 5000 }));
    await sleep(50);
    alice.reconnect();
    assert.equal(await lost, "disconnected");
    await next(alice, "authenticated");
    const closed = codeOf(alice.request("slow.call", {}, { timeout: 5000 }));
    await sleep(50);
    alice.close();
    assert.equal(await closed, "closed");
    assert.equal(await codeOf(alice.request("whoami")), "closed");
  });
});

test("kicked: closed for good, no reconnect", async () => {
  await withClients([TOKENS.host, TOKENS.alice], async (host, alice) => {
    const kicked = next(alice, "kicked");
    const closed = next(alice, "closed");
    let reconnecting = false;
    alice.on("reconnecting", () => (reconnecting = true));
    await host.request("host.kick", { client: alice.session.clientId, reason: "bye" });
    assert.deepEqual(await kicked, { reason: "bye" });
    assert.equal((await closed).code, 4010);
    await sleep(300);
    assert.equal(reconnecting, false);
    assert.equal(alice.connected, false);
    assert.equal(await codeOf(alice.request("whoami")), "closed");
  });
});

test("close() while connecting rejects connect() at once", async () => {
  const { Client } = await import("../tether.js");
  const client = new Client(URL, { token: TOKENS.alice, ...OPTIONS });
  const opening = client._start();
  client.close();
  const started = Date.now();
  assert.equal(await codeOf(opening), "closed");
  assert.ok(Date.now() - started < 1000);
});

test("subscribe, publish, handlers and async iteration", async () => {
  await withClients([TOKENS.alice, TOKENS.bob], async (alice, bob) => {
    const subscribed = await alice.subscribe("chat_1");
    assert.equal(subscribed.room, "chat_1");
    assert.equal(typeof subscribed.epoch, "string");
    const seen = [];
    alice.on("said", (data, message) => seen.push([data.n, message.room, message.from]));
    const iterated = [];
    const reading = (async () => {
      for await (const message of alice.events("said")) {
        iterated.push(message.data.n);
        if (iterated.length === 3) break;
      }
    })();
    for (const n of [1, 2, 3]) {
      assert.equal((await bob.publish("chat_1", "said", { n })).delivered, 1);
    }
    await reading;
    assert.deepEqual(iterated, [1, 2, 3]);
    assert.deepEqual(seen, [
      [1, "chat_1", "bob"],
      [2, "chat_1", "bob"],
      [3, "chat_1", "bob"],
    ]);
    assert.equal(alice.rooms.get("chat_1").offset, subscribed.offset + 3);
  });
});

test("a reconnect recovers what was missed (recovered: true)", async () => {
  await withClients([[TOKENS.alice, { backoff: { base: 300, ceiling: 300 } }], TOKENS.bob], async (alice, bob) => {
    await alice.subscribe("chat_2");
    const got = [];
    alice.on("said", (data) => got.push(data.n));
    await bob.publish("chat_2", "said", { n: 1 });
    while (got.length < 1) await sleep(10);
    const back = next(alice, "resubscribed");
    alice.reconnect();
    await bob.publish("chat_2", "said", { n: 2 });
    await bob.publish("chat_2", "said", { n: 3 });
    const again = await back;
    assert.equal(again.room, "chat_2");
    assert.equal(again.recovered, true);
    const deadline = Date.now() + 3000;
    while (got.length < 3 && Date.now() < deadline) await sleep(10);
    assert.deepEqual(got, [1, 2, 3], "each message once, in order");
  });
});

test("after a gateway restart: reconnect, re-subscribe, recovered: false", async () => {
  await withClients([TOKENS.alice, TOKENS.bob, TOKENS.host], async (alice, bob, host) => {
    await alice.subscribe("chat_3");
    await host.request("host.register", { events: { "stuck.call": null } });
    const { epoch } = alice.rooms.get("chat_3");
    const pending = codeOf(alice.request("stuck.call", {}, { timeout: 20000 }));
    const disconnected = next(alice, "disconnected", 20000);
    const back = next(alice, "resubscribed", 20000);
    const bobBack = next(bob, "authenticated", 20000);
    assert.equal(await control("restart"), "restarted");
    // The host leaves first on SIGTERM, or the connection drops first.
    assert.ok(["disconnected", "host_unavailable"].includes(await pending));
    assert.equal((await disconnected).code, 1001);
    const again = await back;
    assert.equal(again.recovered, false, "a new epoch: the app must re-sync");
    assert.notEqual(again.epoch, epoch);
    await bobBack;
    const said = next(alice, "said");
    await bob.publish("chat_3", "said", { n: 1 });
    assert.deepEqual(await said, { n: 1 });
  });
});

test("token refresh before expiresAt keeps the session", async () => {
  const short = await control("short token");
  let asked = 0;
  const refreshToken = async () => {
    asked += 1;
    return TOKENS.fresh;
  };
  await withClients([[short, { refreshToken }]], async (carol) => {
    const id = carol.session.clientId;
    const first = carol.session.expiresAt;
    const refreshed = await next(carol, "refreshed", 8000);
    assert.ok(refreshed.expiresAt > first + 60, JSON.stringify(refreshed));
    await sleep(first * 1000 - Date.now() + 1500); // past the first token's expiry
    const me = await carol.request("whoami");
    assert.equal(me.clientId, id, "the same connection");
    assert.equal(carol.session.clientId, id);
    assert.equal(asked, 1);
  });
});

test("an expired token is refreshed before connecting", async () => {
  const expired = await control("expired token");
  let asked = 0;
  const refreshToken = () => {
    asked += 1;
    return TOKENS.fresh;
  };
  await assert.rejects(open(expired), (e) => e.code === "connect_failed");
  await withClients([[expired, { refreshToken }]], async (carol) => {
    assert.equal(carol.session.sub, "carol");
    assert.equal(asked, 1);
  });
});

test("dead peer: missed pings reconnect", async () => {
  await withClients([[TOKENS.alice, { pingInterval: 1000, pingTimeout: 1000, openTimeout: 1000 }]], async (alice) => {
    const id = alice.session.clientId;
    const lost = next(alice, "disconnected", 10000);
    assert.equal(await control("freeze"), "frozen");
    const started = Date.now();
    let dead;
    try {
      dead = await lost;
    } finally {
      assert.equal(await control("thaw"), "thawed");
    }
    assert.equal(dead.code, 4000, JSON.stringify(dead));
    assert.ok(Date.now() - started < 8000, "found dead within a few pings");
    await next(alice, "authenticated", 15000);
    assert.notEqual(alice.session.clientId, id);
    assert.equal((await alice.request("whoami")).sub, "alice");
  });
});
