//! The host link (SPEC §6): the backend registers the client events it
//! serves, answers forwarded requests, and broadcasts, sends, kicks and mints
//! tokens through the gateway. State: which host serves which event, and the
//! table of requests waiting for an answer, each with its deadline.

use crate::proto::auth::{parse_ttl, MintRequest, MAX_TTL_S};
use crate::proto::envelope::{ErrorCode, JsonWriter};
use crate::proto::hub::{client_id_str, data_as, Action, Body, Hub, MAX_ROOM_NAME};
use crate::proto::publish::Audience;
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use log::info;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::rc::Rc;

/// Requests one host may have unanswered; past it clients get `host_unavailable`.
pub const MAX_PENDING_PER_HOST: usize = 4096;
/// Requests one client may have waiting for hosts at once.
pub const MAX_PENDING_PER_CLIENT: usize = 64;
/// Events one host may serve.
pub const MAX_EVENTS_PER_HOST: usize = 256;
/// Bits of a connection id that hold its connection key (the rest is a serial).
pub const KEY_BITS: u32 = 24;
/// Client events the gateway itself serves; no host may take them.
const BUILT_IN: [&str; 6] = [
    "auth",
    "ping",
    "whoami",
    "subscribe",
    "unsubscribe",
    "publish",
];

/// What a registered host serves.
#[derive(Debug, Default)]
pub struct HostRole {
    pub events: Vec<Box<str>>,
    pub in_flight: usize,
}

#[derive(Debug)]
struct HostEvent {
    host: ConnKey,
    permission: Option<Box<str>>,
}

#[derive(Debug)]
struct Pending {
    client: ConnKey,
    host: ConnKey,
    request_id: Option<Box<RawValue>>,
    deadline_ms: u64,
}

#[derive(Debug, Default)]
pub struct HostLink {
    events: HashMap<Box<str>, HostEvent>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    /// Connections that registered as hosts (notices go to them).
    host_keys: Vec<ConnKey>,
    pub requests_forwarded: u64,
    pub requests_timed_out: u64,
}

impl HostLink {
    /// Deadline of the oldest live request in `waiting`.
    pub fn first_deadline(&self, waiting: &std::collections::VecDeque<u64>) -> Option<u64> {
        waiting
            .front()
            .and_then(|id| self.pending.get(id))
            .map(|p| p.deadline_ms)
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn host_count(&self) -> usize {
        self.host_keys.len()
    }
}

#[derive(Deserialize)]
struct RegisterData {
    events: BTreeMap<String, Option<String>>,
}

#[derive(Deserialize)]
struct ReplyError<'a> {
    #[serde(borrow)]
    code: Cow<'a, str>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ReplyData<'a> {
    id: u64,
    #[serde(default, borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    error: Option<ReplyError<'a>>,
}

#[derive(Deserialize)]
struct BroadcastData<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    room: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct SendData<'a> {
    #[serde(borrow)]
    client: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct KickData<'a> {
    #[serde(borrow)]
    client: Cow<'a, str>,
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Ttl {
    Seconds(u64),
    Text(String),
}

#[derive(Deserialize)]
struct TokenData {
    sub: String,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    ttl: Option<Ttl>,
}

/// The key of a `clientId` string, when it names a connection.
pub(super) fn key_of(client: &str) -> Option<(ConnKey, u64)> {
    let id = u64::from_str_radix(client, 16).ok()?;
    Some(((id & ((1 << KEY_BITS) - 1)) as ConnKey, id))
}

impl Hub {
    /// `host.*` events: they need the `host` permission (`admin` implies it).
    pub(super) fn on_host_event(
        &mut self,
        key: ConnKey,
        now: Now,
        event: &str,
        data: Option<&RawValue>,
        rid: Option<&RawValue>,
    ) {
        let is_host = self
            .session(key)
            .and_then(|s| s.identity.as_ref())
            .is_some_and(|i| i.has("host"));
        if !is_host {
            self.error(
                key,
                ErrorCode::Forbidden,
                "host events need the `host` permission",
                now,
                rid,
            );
            return;
        }
        match event {
            "host.register" => self.host_register(key, now, data, rid),
            "host.reply" => self.host_reply(key, now, data, rid),
            "host.broadcast" => self.host_broadcast(key, now, data, rid),
            "host.send" => self.host_send(key, now, data, rid),
            "host.clients" => self.host_clients(key, rid),
            "host.kick" => self.host_kick(key, now, data, rid),
            "host.token" => self.host_token(key, now, data, rid),
            _ => self.error(key, ErrorCode::UnknownEvent, "no such host event", now, rid),
        }
    }

