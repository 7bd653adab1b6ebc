//! What the hub hands the node for history in a cluster (SPEC §10): room
//! messages to number in Redis, reads of a room's position and messages,
//! and the reads it still waits for. Redis is the truth: a clustered hub
//! keeps no rings of its own.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use crate::proto::rooms::ConnKey;
use serde_json::value::RawValue;

/// Reads waiting for Redis at once; beyond, a read is answered as if the
/// broker were down (a position unknown, `recovered: false`).
pub const MAX_PENDING_READS: usize = 1024;
/// Most elements in one reply of the command link: a replay's messages, a
/// presence list.
pub const MAX_LISTED: usize = 2048;
/// Rooms remembered for a new epoch at the next join; beyond, every room
/// with local members gets one.
pub const MAX_UNNUMBERED_ROOMS: usize = 1024;

/// How a room message is delivered on the other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKind {
    /// A client's `publish`: every member of the room.
    Publish,
    /// `host.broadcast` / `POST /api/publish` to a room: its clients.
    Broadcast,
}

/// `rooms.history` as a cluster keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterHistoryConfig {
    pub size: usize,
    pub ttl_s: u64,
}

/// A room message for the publish script, framed without its offset.
#[derive(Debug, Clone)]
pub struct ToNumber {
    pub room: Rc<str>,
    pub kind: RoomKind,
    pub body: Rc<[u8]>,
    /// The publishing client (it does not get its own message).
    pub sender: Option<Rc<str>>,
}

/// What a read asks of a room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadKind {
    Position,
    Since { offset: u64, epoch: String },
    Recent { limit: usize },
}

#[derive(Debug, Clone)]
pub struct Read {
    pub id: u64,
    pub room: Rc<str>,
    pub kind: ReadKind,
}

/// Redis's answer to a read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadAnswer {
    pub offset: u64,
    pub epoch: Rc<str>,
    /// Every message after `since` is in `messages`.
    pub complete: bool,
    pub messages: Vec<Rc<[u8]>>,
}

/// Who waits for a read, and the live messages held back meanwhile.
#[derive(Debug)]
pub struct Waiting {
    pub key: ConnKey,
    pub session: u64,
    pub room: Rc<str>,
    pub rid: Option<Box<RawValue>>,
    pub deadline_ms: u64,
    /// `subscribe` (true) holds live messages; `history` (false) does not.
    pub holds: bool,
    pub since: bool,
    /// Live messages (offset, body) that came while waiting.
    pub held: Vec<(u64, Rc<[u8]>)>,
    /// A live message could not be held (over the budget): not recovered.
    pub lost: bool,
}

#[derive(Debug)]
pub struct HistoryTap {
    pub cfg: ClusterHistoryConfig,
    numbered: VecDeque<ToNumber>,
    numbered_bytes: usize,
    max_bytes: usize,
    reads: VecDeque<Read>,
    next_read: u64,
    pub waiting: BTreeMap<u64, Waiting>,
    /// Bytes of the held messages, within `max_bytes`.
    held_bytes: usize,
    /// Rooms that got messages not in Redis's history (delivered without
    /// an offset): they get a new epoch at the next join.
    unnumbered: BTreeSet<Rc<str>>,
    /// More rooms than `MAX_UNNUMBERED_ROOMS`: every room renews.
    pub unnumbered_overflow: bool,
}

impl HistoryTap {
    pub fn new(cfg: ClusterHistoryConfig, max_bytes: usize) -> HistoryTap {
        HistoryTap {
            cfg,
            numbered: VecDeque::new(),
            numbered_bytes: 0,
            max_bytes,
            reads: VecDeque::new(),
            next_read: 1,
            waiting: BTreeMap::new(),
            held_bytes: 0,
            unnumbered: BTreeSet::new(),
            unnumbered_overflow: false,
        }
    }

    /// Queues a message for numbering; false when the queue is full.
    pub fn number(&mut self, message: ToNumber) -> bool {
        let cost = message.room.len() + message.body.len();
        if self.numbered_bytes + cost > self.max_bytes {
            return false;
        }
        self.numbered_bytes += cost;
        self.numbered.push_back(message);
        true
    }

    /// `room` got a message that is not in its history.
    pub fn note_unnumbered(&mut self, room: &str) {
        if self.unnumbered.contains(room) || self.unnumbered_overflow {
            return;
        }
        if self.unnumbered.len() >= MAX_UNNUMBERED_ROOMS {
            self.unnumbered.clear();
            self.unnumbered_overflow = true;
        } else {
            self.unnumbered.insert(room.into());
        }
    }

    /// The noted rooms, taken out; `None` after an overflow (every room).
    pub fn take_unnumbered(&mut self) -> Option<Vec<Rc<str>>> {
        let rooms = std::mem::take(&mut self.unnumbered);
        (!std::mem::take(&mut self.unnumbered_overflow)).then(|| rooms.into_iter().collect())
    }

    pub fn take_numbered(&mut self) -> Option<ToNumber> {
        let message = self.numbered.pop_front()?;
        self.numbered_bytes -= message.room.len() + message.body.len();
        Some(message)
    }

    /// Queues a read for `waiting`; `None` when too many wait already.
    pub fn read(&mut self, kind: ReadKind, waiting: Waiting) -> Option<u64> {
        if self.waiting.len() >= MAX_PENDING_READS {
            return None;
        }
        let id = self.next_read;
        self.next_read += 1;
        self.reads.push_back(Read {
            id,
            room: waiting.room.clone(),
            kind,
        });
        self.waiting.insert(id, waiting);
        Some(id)
    }

    pub fn take_read(&mut self) -> Option<Read> {
        self.reads.pop_front()
    }

    pub fn has_out(&self) -> bool {
        !self.numbered.is_empty() || !self.reads.is_empty()
    }

    /// When the first waiting read times out.
    pub fn next_deadline(&self) -> Option<u64> {
        self.waiting.values().map(|w| w.deadline_ms).min()
    }

    /// Holds a live message for the member of read `id`, within the budget.
    pub fn hold(&mut self, id: u64, offset: u64, body: &Rc<[u8]>) {
        let fits = self.held_bytes + body.len() <= self.max_bytes;
        let Some(waiting) = self.waiting.get_mut(&id) else {
            return;
        };
        if fits {
            self.held_bytes += body.len();
            waiting.held.push((offset, body.clone()));
        } else {
            waiting.lost = true;
        }
    }

    /// Takes read `id` out (answered, or its member gone).
    pub fn finish(&mut self, id: u64) -> Option<Waiting> {
        let waiting = self.waiting.remove(&id)?;
        let held: usize = waiting.held.iter().map(|(_, b)| b.len()).sum();
        self.held_bytes -= held;
        Some(waiting)
    }

    /// The reads past their deadline, taken out.
    pub fn expired(&mut self, now_ms: u64) -> Vec<Waiting> {
        let due: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline_ms <= now_ms)
            .map(|(&id, _)| id)
            .collect();
        due.into_iter().filter_map(|id| self.finish(id)).collect()
    }

    /// Bytes this holds at most: the numbering queue, the held messages,
    /// and every waiting read (its entry, room name and request id).
    pub fn ceiling(&self) -> usize {
        2 * self.max_bytes
            + MAX_PENDING_READS * (std::mem::size_of::<Waiting>() + 512)
            + MAX_UNNUMBERED_ROOMS * (crate::proto::rooms::MAX_ROOM_NAME + 64)
    }
}
