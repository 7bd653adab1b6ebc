//! Room membership: which connections are in which room.

use std::collections::HashMap;
use std::rc::Rc;

/// Longest room name accepted (also the longest event name a host may serve).
pub const MAX_ROOM_NAME: usize = 256;

/// Index of a connection (its slot in the connection slab).
pub type ConnKey = usize;

/// Rooms and their members. A room exists while it has a member; its name is
/// shared (`Rc<str>`) with the members' own lists, so it is stored once.
#[derive(Debug, Default)]
pub struct Rooms {
    members: HashMap<Rc<str>, Vec<ConnKey>>,
    /// Rooms that got their first member (true) or lost their last (false),
    /// in order; kept only when a cluster node listens.
    changes: Option<Vec<(Rc<str>, bool)>>,
}

impl Rooms {
    /// Adds `key` to `room`; returns the shared name, and whether it was newly added.
    pub fn join(&mut self, room: &str, key: ConnKey) -> (Rc<str>, bool) {
        if let Some((name, members)) = self.members.get_key_value(room) {
            let name = name.clone();
            if members.contains(&key) {
                return (name, false);
            }
            if let Some(members) = self.members.get_mut(room) {
                members.push(key);
            }
            return (name, true);
        }
        let name: Rc<str> = room.into();
        self.members.insert(name.clone(), vec![key]);
        if let Some(changes) = &mut self.changes {
            changes.push((name.clone(), true));
        }
        (name, true)
    }

    /// Starts keeping the change log of [`Rooms::take_changes`].
    pub fn track_changes(&mut self) {
        self.changes.get_or_insert_with(Vec::new);
    }

    pub fn has_changes(&self) -> bool {
        self.changes.as_ref().is_some_and(|c| !c.is_empty())
    }

    /// Rooms opened (true) and emptied (false) since the last call.
    pub fn take_changes(&mut self) -> Vec<(Rc<str>, bool)> {
        self.changes
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    pub fn leave(&mut self, room: &str, key: ConnKey) {
        if let Some(members) = self.members.get_mut(room) {
            if let Some(pos) = members.iter().position(|&k| k == key) {
                members.swap_remove(pos);
            }
            if members.is_empty() {
                if let Some((name, _)) = self.members.remove_entry(room) {
                    if let Some(changes) = &mut self.changes {
                        changes.push((name, false));
                    }
                }
            }
        }
    }

    pub fn members(&self, room: &str) -> &[ConnKey] {
        self.members.get(room).map_or(&[], Vec::as_slice)
    }

    /// Every room with its members, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[ConnKey])> + '_ {
        self.members
            .iter()
            .map(|(name, keys)| (&**name, keys.as_slice()))
    }

    /// Rooms that have at least one member.
    /// The rooms with a member.
    pub fn names(&self) -> impl Iterator<Item = &Rc<str>> {
        self.members.keys()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_leave_and_cleanup() {
        let mut rooms = Rooms::default();
        let (a, new) = rooms.join("lobby", 1);
        assert!(new);
        let (b, new) = rooms.join("lobby", 2);
        assert!(new && Rc::ptr_eq(&a, &b));
        assert!(!rooms.join("lobby", 2).1);
        assert_eq!(rooms.members("lobby"), [1, 2]);
        rooms.leave("lobby", 1);
        rooms.leave("lobby", 1);
        assert_eq!(rooms.members("lobby"), [2]);
        rooms.leave("lobby", 2);
        assert!(rooms.is_empty());
        assert!(rooms.members("nowhere").is_empty());
    }
}