    fn host_register(
        &mut self,
        key: ConnKey,
        now: Now,
        data: Option<&RawValue>,
        rid: Option<&RawValue>,
    ) {
        let Some(request) = data_as::<RegisterData>(data) else {
            let msg = "data must be {\"events\": {NAME: PERMISSION or null}}";
            return self.error(key, ErrorCode::InvalidData, msg, now, rid);
        };
        let served_now: &[Box<str>] = self
            .session(key)
            .and_then(|s| s.host.as_ref())
            .map_or(&[], |h| &h.events);
        // Re-registering an event this host serves (to change its permission)
        // does not count again toward the bound.
        let added = request
            .events
            .keys()
            .filter(|name| !served_now.iter().any(|e| **e == ***name))
            .count();
        let already = served_now.len();
        let mut problem = None;
        for (name, permission) in &request.events {
            let taken = self
                .hosts
                .events
                .get(name.as_str())
                .is_some_and(|e| e.host != key);
            problem = if name.is_empty() || name.len() > MAX_ROOM_NAME {
                Some(format!("event names must be 1 to {MAX_ROOM_NAME} bytes"))
            } else if BUILT_IN.contains(&name.as_str()) || name.starts_with("host.") {
                Some(format!("`{name}` is a built-in event"))
            } else if taken {
                Some(format!("`{name}` is already served by another host"))
            } else if permission.as_deref() == Some("") {
                Some(format!("the permission of `{name}` is empty"))
            } else {
                None
            };
            if problem.is_some() {
                break;
            }
        }
        if already + added > MAX_EVENTS_PER_HOST {
            problem = Some(format!(
                "a host may serve at most {MAX_EVENTS_PER_HOST} events"
            ));
        }
        if let Some(problem) = problem {
            return self.error(key, ErrorCode::InvalidData, &problem, now, rid);
        }
        let Some(session) = self.sessions.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        let first = session.host.is_none();
        let role = session.host.get_or_insert_with(HostRole::default);
        for (name, permission) in request.events {
            if !role.events.iter().any(|e| **e == *name) {
                role.events.push(name.as_str().into());
            }
            let permission = permission.map(String::into_boxed_str);
            self.hosts.events.insert(
                name.into_boxed_str(),
                HostEvent {
                    host: key,
                    permission,
                },
            );
        }
        let mut served: Vec<&str> = role.events.iter().map(|e| &**e).collect();
        served.sort_unstable();
        if first {
            self.hosts.host_keys.push(key);
            // Rooms are for clients: broadcasts and notices skip hosts.
            info!(
                "client {} registered as a host: {}",
                client_id_str(session.id),
                served.join(", ")
            );
        }
        self.out.reply(key, "host.registered", rid, |data| {
            data.str_array("events", &served);
        });
    }

    /// A client event that no built-in serves: forward it to its host.
    pub(super) fn forward_to_host(
        &mut self,
        key: ConnKey,
        now: Now,
        event: &str,
        data: Option<&RawValue>,
        rid: Option<&RawValue>,
    ) {
        let Some(target) = self.hosts.events.get(event) else {
            return self.error(
                key,
                ErrorCode::UnknownEvent,
                "no handler for this event",
                now,
                rid,
            );
        };
        let host = target.host;
        let Some(session) = self.sessions.get(key).and_then(Option::as_ref) else {
            return;
        };
        let Some(identity) = &session.identity else {
            return;
        };
        if let Some(permission) = &target.permission {
            if !identity.has(permission) {
                let msg = format!("`{event}` needs the `{permission}` permission");
                return self.error(key, ErrorCode::Forbidden, &msg, now, rid);
            }
        }
        let host_busy = self
            .sessions
            .get(host)
            .and_then(Option::as_ref)
            .and_then(|h| h.host.as_ref())
            .is_none_or(|role| role.in_flight >= MAX_PENDING_PER_HOST);
        if host_busy || session.waiting.len() >= MAX_PENDING_PER_CLIENT {
            let msg = "too many requests are waiting for the host; retry later";
            return self.error(key, ErrorCode::HostUnavailable, msg, now, rid);
        }
        self.hosts.next_id += 1;
        let id = self.hosts.next_id;
        self.out.reply(host, "host.request", None, |body| {
            body.u64("id", id)
                .str("client", &client_id_str(session.id))
                .str("sub", &identity.sub)
                .str_array("permissions", &identity.permissions)
                .str("event", event)
                .raw("data", data.map_or("null", |d| d.get()));
        });
        self.hosts.pending.insert(
            id,
            Pending {
                client: key,
                host,
                request_id: rid.map(|r| r.to_owned()),
                deadline_ms: now.ms.saturating_add(self.cfg.request_timeout_ms),
            },
        );
        self.hosts.requests_forwarded += 1;
        if let Some(s) = self.sessions.get_mut(key).and_then(Option::as_mut) {
            s.waiting.push_back(id);
        }
        if let Some(role) = self
            .sessions
            .get_mut(host)
            .and_then(Option::as_mut)
            .and_then(|h| h.host.as_mut())
        {
            role.in_flight += 1;
        }
    }

