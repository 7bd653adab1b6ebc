//! Fuzzing the hub: sessions, rooms and the host link driven by a script of operations.

use super::{authenticator, fuzzed_features, PASSWORD, T0_UNIX};
use crate::proto::action::Dialect;
use crate::proto::auth::MintRequest;
use crate::proto::client_id::ClientId;
use crate::proto::host_link::MAX_PENDING_PER_CLIENT;
use crate::proto::hub::{Action, Compat, Hub, HubConfig, MAX_ROOMS_PER_CLIENT};
use crate::proto::Now;
use serde_json::{json, Map, Value};

/// Connection keys the dispatch target uses.
const KEYS: usize = 6;

/// Tokens the dispatch target can authenticate with: (sub, permissions, rooms, role, ttl).
type TokenSpec = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    Option<&'static str>,
    u64,
);
const TOKENS: [TokenSpec; 5] = [
    ("alice", &["publish", "room:game_*"], &["lobby"], None, 3600),
    ("bot", &["host"], &[], None, 3600),
    ("root", &["admin"], &[], None, 3600),
    ("eve", &[], &["lobby"], Some("player"), 2),
    ("bot2", &["host", "publish"], &["lobby"], None, 3600),
];
const ROOMS: [&str; 5] = ["lobby", "game_1", "arena", "game_", "secret"];
const EVENTS: [&str; 5] = ["move", "chat", "ping", "host.x", "score"];
const PERMISSIONS: [&str; 5] = ["publish", "host", "admin", "room:game_1", ""];

thread_local! {
    /// The `TOKENS`, minted once per process (signing is the costliest part
    /// of a run, and the tokens are the same every time).
    static FIXED_TOKENS: Vec<String> = mint_tokens();
}

fn mint_tokens() -> Vec<String> {
    let auth = authenticator();
    TOKENS
        .iter()
        .map(|(sub, permissions, rooms, role, ttl_s)| {
            let request = MintRequest {
                sub: sub.to_string(),
                permissions: permissions.iter().map(|p| p.to_string()).collect(),
                rooms: rooms.iter().map(|r| r.to_string()).collect(),
                role: role.map(str::to_string),
                ttl_s: *ttl_s,
            };
            match auth.mint(&request, T0_UNIX) {
                Ok((token, _)) => token,
                Err(e) => panic!("minting a fixed token failed: {e}"),
            }
        })
        .collect()
}

/// Reads the fuzzer's bytes as choices; past the end every choice is 0.
struct Input<'a> {
    bytes: &'a [u8],
}

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((b, rest)) => {
                self.bytes = rest;
                *b
            }
            None => 0,
        }
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.byte()) % from.len()]
    }

    fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        for b in &mut bytes {
            *b = self.byte();
        }
        u64::from_le_bytes(bytes)
    }

    /// A string of up to `max` bytes (length first), invalid UTF-8 replaced.
    fn text(&mut self, max: usize) -> String {
        let len = usize::from(self.byte()) % (max + 1);
        let take = len.min(self.bytes.len());
        let (s, rest) = self.bytes.split_at(take);
        self.bytes = rest;
        String::from_utf8_lossy(s).into_owned()
    }

    /// A name from `pool`, or (one time in four) an arbitrary string.
    fn name(&mut self, pool: &[&str]) -> String {
        let choice = self.byte();
        if choice % 4 == 3 {
            self.text(64)
        } else {
            pool[usize::from(choice) % pool.len()].to_string()
        }
    }

    fn value(&mut self, depth: u32) -> Value {
        match self.byte() % 8 {
            0 => Value::Null,
            1 => Value::Bool(self.byte() & 1 == 1),
            2 => json!(self.u64() as i64),
            3 => json!(f64::from(self.byte()) / 3.0),
            4 | 5 => Value::String(self.text(32)),
            6 if depth < 3 => {
                let n = self.byte() % 4;
                Value::Array((0..n).map(|_| self.value(depth + 1)).collect())
            }
            7 if depth < 3 => {
                let n = self.byte() % 4;
                let mut map = Map::new();
                for _ in 0..n {
                    let key = self.name(&["room", "event", "data", "id", "client"]);
                    map.insert(key, self.value(depth + 1));
                }
                Value::Object(map)
            }
            _ => Value::Null,
        }
    }
}

