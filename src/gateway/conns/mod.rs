//! The set of client connections: the slab, the buffer pool, the timer
//! wheel, the per-address table and the flush of queued output.
//!
//! `Conns` is apart from the poll loop (`Server`), which holds it beside the
//! core (`App`): every method that may reach the core takes `app` and `now`
//! as parameters. Driving contract, per poll pass: `on_accept` and
//! `on_readable` for ready sources, `mark_dirty` for writable ones, then
//! `run_timers`, then `flush_dirty` (which writes everything queued).

mod admit;
mod compress;
mod deadlines;
mod http_wait;
mod ingress;
mod read;
mod viewer;
mod ws;

pub use deadlines::{open_timer, wake_at, OpenTimer};

use super::accept::{admission, Admission};
use super::app::App;
use super::auth_proxy::SharedProxyLink;
use super::config::{ShellConfig, READ_CHUNK, REFUSAL_LINGER_MS, REFUSAL_RESERVE};
use super::conn::{Conn, Serves, Stage};
use super::endpoint::Mail;
use super::held::{Held, HeldTable};
use super::metrics::{AcceptError, RefusalReason, ShellMetrics};
use super::pool::BufPool;
use super::timer::{Entry, TimerWheel};
use super::tls::{self, TlsState};
use crate::proto::client_id::ClientId;
use crate::proto::handshake::{self, Refusal};
use crate::proto::limits::IpTable;
use crate::proto::Now;
use crate::settings::canonical;
use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::time::Instant;

pub struct Conns {
    slab: slab::Slab<Conn>,
    /// The poll's registry (a clone), for this set's sockets.
    registry: Registry,
    cfg: ShellConfig,
    pool: BufPool,
    wheel: TimerWheel,
    ip_table: IpTable,
    scratch: Vec<u8>,
    /// Encrypted bytes read from one TLS socket (a second shared buffer:
    /// `scratch` receives their plaintext).
    tls_in: Vec<u8>,
    dirty: Vec<usize>,
    due: Vec<Entry>,
    serial: u64,
    /// Connections counted against `max_connections`.
    admitted: usize,
    /// Full: new clients get 503 (the change is logged once).
    refusing: bool,
    /// Open connections that only reach the HTTP endpoints.
    http_conns: usize,
    /// Handshakes and HTTP connections by address and age, for admission.
    held: HeldTable,
    troubles: admit::Troubles,
    /// The listener's TLS certificate (`None`: plain ws).
    tls: Option<TlsState>,
    metrics: ShellMetrics,
    compression: compress::Compression,
    /// Sockets closed since start: a change tells a listener paused at the
    /// descriptor limit that one was freed.
    closed: u64,
    start: Instant,
    /// What the core sent bridged hosts, for the loop to hand on.
    mail: Mail,
    /// The connect proxy's jobs and verdicts (`None`: no proxy configured).
    proxy: Option<SharedProxyLink>,
}

impl Conns {
    pub fn new(registry: Registry, cfg: ShellConfig, start: Instant) -> Conns {
        Conns {
            slab: slab::Slab::with_capacity(cfg.socket_capacity().min(1 << 16)),
            registry,
            ip_table: IpTable::new((cfg.max_connections * 4).max(4096)),
            cfg,
            pool: BufPool::new(256),
            wheel: TimerWheel::default(),
            scratch: vec![0; READ_CHUNK],
            tls_in: Vec::new(),
            dirty: Vec::new(),
            due: Vec::new(),
            serial: 0,
            admitted: 0,
            refusing: false,
            http_conns: 0,
            held: HeldTable::default(),
            troubles: admit::Troubles::default(),
            tls: None,
            metrics: ShellMetrics::default(),
            compression: Default::default(),
            closed: 0,
            start,
            mail: Mail::default(),
            proxy: None,
        }
    }

    pub fn cfg(&self) -> &ShellConfig {
        &self.cfg
    }

    /// SIGHUP: new limits and lists apply from the next event on.
    pub fn reconfigure(&mut self, cfg: ShellConfig) {
        self.cfg = cfg;
    }

