//! Presence in a cluster, the hub's side (SPEC §10): local joins and
//! leaves go to the node (for Redis and the other nodes), and the other
//! nodes' members of rooms with local members are mirrored here, so that
//! `presence` counts every node's members and `presence.join` /
//! `presence.leave` reach members on every node.

use super::Hub;
use crate::proto::cluster::presence::{PresenceChange, PresenceTap, RemoteMember};
use std::rc::Rc;

impl Hub {
    /// Presence is the cluster's from now on.
    pub(super) fn enable_cluster_presence(&mut self) {
        if let Some(tap) = &mut self.cluster {
            tap.presence = Some(PresenceTap::new(tap.max_forward_bytes()));
        }
    }

    fn presence_tap(&self) -> Option<&PresenceTap> {
        self.cluster.as_ref()?.presence.as_ref()
    }

    fn presence_tap_mut(&mut self) -> Option<&mut PresenceTap> {
        self.cluster.as_mut()?.presence.as_mut()
    }

    /// A local member (client `id`) joined or left `room`.
    pub(super) fn share_presence(&mut self, room: &str, id: u64, sub: &str, joined: bool) {
        let client = Rc::from(self.ids.str(id));
        if let Some(tap) = self.presence_tap_mut() {
            let change = PresenceChange {
                room: room.into(),
                client,
                sub: sub.into(),
                joined,
            };
            // Full (the broker long down): the other nodes miss it until
            // this node's next snapshot.
            let _ = tap.change(change);
        }
    }

    /// How many members `room` has on the other nodes.
    pub(super) fn remote_members(&self, room: &str) -> usize {
        self.presence_tap().map_or(0, |t| t.count(room))
    }

    /// The other nodes' members of `room` as (client, sub).
    pub(super) fn remote_member_list(&self, room: &str) -> Vec<(Rc<str>, Rc<str>)> {
        self.presence_tap().map_or_else(Vec::new, |t| {
            t.members(room)
                .map(|(client, m)| (client.clone(), m.sub.clone()))
                .collect()
        })
    }

    pub(super) fn drop_remote_members(&mut self, room: &str) {
        if let Some(tap) = self.presence_tap_mut() {
            tap.drop_room(room);
        }
    }

    /// The local members of `room` as (client, sub), for Redis.
    pub fn local_presence(&self, room: &str) -> Vec<(String, String)> {
        self.rooms
            .members(room)
            .iter()
            .filter_map(|&key| {
                let s = self.session(key)?;
                Some((self.ids.str(s.id), s.identity.as_ref()?.sub.to_string()))
            })
            .collect()
    }

    /// Another node's client joined `room`; `notify` tells its members here.
    pub fn remote_joined(&mut self, room: &str, node: &str, client: &str, sub: &str, notify: bool) {
        if self.rooms.members(room).is_empty() {
            return;
        }
        let member = RemoteMember {
            node: node.into(),
            sub: sub.into(),
        };
        let added = self
            .presence_tap_mut()
            .is_some_and(|t| t.add(room, client, member));
        if added && notify {
            let size = self.rooms.members(room).len() + self.remote_members(room);
            self.notify_presence("presence.join", room, size, None, client, sub);
        }
    }

    /// Another node's client left `room`.
    pub fn remote_left(&mut self, room: &str, client: &str) {
        let Some(sub) = self.presence_tap_mut().and_then(|t| t.remove(room, client)) else {
            return;
        };
        let size = self.rooms.members(room).len() + self.remote_members(room) + 1;
        self.notify_presence("presence.leave", room, size, None, client, &sub);
    }

    /// Node `node` stopped or missed its heartbeats: its members leave.
    pub fn node_gone(&mut self, node: &str) {
        let gone = self
            .presence_tap_mut()
            .map(|t| t.drop_node(node))
            .unwrap_or_default();
        for (room, client, sub) in gone {
            let size = self.rooms.members(&room).len() + self.remote_members(&room) + 1;
            self.notify_presence("presence.leave", &room, size, None, &client, &sub);
        }
    }
}
