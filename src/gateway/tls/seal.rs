//! Sealed records: the buffer they wait in for the socket (lent from the
//! pool only while it holds some), and sealing into it, from handshake
//! records rustls made and from queued plaintext.

use super::record::{RecordLayer, MAX_PLAINTEXT};
use crate::gateway::nonblocking::retry;
use crate::gateway::outqueue::OutQueue;
use crate::gateway::pool::BufPool;
use rustls::crypto::cipher::MessageEncrypter;
use rustls::server::ServerConnectionData;
use rustls::unbuffered::{
    EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError, WriteTraffic,
};
use rustls::ContentType;
use std::io::{self, IoSlice, Write};

/// Bound of the sealed application data waiting for the socket (as the
/// buffered session's send buffer was).
pub const BUFFER_LIMIT: usize = 32 * 1024;
/// Bound of everything sealed and waiting: application data up to
/// [`BUFFER_LIMIT`], then handshake records and alerts (tickets, key
/// updates) up to this. A peer that makes the server answer past it
/// without reading is dropped.
pub const SEALED_LIMIT: usize = 2 * BUFFER_LIMIT;
/// Room reserved per record beyond its plaintext: header, nonce, tag and
/// padding, more than any suite rustls offers needs.
const RECORD_OVERHEAD: usize = 5 + 256;
/// Queued slices shorter than this are copied together into one record
/// rather than sealed one record each.
const COALESCE_BELOW: usize = 4096;

/// Sealed records waiting for the socket, `buf[sent..]`.
#[derive(Default)]
pub struct Sealed {
    buf: Option<Vec<u8>>,
    sent: usize,
}

impl Sealed {
    pub fn pending(&self) -> usize {
        self.buf.as_ref().map_or(0, |b| b.len() - self.sent)
    }

    /// Makes sure a pooled buffer is lent before [`Sealed::room`] is asked
    /// (by code that cannot reach the pool then).
    pub fn lend(&mut self, pool: &mut BufPool) {
        if self.buf.is_none() {
            self.buf = Some(pool.checkout(0));
        }
    }

    /// Room for `n` more bytes at the end (call [`Sealed::lend`] first):
    /// returns it and where it starts; [`Sealed::commit`] says how much of
    /// it was used. Written bytes are dropped from the front first.
    pub fn room(&mut self, n: usize) -> (&mut [u8], usize) {
        let buf = self.buf.get_or_insert_with(Vec::new);
        if self.sent > 0 {
            buf.drain(..self.sent);
            self.sent = 0;
        }
        let start = buf.len();
        // Exactly: a buffer never outgrows what it is asked to hold.
        buf.reserve_exact(n);
        buf.resize(start + n, 0);
        (&mut buf[start..], start)
    }

    /// Keeps `used` bytes of the room that starts at `start`.
    pub fn commit(&mut self, start: usize, used: usize) {
        if let Some(buf) = self.buf.as_mut() {
            buf.truncate(start + used);
        }
    }

    /// Gives the buffer back when nothing is pending.
    pub fn settle(&mut self, pool: &mut BufPool) {
        if self.pending() == 0 {
            self.release(pool);
        }
    }

    /// Keeps `bytes` (sealed records the socket did not take) after the
    /// pending ones.
    pub fn push(&mut self, bytes: &[u8], pool: &mut BufPool) {
        if bytes.is_empty() {
            return;
        }
        if self.buf.is_none() {
            self.buf = Some(pool.checkout_large(bytes.len()));
        }
        let (room, start) = self.room(bytes.len());
        room.copy_from_slice(bytes);
        self.commit(start, bytes.len());
    }

