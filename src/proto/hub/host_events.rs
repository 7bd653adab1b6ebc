//! The host link's events (SPEC §6): the backend registers the client events
//! it serves, answers forwarded requests, and broadcasts, sends, kicks and
//! mints tokens through the gateway. The tables live in
//! [`HostLink`](crate::proto::host_link::HostLink); the handlers here need
//! the whole hub (a kick closes a session, a broadcast reaches them all).

use super::{data_as, Audience, Hub, PublishData, MAX_ROOM_NAME};
use crate::proto::action::Dialect;
use crate::proto::auth::{parse_ttl, MintRequest, MAX_TTL_S};
use crate::proto::envelope::ErrorCode;
use crate::proto::host_link::{MAX_EVENTS_PER_HOST, MAX_HOSTS, MAX_PERMISSION_BYTES};
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use log::info;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Client events the gateway itself serves; no host may take them.
const BUILT_IN: [&str; 8] = [
    "auth",
    "ping",
    "whoami",
    "subscribe",
    "unsubscribe",
    "publish",
    "history",
    "presence",
];

#[derive(Deserialize)]
struct RegisterData {
    events: BTreeMap<String, Option<String>>,
}

#[derive(Deserialize)]
pub(super) struct ReplyError<'a> {
    #[serde(borrow)]
    pub code: Cow<'a, str>,
    #[serde(default, borrow)]
    pub message: Option<Cow<'a, str>>,
}

/// `host.reply`'s data; also a host's answer as it crosses nodes.
#[derive(Deserialize)]
pub(super) struct ReplyData<'a> {
    pub id: u64,
    #[serde(default, borrow)]
    pub event: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub error: Option<ReplyError<'a>>,
}

/// A host's answer to a request from another node.
pub(super) enum HostAnswer<'a> {
    Event {
        event: &'a str,
        data: &'a str,
    },
    Error {
        code: &'a str,
        message: Option<&'a str>,
    },
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

/// `host.kick`'s data, and the body of `POST /api/kick`.
#[derive(Deserialize)]
pub struct KickData<'a> {
    #[serde(borrow)]
    pub client: Cow<'a, str>,
    #[serde(default, borrow)]
    pub reason: Option<Cow<'a, str>>,
}

