//! One connection's TLS session and the two buffers the caller owns with
//! rustls' unbuffered API: received bytes that are not yet a whole record
//! (here), and sealed records not yet written (`seal`). Both are lent from
//! the pool only while they hold bytes, so an idle session holds no buffer.

use super::seal::Sealed;
use crate::gateway::pool::BufPool;
use rustls::server::UnbufferedServerConnection;

/// The largest TLS record on the wire (RFC 8446 §5.2 and RFC 5246 §6.2.3:
/// 2^14 bytes of plaintext plus 2,048 of expansion, and the 5-byte header).
pub const MAX_RECORD: usize = 16 * 1024 + 2048 + 5;
/// The largest handshake message rustls reassembles (its own bound).
pub const MAX_HANDSHAKE_MESSAGE: usize = 0xffff;
/// Received bytes a session may hold between reads: a handshake message
/// spread over several records, and the partial record after it. Once the
/// handshake is done, at most one partial record is held.
pub const HELD_LIMIT: usize = MAX_HANDSHAKE_MESSAGE + MAX_RECORD;

/// Lets glibc keep up to 1 MiB of freed heap (its default is 128 KiB).
/// Sessions hold no buffer between reads, so the records of busy
/// connections come and go as short-lived allocations (rustls' own among
/// them), and with the default the heap was trimmed and grown again
/// thousands of times a second, a page fault per 4 KiB each time (16 KiB
/// echo over wss: 40 % more CPU).
pub fn keep_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets one of the allocator's tunables.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
    }
}

/// What a session holds, and the flags the caller needs about it.
pub struct TlsSession {
    pub(super) conn: UnbufferedServerConnection,
    /// Received bytes not yet a whole record (lent while non-empty).
    pub(super) held: Option<Vec<u8>>,
    pub(super) sealed: Sealed,
    /// rustls reported the peer's close_notify (it does so only once).
    pub(super) peer_closed: bool,
}

impl TlsSession {
    pub fn new(conn: UnbufferedServerConnection) -> TlsSession {
        TlsSession {
            conn,
            held: None,
            sealed: Sealed::default(),
            peer_closed: false,
        }
    }

    /// Sealed records wait for the socket.
    pub fn wants_write(&self) -> bool {
        self.sealed.pending() > 0
    }

    /// Bytes held since the last read; the next read goes after them.
    pub fn held_len(&self) -> usize {
        self.held.as_ref().map_or(0, Vec::len)
    }

    /// Moves the held bytes to the front of `front` (exactly
    /// `held_len()` long) and gives their buffer back.
    pub fn unhold(&mut self, front: &mut [u8], pool: &mut BufPool) {
        if let Some(buf) = self.held.take() {
            front.copy_from_slice(&buf);
            pool.checkin(buf);
        }
    }

    /// Keeps `rest` (an incomplete record) until the next read; more than
    /// [`HELD_LIMIT`] is refused.
    pub fn hold(&mut self, rest: &[u8], pool: &mut BufPool) -> Result<(), String> {
        if let Some(buf) = self.held.take() {
            pool.checkin(buf);
        }
        if rest.is_empty() {
            return Ok(());
        }
        if rest.len() > HELD_LIMIT {
            return Err(format!(
                "{} bytes without a whole record (limit {HELD_LIMIT})",
                rest.len()
            ));
        }
        let mut buf = pool.checkout_large(rest.len());
        buf.extend_from_slice(rest);
        self.held = Some(buf);
        Ok(())
    }

    /// Drops `n` processed bytes from the front of the held ones.
    pub(super) fn discard_held(&mut self, n: usize, pool: &mut BufPool) {
        if n == 0 {
            return;
        }
        if let Some(buf) = self.held.as_mut() {
            buf.drain(..n.min(buf.len()));
            if buf.is_empty() {
                if let Some(buf) = self.held.take() {
                    pool.checkin(buf);
                }
            }
        }
    }

    /// Gives every buffer back (the connection is going away).
    pub fn release(&mut self, pool: &mut BufPool) {
        if let Some(buf) = self.held.take() {
            pool.checkin(buf);
        }
        self.sealed.release(pool);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "prints the session's size"]
    fn session_size() {
        println!(
            "TlsSession {} LessSafeKey {} UnbufferedServerConnection {} ServerConnection {}",
            std::mem::size_of::<TlsSession>(),
            std::mem::size_of::<ring::aead::LessSafeKey>(),
            std::mem::size_of::<UnbufferedServerConnection>(),
            std::mem::size_of::<rustls::ServerConnection>()
        );
    }
}
