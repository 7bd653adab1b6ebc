//! The listening sockets, the accept loop, and the pure admission rule that
//! decides what a new client gets before a byte of its request is read.

use super::config::{
    ShellConfig, ACCEPTS_PER_PASS, MAX_HTTP_CONNS, MAX_HTTP_CONNS_PER_IP, MIN_HANDSHAKES_PER_IP,
};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Counted against `max_connections`.
    pub admitted: usize,
    /// Open connections that only reach the HTTP endpoints.
    pub http_conns: usize,
    /// Handshakes in progress (among `admitted`): in all, and from the
    /// new client's address.
    pub handshakes: usize,
    pub handshakes_from_ip: usize,
    /// HTTP connections still reading their request (the ones that may be
    /// evicted), and HTTP connections from the new client's address: all,
    /// and still reading.
    pub http_incomplete: usize,
    pub http_from_ip: usize,
    pub http_incomplete_from_ip: usize,
}

/// Whose oldest incomplete connection is evicted for a new client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The new client's address holds as many as it may.
    Address,
    /// They fill the server (or the HTTP slots).
    All,
}

/// What a newly accepted client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Read its request; it may upgrade (counted against `max_connections`).
    Handshake,
    /// The address's handshakes in progress are at [`handshakes_per_ip`]
    /// (`Scope::Address`: its oldest is dropped), or `max_connections` is
    /// reached and some of it is handshakes (`Scope::All`: the oldest of
    /// all is dropped); then as `Handshake`.
    EvictForHandshake(Scope),
    /// Read its request for the HTTP endpoints only (`Http` or `HttpWhenFull`).
    Http(Serves),
    /// The address's HTTP connections are at `MAX_HTTP_CONNS_PER_IP`, or
    /// the HTTP slots are full: the oldest HTTP connection still reading its
    /// request (of the address, or of all) is dropped, then as `Http`.
    EvictForHttp(Serves, Scope),
    /// The HTTP endpoints already serve `MAX_HTTP_CONNS`, none of them
    /// still reading: dropped.
    HttpBusy,
    /// This address holds `MAX_HTTP_CONNS_PER_IP` HTTP connections, none
    /// of them still reading: dropped.
    HttpAddressBusy,
    /// Not in the allow list: 403 (or, on TLS, closed before the handshake).
    NotAllowed,
    /// `max_connections` in use: 503.
    Full,
}

impl Admission {
    /// Whether the server was found full (`None`: capacity was not consulted,
    /// or made room), for logging the change between accepting and refusing once.
    pub fn found_full(self) -> Option<bool> {
        match self {
            Admission::Handshake => Some(false),
            Admission::Full | Admission::Http(Serves::HttpWhenFull) => Some(true),
            Admission::Http(_)
            | Admission::EvictForHandshake(_)
            | Admission::EvictForHttp(..)
            | Admission::HttpBusy
            | Admission::HttpAddressBusy
            | Admission::NotAllowed => None,
        }
    }
}

/// Handshakes one address may have in progress at once: as many as it may
/// hold WebSockets, and never fewer than `MIN_HANDSHAKES_PER_IP` (room for
/// reconnects while old sockets close).
pub fn handshakes_per_ip(cfg: &ShellConfig) -> usize {
    (cfg.max_connections_per_ip as usize).max(MIN_HANDSHAKES_PER_IP)
}