    pub fn tls(&self) -> Option<&TlsState> {
        self.tls.as_ref()
    }

    pub fn tls_mut(&mut self) -> Option<&mut TlsState> {
        self.tls.as_mut()
    }

    pub fn set_tls(&mut self, tls: Option<TlsState>) {
        self.tls = tls;
    }

    /// Applies the core's queued actions (after an endpoint called it).
    pub fn apply_core(&mut self, app: &mut App, now: Now) {
        self.apply_outbox(app, now);
        self.apply_proxy_verdicts(app, now);
        self.apply_http_replies(app, now);
    }

    /// Handshakes without a token go to the connect proxy through `link`.
    pub fn set_proxy(&mut self, link: SharedProxyLink) {
        self.proxy = Some(link);
    }

    /// Takes what the core sent bridged hosts since the last call.
    pub fn take_mail(&mut self) -> Mail {
        std::mem::take(&mut self.mail)
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Sockets closed since start (see `fd_limit::Pause`).
    pub fn closed(&self) -> u64 {
        self.closed
    }

    /// Counts a failed `accept` for `/metrics`.
    pub fn note_accept_error(&mut self, error: AcceptError) {
        self.metrics.accept_errors[error as usize] += 1;
    }

    /// A client accepted on the spare descriptor at the descriptor limit:
    /// 503 at once (TLS: closed), so that the descriptor is spare again.
    pub fn refuse_at_fd_limit(&mut self, sock: TcpStream, addr: SocketAddr, serves: Serves) {
        self.metrics.tcp_accepted += 1;
        self.metrics.refused(RefusalReason::FdLimit);
        debug!("refused {}: out of file descriptors", addr.ip());
        if self.tls.is_some() && serves != Serves::Http {
            return;
        }
        let response = handshake::refusal_response(Refusal::Unavailable, "out of file descriptors");
        self.answer_and_drop(sock, response.as_bytes());
    }

    /// Answers a socket that gets no slot, best effort: the answer, the write
    /// side shut, and what it already sent read and discarded (closing with
    /// unread input would reset the answer away), then closed.
    fn answer_and_drop(&mut self, mut sock: TcpStream, response: &[u8]) {
        let _ = sock.write(response);
        let _ = sock.shutdown(Shutdown::Write);
        let _ = sock.read(&mut self.scratch);
        self.closed += 1;
    }

    /// Shutdown: open WebSockets get a 1001 close, handshakes are dropped,
    /// closing and refused connections finish as they are.
    pub fn close_all(&mut self, app: &mut App, now: Now) {
        let keys: Vec<usize> = self.slab.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.slab[key].stage {
                Stage::Open { .. } => self.start_close(key, 1001, "server shutting down", app, now),
                Stage::Handshake { .. } | Stage::Awaiting { .. } => self.remove(key, app, now),
                Stage::Closing { .. } | Stage::Refusing { .. } => {}
            }
        }
    }

    /// A client from a listener that serves `serves`: admitted, answered, or dropped.
    pub fn on_accept(
        &mut self,
        sock: TcpStream,
        addr: SocketAddr,
        serves: Serves,
        app: &App,
        now: Now,
    ) {
        let ip = canonical(addr.ip());
        let _ = sock.set_nodelay(true);
        self.metrics.tcp_accepted += 1;
        let decision = admission(ip, serves, &self.cfg, self.counts_for(ip));
        if let Some(full) = decision.found_full() {
            self.note_full(full);
        }
        match decision {
            Admission::EvictForHandshake(_) | Admission::Handshake => {
                if let Admission::EvictForHandshake(scope) = decision {
                    self.evict_oldest(Held::Handshake, scope, ip, now.ms);
                }
                let stage = Stage::Handshake {
                    deadline_ms: now.ms + self.cfg.handshake_timeout_ms,
                };
                if let Some(key) = self.insert(sock, ip, stage, true, now) {
                    self.admitted += 1;
                    self.slab[key].serves = serves;
                    self.hold(key, Held::Handshake);
                    self.schedule(key, app);
                }
            }
            Admission::EvictForHttp(serves, scope) => {
                self.evict_oldest(Held::Http, scope, ip, now.ms);
                self.accept_http(sock, ip, serves, app, now);
            }
            Admission::Http(serves) => self.accept_http(sock, ip, serves, app, now),
            Admission::HttpBusy => self.note_http_busy(ip, now.ms),
            Admission::HttpAddressBusy => self.note_http_address_busy(ip, now.ms),
            Admission::NotAllowed => {
                self.metrics.refused(RefusalReason::IpNotAllowed);
                if self.tls.is_some() {
                    // SPEC §2: a TLS listener closes without a handshake.
                    warn!(
                        "refused {ip}: not in server.websocket.auth.allowed_ip (closed before TLS)"
                    );
                } else {
                    warn!("refused {ip}: not in server.websocket.auth.allowed_ip");
                    self.refuse_new(
                        sock,
                        ip,
                        Refusal::Forbidden,
                        "address not allowed",
                        app,
                        now,
                    );
                }
            }
            Admission::Full => {
                self.metrics.refused(RefusalReason::ServerFull);
                self.refuse_new(
                    sock,
                    ip,
                    Refusal::Unavailable,
                    "server is full (limits.max_connections)",
                    app,
                    now,
                );
            }
        }
    }

