//! One connection's outbound bytes: messages to one client copied into
//! pooled buffers, messages to many (broadcasts) framed once and shared by
//! reference; written with one vectored write per pass.

use super::nonblocking::retry;
use super::pool::BufPool;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::rc::Rc;

/// Slices handed to one `writev`.
const MAX_IOVECS: usize = 64;

#[derive(Debug)]
enum Chunk {
    Own(Vec<u8>),
    Shared(Rc<[u8]>),
}

impl Chunk {
    fn give_back(self, pool: &mut BufPool) {
        match self {
            Chunk::Own(buf) => pool.checkin(buf),
            Chunk::Shared(frame) => pool.shared_done(frame),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Own(v) => v,
            Chunk::Shared(s) => s,
        }
    }
}

#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    front_written: usize,
    /// Bytes queued and not yet written.
    queued: usize,
}

impl OutQueue {
    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Appends `parts` (a frame header and its payload) by copying.
    pub fn push_copy(&mut self, pool: &mut BufPool, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let fits =
            matches!(self.chunks.back(), Some(Chunk::Own(v)) if v.capacity() - v.len() >= len);
        if !fits {
            self.chunks.push_back(Chunk::Own(pool.checkout(len)));
        }
        if let Some(Chunk::Own(tail)) = self.chunks.back_mut() {
            for part in parts {
                tail.extend_from_slice(part);
            }
        }
        self.queued += len;
    }

    /// Appends a frame whose payload may be shared with other connections:
    /// then the whole frame is built once (see `BufPool::shared_frame`) and
    /// this queue holds a reference to it, with no copy and no allocation.
    pub fn push_frame(
        &mut self,
        pool: &mut BufPool,
        header: &[u8],
        payload: &[u8],
        shared: Option<&Rc<[u8]>>,
    ) {
        match shared {
            Some(rc) => {
                let frame = pool.shared_frame(header, rc);
                self.queued += frame.len();
                self.chunks.push_back(Chunk::Shared(frame));
            }
            None => self.push_copy(pool, &[header, payload]),
        }
    }

