//! History and presence kept in Redis (SPEC §10), as one part of the node:
//! the hooks [`Node`](super::Node) calls, each handing over to the history
//! side (when `rooms.history` is on) and the presence side.

use std::rc::Rc;

use super::envelope::{Envelope, Kind};
use super::history::{self, NodeHistory};
use super::numbering::{ClusterHistoryConfig, MAX_LISTED};
use super::presence_node::NodePresence;
use crate::proto::hub::Hub;
use crate::proto::redis::{Limits, Link, Role, Value};

pub struct Features {
    history: Option<NodeHistory>,
    presence: NodePresence,
    scratch: Vec<u8>,
}

impl Features {
    /// `history` when `rooms.history` is on; a read returns at most `read_budget` bytes.
    pub fn new(
        history: Option<ClusterHistoryConfig>,
        prefix: &str,
        origin: &str,
        heartbeat_ms: u64,
        read_budget: usize,
    ) -> Features {
        Features {
            history: history.map(|h| NodeHistory::new(h, prefix, origin, read_budget)),
            presence: NodePresence::new(prefix, origin, heartbeat_ms),
            scratch: Vec::new(),
        }
    }

    fn peers(hub: &Hub) -> Vec<String> {
        hub.cluster()
            .map(|t| t.status.peers.clone())
            .unwrap_or_default()
    }

    pub fn owns(tag: u64) -> bool {
        history::NodeHistory::owns(tag)
    }

    /// What the hub queued: messages to number, reads, presence changes.
    /// Returns the messages (forwarded, dropped).
    pub fn pump(&mut self, cmd: &mut Link, hub: &mut Hub) -> (u64, u64) {
        let mut counts = (0, 0);
        while let Some(change) = hub
            .cluster_mut()
            .and_then(|t| t.presence.as_mut()?.take_change())
        {
            self.presence.on_change(&change, cmd, &mut self.scratch);
        }
        let Some(history) = &mut self.history else {
            return counts;
        };
        while let Some(message) = hub
            .cluster_mut()
            .and_then(|t| t.history.as_mut()?.take_numbered())
        {
            if let Err(message) = history.publish(cmd, message) {
                // The link is full: this node's members get it unnumbered.
                counts.1 += 1;
                hub.deliver_unnumbered(&message);
            } else {
                counts.0 += 1;
            }
        }
        while let Some(read) = hub
            .cluster_mut()
            .and_then(|t| t.history.as_mut()?.take_read())
        {
            let id = read.id;
            if !history.read(cmd, read) {
                hub.answer_read(id, None);
            }
        }
        counts
    }

    pub fn on_cmd_up(&mut self, cmd: &mut Link) {
        if let Some(history) = &mut self.history {
            history.on_up(cmd);
        }
    }

    /// The node (re)joined: its presence is written anew (before its first
    /// heartbeat, so other nodes read it whole), and the other nodes' read
    /// anew (leaves may have been missed meanwhile).
    pub fn on_joined(&mut self, cmd: &mut Link, hub: &mut Hub) {
        if let Some(presence) = hub.cluster_mut().and_then(|t| t.presence.as_mut()) {
            presence.clear();
        }
        self.presence.on_joined(cmd, hub, &Self::peers(hub));
        if let Some(history) = &mut self.history {
            for room in hub.take_unnumbered() {
                history.renew_epoch(cmd, room, hub);
            }
        }
    }

    pub fn on_sub_down(&mut self) {
        if let Some(history) = &mut self.history {
            history.on_sub_down();
        }
    }

    /// A message of history or presence: `Some(counted)`; else `None`.
    pub fn on_message(
        &mut self,
        env: &Envelope<'_>,
        cmd: &mut Link,
        hub: &mut Hub,
    ) -> Option<bool> {
        match env.kind {
            Kind::NumberedPublish | Kind::NumberedBroadcast => Some(
                self.history
                    .as_mut()
                    .is_some_and(|h| h.on_numbered(env, cmd, hub)),
            ),
            Kind::Joined | Kind::Left => {
                self.presence.on_message(env, hub);
                Some(false)
            }
            _ => None,
        }
    }

    pub fn on_reply(&mut self, tag: u64, value: Value, cmd: &mut Link, hub: &mut Hub) {
        if NodePresence::owns(tag) {
            self.presence.on_reply(tag, value, cmd, hub);
        } else if let Some(history) = &mut self.history {
            history.on_reply(tag, value, cmd, hub);
        }
    }

    pub fn on_room(&mut self, room: &Rc<str>, opened: bool, cmd: &mut Link, hub: &Hub) {
        self.presence.on_room(room, opened, cmd, &Self::peers(hub));
    }

    /// The room's channel was dropped.
    pub fn on_unsubscribed(&mut self, room: &str) {
        if let Some(history) = &mut self.history {
            history.forget_room(room);
        }
    }

    /// Node `node` came up (`true`) or is gone.
    pub fn on_peer(&mut self, node: &str, up: bool, cmd: &mut Link, hub: &mut Hub) {
        if up {
            self.presence.on_peer_up(node, cmd);
        } else {
            hub.node_gone(node);
        }
    }

    pub fn on_heartbeat(&mut self, cmd: &mut Link) {
        self.presence.on_heartbeat(cmd);
    }
}

/// Decoding bounds: pub/sub pushes are flat; command replies carry the
/// history reads (a replay's messages) and presence pages.
pub fn link_limits(role: Role, max_bulk: usize) -> Limits {
    let (max_elements, max_depth) = match role {
        Role::Subscriber => (8, 2),
        Role::Command => (MAX_LISTED, 3),
    };
    Limits {
        max_bulk,
        max_elements,
        max_depth,
    }
}
