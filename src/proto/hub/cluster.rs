//! The hub's side of a cluster (SPEC §9): room messages go to the tap for
//! the other nodes, and theirs are delivered here to local members.

use super::Hub;
use crate::proto::cluster::{ClusterTap, RoomKind};
use crate::proto::hub::Audience;
use std::rc::Rc;

impl Hub {
    /// Makes this hub one node of a cluster.
    pub fn enable_cluster(&mut self, tap: ClusterTap) {
        self.rooms.track_changes();
        self.cluster = Some(tap);
    }

    pub fn is_clustered(&self) -> bool {
        self.cluster.is_some()
    }

    pub fn cluster(&self) -> Option<&ClusterTap> {
        self.cluster.as_ref()
    }

    pub fn cluster_mut(&mut self) -> Option<&mut ClusterTap> {
        self.cluster.as_mut()
    }

    /// Rooms that got their first local member (true) or lost their last
    /// (false) since the last call.
    pub fn take_room_changes(&mut self) -> Vec<(Rc<str>, bool)> {
        self.rooms.take_changes()
    }

    /// Rooms opened or emptied since [`Hub::take_room_changes`] ran.
    pub fn has_room_changes(&self) -> bool {
        self.rooms.has_changes()
    }

    pub(super) fn forward_room(&mut self, room: &str, kind: RoomKind, message: &Rc<[u8]>) {
        if let Some(tap) = &mut self.cluster {
            tap.forward(&room.into(), kind, message);
        }
    }

    /// A room message from another node: to this node's members as its
    /// origin delivered it there. Returns how many got it.
    pub fn deliver_from_cluster(&mut self, room: &str, kind: RoomKind, message: Rc<[u8]>) -> u64 {
        match kind {
            RoomKind::Publish => self.deliver_local(room, message, None),
            RoomKind::Broadcast => self.send_to_audience(message, Audience::Room(room)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::hub::testing::{hub_for_hosts, join, send, T0};
    use serde_json::json;

    #[test]
    fn room_messages_are_tapped_and_remote_ones_delivered_once() {
        let mut hub = hub_for_hosts();
        hub.enable_cluster(ClusterTap::new("n1", 1 << 20));
        join(&mut hub, 0, "a", &["publish"], &["lobby"]);
        join(&mut hub, 1, "b", &["publish"], &["lobby"]);
        for key in [0, 1] {
            send(
                &mut hub,
                key,
                T0,
                json!({"event":"subscribe","data":{"room":"lobby"}}),
            );
        }
        assert_eq!(hub.take_room_changes(), vec![(Rc::from("lobby"), true)]);
        let out = send(
            &mut hub,
            0,
            T0,
            json!({"event":"publish","data":{"room":"lobby","event":"e","data":1},"requestId":1}),
        );
        assert!(out.contains(&(
            0,
            json!({"event":"published","data":{"room":"lobby","delivered":1,"cluster":true},"requestId":1})
        )));
        let forward = hub
            .cluster_mut()
            .and_then(ClusterTap::take_forward)
            .unwrap();
        assert_eq!((&*forward.room, forward.kind), ("lobby", RoomKind::Publish));
        hub.out.clear();
        assert_eq!(
            hub.deliver_from_cluster("lobby", RoomKind::Publish, forward.message),
            2
        );
        // Remote messages are not forwarded again.
        assert!(!hub.cluster().is_some_and(ClusterTap::has_forwards));
        send(
            &mut hub,
            1,
            T0,
            json!({"event":"unsubscribe","data":{"room":"lobby"}}),
        );
        send(
            &mut hub,
            0,
            T0,
            json!({"event":"unsubscribe","data":{"room":"lobby"}}),
        );
        assert_eq!(hub.take_room_changes(), vec![(Rc::from("lobby"), false)]);
    }
}