/// The dispatcher's state besides the hub: what the shell would know.
struct World {
    hub: Hub,
    now: Now,
    /// Connection id of each open key.
    ids: [Option<u64>; KEYS],
    serial: u64,
    tokens: Vec<String>,
    /// Ids of `host.request`s seen going out, for `host.reply`.
    request_ids: Vec<u64>,
}

/// The hub (sessions, rooms, the host link of SPEC §6), driven by a sequence
/// of connects, text and binary messages, timers and disconnects read from
/// the input. Byte 0 picks the configuration; then each operation is an
/// opcode followed by its arguments.
///
/// Invariants: no panic; every action goes to a session that is open at that
/// point (and a close ends it: nothing goes to it afterwards); sessions the
/// core closes get a close with a 4xxx code and are gone from the hub; every
/// message is a JSON object with a string `event`; the outbox arena per
/// operation is bounded; a fired timer leaves no deadline in the past; the
/// counts of connections, rooms and pending requests stay bounded.
pub fn dispatch(data: &[u8]) {
    let mut input = Input { bytes: data };
    let config = input.byte();
    let start = Now {
        ms: 1_000,
        unix: T0_UNIX,
    };
    let tokens = FIXED_TOKENS.with(Vec::clone);
    let hub = Hub::new(HubConfig {
        auth: authenticator(),
        auth_timeout_ms: if config & 1 == 0 { 10_000 } else { 50 },
        max_messages_per_minute: if config & 2 == 0 { 10_000 } else { 6 },
        request_timeout_ms: [100, 1_000, 5_000, 60_000][usize::from(config >> 2) & 3],
        server_name: "tether/fuzz".into(),
        // Bit 4: an "action" listener (SPEC §13), whose clients' messages
        // are then written flat half of the time.
        compat: Compat {
            dialect: if config & 16 == 0 {
                Dialect::Event
            } else {
                Dialect::Action
            },
            ..Compat::default()
        },
        max_reply_bytes: 1 << 20,
        features: fuzzed_features(config),
    });
    let mut world = World {
        hub,
        now: start,
        ids: [None; KEYS],
        serial: 0,
        tokens,
        request_ids: Vec::new(),
    };
    while !input.is_empty() {
        world.step(&mut input);
    }
    // Everyone leaves: the hub ends empty.
    for key in 0..KEYS {
        if world.ids[key].is_some() {
            world.hub.disconnect(key, 1001, world.now);
            world.check_outbox(None, Some(key), 0);
        }
    }
    assert_eq!(world.hub.active_connections(), 0);
    assert_eq!(world.hub.active_rooms(), 0, "rooms left without members");
    assert_eq!(
        world.hub.hosts().pending_len(),
        0,
        "requests left without clients"
    );
    assert_eq!(world.hub.hosts().host_count(), 0, "hosts left");
}

