//! What the hub hands the cluster node and what it shows of it: room
//! messages to forward (bounded by `cluster.max_forward_bytes`), rooms that
//! gained their first or lost their last local member, and the node's
//! status for `/health`, `/ready` and `/metrics`. Held once per process, not
//! per connection.

use std::collections::VecDeque;

use super::directed::DirectedQueue;
use super::gather::Gathers;
use super::hosts::ClusterHosts;
use crate::proto::rooms::ConnKey;
use std::rc::Rc;

/// How a forwarded room message is delivered on the other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKind {
    /// A client's `publish`: every member of the room.
    Publish,
    /// `host.broadcast` / `POST /api/publish` to a room: its clients.
    Broadcast,
}

/// One room message for the other nodes: the JSON as local members got it.
#[derive(Debug, Clone)]
pub struct Forward {
    pub room: Rc<str>,
    pub kind: RoomKind,
    pub message: Rc<[u8]>,
}

/// An HTTP answer for the shell's connection `key` with id `conn_id`:
/// 200 with the JSON `body` (`/api/*` across nodes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub key: ConnKey,
    pub conn_id: u64,
    pub body: Vec<u8>,
}

/// The node as `/health`, `/ready` and `/metrics` show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterStatus {
    pub node: String,
    pub broker_up: bool,
    pub nodes: u64,
    /// The other live nodes' names.
    pub peers: Vec<String>,
    /// Why the node is not ready (`/ready` 503), when it is not.
    pub not_ready: Option<String>,
    pub forwarded: u64,
    pub received: u64,
    pub dropped: u64,
    pub reconnects: u64,
}

#[derive(Debug, Default)]
pub struct ClusterTap {
    forwards: VecDeque<Forward>,
    forward_bytes: usize,
    max_forward_bytes: usize,
    /// Forwards refused because the queue was full.
    pub dropped: u64,
    /// `host.send` / `host.kick` for other nodes' clients.
    pub directed: DirectedQueue,
    /// `host.clients` waiting for other nodes' lists.
    pub gathers: Gathers,
    /// Hosts cluster-wide: other nodes' hosts, requests across nodes.
    pub hosts: ClusterHosts,
    /// HTTP answers ready for the shell (`/api/*` across nodes).
    pub http_replies: Vec<HttpReply>,
    pub status: ClusterStatus,
}

impl ClusterTap {
    pub fn new(node: &str, max_forward_bytes: usize) -> ClusterTap {
        ClusterTap {
            max_forward_bytes,
            status: ClusterStatus {
                node: node.to_string(),
                nodes: 1,
                not_ready: Some("connecting to the broker".into()),
                ..ClusterStatus::default()
            },
            ..ClusterTap::default()
        }
    }

    /// Queues a room message for the other nodes, or drops and counts it.
    pub fn forward(&mut self, room: &Rc<str>, kind: RoomKind, message: &Rc<[u8]>) {
        let cost = room.len() + message.len();
        if self.forward_bytes + cost > self.max_forward_bytes {
            self.dropped += 1;
            return;
        }
        self.forward_bytes += cost;
        self.forwards.push_back(Forward {
            room: room.clone(),
            kind,
            message: message.clone(),
        });
    }

    pub fn take_forward(&mut self) -> Option<Forward> {
        let forward = self.forwards.pop_front()?;
        self.forward_bytes -= forward.room.len() + forward.message.len();
        Some(forward)
    }

    pub fn has_forwards(&self) -> bool {
        !self.forwards.is_empty()
            || self.directed.has_out()
            || self.gathers.has_questions()
            || self.hosts.has_out()
    }

    pub fn max_forward_bytes(&self) -> usize {
        self.max_forward_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_are_bounded_and_counted() {
        let mut tap = ClusterTap::new("n1", 20);
        let room: Rc<str> = "r".into();
        let msg: Rc<[u8]> = b"0123456789".as_slice().into();
        tap.forward(&room, RoomKind::Publish, &msg);
        tap.forward(&room, RoomKind::Publish, &msg);
        assert_eq!(tap.dropped, 1);
        assert!(tap.take_forward().is_some());
        assert!(!tap.has_forwards());
        tap.forward(&room, RoomKind::Broadcast, &msg);
        assert_eq!(
            tap.take_forward().map(|f| f.kind),
            Some(RoomKind::Broadcast)
        );
    }
}
