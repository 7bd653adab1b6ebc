//! Room history (SPEC §10): per-room rings of recent messages, offsets and
//! epochs, within a global byte budget.
//!
//! A ring holds the very `Rc<[u8]>` body the outbox sends to the members,
//! so history costs no second copy. [`History`] is the seam: `Off`, or a
//! [`RingStore`] in this process; a store shared by a cluster plugs in as
//! another variant with the same calls.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::mem::size_of;
use std::rc::Rc;

/// Most messages one recovery replays; a client that missed more gets the
/// newest ones and `recovered: false`.
pub const MAX_REPLAY: usize = 300;

/// What a stored message costs beside its body: its entry (twice, for the
/// ring's spare capacity) and the body's reference counts.
pub const ENTRY_OVERHEAD: usize = 2 * size_of::<Entry>() + 2 * size_of::<usize>();

/// What a room with a ring costs beside its name: its table entry, its
/// epoch, its place among the oldest entries, and allocation slack.
pub const ROOM_OVERHEAD: usize = 2 * (size_of::<Rc<str>>() + size_of::<RoomLog>())
    + EPOCH_BYTES
    + 2 * (size_of::<u64>() + size_of::<Rc<str>>())
    + 128;

/// Longest epoch: a 16-digit tag, a dash and a 16-digit count.
const EPOCH_BYTES: usize = 33;

/// `rooms.history`, with the process's epoch tag.
#[derive(Debug, Clone, Default)]
pub struct HistoryConfig {
    /// Messages kept per room; 0 turns history off.
    pub size: usize,
    pub ttl_ms: u64,
    /// All rooms' rings together, overheads included.
    pub max_bytes: usize,
    /// Differs between process starts, so that epochs do.
    pub epoch_tag: u64,
}

/// Where a room's history stands: its last offset and its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: Rc<str>,
}

impl Position {
    /// The position of a room without history (history off).
    pub fn none() -> Position {
        Position {
            offset: 0,
            epoch: "".into(),
        }
    }
}

/// The answer to a `since`: the position, whether every missed message is
/// replayed, and those messages in order.
#[derive(Debug)]
pub struct Recovery {
    pub position: Position,
    pub recovered: bool,
    pub messages: Vec<Rc<[u8]>>,
}

#[derive(Debug)]
pub struct Entry {
    /// Order among every room's entries: the global eviction order.
    seq: u64,
    offset: u64,
    at_ms: u64,
    body: Rc<[u8]>,
}

impl Entry {
    fn cost(&self) -> usize {
        self.body.len() + ENTRY_OVERHEAD
    }
}

#[derive(Debug)]
pub struct RoomLog {
    epoch: Rc<str>,
    /// The offset of the latest message (0 before any).
    last: u64,
    entries: VecDeque<Entry>,
}

/// History on or off: the hub calls the same methods either way.
#[derive(Debug)]
pub enum History {
    Off,
    Local(RingStore),
}

impl History {
    pub fn new(cfg: HistoryConfig) -> History {
        if cfg.size == 0 {
            History::Off
        } else {
            History::Local(RingStore::new(cfg))
        }
    }

    pub fn is_on(&self) -> bool {
        matches!(self, History::Local(_))
    }

    /// Stores the message `write` frames for its offset (`None` when off)
    /// and returns its body. `occupied` tells whether a room has members:
    /// their room's offsets go on even when its messages are evicted.
    pub fn append(
        &mut self,
        room: &str,
        now_ms: u64,
        occupied: impl Fn(&str) -> bool,
        write: impl FnOnce(Option<u64>) -> Rc<[u8]>,
    ) -> Rc<[u8]> {
        match self {
            History::Off => write(None),
            History::Local(store) => store.append(room, now_ms, occupied, write),
        }
    }

    /// The position of a room with members (its ring is made if needed).
    pub fn position(&mut self, room: &str, now_ms: u64) -> Option<Position> {
        match self {
            History::Off => None,
            History::Local(store) => Some(store.position(room, now_ms)),
        }
    }

