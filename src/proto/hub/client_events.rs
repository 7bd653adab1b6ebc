//! The built-in client events of SPEC §5: `auth`, `whoami`, `subscribe`,
//! `unsubscribe` and `publish`.

use super::recovery::Since;
use super::{data_as, names_host, Hub, MAX_ROOMS_PER_CLIENT, MAX_ROOM_NAME};
use crate::proto::action::Dialect;
use crate::proto::auth::{AuthError, Identity};
use crate::proto::cluster::RoomKind;
use crate::proto::envelope::ErrorCode;
use crate::proto::outbox::Broadcast;
use crate::proto::path_rooms::with_sub;
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use log::{info, warn};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

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

/// The `since` of a `subscribe`, when given.
#[derive(Deserialize)]
struct SubscribeSince<'a> {
    #[serde(default, borrow)]
    since: Option<Since<'a>>,
}

#[derive(Deserialize)]
/// A client's `publish`: to a room, always.
struct RoomPublish<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

impl Hub {
    pub(super) fn on_auth(
        &mut self,
        key: ConnKey,
        now: Now,
        data: Option<&RawValue>,
        rid: Option<&RawValue>,
    ) {
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
                        self.ids.str(s.id),
                        s.ip
                    );
                }
                self.error(key, ErrorCode::AuthFailed, &reason.to_string(), now, rid);
                self.close(key, 4001, "auth failed", now);
            }
        }
    }

    /// Makes `identity` the session's, joins its rooms, and answers with `event`.
    /// An identity that may not join the rooms of the path it connected on
    /// (`rooms.by_path`) gets `room_not_allowed` and close 4001.
    pub(super) fn establish(
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
        if !may_join_all(&identity, &s.path_rooms) {
            warn!(
                "client {} from {}: {:?} may not join the rooms of its path",
                self.ids.str(s.id),
                s.ip,
                identity.sub
            );
            let msg = "this client may not join the rooms of the path it connected on";
            self.error(key, ErrorCode::RoomNotAllowed, msg, now, rid);
            self.close(key, 4001, "room not allowed", now);
            return;
        }
        let path_rooms: Vec<String> = s
            .path_rooms
            .iter()
            .map(|room| with_sub(room, &identity.sub))
            .collect();
        let first = s.identity.is_none();
        let id = s.id;
        // A fresh token replaces the old identity: keep only rooms it may still join.
        let old_sub = s
            .identity
            .as_ref()
            .map_or_else(String::new, |i| i.sub.to_string());
        let (kept, dropped): (Vec<_>, Vec<_>) = std::mem::take(&mut s.rooms)
            .into_iter()
            .partition(|room| identity.may_join(room));
        s.rooms = kept;
        for room in &dropped {
            self.exit_room(room, key, id, &old_sub);
        }
        let own = identity.rooms.iter().map(|r| &**r);
        for room in own.chain(path_rooms.iter().map(String::as_str)) {
            let full = self
                .session(key)
                .is_none_or(|s| s.rooms.len() >= MAX_ROOMS_PER_CLIENT);
            if full {
                break;
            }
            if let Some(name) = self.enter_room(room, key, id, &identity.sub) {
                if let Some(s) = self.sessions.get_mut(key).and_then(Option::as_mut) {
                    s.rooms.push(name);
                }
            }
        }
        let Some(s) = self.sessions.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        s.expiry_ms = identity.expires_at.map(|exp| now.ms_at_unix(exp));
        if first {
            info!(
                "client {} from {} authenticated as {:?}",
                self.ids.str(s.id),
                s.ip,
                identity.sub
            );
        }
        // A token made for a host (`host` named explicitly, not implied by
        // `admin`) is not announced as a client: hosts hear about clients only.
        let is_host_token = names_host(&identity);
        let joined =
            first && !self.hosts.is_host(key) && !is_host_token && !self.tail.is_viewer(key);
        if joined {
            s.announced = true;
        }
        if is_host_token {
            // Hosts always speak section 6.
            self.out.set_dialect(key, Dialect::Event);
        }
        let (id, ip) = (s.id, s.ip);
        let demoted = self.hosts.is_host(key) && !identity.has("host");
        s.identity = Some(identity);
        self.reply_identity(key, event, rid);
        if demoted {
            self.end_host_role(key, now);
        }
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
        if event == "authenticated" && self.out.dialect(key) == Dialect::Action {
            return self.out.reply(key, "auth_success", rid, |data| {
                data.str("message", "Authentication successful")
                    .str("user_id", &identity.sub)
                    .str("clientId", &self.ids.str(s.id))
                    .str_array("permissions", &identity.permissions)
                    .str_array("rooms", &s.rooms)
                    .opt_u64("expiresAt", identity.expires_at);
            });
        }
        self.out.reply(key, event, rid, |data| {
            data.str("clientId", &self.ids.str(s.id))
                .str("sub", &identity.sub)
                .str_array("permissions", &identity.permissions)
                .str_array("rooms", &s.rooms)
                .opt_u64("expiresAt", identity.expires_at);
        });
    }

    /// Reads `{"room": NAME}`, answering `invalid_data` when it is not one.
    pub(super) fn room_arg<'a>(
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

    pub(super) fn on_subscribe(
        &mut self,
        key: ConnKey,
        now: Now,
        data: Option<&RawValue>,
        rid: Option<&RawValue>,
    ) {
        let Some(room) = self.room_arg(key, now, data, rid) else {
            return;
        };
        let since = match data_as::<SubscribeSince>(data) {
            Some(SubscribeSince { since }) => since,
            None => {
                let msg = "since must be {\"offset\": N, \"epoch\": STRING}";
                self.error(key, ErrorCode::InvalidData, msg, now, rid);
                return;
            }
        };
        let Some(s) = self.sessions.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        let Some(identity) = s.identity.as_ref().filter(|i| i.may_join(&room)) else {
            self.error(
                key,
                ErrorCode::RoomNotAllowed,
                "this client may not join that room",
                now,
                rid,
            );
            return;
        };
        if !s.rooms.iter().any(|r| **r == *room) {
            if s.rooms.len() >= MAX_ROOMS_PER_CLIENT {
                let msg = "a client may be in at most 256 rooms";
                self.error(key, ErrorCode::InvalidData, msg, now, rid);
                return;
            }
            let (id, sub) = (s.id, identity.sub.clone());
            if let Some(name) = self.enter_room(&room, key, id, &sub) {
                if let Some(s) = self.sessions.get_mut(key).and_then(Option::as_mut) {
                    s.rooms.push(name);
                }
            }
        }
        self.reply_subscribed(key, &room, since, now, rid);
    }

    pub(super) fn on_unsubscribe(
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
            let (id, sub) = (
                s.id,
                s.identity.as_ref().map_or("".into(), |i| i.sub.clone()),
            );
            self.exit_room(&room, key, id, &sub);
        }
        self.reply_room(key, "unsubscribed", &room, None, rid);
    }

    pub(super) fn on_publish(
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
        let parsed = data_as::<RoomPublish>(data)
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
        let data = publish.data.map_or("null", |d| d.get());
        let capacity = 64 + data.len() + publish.room.len() + identity.sub.len();
        let sub = identity.sub.clone();
        let message = self.room_message(&publish.room, now, capacity, |msg| {
            msg.str("event", &publish.event)
                .raw("data", data)
                .str("room", &publish.room)
                .str("from", &sub);
        });
        self.tap_tail(&publish.room, &message, now);
        let mut message = Broadcast::shared(message);
        let delivered = self.deliver(&publish.room, &mut message, Some(key));
        self.reply_room(key, "published", &publish.room, Some(delivered), rid);
    }

    /// Queues `message` for every member of `room` but `except`, and for the
    /// other nodes of a cluster; returns how many local members got it.
    pub(super) fn deliver(
        &mut self,
        room: &str,
        message: &mut Broadcast,
        except: Option<ConnKey>,
    ) -> u64 {
        let form = message.event_form().clone();
        if let Some(n) = self.number_in_cluster(room, RoomKind::Publish, &form, except) {
            return n;
        }
        self.forward_room(room, RoomKind::Publish, &form);
        self.deliver_local(room, message, except)
    }

    /// [`Hub::deliver`] on this node only.
    pub(super) fn deliver_local(
        &mut self,
        room: &str,
        message: &mut Broadcast,
        except: Option<ConnKey>,
    ) -> u64 {
        let mut delivered = 0;
        for &member in self.rooms.members(room) {
            if Some(member) != except {
                self.out.send_shared(member, message);
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
        let clustered = self.is_clustered();
        self.out.reply(key, event, rid, |data| {
            data.str("room", room);
            if let Some(n) = delivered {
                data.u64("delivered", n);
            }
            if clustered && delivered.is_some() {
                data.bool("cluster", true);
            }
        });
    }
}

/// Whether `identity` may join every one of the path's rooms (`{sub}` unfilled).
pub(super) fn may_join_all(identity: &Identity, path_rooms: &[Box<str>]) -> bool {
    path_rooms
        .iter()
        .all(|room| identity.may_join(&with_sub(room, &identity.sub)))
}
