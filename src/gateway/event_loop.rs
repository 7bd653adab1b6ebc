//! One thread, one `mio::Poll`: accepts, reads, writes, timers and signals for
//! every connection. Decisions are the core's (`proto`); this moves bytes.

use super::conn::{Conn, Serves, Stage};
use super::http_api::{self, HttpAnswer, HttpRequest};
use super::metrics::{RefusalReason, ShellGauges, ShellMetrics};
use super::notify::{monotonic_usec, Notifier};
use super::outqueue::fits;
use super::pool::{BufPool, BUF_SIZE};
use super::timer::{Entry, TimerWheel};
use super::tls::{self, TlsRead, TlsState};
use crate::proto::auth::Identity;
use crate::proto::frame::{close_payload, FrameError, OutHeader, OutKind, WsEvent, MAX_HEADER};
use crate::proto::handshake::{self, BodyLength, Parsed, Refusal, Request, Upgrade};
use crate::proto::host::KEY_BITS;
use crate::proto::hub::{client_id_str, Action, Body, Hub, HubConfig};
use crate::proto::limits::IpTable;
use crate::proto::Now;
use crate::settings::IpAllowList;
use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes read per `read` call (one buffer shared by all connections).
const READ_CHUNK: usize = 64 * 1024;
/// Reads per connection per pass, so one busy client cannot starve the others.
const READS_PER_PASS: usize = 4;
/// Accepts per listener per pass.
const ACCEPTS_PER_PASS: usize = 128;
/// How long a peer has to answer our close frame (SPEC §4).
const CLOSE_LINGER_MS: u64 = 2_000;
/// How long a refused client has to read its HTTP answer.
const REFUSAL_LINGER_MS: u64 = 1_000;
/// Slots beyond `max_connections` for answering refusals politely.
const REFUSAL_RESERVE: usize = 64;
/// Connections served by the HTTP endpoints at once (beside `max_connections`,
/// so that health checks answer while the WebSocket side is full).
const MAX_HTTP_CONNS: usize = 32;

const SIGNAL: Token = Token(usize::MAX);
const LISTENER_BASE: usize = usize::MAX - 64;

/// What runs on top of the WebSocket layer.
pub enum App {
    Gateway(Box<Hub>),
    /// Echo every message back verbatim: for conformance tests and benchmarks.
    Echo,
}

/// The shell's settings (from `settings::Limits` and the auth block).
pub struct ShellConfig {
    pub max_connections: usize,
    pub max_connections_per_ip: u32,
    pub max_connects_per_ip_per_hour: u32,
    pub max_message_bytes: usize,
    pub max_outbound_bytes: usize,
    pub idle_timeout_ms: u64,
    pub ping_interval_ms: u64,
    pub handshake_timeout_ms: u64,
    pub allow: IpAllowList,
    pub allowed_origins: Vec<String>,
}

impl ShellConfig {
    /// Worst-case bytes one connection may hold: its state, its session in
    /// the core (identity, rooms, pending host requests), a partial frame
    /// plus one read, a reassembled message, and a full outbound queue.
    pub fn per_connection_ceiling(&self) -> usize {
        std::mem::size_of::<Conn>()
            + crate::proto::bounds::session_bytes_bound()
            + self.max_message_bytes
            + MAX_HEADER
            + READ_CHUNK
            + self.max_message_bytes
            + self.max_outbound_bytes
            + BUF_SIZE
    }

    /// `max_connections` connections of `ceiling` bytes each, plus what is
    /// not per connection (host roles; HTTP requests and refusals, each with
    /// a request head and body), in MiB.
    fn worst_case_mib(&self, ceiling: usize) -> u64 {
        let side_conn = std::mem::size_of::<Conn>()
            + 2 * (handshake::MAX_REQUEST_BYTES + http_api::MAX_BODY_BYTES)
            + BUF_SIZE;
        let shared = crate::proto::bounds::shared_bytes_bound()
            + (MAX_HTTP_CONNS + REFUSAL_RESERVE) * side_conn;
        (ceiling as u64 * self.max_connections as u64 + shared as u64) >> 20
    }

    /// Sockets held at most: `max_connections`, the slots for answering
    /// refusals, and the HTTP endpoints' own.
    fn socket_capacity(&self) -> usize {
        self.max_connections + REFUSAL_RESERVE + MAX_HTTP_CONNS
    }
}

/// What a SIGHUP reload applies: the shell's limits and lists, the core's
/// secrets and limits, and the log level.
pub struct Reloaded {
    pub shell: ShellConfig,
    pub hub: HubConfig,
    pub level: log::LevelFilter,
}

/// Re-reads the settings; an error keeps the running ones.
pub type Reloader = Box<dyn FnMut() -> Result<Reloaded, String>>;

#[derive(Debug, Clone, Copy)]
enum Ready {
    Conn(usize),
    Listener(usize),
}

