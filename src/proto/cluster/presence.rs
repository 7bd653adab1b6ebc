//! What the hub hands the node for presence in a cluster (SPEC §10), and
//! its mirror of the other nodes' members: joins and leaves to write to
//! Redis and announce, and, for every room with local members, who is in
//! it on the other nodes (from their announcements, a snapshot read from
//! Redis when the room opens here or a node comes up, and dropped when a
//! node goes).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

/// Other nodes' members mirrored at most; beyond, they are not listed or counted.
pub const MAX_REMOTE_MEMBERS: usize = 16_384;
/// Bytes one mirrored member costs beside its names, allocation slack included.
const REMOTE_MEMBER_BYTES: usize = 160;

/// A local member joined (or left) a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub room: Rc<str>,
    pub client: Rc<str>,
    pub sub: Rc<str>,
    pub joined: bool,
}

/// Another node's member of a room: its node and `sub`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMember {
    pub node: Rc<str>,
    pub sub: Rc<str>,
}

#[derive(Debug, Default)]
pub struct PresenceTap {
    changes: VecDeque<PresenceChange>,
    change_bytes: usize,
    max_bytes: usize,
    /// room -> client -> member, for rooms with local members.
    remote: HashMap<Rc<str>, BTreeMap<Rc<str>, RemoteMember>>,
    remote_count: usize,
}

impl PresenceTap {
    pub fn new(max_bytes: usize) -> PresenceTap {
        PresenceTap {
            max_bytes,
            ..PresenceTap::default()
        }
    }

    /// Queues a change for Redis and the other nodes; false when full.
    pub fn change(&mut self, change: PresenceChange) -> bool {
        let cost = Self::cost(&change);
        if self.change_bytes + cost > self.max_bytes {
            return false;
        }
        self.change_bytes += cost;
        self.changes.push_back(change);
        true
    }

    fn cost(c: &PresenceChange) -> usize {
        c.room.len() + c.client.len() + c.sub.len() + 64
    }

    pub fn take_change(&mut self) -> Option<PresenceChange> {
        let change = self.changes.pop_front()?;
        self.change_bytes -= Self::cost(&change);
        Some(change)
    }

    pub fn has_out(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Mirrors another node's member; false when known already (or no room left).
    pub fn add(&mut self, room: &str, client: &str, member: RemoteMember) -> bool {
        if self.remote_count >= MAX_REMOTE_MEMBERS {
            return false;
        }
        let members = match self.remote.get_mut(room) {
            Some(members) => members,
            None => self.remote.entry(room.into()).or_default(),
        };
        if members.contains_key(client) {
            return false;
        }
        members.insert(client.into(), member);
        self.remote_count += 1;
        true
    }

    /// Forgets another node's member; its `sub` when it was known.
    pub fn remove(&mut self, room: &str, client: &str) -> Option<Rc<str>> {
        let members = self.remote.get_mut(room)?;
        let member = members.remove(client)?;
        self.remote_count -= 1;
        if members.is_empty() {
            self.remote.remove(room);
        }
        Some(member.sub)
    }

    /// Other nodes' members of `room`.
    pub fn members(&self, room: &str) -> impl Iterator<Item = (&Rc<str>, &RemoteMember)> {
        self.remote.get(room).into_iter().flatten()
    }

    pub fn count(&self, room: &str) -> usize {
        self.remote.get(room).map_or(0, BTreeMap::len)
    }

    /// Forgets every other node's members (to be read anew).
    pub fn clear(&mut self) {
        self.remote.clear();
        self.remote_count = 0;
    }

    /// The room has no local member any more: its mirror goes.
    pub fn drop_room(&mut self, room: &str) {
        if let Some(members) = self.remote.remove(room) {
            self.remote_count -= members.len();
        }
    }

    /// Node `node` is gone: its members, taken out, as (room, client, sub).
    pub fn drop_node(&mut self, node: &str) -> Vec<(Rc<str>, Rc<str>, Rc<str>)> {
        let mut gone = Vec::new();
        for (room, members) in &mut self.remote {
            members.retain(|client, m| {
                let keep = *m.node != *node;
                if !keep {
                    gone.push((room.clone(), client.clone(), m.sub.clone()));
                }
                keep
            });
        }
        self.remote.retain(|_, members| !members.is_empty());
        self.remote_count -= gone.len();
        gone
    }

    /// Bytes this holds at most: the change queue, and the mirror with
    /// names of at most a room name, a client id and a `sub` of 256 bytes.
    pub fn ceiling(&self) -> usize {
        self.max_bytes + MAX_REMOTE_MEMBERS * (REMOTE_MEMBER_BYTES + 3 * 256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node: &str) -> RemoteMember {
        RemoteMember {
            node: node.into(),
            sub: "s".into(),
        }
    }

    #[test]
    fn the_mirror_counts_and_forgets_by_room_and_node() {
        let mut tap = PresenceTap::new(1024);
        assert!(tap.add("r", "b.1", member("b")));
        assert!(!tap.add("r", "b.1", member("b")));
        assert!(tap.add("r", "c.1", member("c")));
        assert!(tap.add("q", "b.2", member("b")));
        assert_eq!(tap.count("r"), 2);
        let gone = tap.drop_node("b");
        assert_eq!(gone.len(), 2);
        assert_eq!((tap.count("r"), tap.count("q")), (1, 0));
        assert_eq!(tap.remove("r", "c.1").as_deref(), Some("s"));
        assert_eq!(tap.remove("r", "c.1"), None);
        assert_eq!(tap.remote_count, 0);
    }
}
