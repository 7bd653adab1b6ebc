//! A program as a host (SPEC §11, like websocketd): tether starts it, speaks
//! SPEC §6 over its stdin and stdout as JSON lines, logs its stderr, restarts
//! it with growing pauses, and stops it in order on shutdown. Its pipes are
//! registered with the loop's one `Poll` under this endpoint's token; its
//! exit arrives as SIGCHLD. The hub sees one more session: the bridged key.
//!
//! When tether itself is killed (SIGKILL), the program's stdin reaches EOF:
//! a program that reads its stdin sees that and exits.

use super::app::App;
use super::endpoint::Endpoint;
use crate::proto::bounds::{grown_vec_bytes, host_request_bytes_bound, session_bytes_bound};
use crate::proto::program_host::{Backoff, LineSplitter};
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use log::{debug, info, warn};
use mio::event::Event;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};

/// After stdin is closed on shutdown, the program has this long to exit.
const STDIN_GRACE_MS: u64 = 2_000;
/// After SIGTERM, this long before SIGKILL.
const TERM_GRACE_MS: u64 = 1_000;
/// Bytes read from one pipe per event before serving others.
const READ_PASS_BYTES: usize = 256 * 1024;
/// Longest stderr line logged whole.
const MAX_LOG_LINE: usize = 4096;
/// Bytes read from a pipe per `read` call.
const READ_CHUNK: usize = 16 * 1024;

/// What a program host is started with.
#[derive(Debug, Clone)]
pub struct ProgramConfig {
    pub name: String,
    pub command: Vec<String>,
    /// The settings file's directory.
    pub cwd: PathBuf,
    pub permissions: Vec<String>,
    pub max_message_bytes: usize,
    pub max_outbound_bytes: usize,
}

/// Worst-case bytes a `command` host holds (SPEC §8 addition), for its
/// limits: the endpoint and its session in the core; its stdout and stderr
/// line buffers (a partial line and one read pass, `READ_PASS_BYTES` and
/// the last read); its stdin queue, which restarts it past twice
/// `max_outbound_bytes`, with the request that went over.
pub fn bytes_bound(max_message_bytes: usize, max_outbound_bytes: usize) -> usize {
    let pass = READ_PASS_BYTES + READ_CHUNK;
    let stdout = grown_vec_bytes(max_message_bytes + pass);
    let stderr = grown_vec_bytes(max_message_bytes.min(MAX_LOG_LINE) + pass);
    let stdin = 2 * max_outbound_bytes + host_request_bytes_bound(max_message_bytes) + 1;
    std::mem::size_of::<ProgramHost>()
        + session_bytes_bound()
        + stdout
        + stderr
        + grown_vec_bytes(stdin)
}

/// A running program and its pipes (non-blocking, registered).
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    started_ms: u64,
}

/// The shutdown order: stdin closed, then SIGTERM, then SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopping {
    No,
    StdinClosed { until_ms: u64 },
    Terminated { until_ms: u64 },
    Killed,
}

