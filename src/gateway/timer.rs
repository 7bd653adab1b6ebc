//! A coarse hashed timer wheel: every deadline of every connection (handshake,
//! auth, token expiry, pings, idle, close linger) in one structure, at
//! `TICK_MS` resolution, instead of a timer per connection.

/// Resolution of every deadline.
pub const TICK_MS: u64 = 50;
const SLOTS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub key: usize,
    pub id: u64,
    pub tick: u64,
}

#[derive(Debug)]
pub struct TimerWheel {
    slots: Vec<Vec<Entry>>,
    /// The first tick not yet expired.
    next_tick: u64,
    len: usize,
}

impl Default for TimerWheel {
    fn default() -> Self {
        TimerWheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            next_tick: 0,
            len: 0,
        }
    }
}

impl TimerWheel {
    /// The tick at which a deadline of `at_ms` fires (never in the past).
    pub fn tick_for(&self, at_ms: u64) -> u64 {
        at_ms.div_ceil(TICK_MS).max(self.next_tick)
    }

    pub fn insert(&mut self, entry: Entry) {
        self.slots[(entry.tick % SLOTS as u64) as usize].push(entry);
        self.len += 1;
    }

    /// Moves every entry due at `now_ms` into `due`.
    pub fn expire(&mut self, now_ms: u64, due: &mut Vec<Entry>) {
        let now_tick = now_ms / TICK_MS;
        // After a long stall, one pass over the wheel covers every slot.
        let last = now_tick.min(self.next_tick + SLOTS as u64 - 1);
        while self.next_tick <= last {
            let slot = &mut self.slots[(self.next_tick % SLOTS as u64) as usize];
            let before = slot.len();
            slot.retain(|e| {
                if e.tick <= now_tick {
                    due.push(*e);
                    false
                } else {
                    true
                }
            });
            self.len -= before - slot.len();
            self.next_tick += 1;
        }
        self.next_tick = self.next_tick.max(now_tick + 1);
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Milliseconds until the next tick boundary, for the poll timeout.
    pub fn until_next_tick(&self, now_ms: u64) -> u64 {
        (self.next_tick * TICK_MS).saturating_sub(now_ms).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_at_or_after_deadline_never_before() {
        let mut w = TimerWheel::default();
        for (key, at) in [(1, 120), (2, 50), (3, 100_000)] {
            let tick = w.tick_for(at);
            w.insert(Entry { key, id: 0, tick });
        }
        let mut due = Vec::new();
        w.expire(99, &mut due);
        assert_eq!(due.iter().map(|e| e.key).collect::<Vec<_>>(), [2]);
        due.clear();
        w.expire(150, &mut due);
        assert_eq!(due.iter().map(|e| e.key).collect::<Vec<_>>(), [1]);
        due.clear();
        // Far deadlines survive laps of the wheel.
        w.expire(99_999, &mut due);
        assert!(due.is_empty());
        w.expire(100_000, &mut due);
        assert_eq!(due.iter().map(|e| e.key).collect::<Vec<_>>(), [3]);
        assert!(w.is_empty());
    }

    #[test]
    fn past_deadlines_fire_on_the_next_pass() {
        let mut w = TimerWheel::default();
        let mut due = Vec::new();
        w.expire(10_000, &mut due);
        let tick = w.tick_for(5);
        w.insert(Entry {
            key: 9,
            id: 1,
            tick,
        });
        w.expire(10_060, &mut due);
        assert_eq!(due.len(), 1);
    }

    #[test]
    fn a_long_stall_fires_everything_due_in_one_pass() {
        let mut w = TimerWheel::default();
        let ticks: Vec<u64> = [100, 51_300, 2_000_000]
            .iter()
            .map(|&at| w.tick_for(at))
            .collect();
        for (key, &tick) in ticks.iter().enumerate() {
            w.insert(Entry { key, id: 0, tick });
        }
        let mut due = Vec::new();
        // More than a lap of the wheel (1024 ticks of 50 ms) later.
        w.expire(3_000_000, &mut due);
        let mut keys: Vec<usize> = due.iter().map(|e| e.key).collect();
        keys.sort_unstable();
        assert_eq!(keys, [0, 1, 2]);
        assert!(w.is_empty());
    }

    #[test]
    fn the_poll_timeout_reaches_the_next_tick_boundary() {
        let mut w = TimerWheel::default();
        let mut due = Vec::new();
        w.expire(1_020, &mut due);
        // Tick 20 (1000-1049 ms) is done; the next boundary is 1050 ms.
        assert_eq!(w.until_next_tick(1_020), 30);
        assert_eq!(w.until_next_tick(1_050), 1, "never zero: no busy loop");
        assert_eq!(w.tick_for(0), 21, "a past deadline fires on the next tick");
    }
}
