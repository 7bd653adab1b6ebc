//! The listening sockets, the accept loop, and the pure admission rule that
//! decides what a new client gets before a byte of its request is read.

use super::config::{ShellConfig, ACCEPTS_PER_PASS, MAX_HTTP_CONNS};
use super::conn::Serves;
use super::endpoint::LISTENER_BASE;
use super::fd_limit::{is_fd_limit, Spare};
use super::nonblocking::retry;
use log::warn;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use std::io;
use std::net::{IpAddr, SocketAddr};

/// The listeners, and what each (same index) serves.
#[derive(Default)]
pub struct Listeners {
    sockets: Vec<TcpListener>,
    serves: Vec<Serves>,
}

impl Listeners {
    /// Registers a listener under `LISTENER_BASE + index`.
    pub fn add(
        &mut self,
        registry: &Registry,
        mut listener: TcpListener,
        serves: Serves,
    ) -> io::Result<()> {
        let token = Token(LISTENER_BASE + self.sockets.len());
        registry.register(&mut listener, token, Interest::READABLE)?;
        self.sockets.push(listener);
        self.serves.push(serves);
        Ok(())
    }

    /// The WebSocket listeners also answer the HTTP endpoints.
    pub fn share_http_with_websocket(&mut self) {
        for serves in &mut self.serves {
            if *serves == Serves::WebSocket {
                *serves = Serves::Both;
            }
        }
    }

    /// Stops listening (shutdown): every listener is deregistered and closed.
    pub fn close_all(&mut self, registry: &Registry) {
        for listener in &mut self.sockets {
            let _ = registry.deregister(listener);
        }
        self.sockets.clear();
    }

    /// How many listeners are open.
    pub fn count(&self) -> usize {
        self.sockets.len()
    }

    /// Accepts up to `ACCEPTS_PER_PASS` clients of listener `index`.
    pub fn accept(
        &mut self,
        index: usize,
        mut on_accept: impl FnMut(TcpStream, SocketAddr, Serves),
    ) -> Pass {
        self.pass(index, |listener, serves| {
            take_one(listener, serves, &mut on_accept)
        })
    }

    /// At the descriptor limit: accepts up to `ACCEPTS_PER_PASS` waiting
    /// clients of listener `index` on the spare descriptor, each handed to
    /// `on_refused` (which answers and closes it before the spare is taken
    /// back). `Drained` when none is left waiting.
    pub fn refuse_on_spare(
        &mut self,
        index: usize,
        spare: &mut Spare,
        mut on_refused: impl FnMut(TcpStream, SocketAddr, Serves),
    ) -> Pass {
        self.pass(index, |listener, serves| {
            spare
                .lend(|| take_one(listener, serves, &mut on_refused))
                .unwrap_or(Some(Pass::OutOfDescriptors))
        })
    }

    /// Runs `step` on listener `index` up to `ACCEPTS_PER_PASS` times, until
    /// it says how the pass ends.
    fn pass(
        &self,
        index: usize,
        mut step: impl FnMut(&TcpListener, Serves) -> Option<Pass>,
    ) -> Pass {
        let Some(listener) = self.sockets.get(index) else {
            return Pass::Drained;
        };
        let serves = self.serves[index];
        for _ in 0..ACCEPTS_PER_PASS {
            if let Some(end) = step(listener, serves) {
                return end;
            }
        }
        Pass::Capped
    }
}

/// How a pass over one listener ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Nothing more waits: the next event says when a client comes.
    Drained,
    /// `ACCEPTS_PER_PASS` reached: clients may still wait.
    Capped,
    /// `accept` failed for want of a file descriptor.
    OutOfDescriptors,
    /// `accept` failed otherwise (logged).
    Failed,
}

/// One `accept`, its client handed to `on_accept`; `Some` when the pass
/// ends (no client waits, or `accept` failed).
fn take_one(
    listener: &TcpListener,
    serves: Serves,
    on_accept: &mut impl FnMut(TcpStream, SocketAddr, Serves),
) -> Option<Pass> {
    loop {
        match retry(|| listener.accept()) {
            Ok(Some((sock, addr))) => {
                on_accept(sock, addr, serves);
                return None;
            }
            Ok(None) => return Some(Pass::Drained),
            // A client gone before it was accepted: take the next.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e) if is_fd_limit(&e) => return Some(Pass::OutOfDescriptors),
            Err(e) => {
                warn!("accept failed: {e}");
                return Some(Pass::Failed);
            }
        }
    }
}

