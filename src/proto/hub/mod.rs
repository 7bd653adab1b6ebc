//! The gateway core: every client session, rooms and the built-in events of
//! SPEC §5. Input is decoded text and the time; output is a list of actions
//! (send these bytes to that connection, close that connection) for the shell.
//!
//! The handlers live in child modules: `client_events` (auth, rooms,
//! publish), `host_events` (the host link of SPEC §6) and `audience`
//! (events published from outside a session). What the hub asks of the shell
//! goes into its [`Outbox`], which the shell drains after every call.

mod audience;
mod client_events;
#[cfg(test)]
mod client_tests;
mod cluster;
mod cluster_history;
mod cluster_hosts;
mod cluster_http;
mod cluster_presence;
#[cfg(test)]
mod compat_tests;
mod dashboard;
#[cfg(test)]
mod history_tests;
mod host_events;
#[cfg(test)]
mod host_limits_tests;
mod host_notices;
#[cfg(test)]
mod host_tests;
mod presence;
mod recovery;
mod sessions;
#[cfg(test)]
pub(crate) mod testing;

pub use crate::proto::client_id::client_id_str;
pub use crate::proto::outbox::{Action, Body, Outbox};
pub use audience::{Audience, PublishData};
pub use cluster_http::HTTP_WAITER;
pub use dashboard::Kicked;
pub use host_events::KickData;
pub use presence::{PresenceConfig, MAX_PRESENCE_LISTED};
use sessions::Sessions;
pub use sessions::{is_bridged, BRIDGED_KEY_BASE, MAX_BRIDGED};

use crate::proto::action::{self, Dialect, Incoming};
use crate::proto::activity::Activity;
use crate::proto::auth::{Authenticator, Identity};
use crate::proto::client_id::IdFormat;
use crate::proto::cluster::ClusterTap;
use crate::proto::envelope::{self, ErrorCode};
use crate::proto::history::{History, HistoryConfig};
use crate::proto::host_link::HostLink;
use crate::proto::limits::{MessageLimiter, Verdict};
use crate::proto::path_rooms::PathRooms;
pub use crate::proto::rooms::MAX_ROOM_NAME;
use crate::proto::rooms::{ConnKey, Rooms};
use crate::proto::tail::Tail;
use crate::proto::Now;
use log::{debug, warn};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::net::IpAddr;
use std::rc::Rc;

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
    pub compat: Compat,
    /// Largest page of `host.clients`, in bytes: it must fit the host's
    /// outbound queue beside what else is queued for it (see [`reply_budget`]).
    pub max_reply_bytes: usize,
    pub features: RoomFeatures,
}

/// SPEC §10: history (fixed at start) and presence (changes on SIGHUP).
#[derive(Debug, Clone, Default)]
pub struct RoomFeatures {
    pub history: HistoryConfig,
    pub presence: PresenceConfig,
}

/// The page size for `host.clients`: half a connection's outbound queue
/// (`max_outbound_bytes`), leaving the other half for what else is queued.
pub const fn reply_budget(max_outbound_bytes: usize) -> usize {
    max_outbound_bytes / 2
}

/// What makes the gateway a drop-in for other servers' clients (SPEC §13).
#[derive(Debug, Clone, Default)]
pub struct Compat {
    /// The dialect of the listener's clients; hosts always speak section 6.
    pub dialect: Dialect,
    /// `rooms.by_path`.
    pub path_rooms: PathRooms,
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
    /// A client (not a host) as far as hosts know: `host.client_joined` was
    /// due when it authenticated, so `host.client_left` is due when it goes.
    announced: bool,
    /// The `rooms.by_path` rooms of the path it connected on (`{sub}` unfilled).
    path_rooms: Vec<Box<str>>,
}

pub struct Hub {
    cfg: HubConfig,
    sessions: Sessions,
    active: usize,
    rooms: Rooms,
    history: History,
    hosts: HostLink,
    /// Set when this node is part of a cluster (SPEC §9).
    cluster: Option<ClusterTap>,
    /// How `clientId`s are written and read (node-qualified in a cluster).
    ids: IdFormat,
    /// What the shell must do: drain it after every call (see [`Outbox`]).
    pub out: Outbox,
    pub stats: Stats,
    /// Rolling figures: sessions in the last 24 h, messages per minute, durations.
    pub activity: Activity,
    /// The dashboards watching room messages (SPEC §14).
    tail: Tail,
}