    /// Removes request `id` from the tables; returns it.
    fn take_pending(&mut self, id: u64) -> Option<Pending> {
        let pending = self.hosts.pending.remove(&id)?;
        if let Some(s) = self
            .sessions
            .get_mut(pending.client)
            .and_then(Option::as_mut)
        {
            if let Some(pos) = s.waiting.iter().position(|&w| w == id) {
                s.waiting.remove(pos);
            }
            if s.waiting.is_empty() {
                s.waiting = Default::default();
            }
        }
        if let Some(role) = self
            .sessions
            .get_mut(pending.host)
            .and_then(Option::as_mut)
            .and_then(|h| h.host.as_mut())
        {
            role.in_flight = role.in_flight.saturating_sub(1);
        }
        Some(pending)
    }

    fn host_reply(
        &mut self,
        key: ConnKey,
        now: Now,
        data: Option<&RawValue>,
        rid: Option<&RawValue>,
    ) {
        let Some(reply) =
            data_as::<ReplyData>(data).filter(|r| r.event.is_some() || r.error.is_some())
        else {
            let msg = "data must be {\"id\", \"event\", \"data\"} or {\"id\", \"error\": {\"code\", \"message\"}}";
            return self.error(key, ErrorCode::InvalidData, msg, now, rid);
        };
        // Late, unknown or someone else's: dropped.
        let ours = self
            .hosts
            .pending
            .get(&reply.id)
            .is_some_and(|p| p.host == key);
        let pending = if ours {
            self.take_pending(reply.id)
        } else {
            None
        };
        let delivered = match pending {
            Some(pending) => {
                let client_rid = pending.request_id.as_deref();
                match (&reply.error, &reply.event) {
                    (Some(error), _) => {
                        let message = error
                            .message
                            .as_deref()
                            .unwrap_or("the host refused the request");
                        let (to, code) = (pending.client, &error.code);
                        self.out.error(to, code, message, now.unix, client_rid);
                    }
                    (None, Some(event)) => {
                        let data = reply.data.map_or("null", |d| d.get());
                        self.out.reply_raw(pending.client, event, client_rid, data);
                    }
                    // Refused by the filter above.
                    (None, None) => return,
                }
                1
            }
            None => 0,
        };
        self.out.ack(key, rid, |w| {
            w.u64("delivered", delivered);
        });
    }

    fn host_broadcast(
        &mut self,
        key: ConnKey,
        now: Now,
        data: Option<&RawValue>,
        rid: Option<&RawValue>,
    ) {
        let parsed = data_as::<BroadcastData>(data).filter(|b| !b.event.is_empty());
        let Some(broadcast) = parsed else {
            let msg = "data must be {\"event\", \"data\", \"room\"?}";
            return self.error(key, ErrorCode::InvalidData, msg, now, rid);
        };
        let audience = match &broadcast.room {
            Some(room) => Audience::Room(room),
            None => Audience::All,
        };
        let data = broadcast.data.map_or("null", |d| d.get());
        let delivered = self.publish(&broadcast.event, data, audience);
        self.out.ack(key, rid, |w| {
            w.u64("delivered", delivered);
        });
    }

    /// The live session a `clientId` names.
    fn client_key(&self, client: &str) -> Option<ConnKey> {
        let (key, id) = key_of(client)?;
        self.session(key).filter(|s| s.id == id).map(|_| key)
    }

    fn host_send(
        &mut self,
        key: ConnKey,
        now: Now,
        data: Option<&RawValue>,
        rid: Option<&RawValue>,
    ) {
        let Some(send) = data_as::<SendData>(data).filter(|s| !s.event.is_empty()) else {
            let msg = "data must be {\"client\", \"event\", \"data\"}";
            return self.error(key, ErrorCode::InvalidData, msg, now, rid);
        };
        let delivered = match self.client_key(&send.client) {
            Some(target) => {
                let data = send.data.map_or("null", |d| d.get());
                self.out.reply_raw(target, &send.event, None, data);
                1
            }
            None => 0,
        };
        self.out.ack(key, rid, |w| {
            w.u64("delivered", delivered);
        });
    }

