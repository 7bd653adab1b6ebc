//! What the read pass hands a session (one read's bytes, consumed from
//! the front) and what it gets back, for both the rustls and the record
//! layer paths.

/// What one step of feeding a TLS connection gave.
#[derive(Debug, PartialEq, Eq)]
pub enum TlsRead {
    /// This many plaintext bytes are at the front of the scratch buffer.
    Plain(usize),
    /// The input is used up (but for a partial record, to hold) and no
    /// plaintext is left: read the socket again.
    WouldBlock,
    /// The peer closed (close_notify).
    Closed,
    /// A TLS protocol error (junk, a bad handshake): any alert is sealed
    /// and should be written before the socket is dropped.
    Failed(String),
}

/// The bytes of one read (after those held since the last), consumed from
/// the front as rustls is done with them.
pub struct Input<'a> {
    buf: &'a mut [u8],
    start: usize,
}

impl<'a> Input<'a> {
    pub fn new(buf: &'a mut [u8]) -> Input<'a> {
        Input { buf, start: 0 }
    }

    /// What rustls has not discarded: a partial record (or handshake
    /// message) to hold until the next read.
    pub fn rest(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub(super) fn unprocessed(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..]
    }

    pub(super) fn discard(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
    }
}

pub(super) fn plain_or(filled: usize, otherwise: TlsRead) -> TlsRead {
    if filled > 0 {
        TlsRead::Plain(filled)
    } else {
        otherwise
    }
}