    /// Logs the change between accepting and refusing (SPEC §3), once.
    fn note_full(&mut self, full: bool) {
        if full == self.refusing {
            return;
        }
        self.refusing = full;
        let max = self.cfg.max_connections;
        if full {
            warn!("limits.max_connections ({max}) reached: refusing new clients with 503");
        } else {
            info!(
                "accepting again: {} of {max} connections in use",
                self.admitted
            );
        }
    }

    /// A connection for the HTTP endpoints only, within its own bounds
    /// (and with a short deadline for its request).
    fn accept_http(&mut self, sock: TcpStream, ip: IpAddr, serves: Serves, app: &App, now: Now) {
        let stage = Stage::Handshake {
            deadline_ms: now.ms + self.cfg.http_head_timeout_ms(),
        };
        // A dedicated health listener is plain HTTP; the WebSocket one, TLS if set.
        let tls = serves != Serves::Http;
        if let Some(key) = self.insert(sock, ip, stage, tls, now) {
            let conn = &mut self.slab[key];
            conn.serves = serves;
            conn.admitted = false;
            self.http_conns += 1;
            self.hold(key, Held::Http);
            self.schedule(key, app);
        }
    }

    fn insert(
        &mut self,
        mut sock: TcpStream,
        ip: IpAddr,
        stage: Stage,
        tls: bool,
        now: Now,
    ) -> Option<usize> {
        if self.slab.len() >= self.cfg.socket_capacity() {
            return None;
        }
        let entry = self.slab.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.registry.register(&mut sock, Token(key), interest) {
            warn!("cannot register a connection from {ip}: {e}");
            return None;
        }
        let state = self.tls.as_ref().filter(|_| tls);
        let session = match state.map(TlsState::session).transpose() {
            Ok(session) => session.map(Box::new),
            Err(e) => {
                warn!("cannot start TLS for {ip}: {e}");
                let _ = self.registry.deregister(&mut sock);
                return None;
            }
        };
        self.serial += 1;
        let id = ClientId::new(self.serial, key).0;
        let mut conn = Conn::new(sock, id, ip, stage, now.ms);
        conn.interest = interest;
        conn.tls = session;
        entry.insert(conn);
        Some(key)
    }

    /// Answers a client refused before reading its request (403, 503).
    fn refuse_new(
        &mut self,
        sock: TcpStream,
        ip: IpAddr,
        refusal: Refusal,
        reason: &str,
        app: &App,
        now: Now,
    ) {
        let response = handshake::refusal_response(refusal, reason);
        let stage = Stage::refusing(now.ms + REFUSAL_LINGER_MS);
        // Refusals linger in their own slots (not admitted, not HTTP), so
        // that a burst of them never takes an admitted client's socket.
        let refusing = self
            .slab
            .len()
            .saturating_sub(self.admitted + self.http_conns);
        if refusing >= REFUSAL_RESERVE || self.slab.len() >= self.cfg.socket_capacity() {
            // No slot left even for a polite answer: best effort, then drop.
            if self.tls.is_none() {
                self.answer_and_drop(sock, response.as_bytes());
            }
            return;
        }
        if let Some(key) = self.insert(sock, ip, stage, true, now) {
            let conn = &mut self.slab[key];
            conn.out.push_copy(&mut self.pool, &[response.as_bytes()]);
            self.mark_dirty(key);
            self.schedule(key, app);
        }
    }

