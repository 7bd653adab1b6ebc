//! The node's side of presence in a cluster (SPEC §10). Each node keeps
//! its members of a room in the hash `{prefix}:presence:{room}:{node}`
//! (client id -> sub), announces joins and leaves on the room's channel,
//! and reads the other live nodes' hashes (HSCAN, in pages) when a room
//! opens here or a node comes up. A node that stops or misses 3 heartbeats
//! is dropped with its members (their leaves are sent); its hashes expire
//! unread, since only live nodes' are read; the set
//! `{prefix}:presence-rooms:{node}` names them, so that a restarted node
//! of that name removes them before it announces itself.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use super::envelope::{self, Envelope, Kind};
use super::presence::PresenceChange;
use super::scripts;
use crate::proto::hub::Hub;
use crate::proto::redis::{Link, Value};

/// Replies tagged from here on are this module's (history's are below).
pub const TAG_BASE: u64 = 1 << 41;
/// Rooms whose hash expiry is renewed per heartbeat, so that a node with
/// many rooms does not fill its link; expiry covers the whole round.
const REFRESH_PER_HEARTBEAT: usize = 500;
/// Entries one HSCAN page asks for (a hint to Redis; a page well within
/// what the command link decodes).
const SCAN_COUNT: &[u8] = b"200";
/// Members written per HSET when a room's hash is rewritten.
const WRITE_CHUNK: usize = 256;

pub struct NodePresence {
    prefix: String,
    origin: String,
    heartbeat_ms: u64,
    /// Rooms with local members.
    rooms: BTreeSet<Rc<str>>,
    /// Where the next expiry round goes on.
    refresh_after: Option<Rc<str>>,
    /// HSCANs waiting: tag -> (room, node).
    scans: HashMap<u64, (Rc<str>, Rc<str>)>,
    next_tag: u64,
    /// What a previous process of this name left was removed.
    reset: bool,
}

impl NodePresence {
    pub fn new(prefix: &str, origin: &str, heartbeat_ms: u64) -> NodePresence {
        NodePresence {
            prefix: prefix.to_string(),
            origin: origin.to_string(),
            heartbeat_ms,
            rooms: BTreeSet::new(),
            refresh_after: None,
            scans: HashMap::new(),
            next_tag: TAG_BASE,
            reset: false,
        }
    }

    pub fn owns(tag: u64) -> bool {
        (TAG_BASE..TAG_BASE << 1).contains(&tag)
    }

    fn key(&self, room: &str, node: &str) -> String {
        format!("{}:presence:{room}:{node}", self.prefix)
    }

    /// The set of the rooms this node has a hash for.
    fn rooms_key(&self) -> String {
        format!("{}:presence-rooms:{}", self.prefix, self.origin)
    }

    /// Long enough for a whole expiry round, and at least 10 heartbeats.
    fn ttl_ms(&self) -> String {
        let rounds = self.rooms.len() / REFRESH_PER_HEARTBEAT + 3;
        (self.heartbeat_ms * rounds.max(10) as u64).to_string()
    }

    /// A local join or leave: into this node's hash, and announced.
    pub fn on_change(&mut self, change: &PresenceChange, cmd: &mut Link, scratch: &mut Vec<u8>) {
        let key = self.key(&change.room, &self.origin);
        let (client, sub) = (change.client.as_bytes(), change.sub.as_bytes());
        let kind = if change.joined {
            let _ = cmd.command(&[b"HSET", key.as_bytes(), client, sub], None);
            let _ = cmd.command(
                &[b"PEXPIRE", key.as_bytes(), self.ttl_ms().as_bytes()],
                None,
            );
            Kind::Joined
        } else {
            let _ = cmd.command(&[b"HDEL", key.as_bytes(), client], None);
            Kind::Left
        };
        let mut payload = Vec::with_capacity(client.len() + sub.len() + 1);
        payload.extend_from_slice(client);
        payload.push(b' ');
        payload.extend_from_slice(sub);
        scratch.clear();
        envelope::encode(scratch, &self.origin, kind, &change.room, &payload);
        let channel = super::keys::room_channel(&self.prefix, &change.room);
        let _ = cmd.command(&[b"PUBLISH", channel.as_bytes(), scratch], None);
    }

    /// A room got its first local member (read the other nodes' members)
    /// or lost its last.
    pub fn on_room(&mut self, room: &Rc<str>, opened: bool, cmd: &mut Link, peers: &[String]) {
        let set = self.rooms_key();
        if !opened {
            self.rooms.remove(room);
            let _ = cmd.command(&[b"SREM", set.as_bytes(), room.as_bytes()], None);
            return;
        }
        self.rooms.insert(room.clone());
        let _ = cmd.command(&[b"SADD", set.as_bytes(), room.as_bytes()], None);
        for peer in peers {
            self.scan(cmd, room, peer, b"0");
        }
    }