impl World {
    fn step(&mut self, input: &mut Input<'_>) {
        let op = input.byte() % 10;
        let key = usize::from(input.byte()) % KEYS;
        match op {
            0 => {
                if self.ids[key].is_some() {
                    return; // The shell reuses a key only after its disconnect.
                }
                let choice = usize::from(input.byte()) % (TOKENS.len() + 1);
                let identity = match self.tokens.get(choice) {
                    Some(token) => match self.hub.config().auth.verify(token, self.now.unix) {
                        Ok(identity) => Some(identity),
                        // The shell refuses an invalid handshake token (401).
                        Err(_) => return,
                    },
                    None => None,
                };
                self.serial += 1;
                let id = ClientId::new(self.serial, key).0;
                let ip = if input.byte() & 1 == 0 {
                    "127.0.0.1".parse()
                } else {
                    "::1".parse()
                };
                let Ok(ip) = ip else { return };
                self.hub.open(key, id, ip, self.now, identity, "");
                self.ids[key] = Some(id);
                self.check_outbox(Some(key), None, 0);
            }
            1 => {
                let text = input.text(255);
                self.text(key, &text);
            }
            2..=6 => {
                let text = self.message(input).to_string();
                self.text(key, &text);
            }
            7 => {
                if self.ids[key].is_some() {
                    self.hub.on_binary(key, self.now);
                    self.check_outbox(None, None, 0);
                }
            }
            8 => {
                let b = u64::from(input.byte());
                let delta = match b % 4 {
                    0 => b,
                    1 => b * 100,
                    2 => b * 10_000,
                    _ => b * 1_000_000,
                };
                self.advance(delta);
                for key in 0..KEYS {
                    let due = self.hub.deadline(key).is_some_and(|d| d <= self.now.ms);
                    if due && self.ids[key].is_some() {
                        self.fire(key);
                    }
                }
            }
            _ => {
                if self.ids[key].is_none() {
                    return;
                }
                if input.byte() & 1 == 0 {
                    // A timer may fire early (the wheel's slot), or for an old deadline.
                    self.fire(key);
                } else {
                    let code = input.pick(&[1000, 1001, 1005, 1006, 4009]);
                    self.hub.disconnect(key, code, self.now);
                    self.check_outbox(None, Some(key), 0);
                }
            }
        }
    }

    fn advance(&mut self, delta_ms: u64) {
        let ms = self.now.ms.saturating_add(delta_ms);
        self.now = Now {
            ms,
            unix: T0_UNIX + (ms - 1_000) / 1_000,
        };
    }

    fn text(&mut self, key: usize, text: &str) {
        if self.ids[key].is_none() {
            return;
        }
        self.hub.on_text(key, self.now, text);
        self.check_outbox(None, None, text.len());
    }

    fn fire(&mut self, key: usize) {
        let due = self.hub.deadline(key).is_some_and(|d| d <= self.now.ms);
        self.hub.on_timer(key, self.now);
        self.check_outbox(None, None, 0);
        if due {
            if let Some(next) = self.hub.deadline(key) {
                assert!(
                    next > self.now.ms,
                    "timer fired but deadline {next} is not past now"
                );
            }
        }
    }

