//! Rate limits, sans-IO: callers pass the monotonic time in milliseconds.

use std::collections::HashMap;
use std::net::IpAddr;

/// A token bucket in integer units: one event costs `period_ms` units and
/// `rate` units flow in per millisecond, so `rate` events fit in a period.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    units: u64,
    last_ms: u64,
}

impl Bucket {
    fn full(rate: u32, period_ms: u64, now_ms: u64) -> Bucket {
        Bucket {
            units: u64::from(rate) * period_ms,
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64, rate: u32, period_ms: u64) {
        let capacity = u64::from(rate) * period_ms;
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.units = capacity.min(
            self.units
                .saturating_add(elapsed.saturating_mul(u64::from(rate))),
        );
        self.last_ms = now_ms.max(self.last_ms);
    }

    fn take(&mut self, now_ms: u64, rate: u32, period_ms: u64) -> bool {
        self.refill(now_ms, rate, period_ms);
        if self.units >= period_ms {
            self.units -= period_ms;
            true
        } else {
            false
        }
    }

    fn is_full(&mut self, now_ms: u64, rate: u32, period_ms: u64) -> bool {
        self.refill(now_ms, rate, period_ms);
        self.units >= u64::from(rate) * period_ms
    }
}

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
/// The flood window is kept in slots of this length (12 slots: one minute).
const SLOT_MS: u64 = 5_000;
const SLOTS: usize = 12;

/// What to do with one message from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Over `max_messages_per_minute`: answer `rate_limited`, drop the message.
    Drop,
    /// More than twice the limit within the last minute: close 4008.
    Close,
}

/// Per-client message limiter: a token bucket for the per-minute limit, and a
/// one-minute count of every message (dropped ones included) for floods.
#[derive(Debug, Clone)]
pub struct MessageLimiter {
    bucket: Bucket,
    counts: [u16; SLOTS],
    newest_slot: u64,
}

impl MessageLimiter {
    pub fn new(per_minute: u32, now_ms: u64) -> MessageLimiter {
        MessageLimiter {
            bucket: Bucket::full(per_minute, MINUTE_MS, now_ms),
            counts: [0; SLOTS],
            newest_slot: now_ms / SLOT_MS,
        }
    }

    pub fn on_message(&mut self, now_ms: u64, per_minute: u32) -> Verdict {
        let slot = now_ms / SLOT_MS;
        if slot > self.newest_slot {
            let stale = (slot - self.newest_slot).min(SLOTS as u64);
            for s in 1..=stale {
                self.counts[((self.newest_slot + s) % SLOTS as u64) as usize] = 0;
            }
            self.newest_slot = slot;
        }
        let here = &mut self.counts[(slot % SLOTS as u64) as usize];
        *here = here.saturating_add(1);
        let in_window: u64 = self.counts.iter().map(|&c| u64::from(c)).sum();
        if in_window > 2 * u64::from(per_minute) {
            Verdict::Close
        } else if self.bucket.take(now_ms, per_minute, MINUTE_MS) {
            Verdict::Accept
        } else {
            Verdict::Drop
        }
    }
}

/// Why an upgrade from an address is refused (HTTP 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRefusal {
    TooManyOpen,
    TooManyConnects,
    /// The table of addresses is full of recently active ones.
    TableFull,
}

impl IpRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            IpRefusal::TooManyOpen => "too many connections from this address",
            IpRefusal::TooManyConnects => "too many connects from this address this hour",
            IpRefusal::TableFull => "too many client addresses; try again later",
        }
    }
}

#[derive(Debug)]
struct IpEntry {
    open: u32,
    connects: Bucket,
}

/// Per-address counters: open WebSocket connections and upgrade requests per hour.
/// Bounded: entries with nothing open and a full bucket are swept, and the
/// table never holds more than `max_entries` addresses.
#[derive(Debug)]
pub struct IpTable {
    entries: HashMap<IpAddr, IpEntry>,
    max_entries: usize,
}

impl IpTable {
    pub fn new(max_entries: usize) -> IpTable {
        IpTable {
            entries: HashMap::new(),
            max_entries,
        }
    }

    /// Counts an upgrade request (refused ones included) and decides on it.
    pub fn on_upgrade(
        &mut self,
        ip: IpAddr,
        now_ms: u64,
        per_hour: u32,
        max_open: u32,
    ) -> Result<(), IpRefusal> {
        if !self.entries.contains_key(&ip) && self.entries.len() >= self.max_entries {
            self.sweep(now_ms, per_hour);
            if self.entries.len() >= self.max_entries {
                return Err(IpRefusal::TableFull);
            }
        }
        let entry = self.entries.entry(ip).or_insert_with(|| IpEntry {
            open: 0,
            connects: Bucket::full(per_hour, HOUR_MS, now_ms),
        });
        if !entry.connects.take(now_ms, per_hour, HOUR_MS) {
            return Err(IpRefusal::TooManyConnects);
        }
        if entry.open >= max_open {
            return Err(IpRefusal::TooManyOpen);
        }
        Ok(())
    }

