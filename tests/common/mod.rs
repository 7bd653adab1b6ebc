//! Shared helpers for the end-to-end tests: start the real `tether` binary on a
//! free port with a settings file in its own temp dir, talk to it with a
//! blocking tungstenite client or with hand-built raw frames, and mint JWTs
//! independently of the binary.
//!
//! Every test starts its own server, so tests run in parallel.

#![allow(dead_code)]

use jwt_simple::prelude::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Response;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::{HeaderName, HeaderValue};
use tungstenite::{Message, WebSocket};

pub mod backend;
pub mod browser;
pub mod cluster;
pub mod control;
pub mod node;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tether");

/// The JWT secret given to servers started with [`Server::start`] (`JWT_SECRET` env).
pub const SECRET: &str = "tether-e2e-secret-0123456789abcdef-0123456789";

/// Read timeout of every client socket.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a server gets to log `listening on ws://...`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment variables the binary reads; cleared so the caller's shell cannot leak in.
const TETHER_ENV: [&str; 5] = [
    "JWT_SECRET",
    "WEBSOCKET_PORT",
    "TETHER_LOG",
    "TETHER_CONFIG",
    "STATE_DIRECTORY",
];

pub type Ws = WebSocket<TcpStream>;

// ---------------------------------------------------------------------------
// Temp dirs and commands
// ---------------------------------------------------------------------------

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A unique directory under the system temp dir, removed on drop (kept when
/// the test panicked, for inspection).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("tether-e2e-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `settings` (as is, no defaults merged) to `name` in this dir.
    pub fn write_json(&self, name: &str, settings: &Value) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(settings).unwrap()).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A `tether` command run in `dir` with a clean tether environment plus `envs`.
