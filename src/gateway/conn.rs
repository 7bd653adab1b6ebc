//! One client connection: its socket, its stage, and the bytes in flight.

use super::held::Held;
use super::outqueue::OutQueue;
use super::pool::BufPool;
use super::tls::TlsSession;
use crate::proto::deflate::Agreed;
use crate::proto::frame::Decoder;
use crate::proto::handshake::Upgrade;
use mio::net::TcpStream;
use mio::Interest;
use std::net::IpAddr;

/// Bytes a refused client may send after its answer before it is dropped
/// (its request head, and some slack for a body it already sent).
pub const REFUSAL_DRAIN_BYTES: usize = 64 * 1024;

/// Where a connection is in its life. Each stage says what its bytes mean
/// and owns the deadline that ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the HTTP request head (until `deadline_ms`).
    Handshake { deadline_ms: u64 },
    /// An HTTP request whose answer waits for other cluster nodes (until
    /// `deadline_ms` at most); nothing more is read.
    Awaiting { deadline_ms: u64 },
    /// A WebSocket in use; a ping is due at `next_ping_ms`.
    Open { next_ping_ms: u64 },
    /// We sent a close frame, or answered the peer's: waiting for the peer's
    /// close frame (at most until `deadline_ms`), then dropping the socket.
    Closing { peer_closed: bool, deadline_ms: u64 },
    /// An HTTP answer (refusal) is queued; once written, the write side is
    /// shut and reads are drained (`drained` bytes so far) until EOF,
    /// `deadline_ms` or `REFUSAL_DRAIN_BYTES`, so that the client reads the
    /// answer instead of a reset.
    Refusing {
        shut: bool,
        deadline_ms: u64,
        drained: u32,
    },
}

impl Stage {
    /// A refusal just queued, to be drained until `deadline_ms` at most.
    pub fn refusing(deadline_ms: u64) -> Stage {
        Stage::Refusing {
            shut: false,
            deadline_ms,
            drained: 0,
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self, Stage::Open { .. })
    }

    /// The fixed end of a stage that has one (`None`: an open WebSocket,
    /// whose wake-up follows its traffic).
    pub fn deadline_ms(&self) -> Option<u64> {
        match *self {
            Stage::Handshake { deadline_ms }
            | Stage::Awaiting { deadline_ms }
            | Stage::Closing { deadline_ms, .. }
            | Stage::Refusing { deadline_ms, .. } => Some(deadline_ms),
            Stage::Open { .. } => None,
        }
    }

    /// A closing connection whose peer is done (closed, or failed): what
    /// follows is no longer read as frames. Other stages stay as they are.
    pub fn peer_done(self) -> Stage {
        match self {
            Stage::Closing { deadline_ms, .. } => Stage::Closing {
                peer_closed: true,
                deadline_ms,
            },
            other => other,
        }
    }

    /// A refusing connection after `n` more bytes were read and discarded;
    /// `None` once it has sent more than `REFUSAL_DRAIN_BYTES` (it is then
    /// dropped). Other stages stay as they are.
    pub fn drained(self, n: usize) -> Option<Stage> {
        match self {
            Stage::Refusing {
                shut,
                deadline_ms,
                drained,
            } => {
                let drained = u32::try_from(n).ok()?.checked_add(drained)?;
                (drained as usize <= REFUSAL_DRAIN_BYTES).then_some(Stage::Refusing {
                    shut,
                    deadline_ms,
                    drained,
                })
            }
            other => Some(other),
        }
    }
}

/// What a connection may ask for, from the listener that accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    /// The WebSocket listener: plain requests get 426.
    WebSocket,
    /// The WebSocket listener shared with the HTTP endpoints.
    Both,
    /// The health listener: the HTTP endpoints only.
    Http,
    /// A shared listener while `max_connections` is reached: the HTTP
    /// endpoints still answer, upgrades get 503.
    HttpWhenFull,
}

impl Serves {
    /// Counted among HTTP-only connections rather than `max_connections`.
    pub fn http_only(self) -> bool {
        matches!(self, Serves::Http | Serves::HttpWhenFull)
    }
}

