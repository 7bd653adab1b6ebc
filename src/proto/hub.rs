//! The gateway core: every client session, rooms and the built-in events of
//! SPEC §5. Input is decoded text and the time; output is a list of actions
//! (send these bytes to that connection, close that connection) for the shell.

use crate::proto::auth::{AuthError, Authenticator, Identity};
use crate::proto::envelope::{self, write_error, write_message, ErrorCode, JsonWriter};
use crate::proto::host::{HostLink, HostRole};
use crate::proto::limits::{MessageLimiter, Verdict};
use crate::proto::rooms::{ConnKey, Rooms};
use crate::proto::Now;
use log::{debug, info, warn};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::rc::Rc;

/// Longest room name accepted.
pub const MAX_ROOM_NAME: usize = 256;
/// Rooms one client may be in at once; keeps a client's memory bounded.
pub const MAX_ROOMS_PER_CLIENT: usize = 256;

pub struct HubConfig {
    pub auth: Authenticator,
    pub auth_timeout_ms: u64,
    pub max_messages_per_minute: u32,
    /// How long a host has to answer a forwarded request.
    pub request_timeout_ms: u64,
    /// Sent in `connected` as `server`.
    pub server_name: String,
}

/// Bytes to send: a slice of the outbox arena (one recipient), or shared by many.
#[derive(Debug, Clone)]
pub enum Body {
    Arena { start: usize, end: usize },
    Shared(Rc<[u8]>),
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Send one text message (the body is its JSON).
    Send { to: ConnKey, body: Body },
    /// Close the connection with this WebSocket status code. The session is already gone.
    Close {
        to: ConnKey,
        code: u16,
        reason: &'static str,
    },
}

/// What the core asks the shell to do, in order. Unicast messages are written
/// into one reused arena, so a reply costs no allocation.
#[derive(Debug, Default)]
pub struct Outbox {
    pub actions: Vec<Action>,
    pub arena: Vec<u8>,
}

impl Outbox {
    pub fn body<'a>(&'a self, body: &'a Body) -> &'a [u8] {
        match body {
            Body::Arena { start, end } => &self.arena[*start..*end],
            Body::Shared(bytes) => bytes,
        }
    }

    pub fn clear(&mut self) {
        self.actions.clear();
        self.arena.clear();
    }

    /// Queues for `to` one message `{"event", "data": {FIELDS}, "requestId"?}`;
    /// `fields` writes the fields of the data object.
    pub(crate) fn reply(
        &mut self,
        to: ConnKey,
        event: &str,
        rid: Option<&RawValue>,
        fields: impl FnOnce(&mut JsonWriter<'_>),
    ) {
        self.reply_with(to, event, rid, |buf| {
            let mut data = JsonWriter::object(buf);
            fields(&mut data);
            data.end();
        });
    }

    /// Queues for `to` one message whose `data` is JSON text passed through as is.
    pub(crate) fn reply_raw(
        &mut self,
        to: ConnKey,
        event: &str,
        rid: Option<&RawValue>,
        data: &str,
    ) {
        self.reply_with(to, event, rid, |buf| buf.extend_from_slice(data.as_bytes()));
    }

    /// `ok` `{FIELDS}`, sent only when the message it answers carried a `requestId`.
    pub(crate) fn ack(
        &mut self,
        to: ConnKey,
        rid: Option<&RawValue>,
        fields: impl FnOnce(&mut JsonWriter<'_>),
    ) {
        if rid.is_some() {
            self.reply(to, "ok", rid, fields);
        }
    }

    /// Queues for `to` an error with any code: one of [`ErrorCode`], or a host's own.
    pub(crate) fn error(
        &mut self,
        to: ConnKey,
        code: &str,
        message: &str,
        now_unix: u64,
        rid: Option<&RawValue>,
    ) {
        let start = self.arena.len();
        write_error(&mut self.arena, code, message, now_unix, rid);
        self.send_from(to, start);
    }

    /// Writes one message into the arena and queues it for `to`: every
    /// unicast message goes through here.
    fn reply_with(
        &mut self,
        to: ConnKey,
        event: &str,
        rid: Option<&RawValue>,
        data: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.arena.len();
        write_message(&mut self.arena, event, rid, data);
        self.send_from(to, start);
    }

    fn send_from(&mut self, to: ConnKey, start: usize) {
        let end = self.arena.len();
        self.actions.push(Action::Send {
            to,
            body: Body::Arena { start, end },
        });
    }
}

/// Counters for /health and /metrics.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub total_connections: u64,
    pub total_messages: u64,
    pub auth_failures: u64,
    pub rate_limited: u64,
    pub flood_closes: u64,
}

#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub ip: IpAddr,
    pub connected_at: u64,
    pub identity: Option<Identity>,
    /// Until authenticated: when `auth_timeout` fires.
    auth_deadline_ms: u64,
    /// When authenticated with a token: when `token_expired` fires.
    expiry_ms: Option<u64>,
    pub rooms: Vec<Rc<str>>,
    limiter: MessageLimiter,
    /// Set once the client sent `host.register`: it then serves events.
    pub(super) host: Option<HostRole>,
    /// Gateway ids of this client's requests waiting for a host, oldest first
    /// (their deadlines are in the same order, the timeout being constant).
    pub(super) waiting: VecDeque<u64>,
    /// A client (not a host) as far as hosts know: `host.client_joined` was
    /// due when it authenticated, so `host.client_left` is due when it goes.
    announced: bool,
}