    fn host_clients(&mut self, key: ConnKey, rid: Option<&RawValue>) {
        let mut list = Vec::with_capacity(256);
        self.write_client_list(&mut list);
        self.out.reply(key, "host.clients", rid, |data| {
            data.with_raw("clients", |buf| buf.extend_from_slice(&list));
        });
    }

    fn host_kick(
        &mut self,
        key: ConnKey,
        now: Now,
        data: Option<&RawValue>,
        rid: Option<&RawValue>,
    ) {
        let Some(kick) = data_as::<KickData>(data) else {
            let msg = "data must be {\"client\", \"reason\"}";
            return self.error(key, ErrorCode::InvalidData, msg, now, rid);
        };
        let reason = kick.reason.as_deref().unwrap_or("kicked by the host");
        let target = self.client_key(&kick.client);
        // The acknowledgement comes before the `host.client_left` the kick
        // causes, like the answer to any other host event; a host that kicks
        // itself gets none (it is gone).
        if target != Some(key) {
            self.out.ack(key, rid, |w| {
                w.u64("delivered", u64::from(target.is_some()));
            });
        }
        if let Some(target) = target {
            self.out.reply(target, "kicked", None, |data| {
                data.str("reason", reason);
            });
            self.close(target, 4010, "kicked");
        }
    }

    fn host_token(
        &mut self,
        key: ConnKey,
        now: Now,
        data: Option<&RawValue>,
        rid: Option<&RawValue>,
    ) {
        let Some(request) = data_as::<TokenData>(data).filter(|t| !t.sub.is_empty()) else {
            let msg = "data must be {\"sub\", \"permissions\"?, \"rooms\"?, \"role\"?, \"ttl\"?}";
            return self.error(key, ErrorCode::InvalidData, msg, now, rid);
        };
        let minter_is_admin = self
            .session(key)
            .and_then(|s| s.identity.as_ref())
            .is_some_and(|i| i.is_admin());
        if !minter_is_admin
            && request
                .permissions
                .iter()
                .any(|p| p == "host" || p == "admin")
        {
            let msg = "only an admin host may mint `host` or `admin` tokens";
            return self.error(key, ErrorCode::Forbidden, msg, now, rid);
        }
        let ttl_s = match request.ttl {
            None => Ok(86_400),
            Some(Ttl::Seconds(0)) => Err("ttl must be at least one second".to_string()),
            Some(Ttl::Seconds(s)) if s > MAX_TTL_S => {
                Err(format!("ttl {s} is longer than ten years"))
            }
            Some(Ttl::Seconds(s)) => Ok(s),
            Some(Ttl::Text(text)) => parse_ttl(&text),
        };
        let ttl_s = match ttl_s {
            Ok(s) => s,
            Err(problem) => return self.error(key, ErrorCode::InvalidData, &problem, now, rid),
        };
        let mint = MintRequest {
            sub: request.sub,
            permissions: request.permissions,
            rooms: request.rooms,
            role: request.role,
            ttl_s,
        };
        let (token, expires_at) = match self.cfg.auth.mint(&mint, now.unix) {
            Ok(minted) => minted,
            Err(e) => {
                log::error!("minting a token failed: {e}");
                return self.error(
                    key,
                    ErrorCode::InternalError,
                    "could not mint a token",
                    now,
                    rid,
                );
            }
        };
        self.out.reply(key, "host.token", rid, |data| {
            data.str("token", &token).u64("expiresAt", expires_at);
        });
    }

    /// Times out this client's requests whose deadline passed.
    pub(super) fn expire_requests(&mut self, key: ConnKey, now: Now) {
        loop {
            let Some(s) = self.session(key) else { return };
            let Some(&id) = s.waiting.front() else { return };
            let due = self
                .hosts
                .pending
                .get(&id)
                .is_none_or(|p| p.deadline_ms <= now.ms);
            if !due {
                return;
            }
            let Some(pending) = self.take_pending(id) else {
                // Already answered: only the stale entry goes.
                if let Some(s) = self.sessions.get_mut(key).and_then(Option::as_mut) {
                    s.waiting.pop_front();
                }
                continue;
            };
            self.hosts.requests_timed_out += 1;
            let msg = "the host did not answer in time";
            self.error(
                key,
                ErrorCode::HostTimeout,
                msg,
                now,
                pending.request_id.as_deref(),
            );
        }
    }

    /// A client leaves: its waiting requests are forgotten (late replies dropped).
    pub(super) fn forget_requests_of(&mut self, session: &crate::proto::hub::Session) {
        for id in &session.waiting {
            if let Some(pending) = self.hosts.pending.remove(id) {
                let role = self
                    .sessions
                    .get_mut(pending.host)
                    .and_then(Option::as_mut)
                    .and_then(|h| h.host.as_mut());
                if let Some(role) = role {
                    role.in_flight = role.in_flight.saturating_sub(1);
                }
            }
        }
    }

