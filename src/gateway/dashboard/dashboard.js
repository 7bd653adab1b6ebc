// The tether dashboard (SPEC §14). Served by the health listener with
// `Content-Security-Policy: default-src 'self'`: everything comes from this
// origin, and every text from the gateway is set with textContent (never
// parsed as HTML). The token lives in this tab's sessionStorage only.
//
// Polls /health, /api/rooms and the connections every few seconds (paused
// while the tab is hidden) and watches the live feed (/api/feed) through
// tether.js: the sampled tail of room messages, and host.clients/host.kick,
// which reach every node of a cluster.

import { connect } from "/tether.js";
import { LineChart } from "/charts.js";

const TOKEN_KEY = "tether.token";
const POLL_MS = 3000;
const TAIL_KEPT = 100;
const FEED_PATH = "/api/feed";

const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  feed: null,
  timer: null,
  polling: false,
  last: null, // the previous /health, for messages per second
};

const charts = {
  connections: new LineChart($("chart-connections")),
  messages: new LineChart($("chart-messages"), { color: "#b06a2a", unit: "/s" }),
};

/** A new element holding `text` as text. */
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell);
    else td.textContent = cell === undefined || cell === null ? "" : String(cell);
    tr.append(td);
  }
  return tr;
}

/** A JSON endpoint of this origin with the bearer token; throws an Error
 * with `status` and the gateway's message on a non-2xx answer. */