pub struct Server {
    poll: Poll,
    listeners: Vec<TcpListener>,
    /// What each listener (same index) serves.
    listener_serves: Vec<Serves>,
    signals: Signals,
    conns: slab::Slab<Conn>,
    app: App,
    cfg: ShellConfig,
    pool: BufPool,
    wheel: TimerWheel,
    ip_table: IpTable,
    scratch: Vec<u8>,
    /// Sources that hit their per-pass cap and must be served again.
    ready_again: Vec<Ready>,
    dirty: Vec<usize>,
    due: Vec<Entry>,
    start: Instant,
    now: Now,
    serial: u64,
    /// Connections counted against `max_connections`.
    admitted: usize,
    /// Full: new clients get 503 (the change is logged once).
    refusing: bool,
    shutdown_deadline: Option<u64>,
    /// The listener's TLS certificate (`None`: plain ws).
    tls: Option<TlsState>,
    /// Encrypted bytes read from one TLS socket (a second shared buffer:
    /// `scratch` receives their plaintext).
    tls_in: Vec<u8>,
    reloader: Option<Reloader>,
    notifier: Notifier,
    next_watchdog_ms: Option<u64>,
    /// Open connections that only reach the HTTP endpoints.
    http_conns: usize,
    metrics: ShellMetrics,
}

fn clock(start: Instant) -> Now {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Now {
        ms: start.elapsed().as_millis() as u64,
        unix,
    }
}