    /// A host leaves: its events are unregistered, its requests fail.
    pub(super) fn host_gone(&mut self, key: ConnKey, role: &HostRole) {
        for event in &role.events {
            if self.hosts.events.get(event).is_some_and(|e| e.host == key) {
                self.hosts.events.remove(event);
            }
        }
        self.hosts.host_keys.retain(|&k| k != key);
        let mut orphans: Vec<u64> = self
            .hosts
            .pending
            .iter()
            .filter(|(_, p)| p.host == key)
            .map(|(&id, _)| id)
            .collect();
        // Ids grow with time: clients hear of their requests in the order sent.
        orphans.sort_unstable();
        for id in orphans {
            if let Some(pending) = self.take_pending(id) {
                let msg = "the host that serves this event is gone";
                // The unix time is only a timestamp here; the request's own is not kept.
                self.out.error(
                    pending.client,
                    ErrorCode::HostUnavailable.as_str(),
                    msg,
                    self.last_unix,
                    pending.request_id.as_deref(),
                );
            }
        }
    }

    pub(super) fn notify_hosts_joined(&mut self, key: ConnKey, id: u64, ip: IpAddr) {
        if self.hosts.host_keys.is_empty() {
            return;
        }
        let Some(identity) = self.session(key).and_then(|s| s.identity.as_ref()) else {
            return;
        };
        let mut message = Vec::with_capacity(96);
        let mut msg = JsonWriter::object(&mut message);
        msg.str("event", "host.client_joined");
        msg.begin("data")
            .str("client", &client_id_str(id))
            .str("sub", &identity.sub)
            .str("ip", &ip.to_string())
            .end();
        msg.end();
        self.send_to_hosts(message.into());
    }

    pub(super) fn notify_hosts_left(&mut self, id: u64, sub: &str, code: u16) {
        if self.hosts.host_keys.is_empty() {
            return;
        }
        let mut message = Vec::with_capacity(96);
        let mut msg = JsonWriter::object(&mut message);
        msg.str("event", "host.client_left");
        msg.begin("data")
            .str("client", &client_id_str(id))
            .str("sub", sub)
            .u64("code", u64::from(code))
            .end();
        msg.end();
        self.send_to_hosts(message.into());
    }

    fn send_to_hosts(&mut self, message: Rc<[u8]>) {
        for &host in &self.hosts.host_keys {
            self.out.actions.push(Action::Send {
                to: host,
                body: Body::Shared(message.clone()),
            });
        }
    }
}

/// `{"id","sub","ip","rooms","permissions","connectedAt"}` of one client.
pub(super) fn write_client_info(buf: &mut Vec<u8>, session: &crate::proto::hub::Session) {
    let mut info = JsonWriter::object(buf);
    info.str("id", &client_id_str(session.id));
    match &session.identity {
        Some(identity) => info.str("sub", &identity.sub),
        None => info.raw("sub", "null"),
    };
    info.str("ip", &session.ip.to_string())
        .str_array("rooms", &session.rooms);
    match &session.identity {
        Some(identity) => info.str_array("permissions", &identity.permissions),
        None => info.raw("permissions", "[]"),
    };
    info.u64("connectedAt", session.connected_at);
    info.end();
}

#[cfg(test)]
mod tests {
    use crate::proto::auth::{Authenticator, MintRequest};
    use crate::proto::hub::{Action, Hub, HubConfig};
    use crate::proto::rooms::ConnKey;
    use crate::proto::Now;
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    const T0: Now = Now {
        ms: 0,
        unix: 1_800_000_000,
    };

    fn at(ms: u64) -> Now {
        Now {
            ms,
            unix: T0.unix + ms / 1000,
        }
    }

    fn hub() -> Hub {
        let auth = Authenticator::new(&[9u8; 32], None, None, None, &[], BTreeMap::new());
        Hub::new(HubConfig {
            auth,
            auth_timeout_ms: 10_000,
            max_messages_per_minute: 10_000,
            request_timeout_ms: 1_000,
            server_name: "tether/test".into(),
        })
    }

    fn drain(h: &mut Hub) -> Vec<(ConnKey, Value)> {
        let out = h
            .out
            .actions
            .iter()
            .map(|a| match a {
                Action::Send { to, body } => {
                    (*to, serde_json::from_slice(h.out.body(body)).unwrap())
                }
                Action::Close { to, code, .. } => (*to, json!({ "close": code })),
            })
            .collect();
        h.out.clear();
        out
    }

