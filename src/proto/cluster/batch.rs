//! How much of a burst from other nodes one pump hands to local members.
//!
//! The shell writes to client sockets between loop passes; a burst read from
//! the broker and queued for every member at once could pass a member's
//! `limits.max_outbound_bytes` before any write happened, closing a client
//! that reads fast enough as a slow reader. So each pump delivers a bounded
//! batch, the shell flushes, and the next pass takes the next batch (the
//! rest waits in the subscriber link, then with the broker).

/// Payload bytes of room messages per batch: what a member may get queued
/// in one pass, far below the default 256 KiB `max_outbound_bytes`.
pub const BATCH_BYTES: usize = 32 * 1024;
/// Deliveries (messages times local members) per batch, so that one pass
/// stays short with many members; a single message always goes whole.
pub const BATCH_DELIVERIES: u64 = 8192;

/// The room messages handled so far in one pump.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    bytes: usize,
    deliveries: u64,
}

impl Batch {
    /// A message of `bytes` payload went to `deliveries` local members.
    pub fn add(&mut self, bytes: usize, deliveries: u64) {
        self.bytes += bytes;
        self.deliveries += deliveries;
    }

    /// No more room messages in this pump.
    pub fn is_full(&self) -> bool {
        self.bytes >= BATCH_BYTES || self.deliveries >= BATCH_DELIVERIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_by_bytes_or_by_deliveries() {
        let mut batch = Batch::default();
        assert!(!batch.is_full());
        batch.add(BATCH_BYTES - 1, 1);
        assert!(!batch.is_full());
        batch.add(1, 1);
        assert!(batch.is_full());
        let mut wide = Batch::default();
        wide.add(10, BATCH_DELIVERIES);
        assert!(wide.is_full(), "one message to many members fills it");
    }
}
