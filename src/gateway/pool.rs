//! A pool of fixed-size byte buffers, lent to connections while bytes are in
//! flight and taken back when they are idle, so idle connections hold none.
//! It also keeps the last shared frame built, so that a message sent to many
//! connections is framed once and every queue holds a reference to it.

use std::rc::Rc;

/// Size of a pooled buffer: small messages are batched into buffers of this size.
pub const BUF_SIZE: usize = 4096;
/// Size of a large pooled buffer (`checkout_large`): room for a partial
/// TLS record, or for the sealed records a socket did not take. Recycled
/// too, so that the bytes in flight of busy TLS connections do not make
/// the allocator grow and trim the heap over and over.
pub const LARGE_BUF_SIZE: usize = 36 * 1024;
/// Free large buffers kept for reuse (fewer if `max_free` is smaller).
pub const MAX_FREE_LARGE: usize = 16;

#[derive(Debug)]
pub struct BufPool {
    free: Vec<Vec<u8>>,
    /// Free buffers kept for reuse; beyond this they go back to the allocator.
    max_free: usize,
    /// Free large buffers (at most `MAX_FREE_LARGE`).
    free_large: Vec<Vec<u8>>,
    /// Buffers currently lent out (of any size), for metrics.
    pub lent: usize,
    /// The last shared payload framed, and its frame.
    shared: Option<SharedFrame>,
}

/// A payload sent to many connections and its frame (header + payload).
#[derive(Debug)]
struct SharedFrame {
    payload: Rc<[u8]>,
    frame: Rc<[u8]>,
}

impl BufPool {
    pub fn new(max_free: usize) -> BufPool {
        BufPool {
            free: Vec::new(),
            max_free,
            free_large: Vec::new(),
            lent: 0,
            shared: None,
        }
    }

    /// The frame `header` + `payload` for a payload shared by many
    /// connections: built on the first call, then the same frame again for as
    /// long as some queue still holds it (one broadcast, one allocation).
    pub fn shared_frame(&mut self, header: &[u8], payload: &Rc<[u8]>) -> Rc<[u8]> {
        if let Some(cached) = &self.shared {
            if Rc::ptr_eq(&cached.payload, payload) && cached.frame.starts_with(header) {
                return cached.frame.clone();
            }
        }
        let mut bytes = Vec::with_capacity(header.len() + payload.len());
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(payload);
        let frame: Rc<[u8]> = bytes.into();
        self.shared = Some(SharedFrame {
            payload: payload.clone(),
            frame: frame.clone(),
        });
        frame
    }

    /// A queue is done with a shared frame; once no queue holds the cached
    /// frame, the cache lets go of it (and of its payload).
    pub fn shared_done(&mut self, frame: Rc<[u8]>) {
        let cached = matches!(&self.shared, Some(c) if Rc::ptr_eq(&c.frame, &frame));
        drop(frame);
        if cached && matches!(&self.shared, Some(c) if Rc::strong_count(&c.frame) == 1) {
            self.shared = None;
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

    /// An empty buffer with room for at least `min` bytes, a large pooled
    /// one if `min` is over [`BUF_SIZE`] and fits in one.
    pub fn checkout_large(&mut self, min: usize) -> Vec<u8> {
        if min <= BUF_SIZE || min > LARGE_BUF_SIZE {
            return self.checkout(min);
        }
        self.lent += 1;
        self.free_large
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(LARGE_BUF_SIZE))
    }

    /// Takes a buffer back; only the two standard sizes are kept.
    pub fn checkin(&mut self, mut buf: Vec<u8>) {
        self.lent = self.lent.saturating_sub(1);
        let (free, max) = match buf.capacity() {
            BUF_SIZE => (&mut self.free, self.max_free),
            LARGE_BUF_SIZE => (&mut self.free_large, MAX_FREE_LARGE.min(self.max_free)),
            _ => return,
        };
        if free.len() < max {
            buf.clear();
            free.push(buf);
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

    #[test]
    fn large_buffers_are_reused_within_their_own_bound() {
        // One kept: `max_free` bounds the large ones too.
        let mut pool = BufPool::new(1);
        let a = pool.checkout_large(BUF_SIZE + 1);
        let b = pool.checkout_large(LARGE_BUF_SIZE);
        assert_eq!(a.capacity(), LARGE_BUF_SIZE);
        let ptr = a.as_ptr();
        pool.checkin(a);
        pool.checkin(b);
        assert_eq!(pool.free_count(), 0, "not among the small ones");
        let again = pool.checkout_large(10_000);
        assert_eq!(again.as_ptr(), ptr, "reused");
        assert_eq!(pool.checkout(10_000).capacity(), 10_000, "only when asked");
    }

    #[test]
    fn a_shared_payload_is_framed_once_and_released_after_its_last_use() {
        let mut pool = BufPool::new(1);
        let payload: Rc<[u8]> = b"hello".to_vec().into();
        let a = pool.shared_frame(&[0x81, 5], &payload);
        let b = pool.shared_frame(&[0x81, 5], &payload);
        assert!(Rc::ptr_eq(&a, &b));
        assert_eq!(&a[..], b"\x81\x05hello");
        // Same payload as another opcode: a different frame.
        let c = pool.shared_frame(&[0x82, 5], &payload);
        assert_eq!(c[0], 0x82);
        pool.shared_done(a);
        pool.shared_done(b);
        assert_eq!(Rc::strong_count(&payload), 2, "cached while c is queued");
        pool.shared_done(c);
        assert_eq!(Rc::strong_count(&payload), 1, "the cache let go");
    }
}