    fn join(h: &mut Hub, key: ConnKey, sub: &str, permissions: &[&str], rooms: &[&str]) {
        let req = MintRequest {
            sub: sub.into(),
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            role: None,
            ttl_s: 3600,
        };
        let token = h.config().auth.mint(&req, T0.unix).unwrap().0;
        let identity = h.config().auth.verify(&token, T0.unix).unwrap();
        h.open(
            key,
            ((key as u64 + 1) << 24) | key as u64,
            "127.0.0.1".parse().unwrap(),
            T0,
            Some(identity),
        );
    }

    fn send(h: &mut Hub, key: ConnKey, now: Now, msg: Value) -> Vec<(ConnKey, Value)> {
        h.on_text(key, now, &msg.to_string());
        drain(h)
    }

    fn cid(h: &Hub, key: ConnKey) -> String {
        format!("{:x}", h.session(key).unwrap().id)
    }

    #[test]
    fn register_forward_reply_and_notices() {
        let mut h = hub();
        join(&mut h, 0, "game", &["host"], &[]);
        drain(&mut h);
        let out = send(
            &mut h,
            0,
            T0,
            json!({"event":"host.register","data":{"events":{"getPlayers":null,"kickPlayer":"admin"}},"requestId":1}),
        );
        assert_eq!(
            out[0].1,
            json!({"event":"host.registered","data":{"events":["getPlayers","kickPlayer"]},"requestId":1})
        );
        join(&mut h, 1, "alice", &[], &["lobby"]);
        let out = drain(&mut h);
        let joined = out
            .iter()
            .find(|(to, m)| *to == 0 && m["event"] == "host.client_joined")
            .unwrap();
        assert_eq!(
            joined.1["data"],
            json!({"client": cid(&h, 1), "sub": "alice", "ip": "127.0.0.1"})
        );

        let out = send(
            &mut h,
            1,
            T0,
            json!({"event":"getPlayers","data":{"page":2},"requestId":"r7"}),
        );
        assert_eq!(out[0].0, 0);
        let request = &out[0].1["data"];
        assert_eq!(out[0].1["event"], "host.request");
        assert_eq!(request["event"], "getPlayers");
        assert_eq!(request["data"], json!({"page":2}));
        assert_eq!(request["sub"], "alice");
        assert_eq!(request["client"], cid(&h, 1));
        let id = request["id"].as_u64().unwrap();

        let out = send(&mut h, 1, T0, json!({"event":"kickPlayer","requestId":2}));
        assert_eq!(out[0].1["data"]["code"], "forbidden");

        let out = send(
            &mut h,
            0,
            T0,
            json!({"event":"host.reply","data":{"id":id,"event":"players","data":[1,2]},"requestId":"a"}),
        );
        assert_eq!(
            out[0],
            (1, json!({"event":"players","data":[1,2],"requestId":"r7"}))
        );
        assert_eq!(
            out[1].1,
            json!({"event":"ok","data":{"delivered":1},"requestId":"a"})
        );
        // A late (repeated) reply is dropped.
        let out = send(
            &mut h,
            0,
            T0,
            json!({"event":"host.reply","data":{"id":id,"event":"players"},"requestId":"b"}),
        );
        assert_eq!(
            out,
            [(
                0,
                json!({"event":"ok","data":{"delivered":0},"requestId":"b"})
            )]
        );

        h.disconnect(1, 1000);
        let out = drain(&mut h);
        assert_eq!(out[0].1["event"], "host.client_left");
        assert_eq!(out[0].1["data"]["code"], 1000);
    }

    #[test]
    fn error_reply_timeout_and_host_gone() {
        let mut h = hub();
        join(&mut h, 0, "bot", &["host"], &[]);
        join(&mut h, 1, "u", &[], &[]);
        drain(&mut h);
        send(
            &mut h,
            0,
            T0,
            json!({"event":"host.register","data":{"events":{"play":null}}}),
        );
        let out = send(&mut h, 1, T0, json!({"event":"play","requestId":1}));
        let id = out[0].1["data"]["id"].as_u64().unwrap();
        let out = send(
            &mut h,
            0,
            T0,
            json!({"event":"host.reply","data":{"id":id,"error":{"code":"not_in_voice","message":"join a channel"}}}),
        );
        assert_eq!(out[0].1["event"], "error");
        assert_eq!(out[0].1["data"]["code"], "not_in_voice");
        assert_eq!(out[0].1["requestId"], 1);

        send(&mut h, 1, T0, json!({"event":"play","requestId":2}));
        assert_eq!(h.deadline(1), Some(1_000));
        h.on_timer(1, at(999));
        assert!(drain(&mut h).is_empty());
        h.on_timer(1, at(1_000));
        let out = drain(&mut h);
        assert_eq!(out[0].1["data"]["code"], "host_timeout");
        assert_eq!(out[0].1["requestId"], 2);

        send(&mut h, 1, at(1_000), json!({"event":"play","requestId":3}));
        h.disconnect(0, 1006);
        let out = drain(&mut h);
        assert_eq!(out[0], (1, out[0].1.clone()));
        assert_eq!(out[0].1["data"]["code"], "host_unavailable");
        assert_eq!(out[0].1["requestId"], 3);
        let out = send(&mut h, 1, at(1_000), json!({"event":"play"}));
        assert_eq!(out[0].1["data"]["code"], "unknown_event");
    }