async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, {
    ...options,
    headers,
    cache: "no-store",
    credentials: "omit",
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: the status says enough
  }
  if (!response.ok) {
    const error = new Error((body && body.error) || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

// -- signing in and out ------------------------------------------------------

function showLogin(message) {
  $("login").hidden = false;
  $("board").hidden = true;
  $("sign-out").hidden = true;
  $("login-error").textContent = message || "";
  setStatus("signed out", "");
  $("token").focus();
}

async function signIn(token) {
  state.token = token;
  try {
    // An admin endpoint proves the token has admin before anything is shown.
    await api("/api/rooms");
  } catch (e) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    const why = e.status === 401 ? "this token was refused" : "the gateway did not answer";
    showLogin(`Not signed in: ${why} (${e.message}).`);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("login").hidden = true;
  $("board").hidden = false;
  $("sign-out").hidden = false;
  $("login-error").textContent = "";
  openFeed();
  poll();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.last = null;
  clearTimeout(state.timer);
  closeFeed();
  showLogin(message);
}

// -- the live feed -------------------------------------------------------------

function setFeedState(text, good) {
  const badge = $("feed-state");
  badge.textContent = text;
  badge.className = `badge ${good === true ? "good" : good === false ? "bad" : "muted"}`;
}

async function openFeed() {
  if (state.feed || !state.token || document.hidden) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  setFeedState("feed connecting");
  let feed;
  try {
    feed = await connect(`${scheme}://${location.host}${FEED_PATH}`, { token: state.token });
  } catch (e) {
    setFeedState("feed refused", false);
    $("kick-result").textContent =
      `The live feed refused this dashboard (at most 4 may watch at once): ${e.message}. ` +
      "The figures still update; no tail until the feed is back.";
    return;
  }
  if (!state.token || document.hidden) {
    feed.close();
    return;
  }
  state.feed = feed;
  setFeedState("feed live", true);
  feed.on("dashboard.tail", addTail);
  feed.on("disconnected", () => setFeedState("feed reconnecting", false));
  feed.on("authenticated", () => setFeedState("feed live", true));
  feed.on("closed", () => {
    if (state.feed === feed) state.feed = null;
    setFeedState("feed off");
  });
}

function closeFeed() {
  const feed = state.feed;
  state.feed = null;
  if (feed) feed.close();
  setFeedState("feed off");
}

function addTail(data) {
  const item = el("li");
  const time = new Date().toLocaleTimeString();
  item.append(el("span", time, "time"), el("span", data.room, "room"), el("span", data.text));
  if (data.truncated) item.append(el("span", ` … (${data.bytes} bytes)`, "skipped"));
  if (data.skipped) item.append(el("span", `+${data.skipped} not shown`, "skipped"));
  const list = $("tail");
  list.prepend(item);
  while (list.children.length > TAIL_KEPT) list.lastElementChild.remove();
}

// -- polling -----------------------------------------------------------------

async function poll() {
  clearTimeout(state.timer);
  if (document.hidden || !state.token || state.polling) return;
  state.polling = true;
  try {
    const [health, clients, rooms] = await Promise.all([
      api("/health"),
      connections(),
      api("/api/rooms"),
    ]);
    renderHealth(health);
    renderConnections(clients, health);
    renderCluster(health, clients);
    renderRooms(rooms);
    $("poll-error").textContent = "";
  } catch (e) {
    if (e.status === 401) {
      signOut(`Signed out: the gateway refused the token (${e.message}).`);
      return;
    }
    $("poll-error").textContent = `Last update failed: ${e.message}`;
  } finally {
    state.polling = false;
  }
  if (state.token && !document.hidden) state.timer = setTimeout(poll, POLL_MS);
}

/** Every node's clients through the feed (host.clients gathers them across
 * a cluster); from /api/connections (which does too) while the feed is down. */
async function connections() {
  const feed = state.feed;
  if (feed && feed.connected) {
    try {
      const reply = await feed.request("host.clients", undefined, { timeout: 4000 });
      return { list: reply.clients || [], total: reply.total ?? (reply.clients || []).length };
    } catch {
      // fall back to the HTTP list
    }
  }
  const reply = await api("/api/connections");
  return { list: reply.connections || [], total: (reply.connections || []).length };
}

function setStatus(text, kind) {
  const badge = $("status");
  badge.textContent = text;
  badge.className = `badge ${kind}`;
}

function duration(seconds) {
  const s = Math.floor(seconds);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  if (s < 172800) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d`;
}

function renderHealth(health) {
  const stats = health.stats || {};
  setStatus(health.status, health.status === "healthy" ? "good" : "bad");
  $("node").textContent = health.cluster ? `node ${health.cluster.node}` : "single node";
  const now = Date.now();
  let perSecond = 0;
  if (state.last) {
    const seconds = (now - state.last.at) / 1000;
    const delta = (stats.total_messages || 0) - (state.last.total_messages || 0);
    if (seconds > 0 && delta >= 0) perSecond = delta / seconds;
  }
  state.last = { at: now, total_messages: stats.total_messages || 0 };
  charts.connections.push(now, stats.active_connections || 0);
  charts.messages.push(now, Math.round(perSecond * 10) / 10);
  const figures = [
    ["active connections", stats.active_connections],
    ["active rooms", stats.active_rooms],
    ["messages per second", perSecond.toFixed(1)],
    ["messages in the last minute", stats.messages_per_minute],
    ["total messages", stats.total_messages],
    ["total connections", stats.total_connections],
    ["connections in 24 h", stats.connections_last_24h],
    ["average connection", `${stats.avg_connection_duration_seconds ?? 0} s`],
    ["uptime", duration(stats.uptime_seconds || 0)],
  ];
  const list = $("figures");
  list.replaceChildren(
    ...figures.map(([name, value]) => {
      const pair = el("div");
      pair.append(el("dt", name), el("dd", value ?? "–"));
      return pair;
    }),
  );
}

function renderConnections(clients, health) {
  const here = health.cluster ? health.cluster.node : "this node";
  $("connections-total").textContent = `(${clients.total})`;
  const rows = clients.list.map((c) => {
    const kick = el("button", "Kick", "kick");
    kick.type = "button";
    kick.addEventListener("click", () => kickClient(c.id, c.sub));
    const since = new Date((c.connectedAt || 0) * 1000);
    const tr = row([
      c.sub,
      c.ip,
      (c.rooms || []).join(", "),
      c.node || here,
      Date.now() - since < 86400000 ? since.toLocaleTimeString() : since.toLocaleString(),
      kick,
    ]);
    tr.dataset.client = c.id;
    tr.dataset.sub = c.sub ?? "";
    return tr;
  });
  $("connections").tBodies[0].replaceChildren(...rows);
}

/** Kicks through the feed (host.kick), else with POST /api/kick; either
 * answers once the client's node has acted. */
async function kickClient(id, sub) {
  const result = $("kick-result");
  const feed = state.feed;
  const data = { client: id, reason: "kicked from the dashboard" };
  try {
    const reply =
      feed && feed.connected
        ? await feed.request("host.kick", data)
        : await api("/api/kick", {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify(data),
          });
    result.textContent = reply && reply.delivered ? `Kicked ${sub} (${id}).` : `${sub} (${id}) was already gone.`;
  } catch (e) {
    result.textContent = `Kick failed: ${e.message}`;
  }
  poll();
}

function renderCluster(health, clients) {
  const body = $("cluster").tBodies[0];
  const counts = new Map();
  for (const c of clients.list) counts.set(c.node || "", (counts.get(c.node || "") || 0) + 1);
  if (!health.cluster) {
    body.replaceChildren(row(["this node", "no broker", counts.get("") || 0]));
    $("cluster-note").textContent = "A single node: cluster.redis is not set.";
    return;
  }
  const own = health.cluster;
  const broker = el("span", own.broker, `badge ${own.broker === "up" ? "good" : "bad"}`);
  const rows = [row([`${own.node} (this node)`, broker, counts.get(own.node) || 0])];
  for (const [node, n] of counts) {
    if (node && node !== own.node) rows.push(row([node, "", n]));
  }
  body.replaceChildren(...rows);
  $("cluster-note").textContent =
    `${own.nodes} node(s) heard through the broker; other nodes are listed when they have clients.`;
}

function renderRooms(rooms) {
  $("rooms-total").textContent = `(${rooms.total})`;
  const rows = (rooms.rooms || []).map((r) => {
    const presence = rooms.presence ? (r.list || []).map((m) => m.sub).join(", ") : "presence off";
    const tr = row([r.room, r.members, presence]);
    tr.dataset.room = r.room;
    return tr;
  });
  $("rooms").tBodies[0].replaceChildren(...rows);
}

// -- publishing ----------------------------------------------------------------

async function publish(event) {
  event.preventDefault();
  const result = $("publish-result");
  const body = { event: $("pub-event").value.trim() };
  const text = $("pub-data").value.trim();
  if (text) {
    try {
      body.data = JSON.parse(text);
    } catch (e) {
      result.textContent = `Data is not JSON: ${e.message}`;
      return;
    }
  }
  const room = $("pub-room").value.trim();
  const client = $("pub-client").value.trim();
  if (room) body.room = room;
  if (client) body.client = client;
  try {
    const reply = await api("/api/publish", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    result.textContent = `Delivered to ${reply.delivered} client(s)${reply.cluster ? " on this node (and sent to the others)" : ""}.`;
  } catch (e) {
    result.textContent = `Publish failed: ${e.message}`;
  }
}

// -- start ---------------------------------------------------------------------

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  $("token").value = "";
  if (token) signIn(token);
});
$("sign-out").addEventListener("click", () => signOut("Signed out."));
$("publish-form").addEventListener("submit", publish);
document.addEventListener("visibilitychange", () => {
  if (!state.token) return;
  if (document.hidden) {
    clearTimeout(state.timer);
    closeFeed();
  } else {
    openFeed();
    poll();
  }
});

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) signIn(saved);
else showLogin("");