pub struct ProgramHost {
    cfg: ProgramConfig,
    key: ConnKey,
    token: Token,
    registry: Registry,
    running: Option<Running>,
    backoff: Backoff,
    restart_at_ms: Option<u64>,
    serial: u64,
    stopping: Stopping,
    stdout_lines: LineSplitter,
    stderr_lines: LineSplitter,
    /// Bytes for its stdin the pipe has not taken yet.
    queue: Vec<u8>,
    congested: bool,
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn register(registry: &Registry, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
    set_nonblocking(fd)?;
    registry.register(&mut SourceFd(&fd), token, interest)
}

fn deregister(registry: &Registry, fd: Option<RawFd>) {
    if let Some(fd) = fd {
        let _ = registry.deregister(&mut SourceFd(&fd));
    }
}

impl ProgramHost {
    /// A program host for session `key`, started at its first timer.
    pub fn new(cfg: ProgramConfig, key: ConnKey, registry: Registry, token: Token) -> ProgramHost {
        let max = cfg.max_message_bytes;
        ProgramHost {
            cfg,
            key,
            token,
            registry,
            running: None,
            backoff: Backoff::default(),
            restart_at_ms: Some(0),
            serial: 0,
            stopping: Stopping::No,
            stdout_lines: LineSplitter::new(max),
            stderr_lines: LineSplitter::new(max.min(MAX_LOG_LINE)),
            queue: Vec::new(),
            congested: false,
        }
    }

    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn spawn(&self) -> io::Result<Running> {
        let (program, args) = self
            .cfg
            .command
            .split_first()
            .ok_or_else(|| io::Error::other("empty command"))?;
        let mut child = Command::new(program)
            .args(args)
            .current_dir(&self.cfg.cwd)
            .env("TETHER_HOST_NAME", &self.cfg.name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let running = Running {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            child,
            started_ms: 0,
        };
        let fds = [
            (
                running.stdin.as_ref().map(AsRawFd::as_raw_fd),
                Interest::WRITABLE,
            ),
            (
                running.stdout.as_ref().map(AsRawFd::as_raw_fd),
                Interest::READABLE,
            ),
            (
                running.stderr.as_ref().map(AsRawFd::as_raw_fd),
                Interest::READABLE,
            ),
        ];
        let mut running = running;
        for (fd, interest) in fds {
            let registered = fd
                .ok_or_else(|| io::Error::other("a pipe is missing"))
                .and_then(|fd| register(&self.registry, fd, self.token, interest));
            if let Err(e) = registered {
                let _ = running.child.kill();
                let _ = running.child.wait();
                return Err(e);
            }
        }
        Ok(running)
    }

    /// Starts the program and opens its session in the hub.
    fn start(&mut self, app: &mut App, now: Now) -> Option<u64> {
        self.restart_at_ms = None;
        match self.spawn() {
            Ok(mut running) => {
                running.started_ms = now.ms;
                info!(
                    "host {}: started {:?} (pid {})",
                    self.name(),
                    self.cfg.command,
                    running.child.id()
                );
                self.running = Some(running);
                self.serial += 1;
                if let Some(hub) = app.hub_mut() {
                    let (name, permissions) = (&self.cfg.name, &self.cfg.permissions);
                    hub.open_bridged(self.key, self.serial, name, permissions, now);
                }
                None
            }
            Err(e) => {
                let pause = self.backoff.pause_after(0);
                warn!(
                    "host {}: cannot start {:?}: {e}; trying again in {pause} ms",
                    self.name(),
                    self.cfg.command
                );
                self.restart_at_ms = Some(now.ms + pause);
                self.restart_at_ms
            }
        }
    }

    /// Kills the program (it is reaped on SIGCHLD, then restarted).
    fn kill(&mut self, why: &str) {
        if let Some(running) = self.running.as_mut() {
            warn!("host {}: {why}; restarting it", self.cfg.name);
            let _ = running.child.kill();
        }
    }

    /// Reads what its stdout and stderr hold; lines go to the hub and the log.
    fn read_pipes(&mut self, app: &mut App, now: Now) {
        let mut chunk = [0u8; READ_CHUNK];
        let Some(running) = self.running.as_mut() else {
            return;
        };
        let mut out_eof = false;
        let mut err_eof = false;
        if let Some(stdout) = running.stdout.as_mut() {
            out_eof = read_into(stdout, &mut chunk, &mut self.stdout_lines);
        }
        if let Some(stderr) = running.stderr.as_mut() {
            err_eof = read_into(stderr, &mut chunk, &mut self.stderr_lines);
        }
        if out_eof {
            deregister(&self.registry, running.stdout.take().map(|p| p.as_raw_fd()));
        }
        if err_eof {
            deregister(&self.registry, running.stderr.take().map(|p| p.as_raw_fd()));
        }
        let (name, key) = (self.cfg.name.as_str(), self.key);
        let stderr = self.stderr_lines.lines(|line| {
            info!("host {name}: {}", String::from_utf8_lossy(line));
        });
        if stderr.is_err() {
            info!("host {name}: (a stderr line over {MAX_LOG_LINE} bytes, not shown)");
        }
        // Each line goes to the core where it lies (no copies held).
        let mut hub = app.hub_mut();
        let stdout = self.stdout_lines.lines(|line| {
            if let Some(hub) = hub.as_deref_mut() {
                match std::str::from_utf8(line) {
                    Ok(text) => hub.on_text(key, now, text),
                    Err(_) => hub.on_binary(key, now),
                }
            }
        });
        if stdout.is_err() {
            self.kill("a line over limits.max_message_bytes");
        } else if out_eof {
            // A host that closed its output cannot answer any more.
            self.kill("its stdout closed");
        }
    }

    /// Writes what is queued for its stdin; updates the congestion mark.
    fn write_stdin(&mut self, app: &mut App) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        let Some(stdin) = running.stdin.as_mut() else {
            self.queue.clear();
            return;
        };
        let mut written = 0;
        let mut broken = false;
        while written < self.queue.len() {
            match stdin.write(&self.queue[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!("host {}: stdin: {e}", self.cfg.name);
                    broken = true;
                    break;
                }
            }
        }
        self.queue.drain(..written);
        if broken {
            self.queue.clear();
            self.kill("its stdin closed");
            return;
        }
        let max = self.cfg.max_outbound_bytes;
        let congested = if self.congested {
            // Requests flow again once it has read half of its backlog.
            self.queue.len() > max / 2
        } else {
            self.queue.len() > max
        };
        if congested != self.congested {
            self.congested = congested;
            if congested {
                warn!(
                    "host {}: reads too slowly (over limits.max_outbound_bytes): requests to it fail with host_unavailable",
                    self.cfg.name
                );
            } else {
                info!("host {}: reading again; requests flow", self.cfg.name);
            }
            if let Some(hub) = app.hub_mut() {
                hub.set_host_congested(self.key, congested);
            }
        }
        if self.queue.len() > max.saturating_mul(2) {
            self.queue.clear();
            self.kill("unread output over twice limits.max_outbound_bytes");
        }
    }