    /// The messages after `offset` of `epoch`, for a member of `room`.
    pub fn since(&mut self, room: &str, offset: u64, epoch: &str, now_ms: u64) -> Option<Recovery> {
        match self {
            History::Off => None,
            History::Local(store) => Some(store.since(room, offset, epoch, now_ms)),
        }
    }

    /// The position and at most `limit` newest messages, oldest first.
    pub fn recent(
        &mut self,
        room: &str,
        limit: usize,
        now_ms: u64,
    ) -> Option<(Position, Vec<Rc<[u8]>>)> {
        match self {
            History::Off => None,
            History::Local(store) => Some(store.recent(room, limit, now_ms)),
        }
    }

    /// The room's last member left: an empty ring goes (its epoch with it).
    pub fn vacate(&mut self, room: &str) {
        if let History::Local(store) = self {
            store.vacate(room);
        }
    }

    /// Bytes held in rings, overheads included (at most `max_bytes` plus one message).
    pub fn bytes(&self) -> usize {
        match self {
            History::Off => 0,
            History::Local(store) => store.bytes,
        }
    }
}

/// Every room's ring in this process.
#[derive(Debug)]
pub struct RingStore {
    cfg: HistoryConfig,
    logs: HashMap<Rc<str>, RoomLog>,
    /// The oldest entry of every non-empty ring, by `seq`: what to evict next.
    oldest: BTreeMap<u64, Rc<str>>,
    next_seq: u64,
    /// Rings made so far: the second half of an epoch.
    rings_made: u64,
    /// Counted bytes of every non-empty ring: its entries and its room overhead.
    bytes: usize,
}

impl RingStore {
    pub fn new(cfg: HistoryConfig) -> RingStore {
        RingStore {
            cfg,
            logs: HashMap::new(),
            oldest: BTreeMap::new(),
            next_seq: 0,
            rings_made: 0,
            bytes: 0,
        }
    }

    fn append(
        &mut self,
        room: &str,
        now_ms: u64,
        occupied: impl Fn(&str) -> bool,
        write: impl FnOnce(Option<u64>) -> Rc<[u8]>,
    ) -> Rc<[u8]> {
        self.expire(now_ms, &occupied);
        let name = self.ring(room);
        let seq = self.next_seq;
        self.next_seq += 1;
        let Some(log) = self.logs.get_mut(room) else {
            return write(None);
        };
        log.last += 1;
        let body = write(Some(log.last));
        let entry = Entry {
            seq,
            offset: log.last,
            at_ms: now_ms,
            body: body.clone(),
        };
        if log.entries.is_empty() {
            self.bytes += ROOM_OVERHEAD + room.len();
            self.oldest.insert(seq, name);
        }
        self.bytes += entry.cost();
        log.entries.push_back(entry);
        let over = log.entries.len().saturating_sub(self.cfg.size);
        for _ in 0..over {
            self.evict_oldest_of(room, &occupied);
        }
        while self.bytes > self.cfg.max_bytes {
            let Some((_, oldest)) = self.oldest.first_key_value() else {
                break;
            };
            let oldest = oldest.clone();
            self.evict_oldest_of(&oldest, &occupied);
        }
        body
    }

    /// For a member of `room`: its ring, made if needed, without what expired.
    fn position(&mut self, room: &str, now_ms: u64) -> Position {
        self.ring(room);
        self.expire_room(room, now_ms);
        self.logs
            .get(room)
            .map_or_else(Position::none, Self::position_of)
    }