    /// Checks and empties the outbox after one operation. `opened` is a key
    /// that the operation opened; `gone` one that the shell ended.
    fn check_outbox(&mut self, opened: Option<usize>, gone: Option<usize>, text_len: usize) {
        let mut live = self.ids.map(|id| id.is_some());
        let out = std::mem::take(&mut self.hub.out);
        // Bounded by what one message can make the core write: every reply
        // echoes at most the message (JSON escaping at most sixfold) and the
        // state (rooms, identities) of a handful of sessions.
        let state: usize = (0..KEYS)
            .filter_map(|k| self.hub.session(k))
            .map(|s| s.rooms.iter().map(|r| r.len() + 3).sum::<usize>() + 512)
            .sum();
        let bound = KEYS * (6 * (text_len + state) + 4096);
        assert!(
            out.arena.len() <= bound,
            "outbox arena of {} bytes (bound {bound})",
            out.arena.len()
        );
        if let Some(key) = gone {
            // The shell forgets the key first; the core must not answer it.
            live[key] = false;
        }
        for action in &out.actions {
            match action {
                Action::Send { to, body } => {
                    assert!(
                        *to < KEYS && live[*to],
                        "message to {to}, which is not open"
                    );
                    let message: Value = match serde_json::from_slice(out.body(body)) {
                        Ok(v) => v,
                        Err(e) => panic!(
                            "outgoing message is not JSON ({e}): {}",
                            String::from_utf8_lossy(out.body(body))
                        ),
                    };
                    // An action client's messages name their event `action`; the
                    // fields of their data (an `event` among them) sit beside it.
                    let name = message.get("action").or_else(|| message.get("event"));
                    let Some(event) = name.and_then(Value::as_str) else {
                        panic!("outgoing message has no string event: {message}");
                    };
                    if event == "host.request" {
                        if let Some(id) = message["data"]["id"].as_u64() {
                            self.request_ids.push(id);
                        }
                    }
                }
                Action::Close { to, code, .. } => {
                    assert!(*to < KEYS && live[*to], "close of {to}, which is not open");
                    assert!((4000..5000).contains(code), "core close code {code}");
                    live[*to] = false;
                }
            }
        }
        if let Some(key) = opened {
            assert!(live[key], "opened session was closed at once");
        }
        for (key, live) in live.iter().enumerate() {
            let session = self.hub.session(key);
            assert_eq!(
                *live,
                session.is_some(),
                "key {key}: the shell and the hub disagree on whether it is open"
            );
            if let Some(s) = session {
                assert_eq!(Some(s.id), self.ids[key], "session id of key {key}");
                assert!(s.rooms.len() <= MAX_ROOMS_PER_CLIENT);
                assert!(self.hub.hosts().waiting_len(key) <= MAX_PENDING_PER_CLIENT);
            } else {
                self.ids[key] = None;
            }
        }
        let open = live.iter().filter(|l| **l).count();
        assert_eq!(self.hub.active_connections(), open, "active connections");
        assert!(self.hub.hosts().host_count() <= open, "hosts");
        assert!(
            self.hub.hosts().pending_len() <= open * MAX_PENDING_PER_CLIENT,
            "pending requests"
        );
        assert!(
            self.hub.active_rooms() <= open * MAX_ROOMS_PER_CLIENT,
            "rooms"
        );
        // The shell hands the emptied outbox back (keeping its capacity).
        let mut out = out;
        out.clear();
        self.hub.out = out;
        if self.request_ids.len() > 64 {
            self.request_ids.drain(..32);
        }
    }