    /// Reaps the program if it exited: ends its session, plans the restart.
    fn reap(&mut self, app: &mut App, now: Now) -> Option<u64> {
        let status = match self.running.as_mut()?.child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => return self.deadline(),
            Err(e) => {
                warn!("host {}: cannot wait for it: {e}", self.cfg.name);
                return self.deadline();
            }
        };
        // What it wrote before exiting still counts.
        self.read_pipes(app, now);
        let Some(running) = self.running.take() else {
            return self.deadline();
        };
        for fd in [
            running.stdin.as_ref().map(AsRawFd::as_raw_fd),
            running.stdout.as_ref().map(AsRawFd::as_raw_fd),
            running.stderr.as_ref().map(AsRawFd::as_raw_fd),
        ] {
            deregister(&self.registry, fd);
        }
        self.queue.clear();
        self.stdout_lines.clear();
        self.stderr_lines.clear();
        self.congested = false;
        if let Some(hub) = app.hub_mut() {
            hub.disconnect(self.key, 1006, now);
        }
        if self.stopping != Stopping::No {
            info!("host {}: exited ({status})", self.cfg.name);
            return None;
        }
        let ran_ms = now.ms.saturating_sub(running.started_ms);
        let pause = self.backoff.pause_after(ran_ms);
        info!(
            "host {}: exited ({status}) after {ran_ms} ms; starting it again in {pause} ms",
            self.cfg.name
        );
        self.restart_at_ms = Some(now.ms + pause);
        self.restart_at_ms
    }

    fn deadline(&self) -> Option<u64> {
        match self.stopping {
            Stopping::StdinClosed { until_ms } | Stopping::Terminated { until_ms } => {
                Some(until_ms)
            }
            Stopping::Killed => None,
            Stopping::No => self.restart_at_ms,
        }
    }

    fn signal(&self, signal: libc::c_int) {
        if let Some(running) = &self.running {
            if let Ok(pid) = libc::pid_t::try_from(running.child.id()) {
                // SAFETY: a signal to our own unreaped child (its pid cannot be reused yet).
                unsafe { libc::kill(pid, signal) };
            }
        }
    }
}

/// Reads until `WouldBlock` (or a pass's worth); true at end of file.
fn read_into(pipe: &mut impl Read, chunk: &mut [u8], lines: &mut LineSplitter) -> bool {
    let mut total = 0;
    while total < READ_PASS_BYTES {
        match pipe.read(chunk) {
            Ok(0) => return true,
            Ok(n) => {
                total += n;
                lines.push(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    false
}

impl Endpoint for ProgramHost {
    fn on_event(&mut self, event: &Event, app: &mut App, now: Now) -> Option<u64> {
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read_pipes(app, now);
        }
        if event.is_writable() || event.is_write_closed() {
            self.write_stdin(app);
        }
        self.deadline()
    }

    fn on_timer(&mut self, app: &mut App, now: Now) -> Option<u64> {
        match self.stopping {
            Stopping::No
                if self.running.is_none() && self.restart_at_ms.is_some_and(|at| now.ms >= at) =>
            {
                return self.start(app, now);
            }
            Stopping::StdinClosed { until_ms } if now.ms >= until_ms => {
                info!(
                    "host {}: still running {STDIN_GRACE_MS} ms after stdin closed; SIGTERM",
                    self.cfg.name
                );
                self.signal(libc::SIGTERM);
                self.stopping = Stopping::Terminated {
                    until_ms: now.ms + TERM_GRACE_MS,
                };
            }
            Stopping::Terminated { until_ms } if now.ms >= until_ms => {
                warn!(
                    "host {}: still running after SIGTERM; SIGKILL",
                    self.cfg.name
                );
                self.signal(libc::SIGKILL);
                self.stopping = Stopping::Killed;
            }
            _ => {}
        }
        self.deadline()
    }

    fn on_message(&mut self, body: &[u8], app: &mut App, _now: Now) -> Option<u64> {
        if self.running.is_some() {
            self.queue.extend_from_slice(body);
            self.queue.push(b'\n');
            self.write_stdin(app);
        }
        self.deadline()
    }

    fn on_close(&mut self, code: u16, _app: &mut App, _now: Now) -> Option<u64> {
        self.kill(&format!("the gateway ended its session ({code})"));
        self.deadline()
    }

    fn on_child_exit(&mut self, app: &mut App, now: Now) -> Option<u64> {
        self.reap(app, now)
    }

    fn on_shutdown(&mut self, _app: &mut App, now: Now) -> Option<u64> {
        self.restart_at_ms = None;
        let Some(running) = self.running.as_mut() else {
            self.stopping = Stopping::Killed;
            return None;
        };
        deregister(
            &self.registry,
            running.stdin.as_ref().map(AsRawFd::as_raw_fd),
        );
        // Closing stdin is the program's cue to finish.
        running.stdin = None;
        self.stopping = Stopping::StdinClosed {
            until_ms: now.ms + STDIN_GRACE_MS,
        };
        self.deadline()
    }

    fn is_finished(&self) -> bool {
        self.running.is_none()
    }
}

impl Drop for ProgramHost {
    /// Never leaves a process behind: kill and reap what still runs.
    fn drop(&mut self) {
        if let Some(mut running) = self.running.take() {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }
}