    /// A WebSocket from `ip` was established (after `on_upgrade` accepted it).
    pub fn opened(&mut self, ip: IpAddr, now_ms: u64, per_hour: u32) {
        self.entries
            .entry(ip)
            .or_insert_with(|| IpEntry {
                open: 0,
                connects: Bucket::full(per_hour, HOUR_MS, now_ms),
            })
            .open += 1;
    }

    pub fn closed(&mut self, ip: IpAddr) {
        if let Some(entry) = self.entries.get_mut(&ip) {
            entry.open = entry.open.saturating_sub(1);
        }
    }

    pub fn open_from(&self, ip: IpAddr) -> u32 {
        self.entries.get(&ip).map_or(0, |e| e.open)
    }

    /// Forgets addresses that hold nothing: no open connection, no spent connects.
    pub fn sweep(&mut self, now_ms: u64, per_hour: u32) {
        self.entries
            .retain(|_, e| e.open > 0 || !e.connects.is_full(now_ms, per_hour, HOUR_MS));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_minute_bucket_then_refill() {
        let mut l = MessageLimiter::new(60, 0);
        for i in 0..60 {
            assert_eq!(l.on_message(0, 60), Verdict::Accept, "message {i}");
        }
        assert_eq!(l.on_message(0, 60), Verdict::Drop);
        // One message's worth flows back in every second.
        assert_eq!(l.on_message(1000, 60), Verdict::Accept);
        assert_eq!(l.on_message(1000, 60), Verdict::Drop);
    }

    #[test]
    fn flood_over_twice_the_limit_closes() {
        let mut l = MessageLimiter::new(10, 0);
        let verdicts: Vec<Verdict> = (0..21).map(|_| l.on_message(100, 10)).collect();
        assert_eq!(verdicts[..10], [Verdict::Accept; 10]);
        assert_eq!(verdicts[10..20], [Verdict::Drop; 10]);
        assert_eq!(verdicts[20], Verdict::Close);
    }

    #[test]
    fn flood_window_forgets_after_a_minute() {
        let mut l = MessageLimiter::new(10, 0);
        for _ in 0..20 {
            l.on_message(0, 10);
        }
        // A minute later the old burst has left the window.
        assert_eq!(l.on_message(61_000, 10), Verdict::Accept);
        for _ in 0..9 {
            assert_ne!(l.on_message(61_000, 10), Verdict::Close);
        }
    }

    #[test]
    fn steady_sender_at_the_limit_is_never_dropped() {
        let mut l = MessageLimiter::new(60, 0);
        for i in 0..600u64 {
            assert_eq!(l.on_message(i * 1000, 60), Verdict::Accept);
        }
    }

    #[test]
    fn ip_table_counts_open_and_hourly() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut t = IpTable::new(100);
        assert_eq!(t.on_upgrade(ip, 0, 3, 1), Ok(()));
        t.opened(ip, 0, 3);
        assert_eq!(t.on_upgrade(ip, 0, 3, 1), Err(IpRefusal::TooManyOpen));
        t.closed(ip);
        assert_eq!(t.on_upgrade(ip, 0, 3, 1), Ok(()));
        assert_eq!(t.on_upgrade(ip, 0, 3, 1), Err(IpRefusal::TooManyConnects));
        // An hour refills three connects; one twentieth of an hour refills... none yet at 3/h.
        assert_eq!(t.on_upgrade(ip, HOUR_MS / 3, 3, 1), Ok(()));
    }

    #[test]
    fn ip_table_is_bounded_and_swept() {
        let mut t = IpTable::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        t.on_upgrade(a, 0, 10, 5).unwrap();
        t.opened(a, 0, 10);
        t.on_upgrade(b, 0, 10, 5).unwrap();
        assert_eq!(t.on_upgrade(c, 0, 10, 5), Err(IpRefusal::TableFull));
        // After an hour b's bucket is full again and it holds nothing open: swept.
        assert_eq!(t.on_upgrade(c, HOUR_MS, 10, 5), Ok(()));
        assert_eq!(t.len(), 2);
        assert_eq!(t.open_from(a), 1);
    }
}
