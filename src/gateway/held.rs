//! What the accept-time bounds count: handshakes in progress and HTTP
//! connections, in all and per address, oldest first (so that the oldest
//! can be evicted when they fill the server), and when a burst of
//! evictions or refusals is worth a log line. Pure: no sockets, no clock.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// The kinds of connection the table counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// A connection that may upgrade, still reading its request (counted
    /// against `max_connections`).
    Handshake,
    /// A connection for the HTTP endpoints only, in any stage.
    Http,
}

impl Held {
    /// Its `kind` label in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Held::Handshake => "handshake",
            Held::Http => "http",
        }
    }

    /// Its index in per-kind arrays.
    pub fn index(self) -> usize {
        match self {
            Held::Handshake => 0,
            Held::Http => 1,
        }
    }
}

/// Bytes the table holds per connection at most (its entries in the maps
/// by age, in all and for its address, with their overhead, and an
/// address of its own), for the memory ceiling.
pub const BYTES_PER_CONNECTION: usize = 192;

/// What one address holds.
#[derive(Debug, Default)]
struct Address {
    /// Counted connections, by `Held::index`.
    counted: [u32; 2],
    /// Its incomplete ones, by age (id -> slab key).
    incomplete: [BTreeMap<u64, usize>; 2],
}

/// Connections by kind: how many per address, and the incomplete ones in
/// accept order, in all and per address.
#[derive(Debug, Default)]
pub struct HeldTable {
    per_ip: HashMap<IpAddr, Address>,
    /// Connection id -> slab key. Ids grow with every accept, so the first
    /// entry is the oldest.
    by_age: [BTreeMap<u64, usize>; 2],
}

impl HeldTable {
    /// Counts connection `id` (slab `key`) from `ip` as `kind`, incomplete
    /// (it may be evicted).
    pub fn add(&mut self, kind: Held, ip: IpAddr, id: u64, key: usize) {
        let k = kind.index();
        self.by_age[k].insert(id, key);
        let address = self.per_ip.entry(ip).or_default();
        address.counted[k] += 1;
        address.incomplete[k].insert(id, key);
    }

    /// Connection `id` completed its request: still counted for its
    /// address, no longer evicted.
    pub fn settle(&mut self, kind: Held, ip: IpAddr, id: u64) {
        self.by_age[kind.index()].remove(&id);
        if let Some(address) = self.per_ip.get_mut(&ip) {
            address.incomplete[kind.index()].remove(&id);
        }
    }

