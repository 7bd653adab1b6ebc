//! The hub's side of the dashboard (SPEC §14): its viewers (admin sessions
//! opened on the health listener, which watch the sampled tail and are not
//! clients), the tail itself, and the room list of `GET /api/rooms`.

use super::Hub;
use crate::proto::envelope::JsonWriter;
use crate::proto::outbox::Broadcast;
use crate::proto::rooms::ConnKey;
use crate::proto::Now;

/// Rooms `GET /api/rooms` lists at most (the largest first); `total` is exact.
pub const MAX_ROOMS_LISTED: usize = 500;
/// Members listed per room with presence on; `members` is exact.
pub const MAX_MEMBERS_LISTED: usize = 50;

/// What [`Hub::kick`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Kicked {
    /// On this node: whether such a client was here.
    Here(bool),
    /// Another node's client, when the kick could not be sent there (no
    /// cluster, or its queue is full: `cluster.max_forward_bytes`).
    Unreachable,
}

impl Hub {
    /// Whether another dashboard may watch (see [`crate::proto::tail::MAX_VIEWERS`]).
    pub fn viewer_has_room(&self) -> bool {
        self.tail.has_room()
    }

    /// Makes the session about to open at `key` a dashboard viewer: it gets
    /// the tail, is no client (not listed, not announced to hosts, gets no
    /// broadcasts) and speaks section 4. False when too many watch already.
    pub fn add_viewer(&mut self, key: ConnKey) -> bool {
        self.tail.add(key)
    }

    pub fn is_viewer(&self, key: ConnKey) -> bool {
        self.tail.is_viewer(key)
    }

    /// `POST /api/kick` of a client of this node (another node's goes
    /// through [`Hub::direct_for_http`], whose answer waits for that node).
    pub fn kick(&mut self, client: &str, reason: &str, now: Now) -> Kicked {
        if self.ids.remote_node(client).is_some() {
            return Kicked::Unreachable;
        }
        match self.client_key(client) {
            Some(target) => {
                self.kick_session(target, reason, now);
                Kicked::Here(true)
            }
            None => Kicked::Here(false),
        }
    }

    /// Offers one room message (its section-4 JSON) to the tail; nothing
    /// happens unless a dashboard watches.
    #[inline]
    pub(super) fn tap_tail(&mut self, room: &str, message: &[u8], now: Now) {
        if self.tail.is_watched() {
            self.sample_tail(room, message, now);
        }
    }

    fn sample_tail(&mut self, room: &str, message: &[u8], now: Now) {
        let Some(sample) = self.tail.sample(room, message, now.ms) else {
            return;
        };
        let mut sample = Broadcast::shared(sample);
        for i in 0..self.tail.viewers().len() {
            let viewer = self.tail.viewers()[i];
            self.out.send_shared(viewer, &mut sample);
        }
    }

    /// `{"rooms":[{"room","members","list"?:[{"client","sub"}]}],"total","presence"}`
    /// of this node's rooms, the largest first; `list` only with presence on.
    pub fn write_room_list(&self, buf: &mut Vec<u8>) {
        let mut rooms: Vec<(&str, &[ConnKey])> = self.rooms.iter().collect();
        rooms.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
        let presence = self.cfg.features.presence.enabled;
        let mut doc = JsonWriter::object(buf);
        doc.with_raw("rooms", |buf| {
            buf.push(b'[');
            for (n, (room, members)) in rooms.iter().take(MAX_ROOMS_LISTED).enumerate() {
                if n > 0 {
                    buf.push(b',');
                }
                let mut entry = JsonWriter::object(buf);
                entry.str("room", room).u64("members", members.len() as u64);
                if presence {
                    entry.with_raw("list", |buf| self.write_members(buf, members));
                }
                entry.end();
            }
            buf.push(b']');
        });
        doc.u64("total", rooms.len() as u64)
            .bool("presence", presence)
            .end();
    }

    fn write_members(&self, buf: &mut Vec<u8>, members: &[ConnKey]) {
        buf.push(b'[');
        let listed = members.iter().filter_map(|&key| {
            let s = self.session(key)?;
            Some((s.id, s.identity.as_ref()?))
        });
        for (n, (id, identity)) in listed.take(MAX_MEMBERS_LISTED).enumerate() {
            if n > 0 {
                buf.push(b',');
            }
            let mut member = JsonWriter::object(buf);
            member
                .str("client", &self.ids.str(id))
                .str("sub", &identity.sub);
            member.end();
        }
        buf.push(b']');
    }
}

