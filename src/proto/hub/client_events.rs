//! The built-in client events of SPEC §5: `auth`, `whoami`, `subscribe`,
//! `unsubscribe` and `publish`.

use super::{data_as, Hub, MAX_ROOMS_PER_CLIENT, MAX_ROOM_NAME};
use crate::proto::auth::{AuthError, Identity};
use crate::proto::cluster::RoomKind;
use crate::proto::envelope::{ErrorCode, JsonWriter};
use crate::proto::outbox::{Action, Body};
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use log::{info, warn};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::rc::Rc;

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
                self.ids.str(s.id),
                s.ip,
                identity.sub
            );
        }
        // A token made for a host (`host` named explicitly, not implied by
        // `admin`) is not announced as a client: hosts hear about clients only.
        let joined = first
            && !self.hosts.is_host(key)
            && !identity.permissions.iter().any(|p| &**p == "host");
        if joined {
            s.announced = true;
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
        self.out.reply(key, event, rid, |data| {
            data.str("clientId", &self.ids.str(s.id))
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
            self.rooms.leave(&room, key);
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

    /// Queues `message` for every member of `room` but `except`, and for the
    /// other nodes of a cluster; returns how many local members got it.
    pub(super) fn deliver(
        &mut self,
        room: &str,
        message: Rc<[u8]>,
        except: Option<ConnKey>,
    ) -> u64 {
        self.forward_room(room, RoomKind::Publish, &message);
        self.deliver_local(room, message, except)
    }

    /// [`Hub::deliver`] on this node only.
    pub(super) fn deliver_local(
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