    #[test]
    fn register_conflicts_are_refused() {
        let mut h = hub();
        join(&mut h, 0, "a", &["host"], &[]);
        join(&mut h, 1, "b", &["admin"], &[]);
        join(&mut h, 2, "c", &[], &[]);
        drain(&mut h);
        send(
            &mut h,
            0,
            T0,
            json!({"event":"host.register","data":{"events":{"x":null}}}),
        );
        for events in [
            json!({"x":null}),
            json!({"ping":null}),
            json!({"host.foo":null}),
        ] {
            let out = send(
                &mut h,
                1,
                T0,
                json!({"event":"host.register","data":{"events":events}}),
            );
            assert_eq!(out[0].1["data"]["code"], "invalid_data", "{events}");
        }
        let out = send(
            &mut h,
            1,
            T0,
            json!({"event":"host.register","data":{"events":{}}}),
        );
        assert_eq!(out[0].1["data"]["events"], json!([]));
        let out = send(
            &mut h,
            2,
            T0,
            json!({"event":"host.register","data":{"events":{}}}),
        );
        assert_eq!(out[0].1["data"]["code"], "forbidden");
    }

    #[test]
    fn broadcast_send_clients_kick_token() {
        let mut h = hub();
        join(&mut h, 0, "game", &["host"], &[]);
        join(&mut h, 1, "p1", &[], &["red"]);
        join(&mut h, 2, "p2", &[], &[]);
        drain(&mut h);
        send(
            &mut h,
            0,
            T0,
            json!({"event":"host.register","data":{"events":{}}}),
        );
        let out = send(
            &mut h,
            0,
            T0,
            json!({"event":"host.broadcast","data":{"event":"playerJoined","data":{"n":1}},"requestId":1}),
        );
        let recipients: Vec<ConnKey> = out
            .iter()
            .filter(|(_, m)| m["event"] == "playerJoined")
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(recipients, [1, 2]);
        assert_eq!(
            out.last().unwrap().1,
            json!({"event":"ok","data":{"delivered":2},"requestId":1})
        );
        let out = send(
            &mut h,
            0,
            T0,
            json!({"event":"host.broadcast","data":{"event":"e","room":"red"},"requestId":2}),
        );
        assert_eq!(out[0], (1, json!({"event":"e","data":null,"room":"red"})));

        let (c1, c2) = (cid(&h, 1), cid(&h, 2));
        let out = send(
            &mut h,
            0,
            T0,
            json!({"event":"host.send","data":{"client":c2,"event":"dm","data":"hi"},"requestId":3}),
        );
        assert_eq!(out[0], (2, json!({"event":"dm","data":"hi"})));
        let out = send(
            &mut h,
            0,
            T0,
            json!({"event":"host.send","data":{"client":"ffff","event":"dm"},"requestId":4}),
        );
        assert_eq!(out[0].1["data"]["delivered"], 0);

        let out = send(&mut h, 0, T0, json!({"event":"host.clients","requestId":5}));
        let clients = out[0].1["data"]["clients"].as_array().unwrap().clone();
        assert_eq!(clients.len(), 2);
        assert_eq!(clients[0]["sub"], "p1");
        assert_eq!(clients[0]["rooms"], json!(["red"]));
        assert_eq!(clients[0]["connectedAt"], T0.unix);

        let out = send(
            &mut h,
            0,
            T0,
            json!({"event":"host.kick","data":{"client":c1,"reason":"afk"}}),
        );
        assert_eq!(
            out[0],
            (1, json!({"event":"kicked","data":{"reason":"afk"}}))
        );
        assert_eq!(
            out.iter().find(|(_, m)| m.get("close").is_some()).unwrap(),
            &(1, json!({"close": 4010}))
        );
        // Found by fuzzing: a host that kicks itself got an `ok` after its close.
        join(&mut h, 3, "boss", &["admin"], &[]);
        drain(&mut h);
        let c3 = cid(&h, 3);
        let out = send(
            &mut h,
            3,
            T0,
            json!({"event":"host.kick","data":{"client":c3},"requestId":8}),
        );
        let to_boss: Vec<&Value> = out
            .iter()
            .filter(|(k, _)| *k == 3)
            .map(|(_, m)| m)
            .collect();
        assert_eq!(
            to_boss,
            [
                &json!({"event":"kicked","data":{"reason":"kicked by the host"}}),
                &json!({"close": 4010})
            ]
        );

        let out = send(
            &mut h,
            0,
            T0,
            json!({"event":"host.token","data":{"sub":"x","permissions":["admin"]}}),
        );
        assert_eq!(out[0].1["data"]["code"], "forbidden");
        let out = send(
            &mut h,
            0,
            T0,
            json!({"event":"host.token","data":{"sub":"x","rooms":["red"],"ttl":"15m"},"requestId":6}),
        );
        assert_eq!(out[0].1["event"], "host.token");
        assert_eq!(out[0].1["data"]["expiresAt"], T0.unix + 900);
        let token = out[0].1["data"]["token"].as_str().unwrap();
        assert_eq!(&*h.config().auth.verify(token, T0.unix).unwrap().sub, "x");
        let out = send(
            &mut h,
            0,
            T0,
            json!({"event":"host.token","data":{"sub":"x","ttl":60}}),
        );
        assert_eq!(out[0].1["data"]["expiresAt"], T0.unix + 60);
        // Found by fuzzing: a huge numeric ttl overflowed jwt-simple's clock.
        for ttl in [
            json!(u64::MAX),
            json!(10 * 365 * 86400 + 1),
            json!("99999999d"),
        ] {
            let out = send(
                &mut h,
                0,
                T0,
                json!({"event":"host.token","data":{"sub":"x","ttl":ttl},"requestId":7}),
            );
            assert_eq!(out[0].1["data"]["code"], "invalid_data", "ttl {ttl}");
        }
    }