#[cfg(test)]
mod tests {
    use crate::proto::hub::testing::*;
    use crate::proto::hub::{Audience, PresenceConfig, RoomFeatures};
    use crate::proto::rooms::ConnKey;
    use crate::proto::tail::{MAX_SAMPLES_PER_SECOND, MAX_VIEWERS};
    use serde_json::{json, Value};

    fn to(out: &[(ConnKey, Value)], key: ConnKey) -> Vec<&Value> {
        out.iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .collect()
    }

    fn room_list(h: &crate::proto::hub::Hub) -> Value {
        let mut body = Vec::new();
        h.write_room_list(&mut body);
        serde_json::from_slice(&body).unwrap()
    }

    #[test]
    fn viewers_get_the_sampled_tail_and_are_not_clients() {
        let mut h = hub_for_hosts();
        let viewer = 5;
        assert!(h.add_viewer(viewer));
        join(&mut h, viewer, "admin", &["admin"], &[]);
        join(&mut h, 0, "u", &["publish"], &["red"]);
        join(&mut h, 1, "v", &[], &["red"]);
        drain(&mut h);
        let mut list = Vec::new();
        h.write_client_list(&mut list);
        let list: Value = serde_json::from_slice(&list).unwrap();
        assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
        let mut out = Vec::new();
        for n in 0..(MAX_SAMPLES_PER_SECOND + 5) {
            let msg = json!({"event":"publish","data":{"room":"red","event":"e","data":n}});
            out.extend(send(&mut h, 0, T0, msg));
        }
        let tail = to(&out, viewer);
        assert_eq!(tail.len(), MAX_SAMPLES_PER_SECOND as usize);
        assert_eq!(tail[0]["event"], "dashboard.tail");
        assert_eq!(tail[0]["data"]["room"], "red");
        let text = tail[0]["data"]["text"].as_str().unwrap();
        let text: Value = serde_json::from_str(text).unwrap();
        assert_eq!(text["from"], "u");
        assert_eq!(to(&out, 1).len(), MAX_SAMPLES_PER_SECOND as usize + 5);
        // The next second's first sample says how many were skipped.
        h.publish("e", "1", Audience::Room("red"), at(1_000));
        let out = drain(&mut h);
        assert_eq!(to(&out, viewer)[0]["data"]["skipped"], 5);
        // A broadcast to every client skips the viewer.
        h.publish("all", "1", Audience::All, at(1_000));
        let out = drain(&mut h);
        assert!(to(&out, viewer).is_empty());
        assert_eq!(to(&out, 1).len(), 1);
    }

    #[test]
    fn viewers_are_bounded_and_leave_with_their_session() {
        let mut h = hub_for_hosts();
        for key in 0..MAX_VIEWERS {
            assert!(h.add_viewer(key));
            join(&mut h, key, "admin", &["admin"], &[]);
        }
        assert!(!h.viewer_has_room());
        assert!(!h.add_viewer(9));
        h.disconnect(0, 1000, T0);
        assert!(h.viewer_has_room() && !h.is_viewer(0));
    }

    #[test]
    fn the_room_list_has_counts_and_presence_when_enabled() {
        let mut h = hub_for_hosts();
        join(&mut h, 0, "u", &[], &["a", "b"]);
        join(&mut h, 1, "v", &[], &["b"]);
        assert_eq!(
            room_list(&h),
            json!({"rooms":[{"room":"b","members":2},{"room":"a","members":1}],
                   "total":2,"presence":false})
        );
        let presence = PresenceConfig {
            enabled: true,
            notify_max_members: 100,
        };
        let mut h = hub_with_features(RoomFeatures {
            presence,
            ..Default::default()
        });
        join(&mut h, 0, "u", &[], &["a"]);
        let body = room_list(&h);
        assert_eq!(body["rooms"][0]["list"][0]["sub"], "u");
        assert_eq!(body["presence"], true);
    }
}
