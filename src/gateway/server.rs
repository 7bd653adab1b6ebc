//! One thread, one `mio::Poll`: the loop that waits for events and routes
//! them (to the listeners, the connection set, other endpoints), the
//! signals (stop, reload), the SIGHUP reload and the systemd watchdog.
//! Decisions are the core's (`proto`); the shell moves bytes.

use super::accept::{Listeners, Pass};
use super::app::App;
use super::auth_proxy::{AuthProxy, SharedProxyLink};
use super::config::{ReloadFn, ShellConfig, CLOSE_LINGER_MS};
use super::conn::Serves;
use super::conns::Conns;
use super::endpoint::{Endpoint, Endpoints, Source, ENDPOINT_BASE, SIGNAL};
use super::fd_limit::{Episodes, Note, Pause, Spare};
use super::http_pool::HttpTarget;
use super::metrics::AcceptError;
use super::nofile;
use super::notify::{monotonic_usec, Notifier};
use super::timer::Entry;
use super::tls::{self, TlsState};
use crate::proto::Now;
use log::{info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::io;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long endpoints get to wind down on shutdown (a program: 2 s after
/// its stdin closes, 1 s after SIGTERM, then SIGKILL).
const ENDPOINT_STOP_MS: u64 = 3_500;

/// A source that hit its per-pass cap and must be served again.
#[derive(Debug, Clone, Copy)]
enum Ready {
    Conn(usize),
    Listener(usize),
}

pub struct Server {
    poll: Poll,
    listeners: Listeners,
    signals: Signals,
    conns: Conns,
    app: App,
    /// Endpoints other than client connections (see `endpoint`).
    endpoints: Endpoints,
    endpoints_due: Vec<Entry>,
    /// The connect proxy's endpoint, if configured.
    auth_proxy: Option<usize>,
    ready_again: Vec<Ready>,
    /// Listeners ready in this pass, served after the connections.
    accepting: Vec<usize>,
    start: Instant,
    now: Now,
    shutdown_deadline: Option<u64>,
    reloader: Option<ReloadFn>,
    notifier: Notifier,
    next_watchdog_ms: Option<u64>,
    /// The descriptor kept to answer clients 503 at the descriptor limit.
    spare: Spare,
    episodes: Episodes,
    /// Listening paused at the descriptor limit (or after an accept error).
    accept_pause: Option<Pause>,
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

impl Server {
    pub fn new(listeners: Vec<TcpListener>, app: App, cfg: ShellConfig) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listening = Listeners::default();
        for listener in listeners {
            listening.add(poll.registry(), listener, Serves::WebSocket)?;
        }
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGCHLD])?;
        poll.registry()
            .register(&mut signals, SIGNAL, Interest::READABLE)?;
        match nofile::raise() {
            Ok(limit) => {
                info!(
                    "file descriptors: up to {} (RLIMIT_NOFILE, hard limit {})",
                    limit.soft, limit.hard
                );
                check_descriptors(&cfg, limit.soft);
            }
            Err(e) => warn!("cannot raise RLIMIT_NOFILE: {e}"),
        }
        let ceiling = cfg.per_connection_ceiling();
        info!(
            "memory ceiling: {} connections x {} bytes = {} MiB worst case; an idle connection holds no buffer",
            cfg.max_connections,
            ceiling,
            cfg.worst_case_mib(ceiling)
        );
        let start = Instant::now();
        let registry = poll.registry().try_clone()?;
        Ok(Server {
            poll,
            listeners: listening,
            signals,
            conns: Conns::new(registry, cfg, start),
            app,
            endpoints: Endpoints::default(),
            endpoints_due: Vec::new(),
            auth_proxy: None,
            ready_again: Vec::new(),
            accepting: Vec::new(),
            start,
            now: clock(start),
            shutdown_deadline: None,
            reloader: None,
            notifier: Notifier::from_env(),
            next_watchdog_ms: None,
            spare: Spare::open(),
            episodes: Episodes::default(),
            accept_pause: None,
        })
    }

    /// Serves TLS (wss) with this certificate; `None` keeps plain ws.
    pub fn with_tls(mut self, tls: Option<TlsState>) -> Server {
        if let Some(state) = &tls {
            tls::keep_freed_heap();
            let extra = tls::per_connection_ceiling();
            let cfg = self.conns.cfg();
            let ceiling = cfg.per_connection_ceiling() + extra;
            info!(
                "tls: certificate {} sha256 fingerprint {}",
                state.cert_path().display(),
                state.fingerprint()
            );
            info!(
                "tls memory ceiling: {} bytes of TLS state and buffers per connection; {} connections x {} bytes = {} MiB worst case",
                extra,
                cfg.max_connections,
                ceiling,
                cfg.worst_case_mib(ceiling) + (tls::shared_bytes() as u64).div_ceil(1 << 20)
            );
        }
        self.conns.set_tls(tls);
        self
    }

    /// SIGHUP: new handshakes get the certificate now on disk; open sessions
    /// keep theirs. A pair that does not load leaves the old one in use.
    fn reload_tls(&mut self) {
        let Some(state) = self.conns.tls_mut() else {
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
        for listener in listeners {
            self.listeners
                .add(self.poll.registry(), listener, Serves::Http)?;
        }
        Ok(())
    }

    /// The WebSocket listeners also answer the HTTP endpoints (the health
    /// listener is configured on the same address and port).
    pub fn share_http_with_websocket(&mut self) {
        self.listeners.share_http_with_websocket();
    }

    /// What SIGHUP calls to re-read the settings (without one, SIGHUP is ignored).
    pub fn set_reloader(&mut self, reloader: ReloadFn) {
        self.reloader = Some(reloader);
    }

    /// Adds an endpoint other than a client connection to this loop's poll
    /// and timer wheel (see `endpoint`); `make` registers its sources under
    /// the token it is given. Its first `on_timer` comes on the first pass.
    pub fn add_endpoint(
        &mut self,
        make: impl FnOnce(&mio::Registry, mio::Token) -> io::Result<Box<dyn Endpoint>>,
    ) -> io::Result<usize> {
        let index = self.endpoints.insert(self.poll.registry(), make)?;
        // Its first timer starts it (a program host spawns its program then).
        self.schedule_endpoint(index, Some(self.now.ms));
        Ok(index)
    }

    /// Handshakes without a token are checked by the connect proxy at
    /// `target` (SPEC §11), which has `timeout_ms` to answer.
    pub fn set_auth_proxy(&mut self, target: HttpTarget, timeout_ms: u64) -> io::Result<()> {
        let link = SharedProxyLink::default();
        self.conns.set_proxy(link.clone());
        let index = self.add_endpoint(|registry, token| {
            let proxy = AuthProxy::new(target, timeout_ms, link, registry, token)?;
            Ok(Box::new(proxy))
        })?;
        self.auth_proxy = Some(index);
        Ok(())
    }

    /// The poll's registry, for endpoints that register sources later.
    pub fn registry(&self) -> &mio::Registry {
        self.poll.registry()
    }

    /// Runs until SIGTERM/SIGINT and every connection has been closed.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        self.notifier.ready();
        self.next_watchdog_ms = self.notifier.watchdog_interval_ms().map(|_| self.now.ms);
        loop {
            self.pet_watchdog();
            let again = std::mem::take(&mut self.ready_again);
            let timeout = self.poll_timeout(!again.is_empty() || self.endpoints.has_backlog());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.now = clock(self.start);
            let mut accepting = std::mem::take(&mut self.accepting);
            for event in events.iter() {
                match Source::of(event.token()) {
                    Source::Signal => self.on_signal(),
                    Source::Listener(i) => accepting.push(i),
                    Source::Endpoint(i) => {
                        let wake = self.endpoints.on_event(i, event, &mut self.app, self.now);
                        self.schedule_endpoint(i, wake);
                        self.conns.apply_core(&mut self.app, self.now);
                    }
                    Source::Conn(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(key);
                        }
                        if event.is_writable() {
                            self.conns.mark_dirty(key);
                        }
                    }
                }
            }
            for ready in again {
                match ready {
                    Ready::Conn(key) => self.read(key),
                    Ready::Listener(i) => accepting.push(i),
                }
            }
            // New clients last: what the connections sent is read first, so
            // a request that has arrived completes before a newcomer may
            // evict its connection as the oldest incomplete one.
            for index in accepting.drain(..) {
                self.accept(index);
            }
            self.accepting = accepting;
            self.run_timers();
            self.endpoints_pass();
            self.deliver_mail();
            self.kick_auth_proxy();
            self.conns.flush_dirty(&mut self.app, self.now);
            self.resume_accepting();
            if let Some(deadline) = self.shutdown_deadline {
                let done = self.conns.is_empty() && self.endpoints.all_finished();
                if done || self.now.ms >= deadline {
                    info!("stopped");
                    return Ok(());
                }
            }
        }
    }

    /// Zero when sources wait for another pass; none when nothing is due;
    /// else until the next tick, the watchdog, or 100 ms at most.
    fn poll_timeout(&self, again: bool) -> Option<Duration> {
        if again {
            return Some(Duration::ZERO);
        }
        if !self.conns.has_timers()
            && self.shutdown_deadline.is_none()
            && self.next_watchdog_ms.is_none()
            && self.accept_pause.is_none()
        {
            return None;
        }
        let until = |at: Option<u64>| at.map_or(u64::MAX, |at| at.saturating_sub(self.now.ms));
        let watchdog = until(self.next_watchdog_ms);
        let resume = until(self.accept_pause.map(|p| p.resume_at_ms));
        Some(Duration::from_millis(
            self.conns
                .until_next_tick(self.now.ms)
                .min(100)
                .min(watchdog)
                .min(resume),
        ))
    }

    /// Accepts what listener `index` has waiting; while listening is paused
    /// nothing (every listener is tried again when the pause ends).
    fn accept(&mut self, index: usize) {
        if self.accept_pause.is_some() {
            return;
        }
        let (conns, app, now) = (&mut self.conns, &self.app, self.now);
        let pass = self.listeners.accept(index, |sock, addr, serves| {
            conns.on_accept(sock, addr, serves, app, now)
        });
        match pass {
            Pass::Drained | Pass::Capped => {
                if let Some(Note::Ended { after_ms, refused }) = self.episodes.below_limit(now.ms) {
                    info!(
                        "file descriptors to spare again after {after_ms} ms; {refused} clients were answered 503 meanwhile"
                    );
                }
                if pass == Pass::Capped {
                    self.ready_again.push(Ready::Listener(index));
                }
            }
            Pass::OutOfDescriptors => self.at_fd_limit(index),
            Pass::Failed => {
                self.conns.note_accept_error(AcceptError::Other);
                self.pause_accepting();
            }
        }
    }

    /// Out of descriptors: waiting clients get 503 on the spare descriptor;
    /// when that does not empty the queue, listening pauses (no spinning).
    fn at_fd_limit(&mut self, index: usize) {
        self.conns.note_accept_error(AcceptError::FdLimit);
        if self.episodes.exhausted(self.now.ms) == Some(Note::Started) {
            let limit = nofile::current().map_or(0, |l| l.soft);
            warn!(
                "out of file descriptors (RLIMIT_NOFILE {limit}): new clients get 503 until sockets close"
            );
        }
        let (conns, episodes) = (&mut self.conns, &mut self.episodes);
        let pass = self
            .listeners
            .refuse_on_spare(index, &mut self.spare, |sock, addr, serves| {
                episodes.refused();
                conns.refuse_at_fd_limit(sock, addr, serves);
            });
        if pass != Pass::Drained {
            self.pause_accepting();
        }
    }

    fn pause_accepting(&mut self) {
        self.accept_pause = Some(Pause::new(self.now.ms, self.conns.closed()));
    }

    /// Ends a pause once a socket closed or its time is up.
    fn resume_accepting(&mut self) {
        let Some(pause) = self.accept_pause else {
            return;
        };
        if pause.over(self.now.ms, self.conns.closed()) {
            self.accept_pause = None;
            for index in 0..self.listeners.count() {
                self.accept(index);
            }
        }
    }

    fn read(&mut self, key: usize) {
        if self.conns.on_readable(key, &mut self.app, self.now) {
            self.ready_again.push(Ready::Conn(key));
        }
    }

    fn run_timers(&mut self) {
        let mut due = std::mem::take(&mut self.endpoints_due);
        self.conns.run_timers(&mut self.app, self.now, &mut due);
        for entry in due.drain(..) {
            let index = entry.key - ENDPOINT_BASE;
            let wake = self.endpoints.on_timer(index, &mut self.app, self.now);
            self.schedule_endpoint(index, wake);
            self.conns.apply_core_actions(&mut self.app, self.now);
        }
        self.endpoints_due = due;
        self.conns.apply_core(&mut self.app, self.now);
    }

    /// Handshakes the connection set held for the connect proxy go out now.
    fn kick_auth_proxy(&mut self) {
        let Some(index) = self.auth_proxy else { return };
        if self.conns.proxy_has_jobs() {
            let wake = self.endpoints.on_timer(index, &mut self.app, self.now);
            self.schedule_endpoint(index, wake);
            self.conns.apply_core(&mut self.app, self.now);
        }
    }

    /// Hands what the core sent bridged hosts to their endpoints, and what
    /// they answer back to the core, until both are quiet (bounded rounds:
    /// the rest waits for the next pass).
    fn deliver_mail(&mut self) {
        for _ in 0..8 {
            let mail = self.conns.take_mail();
            if mail.is_empty() {
                return;
            }
            let wakes = mail.deliver(&mut self.endpoints, &mut self.app, self.now);
            self.schedule_all(wakes);
            self.conns.apply_core(&mut self.app, self.now);
        }
    }

    /// Calls `each` on every endpoint, schedules what they ask for and
    /// applies what they made the core do.
    fn on_every_endpoint(
        &mut self,
        each: impl Fn(&mut dyn Endpoint, &mut App, Now) -> Option<u64>,
    ) {
        let (app, now) = (&mut self.app, self.now);
        let wakes = self.endpoints.for_each(|e| each(e, app, now));
        self.schedule_all(wakes);
        self.conns.apply_core(&mut self.app, self.now);
    }

    fn schedule_all(&mut self, wakes: Vec<(usize, u64)>) {
        for (index, at_ms) in wakes {
            self.schedule_endpoint(index, Some(at_ms));
        }
    }

    /// Endpoints take what the connections' pass queued for them.
    fn endpoints_pass(&mut self) {
        if self.endpoints.is_empty() {
            return;
        }
        let mut wakes = Vec::new();
        self.endpoints
            .on_pass(&mut self.app, self.now, |index, at| wakes.push((index, at)));
        for (index, at) in wakes {
            self.schedule_endpoint(index, Some(at));
        }
        self.conns.apply_core_actions(&mut self.app, self.now);
    }

    fn schedule_endpoint(&mut self, index: usize, wake: Option<u64>) {
        if let Some(at_ms) = wake {
            self.conns.schedule_endpoint(index, at_ms);
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
        let (mut stop, mut reload, mut child) = (false, false, false);
        for signal in self.signals.pending() {
            match signal {
                SIGHUP => reload = true,
                SIGCHLD => child = true,
                _ => stop = true,
            }
        }
        if child {
            self.on_every_endpoint(|e, app, now| e.on_child_exit(app, now));
        }
        if reload && self.shutdown_deadline.is_none() {
            self.reload();
        }
        if stop && self.shutdown_deadline.is_none() {
            info!("stopping: closing {} connections", self.conns.len());
            self.notifier.stopping();
            self.listeners.close_all(self.poll.registry());
            // Bridged programs get their stdin closed, then SIGTERM, then SIGKILL.
            let linger = if self.endpoints.is_empty() {
                CLOSE_LINGER_MS + 500
            } else {
                (CLOSE_LINGER_MS + 500).max(ENDPOINT_STOP_MS)
            };
            self.shutdown_deadline = Some(self.now.ms + linger);
            self.conns.close_all(&mut self.app, self.now);
            self.on_every_endpoint(|e, app, now| e.on_shutdown(app, now));
        }
    }

    /// SIGHUP: re-read the settings and apply what can change while running.
    fn reload(&mut self) {
        // The certificate and key files are read again in every mode.
        self.reload_tls();
        let Some(reloader) = self.reloader.as_mut() else {
            if self.conns.tls().is_none() {
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
                self.conns.reconfigure(reloaded.shell);
                let cfg = self.conns.cfg();
                if let Ok(limit) = nofile::current() {
                    check_descriptors(cfg, limit.soft);
                }
                let ceiling = cfg.per_connection_ceiling();
                info!(
                    "memory ceiling now: {} connections x {} bytes = {} MiB worst case",
                    cfg.max_connections,
                    ceiling,
                    cfg.worst_case_mib(ceiling)
                );
            }
            Err(e) => warn!("reload failed, keeping the running settings: {e}"),
        }
        self.notifier.ready();
    }
}

/// Warns when the settings may hold more sockets than `limit` descriptors.
fn check_descriptors(cfg: &ShellConfig, limit: libc::rlim_t) {
    if let Some(warning) = nofile::fit_warning(cfg, limit) {
        warn!("{warning}");
    }
}
