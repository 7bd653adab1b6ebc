//! The hub's side of a cluster (SPEC §9): room messages go to the tap for
//! the other nodes, and theirs are delivered here to local members.

use super::cluster_http::http_waiter;
use super::Hub;
use crate::proto::client_id::IdFormat;
use crate::proto::cluster::{ClusterTap, DirectedOp, Gather, PendingAck, RoomKind};
use crate::proto::hub::Audience;
use crate::proto::outbox::Broadcast;
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use serde_json::value::RawValue;
use std::rc::Rc;

impl Hub {
    /// Makes this hub one node of a cluster.
    pub fn enable_cluster(&mut self, tap: ClusterTap) {
        self.rooms.track_changes();
        self.ids = IdFormat::clustered(&tap.status.node);
        self.cluster = Some(tap);
        self.enable_cluster_presence();
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

    /// `ok` `{"delivered"}` for a broadcast; to a room in a cluster it adds
    /// `"cluster": true` (`delivered` counts this node's deliveries).
    pub(super) fn ack_delivered(
        &mut self,
        key: ConnKey,
        rid: Option<&RawValue>,
        delivered: u64,
        to_room: bool,
    ) {
        let clustered = to_room && self.is_clustered();
        self.out.ack(key, rid, |w| {
            w.u64("delivered", delivered);
            if clustered {
                w.bool("cluster", true);
            }
        });
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
    pub fn deliver_from_cluster(
        &mut self,
        room: &str,
        kind: RoomKind,
        message: Rc<[u8]>,
        now: Now,
    ) -> u64 {
        self.tap_tail(room, &message, now);
        match kind {
            RoomKind::Publish => self.deliver_local(room, &mut Broadcast::shared(message), None),
            RoomKind::Broadcast => self.send_to_audience(message, Audience::Room(room)),
        }
    }
}

impl Hub {
    /// `host.send` of `(event, data)` to a client of another node; false
    /// when `client` is no other node's (see [`Hub::direct_remote`]).
    pub(super) fn send_remote(
        &mut self,
        host: ConnKey,
        rid: Option<&RawValue>,
        client: &str,
        (event, data): (&str, &str),
        now: Now,
    ) -> bool {
        let op = || DirectedOp::Send {
            event: event.to_string(),
            data: data.to_string(),
        };
        self.direct_remote(host, rid, client, now, op)
    }

    /// `host.kick` of a client of another node, as [`Hub::send_remote`].
    pub(super) fn kick_remote(
        &mut self,
        host: ConnKey,
        rid: Option<&RawValue>,
        client: &str,
        reason: &str,
        now: Now,
    ) -> bool {
        let op = || DirectedOp::Kick {
            reason: reason.to_string(),
        };
        self.direct_remote(host, rid, client, now, op)
    }

    /// `host.send` / `host.kick` for a client of another node: queued for
    /// that node; the host's `ok` waits for its answer, or for
    /// `host.request_timeout_ms` (then `delivered: 0`). False when `client`
    /// is no other node's (the caller handles it locally).
    fn direct_remote(
        &mut self,
        host: ConnKey,
        rid: Option<&RawValue>,
        client: &str,
        now: Now,
        op: impl FnOnce() -> DirectedOp,
    ) -> bool {
        let Some(node) = self.ids.remote_node(client) else {
            return false;
        };
        let Some(host_id) = self.session(host).map(|s| s.id) else {
            return false;
        };
        let Some(tap) = self.cluster.as_mut() else {
            return false;
        };
        let ack = PendingAck {
            host,
            host_id,
            rid: rid.map(|r| r.to_owned()),
            deadline_ms: now.ms.saturating_add(self.cfg.request_timeout_ms),
        };
        let max = tap.max_forward_bytes();
        if !tap.directed.push(node, client, op(), ack, max) {
            self.out.ack(host, rid, |w| {
                w.u64("delivered", 0);
            });
        }
        true
    }

    /// The other node answered request `request`.
    pub fn complete_directed(&mut self, request: u64, delivered: bool) {
        let ack = self
            .cluster
            .as_mut()
            .and_then(|t| t.directed.complete(request));
        if let Some(ack) = ack {
            self.ack_directed(ack, delivered);
        }
    }

    /// Acknowledges with `delivered: 0` what no node answered in time, and
    /// answers `host.clients` with the nodes that did.
    pub fn expire_directed(&mut self, now: Now) {
        let (acks, gathers) = match self.cluster.as_mut() {
            Some(tap) => (tap.directed.expired(now.ms), tap.gathers.expired(now.ms)),
            None => return,
        };
        self.expire_cluster_reads(now);
        for ack in acks {
            self.ack_directed(ack, false);
        }
        for gather in gathers {
            self.reply_gathered(gather);
        }
        self.expire_cluster_hosts(now);
    }

    /// When [`Hub::expire_directed`] is next due.
    pub fn directed_deadline(&self) -> Option<u64> {
        let tap = self.cluster.as_ref()?;
        [
            tap.directed.next_deadline(),
            tap.gathers.next_deadline(),
            self.cluster_reads_deadline(),
            tap.hosts.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn ack_directed(&mut self, ack: PendingAck, delivered: bool) {
        if let Some(conn_id) = http_waiter(ack.host_id) {
            return self.http_delivered(ack.host, conn_id, delivered);
        }
        // The host may have gone (and its key been reused) meanwhile.
        if self.is_session(ack.host, ack.host_id) {
            self.out.ack(ack.host, ack.rid.as_deref(), |w| {
                w.u64("delivered", u64::from(delivered));
            });
        }
    }

    /// `host.clients` without paging in a cluster: this node's list now,
    /// the other live nodes' when they answer (see [`Gathers`]). False on a
    /// single node or when no other node is up.
    pub(super) fn gather_clients(
        &mut self,
        host: ConnKey,
        now: Now,
        rid: Option<&RawValue>,
    ) -> bool {
        let Some(host_id) = self.session(host).map(|s| s.id) else {
            return false;
        };
        if self
            .cluster
            .as_ref()
            .is_none_or(|t| t.status.peers.is_empty())
        {
            return false;
        }
        let mut local = Vec::with_capacity(256);
        self.write_client_list(&mut local);
        let deadline_ms = now.ms.saturating_add(self.cfg.request_timeout_ms);
        let max = self.cfg.max_reply_bytes;
        let Some(tap) = self.cluster.as_mut() else {
            return false;
        };
        let peers = tap.status.peers.clone();
        let rid = rid.map(|r| r.to_owned());
        tap.gathers
            .start(host, host_id, rid, deadline_ms, &peers, &local, max)
            .is_some()
    }

    /// Node `node` sent its client list for gather `request`.
    pub fn gathered(&mut self, request: u64, node: &str, list: &[u8]) {
        let done = self
            .cluster
            .as_mut()
            .and_then(|t| t.gathers.answer(request, node, list));
        if let Some(gather) = done {
            self.reply_gathered(gather);
        }
    }

    /// Session `key` is still the one with id `id` (keys are reused).
    pub(super) fn is_session(&self, key: ConnKey, id: u64) -> bool {
        self.session(key).is_some_and(|s| s.id == id)
    }

    fn reply_gathered(&mut self, gather: Gather) {
        if let Some(conn_id) = http_waiter(gather.host_id) {
            return self.http_gathered(gather.host, conn_id, &gather.entries);
        }
        if !self.is_session(gather.host, gather.host_id) {
            return;
        }
        // Entries are objects; `"id":` begins each one exactly once.
        let total = gather
            .entries
            .windows(6)
            .filter(|w| w == b"\"id\":\"")
            .count() as u64;
        self.out
            .reply(gather.host, "host.clients", gather.rid.as_deref(), |data| {
                data.with_raw("clients", |buf| {
                    buf.push(b'[');
                    buf.extend_from_slice(&gather.entries);
                    buf.push(b']');
                })
                .u64("total", total);
            });
    }

    /// Another node's `host.send` / `host.kick` for a client of this node;
    /// true when the client is here (and got it).
    pub fn directed_from_cluster(&mut self, client: &str, op: &DirectedOp, now: Now) -> bool {
        let Some(target) = self.client_key(client) else {
            return false;
        };
        match op {
            DirectedOp::Send { event, data } => self.out.reply_raw(target, event, None, data),
            DirectedOp::Kick { reason } => self.kick_session(target, reason, now),
        }
        true
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
            hub.deliver_from_cluster("lobby", RoomKind::Publish, forward.message, T0),
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
