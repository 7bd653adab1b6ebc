//! wss against plain ws in the same run: echo throughput, handshakes per
//! second, and idle memory per connection, against two `tether echo`
//! processes (one with `--tls-self-signed`). Prints each figure and the
//! wss/ws ratio.
//!
//! Run: `cargo bench --bench tls` (the bench profile, with the dist profile's
//! fat LTO: the figures are the shipped binary's; everything on loopback,
//! every loop bounded in count and time). The client runs on the same
//! machine and does its own TLS work, so both sides share the cores.

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

const BIN: &str = env!("CARGO_BIN_EXE_tether");
/// Time given to each measurement (and a cap on its count).
const RUN_FOR: Duration = Duration::from_secs(3);
const MAX_HANDSHAKES: usize = 20_000;
/// Messages in flight in the throughput runs.
const WINDOW: usize = 8;
/// Idle connections opened for the memory figure.
const IDLE_CONNECTIONS: usize = 400;

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

struct Echo {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Echo {
    fn start(tls: bool) -> Echo {
        let dir = std::env::temp_dir().join(format!(
            "tether-bench-tls-{}-{}",
            std::process::id(),
            if tls { "wss" } else { "ws" }
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut cmd = Command::new(BIN);
        cmd.args(["echo", "--host", "127.0.0.1", "--port", "0"])
            .env("STATE_DIRECTORY", dir.join("state"))
            .env("TETHER_LOG", "info")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if tls {
            cmd.arg("--tls-self-signed");
        }
        let mut child = cmd.spawn().expect("spawn tether echo");
        let stderr = child.stderr.take().expect("stderr");
        // Read the log on a thread (it keeps draining it so the server never
        // blocks on a full pipe); wait at most 10 s for the listening line.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let marker = if tls {
            "listening on wss://127.0.0.1:"
        } else {
            "listening on ws://127.0.0.1:"
        };
        let port = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("tether echo did not log its port within 10 s");
            if let Some(at) = line.find(marker) {
                let digits: String = line[at + marker.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                break digits.parse().expect("port");
            }
        };
        std::thread::spawn(move || for _ in rx {});
        Echo { child, port, dir }
    }

    /// CPU time the server process has used (user + system), in seconds.
    fn cpu_s(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which is in parentheses).
        let after = stat.rsplit(')').next().unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of proc_pid_stat(5); the
        // first field after the name is field 3.
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        (ticks(11) + ticks(12)) as f64 / hz
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn client_config(cert: &Path, resume: bool) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert).expect("certificate file") {
        roots.add(cert.expect("certificate")).expect("root");
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Arc::new(config)
}

fn connect(port: u16, tls: Option<&Arc<ClientConfig>>) -> WebSocket<Box<dyn Stream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (stream, url): (Box<dyn Stream>, String) = match tls {
        Some(config) => {
            let session = ClientConnection::new(
                Arc::clone(config),
                ServerName::try_from("localhost").expect("name"),
            )
            .expect("client session");
            (
                Box::new(StreamOwned::new(session, tcp)),
                format!("wss://localhost:{port}/"),
            )
        }
        None => (Box::new(tcp), format!("ws://127.0.0.1:{port}/")),
    };
    let request = url.into_client_request().expect("request");
    match tungstenite::client::client(request, stream) {
        Ok((ws, _)) => ws,
        Err(e) => panic!("handshake: {e}"),
    }
}

/// A rate, and the server CPU seconds spent per unit.
struct Figure {
    rate: f64,
    cpu_per_unit: f64,
}

/// Runs `f` (which returns units done and seconds taken) against `echo`.
fn measure(echo: &Echo, f: impl FnOnce() -> (f64, f64)) -> Figure {
    let cpu = echo.cpu_s();
    let (units, secs) = f();
    let cpu = echo.cpu_s() - cpu;
    Figure {
        rate: units / secs,
        cpu_per_unit: cpu / units.max(1.0),
    }
}

/// Echoes `size`-byte binary messages with `WINDOW` in flight: MB echoed, seconds.
fn throughput(port: u16, tls: Option<&Arc<ClientConfig>>, size: usize) -> (f64, f64) {
    let mut ws = connect(port, tls);
    let payload = vec![0x5au8; size];
    let start = Instant::now();
    let (mut sent, mut received) = (0usize, 0usize);
    while start.elapsed() < RUN_FOR {
        while sent - received < WINDOW {
            ws.write(Message::binary(payload.clone())).expect("write");
            sent += 1;
        }
        ws.flush().expect("flush");
        match ws.read().expect("read") {
            Message::Binary(b) => {
                assert_eq!(b.len(), size);
                received += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    while received < sent {
        if let Message::Binary(_) = ws.read().expect("read") {
            received += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = ws.close(None);
    ((received * size) as f64 / 1e6, secs)
}

/// Connect, upgrade, one echo, close: how many, seconds.
fn handshakes(port: u16, tls: Option<&Arc<ClientConfig>>) -> (f64, f64) {
    let start = Instant::now();
    let mut count = 0;
    while start.elapsed() < RUN_FOR && count < MAX_HANDSHAKES {
        let mut ws = connect(port, tls);
        ws.send(Message::text("hi")).expect("send");
        let _ = ws.read().expect("echo");
        let _ = ws.close(None);
        let _ = ws.flush();
        count += 1;
    }
    (count as f64, start.elapsed().as_secs_f64())
}

/// Server RSS growth per open, idle WebSocket (after one small echo each).
fn idle_bytes(echo: &Echo, tls: Option<&Arc<ClientConfig>>) -> f64 {
    let before = echo.rss_kib();
    let mut open = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        let mut ws = connect(echo.port, tls);
        ws.send(Message::text("hello")).expect("send");
        let _ = ws.read().expect("echo");
        open.push(ws);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = echo.rss_kib();
    drop(open);
    (after.saturating_sub(before) * 1024) as f64 / IDLE_CONNECTIONS as f64
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run only for bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("tls bench: run with `cargo bench --bench tls`");
        return;
    }
    let ws = Echo::start(false);
    let wss = Echo::start(true);
    let cert = wss.dir.join("state").join("tls-cert.pem");
    let full = client_config(&cert, false);
    let resumed = client_config(&cert, true);

    println!("tether wss vs ws, one client on the same machine, loopback, {RUN_FOR:?} per figure");
    println!("(rate: what the client saw; cpu: server CPU time per unit, from /proc)");
    let row = |name: &str, unit: &str, cpu_unit: &str, scale: f64, plain: &Figure, tls: &Figure| {
        println!(
            "{name:<30} ws {:>9.1} {unit:<4} wss {:>9.1} {unit:<4} rate wss/ws {:>4.0} % | cpu ws {:>8.1} wss {:>8.1} {cpu_unit} -> wss/ws speed {:>4.0} %",
            plain.rate,
            tls.rate,
            100.0 * tls.rate / plain.rate,
            plain.cpu_per_unit * scale,
            tls.cpu_per_unit * scale,
            100.0 * plain.cpu_per_unit / tls.cpu_per_unit.max(f64::MIN_POSITIVE),
        );
    };
    for size in [1024, 16 * 1024, 256 * 1024] {
        let plain = measure(&ws, || throughput(ws.port, None, size));
        let tls = measure(&wss, || throughput(wss.port, Some(&full), size));
        row(
            &format!("echo {size} B messages"),
            "MB/s",
            "ms/MB",
            1e3,
            &plain,
            &tls,
        );
    }
    let plain = measure(&ws, || handshakes(ws.port, None));
    let tls = measure(&wss, || handshakes(wss.port, Some(&full)));
    row("handshakes, full TLS 1.3", "/s", "us", 1e6, &plain, &tls);
    let tls = measure(&wss, || handshakes(wss.port, Some(&resumed)));
    row("handshakes, resumed TLS 1.3", "/s", "us", 1e6, &plain, &tls);
    let plain = idle_bytes(&ws, None);
    let tls = idle_bytes(&wss, Some(&full));
    println!(
        "{:<30} ws {plain:>9.0} B    wss {tls:>9.0} B    (server RSS growth / {IDLE_CONNECTIONS})",
        "idle connection memory"
    );
}