    #[test]
    fn registered_hosts_are_not_rate_limited() {
        let mut h = hub();
        h.cfg.max_messages_per_minute = 5;
        join(&mut h, 0, "game", &["host"], &[]);
        join(&mut h, 1, "p", &[], &[]);
        drain(&mut h);
        send(
            &mut h,
            0,
            T0,
            json!({"event":"host.register","data":{"events":{}}}),
        );
        for n in 0..200 {
            let out = send(
                &mut h,
                0,
                T0,
                json!({"event":"host.broadcast","data":{"event":"tick","data":n},"requestId":n}),
            );
            assert_eq!(out[1].1["event"], "ok", "{n}: {out:?}");
        }
        // Clients still are.
        let codes: Vec<Value> = (0..6)
            .map(|_| send(&mut h, 1, T0, json!({"event":"ping"}))[0].1.clone())
            .collect();
        assert_eq!(codes[5]["data"]["code"], "rate_limited");
    }

    #[test]
    fn re_registering_served_events_does_not_count_twice() {
        let mut h = hub();
        join(&mut h, 0, "game", &["host"], &[]);
        drain(&mut h);
        let events = |permission: &str, n: usize| -> Value {
            (0..n)
                .map(|i| (format!("e{i}"), json!(permission)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let register = |h: &mut Hub, events: Value| {
            send(
                h,
                0,
                T0,
                json!({"event":"host.register","data":{"events":events}}),
            )[0]
            .1["event"]
                .clone()
        };
        assert_eq!(register(&mut h, events("read", 200)), "host.registered");
        assert_eq!(register(&mut h, events("admin", 200)), "host.registered");
        assert_eq!(register(&mut h, events("read", 256)), "host.registered");
        assert_eq!(register(&mut h, events("read", 257)), "error");
    }

    #[test]
    fn clients_lists_authenticated_non_hosts() {
        let mut h = hub();
        join(&mut h, 0, "game", &["host"], &[]);
        join(&mut h, 1, "p", &[], &[]);
        h.open(2, (3 << 24) | 2, "127.0.0.1".parse().unwrap(), T0, None);
        drain(&mut h);
        send(
            &mut h,
            0,
            T0,
            json!({"event":"host.register","data":{"events":{}}}),
        );
        let out = send(&mut h, 0, T0, json!({"event":"host.clients"}));
        let clients = out[0].1["data"]["clients"].as_array().unwrap().clone();
        assert_eq!(clients.len(), 1, "{clients:?}");
        assert_eq!(clients[0]["id"], cid(&h, 1));
    }
}