    /// Stops counting connection `id` of `ip` (once per `add`).
    pub fn remove(&mut self, kind: Held, ip: IpAddr, id: u64) {
        self.settle(kind, ip, id);
        if let Some(address) = self.per_ip.get_mut(&ip) {
            let counted = &mut address.counted[kind.index()];
            *counted = counted.saturating_sub(1);
            if address.counted == [0, 0] {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// How many connections of `kind` are incomplete (may be evicted).
    pub fn incomplete(&self, kind: Held) -> usize {
        self.by_age[kind.index()].len()
    }

    /// How many connections of `kind` from `ip` are counted.
    pub fn from_ip(&self, ip: IpAddr, kind: Held) -> usize {
        self.per_ip
            .get(&ip)
            .map_or(0, |a| a.counted[kind.index()] as usize)
    }

    /// How many connections of `kind` from `ip` are incomplete.
    pub fn incomplete_from_ip(&self, ip: IpAddr, kind: Held) -> usize {
        self.per_ip
            .get(&ip)
            .map_or(0, |a| a.incomplete[kind.index()].len())
    }

    /// The slab key of the oldest incomplete connection of `kind`: from
    /// `ip`, or from any address.
    pub fn oldest(&self, kind: Held, from: Option<IpAddr>) -> Option<usize> {
        let by_age = match from {
            None => &self.by_age[kind.index()],
            Some(ip) => &self.per_ip.get(&ip)?.incomplete[kind.index()],
        };
        by_age.values().next().copied()
    }

    /// Addresses with something counted (for tests and bounds).
    pub fn addresses(&self) -> usize {
        self.per_ip.len()
    }
}

/// How long a kind of event must stay away for its next one to be logged
/// again: one warning per burst, not one per connection.
pub const EPISODE_QUIET_MS: u64 = 10_000;

/// A kind of event that is logged once per episode (a burst of them with
/// less than `EPISODE_QUIET_MS` between two).
#[derive(Debug, Default, Clone, Copy)]
pub struct Episode {
    last_ms: Option<u64>,
}

impl Episode {
    /// The event happened at `now_ms`; true when it starts an episode (log it).
    pub fn hit(&mut self, now_ms: u64) -> bool {
        let starts = self
            .last_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= EPISODE_QUIET_MS);
        self.last_ms = Some(now_ms);
        starts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn counts_per_kind_and_address_and_forgets_empty_addresses() {
        let mut t = HeldTable::default();
        t.add(Held::Handshake, ip(2), 10, 0);
        t.add(Held::Handshake, ip(2), 11, 1);
        t.add(Held::Http, ip(2), 12, 2);
        t.add(Held::Handshake, ip(3), 13, 3);
        assert_eq!(t.incomplete(Held::Handshake), 3);
        assert_eq!(t.incomplete(Held::Http), 1);
        assert_eq!(t.from_ip(ip(2), Held::Handshake), 2);
        assert_eq!(t.from_ip(ip(2), Held::Http), 1);
        assert_eq!(t.from_ip(ip(4), Held::Http), 0);
        t.remove(Held::Handshake, ip(2), 10);
        assert_eq!(t.from_ip(ip(2), Held::Handshake), 1);
        // A settled HTTP request still counts for its address, but is not
        // among the incomplete ones any more.
        t.settle(Held::Http, ip(2), 12);
        assert_eq!(t.incomplete(Held::Http), 0);
        assert_eq!(t.incomplete_from_ip(ip(2), Held::Http), 0);
        assert_eq!(t.from_ip(ip(2), Held::Http), 1);
        for (kind, addr, id) in [
            (Held::Handshake, ip(2), 11),
            (Held::Http, ip(2), 12),
            (Held::Handshake, ip(3), 13),
        ] {
            t.remove(kind, addr, id);
        }
        assert_eq!(t.addresses(), 0);
        assert_eq!(t.incomplete(Held::Handshake), 0);
        // Removing what is not counted changes nothing.
        t.remove(Held::Http, ip(5), 99);
        assert_eq!(t.addresses(), 0);
    }

    #[test]
    fn the_oldest_is_the_first_accepted_still_held() {
        let mut t = HeldTable::default();
        assert_eq!(t.oldest(Held::Handshake, None), None);
        // Ids grow with accepts; keys are reused slab slots.
        t.add(Held::Handshake, ip(2), 5 << 24 | 7, 7);
        t.add(Held::Handshake, ip(3), 6 << 24 | 1, 1);
        t.add(Held::Handshake, ip(2), 9 << 24 | 4, 4);
        t.add(Held::Http, ip(2), 4 << 24 | 9, 9);
        assert_eq!(t.oldest(Held::Handshake, None), Some(7));
        assert_eq!(t.oldest(Held::Handshake, Some(ip(3))), Some(1));
        assert_eq!(t.oldest(Held::Handshake, Some(ip(4))), None);
        assert_eq!(t.oldest(Held::Http, None), Some(9));
        // The oldest completed its handshake: the next one is the oldest.
        t.remove(Held::Handshake, ip(2), 5 << 24 | 7);
        assert_eq!(t.oldest(Held::Handshake, None), Some(1));
        assert_eq!(t.oldest(Held::Handshake, Some(ip(2))), Some(4));
        t.add(Held::Handshake, ip(2), 10 << 24 | 7, 7);
        assert_eq!(t.oldest(Held::Handshake, None), Some(1));
        assert_eq!(t.oldest(Held::Handshake, Some(ip(2))), Some(4));
        // An answered HTTP request is never the one evicted.
        t.add(Held::Http, ip(4), 8 << 24 | 2, 2);
        t.settle(Held::Http, ip(2), 4 << 24 | 9);
        assert_eq!(t.oldest(Held::Http, None), Some(2));
        assert_eq!(t.oldest(Held::Http, Some(ip(2))), None);
        assert_eq!(t.from_ip(ip(2), Held::Http), 1);
    }

    #[test]
    fn an_episode_is_logged_once_until_it_has_been_quiet() {
        let mut e = Episode::default();
        assert!(e.hit(1_000));
        assert!(!e.hit(1_001));
        // Events keep coming: still the same episode long after it began.
        assert!(!e.hit(1_000 + EPISODE_QUIET_MS - 1));
        assert!(!e.hit(1_000 + 2 * EPISODE_QUIET_MS - 2));
        // Quiet for the whole interval: a new episode.
        assert!(e.hit(1_000 + 3 * EPISODE_QUIET_MS));
    }
}
