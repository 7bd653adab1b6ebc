//! A pool of fixed-size byte buffers, lent to connections while bytes are in
//! flight and taken back when they are idle, so idle connections hold none.

/// Size of a pooled buffer: small messages are batched into buffers of this size.
pub const BUF_SIZE: usize = 4096;

#[derive(Debug)]
pub struct BufPool {
    free: Vec<Vec<u8>>,
    /// Free buffers kept for reuse; beyond this they go back to the allocator.
    max_free: usize,
    /// Buffers currently lent out (of any size), for metrics.
    pub lent: usize,
}

impl BufPool {
    pub fn new(max_free: usize) -> BufPool {
        BufPool {
            free: Vec::new(),
            max_free,
            lent: 0,
        }
    }

    /// An empty buffer with room for at least `min` bytes.
    pub fn checkout(&mut self, min: usize) -> Vec<u8> {
        self.lent += 1;
        if min <= BUF_SIZE {
            if let Some(buf) = self.free.pop() {
                return buf;
            }
        }
        Vec::with_capacity(min.max(BUF_SIZE))
    }

    /// Takes a buffer back; only standard-size ones are kept.
    pub fn checkin(&mut self, mut buf: Vec<u8>) {
        self.lent = self.lent.saturating_sub(1);
        if buf.capacity() == BUF_SIZE && self.free.len() < self.max_free {
            buf.clear();
            self.free.push(buf);
        }
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_standard_buffers_up_to_a_bound() {
        let mut pool = BufPool::new(1);
        let a = pool.checkout(10);
        let b = pool.checkout(10);
        let big = pool.checkout(BUF_SIZE * 3);
        assert!(big.capacity() >= BUF_SIZE * 3);
        assert_eq!(pool.lent, 3);
        pool.checkin(a);
        pool.checkin(b);
        pool.checkin(big);
        assert_eq!(pool.free_count(), 1);
        assert_eq!(pool.lent, 0);
    }
}