    /// Carries out what the core queued outside a connection's own call
    /// (an endpoint delivered to local sessions).
    pub fn apply_core_actions(&mut self, app: &mut App, now: Now) {
        self.apply_outbox(app, now);
    }

    pub fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.slab.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Writes what every connection marked dirty has queued.
    pub fn flush_dirty(&mut self, app: &mut App, now: Now) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for key in dirty.drain(..) {
            self.flush(key, app, now);
        }
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn flush(&mut self, key: usize, app: &mut App, now: Now) {
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        conn.dirty = false;
        let written = match conn.tls.as_deref_mut() {
            None => conn.out.write_to(&mut conn.sock, &mut self.pool),
            Some(session) => tls::flush(
                session,
                &mut conn.sock,
                &mut conn.out,
                &mut self.pool,
                &mut self.scratch,
            ),
        };
        match written {
            Ok(true) => match conn.stage {
                Stage::Closing {
                    peer_closed: true, ..
                } => {
                    if let Some(session) = conn.tls.as_deref_mut() {
                        let _ = tls::close_notify(session, &mut self.pool).and_then(|()| {
                            tls::write_records(session, &mut conn.sock, &mut self.pool)
                        });
                    }
                    return self.remove(key, app, now);
                }
                Stage::Refusing {
                    shut: false,
                    deadline_ms,
                    drained,
                } => {
                    // TLS: close_notify first (sent once), then shut.
                    let closed = match conn.tls.as_deref_mut() {
                        None => Ok(true),
                        Some(session) => {
                            tls::close_notify(session, &mut self.pool).and_then(|()| {
                                tls::write_records(session, &mut conn.sock, &mut self.pool)
                            })
                        }
                    };
                    match closed {
                        Ok(true) => {
                            let _ = conn.sock.shutdown(Shutdown::Write);
                            conn.stage = Stage::Refusing {
                                shut: true,
                                deadline_ms,
                                drained,
                            };
                        }
                        Ok(false) => {}
                        Err(e) => {
                            debug!("connection {key}: write error: {e}");
                            return self.remove(key, app, now);
                        }
                    }
                }
                _ => {}
            },
            Ok(false) => {}
            Err(e) => {
                debug!("connection {key}: write error: {e}");
                return self.remove(key, app, now);
            }
        }
        let wanted = conn.wanted_interest();
        if wanted != conn.interest {
            conn.interest = wanted;
            if let Err(e) = self.registry.reregister(&mut conn.sock, Token(key), wanted) {
                debug!("connection {key}: reregister failed: {e}");
                self.remove(key, app, now);
            }
        }
    }

    fn remove(&mut self, key: usize, app: &mut App, now: Now) {
        if !self.forget(key) {
            return;
        }
        if let App::Gateway(hub) = app {
            // Gone without a close handshake (a session already ended is a no-op).
            hub.disconnect(key, 1006, now);
        }
        self.apply_outbox(app, now);
    }

    /// Closes `key`'s socket and stops counting it anywhere in the shell;
    /// false when there was no such connection.
    fn forget(&mut self, key: usize) -> bool {
        let Some(mut conn) = self.slab.try_remove(key) else {
            return false;
        };
        if let Some(kind) = conn.held.take() {
            self.held.remove(kind, conn.ip, conn.id);
        }
        if conn.counted_ip {
            self.ip_table.closed(conn.ip);
        }
        if conn.admitted {
            self.admitted -= 1;
        }
        if conn.serves.http_only() {
            self.http_conns -= 1;
        }
        let _ = self.registry.deregister(&mut conn.sock);
        self.closed += 1;
        conn.release_all(&mut self.pool);
        true
    }
}
