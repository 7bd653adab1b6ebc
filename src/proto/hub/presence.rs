//! Who is in a room (SPEC §10): every join and leave goes through here, so
//! that members hear `presence.join` / `presence.leave` (when enabled and
//! the room is small enough) and an empty room's history is let go; and the
//! `presence` event.

use super::Hub;
use crate::proto::envelope::{ErrorCode, JsonWriter};
use crate::proto::outbox::Broadcast;
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::rc::Rc;

/// Most members one `presence` reply lists; `count` is exact beyond it.
pub const MAX_PRESENCE_LISTED: usize = 1_000;

/// `rooms.presence`.
#[derive(Debug, Clone, Default)]
pub struct PresenceConfig {
    pub enabled: bool,
    pub notify_max_members: usize,
}

impl Hub {
    /// Adds `key` (client `id`, `sub`) to `room`; returns the shared name
    /// when it was not in it yet.
    pub(super) fn enter_room(
        &mut self,
        room: &str,
        key: ConnKey,
        id: u64,
        sub: &str,
    ) -> Option<Rc<str>> {
        let (name, added) = self.rooms.join(room, key);
        if added {
            self.share_presence(room, id, sub, true);
            let size = self.rooms.members(room).len() + self.remote_members(room);
            let client = self.ids.str(id);
            self.notify_presence("presence.join", room, size, Some(key), &client, sub);
        }
        added.then_some(name)
    }

    /// Takes `key` (client `id`, `sub`) out of `room`.
    pub(super) fn exit_room(&mut self, room: &str, key: ConnKey, id: u64, sub: &str) {
        if !self.rooms.members(room).contains(&key) {
            return;
        }
        self.rooms.leave(room, key);
        self.share_presence(room, id, sub, false);
        // The room's size with the leaver, as when it joined: a member that
        // was announced is seen off.
        let size = self.rooms.members(room).len() + 1 + self.remote_members(room);
        let client = self.ids.str(id);
        self.notify_presence("presence.leave", room, size, Some(key), &client, sub);
        if self.rooms.members(room).is_empty() {
            self.history.vacate(room);
            self.drop_remote_members(room);
        }
    }

    /// `{"room","client","sub"}` to every member of a room of `size`
    /// members but `except`, when that is small enough.
    pub(super) fn notify_presence(
        &mut self,
        event: &str,
        room: &str,
        size: usize,
        except: Option<ConnKey>,
        client: &str,
        sub: &str,
    ) {
        let presence = &self.cfg.features.presence;
        let members = self.rooms.members(room);
        if !presence.enabled || size > presence.notify_max_members {
            return;
        }
        let mut message = Vec::with_capacity(64 + room.len() + sub.len());
        let mut msg = JsonWriter::object(&mut message);
        msg.str("event", event);
        let mut data = msg.begin("data");
        data.str("room", room).str("client", client).str("sub", sub);
        data.end();
        msg.end();
        let mut message = Broadcast::shared(message.into());
        for &to in members.iter().filter(|&&m| Some(m) != except) {
            self.out.send_shared(to, &mut message);
        }
    }

    /// `presence` `{"room"}` from a member: `{"room","count","members":[{"client","sub"}]}`.
    pub(super) fn on_presence(
        &mut self,
        key: ConnKey,
        now: Now,
        data: Option<&RawValue>,
        rid: Option<&RawValue>,
    ) {
        let Some(room) = self.member_room(key, now, data, rid) else {
            return;
        };
        let members = self.rooms.members(&room);
        let budget = self.cfg.max_reply_bytes.saturating_sub(128 + room.len());
        let (sessions, ids) = (&self.sessions, &self.ids);
        let remote = self.remote_member_list(&room);
        let count = members.len() + remote.len();
        self.out.reply(key, "presence", rid, |w| {
            w.str("room", &room)
                .u64("count", count as u64)
                .with_raw("members", |buf| {
                    let start = buf.len();
                    buf.push(b'[');
                    let local = members.iter().filter_map(|&m| {
                        let s = sessions.get(m)?.as_ref()?;
                        Some((
                            Rc::from(ids.str(s.id)),
                            Rc::from(&*s.identity.as_ref()?.sub),
                        ))
                    });
                    let listed = local.chain(remote);
                    for (n, (client, sub)) in listed.take(MAX_PRESENCE_LISTED).enumerate() {
                        let before = buf.len();
                        if n > 0 {
                            buf.push(b',');
                        }
                        let mut member = JsonWriter::object(buf);
                        member.str("client", &client).str("sub", &sub);
                        member.end();
                        if buf.len() - start > budget {
                            buf.truncate(before);
                            break;
                        }
                    }
                    buf.push(b']');
                });
        });
    }

    /// Reads `{"room"}` and checks that `key` is in that room; else answers
    /// `invalid_data` or `room_not_allowed`.
    pub(super) fn member_room<'a>(
        &mut self,
        key: ConnKey,
        now: Now,
        data: Option<&'a RawValue>,
        rid: Option<&RawValue>,
    ) -> Option<Cow<'a, str>> {
        let room = self.room_arg(key, now, data, rid)?;
        let member = self
            .session(key)
            .is_some_and(|s| s.rooms.iter().any(|r| **r == *room));
        if !member {
            let msg = "only members of a room may ask for its history or presence";
            self.error(key, ErrorCode::RoomNotAllowed, msg, now, rid);
            return None;
        }
        Some(room)
    }
}
