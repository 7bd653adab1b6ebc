//! One client connection: its socket, its stage, and the bytes in flight.

use super::outqueue::OutQueue;
use super::pool::BufPool;
use crate::proto::frame::Decoder;
use mio::net::TcpStream;
use mio::Interest;
use rustls::ServerConnection;
use std::net::IpAddr;

/// Where a connection is in its life. Each stage says what its bytes mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the HTTP request head (until `deadline_ms`).
    Handshake,
    /// A WebSocket in use.
    Open,
    /// We sent a close frame, or answered the peer's: waiting for the peer's
    /// close frame (at most until `deadline_ms`), then dropping the socket.
    Closing { peer_closed: bool },
    /// An HTTP answer (refusal) is queued; once written, the write side is
    /// shut and reads are drained until EOF or `deadline_ms`.
    Refusing { shut: bool },
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
    /// Deadline of the current stage (handshake, close linger, refusal drain).
    pub deadline_ms: u64,
    pub last_rx_ms: u64,
    pub next_ping_ms: u64,
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
    /// The TLS session of a `wss` connection (`None`: plain ws, zero-copy path).
    pub tls: Option<Box<ServerConnection>>,
}

impl Conn {
    pub fn new(
        sock: TcpStream,
        id: u64,
        ip: IpAddr,
        stage: Stage,
        now_ms: u64,
        deadline_ms: u64,
    ) -> Conn {
        Conn {
            sock,
            id,
            ip,
            stage,
            serves: Serves::WebSocket,
            inbuf: None,
            decoder: Decoder::default(),
            out: OutQueue::default(),
            deadline_ms,
            last_rx_ms: now_ms,
            next_ping_ms: u64::MAX,
            timer_tick: u64::MAX,
            interest: Interest::READABLE,
            counted_ip: false,
            dirty: false,
            admitted: matches!(stage, Stage::Handshake),
            tls: None,
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
        self.out.clear(pool);
    }
}
