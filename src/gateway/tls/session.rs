//! One connection's TLS session and the two buffers the caller owns with
//! rustls' unbuffered API: received bytes that are not yet a whole record
//! (here), and sealed records not yet written (`seal`). Both are lent from
//! the pool only while they hold bytes, so an idle session holds no buffer.

use super::record::{self, RecordLayer};
use super::seal::Sealed;
use super::traffic::Captured;
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

#[cfg(test)]
thread_local! {
    /// The kernel connection of the last session handed over on this
    /// thread, which tests compare our key updates with.
    pub(super) static KEPT_KERNEL: std::cell::RefCell<
        Option<rustls::kernel::KernelConnection<rustls::server::ServerConnectionData>>,
    > = const { std::cell::RefCell::new(None) };
}

/// Who runs the session's records.
pub(super) enum Stage {
    /// rustls: the handshake, and TLS 1.2 or AES-128 sessions for life.
    Rustls(Box<UnbufferedServerConnection>),
    /// Our TLS 1.3 record layer, once the handshake is done.
    Records(Box<RecordLayer>),
    /// The hand-over failed; the session is over.
    Gone,
}

/// What a session holds, and the flags the caller needs about it.
pub struct TlsSession {
    pub(super) stage: Stage,
    /// Received bytes not yet a whole record (lent while non-empty).
    pub(super) held: Option<Vec<u8>>,
    pub(super) sealed: Sealed,
    /// rustls reported the peer's close_notify (it does so only once).
    pub(super) peer_closed: bool,
    /// The traffic secrets caught during the handshake (`traffic::collect`
    /// after each call into rustls), until the hand-over takes them.
    pub(super) captured: Option<Box<Captured>>,
}

impl TlsSession {
    pub fn new(conn: UnbufferedServerConnection) -> TlsSession {
        TlsSession {
            stage: Stage::Rustls(Box::new(conn)),
            held: None,
            sealed: Sealed::default(),
            peer_closed: false,
            captured: None,
        }
    }

    /// Whether the handshake is done and the session may move to
    /// [`RecordLayer`] (call [`TlsSession::compact`] only once rustls said
    /// `WriteTraffic`: then nothing of its own waits to be sent).
    pub(super) fn compactable(&self) -> bool {
        match &self.stage {
            Stage::Rustls(conn) => {
                !conn.is_handshaking() && record::fits(conn.negotiated_cipher_suite())
            }
            _ => false,
        }
    }

    /// Hands the session from rustls to [`RecordLayer`]: rustls' state
    /// goes, its traffic keys and the secrets caught for them stay.
    pub(super) fn compact(&mut self) -> Result<(), String> {
        let Stage::Rustls(conn) = std::mem::replace(&mut self.stage, Stage::Gone) else {
            return Err("TLS session already handed over".into());
        };
        let captured = self.captured.take().map(|c| *c).unwrap_or_default();
        let (secrets, kernel) = conn
            .dangerous_into_kernel_connection()
            .map_err(|e| e.to_string())?;
        // The kernel connection would only derive key updates, which the
        // caught secrets do: it goes with the rest of rustls' state (tests
        // keep it to compare with).
        let layer = RecordLayer::new(secrets, kernel.negotiated_cipher_suite(), captured)?;
        #[cfg(test)]
        KEPT_KERNEL.with(|kept| *kept.borrow_mut() = Some(kernel));
        self.stage = Stage::Records(Box::new(layer));
        Ok(())
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
            "TlsSession {} RecordLayer {} LessSafeKey {} UnbufferedServerConnection {} ServerConnection {}",
            std::mem::size_of::<TlsSession>(),
            std::mem::size_of::<RecordLayer>(),
            std::mem::size_of::<ring::aead::LessSafeKey>(),
            std::mem::size_of::<UnbufferedServerConnection>(),
            std::mem::size_of::<rustls::ServerConnection>()
        );
    }
}