    /// Writes until nothing is pending (true) or the socket would block.
    pub fn write_to(&mut self, sock: &mut impl Write, pool: &mut BufPool) -> io::Result<bool> {
        while let Some(buf) = self.buf.as_ref() {
            let sent = self.sent;
            if sent == buf.len() {
                self.release(pool);
                break;
            }
            match retry(|| sock.write(&buf[sent..]))? {
                Some(0) => return Err(io::ErrorKind::WriteZero.into()),
                Some(n) => self.sent += n,
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    pub fn release(&mut self, pool: &mut BufPool) {
        if let Some(buf) = self.buf.take() {
            pool.checkin(buf);
        }
        self.sent = 0;
    }
}

/// Copies one handshake record (or alert) rustls made into `sealed`.
pub fn seal_handshake(
    sealed: &mut Sealed,
    encode: &mut EncodeTlsData<'_, ServerConnectionData>,
    pool: &mut BufPool,
) -> Result<(), String> {
    let required = match encode.encode(&mut []) {
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            required_size
        }
        Err(e) => return Err(e.to_string()),
    };
    if sealed.pending() + required > SEALED_LIMIT {
        return Err(format!(
            "more than {SEALED_LIMIT} bytes of TLS records unread by the peer"
        ));
    }
    sealed.lend(pool);
    let (room, start) = sealed.room(required);
    let used = encode.encode(room);
    sealed.commit(start, *used.as_ref().unwrap_or(&0));
    sealed.settle(pool);
    used.map(drop).map_err(|e| e.to_string())
}

/// Runs `seal` on `guess` bytes of room in `sealed`, or on the room it asks
/// for if that was too little.
pub fn seal_with(
    sealed: &mut Sealed,
    guess: usize,
    mut seal: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> io::Result<()> {
    let (room, start) = sealed.room(guess);
    match seal(room) {
        Ok(used) => {
            sealed.commit(start, used);
            Ok(())
        }
        Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
            sealed.commit(start, 0);
            let (room, start) = sealed.room(required_size);
            let used = seal(room);
            sealed.commit(start, *used.as_ref().unwrap_or(&0));
            used.map(drop).map_err(|e| io::Error::other(e.to_string()))
        }
        Err(e) => {
            sealed.commit(start, 0);
            Err(io::Error::other(e.to_string()))
        }
    }
}

/// What seals an established session's plaintext: rustls (TLS 1.2, or
/// AES-128), or our record layer with the AEAD built for this pass.
pub enum Sealer<'c> {
    Rustls(WriteTraffic<'c, ServerConnectionData>),
    Records {
        layer: &'c mut RecordLayer,
        aead: Box<dyn MessageEncrypter>,
    },
}

/// Seals queued plaintext into `staging` (shared, at least
/// [`BUFFER_LIMIT`] long) and writes it: only what the socket does not
/// take is copied into `sealed`.
pub fn seal_and_send(
    sealer: Sealer<'_>,
    sock: &mut impl Write,
    out: &mut OutQueue,
    pool: &mut BufPool,
    staging: &mut [u8],
    sealed: &mut Sealed,
) -> io::Result<()> {
    let before = out.queued();
    let mut sink = Plaintext {
        sealer,
        staging: &mut *staging,
        len: 0,
    };
    out.write_to(&mut sink, pool)?;
    let len = sink.len;
    if out.queued() == before {
        return Err(io::Error::other("TLS: no plaintext could be sealed"));
    }
    let sent = write_some(sock, &staging[..len])?;
    sealed.push(&staging[sent..len], pool);
    Ok(())
}

/// Writes as much of `bytes` as the socket takes now.
fn write_some(sock: &mut impl Write, bytes: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < bytes.len() {
        match retry(|| sock.write(&bytes[sent..]))? {
            Some(0) => return Err(io::ErrorKind::WriteZero.into()),
            Some(n) => sent += n,
            None => break,
        }
    }
    Ok(sent)
}

/// The plaintext side of an established session as a `Write`: what is
/// written is sealed into `staging` (a buffer shared by all connections,
/// written to the socket right after); full is `WouldBlock`.
struct Plaintext<'c, 's> {
    sealer: Sealer<'c>,
    staging: &'s mut [u8],
    /// Bytes of `staging` sealed so far.
    len: usize,
}

impl Plaintext<'_, '_> {
    /// Plaintext that still fits once sealed, under [`BUFFER_LIMIT`].
    fn room(&self) -> usize {
        let free = BUFFER_LIMIT
            .min(self.staging.len())
            .saturating_sub(self.len);
        free.saturating_sub((free / MAX_PLAINTEXT + 1) * RECORD_OVERHEAD)
    }

    fn seal(&mut self, plain: &[u8]) -> io::Result<usize> {
        let room = &mut self.staging[self.len..];
        let sealed = match &mut self.sealer {
            Sealer::Rustls(traffic) => match traffic.encrypt(plain, room) {
                Ok(used) => used,
                // rustls had records of its own to put first (a key update).
                Err(EncryptError::InsufficientSize(_)) if self.len > 0 => {
                    return Err(io::ErrorKind::WouldBlock.into())
                }
                Err(e) => return Err(io::Error::other(e.to_string())),
            },
            Sealer::Records { layer, aead } => {
                // One record per call: the caller writes the rest again.
                let plain = &plain[..plain.len().min(MAX_PLAINTEXT)];
                if room.len() < layer.sealed_len(aead.as_ref(), plain.len()) {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                match layer.seal(aead, ContentType::ApplicationData, plain, room) {
                    Ok(0) => return Err(io::Error::other("TLS: the session is closed")),
                    Ok(used) => {
                        self.len += used;
                        return Ok(plain.len());
                    }
                    Err(fatal) => return Err(io::Error::other(fatal.reason)),
                }
            }
        };
        self.len += sealed;
        Ok(plain.len())
    }
}

impl Write for Plaintext<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let take = buf.len().min(self.room());
        if take == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.seal(&buf[..take])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
        if bufs.len() < 2 || first.len() >= COALESCE_BELOW {
            return self.write(first);
        }
        // Small frames (a batch, or broadcasts queued one after another):
        // one record for as many as fit, not one record each.
        let mut staging = [0u8; MAX_PLAINTEXT];
        let room = self.room().min(MAX_PLAINTEXT);
        let mut len = 0;
        for buf in bufs {
            let take = buf.len().min(room - len);
            staging[len..len + take].copy_from_slice(&buf[..take]);
            len += take;
            if len == room {
                break;
            }
        }
        if len == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.seal(&staging[..len])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_are_lent_only_while_pending() {
        let mut pool = BufPool::new(4);
        let mut sealed = Sealed::default();
        sealed.lend(&mut pool);
        let (room, start) = sealed.room(10);
        room[..4].copy_from_slice(b"abcd");
        sealed.commit(start, 4);
        sealed.settle(&mut pool);
        assert_eq!(sealed.pending(), 4);
        assert_eq!(pool.lent, 1);
        let mut sink = Vec::new();
        assert!(sealed.write_to(&mut sink, &mut pool).unwrap());
        assert_eq!(sink, b"abcd");
        assert_eq!(pool.lent, 0, "given back once written");
        sealed.lend(&mut pool);
        let (_, start) = sealed.room(8);
        sealed.commit(start, 0);
        sealed.settle(&mut pool);
        assert_eq!(pool.lent, 0, "an unused room is given back");
    }
}