    /// A well-formed message of SPEC §5 or §6 with arguments from the input.
    fn message(&mut self, input: &mut Input<'_>) -> Value {
        let template = input.byte() % 15;
        let (event, data) = match template {
            0 => {
                let choice = usize::from(input.byte());
                let token = match self.tokens.get(choice % 8) {
                    Some(token) => token.clone(),
                    None => input.text(64),
                };
                ("auth", json!({ "token": token }))
            }
            1 => {
                let password = if input.byte() & 1 == 0 {
                    PASSWORD.to_string()
                } else {
                    input.text(16)
                };
                ("auth", json!({ "password": password }))
            }
            2 => ("ping", input.value(0)),
            3 => ("whoami", Value::Null),
            4 => {
                let mut data = json!({ "room": input.name(&ROOMS) });
                if input.byte() & 1 == 0 {
                    // The first rings' epochs with `fuzzed_features`' tag.
                    let epoch = input.name(&["0000000000000001-0", "0000000000000001-1", "x"]);
                    data["since"] = json!({ "offset": input.byte() % 8, "epoch": epoch });
                }
                ("subscribe", data)
            }
            5 => {
                let event = match input.byte() % 3 {
                    0 => "unsubscribe",
                    1 => "history",
                    _ => "presence",
                };
                (event, json!({ "room": input.name(&ROOMS) }))
            }
            6 => (
                "publish",
                json!({
                    "room": input.name(&ROOMS),
                    "event": input.name(&EVENTS),
                    "data": input.value(0),
                }),
            ),
            7 => {
                let mut events = Map::new();
                for _ in 0..input.byte() % 4 {
                    let name = input.name(&EVENTS);
                    let permission = match input.byte() % 3 {
                        0 => Value::Null,
                        _ => Value::String(input.name(&PERMISSIONS)),
                    };
                    events.insert(name, permission);
                }
                ("host.register", json!({ "events": events }))
            }
            8 => {
                let id = match input.byte() {
                    255 => input.u64(),
                    n => {
                        let seen = &self.request_ids;
                        let back = usize::from(n) % (seen.len() + 1);
                        seen.len()
                            .checked_sub(back + 1)
                            .map_or(u64::from(n), |i| seen[i])
                    }
                };
                let data = if input.byte() & 1 == 0 {
                    json!({ "id": id, "event": input.name(&EVENTS), "data": input.value(0) })
                } else {
                    let mut error = json!({ "code": input.name(&["nope", "busy"]) });
                    if input.byte() & 1 == 0 {
                        error["message"] = Value::String(input.text(32));
                    }
                    json!({ "id": id, "error": error })
                };
                ("host.reply", data)
            }
            9 => {
                let mut data = json!({ "event": input.name(&EVENTS), "data": input.value(0) });
                if input.byte() & 1 == 0 {
                    data["room"] = Value::String(input.name(&ROOMS));
                }
                ("host.broadcast", data)
            }
            10 => (
                "host.send",
                json!({
                    "client": self.client_id(input),
                    "event": input.name(&EVENTS),
                    "data": input.value(0),
                }),
            ),
            11 => ("host.clients", Value::Null),
            12 => {
                let mut data = json!({ "client": self.client_id(input) });
                if input.byte() & 1 == 0 {
                    data["reason"] = Value::String(input.text(32));
                }
                ("host.kick", data)
            }
            13 => {
                let mut data = json!({ "sub": input.name(&["carol", "bot", ""]) });
                let n = input.byte() % 3;
                let permissions: Vec<String> = (0..n).map(|_| input.name(&PERMISSIONS)).collect();
                data["permissions"] = json!(permissions);
                match input.byte() % 4 {
                    0 => {}
                    1 => data["ttl"] = json!(input.u64()),
                    2 => data["ttl"] = json!(u64::from(input.byte())),
                    _ => data["ttl"] = Value::String(input.text(12)),
                }
                if input.byte() & 1 == 0 {
                    data["role"] = Value::String(input.name(&["player", "x"]));
                }
                ("host.token", data)
            }
            _ => ("", input.value(0)),
        };
        let event = match event {
            "" => input.name(&EVENTS),
            name => name.to_string(),
        };
        let mut message = json!({ "event": event });
        if !data.is_null() {
            message["data"] = data;
        }
        match input.byte() % 4 {
            0 => message["requestId"] = json!(input.byte()),
            1 => message["requestId"] = Value::String(input.text(8)),
            _ => {}
        }
        if self.hub.config().compat.dialect == Dialect::Action && input.byte() & 1 == 1 {
            return flat(message);
        }
        message
    }

    /// The `clientId` of a key (open or not), or an arbitrary string.
    fn client_id(&mut self, input: &mut Input<'_>) -> String {
        let choice = input.byte();
        match self.ids.get(usize::from(choice) % 8) {
            Some(Some(id)) => format!("{id:x}"),
            Some(None) => ClientId::new(self.serial, usize::from(choice % 8)).to_string(),
            None => input.text(20),
        }
    }
}

/// `{"event":E,"data":{...},"requestId"?}` in the action dialect,
/// `{"action":E, ...fields, "requestId"?}` (data that is not an object is kept
/// under `data`, which the reader then takes as a field).
fn flat(message: Value) -> Value {
    let Value::Object(mut message) = message else {
        return message;
    };
    let mut out = Map::new();
    if let Some(event) = message.remove("event") {
        out.insert("action".into(), event);
    }
    match message.remove("data") {
        Some(Value::Object(fields)) => out.extend(fields),
        Some(other) => {
            out.insert("data".into(), other);
        }
        None => {}
    }
    out.extend(message);
    Value::Object(out)
}