/// IPv4-mapped IPv6 peers are treated as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Server {
    pub fn new(listeners: Vec<TcpListener>, app: App, cfg: ShellConfig) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listeners = listeners;
        for (i, listener) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(listener, Token(LISTENER_BASE + i), Interest::READABLE)?;
        }
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        poll.registry()
            .register(&mut signals, SIGNAL, Interest::READABLE)?;
        let ceiling = cfg.per_connection_ceiling();
        info!(
            "memory ceiling: {} connections x {} bytes = {} MiB worst case; an idle connection holds no buffer",
            cfg.max_connections,
            ceiling,
            cfg.worst_case_mib(ceiling)
        );
        let start = Instant::now();
        Ok(Server {
            poll,
            listener_serves: vec![Serves::WebSocket; listeners.len()],
            listeners,
            signals,
            conns: slab::Slab::with_capacity(cfg.socket_capacity().min(1 << 16)),
            app,
            ip_table: IpTable::new((cfg.max_connections * 4).max(4096)),
            cfg,
            pool: BufPool::new(256),
            wheel: TimerWheel::default(),
            scratch: vec![0; READ_CHUNK],
            ready_again: Vec::new(),
            dirty: Vec::new(),
            due: Vec::new(),
            start,
            now: clock(start),
            serial: 0,
            admitted: 0,
            refusing: false,
            shutdown_deadline: None,
            tls: None,
            tls_in: Vec::new(),
            reloader: None,
            notifier: Notifier::from_env(),
            next_watchdog_ms: None,
            http_conns: 0,
            metrics: ShellMetrics::default(),
        })
    }

    /// Serves TLS (wss) with this certificate; `None` keeps plain ws.
    pub fn with_tls(mut self, tls: Option<TlsState>) -> Server {
        if let Some(state) = &tls {
            let extra = tls::per_connection_ceiling();
            let ceiling = self.cfg.per_connection_ceiling() + extra;
            info!(
                "tls: certificate {} sha256 fingerprint {}",
                state.cert_path().display(),
                state.fingerprint()
            );
            info!(
                "tls memory ceiling: {} bytes of TLS state and buffers per connection; {} connections x {} bytes = {} MiB worst case",
                extra,
                self.cfg.max_connections,
                ceiling,
                self.cfg.worst_case_mib(ceiling)
            );
        }
        self.tls = tls;
        self
    }

    /// SIGHUP: new handshakes get the certificate now on disk; open sessions
    /// keep theirs. A pair that does not load leaves the old one in use.
    fn reload_tls(&mut self) {
        let Some(state) = &mut self.tls else {
            return;
        };
        match state.reload() {
            Ok(()) => info!(
                "tls: reloaded {}: sha256 fingerprint {}",
                state.cert_path().display(),
                state.fingerprint()
            ),
            Err(e) => warn!("tls: reload failed, keeping the current certificate: {e}"),
        }
    }

    /// Adds the health listener(s) of SPEC §7 to the same poll.
    pub fn add_http_listeners(&mut self, listeners: Vec<TcpListener>) -> io::Result<()> {
        for mut listener in listeners {
            let index = self.listeners.len();
            self.poll.registry().register(
                &mut listener,
                Token(LISTENER_BASE + index),
                Interest::READABLE,
            )?;
            self.listeners.push(listener);
            self.listener_serves.push(Serves::Http);
        }
        Ok(())
    }

    /// The WebSocket listeners also answer the HTTP endpoints (the health
    /// listener is configured on the same address and port).
    pub fn share_http_with_websocket(&mut self) {
        for serves in &mut self.listener_serves {
            if *serves == Serves::WebSocket {
                *serves = Serves::Both;
            }
        }
    }

    /// What SIGHUP calls to re-read the settings (without one, SIGHUP is ignored).
    pub fn set_reloader(&mut self, reloader: Reloader) {
        self.reloader = Some(reloader);
    }

    /// Runs until SIGTERM/SIGINT and every connection has been closed.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        self.notifier.ready();
        self.next_watchdog_ms = self.notifier.watchdog_interval_ms().map(|_| self.now.ms);
        loop {
            self.pet_watchdog();
            let again = std::mem::take(&mut self.ready_again);
            let timeout = if !again.is_empty() {
                Some(Duration::ZERO)
            } else if self.wheel.is_empty()
                && self.shutdown_deadline.is_none()
                && self.next_watchdog_ms.is_none()
            {
                None
            } else {
                let watchdog = self
                    .next_watchdog_ms
                    .map_or(u64::MAX, |at| at.saturating_sub(self.now.ms));
                Some(Duration::from_millis(
                    self.wheel
                        .until_next_tick(self.now.ms)
                        .min(100)
                        .min(watchdog),
                ))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.now = clock(self.start);
            for event in events.iter() {
                match event.token() {
                    SIGNAL => self.on_signal(),
                    Token(t) if t >= LISTENER_BASE => self.accept(t - LISTENER_BASE),
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(key);
                        }
                        if event.is_writable() {
                            self.mark_dirty(key);
                        }
                    }
                }
            }
            for ready in again {
                match ready {
                    Ready::Conn(key) => self.on_readable(key),
                    Ready::Listener(i) => self.accept(i),
                }
            }
            self.run_timers();
            self.flush_dirty();
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() || self.now.ms >= deadline {
                    info!("stopped");
                    return Ok(());
                }
            }
        }
    }

    /// `WATCHDOG=1` at half of systemd's `WATCHDOG_USEC`: the loop is alive.
    fn pet_watchdog(&mut self) {
        let (Some(at), Some(every)) = (self.next_watchdog_ms, self.notifier.watchdog_interval_ms())
        else {
            return;
        };
        if self.now.ms >= at {
            self.notifier.watchdog();
            self.next_watchdog_ms = Some(self.now.ms + every);
        }
    }

    fn on_signal(&mut self) {
        let (mut stop, mut reload) = (false, false);
        for signal in self.signals.pending() {
            match signal {
                SIGHUP => reload = true,
                _ => stop = true,
            }
        }
        if reload && self.shutdown_deadline.is_none() {
            self.reload();
        }
        if stop && self.shutdown_deadline.is_none() {
            info!("stopping: closing {} connections", self.conns.len());
            self.notifier.stopping();
            for listener in &mut self.listeners {
                let _ = self.poll.registry().deregister(listener);
            }
            self.listeners.clear();
            self.shutdown_deadline = Some(self.now.ms + CLOSE_LINGER_MS + 500);
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                match self.conns[key].stage {
                    Stage::Open => self.start_close(key, 1001, "server shutting down"),
                    Stage::Handshake => self.remove(key),
                    Stage::Closing { .. } | Stage::Refusing { .. } => {}
                }
            }
        }
    }

    /// SIGHUP: re-read the settings and apply what can change while running.
    fn reload(&mut self) {
        // The certificate and key files are read again in every mode.
        self.reload_tls();
        let Some(reloader) = self.reloader.as_mut() else {
            if self.tls.is_none() {
                info!("SIGHUP ignored: nothing to reload in this mode");
            }
            return;
        };
        self.notifier.reloading(monotonic_usec());
        match reloader() {
            Ok(reloaded) => {
                log::set_max_level(reloaded.level);
                if let App::Gateway(hub) = &mut self.app {
                    hub.reconfigure(reloaded.hub);
                }
                self.cfg = reloaded.shell;
                let ceiling = self.cfg.per_connection_ceiling();
                info!(
                    "memory ceiling now: {} connections x {} bytes = {} MiB worst case",
                    self.cfg.max_connections,
                    ceiling,
                    self.cfg.worst_case_mib(ceiling)
                );
            }
            Err(e) => warn!("reload failed, keeping the running settings: {e}"),
        }
        self.notifier.ready();
    }

    // ---------------------------------------------------------------- accept

    fn accept(&mut self, index: usize) {
        for _ in 0..ACCEPTS_PER_PASS {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            let serves = self.listener_serves[index];
            match listener.accept() {
                Ok((sock, addr)) => self.on_accept(sock, addr, serves),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of file descriptors and the like: try again next pass.
                    warn!("accept failed: {e}");
                    break;
                }
            }
        }
        self.ready_again.push(Ready::Listener(index));
    }

    fn on_accept(&mut self, sock: TcpStream, addr: SocketAddr, serves: Serves) {
        let ip = canonical(addr.ip());
        let _ = sock.set_nodelay(true);
        self.metrics.tcp_accepted += 1;
        if serves == Serves::Http {
            return self.accept_http(sock, ip, serves);
        }
        if !self.cfg.allow.allows(ip) {
            self.metrics.refused(RefusalReason::IpNotAllowed);
            if self.tls.is_some() {
                // SPEC §2: a TLS listener closes without a handshake.
                warn!("refused {ip}: not in server.websocket.auth.allowed_ip (closed before TLS)");
            } else {
                warn!("refused {ip}: not in server.websocket.auth.allowed_ip");
                self.refuse_new(sock, ip, Refusal::Forbidden, "address not allowed");
            }
            return;
        }
        let max = self.cfg.max_connections;
        // SPEC §3: 503 exactly while `max_connections` are in use.
        let full = self.admitted >= max;
        if full != self.refusing {
            self.refusing = full;
            if full {
                warn!("limits.max_connections ({max}) reached: refusing new clients with 503");
            } else {
                info!(
                    "accepting again: {} of {max} connections in use",
                    self.admitted
                );
            }
        }
        if full && serves == Serves::Both && self.http_conns < MAX_HTTP_CONNS {
            // Health checks still answer; an upgrade on it gets 503.
            return self.accept_http(sock, ip, Serves::HttpWhenFull);
        }
        if full {
            self.metrics.refused(RefusalReason::ServerFull);
            self.refuse_new(
                sock,
                ip,
                Refusal::Unavailable,
                "server is full (limits.max_connections)",
            );
            return;
        }
        let deadline = self.now.ms + self.cfg.handshake_timeout_ms;
        if let Some(key) = self.insert(sock, ip, Stage::Handshake, deadline, true) {
            self.admitted += 1;
            self.conns[key].serves = serves;
            self.schedule(key);
        }
    }

    /// A connection for the HTTP endpoints only, within its own bound.
    fn accept_http(&mut self, sock: TcpStream, ip: IpAddr, serves: Serves) {
        if self.http_conns >= MAX_HTTP_CONNS {
            warn!("refused {ip}: {MAX_HTTP_CONNS} HTTP requests already in progress");
            return;
        }
        let deadline = self.now.ms + self.cfg.handshake_timeout_ms;
        // A dedicated health listener is plain HTTP; the WebSocket one, TLS if set.
        let tls = serves != Serves::Http;
        if let Some(key) = self.insert(sock, ip, Stage::Handshake, deadline, tls) {
            let conn = &mut self.conns[key];
            conn.serves = serves;
            conn.admitted = false;
            self.http_conns += 1;
            self.schedule(key);
        }
    }

    fn insert(
        &mut self,
        mut sock: TcpStream,
        ip: IpAddr,
        stage: Stage,
        deadline_ms: u64,
        tls: bool,
    ) -> Option<usize> {
        if self.conns.len() >= self.cfg.socket_capacity() {
            return None;
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut sock, Token(key), interest)
        {
            warn!("cannot register a connection from {ip}: {e}");
            return None;
        }
        let state = self.tls.as_ref().filter(|_| tls);
        let session = match state.map(TlsState::session).transpose() {
            Ok(session) => session.map(Box::new),
            Err(e) => {
                warn!("cannot start TLS for {ip}: {e}");
                let _ = self.poll.registry().deregister(&mut sock);
                return None;
            }
        };
        self.serial += 1;
        let id = (self.serial << KEY_BITS) | key as u64;
        let mut conn = Conn::new(sock, id, ip, stage, self.now.ms, deadline_ms);
        conn.interest = interest;
        conn.tls = session;
        entry.insert(conn);
        Some(key)
    }

    /// Answers a client refused before reading its request (403, 503).
    fn refuse_new(&mut self, mut sock: TcpStream, ip: IpAddr, refusal: Refusal, reason: &str) {
        let response = handshake::refusal_response(refusal, reason);
        let deadline = self.now.ms + REFUSAL_LINGER_MS;
        if self.conns.len() >= self.cfg.socket_capacity() {
            // No slot left even for a polite answer: best effort, then drop.
            if self.tls.is_none() {
                let _ = sock.write(response.as_bytes());
            }
            return;
        }
        if let Some(key) = self.insert(sock, ip, Stage::Refusing { shut: false }, deadline, true) {
            let conn = &mut self.conns[key];
            conn.out.push_copy(&mut self.pool, &[response.as_bytes()]);
            self.mark_dirty(key);
            self.schedule(key);
        }
    }

    // ---------------------------------------------------------------- reading

    fn on_readable(&mut self, key: usize) {
        if self.conns.get(key).is_some_and(|c| c.tls.is_some()) {
            return self.on_readable_tls(key);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut pass_done = false;
        for _ in 0..READS_PER_PASS {
            let Some(conn) = self.conns.get_mut(key) else {
                pass_done = true;
                break;
            };
            match conn.sock.read(&mut scratch) {
                Ok(0) => {
                    self.on_eof(key);
                    pass_done = true;
                    break;
                }
                Ok(n) => {
                    conn.last_rx_ms = self.now.ms;
                    self.metrics.bytes_in += n as u64;
                    self.on_bytes(key, &mut scratch[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    pass_done = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("connection {key}: read error: {e}");
                    self.remove(key);
                    pass_done = true;
                    break;
                }
            }
        }
        self.scratch = scratch;
        if !pass_done {
            self.ready_again.push(Ready::Conn(key));
        }
    }

    /// Reads a TLS connection: one socket read of up to 64 KiB, fed to the
    /// session record by record; its plaintext goes to the same handlers as
    /// plain ws.
    fn on_readable_tls(&mut self, key: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut records = std::mem::take(&mut self.tls_in);
        records.resize(READ_CHUNK, 0);
        let mut pass_done = false;
        'reads: for _ in 0..READS_PER_PASS {
            let Some(conn) = self.conns.get_mut(key) else {
                pass_done = true;
                break;
            };
            let n = match conn.sock.read(&mut records) {
                Ok(0) => {
                    self.on_eof(key);
                    pass_done = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    pass_done = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("connection {key}: read error: {e}");
                    self.remove(key);
                    pass_done = true;
                    break;
                }
            };
            let mut input = &records[..n];
            loop {
                let Some(conn) = self.conns.get_mut(key) else {
                    pass_done = true;
                    break 'reads;
                };
                let Some(session) = conn.tls.as_deref_mut() else {
                    pass_done = true;
                    break 'reads;
                };
                match tls::feed(session, &mut input, &mut scratch) {
                    TlsRead::Plain(n) => {
                        conn.last_rx_ms = self.now.ms;
                        self.on_bytes(key, &mut scratch[..n]);
                    }
                    TlsRead::WouldBlock => break,
                    TlsRead::Closed => {
                        self.on_eof(key);
                        pass_done = true;
                        break 'reads;
                    }
                    TlsRead::Failed(reason) => {
                        debug!("connection {key} from {}: TLS failed: {reason}", conn.ip);
                        // Best effort: the alert rustls queued, then drop.
                        let _ = tls::write_records(session, &mut conn.sock);
                        self.remove(key);
                        pass_done = true;
                        break 'reads;
                    }
                }
            }
            // Handshake records to answer, or plaintext the handshake held.
            self.mark_dirty(key);
        }
        self.scratch = scratch;
        self.tls_in = records;
        if !pass_done {
            self.ready_again.push(Ready::Conn(key));
        }
    }

    fn on_eof(&mut self, key: usize) {
        if let Some(conn) = self.conns.get(key) {
            if conn.stage == Stage::Open {
                debug!(
                    "client {} disconnected without a close frame",
                    client_id_str(conn.id)
                );
            }
        }
        self.remove(key);
    }

    fn on_bytes(&mut self, key: usize, data: &mut [u8]) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        match conn.stage {
            Stage::Handshake => self.on_request_bytes(key, data),
            Stage::Open | Stage::Closing { peer_closed: false } => self.on_frame_bytes(key, data),
            // Done reading (the peer closed, or we failed the connection):
            // what follows is discarded, never parsed as frames.
            Stage::Closing { peer_closed: true } => {}
            // A refused client's request is read and discarded.
            Stage::Refusing { .. } => {}
        }
    }

    fn on_request_bytes(&mut self, key: usize, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut held = conn.inbuf.take();
        let bytes: &[u8] = match held.as_mut() {
            Some(buf) => {
                buf.extend_from_slice(data);
                buf
            }
            None => data,
        };
        match handshake::parse(bytes) {
            Parsed::Partial => {
                let buf = held.unwrap_or_else(|| {
                    let mut buf = self.pool.checkout(data.len());
                    buf.extend_from_slice(data);
                    buf
                });
                conn.inbuf = Some(buf);
            }
            Parsed::Invalid(refusal) => {
                if let Some(buf) = held {
                    self.pool.checkin(buf);
                }
                let reason = match refusal {
                    Refusal::HeadersTooLarge => "request head too large",
                    Refusal::UpgradeRequired => "only WebSocket version 13 is supported",
                    _ => "malformed WebSocket upgrade request",
                };
                self.refuse(key, refusal, reason);
            }
            Parsed::Complete(request, head_len) => {
                let body_len = match &request {
                    Request::Plain {
                        body: BodyLength::Bytes(n),
                        ..
                    } if conn.serves != Serves::WebSocket => *n,
                    _ => 0,
                };
                let received = bytes.len() - head_len;
                if body_len > http_api::MAX_BODY_BYTES {
                    if let Some(buf) = held {
                        self.pool.checkin(buf);
                    }
                    let too_large = HttpAnswer::error(413, "request body too large");
                    return self.answer_http(key, &too_large);
                }
                if received < body_len {
                    // Wait for the whole body (bounded above).
                    let buf = held.unwrap_or_else(|| {
                        let mut buf = self.pool.checkout(head_len + body_len);
                        buf.extend_from_slice(data);
                        buf
                    });
                    conn.inbuf = Some(buf);
                    return;
                }
                if body_len > 0 {
                    let body = bytes[head_len..head_len + body_len].to_vec();
                    if let Some(buf) = held {
                        self.pool.checkin(buf);
                    }
                    return self.on_plain_request(key, request, &body);
                }
                let mut rest = bytes[head_len..].to_vec();
                if let Some(buf) = held {
                    self.pool.checkin(buf);
                }
                self.on_request(key, request);
                if !rest.is_empty() && self.conns.get(key).is_some_and(|c| c.stage == Stage::Open) {
                    self.on_frame_bytes(key, &mut rest);
                }
            }
        }
    }

    fn on_request(&mut self, key: usize, request: Request) {
        let serves = self.conns[key].serves;
        match request {
            Request::Plain { .. } => self.on_plain_request(key, request, &[]),
            Request::Upgrade(_) if serves == Serves::Http => self.refuse(
                key,
                Refusal::BadRequest,
                "this is the health listener: WebSockets are on server.websocket",
            ),
            Request::Upgrade(_) if serves == Serves::HttpWhenFull => self.refuse(
                key,
                Refusal::Unavailable,
                "server is full (limits.max_connections)",
            ),
            Request::Upgrade(upgrade) => match self.admit_upgrade(key, &upgrade) {
                Ok(identity) => self.upgrade(key, &upgrade, identity),
                Err((refusal, reason)) => self.refuse(key, refusal, &reason),
            },
        }
    }

    /// A request that is not an upgrade: an HTTP endpoint, or 426.
    fn on_plain_request(&mut self, key: usize, request: Request, body: &[u8]) {
        let Request::Plain {
            method,
            path,
            bearer,
            body: length,
        } = request
        else {
            return;
        };
        let serves = self.conns[key].serves;
        let endpoint = match serves {
            Serves::WebSocket => false,
            Serves::Both | Serves::HttpWhenFull => http_api::is_endpoint(&path),
            Serves::Http => true,
        };
        if !endpoint {
            return self.refuse(
                key,
                Refusal::UpgradeRequired,
                "this is a WebSocket endpoint: send an Upgrade request",
            );
        }
        let App::Gateway(hub) = &mut self.app else {
            return self.refuse(key, Refusal::NotFound, "no HTTP endpoints in this mode");
        };
        self.metrics.http_requests += 1;
        let answer = if length == BodyLength::Unsupported {
            HttpAnswer::error(400, "only bodies with one Content-Length are accepted")
        } else {
            let gauges = ShellGauges {
                open_sockets: self.conns.len(),
                max_connections: self.cfg.max_connections,
                pool_lent: self.pool.lent,
                pool_free: self.pool.free_count(),
                uptime_s: self.start.elapsed().as_secs(),
            };
            let req = HttpRequest {
                method: &method,
                path: &path,
                bearer: bearer.as_deref(),
                body,
            };
            http_api::answer(&req, hub, &self.metrics, &gauges, self.now)
        };
        debug!(
            "http {method} {path} from {}: {}",
            self.conns[key].ip, answer.status
        );
        self.answer_http(key, &answer);
        self.apply_outbox();
    }

    /// Queues an HTTP answer, then closes like a refusal does.
    fn answer_http(&mut self, key: usize, answer: &HttpAnswer) {
        self.answer_and_close(key, &answer.to_bytes());
    }

    /// Replaces anything queued with one HTTP answer; once it is written the
    /// write side is shut and the connection drained until EOF or a deadline.
    fn answer_and_close(&mut self, key: usize, response: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.out.clear(&mut self.pool);
        conn.out.push_copy(&mut self.pool, &[response]);
        conn.stage = Stage::Refusing { shut: false };
        conn.deadline_ms = self.now.ms + REFUSAL_LINGER_MS;
        if conn.admitted {
            conn.admitted = false;
            self.admitted -= 1;
        }
        self.mark_dirty(key);
        self.schedule(key);
    }

    /// SPEC §3 checks, in order: origin (403), token (401), per-address limits (429).
    fn admit_upgrade(
        &mut self,
        key: usize,
        upgrade: &Upgrade,
    ) -> Result<Option<Identity>, (Refusal, String)> {
        let App::Gateway(hub) = &self.app else {
            return Ok(None);
        };
        let ip = self.conns[key].ip;
        // Every upgrade request counts against the hourly budget, refused ones too.
        let per_ip = self.ip_table.on_upgrade(
            ip,
            self.now.ms,
            self.cfg.max_connects_per_ip_per_hour,
            self.cfg.max_connections_per_ip,
        );
        if let Some(origin) = &upgrade.origin {
            let origins = &self.cfg.allowed_origins;
            if !origins.is_empty() && !origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
                return Err((Refusal::Forbidden, "origin not allowed".into()));
            }
        }
        let identity = match &upgrade.token {
            Some(token) => match hub.config().auth.verify(token, self.now.unix) {
                Ok(identity) => Some(identity),
                Err(reason) => {
                    return Err((Refusal::Unauthorized, format!("invalid token: {reason}")))
                }
            },
            None => None,
        };
        per_ip.map_err(|r| (Refusal::TooManyRequests, r.reason().to_string()))?;
        Ok(identity)
    }

    fn upgrade(&mut self, key: usize, upgrade: &Upgrade, identity: Option<Identity>) {
        let response = handshake::switching_protocols(upgrade);
        let now = self.now;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.out.push_copy(&mut self.pool, &[response.as_bytes()]);
        conn.stage = Stage::Open;
        conn.next_ping_ms = now.ms + self.cfg.ping_interval_ms;
        conn.last_rx_ms = now.ms;
        let (id, ip) = (conn.id, conn.ip);
        debug!(
            "client {} from {ip} connected to {}",
            client_id_str(id),
            upgrade.path
        );
        if let App::Gateway(hub) = &mut self.app {
            self.ip_table
                .opened(ip, now.ms, self.cfg.max_connects_per_ip_per_hour);
            conn.counted_ip = true;
            hub.open(key, id, ip, now, identity);
        }
        self.mark_dirty(key);
        self.apply_outbox();
        self.schedule(key);
    }

    /// Answers an HTTP refusal after reading the request, then closes.
    fn refuse(&mut self, key: usize, refusal: Refusal, reason: &str) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        warn!("refused {}: {} {reason}", conn.ip, refusal.status());
        // Addresses not allowed are refused on accept, without reading a
        // request: a 403 here is the origin check.
        self.metrics.refused(match refusal {
            Refusal::Forbidden => RefusalReason::OriginNotAllowed,
            other => RefusalReason::of(other),
        });
        let response = handshake::refusal_response(refusal, reason);
        self.answer_and_close(key, response.as_bytes());
    }

    fn on_frame_bytes(&mut self, key: usize, data: &mut [u8]) {
        let max = self.cfg.max_message_bytes;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut decoder = std::mem::take(&mut conn.decoder);
        let mut held = conn.inbuf.take();
        let from_held = held.is_some();
        let buf: &mut [u8] = match held.as_mut() {
            Some(held) => {
                held.extend_from_slice(data);
                held
            }
            None => data,
        };
        let mut consumed = 0;
        let mut failure = None;
        loop {
            match decoder.decode(&mut buf[consumed..], max) {
                Ok(None) => break,
                Ok(Some((event, used))) => {
                    consumed += used;
                    if !self.on_ws_event(key, event) {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // A partial frame left in the shared read buffer moves to a pooled one.
        let spill = (!from_held && consumed < buf.len()).then(|| {
            let mut spill = self.pool.checkout(buf.len() - consumed);
            spill.extend_from_slice(&buf[consumed..]);
            spill
        });
        let mut held = held.or(spill);
        if from_held {
            if let Some(buf) = held.as_mut() {
                buf.drain(..consumed);
            }
        }
        match self.conns.get_mut(key) {
            Some(conn) => {
                conn.decoder = decoder;
                match held {
                    Some(buf) if buf.is_empty() => self.pool.checkin(buf),
                    other => conn.inbuf = other,
                }
            }
            None => {
                if let Some(buf) = held {
                    self.pool.checkin(buf);
                }
                return;
            }
        }
        if let Some(error) = failure {
            self.fail(key, error);
        }
    }

    fn fail(&mut self, key: usize, error: FrameError) {
        if let Some(conn) = self.conns.get_mut(key) {
            debug!(
                "client {} failed: {}",
                client_id_str(conn.id),
                error.reason()
            );
            // Nothing more from this peer is read as frames.
            if let Some(buf) = conn.inbuf.take() {
                self.pool.checkin(buf);
            }
            conn.decoder = Default::default();
            if conn.stage == Stage::Open {
                // Failing the connection (RFC 6455 §7.1.7): send our close
                // frame, then drop TCP without waiting for the peer's.
                self.start_close(key, error.close_code(), error.reason());
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.stage = Stage::Closing { peer_closed: true };
                }
            } else {
                // Garbage while waiting for the peer's close: stop reading,
                // but let our close frame go out first.
                conn.stage = Stage::Closing { peer_closed: true };
            }
            self.mark_dirty(key);
        }
    }

    /// Handles one decoded frame; false to stop reading this connection's frames.
    fn on_ws_event(&mut self, key: usize, event: WsEvent<'_>) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let open = conn.stage == Stage::Open;
        if open && matches!(event, WsEvent::Text(_) | WsEvent::Binary(_)) {
            self.metrics.messages_in += 1;
        }
        match event {
            WsEvent::Text(_) | WsEvent::Binary(_) if !open => {}
            WsEvent::Text(text) => match &mut self.app {
                App::Echo => self.queue_frame(key, OutKind::Text, text.as_bytes(), None),
                App::Gateway(hub) => {
                    hub.on_text(key, self.now, text);
                    self.apply_outbox();
                    self.schedule(key);
                }
            },
            WsEvent::Binary(bytes) => match &mut self.app {
                App::Echo => self.queue_frame(key, OutKind::Binary, bytes, None),
                App::Gateway(hub) => {
                    hub.on_binary(key, self.now);
                    self.apply_outbox();
                }
            },
            WsEvent::Ping(payload) if open => self.queue_frame(key, OutKind::Pong, payload, None),
            WsEvent::Close(status) => {
                match conn.stage {
                    Stage::Open => {
                        // Echo the peer's status code (RFC 6455 §5.5.1), then close.
                        let (payload, len) = match status {
                            Some((code, _)) => close_payload(code, ""),
                            None => ([0; 125], 0),
                        };
                        self.queue_frame(key, OutKind::Close, &payload[..len], None);
                        self.end_session(key, status.map_or(1005, |(code, _)| code));
                        let conn = &mut self.conns[key];
                        conn.stage = Stage::Closing { peer_closed: true };
                        conn.deadline_ms = self.now.ms + CLOSE_LINGER_MS;
                        self.schedule(key);
                    }
                    Stage::Closing { .. } => conn.stage = Stage::Closing { peer_closed: true },
                    _ => {}
                }
                self.mark_dirty(key);
                return false;
            }
            _ => {}
        }
        true
    }

    // ---------------------------------------------------------------- writing

    /// Queues one frame; a data frame that would overflow `max_outbound_bytes`
    /// marks a slow reader, which is closed 4009.
    fn queue_frame(
        &mut self,
        key: usize,
        kind: OutKind,
        payload: &[u8],
        shared: Option<&Rc<[u8]>>,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let is_data = matches!(
            kind,
            OutKind::Text | OutKind::Binary | OutKind::Ping | OutKind::Pong
        );
        if is_data && conn.stage != Stage::Open {
            return;
        }
        let header = OutHeader::new(kind, payload.len());
        let size = header.as_bytes().len() + payload.len();
        if is_data && !fits(&conn.out, size, self.cfg.max_outbound_bytes) {
            warn!(
                "client {} closed: reads too slowly (over limits.max_outbound_bytes)",
                client_id_str(conn.id)
            );
            conn.out.drop_unsent(&mut self.pool);
            self.metrics.slow_reader_closes += 1;
            self.start_close(key, 4009, "slow reader");
            return;
        }
        if matches!(kind, OutKind::Text | OutKind::Binary) {
            self.metrics.messages_out += 1;
        }
        self.metrics.bytes_out += size as u64;
        conn.out
            .push_frame(&mut self.pool, header.as_bytes(), payload, shared);
        self.mark_dirty(key);
    }

    /// Carries out the core's actions, including any its reactions add.
    fn apply_outbox(&mut self) {
        loop {
            let mut out = match &mut self.app {
                App::Gateway(hub) if !hub.out.actions.is_empty() => std::mem::take(&mut hub.out),
                _ => return,
            };
            for action in &out.actions {
                match action {
                    Action::Send { to, body } => {
                        let shared = match body {
                            Body::Shared(rc) => Some(rc),
                            Body::Arena { .. } => None,
                        };
                        self.queue_frame(*to, OutKind::Text, out.body(body), shared);
                    }
                    Action::Close { to, code, reason } => self.start_close(*to, *code, reason),
                }
            }
            out.clear();
            if let App::Gateway(hub) = &mut self.app {
                // Hand the emptied outbox back to keep its capacity, unless
                // closing sessions queued new actions meanwhile (next round).
                if hub.out.actions.is_empty() {
                    hub.out = out;
                }
            }
        }
    }

    /// Sends a close frame and waits (bounded) for the peer's.
    fn start_close(&mut self, key: usize, code: u16, reason: &str) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.stage != Stage::Open {
            return;
        }
        let (payload, len) = close_payload(code, reason);
        self.queue_frame(key, OutKind::Close, &payload[..len], None);
        self.end_session(key, code);
        let conn = &mut self.conns[key];
        conn.stage = Stage::Closing { peer_closed: false };
        conn.deadline_ms = self.now.ms + CLOSE_LINGER_MS;
        self.schedule(key);
    }

    /// The core forgets the session (rooms, hosts) as soon as a close starts.
    fn end_session(&mut self, key: usize, code: u16) {
        if let App::Gateway(hub) = &mut self.app {
            hub.disconnect(key, code, self.now);
            self.apply_outbox();
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for key in dirty.drain(..) {
            self.flush(key);
        }
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.dirty = false;
        let written = match conn.tls.as_deref_mut() {
            None => conn.out.write_to(&mut conn.sock, &mut self.pool),
            Some(session) => tls::flush(session, &mut conn.sock, &mut conn.out, &mut self.pool),
        };
        match written {
            Ok(true) => match conn.stage {
                Stage::Closing { peer_closed: true } => {
                    if let Some(session) = conn.tls.as_deref_mut() {
                        session.send_close_notify();
                        let _ = tls::write_records(session, &mut conn.sock);
                    }
                    return self.remove(key);
                }
                Stage::Refusing { shut: false } => {
                    // TLS: close_notify first (sent once), then shut.
                    let closed = match conn.tls.as_deref_mut() {
                        None => Ok(true),
                        Some(session) => {
                            session.send_close_notify();
                            tls::write_records(session, &mut conn.sock)
                        }
                    };
                    match closed {
                        Ok(true) => {
                            let _ = conn.sock.shutdown(Shutdown::Write);
                            conn.stage = Stage::Refusing { shut: true };
                        }
                        Ok(false) => {}
                        Err(e) => {
                            debug!("connection {key}: write error: {e}");
                            return self.remove(key);
                        }
                    }
                }
                _ => {}
            },
            Ok(false) => {}
            Err(e) => {
                debug!("connection {key}: write error: {e}");
                return self.remove(key);
            }
        }
        let wanted = conn.wanted_interest();
        if wanted != conn.interest {
            conn.interest = wanted;
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut conn.sock, Token(key), wanted)
            {
                debug!("connection {key}: reregister failed: {e}");
                self.remove(key);
            }
        }
    }

    // ---------------------------------------------------------------- timers

    /// Makes sure the wheel wakes this connection at its earliest deadline.
    fn schedule(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let wake = match conn.stage {
            Stage::Open => {
                let core = match &self.app {
                    App::Gateway(hub) => hub.deadline(key).unwrap_or(u64::MAX),
                    App::Echo => u64::MAX,
                };
                let idle = conn.last_rx_ms.saturating_add(self.cfg.idle_timeout_ms);
                idle.min(conn.next_ping_ms).min(core)
            }
            _ => conn.deadline_ms,
        };
        let tick = self.wheel.tick_for(wake);
        if tick < conn.timer_tick {
            conn.timer_tick = tick;
            self.wheel.insert(Entry {
                key,
                id: conn.id,
                tick,
            });
        }
    }

    fn run_timers(&mut self) {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.expire(self.now.ms, &mut due);
        for entry in due.drain(..) {
            let current = self
                .conns
                .get_mut(entry.key)
                .filter(|c| c.id == entry.id && c.timer_tick == entry.tick);
            if let Some(conn) = current {
                conn.timer_tick = u64::MAX;
                self.on_conn_timer(entry.key);
                self.schedule(entry.key);
            }
        }
        self.due = due;
    }

    fn on_conn_timer(&mut self, key: usize) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.stage {
            Stage::Handshake | Stage::Closing { .. } | Stage::Refusing { .. } => {
                if now.ms >= conn.deadline_ms {
                    if conn.stage == Stage::Handshake {
                        debug!("dropped {}: no complete request in time", conn.ip);
                    }
                    self.remove(key);
                }
            }
            Stage::Open => {
                if let App::Gateway(hub) = &mut self.app {
                    hub.on_timer(key, now);
                    self.apply_outbox();
                }
                let Some(conn) = self.conns.get_mut(key) else {
                    return;
                };
                if conn.stage != Stage::Open {
                    return;
                }
                if now.ms >= conn.last_rx_ms.saturating_add(self.cfg.idle_timeout_ms) {
                    debug!("client {} idle: closing", client_id_str(conn.id));
                    self.metrics.idle_closes += 1;
                    self.start_close(key, 1001, "idle timeout");
                } else if now.ms >= conn.next_ping_ms {
                    conn.next_ping_ms = now.ms + self.cfg.ping_interval_ms;
                    self.queue_frame(key, OutKind::Ping, &[], None);
                } else {
                    conn.release_idle_buffers(&mut self.pool);
                }
            }
        }
    }

    fn remove(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        if let App::Gateway(hub) = &mut self.app {
            // Gone without a close handshake (a session already ended is a no-op).
            hub.disconnect(key, 1006, self.now);
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
        let _ = self.poll.registry().deregister(&mut conn.sock);
        conn.release_all(&mut self.pool);
        self.apply_outbox();
    }
}