    fn scan(&mut self, cmd: &mut Link, room: &Rc<str>, node: &str, cursor: &[u8]) {
        self.next_tag += 1;
        let tag = self.next_tag;
        let key = self.key(room, node);
        let args: [&[u8]; 5] = [b"HSCAN", key.as_bytes(), cursor, b"COUNT", SCAN_COUNT];
        if cmd.command(&args, Some(tag)).is_ok() {
            self.scans.insert(tag, (room.clone(), node.into()));
        }
    }

    /// Node `node` came up: read its members of every room open here.
    pub fn on_peer_up(&mut self, node: &str, cmd: &mut Link) {
        let rooms: Vec<Rc<str>> = self.rooms.iter().cloned().collect();
        for room in &rooms {
            self.scan(cmd, room, node, b"0");
        }
    }

    /// The node (re)joined: this node's hashes are written anew (they may
    /// have expired meanwhile) and the others' read again. The first time,
    /// what a previous process of this name left is removed first.
    pub fn on_joined(&mut self, cmd: &mut Link, hub: &Hub, peers: &[String]) {
        let set = self.rooms_key();
        if !self.reset {
            self.reset = true;
            let prefix = format!("{}:presence:", self.prefix);
            let args: [&[u8]; 6] = [
                b"EVAL",
                scripts::PRESENCE_RESET.as_bytes(),
                b"1",
                set.as_bytes(),
                prefix.as_bytes(),
                self.origin.as_bytes(),
            ];
            let _ = cmd.command(&args, None);
        }
        let rooms: Vec<Rc<str>> = self.rooms.iter().cloned().collect();
        let ttl = self.ttl_ms();
        for room in &rooms {
            let _ = cmd.command(&[b"SADD", set.as_bytes(), room.as_bytes()], None);
            let key = self.key(room, &self.origin);
            let _ = cmd.command(&[b"DEL", key.as_bytes()], None);
            let members = hub.local_presence(room);
            for chunk in members.chunks(WRITE_CHUNK) {
                let mut args: Vec<&[u8]> = vec![b"HSET", key.as_bytes()];
                for (client, sub) in chunk {
                    args.push(client.as_bytes());
                    args.push(sub.as_bytes());
                }
                let _ = cmd.command(&args, None);
            }
            let _ = cmd.command(&[b"PEXPIRE", key.as_bytes(), ttl.as_bytes()], None);
            for peer in peers {
                self.scan(cmd, room, peer, b"0");
            }
        }
    }

    /// Renews the expiry of the next rooms' hashes.
    pub fn on_heartbeat(&mut self, cmd: &mut Link) {
        let ttl = self.ttl_ms();
        let set = self.rooms_key();
        let _ = cmd.command(&[b"PEXPIRE", set.as_bytes(), ttl.as_bytes()], None);
        let next: Vec<Rc<str>> = match &self.refresh_after {
            Some(after) => self
                .rooms
                .range::<Rc<str>, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                .take(REFRESH_PER_HEARTBEAT)
                .cloned()
                .collect(),
            None => self
                .rooms
                .iter()
                .take(REFRESH_PER_HEARTBEAT)
                .cloned()
                .collect(),
        };
        self.refresh_after = if next.len() < REFRESH_PER_HEARTBEAT {
            None
        } else {
            next.last().cloned()
        };
        for room in next {
            let key = self.key(&room, &self.origin);
            let _ = cmd.command(&[b"PEXPIRE", key.as_bytes(), ttl.as_bytes()], None);
        }
    }

    /// Another node's join or leave; true when it was one.
    pub fn on_message(&mut self, env: &Envelope<'_>, hub: &mut Hub) -> bool {
        if env.origin == self.origin {
            return true;
        }
        let Some((client, sub)) = std::str::from_utf8(env.payload)
            .ok()
            .and_then(|p| p.split_once(' '))
        else {
            return true;
        };
        match env.kind {
            Kind::Joined => hub.remote_joined(env.room, env.origin, client, sub, true),
            _ => hub.remote_left(env.room, client),
        }
        true
    }

    /// A page of another node's members of a room: `[cursor, [client, sub, ...]]`.
    pub fn on_reply(&mut self, tag: u64, value: Value, cmd: &mut Link, hub: &mut Hub) {
        let Some((room, node)) = self.scans.remove(&tag) else {
            return;
        };
        let Value::Array(Some(items)) = value else {
            return;
        };
        let [cursor, Value::Array(Some(pairs))] = items.as_slice() else {
            return;
        };
        for pair in pairs.chunks(2) {
            if let [client, sub] = pair {
                if let (Some(client), Some(sub)) = (text(client), text(sub)) {
                    hub.remote_joined(&room, &node, client, sub, false);
                }
            }
        }
        match cursor.as_bytes() {
            Some(b"0") | None => {}
            Some(next) if self.rooms.contains(&room) => self.scan(cmd, &room, &node, next),
            Some(_) => {}
        }
    }
}

fn text(value: &Value) -> Option<&str> {
    value.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
}