    /// Writes until the queue is empty or the socket would block.
    /// Returns whether everything was written.
    pub fn write_to(&mut self, sink: &mut impl Write, pool: &mut BufPool) -> io::Result<bool> {
        while self.queued > 0 {
            if self.chunks.len() == 1 {
                // One chunk (the usual case: a batch of small frames, or one
                // broadcast): a plain write, which for a socket is send(2),
                // skips writev's vector import and VFS layer.
                let bytes = match self.chunks.front() {
                    Some(chunk) => &chunk.bytes()[self.front_written..],
                    None => break,
                };
                let written = match retry(|| sink.write(bytes))? {
                    Some(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Some(n) => n,
                    None => return Ok(false),
                };
                self.advance(written, pool);
                continue;
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (i, chunk) in self.chunks.iter().take(MAX_IOVECS).enumerate() {
                let bytes = chunk.bytes();
                slices[i] = IoSlice::new(if i == 0 {
                    &bytes[self.front_written..]
                } else {
                    bytes
                });
                count += 1;
            }
            let written = match retry(|| sink.write_vectored(&slices[..count]))? {
                Some(0) => return Err(io::ErrorKind::WriteZero.into()),
                Some(n) => n,
                None => return Ok(false),
            };
            self.advance(written, pool);
        }
        Ok(true)
    }

    fn advance(&mut self, mut written: usize, pool: &mut BufPool) {
        self.queued -= written;
        while written > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.bytes().len() - self.front_written;
            if written < left {
                self.front_written += written;
                return;
            }
            written -= left;
            self.front_written = 0;
            if let Some(chunk) = self.chunks.pop_front() {
                chunk.give_back(pool);
            }
        }
        if self.queued == 0 {
            // Keep the (empty) tail buffer only if it is still the front one; return the rest.
            while let Some(chunk) = self.chunks.pop_front() {
                chunk.give_back(pool);
            }
        }
    }

    /// Drops everything not yet started, keeping a partly written front chunk
    /// so that the frame in progress stays intact (used before a close frame).
    pub fn drop_unsent(&mut self, pool: &mut BufPool) {
        let keep = usize::from(self.front_written > 0);
        while self.chunks.len() > keep {
            if let Some(chunk) = self.chunks.pop_back() {
                chunk.give_back(pool);
            }
        }
        self.queued = self
            .chunks
            .front()
            .map_or(0, |c| c.bytes().len() - self.front_written);
    }

    /// Gives every buffer back (the connection is going away or idle).
    pub fn release(&mut self, pool: &mut BufPool) {
        if self.queued == 0 {
            self.drop_unsent(pool);
            self.chunks = VecDeque::new();
        }
    }

    pub fn clear(&mut self, pool: &mut BufPool) {
        self.front_written = 0;
        while let Some(chunk) = self.chunks.pop_front() {
            chunk.give_back(pool);
        }
        self.queued = 0;
        self.chunks = VecDeque::new();
    }

    /// Whether the front chunk holds a partly written frame.
    pub fn mid_frame(&self) -> bool {
        self.front_written > 0
    }
}

/// True when `extra` more bytes still fit under `limit`.
pub fn fits(queue: &OutQueue, extra: usize, limit: usize) -> bool {
    queue.queued().saturating_add(extra) <= limit
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that accepts at most `room` bytes per call and then blocks.
    struct Trickle {
        got: Vec<u8>,
        room: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls += 1;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.room - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
                if n == self.room {
                    break;
                }
            }
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn batches_small_shares_large_and_resumes_mid_chunk() {
        let mut pool = BufPool::new(8);
        let mut q = OutQueue::default();
        q.push_copy(&mut pool, &[b"ab", b"cd"]);
        q.push_copy(&mut pool, &[b"ef"]);
        let big: Rc<[u8]> = vec![7u8; 5000].into();
        q.push_frame(&mut pool, b"H", &big, Some(&big));
        assert_eq!(q.queued(), 6 + 1 + 5000);
        let mut sink = Trickle {
            got: Vec::new(),
            room: 3,
            calls: 0,
        };
        assert!(!q.write_to(&mut sink, &mut pool).unwrap());
        assert_eq!(sink.got, b"abc");
        sink.room = usize::MAX / 2;
        assert!(q.write_to(&mut sink, &mut pool).unwrap());
        assert_eq!(&sink.got[..7], b"abcdefH");
        assert_eq!(sink.got.len(), 5007);
        assert!(q.is_empty());
        assert_eq!(pool.lent, 0);
        assert_eq!(Rc::strong_count(&big), 1);
    }

    #[test]
    fn a_small_broadcast_is_shared_without_a_pooled_buffer() {
        let mut pool = BufPool::new(8);
        let msg: Rc<[u8]> = b"{\"event\":\"b\"}".to_vec().into();
        let mut queues = [OutQueue::default(), OutQueue::default()];
        for q in &mut queues {
            q.push_frame(&mut pool, &[0x81, 13], &msg, Some(&msg));
        }
        assert_eq!(pool.lent, 0, "no buffer lent for a shared frame");
        for q in &mut queues {
            let mut sink = Trickle {
                got: Vec::new(),
                room: 1000,
                calls: 0,
            };
            assert!(q.write_to(&mut sink, &mut pool).unwrap());
            assert_eq!(sink.got, b"\x81\x0d{\"event\":\"b\"}");
            assert_eq!(sink.calls, 1);
        }
        assert_eq!(
            Rc::strong_count(&msg),
            1,
            "nothing holds the message afterwards"
        );
    }

    #[test]
    fn drop_unsent_keeps_the_frame_in_progress() {
        let mut pool = BufPool::new(8);
        let mut q = OutQueue::default();
        let big: Rc<[u8]> = vec![1u8; 3000].into();
        q.push_frame(&mut pool, b"", &big, Some(&big));
        q.push_copy(&mut pool, &[b"later"]);
        let mut sink = Trickle {
            got: Vec::new(),
            room: 100,
            calls: 0,
        };
        let _ = q.write_to(&mut sink, &mut pool);
        q.drop_unsent(&mut pool);
        assert_eq!(q.queued(), 2900);
        assert!(q.mid_frame());
        q.clear(&mut pool);
        assert_eq!(pool.lent, 0);
    }
}