/// Which page of `host.clients`: from `offset` (the `next` of the page
/// before; 0 first), at most `limit` clients.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PageData {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    limit: Option<u64>,
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
            "host.clients" if data.is_none() && self.gather_clients(key, now, rid) => {}
            "host.clients" => self.host_clients(key, now, data, rid),
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
        let served_now: &[Box<str>] = self.hosts.role(key).map_or(&[], |h| &h.events);
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
                .route(name.as_str())
                .is_some_and(|e| e.host != key)
                || self.served_elsewhere(name);
            problem = if name.is_empty() || name.len() > MAX_ROOM_NAME {
                Some(format!("event names must be 1 to {MAX_ROOM_NAME} bytes"))
            } else if BUILT_IN.contains(&name.as_str()) || name.starts_with("host.") {
                Some(format!("`{name}` is a built-in event"))
            } else if taken {
                Some(format!("`{name}` is already served by another host"))
            } else if permission.as_deref() == Some("") {
                Some(format!("the permission of `{name}` is empty"))
            } else if permission
                .as_ref()
                .is_some_and(|p| p.len() > MAX_PERMISSION_BYTES)
            {
                Some(format!(
                    "the permission of `{name}` is longer than {MAX_PERMISSION_BYTES} bytes"
                ))
            } else {
                None
            };
            if problem.is_some() {
                break;
            }
        }
        if !self.hosts.is_host(key) && self.hosts.host_count() >= MAX_HOSTS {
            problem = Some(format!(
                "at most {MAX_HOSTS} hosts may be registered at once"
            ));
        }
        if already + added > MAX_EVENTS_PER_HOST {
            problem = Some(format!(
                "a host may serve at most {MAX_EVENTS_PER_HOST} events"
            ));
        }
        if let Some(problem) = problem {
            return self.error(key, ErrorCode::InvalidData, &problem, now, rid);
        }
        let events: Vec<_> = request
            .events
            .into_iter()
            .map(|(name, permission)| (name.into(), permission.map(Into::into)))
            .collect();
        // In a cluster the broker decides conflicts first (answered later).
        if !self.claim_cluster_wide(key, &events, rid, now) {
            self.apply_register(key, events, rid);
        }
    }

    /// Host `key` now serves `events`: the `host.register` succeeded.
    pub(super) fn apply_register(
        &mut self,
        key: ConnKey,
        events: Vec<(Box<str>, Option<Box<str>>)>,
        rid: Option<&RawValue>,
    ) {
        let Some(session) = self.sessions.get(key).and_then(Option::as_ref) else {
            return;
        };
        let first = self.hosts.add_host(key);
        // Hosts always speak section 6, also one on an action listener.
        self.out.set_dialect(key, Dialect::Event);
        for (name, permission) in events {
            self.hosts.serve(key, name, permission);
        }
        let mut served: Vec<&str> = self
            .hosts
            .role(key)
            .map_or(&[][..], |r| &r.events)
            .iter()
            .map(|e| &**e)
            .collect();
        served.sort_unstable();
        if first {
            // Rooms are for clients: broadcasts and notices skip hosts.
            info!(
                "client {} registered as a host: {}",
                self.ids.str(session.id),
                served.join(", ")
            );
        }
        self.out.reply(key, "host.registered", rid, |data| {
            data.str_array("events", &served);
        });
        self.announce_host(key);
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
        let Some(target) = self.hosts.route(event) else {
            if self.request_remote_host(key, now, event, data, rid) {
                return;
            }
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
        if self.hosts.is_congested(host) {
            let msg = "the host reads too slowly; retry later";
            return self.error(key, ErrorCode::HostUnavailable, msg, now, rid);
        }
        if !self.hosts.has_room(key, host) {
            let msg = "too many requests are waiting for the host; retry later";
            return self.error(key, ErrorCode::HostUnavailable, msg, now, rid);
        }
        let deadline_ms = now.ms.saturating_add(self.cfg.request_timeout_ms);
        let id = self
            .hosts
            .forward(key, host, rid.map(|r| r.to_owned()), deadline_ms);
        self.out.reply(host, "host.request", None, |body| {
            body.u64("id", id)
                .str("client", &self.ids.str(session.id))
                .str("sub", &identity.sub)
                .str_array("permissions", &identity.permissions)
                .str("event", event)
                .raw("data", data.map_or("null", |d| d.get()));
        });
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
        let ours = self.hosts.host_of(reply.id) == Some(key);
        let pending = if ours {
            self.hosts.take(reply.id)
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
            None => {
                let answer = match (&reply.error, &reply.event) {
                    (Some(e), _) => HostAnswer::Error {
                        code: &e.code,
                        message: e.message.as_deref(),
                    },
                    (None, Some(event)) => HostAnswer::Event {
                        event,
                        data: reply.data.map_or("null", |d| d.get()),
                    },
                    (None, None) => return,
                };
                self.relay_host_answer(key, reply.id, &answer)
            }
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
        // The same fields as `POST /api/publish`, but a host sends to one
        // client with `host.send`.
        let parsed =
            data_as::<PublishData>(data).filter(|b| !b.event.is_empty() && b.client.is_none());
        let Some(broadcast) = parsed else {
            let msg = "data must be {\"event\", \"data\", \"room\"?}";
            return self.error(key, ErrorCode::InvalidData, msg, now, rid);
        };
        let audience = match &broadcast.room {
            Some(room) => Audience::Room(room),
            None => Audience::All,
        };
        let data = broadcast.data.map_or("null", |d| d.get());
        let delivered = self.publish(&broadcast.event, data, audience, now);
        self.ack_delivered(key, rid, delivered, broadcast.room.is_some());
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
        let data = send.data.map_or("null", |d| d.get());
        if self.send_remote(key, rid, &send.client, (&send.event, data), now) {
            return;
        }
        let delivered = match self.client_key(&send.client) {
            Some(target) => {
                self.out.reply_raw(target, &send.event, None, data);
                1
            }
            None => 0,
        };
        self.out.ack(key, rid, |w| {
            w.u64("delivered", delivered);
        });
    }

    /// `host.clients`, a page at a time: all the clients when they fit in
    /// `max_reply_bytes`, else as many as fit, and `next` to ask from.
    fn host_clients(
        &mut self,
        key: ConnKey,
        now: Now,
        data: Option<&RawValue>,
        rid: Option<&RawValue>,
    ) {
        let page = match data {
            None => Some(PageData::default()),
            Some(_) => data_as::<PageData>(data).filter(|p| p.limit != Some(0)),
        };
        let Some(page) = page else {
            let msg = "data must be absent or {\"offset\"?: the `next` of the last page, \"limit\"?: 1 or more}";
            return self.error(key, ErrorCode::InvalidData, msg, now, rid);
        };
        let from = usize::try_from(page.offset).unwrap_or(usize::MAX);
        let limit = page
            .limit
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        let mut list = Vec::with_capacity(256);
        let next = self.write_client_page(&mut list, from, limit, self.cfg.max_reply_bytes);
        let total = self.client_count() as u64;
        self.out.reply(key, "host.clients", rid, |data| {
            data.with_raw("clients", |buf| buf.extend_from_slice(&list))
                .opt_u64("next", next.map(|k| k as u64))
                .u64("total", total);
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
        if self.kick_remote(key, rid, &kick.client, reason, now) {
            return;
        }
        let target = self.client_key(&kick.client);
        // The ack comes before the `host.client_left` the kick causes, like
        // any host event's answer; a host that kicks itself gets none (gone).
        if target != Some(key) {
            self.out.ack(key, rid, |w| {
                w.u64("delivered", u64::from(target.is_some()));
            });
        }
        if let Some(target) = target {
            self.kick_session(target, reason, now);
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
        while let Some(pending) = self.hosts.expire(key, now.ms) {
            let msg = "the host did not answer in time";
            let rid = pending.request_id.as_deref();
            self.error(key, ErrorCode::HostTimeout, msg, now, rid);
        }
    }
}