pub struct Conn {
    pub sock: TcpStream,
    pub id: u64,
    pub ip: IpAddr,
    pub stage: Stage,
    pub serves: Serves,
    /// Bytes received and not yet consumed (a partial request head or frame).
    pub inbuf: Option<Vec<u8>>,
    pub decoder: Decoder,
    pub out: OutQueue,
    pub last_rx_ms: u64,
    /// The tick of this connection's authoritative timer entry (`u64::MAX`: none).
    pub timer_tick: u64,
    /// Interest registered with the poller.
    pub interest: Interest,
    /// Counted in the per-address table of open WebSockets.
    pub counted_ip: bool,
    /// Queued output not yet tried on the socket.
    pub dirty: bool,
    /// Counted against `max_connections` (not a refusal).
    pub admitted: bool,
    /// Counted in the accept-time table (`Conns::held`) as this kind.
    pub held: Option<Held>,
    /// The TLS session of a `wss` connection (`None`: plain ws, zero-copy path).
    pub tls: Option<Box<TlsSession>>,
    /// An upgrade held for the connect proxy's verdict.
    pub proxied: Option<Box<Upgrade>>,
    /// permessage-deflate as negotiated (`None`: messages go uncompressed).
    pub deflate: Option<Agreed>,
}

impl Conn {
    pub fn new(sock: TcpStream, id: u64, ip: IpAddr, stage: Stage, now_ms: u64) -> Conn {
        Conn {
            sock,
            id,
            ip,
            stage,
            serves: Serves::WebSocket,
            inbuf: None,
            decoder: Decoder::default(),
            out: OutQueue::default(),
            last_rx_ms: now_ms,
            timer_tick: u64::MAX,
            interest: Interest::READABLE,
            counted_ip: false,
            dirty: false,
            admitted: matches!(stage, Stage::Handshake { .. }),
            held: None,
            tls: None,
            proxied: None,
            deflate: None,
        }
    }

    /// The interest the stage and the queue call for (derived, never tracked by hand).
    pub fn wanted_interest(&self) -> Interest {
        let tls_pending = self.tls.as_ref().is_some_and(|tls| tls.wants_write());
        if self.out.is_empty() && !tls_pending {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        }
    }

    /// Returns idle buffers to the pool.
    pub fn release_idle_buffers(&mut self, pool: &mut BufPool) {
        if self.inbuf.as_ref().is_some_and(Vec::is_empty) {
            if let Some(buf) = self.inbuf.take() {
                pool.checkin(buf);
            }
        }
        self.out.release(pool);
    }

    pub fn release_all(&mut self, pool: &mut BufPool) {
        if let Some(buf) = self.inbuf.take() {
            pool.checkin(buf);
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.release(pool);
        }
        self.out.clear(pool);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_peer_keeps_the_closing_deadline_and_nothing_else_changes() {
        let closing = Stage::Closing {
            peer_closed: false,
            deadline_ms: 2_000,
        };
        assert_eq!(
            closing.peer_done(),
            Stage::Closing {
                peer_closed: true,
                deadline_ms: 2_000
            }
        );
        let open = Stage::Open { next_ping_ms: 9 };
        assert_eq!(open.peer_done(), open);
        assert!(open.is_open() && open.deadline_ms().is_none());
        assert_eq!(closing.deadline_ms(), Some(2_000));
        assert_eq!(Stage::Handshake { deadline_ms: 5 }.deadline_ms(), Some(5));
    }

    #[test]
    fn a_refused_client_is_drained_up_to_a_bound_then_dropped() {
        let refusing = Stage::Refusing {
            shut: true,
            deadline_ms: 1_000,
            drained: 0,
        };
        let after_head = refusing.drained(300).expect("a request head is drained");
        assert_eq!(
            after_head,
            Stage::Refusing {
                shut: true,
                deadline_ms: 1_000,
                drained: 300
            }
        );
        let at_bound = refusing.drained(REFUSAL_DRAIN_BYTES);
        assert!(at_bound.is_some(), "exactly the bound is still drained");
        assert_eq!(at_bound.and_then(|s| s.drained(1)), None);
        assert_eq!(refusing.drained(usize::MAX), None);
        let open = Stage::Open { next_ping_ms: 9 };
        assert_eq!(open.drained(1 << 30), Some(open));
    }
}