    fn since(&mut self, room: &str, offset: u64, epoch: &str, now_ms: u64) -> Recovery {
        let position = self.position(room, now_ms);
        let mut recovery = Recovery {
            recovered: false,
            messages: Vec::new(),
            position,
        };
        let Some(log) = self.logs.get(room) else {
            return recovery;
        };
        // Offsets of another epoch say nothing about this one's messages.
        if *log.epoch != *epoch || offset > log.last {
            return recovery;
        }
        let first_kept = log.entries.front().map_or(log.last + 1, |e| e.offset);
        let missed = log.entries.iter().filter(|e| e.offset > offset);
        let count = missed.clone().count();
        recovery.messages = missed
            .skip(count.saturating_sub(MAX_REPLAY))
            .map(|e| e.body.clone())
            .collect();
        recovery.recovered = offset + 1 >= first_kept && count <= MAX_REPLAY;
        recovery
    }

    fn recent(&mut self, room: &str, limit: usize, now_ms: u64) -> (Position, Vec<Rc<[u8]>>) {
        let position = self.position(room, now_ms);
        let messages = self.logs.get(room).map_or_else(Vec::new, |log| {
            let skip = log.entries.len().saturating_sub(limit);
            log.entries
                .iter()
                .skip(skip)
                .map(|e| e.body.clone())
                .collect()
        });
        (position, messages)
    }

    fn vacate(&mut self, room: &str) {
        if self
            .logs
            .get(room)
            .is_some_and(|log| log.entries.is_empty())
        {
            self.logs.remove(room);
        }
    }

    fn position_of(log: &RoomLog) -> Position {
        Position {
            offset: log.last,
            epoch: log.epoch.clone(),
        }
    }

    /// The room's ring, made with a new epoch when it has none; returns its shared name.
    fn ring(&mut self, room: &str) -> Rc<str> {
        if let Some((name, _)) = self.logs.get_key_value(room) {
            return name.clone();
        }
        let name: Rc<str> = room.into();
        let epoch = format!("{:016x}-{:x}", self.cfg.epoch_tag, self.rings_made);
        self.rings_made += 1;
        let log = RoomLog {
            epoch: epoch.into(),
            last: 0,
            entries: VecDeque::new(),
        };
        self.logs.insert(name.clone(), log);
        name
    }

    /// Evicts every entry older than `ttl_ms`, oldest first across rooms.
    fn expire(&mut self, now_ms: u64, occupied: &impl Fn(&str) -> bool) {
        while let Some((_, room)) = self.oldest.first_key_value() {
            let room = room.clone();
            if !self.oldest_expired(&room, now_ms) {
                break;
            }
            self.evict_oldest_of(&room, occupied);
        }
    }

    /// Evicts the expired entries of `room`, which has members (the other
    /// rooms' expire on the next `append`).
    fn expire_room(&mut self, room: &str, now_ms: u64) {
        while self.oldest_expired(room, now_ms) {
            self.evict_oldest_of(room, &|_: &str| true);
        }
    }

    fn oldest_expired(&self, room: &str, now_ms: u64) -> bool {
        let front = self.logs.get(room).and_then(|log| log.entries.front());
        front.is_some_and(|e| e.at_ms.saturating_add(self.cfg.ttl_ms) <= now_ms)
    }

    /// Drops the oldest entry of `room`; a ring left empty goes unless
    /// the room has members (whose offsets must go on).
    fn evict_oldest_of(&mut self, room: &str, occupied: &impl Fn(&str) -> bool) {
        let Some(log) = self.logs.get_mut(room) else {
            return;
        };
        let Some(entry) = log.entries.pop_front() else {
            return;
        };
        let name = self.oldest.remove(&entry.seq);
        self.bytes -= entry.cost();
        match log.entries.front() {
            Some(next) => {
                if let Some(name) = name {
                    self.oldest.insert(next.seq, name);
                }
                if log.entries.capacity() > 4 * log.entries.len() + 8 {
                    log.entries.shrink_to(2 * log.entries.len());
                }
            }
            None => {
                self.bytes -= ROOM_OVERHEAD + room.len();
                log.entries = VecDeque::new();
                if !occupied(room) {
                    self.logs.remove(room);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
