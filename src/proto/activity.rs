//! Rolling activity figures for `/metrics` and `/health` (seed 003's
//! monitoring): sessions opened in the last 24 hours, messages in the last
//! minute, and how long sessions lasted. Time is passed in, in unix seconds.

/// Upper bounds (seconds) of the session-duration histogram's buckets; a
/// last bucket (`+Inf`) holds the rest.
pub const DURATION_BUCKETS_S: [u64; 9] = [1, 5, 15, 60, 300, 900, 3600, 14_400, 86_400];

/// Events counted in `N` buckets of `width` seconds: the sum over the last
/// `N * width` seconds (the current bucket included, so it may be short of
/// that by up to one bucket).
#[derive(Debug, Clone)]
pub struct Rolling<const N: usize> {
    width_s: u64,
    counts: [u64; N],
    /// The bucket number (`unix / width`) each slot holds, so stale slots read 0.
    stamps: [u64; N],
}

impl<const N: usize> Rolling<N> {
    pub fn new(width_s: u64) -> Self {
        Rolling {
            width_s: width_s.max(1),
            counts: [0; N],
            stamps: [u64::MAX; N],
        }
    }

    pub fn add(&mut self, unix: u64) {
        let bucket = unix / self.width_s;
        let slot = (bucket % N as u64) as usize;
        if self.stamps[slot] != bucket {
            self.stamps[slot] = bucket;
            self.counts[slot] = 0;
        }
        self.counts[slot] += 1;
    }

    pub fn sum(&self, unix: u64) -> u64 {
        let now = unix / self.width_s;
        self.stamps
            .iter()
            .zip(&self.counts)
            .filter(|(stamp, _)| **stamp <= now && now - **stamp < N as u64)
            .map(|(_, count)| count)
            .sum()
    }
}

/// The figures one hub keeps.
#[derive(Debug, Clone)]
pub struct Activity {
    /// Sessions opened, per hour, over 24 hours.
    pub opened: Rolling<24>,
    /// Client messages, per second, over a minute.
    pub messages: Rolling<60>,
    /// Ended sessions by duration: one count per [`DURATION_BUCKETS_S`] bound,
    /// then `+Inf` (not cumulative).
    pub durations: [u64; DURATION_BUCKETS_S.len() + 1],
    pub duration_sum_s: u64,
    pub ended: u64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            opened: Rolling::new(3600),
            messages: Rolling::new(1),
            durations: [0; DURATION_BUCKETS_S.len() + 1],
            duration_sum_s: 0,
            ended: 0,
        }
    }
}

impl Activity {
    pub fn session_ended(&mut self, seconds: u64) {
        let bucket = DURATION_BUCKETS_S
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DURATION_BUCKETS_S.len());
        self.durations[bucket] += 1;
        self.duration_sum_s = self.duration_sum_s.saturating_add(seconds);
        self.ended += 1;
    }

    /// Mean duration of the sessions that ended, in seconds (0 before any did).
    pub fn average_duration_s(&self) -> f64 {
        if self.ended == 0 {
            return 0.0;
        }
        self.duration_sum_s as f64 / self.ended as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_sums_forget_old_buckets() {
        let mut minute: Rolling<60> = Rolling::new(1);
        for t in [1_000, 1_000, 1_030, 1_059] {
            minute.add(t);
        }
        assert_eq!(minute.sum(1_059), 4);
        assert_eq!(minute.sum(1_060), 2, "second 1000 is over a minute ago");
        assert_eq!(minute.sum(1_200), 0);
        minute.add(1_120); // reuses the slot of 1_000 and 1_060
        assert_eq!(minute.sum(1_120), 1);
        let mut day: Rolling<24> = Rolling::new(3600);
        day.add(0);
        day.add(23 * 3600 + 5);
        assert_eq!(day.sum(23 * 3600 + 10), 2);
        assert_eq!(day.sum(24 * 3600), 1);
    }

    #[test]
    fn durations_fall_in_their_bucket() {
        let mut a = Activity::default();
        for s in [0, 1, 2, 100_000] {
            a.session_ended(s);
        }
        assert_eq!(a.durations[0], 2);
        assert_eq!(a.durations[1], 1);
        assert_eq!(a.durations[DURATION_BUCKETS_S.len()], 1);
        assert_eq!(a.ended, 4);
        assert!((a.average_duration_s() - 25_000.75).abs() < 1e-9);
        assert_eq!(Activity::default().average_duration_s(), 0.0);
    }
}