pub fn command(dir: &Path, envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for name in TETHER_ENV {
        cmd.env_remove(name);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `tether ARGS` in `dir` and waits for it (at most 10 s).
pub fn run(dir: &Path, envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut child = command(dir, envs)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tether");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "tether {args:?} did not exit within 10 s; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deep-merges `over` into `base` (objects key by key, anything else replaced).
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (k, v) in over {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, over) => *base = over,
    }
}

/// The settings every test server starts from: loopback, free ports, debug logs
/// (so that log-hygiene checks see as much as possible).
pub fn base_settings() -> Value {
    json!({
        "server": {
            "websocket": { "host": "127.0.0.1", "port": 0 },
            "health": { "port": 0 }
        },
        "log": { "level": "debug" }
    })
}

/// The port number right after `marker` in a log line such as
/// `listening on ws://127.0.0.1:PORT`.
pub fn port_after(line: &str, marker: &str) -> Option<u16> {
    let at = line.find(marker)? + marker.len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for settings that
/// need one fixed port, such as a health listener sharing the WebSocket port).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

// ---------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------

pub struct Server {
    child: Option<Child>,
    port: u16,
    logs: Arc<Mutex<Vec<String>>>,
    dir: PathBuf,
    config: PathBuf,
    envs: Vec<(String, String)>,
    _tmp: Option<TempDir>,
}

impl Server {
    /// Starts `tether serve` with `settings` merged over [`base_settings`], in a
    /// fresh temp dir, with `JWT_SECRET` = [`SECRET`].
    pub fn start(settings: Value) -> Server {
        let tmp = TempDir::new("srv");
        let dir = tmp.path().to_path_buf();
        let mut server = Server::start_in(&dir, settings, &[("JWT_SECRET", SECRET)]);
        server._tmp = Some(tmp);
        server
    }

    /// Starts `tether serve` in `dir` (its working directory) with `envs` and
    /// no other tether variable: without `JWT_SECRET` the key is generated
    /// into `dir/tether-data/jwt.key`.
    pub fn start_in(dir: &Path, settings: Value, envs: &[(&str, &str)]) -> Server {
        match Server::try_start_in(dir, settings, envs) {
            Ok(server) => server,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`Server::start_in`], but returns the logs when the server exits
    /// or fails to listen in time.
    pub fn try_start_in(
        dir: &Path,
        settings: Value,
        envs: &[(&str, &str)],
    ) -> Result<Server, String> {
        let mut full = base_settings();
        merge(&mut full, settings);
        let config = dir.join("tether-test.json");
        std::fs::write(&config, serde_json::to_string_pretty(&full).unwrap()).unwrap();
        let mut child = command(dir, envs)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tether serve");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line).trim_end().to_string();
                        sink.lock().unwrap().push(text.clone());
                        let _ = tx.send(text);
                    }
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        // `ws://` or, with TLS, `wss://`.
        let markers = [
            "listening on ws://127.0.0.1:",
            "listening on wss://127.0.0.1:",
        ];
        let marker = markers[0];
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(port) = markers.iter().find_map(|m| port_after(&line, m)) {
                        break port;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    std::thread::sleep(Duration::from_millis(50));
                    let logs = logs.lock().unwrap().join("\n");
                    return Err(format!(
                        "tether serve did not log `{marker}PORT` (exit status {status:?}); logs:\n{logs}"
                    ));
                }
            }
        };
        Ok(Server {
            child: Some(child),
            port,
            logs,
            dir: dir.to_path_buf(),
            config,
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _tmp: None,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Every stderr line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.logs().iter().any(|l| l.contains(needle)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics if any log line contains `secret`.
    pub fn assert_not_logged(&self, secret: &str) {
        for line in self.logs() {
            assert!(
                !line.contains(secret),
                "a secret ({} chars) appears in the log line: {line}",
                secret.len()
            );
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// Runs `tether token` with this server's config, directory and environment.
    pub fn token(
        &self,
        sub: &str,
        permissions: &[&str],
        rooms: &[&str],
        role: Option<&str>,
        ttl: &str,
    ) -> String {
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let config = self.config.to_str().unwrap().to_string();
        let permissions = permissions.join(",");
        let rooms = rooms.join(",");
        let mut args = vec!["token", "--sub", sub, "--ttl", ttl, "--config", &config];
        if !permissions.is_empty() {
            args.extend(["--permissions", &permissions]);
        }
        if !rooms.is_empty() {
            args.extend(["--rooms", &rooms]);
        }
        if let Some(role) = role {
            args.extend(["--role", role]);
        }
        let out = run(&self.dir, &envs, &args);
        assert!(
            out.status.success(),
            "tether token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "token prints one line: {stdout:?}");
        lines[0].to_string()
    }

    /// Sends SIGTERM and waits (at most 5 s, then SIGKILL) for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server running");
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let status = child.wait().expect("wait");
                panic!("tether did not exit within 5 s of SIGTERM ({status:?})");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` without waiting.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.pid();
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }

    /// Sends SIGTERM without waiting.
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Waits for the exit status after [`Server::sigterm`] (at most `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(4);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// tungstenite clients
// ---------------------------------------------------------------------------

/// Opens a TCP connection to the server with the read timeout set.
pub fn tcp(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("tcp connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    let _ = stream.set_nodelay(true);
    stream
}

/// WebSocket handshake to `ws://127.0.0.1:PORT{path}` with extra headers; the
/// answer's headers come back too.
pub fn connect_full(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, Response), tungstenite::Error> {
    let stream = tcp(port);
    let mut request = format!("ws://127.0.0.1:{port}{path}").into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    match tungstenite::client::client(request, stream) {
        Ok(pair) => Ok(pair),
        Err(HandshakeError::Failure(e)) => Err(e),
        Err(HandshakeError::Interrupted(_)) => panic!("blocking handshake interrupted"),
    }
}

/// WebSocket handshake; see [`connect_full`].
pub fn connect(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<Ws, tungstenite::Error> {
    connect_full(port, path, headers).map(|(ws, _)| ws)
}

/// The HTTP status of a refused handshake.
pub fn http_status(error: &tungstenite::Error) -> Option<u16> {
    match error {
        tungstenite::Error::Http(response) => Some(response.status().as_u16()),
        _ => None,
    }
}

/// Asserts that the upgrade is refused and returns the HTTP status.
pub fn refused(port: u16, path: &str, headers: &[(&str, &str)]) -> u16 {
    match connect(port, path, headers) {
        Ok(_) => panic!("upgrade to {path} with {headers:?} was accepted"),
        Err(e) => http_status(&e).unwrap_or_else(|| panic!("no HTTP status: {e}")),
    }
}

/// Connects without a token and reads `connected`.
pub fn open(port: u16) -> (Ws, Value) {
    let mut ws = connect(port, "/", &[]).expect("connect");
    let connected = recv_json(&mut ws);
    assert_eq!(connected["event"], "connected", "{connected}");
    (ws, connected)
}

/// Connects with `Authorization: Bearer TOKEN`, reads `connected` and
/// `authenticated`, and returns the latter.
pub fn open_authed(port: u16, token: &str) -> (Ws, Value) {
    let bearer = format!("Bearer {token}");
    let mut ws = connect(port, "/", &[("Authorization", &bearer)]).expect("connect");
    let connected = recv_json(&mut ws);
    assert_eq!(connected["event"], "connected", "{connected}");
    assert_eq!(connected["data"]["authenticated"], true, "{connected}");
    let authenticated = recv_json(&mut ws);
    assert_eq!(authenticated["event"], "authenticated", "{authenticated}");
    (ws, authenticated)
}

/// The next message that is not a Ping/Pong.
pub fn recv(ws: &mut Ws) -> Message {
    loop {
        match ws.read() {
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            Ok(message) => return message,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// The next text message as JSON, skipping Ping/Pong frames.
pub fn recv_json(ws: &mut Ws) -> Value {
    match recv(ws) {
        Message::Text(text) => serde_json::from_str(text.as_str())
            .unwrap_or_else(|e| panic!("server sent non-JSON text {text:?}: {e}")),
        other => panic!("expected a text message, got {other:?}"),
    }
}

pub fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_string())).expect("send");
}

pub fn send_json(ws: &mut Ws, value: &Value) {
    send_text(ws, &value.to_string());
}

/// Sends and returns the next JSON message.
pub fn request(ws: &mut Ws, value: &Value) -> Value {
    send_json(ws, value);
    recv_json(ws)
}

/// Reads until a close frame and returns its code (1005 when it has none).
/// Panics on a data message or a connection that ends without a close frame.
pub fn expect_close(ws: &mut Ws) -> u16 {
    loop {
        match ws.read() {
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            Ok(Message::Close(frame)) => {
                // Let tungstenite answer the close; ignore how the socket ends.
                let _ = ws.flush();
                return frame.map_or(1005, |f| u16::from(f.code));
            }
            Ok(other) => panic!("expected a close frame, got {other:?}"),
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
}

/// Sends a close frame with code 1000 and returns the code the server answers
/// with (`None` when the socket ended without a close frame).
pub fn close_normally(ws: &mut Ws) -> Option<u16> {
    use tungstenite::protocol::frame::coding::CloseCode;
    use tungstenite::protocol::CloseFrame;
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .expect("send close");
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return Some(frame.map_or(1005, |f| u16::from(f.code))),
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => return None,
            Err(e) => panic!("unexpected error while closing: {e}"),
        }
    }
}

/// Asserts `message` is an error with `code`, a message and a timestamp.
pub fn assert_error(message: &Value, code: &str) {
    assert_eq!(message["event"], "error", "{message}");
    assert_eq!(message["data"]["code"], code, "{message}");
    assert!(message["data"]["message"].is_string(), "{message}");
    let ts = message["data"]["timestamp"]
        .as_u64()
        .unwrap_or_else(|| panic!("timestamp is not a unix time: {message}"));
    let now = unix_now();
    assert!(
        ts + 60 >= now && ts <= now + 60,
        "timestamp {ts} far from {now}"
    );
}

/// Sends `ping` and expects `pong`.
pub fn assert_pong(ws: &mut Ws) {
    let pong = request(ws, &json!({"event": "ping"}));
    assert_eq!(pong["event"], "pong", "{pong}");
    assert!(pong["data"]["time"].is_u64(), "{pong}");
}

/// A fresh client on `port` still gets `pong`.
pub fn assert_serving(port: u16) {
    let (mut ws, _) = open(port);
    assert_pong(&mut ws);
}

/// Retries `connect` until it succeeds (limits are released asynchronously).
pub fn connect_eventually(port: u16, timeout: Duration) -> Ws {
    let deadline = Instant::now() + timeout;
    loop {
        match connect(port, "/", &[]) {
            Ok(ws) => return ws,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("still refused after {timeout:?}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Raw TCP and hand-built frames
// ---------------------------------------------------------------------------

/// Sends `bytes` on a new connection and returns the first line of the answer
/// ("" when the server closed without answering).
pub fn http_exchange(port: u16, bytes: &[u8]) -> String {
    let mut stream = tcp(port);
    let _ = stream.write_all(bytes);
    read_status_line(&mut stream)
}

/// Reads up to the first CRLF; "" on EOF or a reset.
pub fn read_status_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                line.push(byte[0]);
                if line.ends_with(b"\r\n") {
                    line.truncate(line.len() - 2);
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the status line: {e}"),
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// The status code of an HTTP status line such as `HTTP/1.1 426 Upgrade Required`.
pub fn status_of(line: &str) -> Option<u16> {
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame.
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(fin, opcode, payload, Some(MASK))
}

/// A frame, masked or not (a server-style frame from a client is a protocol error).
pub fn frame_with(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (opcode & 0x0f)];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xffff {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A frame from the server (never masked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 0x8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A WebSocket connection driven by hand: raw bytes out, parsed frames in.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Ping frames received so far (never answered automatically).
    pub pings: usize,
}

/// The key of RFC 6455's example; any valid 16-byte base64 key does.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The upgrade request head for `path` with extra header lines.
pub fn upgrade_request(port: u16, path: &str, extra: &[(&str, &str)]) -> String {
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

impl RawWs {
    /// Upgrades by hand; panics unless the answer is 101.
    pub fn connect(port: u16, extra: &[(&str, &str)]) -> RawWs {
        let mut stream = tcp(port);
        stream
            .write_all(upgrade_request(port, "/", extra).as_bytes())
            .unwrap();
        let mut raw = RawWs {
            stream,
            buf: Vec::new(),
            pings: 0,
        };
        let head = raw.read_head();
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "expected 101 Switching Protocols, got {head:?}"
        );
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "wrong Sec-WebSocket-Accept in {head:?}"
        );
        raw
    }

    /// Upgrades and reads `connected`.
    pub fn open(port: u16) -> RawWs {
        let mut raw = RawWs::connect(port, &[]);
        let connected = raw.recv_json();
        assert_eq!(connected["event"], "connected", "{connected}");
        raw
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                0
            }
            Err(e) => panic!("raw read failed: {e}"),
        }
    }

    fn read_head(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..at + 4).collect();
                return String::from_utf8_lossy(&head).into_owned();
            }
            if self.fill() == 0 {
                return String::from_utf8_lossy(&self.buf).into_owned();
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("raw write");
    }

    /// Sends one masked frame.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send(&frame(fin, opcode, payload));
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(true, 0x1, text.as_bytes());
    }

    /// The next frame, or `None` when the server closed the connection.
    pub fn read_frame(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if self.fill() == 0 {
                return None;
            }
        }
    }

    /// The next data frame (Ping frames are counted, not answered), as JSON.
    pub fn recv_json(&mut self) -> Value {
        loop {
            let frame = self
                .read_frame()
                .expect("connection closed before a message");
            match frame.opcode {
                0x9 => self.pings += 1,
                0xA => {}
                0x1 => {
                    assert!(frame.fin, "server fragments are not expected here");
                    return serde_json::from_slice(&frame.payload).expect("JSON text");
                }
                _ => panic!("expected a text frame, got {frame:?}"),
            }
        }
    }

    /// Reads until a close frame and returns its code (1005 when empty).
    /// Data frames before it are skipped.
    pub fn expect_close(&mut self) -> u16 {
        loop {
            let frame = self
                .read_frame()
                .expect("connection ended without a close frame");
            match frame.opcode {
                0x8 => return frame.close_code().unwrap_or(1005),
                0x9 => self.pings += 1,
                _ => {}
            }
        }
    }

    /// After a close: true when the server ends the TCP connection within `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            let mut chunk = [0u8; 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    return true
                }
                Err(_) => return false,
            }
            if Instant::now() > deadline {
                return false;
            }
        }
    }
}

/// Parses one complete unmasked frame from the start of `buf`.
pub fn parse_server_frame(buf: &[u8]) -> Option<(ServerFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let fin = buf[0] & 0x80 != 0;
    assert_eq!(buf[0] & 0x70, 0, "server set reserved bits");
    let opcode = buf[0] & 0x0f;
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    let (len, header) = match buf[1] & 0x7f {
        126 => {
            if buf.len() < 4 {
                return None;
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return None;
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    if buf.len() < header + len {
        return None;
    }
    let frame = ServerFrame {
        fin,
        opcode,
        payload: buf[header..header + len].to_vec(),
    };
    Some((frame, header + len))
}

// ---------------------------------------------------------------------------
// JWTs minted independently of the binary
// ---------------------------------------------------------------------------

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding.
pub fn b64url(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes base64url (padding optional); panics on a bad character.
pub fn b64url_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'+' => 62,
            b'/' => 63,
            _ => B64
                .iter()
                .position(|&x| x == c)
                .unwrap_or_else(|| panic!("not base64url: {c:?}")) as u32,
        };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// The claims (middle part) of a JWT.
pub fn jwt_claims(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {token}");
    serde_json::from_slice(&b64url_decode(parts[1])).expect("claims are JSON")
}

/// The header (first part) of a JWT.
pub fn jwt_header(token: &str) -> Value {
    let first = token.split('.').next().unwrap();
    serde_json::from_slice(&b64url_decode(first)).expect("header is JSON")
}

/// An HS256 token signed with `secret`. `sub`/`exp` `None` leave the claim
/// out; `custom` (an object) adds `permissions`, `rooms`, `role`, ...
pub fn mint(secret: &[u8], sub: Option<&str>, exp: Option<u64>, custom: Value) -> String {
    let custom: serde_json::Map<String, Value> = match custom {
        Value::Object(map) => map,
        Value::Null => serde_json::Map::new(),
        other => panic!("custom claims must be an object, got {other}"),
    };
    let now = unix_now();
    let mut claims =
        Claims::with_custom_claims(custom, jwt_simple::prelude::Duration::from_secs(3600));
    claims.issued_at = Some(jwt_simple::prelude::Duration::from_secs(now));
    claims.invalid_before = Some(jwt_simple::prelude::Duration::from_secs(now));
    claims.expires_at = exp.map(jwt_simple::prelude::Duration::from_secs);
    claims.subject = sub.map(str::to_string);
    HS256Key::from_bytes(secret)
        .authenticate(claims)
        .expect("sign")
}

/// A valid token for the test [`SECRET`].
pub fn mint_valid(sub: &str, permissions: &[&str], rooms: &[&str], ttl_s: u64) -> String {
    mint(
        SECRET.as_bytes(),
        Some(sub),
        Some(unix_now() + ttl_s),
        json!({"permissions": permissions, "rooms": rooms}),
    )
}

/// An unsigned token (`alg: none`) with these claims.
pub fn alg_none_token(claims: &Value) -> String {
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64url(claims.to_string().as_bytes());
    format!("{header}.{payload}.")
}

// ---------------------------------------------------------------------------
// Examples
// ---------------------------------------------------------------------------

/// The built example `name` (`target/<profile>/examples/NAME`, beside this
/// test binary's `deps/`), brought up to date with `cargo build --example`
/// so that a test run of one target never uses a stale one.
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/TEST");
    let path = profile_dir.join("examples").join(name);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--quiet", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        build.arg("--release");
    }
    let out = build.output().expect("run cargo build --example");
    assert!(
        out.status.success(),
        "cargo build --example {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(path.exists(), "{} missing after the build", path.display());
    path
}

// ---------------------------------------------------------------------------
// Clients, hosts and the server's memory
// ---------------------------------------------------------------------------

/// Connects a client with `permissions` and returns it with its `clientId`.
pub fn client(port: u16, sub: &str, permissions: &[&str], rooms: &[&str]) -> (Ws, String) {
    let token = mint_valid(sub, permissions, rooms, 3600);
    let (ws, authenticated) = open_authed(port, &token);
    let id = authenticated["data"]["clientId"]
        .as_str()
        .expect("clientId")
        .to_string();
    (ws, id)
}

/// Connects a host (permission `host`) and registers `events`.
pub fn host(port: u16, sub: &str, events: Value) -> Ws {
    let (mut ws, _) = client(port, sub, &["host"], &[]);
    let reply = request(
        &mut ws,
        &json!({"event": "host.register", "data": {"events": events}, "requestId": "reg"}),
    );
    assert_eq!(reply["event"], "host.registered", "{reply}");
    assert_eq!(reply["requestId"], "reg", "{reply}");
    ws
}

/// `VmRSS` and `VmHWM` (peak) of a process, in bytes.
pub fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("{name} not in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The per-connection ceiling the server logs at start.
pub fn logged_ceiling(server: &Server) -> u64 {
    let line = server
        .logs()
        .into_iter()
        .find(|l| l.contains("memory ceiling:"))
        .expect("the memory ceiling is logged");
    let after = line.split(" x ").nth(1).expect("N x B bytes");
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("bytes per connection")
}

/// A client whose socket offers a 4 KiB receive window from the start (set
/// before connecting, so the window never shrinks under the sender), so that
/// little of what it does not read waits in its kernel buffers.
pub fn slow_client(port: u16, sub: &str) -> Ws {
    use std::os::fd::FromRawFd;
    let rcvbuf: libc::c_int = 4096;
    // SAFETY: a new socket whose fd the TcpStream owns from here on;
    // setsockopt and connect get pointers to live values of the right size.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket()");
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&rcvbuf as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_RCVBUF");
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect()");
        stream
    };
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://127.0.0.1:{port}/")
        .into_client_request()
        .unwrap();
    let bearer = format!("Bearer {}", mint_valid(sub, &[], &[], 3600));
    request
        .headers_mut()
        .insert("Authorization", bearer.parse().unwrap());
    let (mut ws, _) = tungstenite::client::client(request, stream).expect("handshake");
    assert_eq!(recv_json(&mut ws)["event"], "connected");
    assert_eq!(recv_json(&mut ws)["event"], "authenticated");
    ws
}

/// The worst case (MiB) the server logs at start: `... = N MiB worst case`.
pub fn logged_worst_case_mib(server: &Server) -> u64 {
    let line = server
        .logs()
        .into_iter()
        .find(|l| l.contains("memory ceiling:"))
        .expect("the memory ceiling is logged");
    line.split(" = ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("N MiB worst case")
}

/// The port of the `health endpoints on http://127.0.0.1:PORT` log line.
pub fn health_port(server: &Server) -> u16 {
    let marker = "health endpoints on http://127.0.0.1:";
    assert!(server.wait_log(marker, Duration::from_secs(5)));
    server
        .logs()
        .iter()
        .find_map(|l| port_after(l, marker))
        .expect("a port in the health listening line")
}

// ---------------------------------------------------------------------------
// Restarts and Python
// ---------------------------------------------------------------------------

impl Server {
    /// SIGTERM, then the same settings, directory and environment again on
    /// the same WebSocket port (as a supervisor restarting the gateway).
    pub fn restart(&mut self) {
        let port = self.port;
        self.stop();
        let text = std::fs::read_to_string(&self.config).expect("read the test settings");
        let mut settings: Value = serde_json::from_str(&text).expect("the test settings");
        settings["server"]["websocket"]["port"] = json!(port);
        let envs: Vec<(&str, &str)> = self
            .envs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut next = Server::start_in(&self.dir.clone(), settings, &envs);
        assert_eq!(next.port, port, "restarted on another port");
        self.child = next.child.take();
        self.logs = Arc::clone(&next.logs);
    }
}

/// The minimum `websockets` the Python client library and examples need.
const WEBSOCKETS_REQUIREMENT: &str = "websockets>=14";

/// `python3` able to import `tether` (clients/python) and `websockets`.
/// Without `websockets` on the machine, it is installed once (per test
/// process; across processes through an atomic rename) with pip into
/// `target/tmp/pydeps-pyX.Y`; if that is impossible every caller panics at
/// once with one line saying what is missing and how to install it.
pub fn python3() -> Command {
    static DEPS: std::sync::OnceLock<Result<Option<PathBuf>, String>> = std::sync::OnceLock::new();
    let deps = match DEPS.get_or_init(python_deps) {
        Ok(deps) => deps.clone(),
        Err(problem) => panic!("{problem}"),
    };
    let library = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python");
    let mut cmd = Command::new("python3");
    cmd.env("PYTHONPATH", python_path(&library, deps.as_deref()));
    cmd
}

fn python_path(library: &Path, deps: Option<&Path>) -> std::ffi::OsString {
    let paths = std::iter::once(library).chain(deps);
    std::env::join_paths(paths).expect("paths without ':'")
}

/// Where `websockets` comes from: the machine's Python (`None`) or a
/// directory installed here.
fn python_deps() -> Result<Option<PathBuf>, String> {
    let install = format!("python3 -m pip install '{WEBSOCKETS_REQUIREMENT}'");
    let version = Command::new("python3")
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .map_err(|e| {
            format!("python3 not found ({e}): the Python tests need python3 and `{install}`")
        })?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let check = |deps: Option<&Path>| {
        let probe = "import sys, websockets; \
                     sys.exit(int(websockets.__version__.split('.')[0]) < 14)";
        Command::new("python3")
            .args(["-c", probe])
            .env("PYTHONPATH", deps.map(Path::as_os_str).unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if check(None) {
        return Ok(None);
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.join(format!("pydeps-py{version}"));
    if check(Some(&dir)) {
        return Ok(Some(dir));
    }
    // A copy that does not import (a broken or older install) is replaced.
    let _ = std::fs::remove_dir_all(&dir);
    let staging = tmp.join(format!("pydeps-py{version}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    eprintln!(
        "python3 lacks `{WEBSOCKETS_REQUIREMENT}`; installing it into {}",
        dir.display()
    );
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--timeout", "15", "--retries", "1", "--target"])
        .arg(&staging)
        .arg(WEBSOCKETS_REQUIREMENT)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("python3 -m pip: {e}"))?;
    let why = String::from_utf8_lossy(&out.stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    if out.status.success() {
        // Another test process may have won the race: either copy works.
        if std::fs::rename(&staging, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        if check(Some(&dir)) {
            return Ok(Some(dir));
        }
    }
    let _ = std::fs::remove_dir_all(&staging);
    Err(format!(
        "python3 has no `{WEBSOCKETS_REQUIREMENT}` and pip could not install it ({why}): run `{install}`"
    ))
}

/// Whether `program ARGS` runs and exits 0 (output discarded): a probe for
/// a test's prerequisite.
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Resident memory of a process, from /proc (KiB).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Panics at once when `child` (an example host) has exited: waiting for it
/// to register would only end in a misleading timeout or `rate_limited`.
pub fn assert_running(child: &mut Child, what: &str) {
    if let Ok(Some(status)) = child.try_wait() {
        panic!("{what} exited ({status}); its stderr is above");
    }
}

/// The value of metric `name` (no labels) in a Prometheus text answer.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

/// A child process killed (by its own pid) when the test ends.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// examples/sound_bot_host.py as a host of the gateway on `port`, with `args`.
pub fn sound_bot(port: u16, host_token: &str, args: &[&str]) -> KillOnDrop {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sound_bot_host.py");
    KillOnDrop(
        python3()
            .arg(&script)
            .args(["--url", &format!("ws://127.0.0.1:{port}")])
            .args(args)
            .env("TETHER_HOST_TOKEN", host_token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs examples/sound_bot_host.py"),
    )
}

/// A TCP connection from `source` (a loopback address such as 127.0.0.2) to
/// 127.0.0.1:`port`.
pub fn tcp_from(source: std::net::Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    fn sockaddr(ip: std::net::Ipv4Addr, port: u16) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        }
    }
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket, owned by `stream` from here on; the address
    // structures outlive the calls that read them.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(source, 0);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sockaddr(std::net::Ipv4Addr::LOCALHOST, port);
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(Duration::from_millis(200)))?;
        Ok(stream)
    }
}
