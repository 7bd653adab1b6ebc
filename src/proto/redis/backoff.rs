//! Reconnect delays: exponential backoff with full jitter
//! (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/),
//! from 100 ms to 10 s as SPEC §9 says, on a tiny seeded generator so that
//! tests are repeatable and the core reads no entropy itself.

pub const MIN_DELAY_MS: u64 = 100;
pub const MAX_DELAY_MS: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    state: u64,
}

impl Backoff {
    /// `seed` comes from the shell (any value; 0 is replaced).
    pub fn new(seed: u64) -> Backoff {
        Backoff {
            attempt: 0,
            state: seed | 1,
        }
    }

    /// The delay before the next attempt: uniform in 100 ms ..= min(10 s,
    /// 100 ms × 2^attempt); each call doubles the ceiling.
    pub fn next_delay_ms(&mut self) -> u64 {
        let ceiling = MIN_DELAY_MS
            .saturating_mul(1u64 << self.attempt.min(16))
            .min(MAX_DELAY_MS);
        self.attempt = self.attempt.saturating_add(1);
        MIN_DELAY_MS + self.random() % (ceiling - MIN_DELAY_MS + 1)
    }

    /// A connection came up: the next failure starts again from 100 ms.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// xorshift64*: plenty for spreading reconnects, not for secrets.
    pub fn random(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_the_growing_ceiling() {
        let mut b = Backoff::new(7);
        for attempt in 0..40u32 {
            let ceiling = (MIN_DELAY_MS << attempt.min(16)).min(MAX_DELAY_MS);
            let d = b.next_delay_ms();
            assert!((MIN_DELAY_MS..=ceiling).contains(&d), "{attempt}: {d}");
        }
        // Jittered: late delays are not all the same.
        let late: Vec<u64> = (0..8).map(|_| b.next_delay_ms()).collect();
        assert!(late.iter().any(|&d| d != late[0]));
        b.reset();
        assert_eq!(b.next_delay_ms(), MIN_DELAY_MS);
    }
}
