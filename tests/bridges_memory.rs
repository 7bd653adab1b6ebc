//! SPEC §8 addition for bridged hosts (SPEC §11): a `command` host and a
//! `url` host pushed to their bounds (a line of the longest length, a
//! program that stops reading its stdin, a slow backend with
//! `max_in_flight` requests of the largest size in flight and more waiting)
//! while the gateway's peak RSS stays under the worst case it logged.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const MAX_MESSAGE: usize = 1 << 20;
const MAX_OUTBOUND: usize = 4 << 20;
const CLIENTS: usize = 12;
/// Requests each client sends to each host.
const REQUESTS: usize = 6;

/// Registers `stuck.echo`, writes one line of almost `MAX_MESSAGE` bytes in
/// pieces, then never reads its stdin again.
fn program() -> String {
    format!(
        r#"
import json, sys, time
sys.stdout.write(json.dumps({{"event": "host.register", "data": {{"events": {{"stuck.echo": None}}}}}}) + "\n")
sys.stdout.flush()
line = json.dumps({{"event": "host.broadcast", "data": {{"event": "long", "data": "x" * ({MAX_MESSAGE} - 200)}}}})
for i in range(0, len(line), 4096):
    sys.stdout.write(line[i:i + 4096])
    sys.stdout.flush()
sys.stdout.write("\n")
sys.stdout.flush()
time.sleep(600)
"#
    )
}

/// Answers every POST after 2 s with a body of almost `MAX_MESSAGE` bytes.
fn backend() -> String {
    format!(
        r#"
import http.server, json, sys, time
BODY = json.dumps({{"event": "slow.ok", "data": "y" * ({MAX_MESSAGE} - 200)}}).encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(2)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#
    )
}

/// The backend process, killed on drop.
struct Backend {
    child: std::process::Child,
    port: u16,
}

impl Backend {
    /// Starts the backend on a port free a moment ago; waits until it listens.
    fn start(dir: &Path) -> Backend {
        std::fs::write(dir.join("backend.py"), backend()).unwrap();
        let port = free_port();
        let child = std::process::Command::new("python3")
            .args(["backend.py", &port.to_string()])
            .current_dir(dir)
            .spawn()
            .expect("start the backend (python3)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the backend does not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Backend { child, port }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmHWM` (peak RSS) or `VmRSS` of `pid`, in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// The worst case in MiB from `memory ceiling: N connections x B bytes = M MiB worst case`.
fn logged_worst_case_mib(server: &Server) -> u64 {
    let line = server
        .logs()
        .into_iter()
        .find(|l| l.contains("memory ceiling:") && l.contains("MiB worst case"))
        .expect("the memory ceiling is logged at start");
    let at = line.find("= ").unwrap() + 2;
    line[at..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no MiB figure in {line}"))
}

/// Sends `REQUESTS` requests of almost `MAX_MESSAGE` bytes to each host,
/// then reads answers until every one came or 20 s passed; returns the
/// error codes seen.
fn push(port: u16, token: &str) -> Vec<String> {
    let (mut ws, _) = open_authed(port, token);
    let data = "z".repeat(MAX_MESSAGE - 200);
    let mut rid = 0;
    for _ in 0..REQUESTS {
        for event in ["stuck.echo", "slow"] {
            rid += 1;
            send_json(
                &mut ws,
                &json!({"event": event, "data": data, "requestId": rid}),
            );
        }
    }
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut codes = Vec::new();
    let mut answered = 0;
    while answered < rid && Instant::now() < deadline {
        let text = match ws.read() {
            Ok(tungstenite::Message::Text(text)) => text,
            Ok(_) => continue,
            Err(tungstenite::Error::Io(_)) => continue,
            Err(_) => break,
        };
        let Ok(message) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if message.get("requestId").is_some() {
            answered += 1;
            if let Some(code) = message["data"]["code"].as_str() {
                codes.push(code.to_string());
            }
        }
    }
    codes
}

#[test]
fn bridged_hosts_at_their_bounds_stay_under_the_logged_worst_case() {
    let dir = TempDir::new("bridges-memory");
    std::fs::write(dir.path().join("stuck.py"), program()).unwrap();
    let backend = Backend::start(dir.path());
    let settings = json!({
        "limits": {"max_connections": 16, "max_connections_per_ip": 16,
                   "max_messages_per_minute": 100000,
                   "max_message_bytes": MAX_MESSAGE, "max_outbound_bytes": MAX_OUTBOUND},
        "host": {"request_timeout_ms": 15000},
        "hosts": [
            {"name": "stuck", "command": ["python3", "stuck.py"]},
            {"name": "slow", "url": format!("http://127.0.0.1:{}/", backend.port),
             "events": {"slow": null}, "max_in_flight": 8}
        ],
        "log": {"level": "info"}
    });
    let server = Server::start_in(dir.path(), settings, &[("JWT_SECRET", SECRET)]);
    let worst = logged_worst_case_mib(&server) << 20;
    assert!(
        server.wait_log("bridged hosts memory ceiling:", Duration::from_secs(5)),
        "{:?}",
        server.logs()
    );
    let pid = server.pid();
    // The program has registered and written its long line.
    let token = mint_valid("pusher", &[], &[], 3600);
    let (mut probe, _) = open_authed(server.port(), &token);
    wait_until_served(&mut probe, "stuck.echo");
    let start_rss = status_bytes(pid, "VmRSS:");

    let port = server.port();
    let pushers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let token = token.clone();
            std::thread::spawn(move || push(port, &token))
        })
        .collect();
    let codes: Vec<String> = pushers
        .into_iter()
        .flat_map(|p| p.join().unwrap())
        .collect();
    let peak = status_bytes(pid, "VmHWM:");
    println!(
        "RSS at start {} KiB, peak {} KiB; logged worst case {} MiB; answers with errors: {}",
        start_rss >> 10,
        peak >> 10,
        worst >> 20,
        codes.len()
    );
    // Both hosts were pushed past their bounds: the clients heard.
    assert!(
        codes.iter().any(|c| c == "host_unavailable"),
        "no request was refused: {codes:?}"
    );
    let logs = server.logs().join("\n");
    assert!(logs.contains("host stuck: reads too slowly"), "{logs}");
    assert!(
        logs.contains("host slow: over limits.max_outbound_bytes"),
        "{logs}"
    );
    // The gateway held real data meanwhile, and never more than it said.
    assert!(
        peak > start_rss + (8 << 20),
        "peak {peak}, start {start_rss}"
    );
    assert!(
        peak < worst,
        "peak RSS {peak} over the logged worst case {worst}"
    );
}

/// Asks `event` until its host serves it.
fn wait_until_served(ws: &mut Ws, event: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = request(ws, &json!({"event": event, "data": 0, "requestId": 1}));
        if answer["data"]["code"] != "unknown_event" {
            return;
        }
        assert!(Instant::now() < deadline, "{event} is never served");
        std::thread::sleep(Duration::from_millis(50));
    }
}