/// A token made for a host names `host` itself (`admin` alone does not count):
/// such a session is not announced as a client and speaks section 6.
fn names_host(identity: &Identity) -> bool {
    identity.permissions.iter().any(|p| &**p == "host")
}

/// Reads `data` as `T`, or `None` when absent or of the wrong shape.
fn data_as<'a, T: Deserialize<'a>>(data: Option<&'a RawValue>) -> Option<T> {
    data.and_then(|d| serde_json::from_str(d.get()).ok())
}

impl Hub {
    pub fn new(cfg: HubConfig) -> Hub {
        Hub {
            history: History::new(cfg.features.history.clone()),
            cfg,
            sessions: Sessions::default(),
            active: 0,
            rooms: Rooms::default(),
            hosts: HostLink::default(),
            cluster: None,
            ids: IdFormat::default(),
            out: Outbox::default(),
            stats: Stats::default(),
            activity: Activity::default(),
            tail: Tail::default(),
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// New secrets and limits (SIGHUP). Sessions already open keep their
    /// identity and rate budget; new ones get the new settings. History
    /// keeps the settings it started with (its budget is in the logged
    /// ceiling); presence takes the new ones.
    pub fn reconfigure(&mut self, mut cfg: HubConfig) {
        cfg.features.history = self.cfg.features.history.clone();
        self.cfg = cfg;
    }

    /// Bytes the room histories hold now.
    pub fn history_bytes(&self) -> usize {
        self.history.bytes()
    }

    pub fn active_connections(&self) -> usize {
        self.active
    }

    pub fn hosts(&self) -> &HostLink {
        &self.hosts
    }

    /// A bridged host's output is unread beyond its bound (or read again):
    /// while congested, requests routed to it fail with `host_unavailable`.
    pub fn set_host_congested(&mut self, key: ConnKey, congested: bool) {
        self.hosts.set_congested(key, congested);
    }

    pub fn active_rooms(&self) -> usize {
        self.rooms.len()
    }

    pub fn session(&self, key: ConnKey) -> Option<&Session> {
        self.sessions.get(key).and_then(Option::as_ref)
    }

    /// The live session a `clientId` names.
    pub(super) fn client_key(&self, client: &str) -> Option<ConnKey> {
        let (key, id) = self.ids.local(client)?;
        self.session(key).filter(|s| s.id == id).map(|_| key)
    }

    /// Whether a handshake token may open a session on `path`: the rooms
    /// `rooms.by_path` gives that path must be ones it may join (else 403).
    pub fn path_allows(&self, identity: &Identity, path: &str) -> bool {
        let rooms = self.cfg.compat.path_rooms.rooms_for(path);
        client_events::may_join_all(identity, &rooms)
    }

    /// A WebSocket was established on the request `path` (without its
    /// query). `identity` is set when the handshake carried a valid token; it
    /// must have passed [`Hub::path_allows`].
    pub fn open(
        &mut self,
        key: ConnKey,
        id: u64,
        ip: IpAddr,
        now: Now,
        identity: Option<Identity>,
        path: &str,
    ) {
        if self.session(key).is_some() {
            // The shell reuses a key only after disconnect; never leave a ghost behind.
            self.disconnect(key, 1006, now);
        }
        *self.sessions.slot(key) = Some(Session {
            id,
            ip,
            connected_at: now.unix,
            identity: None,
            auth_deadline_ms: now.ms.saturating_add(self.cfg.auth_timeout_ms),
            expiry_ms: None,
            rooms: Vec::new(),
            limiter: MessageLimiter::new(self.cfg.max_messages_per_minute, now.ms),
            announced: false,
            path_rooms: self.cfg.compat.path_rooms.rooms_for(path),
        });
        self.active += 1;
        self.stats.total_connections += 1;
        self.activity.opened.add(now.unix);
        let server = &self.cfg.server_name;
        let dialect = match &identity {
            Some(identity) if names_host(identity) => Dialect::Event,
            _ if self.tail.is_viewer(key) => Dialect::Event,
            _ => self.cfg.compat.dialect,
        };
        self.out.set_dialect(key, dialect);
        match dialect {
            Dialect::Event => self.out.reply(key, "connected", None, |data| {
                data.str("clientId", &self.ids.str(id))
                    .bool("authenticated", identity.is_some())
                    .str("server", server);
            }),
            Dialect::Action => self.out.reply(key, "welcome", None, |data| {
                data.str("clientId", &self.ids.str(id))
                    .str("server", server);
            }),
        }
        if let Some(identity) = identity {
            self.establish(key, identity, now, "authenticated", None);
        }
    }

    /// The connection is gone (or closing) with `code`: forget the session,
    /// its rooms and requests; hosts hear of it, or lose their events. `now`
    /// stamps the errors sent to clients whose requests a leaving host orphans.
    pub fn disconnect(&mut self, key: ConnKey, code: u16, now: Now) {
        let Some(session) = self.sessions.get_mut(key).and_then(Option::take) else {
            return;
        };
        self.active -= 1;
        self.tail.remove(key);
        self.out.set_dialect(key, Dialect::Event);
        let lasted = now.unix.saturating_sub(session.connected_at);
        self.activity.session_ended(lasted);
        let sub = session.identity.as_ref().map_or("", |i| &i.sub);
        for room in &session.rooms {
            self.exit_room(room, key, session.id, sub);
        }
        self.hosts.forget(key);
        self.unregister_host(key, session.id, now);
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
        let waiting = self.hosts.first_deadline(key);
        match (own, waiting) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires due deadlines of one session.
    pub fn on_timer(&mut self, key: ConnKey, now: Now) {
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
            self.close(key, 4002, "auth timeout", now);
        } else if s.expiry_ms.is_some_and(|at| now.ms >= at) {
            self.error(
                key,
                ErrorCode::TokenExpired,
                "the session's token expired",
                now,
                None,
            );
            self.close(key, 4003, "token expired", now);
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
        let translated;
        let parsed = match self.out.dialect(key) {
            Dialect::Event => envelope::parse(text),
            Dialect::Action => match action::parse(text) {
                Incoming::Action(message) => {
                    translated = message;
                    Ok(translated.envelope())
                }
                // A host (or its library) authenticating by message.
                Incoming::Event => envelope::parse(text),
                Incoming::Bad(bad) => Err(bad),
            },
        };
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
            debug!("client {} sent {:?}", self.ids.str(s.id), env.event);
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
            "history" => self.on_history(key, now, env.data, rid),
            "presence" => self.on_presence(key, now, env.data, rid),
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
        self.activity.messages.add(now.unix);
        if self.hosts.is_host(key) {
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
                let id = self.ids.str(s.id);
                warn!("client {id} closed: more than twice limits.max_messages_per_minute");
                self.stats.flood_closes += 1;
                self.close(key, 4008, "rate limit exceeded", now);
                false
            }
        }
    }

    fn error(
        &mut self,
        key: ConnKey,
        code: ErrorCode,
        message: &str,
        now: Now,
        rid: Option<&RawValue>,
    ) {
        self.out.error(key, code.as_str(), message, now.unix, rid);
    }

    /// `kicked` `{"reason"}`, then close 4010 (SPEC §6 `host.kick`).
    fn kick_session(&mut self, key: ConnKey, reason: &str, now: Now) {
        self.out.reply(key, "kicked", None, |data| {
            data.str("reason", reason);
        });
        self.close(key, 4010, "kicked", now);
    }

    /// Ends a session from the core's side: the shell sends the close frame.
    fn close(&mut self, key: ConnKey, code: u16, reason: &'static str, now: Now) {
        self.disconnect(key, code, now);
        self.out.actions.push(Action::Close {
            to: key,
            code,
            reason,
        });
    }
}