/// How many connections are in use, for [`admission`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Counted against `max_connections`.
    pub admitted: usize,
    /// Open connections that only reach the HTTP endpoints.
    pub http_conns: usize,
}

/// What a newly accepted client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Read its request; it may upgrade (counted against `max_connections`).
    Handshake,
    /// Read its request for the HTTP endpoints only (`Http` or `HttpWhenFull`).
    Http(Serves),
    /// The HTTP endpoints already serve `MAX_HTTP_CONNS`: dropped.
    HttpBusy,
    /// Not in the allow list: 403 (or, on TLS, closed before the handshake).
    NotAllowed,
    /// `max_connections` in use: 503.
    Full,
}

impl Admission {
    /// Whether the server was found full (`None`: capacity was not consulted),
    /// for logging the change between accepting and refusing once.
    pub fn found_full(self) -> Option<bool> {
        match self {
            Admission::Handshake => Some(false),
            Admission::Full | Admission::Http(Serves::HttpWhenFull) => Some(true),
            Admission::Http(_) | Admission::HttpBusy | Admission::NotAllowed => None,
        }
    }
}

/// The checks of SPEC §2-§3 at accept, in order: the health listener's own
/// bound, the allow list, then `max_connections` (503 exactly while that
/// many are in use, while a shared listener still answers health checks).
pub fn admission(ip: IpAddr, serves: Serves, cfg: &ShellConfig, counts: Counts) -> Admission {
    let http_room = counts.http_conns < MAX_HTTP_CONNS;
    if serves == Serves::Http {
        return if http_room {
            Admission::Http(Serves::Http)
        } else {
            Admission::HttpBusy
        };
    }
    if !cfg.allow.allows(ip) {
        return Admission::NotAllowed;
    }
    let full = counts.admitted >= cfg.max_connections;
    match (full, serves) {
        (false, _) => Admission::Handshake,
        (true, Serves::Both) if http_room => Admission::Http(Serves::HttpWhenFull),
        (true, _) => Admission::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::parse_allowed_ips;

    fn cfg(max_connections: usize, allow: crate::settings::IpAllowList) -> ShellConfig {
        ShellConfig {
            max_connections,
            allow,
            ..ShellConfig::for_tests()
        }
    }

    fn counts(admitted: usize, http_conns: usize) -> Counts {
        Counts {
            admitted,
            http_conns,
        }
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const AWAY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn admits_until_max_connections_then_refuses_with_503() {
        let c = cfg(2, parse_allowed_ips("*").unwrap());
        let ws = Serves::WebSocket;
        assert_eq!(admission(HOME, ws, &c, counts(0, 0)), Admission::Handshake);
        assert_eq!(admission(HOME, ws, &c, counts(1, 0)), Admission::Handshake);
        assert_eq!(admission(HOME, ws, &c, counts(2, 0)), Admission::Full);
        assert_eq!(Admission::Full.found_full(), Some(true));
        assert_eq!(Admission::Handshake.found_full(), Some(false));
    }

    #[test]
    fn a_shared_listener_still_answers_health_checks_when_full() {
        let c = cfg(1, parse_allowed_ips("*").unwrap());
        let both = Serves::Both;
        assert_eq!(
            admission(HOME, both, &c, counts(0, 0)),
            Admission::Handshake
        );
        assert_eq!(
            admission(HOME, both, &c, counts(1, 0)),
            Admission::Http(Serves::HttpWhenFull)
        );
        let busy = counts(1, MAX_HTTP_CONNS);
        assert_eq!(admission(HOME, both, &c, busy), Admission::Full);
    }

    #[test]
    fn the_health_listener_has_its_own_bound_and_ignores_the_allow_list() {
        let c = cfg(0, parse_allowed_ips("127.0.0.1").unwrap());
        let http = Serves::Http;
        assert_eq!(
            admission(AWAY, http, &c, counts(0, 0)),
            Admission::Http(http)
        );
        let busy = counts(0, MAX_HTTP_CONNS);
        assert_eq!(admission(HOME, http, &c, busy), Admission::HttpBusy);
        assert_eq!(Admission::HttpBusy.found_full(), None);
    }

    #[test]
    fn the_allow_list_comes_before_capacity() {
        let c = cfg(0, parse_allowed_ips("127.0.0.1").unwrap());
        let ws = Serves::WebSocket;
        assert_eq!(admission(AWAY, ws, &c, counts(0, 0)), Admission::NotAllowed);
        assert_eq!(admission(HOME, ws, &c, counts(0, 0)), Admission::Full);
        assert_eq!(Admission::NotAllowed.found_full(), None);
    }
}