/// The checks of SPEC §2-§3 at accept, in order: the health listener's own
/// bounds (per address, then in all), the allow list, the handshakes in
/// progress from the address, then `max_connections` (503 exactly while
/// that many are in use by other than handshakes, while a shared listener
/// still answers health checks). When an address's incomplete connections
/// reach its bound, or all of them fill their slots, the oldest incomplete
/// one makes room rather than the new client being refused (slowloris):
/// a client that sends its request at once is done before it is the oldest.
pub fn admission(ip: IpAddr, serves: Serves, cfg: &ShellConfig, counts: Counts) -> Admission {
    let http_room = counts.http_conns < MAX_HTTP_CONNS;
    let http_address_room = counts.http_from_ip < MAX_HTTP_CONNS_PER_IP;
    if serves == Serves::Http {
        let http = Serves::Http;
        return match (http_address_room, http_room) {
            (false, _) if counts.http_incomplete_from_ip > 0 => {
                Admission::EvictForHttp(http, Scope::Address)
            }
            (false, _) => Admission::HttpAddressBusy,
            (true, true) => Admission::Http(http),
            (true, false) if counts.http_incomplete > 0 => {
                Admission::EvictForHttp(http, Scope::All)
            }
            (true, false) => Admission::HttpBusy,
        };
    }
    if !cfg.allow.allows(ip) {
        return Admission::NotAllowed;
    }
    if counts.handshakes_from_ip >= handshakes_per_ip(cfg) {
        return Admission::EvictForHandshake(Scope::Address);
    }
    let full = counts.admitted >= cfg.max_connections;
    match (full, serves) {
        (false, _) => Admission::Handshake,
        (true, _) if counts.handshakes > 0 => Admission::EvictForHandshake(Scope::All),
        (true, Serves::Both) if http_room && http_address_room => {
            Admission::Http(Serves::HttpWhenFull)
        }
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
            ..Counts::default()
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

    #[test]
    fn one_address_may_have_only_so_many_handshakes_in_progress() {
        let mut c = cfg(100, parse_allowed_ips("*").unwrap());
        c.max_connections_per_ip = 2;
        assert_eq!(handshakes_per_ip(&c), MIN_HANDSHAKES_PER_IP);
        let ws = Serves::WebSocket;
        let from_ip = |n| Counts {
            admitted: n,
            handshakes: n,
            handshakes_from_ip: n,
            ..Counts::default()
        };
        let limit = MIN_HANDSHAKES_PER_IP;
        assert_eq!(
            admission(HOME, ws, &c, from_ip(limit - 1)),
            Admission::Handshake
        );
        // Its newest client is let in, its oldest handshake dropped.
        let own_oldest = Admission::EvictForHandshake(Scope::Address);
        assert_eq!(admission(HOME, ws, &c, from_ip(limit)), own_oldest);
        // The bound follows max_connections_per_ip above the minimum.
        c.max_connections_per_ip = 50;
        assert_eq!(
            admission(HOME, ws, &c, from_ip(limit)),
            Admission::Handshake
        );
        assert_eq!(admission(HOME, ws, &c, from_ip(50)), own_oldest);
        assert_eq!(own_oldest.found_full(), None);
    }

    #[test]
    fn handshakes_filling_the_server_make_room_for_a_new_client() {
        let c = cfg(4, parse_allowed_ips("*").unwrap());
        let full_of = |handshakes| Counts {
            admitted: 4,
            handshakes,
            ..Counts::default()
        };
        for serves in [Serves::WebSocket, Serves::Both] {
            assert_eq!(
                admission(AWAY, serves, &c, full_of(1)),
                Admission::EvictForHandshake(Scope::All)
            );
        }
        // Every slot an open WebSocket: 503 as before.
        let ws = Serves::WebSocket;
        assert_eq!(admission(AWAY, ws, &c, full_of(0)), Admission::Full);
        assert_eq!(Admission::EvictForHandshake(Scope::All).found_full(), None);
    }

    #[test]
    fn the_health_listener_is_bounded_per_address_and_evicts_when_full() {
        let c = cfg(10, parse_allowed_ips("*").unwrap());
        let http = Serves::Http;
        let mut counts = Counts {
            http_from_ip: MAX_HTTP_CONNS_PER_IP - 1,
            http_conns: MAX_HTTP_CONNS_PER_IP - 1,
            http_incomplete: MAX_HTTP_CONNS_PER_IP - 1,
            http_incomplete_from_ip: MAX_HTTP_CONNS_PER_IP - 1,
            ..Counts::default()
        };
        assert_eq!(admission(HOME, http, &c, counts), Admission::Http(http));
        // At its bound: its own oldest incomplete request makes room...
        counts.http_from_ip += 1;
        assert_eq!(
            admission(HOME, http, &c, counts),
            Admission::EvictForHttp(http, Scope::Address)
        );
        // ...and when all of its requests are answered, it waits.
        counts.http_incomplete_from_ip = 0;
        assert_eq!(
            admission(HOME, http, &c, counts),
            Admission::HttpAddressBusy
        );
        // Another address, with every slot taken: the oldest incomplete
        // request makes room; with none incomplete, the client is dropped.
        let others = Counts {
            http_conns: MAX_HTTP_CONNS,
            http_incomplete: 3,
            ..Counts::default()
        };
        assert_eq!(
            admission(AWAY, http, &c, others),
            Admission::EvictForHttp(http, Scope::All)
        );
        let answered = Counts {
            http_incomplete: 0,
            ..others
        };
        assert_eq!(admission(AWAY, http, &c, answered), Admission::HttpBusy);
        // A shared listener that is full applies the per-address bound too.
        let both = Serves::Both;
        let full = Counts {
            admitted: 10,
            http_from_ip: MAX_HTTP_CONNS_PER_IP,
            ..Counts::default()
        };
        assert_eq!(admission(HOME, both, &c, full), Admission::Full);
    }
}