pub struct Hub {
    pub(super) cfg: HubConfig,
    pub(super) sessions: Vec<Option<Session>>,
    active: usize,
    pub(super) rooms: Rooms,
    pub(super) hosts: HostLink,
    /// Unix time of the latest input, for timestamps of errors raised on disconnect.
    pub(super) last_unix: u64,
    pub out: Outbox,
    pub stats: Stats,
}

#[derive(Deserialize)]
struct AuthData<'a> {
    #[serde(default, borrow)]
    token: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    password: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RoomData<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
}

#[derive(Deserialize)]
struct PublishData<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// Reads `data` as `T`, or `None` when absent or of the wrong shape.
pub(super) fn data_as<'a, T: Deserialize<'a>>(data: Option<&'a RawValue>) -> Option<T> {
    data.and_then(|d| serde_json::from_str(d.get()).ok())
}

/// The `clientId` string of a connection id.
pub fn client_id_str(id: u64) -> String {
    format!("{id:x}")
}

impl Hub {
    pub fn new(cfg: HubConfig) -> Hub {
        Hub {
            cfg,
            sessions: Vec::new(),
            active: 0,
            rooms: Rooms::default(),
            hosts: HostLink::default(),
            last_unix: 0,
            out: Outbox::default(),
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// New secrets and limits (SIGHUP). Sessions already open keep their
    /// identity and rate budget; new ones get the new settings.
    pub fn reconfigure(&mut self, cfg: HubConfig) {
        self.cfg = cfg;
    }

    pub fn active_connections(&self) -> usize {
        self.active
    }

    pub fn hosts(&self) -> &HostLink {
        &self.hosts
    }

    pub fn active_rooms(&self) -> usize {
        self.rooms.len()
    }

    pub fn session(&self, key: ConnKey) -> Option<&Session> {
        self.sessions.get(key).and_then(Option::as_ref)
    }

    /// A WebSocket was established. `identity` is set when the handshake carried a valid token.
    pub fn open(
        &mut self,
        key: ConnKey,
        id: u64,
        ip: IpAddr,
        now: Now,
        identity: Option<Identity>,
    ) {
        if self.sessions.len() <= key {
            self.sessions.resize_with(key + 1, || None);
        }
        if self.sessions[key].is_some() {
            // The shell reuses a key only after disconnect; never leave a ghost behind.
            self.disconnect(key, 1006);
        }
        self.sessions[key] = Some(Session {
            id,
            ip,
            connected_at: now.unix,
            identity: None,
            auth_deadline_ms: now.ms.saturating_add(self.cfg.auth_timeout_ms),
            expiry_ms: None,
            rooms: Vec::new(),
            limiter: MessageLimiter::new(self.cfg.max_messages_per_minute, now.ms),
            host: None,
            waiting: VecDeque::new(),
            announced: false,
        });
        self.active += 1;
        self.stats.total_connections += 1;
        let server = &self.cfg.server_name;
        self.out.reply(key, "connected", None, |data| {
            data.str("clientId", &client_id_str(id))
                .bool("authenticated", identity.is_some())
                .str("server", server);
        });
        if let Some(identity) = identity {
            self.establish(key, identity, now, "authenticated", None);
        }
    }

    /// The connection is gone (or closing) with `code`: forget the session,
    /// its rooms and requests; hosts hear of it, or lose their events.
    pub fn disconnect(&mut self, key: ConnKey, code: u16) {
        let Some(session) = self.sessions.get_mut(key).and_then(Option::take) else {
            return;
        };
        self.active -= 1;
        for room in &session.rooms {
            self.rooms.leave(room, key);
        }
        self.forget_requests_of(&session);
        if let Some(role) = &session.host {
            self.host_gone(key, role);
        }
        // Every client_joined gets its client_left, also for an (admin) client
        // that registered as a host since; the host itself is told no more.
        if let (true, Some(identity)) = (session.announced, &session.identity) {
            self.notify_hosts_left(session.id, &identity.sub, code);
        }
    }

    /// The earliest deadline of this session: auth timeout, token expiry, or
    /// its oldest request waiting for a host.
    pub fn deadline(&self, key: ConnKey) -> Option<u64> {
        let s = self.session(key)?;
        let own = if s.identity.is_none() {
            Some(s.auth_deadline_ms)
        } else {
            s.expiry_ms
        };
        let waiting = self.hosts.first_deadline(&s.waiting);
        match (own, waiting) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires due deadlines of one session.
    pub fn on_timer(&mut self, key: ConnKey, now: Now) {
        self.last_unix = now.unix;
        self.expire_requests(key, now);
        let Some(s) = self.session(key) else { return };
        if s.identity.is_none() && now.ms >= s.auth_deadline_ms {
            self.error(
                key,
                ErrorCode::AuthTimeout,
                "no auth message in time",
                now,
                None,
            );
            self.close(key, 4002, "auth timeout");
        } else if s.expiry_ms.is_some_and(|at| now.ms >= at) {
            self.error(
                key,
                ErrorCode::TokenExpired,
                "the session's token expired",
                now,
                None,
            );
            self.close(key, 4003, "token expired");
        }
    }

    /// A binary message: the protocol is JSON text only.
    pub fn on_binary(&mut self, key: ConnKey, now: Now) {
        if self.admit(key, now, None) {
            self.error(
                key,
                ErrorCode::InvalidFormat,
                "binary frames are not supported; send JSON text",
                now,
                None,
            );
        }
    }

    /// One text message from a client.
    pub fn on_text(&mut self, key: ConnKey, now: Now, text: &str) {
        self.last_unix = now.unix;
        let parsed = envelope::parse(text);
        let request_id = match &parsed {
            Ok(env) => env.request_id,
            Err(bad) => bad.request_id,
        };
        if !self.admit(key, now, request_id) {
            return;
        }
        let env = match parsed {
            Ok(env) => env,
            Err(bad) => {
                self.error(key, bad.code, bad.message, now, bad.request_id);
                return;
            }
        };
        if let Some(s) = self.session(key) {
            debug!("client {} sent {:?}", client_id_str(s.id), env.event);
        }
        let rid = env.request_id;
        let authenticated = self.session(key).is_some_and(|s| s.identity.is_some());
        match &*env.event {
            "ping" => self.out.reply(key, "pong", rid, |data| {
                data.u64("time", now.unix);
            }),
            "auth" => self.on_auth(key, now, env.data, rid),
            _ if !authenticated => self.error(
                key,
                ErrorCode::NotAuthenticated,
                "authenticate first with an `auth` message",
                now,
                rid,
            ),
            "whoami" => self.reply_identity(key, "whoami", rid),
            "subscribe" => self.on_subscribe(key, now, env.data, rid),
            "unsubscribe" => self.on_unsubscribe(key, now, env.data, rid),
            "publish" => self.on_publish(key, now, env.data, rid),
            event if event.starts_with("host.") => {
                self.on_host_event(key, now, event, env.data, rid)
            }
            event => self.forward_to_host(key, now, event, env.data, rid),
        }
    }

    /// Counts a message and applies the rate limit; false when it must be dropped.
    fn admit(&mut self, key: ConnKey, now: Now, rid: Option<&RawValue>) -> bool {
        let per_minute = self.cfg.max_messages_per_minute;
        let Some(s) = self.sessions.get_mut(key).and_then(Option::as_mut) else {
            return false;
        };
        self.stats.total_messages += 1;
        if s.host.is_some() {
            // A registered host answers for every client: its volume is theirs,
            // and they are rate limited. Its bounds are its pending requests.
            return true;
        }
        match s.limiter.on_message(now.ms, per_minute) {
            Verdict::Accept => true,
            Verdict::Drop => {
                self.stats.rate_limited += 1;
                let msg = "over limits.max_messages_per_minute; message dropped";
                self.error(key, ErrorCode::RateLimited, msg, now, rid);
                false
            }
            Verdict::Close => {
                let id = client_id_str(s.id);
                warn!("client {id} closed: more than twice limits.max_messages_per_minute");
                self.stats.flood_closes += 1;
                self.close(key, 4008, "rate limit exceeded");
                false
            }
        }
    }

    fn on_auth(&mut self, key: ConnKey, now: Now, data: Option<&RawValue>, rid: Option<&RawValue>) {
        let Some(creds) =
            data_as::<AuthData>(data).filter(|c| c.token.is_some() || c.password.is_some())
        else {
            let msg = "auth needs data {\"token\": JWT} or {\"password\": STRING}";
            self.error(key, ErrorCode::InvalidData, msg, now, rid);
            return;
        };
        let result = match (&creds.token, &creds.password) {
            (Some(token), _) => self.cfg.auth.verify(token, now.unix),
            (None, Some(password)) => self.cfg.auth.check_password(password),
            (None, None) => Err(AuthError::Malformed),
        };
        match result {
            Ok(identity) => self.establish(key, identity, now, "authenticated", rid),
            Err(reason) => {
                self.stats.auth_failures += 1;
                if let Some(s) = self.session(key) {
                    warn!(
                        "client {} from {}: auth failed: {reason}",
                        client_id_str(s.id),
                        s.ip
                    );
                }
                self.error(key, ErrorCode::AuthFailed, &reason.to_string(), now, rid);
                self.close(key, 4001, "auth failed");
            }
        }
    }

    /// Makes `identity` the session's, joins its rooms, and answers with `event`.
    fn establish(
        &mut self,
        key: ConnKey,
        identity: Identity,
        now: Now,
        event: &str,
        rid: Option<&RawValue>,
    ) {
        let Some(s) = self.sessions.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        let first = s.identity.is_none();
        // A fresh token replaces the old identity: keep only rooms it may still join.
        let rooms = &mut self.rooms;
        s.rooms.retain(|room| {
            let keep = identity.may_join(room);
            if !keep {
                rooms.leave(room, key);
            }
            keep
        });
        for room in &identity.rooms {
            if s.rooms.len() >= MAX_ROOMS_PER_CLIENT {
                break;
            }
            let (name, added) = self.rooms.join(room, key);
            if added {
                s.rooms.push(name);
            }
        }
        s.expiry_ms = identity.expires_at.map(|exp| now.ms_at_unix(exp));
        if first {
            info!(
                "client {} from {} authenticated as {:?}",
                client_id_str(s.id),
                s.ip,
                identity.sub
            );
        }
        // A token made for a host (`host` named explicitly, not implied by
        // `admin`) is not announced as a client: hosts hear about clients only.
        let joined =
            first && s.host.is_none() && !identity.permissions.iter().any(|p| &**p == "host");
        if joined {
            s.announced = true;
        }
        let (id, ip) = (s.id, s.ip);
        s.identity = Some(identity);
        self.reply_identity(key, event, rid);
        if joined {
            self.notify_hosts_joined(key, id, ip);
        }
    }

    /// `authenticated` / `whoami`: `{clientId, sub, permissions, rooms, expiresAt}`.
    pub(super) fn reply_identity(&mut self, key: ConnKey, event: &str, rid: Option<&RawValue>) {
        let Some(s) = self.sessions.get(key).and_then(Option::as_ref) else {
            return;
        };
        let Some(identity) = &s.identity else { return };
        self.out.reply(key, event, rid, |data| {
            data.str("clientId", &client_id_str(s.id))
                .str("sub", &identity.sub)
                .str_array("permissions", &identity.permissions)
                .str_array("rooms", &s.rooms)
                .opt_u64("expiresAt", identity.expires_at);
        });
    }

    /// Reads `{"room": NAME}`, answering `invalid_data` when it is not one.
    fn room_arg<'a>(
        &mut self,
        key: ConnKey,
        now: Now,
        data: Option<&'a RawValue>,
        rid: Option<&RawValue>,
    ) -> Option<Cow<'a, str>> {
        let room = data_as::<RoomData>(data).map(|d| d.room);
        match room {
            Some(room) if !room.is_empty() && room.len() <= MAX_ROOM_NAME => Some(room),
            _ => {
                let msg = "data must be {\"room\": NAME} with a name of 1 to 256 bytes";
                self.error(key, ErrorCode::InvalidData, msg, now, rid);
                None
            }
        }
    }

    fn on_subscribe(
        &mut self,
        key: ConnKey,
        now: Now,
        data: Option<&RawValue>,
        rid: Option<&RawValue>,
    ) {
        let Some(room) = self.room_arg(key, now, data, rid) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        let allowed = s.identity.as_ref().is_some_and(|i| i.may_join(&room));
        if !allowed {
            self.error(
                key,
                ErrorCode::RoomNotAllowed,
                "this client may not join that room",
                now,
                rid,
            );
            return;
        }
        if !s.rooms.iter().any(|r| **r == *room) {
            if s.rooms.len() >= MAX_ROOMS_PER_CLIENT {
                let msg = "a client may be in at most 256 rooms";
                self.error(key, ErrorCode::InvalidData, msg, now, rid);
                return;
            }
            let (name, _) = self.rooms.join(&room, key);
            s.rooms.push(name);
        }
        self.reply_room(key, "subscribed", &room, None, rid);
    }

    fn on_unsubscribe(
        &mut self,
        key: ConnKey,
        now: Now,
        data: Option<&RawValue>,
        rid: Option<&RawValue>,
    ) {
        let Some(room) = self.room_arg(key, now, data, rid) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        if let Some(pos) = s.rooms.iter().position(|r| **r == *room) {
            s.rooms.swap_remove(pos);
            self.rooms.leave(&room, key);
        }
        self.reply_room(key, "unsubscribed", &room, None, rid);
    }

    fn on_publish(
        &mut self,
        key: ConnKey,
        now: Now,
        data: Option<&RawValue>,
        rid: Option<&RawValue>,
    ) {
        let Some(identity) = self.session(key).and_then(|s| s.identity.as_ref()) else {
            return;
        };
        if !identity.has("publish") {
            self.error(
                key,
                ErrorCode::Forbidden,
                "publish needs the `publish` permission",
                now,
                rid,
            );
            return;
        }
        let parsed = data_as::<PublishData>(data)
            .filter(|p| !p.room.is_empty() && p.room.len() <= MAX_ROOM_NAME && !p.event.is_empty());
        let Some(publish) = parsed else {
            let msg = "data must be {\"room\": NAME, \"event\": NAME, \"data\": ANY}";
            self.error(key, ErrorCode::InvalidData, msg, now, rid);
            return;
        };
        if !identity.may_join(&publish.room) {
            self.error(
                key,
                ErrorCode::RoomNotAllowed,
                "this client may not publish to that room",
                now,
                rid,
            );
            return;
        }
        let mut message = Vec::with_capacity(64 + publish.data.map_or(4, |d| d.get().len()));
        let mut msg = JsonWriter::object(&mut message);
        msg.str("event", &publish.event)
            .raw("data", publish.data.map_or("null", |d| d.get()))
            .str("room", &publish.room)
            .str("from", &identity.sub);
        msg.end();
        let delivered = self.deliver(&publish.room, message.into(), Some(key));
        self.reply_room(key, "published", &publish.room, Some(delivered), rid);
    }

    /// Queues `message` for every member of `room` but `except`; returns how many.
    pub(super) fn deliver(
        &mut self,
        room: &str,
        message: Rc<[u8]>,
        except: Option<ConnKey>,
    ) -> u64 {
        let mut delivered = 0;
        for &member in self.rooms.members(room) {
            if Some(member) != except {
                self.out.actions.push(Action::Send {
                    to: member,
                    body: Body::Shared(message.clone()),
                });
                delivered += 1;
            }
        }
        delivered
    }

    fn reply_room(
        &mut self,
        key: ConnKey,
        event: &str,
        room: &str,
        delivered: Option<u64>,
        rid: Option<&RawValue>,
    ) {
        self.out.reply(key, event, rid, |data| {
            data.str("room", room);
            if let Some(n) = delivered {
                data.u64("delivered", n);
            }
        });
    }

    pub(super) fn error(
        &mut self,
        key: ConnKey,
        code: ErrorCode,
        message: &str,
        now: Now,
        rid: Option<&RawValue>,
    ) {
        self.out.error(key, code.as_str(), message, now.unix, rid);
    }

    /// Ends a session from the core's side: the shell sends the close frame.
    pub(super) fn close(&mut self, key: ConnKey, code: u16, reason: &'static str) {
        self.disconnect(key, code);
        self.out.actions.push(Action::Close {
            to: key,
            code,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::auth::MintRequest;
    use std::collections::BTreeMap;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const T0: Now = Now {
        ms: 1_000,
        unix: 1_800_000_000,
    };

    fn at(ms_later: u64) -> Now {
        Now {
            ms: T0.ms + ms_later,
            unix: T0.unix + ms_later / 1000,
        }
    }

    fn hub() -> Hub {
        let auth = Authenticator::new(
            SECRET,
            None,
            None,
            Some("password1"),
            &["admin".into()],
            BTreeMap::new(),
        );
        Hub::new(HubConfig {
            auth,
            auth_timeout_ms: 10_000,
            max_messages_per_minute: 60,
            request_timeout_ms: 5_000,
            server_name: "tether/test".into(),
        })
    }

    fn token(h: &Hub, sub: &str, permissions: &[&str], rooms: &[&str], ttl_s: u64) -> String {
        let req = MintRequest {
            sub: sub.into(),
            permissions: permissions.iter().map(|s| s.to_string()).collect(),
            rooms: rooms.iter().map(|s| s.to_string()).collect(),
            role: None,
            ttl_s,
        };
        h.config().auth.mint(&req, T0.unix).unwrap().0
    }

    /// Drains the outbox as (recipient, JSON) and closes as (recipient, code).
    fn drain(h: &mut Hub) -> Vec<(ConnKey, serde_json::Value)> {
        let out = h
            .out
            .actions
            .iter()
            .map(|a| match a {
                Action::Send { to, body } => {
                    (*to, serde_json::from_slice(h.out.body(body)).unwrap())
                }
                Action::Close { to, code, .. } => (*to, serde_json::json!({ "close": code })),
            })
            .collect();
        h.out.clear();
        out
    }

    fn send(h: &mut Hub, key: ConnKey, now: Now, text: &str) -> Vec<(ConnKey, serde_json::Value)> {
        h.on_text(key, now, text);
        drain(h)
    }

    fn open_authed(h: &mut Hub, key: ConnKey, t: &str) {
        h.open(
            key,
            100 + key as u64,
            "127.0.0.1".parse().unwrap(),
            T0,
            None,
        );
        drain(h);
        let out = send(
            h,
            key,
            T0,
            &format!(r#"{{"event":"auth","data":{{"token":"{t}"}}}}"#),
        );
        assert_eq!(out[0].1["event"], "authenticated", "{out:?}");
    }

    #[test]
    fn connected_then_auth_timeout() {
        let mut h = hub();
        h.open(3, 0x2a, "127.0.0.1".parse().unwrap(), T0, None);
        let out = drain(&mut h);
        assert_eq!(out[0].1["event"], "connected");
        assert_eq!(out[0].1["data"]["clientId"], "2a");
        assert_eq!(out[0].1["data"]["authenticated"], false);
        assert_eq!(h.deadline(3), Some(T0.ms + 10_000));
        h.on_timer(3, at(9_999));
        assert!(drain(&mut h).is_empty());
        h.on_timer(3, at(10_000));
        let out = drain(&mut h);
        assert_eq!(out[0].1["data"]["code"], "auth_timeout");
        assert_eq!(out[1].1["close"], 4002);
        assert!(h.session(3).is_none());
    }

    #[test]
    fn handshake_token_authenticates_at_once() {
        let mut h = hub();
        let t = token(&h, "alice", &[], &["lobby"], 60);
        let identity = h.config().auth.verify(&t, T0.unix).unwrap();
        h.open(0, 1, "127.0.0.1".parse().unwrap(), T0, Some(identity));
        let out = drain(&mut h);
        assert_eq!(out[0].1["data"]["authenticated"], true);
        assert_eq!(out[1].1["event"], "authenticated");
        assert_eq!(out[1].1["data"]["rooms"], serde_json::json!(["lobby"]));
        assert_eq!(out[1].1["data"]["expiresAt"], T0.unix + 60);
    }

    #[test]
    fn only_auth_and_ping_before_auth() {
        let mut h = hub();
        h.open(0, 1, "127.0.0.1".parse().unwrap(), T0, None);
        drain(&mut h);
        let out = send(&mut h, 0, T0, r#"{"event":"ping","requestId":5}"#);
        assert_eq!(out[0].1["event"], "pong");
        assert_eq!(out[0].1["data"]["time"], T0.unix);
        assert_eq!(out[0].1["requestId"], 5);
        for event in ["whoami", "subscribe", "nope"] {
            let out = send(
                &mut h,
                0,
                T0,
                &format!(r#"{{"event":"{event}","requestId":"r"}}"#),
            );
            assert_eq!(out[0].1["data"]["code"], "not_authenticated");
            assert_eq!(out[0].1["requestId"], "r");
        }
        let out = send(&mut h, 0, T0, r#"{"event":"auth","data":{"nothing":1}}"#);
        assert_eq!(out[0].1["data"]["code"], "invalid_data");
        let out = send(&mut h, 0, T0, "{oops");
        assert_eq!(out[0].1["data"]["code"], "invalid_json");
    }

    #[test]
    fn bad_password_closes_4001_good_one_authenticates() {
        let mut h = hub();
        h.open(0, 1, "127.0.0.1".parse().unwrap(), T0, None);
        h.open(1, 2, "127.0.0.1".parse().unwrap(), T0, None);
        drain(&mut h);
        let out = send(
            &mut h,
            0,
            T0,
            r#"{"event":"auth","data":{"password":"wrong"},"requestId":1}"#,
        );
        assert_eq!(out[0].1["data"]["code"], "auth_failed");
        assert_eq!(out[0].1["requestId"], 1);
        assert_eq!(out[1].1["close"], 4001);
        let out = send(
            &mut h,
            1,
            T0,
            r#"{"event":"auth","data":{"password":"password1"}}"#,
        );
        assert_eq!(out[0].1["data"]["sub"], "password");
        assert_eq!(
            out[0].1["data"]["permissions"],
            serde_json::json!(["admin"])
        );
        assert_eq!(out[0].1["data"]["expiresAt"], serde_json::Value::Null);
        assert_eq!(h.stats.auth_failures, 1);
    }

    #[test]
    fn token_expiry_closes_4003_unless_refreshed() {
        let mut h = hub();
        let short = token(&h, "bob", &[], &[], 30);
        open_authed(&mut h, 0, &short);
        assert_eq!(h.deadline(0), Some(T0.ms + 30_000));
        // A fresh token before expiry extends the session.
        let fresh = token(&h, "bob", &[], &[], 120);
        let out = send(
            &mut h,
            0,
            at(20_000),
            &format!(r#"{{"event":"auth","data":{{"token":"{fresh}"}}}}"#),
        );
        assert_eq!(out[0].1["event"], "authenticated");
        h.on_timer(0, at(30_000));
        assert!(drain(&mut h).is_empty());
        h.on_timer(0, at(120_000));
        let out = drain(&mut h);
        assert_eq!(out[0].1["data"]["code"], "token_expired");
        assert_eq!(out[1].1["close"], 4003);
    }

    #[test]
    fn rooms_subscribe_publish() {
        let mut h = hub();
        let a = token(&h, "a", &["publish", "room:project_*"], &["lobby"], 600);
        let b = token(&h, "b", &[], &["lobby"], 600);
        let c = token(&h, "c", &["publish"], &[], 600);
        open_authed(&mut h, 0, &a);
        open_authed(&mut h, 1, &b);
        open_authed(&mut h, 2, &c);
        assert_eq!(h.active_rooms(), 1);

        let out = send(
            &mut h,
            0,
            T0,
            r#"{"event":"subscribe","data":{"room":"project_x"},"requestId":"s"}"#,
        );
        assert_eq!(
            out[0].1,
            serde_json::json!({"event":"subscribed","data":{"room":"project_x"},"requestId":"s"})
        );
        let out = send(
            &mut h,
            1,
            T0,
            r#"{"event":"subscribe","data":{"room":"project_x"}}"#,
        );
        assert_eq!(out[0].1["data"]["code"], "room_not_allowed");
        let out = send(&mut h, 1, T0, r#"{"event":"subscribe","data":{"room":5}}"#);
        assert_eq!(out[0].1["data"]["code"], "invalid_data");

        let out = send(
            &mut h,
            0,
            T0,
            r#"{"event":"publish","data":{"room":"lobby","event":"hi","data":{"n":1}},"requestId":9}"#,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, 1);
        assert_eq!(
            out[0].1,
            serde_json::json!({"event":"hi","data":{"n":1},"room":"lobby","from":"a"})
        );
        assert_eq!(
            out[1].1,
            serde_json::json!({"event":"published","data":{"room":"lobby","delivered":1},"requestId":9})
        );

        let out = send(
            &mut h,
            1,
            T0,
            r#"{"event":"publish","data":{"room":"lobby","event":"hi"}}"#,
        );
        assert_eq!(out[0].1["data"]["code"], "forbidden");
        let out = send(
            &mut h,
            2,
            T0,
            r#"{"event":"publish","data":{"room":"lobby","event":"hi"}}"#,
        );
        assert_eq!(out[0].1["data"]["code"], "room_not_allowed");
        let out = send(
            &mut h,
            0,
            T0,
            r#"{"event":"publish","data":{"room":"lobby"}}"#,
        );
        assert_eq!(out[0].1["data"]["code"], "invalid_data");

        let out = send(
            &mut h,
            1,
            T0,
            r#"{"event":"unsubscribe","data":{"room":"lobby"}}"#,
        );
        assert_eq!(out[0].1["event"], "unsubscribed");
        let out = send(
            &mut h,
            0,
            T0,
            r#"{"event":"publish","data":{"room":"lobby","event":"hi"}}"#,
        );
        assert_eq!(out[0].1["data"]["delivered"], 0);

        let out = send(&mut h, 1, T0, r#"{"event":"whoami"}"#);
        assert_eq!(out[0].1["event"], "whoami");
        assert_eq!(out[0].1["data"]["rooms"], serde_json::json!([]));
        let out = send(&mut h, 1, T0, r#"{"event":"fly"}"#);
        assert_eq!(out[0].1["data"]["code"], "unknown_event");

        h.disconnect(0, 1000);
        assert_eq!(h.active_rooms(), 0);
        assert_eq!(h.active_connections(), 2);
    }

    #[test]
    fn rate_limit_then_flood_close() {
        let mut h = hub();
        h.open(0, 1, "127.0.0.1".parse().unwrap(), T0, None);
        drain(&mut h);
        for _ in 0..60 {
            assert_eq!(
                send(&mut h, 0, T0, r#"{"event":"ping"}"#)[0].1["event"],
                "pong"
            );
        }
        for _ in 0..60 {
            let out = send(&mut h, 0, T0, r#"{"event":"ping","requestId":1}"#);
            assert_eq!(out[0].1["data"]["code"], "rate_limited");
        }
        let out = send(&mut h, 0, T0, r#"{"event":"ping"}"#);
        assert_eq!(out[0].1["close"], 4008);
        assert!(h.session(0).is_none());
    }

    #[test]
    fn binary_is_invalid_format() {
        let mut h = hub();
        h.open(0, 1, "127.0.0.1".parse().unwrap(), T0, None);
        drain(&mut h);
        h.on_binary(0, T0);
        assert_eq!(drain(&mut h)[0].1["data"]["code"], "invalid_format");
    }
}
