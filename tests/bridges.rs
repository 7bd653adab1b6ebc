//! Bridged hosts (SPEC §11) end to end: real child programs (small Python
//! scripts written by each test) as hosts on stdin/stdout of the real binary.

mod common;

use common::backend::Backend;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// A program host: registers its events, answers `host.request` by event,
/// writes its pid to `pid.N` (N counting its starts) and a stderr line.
const PROGRAM: &str = r#"
import json, os, sys, time
n = 0
while os.path.exists("pid.%d" % n):
    n += 1
open("pid.%d" % n, "w").write(str(os.getpid()))
def send(m):
    sys.stdout.write(json.dumps(m) + "\n")
    sys.stdout.flush()
sys.stderr.write("ready as %s\n" % os.environ.get("TETHER_HOST_NAME"))
sys.stderr.flush()
events = {e: None for e in ["echo.me", "who.name", "fail.it", "crash.now", "big.line", "stall"]}
send({"event": "host.register", "data": {"events": events}, "requestId": 1})
for line in sys.stdin:
    m = json.loads(line)
    if m["event"] != "host.request":
        continue
    d = m["data"]
    ev = d["event"]
    if ev == "echo.me":
        send({"event": "host.reply", "data": {"id": d["id"], "event": "echoed", "data": d["data"]}})
    elif ev == "who.name":
        send({"event": "host.reply", "data": {"id": d["id"], "event": "name",
              "data": {"name": os.environ["TETHER_HOST_NAME"], "cwd": os.getcwd(), "sub": d["sub"]}}})
    elif ev == "fail.it":
        send({"event": "host.reply", "data": {"id": d["id"], "error": {"code": "nope", "message": "refused"}}})
    elif ev == "crash.now":
        sys.stderr.write("crashing now\n")
        sys.stderr.flush()
        sys.exit(3)
    elif ev == "big.line":
        sys.stdout.write("x" * 100000 + "\n")
        sys.stdout.flush()
    elif ev == "stall":
        # Stops reading its stdin (and ignores SIGTERM) for good.
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(120)
"#;

fn program_settings(extra: Value) -> Value {
    let mut settings = json!({
        "limits": {"max_connections_per_ip": 50, "max_messages_per_minute": 600},
        "hosts": [{"name": "bot", "command": ["python3", "host.py"]}]
    });
    merge(&mut settings, extra);
    settings
}

/// A server with the program host in its directory, once the host registered.
fn start_with_program(dir: &TempDir, extra: Value) -> Server {
    std::fs::write(dir.path().join("host.py"), PROGRAM).unwrap();
    let server = Server::start_in(
        dir.path(),
        program_settings(extra),
        &[("JWT_SECRET", SECRET)],
    );
    assert!(
        server.wait_log("host bot: ready as bot", Duration::from_secs(10)),
        "{:?}",
        server.logs()
    );
    server
}

fn client(server: &Server) -> Ws {
    let token = mint_valid("alice", &[], &[], 3600);
    open_authed(server.port(), &token).0
}

/// Requests `event` until the host serves it (it registers right after starting).
fn ask(ws: &mut Ws, event: &str, data: Value, rid: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = request(ws, &json!({"event": event, "data": data, "requestId": rid}));
        let unknown = answer["data"]["code"] == "unknown_event";
        if !unknown || Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pid_file(dir: &Path, n: usize) -> Option<i32> {
    std::fs::read_to_string(dir.join(format!("pid.{n}")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` is gone: neither running nor a zombie (no /proc entry).
fn gone(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_program_answers_fails_and_knows_its_name_and_directory() {
    let dir = TempDir::new("prog-answers");
    let server = start_with_program(&dir, json!({}));
    let mut ws = client(&server);
    let echoed = ask(&mut ws, "echo.me", json!({"n": [1, 2]}), 7);
    assert_eq!(
        echoed,
        json!({"event": "echoed", "data": {"n": [1, 2]}, "requestId": 7})
    );
    let failed = ask(&mut ws, "fail.it", json!(null), 8);
    assert_error(&failed, "nope");
    assert_eq!(failed["requestId"], 8);
    let name = ask(&mut ws, "who.name", json!(null), 9);
    assert_eq!(name["data"]["name"], "bot", "{name}");
    assert_eq!(name["data"]["sub"], "alice", "{name}");
    let cwd = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(name["data"]["cwd"], cwd.to_str().unwrap(), "{name}");
}

#[test]
fn a_crashing_program_restarts_with_growing_pauses_and_is_reaped() {
    let dir = TempDir::new("prog-crash");
    let server = start_with_program(&dir, json!({}));
    let mut ws = client(&server);
    let crashed = ask(&mut ws, "crash.now", json!(null), 1);
    assert_error(&crashed, "host_unavailable");
    assert!(server.wait_log("host bot: crashing now", Duration::from_secs(5)));
    assert!(server.wait_log("starting it again in 1000 ms", Duration::from_secs(5)));
    let first = pid_file(dir.path(), 0).unwrap();
    wait_until("the first program reaped", Duration::from_secs(5), || {
        gone(first)
    });
    // Its events went with it until it is back.
    let meanwhile = request(&mut ws, &json!({"event": "echo.me", "requestId": 2}));
    assert_error(&meanwhile, "unknown_event");
    let started = Instant::now();
    let back = ask(&mut ws, "echo.me", json!(1), 3);
    assert_eq!(back["event"], "echoed", "{back}");
    assert!(started.elapsed() >= Duration::from_millis(500), "paused");
    let crashed = ask(&mut ws, "crash.now", json!(null), 4);
    assert_error(&crashed, "host_unavailable");
    assert!(server.wait_log("starting it again in 2000 ms", Duration::from_secs(5)));
    let second = pid_file(dir.path(), 1).unwrap();
    wait_until("the second program reaped", Duration::from_secs(5), || {
        gone(second)
    });
    let again = ask(&mut ws, "echo.me", json!(2), 5);
    assert_eq!(again["event"], "echoed", "{again}");
}

#[test]
fn an_overlong_line_restarts_the_program() {
    let dir = TempDir::new("prog-overlong");
    let server = start_with_program(&dir, json!({"limits": {"max_message_bytes": 16384}}));
    let mut ws = client(&server);
    let answer = ask(&mut ws, "big.line", json!(null), 1);
    assert_error(&answer, "host_unavailable");
    assert!(server.wait_log(
        "a line over limits.max_message_bytes; restarting it",
        Duration::from_secs(5)
    ));
    let back = ask(&mut ws, "echo.me", json!("ok"), 2);
    assert_eq!(back["event"], "echoed", "{back}");
}

#[test]
fn a_program_that_stops_reading_gets_no_more_requests_and_sigterm_ends_it() {
    let dir = TempDir::new("prog-stall");
    let mut server = start_with_program(
        &dir,
        json!({"limits": {"max_message_bytes": 16384, "max_outbound_bytes": 20000}}),
    );
    let mut ws = client(&server);
    let echoed = ask(&mut ws, "echo.me", json!(0), 1);
    assert_eq!(echoed["event"], "echoed", "{echoed}");
    send_json(&mut ws, &json!({"event": "stall", "requestId": 2}));
    let big = "y".repeat(15000);
    let mut refused = None;
    for rid in 3..40u64 {
        send_json(
            &mut ws,
            &json!({"event": "echo.me", "data": big, "requestId": rid}),
        );
        ws.get_mut()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok(tungstenite::Message::Text(text)) = ws.read() {
            refused = Some(serde_json::from_str::<Value>(text.as_str()).unwrap());
            break;
        }
    }
    ws.get_mut().set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let refused = refused.expect("requests to a host that stopped reading fail");
    assert_error(&refused, "host_unavailable");
    assert!(server.wait_log("reads too slowly", Duration::from_secs(2)));
    // It ignores SIGTERM and never reads stdin: tether ends it with SIGKILL.
    let pid = pid_file(dir.path(), 0).unwrap();
    let status = server.stop();
    assert!(status.success(), "{status:?}");
    wait_until("the stalled program gone", Duration::from_secs(2), || {
        gone(pid)
    });
    assert!(
        server.logs().iter().any(|l| l.contains("SIGKILL")),
        "{:?}",
        server.logs()
    );
}

#[test]
fn sigterm_closes_stdin_and_the_program_exits() {
    let dir = TempDir::new("prog-sigterm");
    let mut server = start_with_program(&dir, json!({}));
    let pid = pid_file(dir.path(), 0).unwrap();
    let started = Instant::now();
    let status = server.stop();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no SIGTERM grace needed"
    );
    wait_until("the program gone", Duration::from_secs(2), || gone(pid));
    assert!(!server.logs().iter().any(|l| l.contains("SIGKILL")));
}

#[test]
fn when_tether_is_killed_the_program_sees_eof_and_exits() {
    let dir = TempDir::new("prog-sigkill");
    let mut server = start_with_program(&dir, json!({}));
    let pid = pid_file(dir.path(), 0).unwrap();
    server.signal(libc::SIGKILL);
    assert!(server.wait_exit(Duration::from_secs(2)).is_some());
    wait_until("the orphaned program gone", Duration::from_secs(5), || {
        gone(pid)
    });
}

#[test]
fn check_config_names_bad_hosts() {
    let dir = TempDir::new("hosts-check");
    let config = dir.write_json(
        "settings.json",
        &json!({"hosts": [{"name": "a", "command": ["x"]}, {"name": "a", "url": "ftp://x"}]}),
    );
    let out = run(
        dir.path(),
        &[("JWT_SECRET", SECRET)],
        &["check-config", "--config", config.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hosts[1].name"), "{stderr}");
    assert!(stderr.contains("hosts[1].url"), "{stderr}");
}

// ---------------------------------------------------------------------------
// `url` hosts: a real HTTP backend (Python's http.server) on loopback
// ---------------------------------------------------------------------------

/// A backend: verifies the caller's JWT (HS256 with `SECRET`), logs every
/// POST to `posts.log`, and answers by event.
const BACKEND: &str = r#"
import base64, hashlib, hmac, json, os, sys, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
SECRET = os.environ["SECRET"].encode()
lock = threading.Lock()
active = [0, 0]
def verify(auth):
    if not auth.startswith("Bearer "):
        return None
    h, p, sig = auth[7:].split(".")
    good = base64.urlsafe_b64encode(hmac.new(SECRET, (h + "." + p).encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    if not hmac.compare_digest(good, sig):
        return None
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        claims = verify(self.headers.get("Authorization", ""))
        with lock:
            with open("posts.log", "a") as f:
                f.write(json.dumps({"body": body, "claims": claims, "port": self.client_address[1]}) + "\n")
            active[0] += 1
            active[1] = max(active[0], active[1])
        try:
            self.serve(body, claims)
        finally:
            with lock:
                active[0] -= 1
    def serve(self, body, claims):
        ev = body.get("event")
        if ev in ("host.client_joined", "host.client_left"):
            return self.answer(200, {})
        if ev == "slow":
            time.sleep(body["data"])
        if ev == "boom":
            return self.answer(500, {"error": "x"})
        if ev == "notjson":
            return self.raw(200, b"hello")
        if ev == "refuse":
            return self.answer(200, {"error": {"code": "not_found", "message": "no such thing"}})
        if ev == "big":
            return self.answer(200, {"event": "big", "data": "x" * 100000})
        self.answer(200, {"event": ev + ".ok", "data": {"got": body["data"], "claims": claims,
            "client": body["client"], "sub": body["sub"], "max_active": active[1]}})
    def answer(self, code, obj):
        self.raw(code, json.dumps(obj).encode())
    def raw(self, code, data):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.handle_error = lambda *a: None  # tether closing a kept-alive connection
if os.environ.get("TLS_CERT"):
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.environ["TLS_CERT"], os.environ["TLS_KEY"])
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

impl Backend {
    fn start(dir: &Path) -> Backend {
        std::fs::write(dir.join("backend.py"), BACKEND).unwrap();
        Backend::start_script(dir, "backend.py")
    }

    /// The backend over https, with a certificate for 127.0.0.1 made now
    /// (`cert.pem`, also the `ca` to trust).
    fn start_tls(dir: &Path) -> Backend {
        std::fs::write(dir.join("backend.py"), BACKEND).unwrap();
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            // A leaf, trusted directly: webpki refuses a CA as end entity.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-keyout", "key.pem", "-out", "cert.pem"])
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        Backend::start_script_with(
            dir,
            "backend.py",
            &[("TLS_CERT", "cert.pem"), ("TLS_KEY", "key.pem")],
        )
    }

    /// Runs `script` (in `dir`), which prints its port first.
    fn start_script(dir: &Path, script: &str) -> Backend {
        Backend::start_script_with(dir, script, &[])
    }
}

fn url_settings(port: u16, extra: Value) -> Value {
    let mut settings = json!({
        "limits": {"max_connections_per_ip": 50, "max_messages_per_minute": 600, "max_message_bytes": 16384},
        "hosts": [{"name": "web", "url": format!("http://127.0.0.1:{port}/tether/"),
            "events": {"echo": null, "slow": null, "boom": null, "notjson": null, "refuse": null,
                       "big": null, "appointments.view": "appointments.view"},
            "notify": ["client_joined", "client_left"], "max_in_flight": 2}]
    });
    merge(&mut settings, extra);
    settings
}

fn start_with_backend(dir: &TempDir, extra: Value) -> (Backend, Server) {
    let backend = Backend::start(dir.path());
    let settings = url_settings(backend.port, extra);
    let server = Server::start_in(dir.path(), settings, &[("JWT_SECRET", SECRET)]);
    (backend, server)
}

#[test]
fn a_backend_answers_refuses_and_verifies_the_gateway() {
    let dir = TempDir::new("url-answers");
    let (_backend, server) = start_with_backend(&dir, json!({}));
    let mut ws = client(&server);
    let answer = ask(&mut ws, "echo", json!({"a": 1}), 1);
    assert_eq!(answer["event"], "echo.ok", "{answer}");
    assert_eq!(answer["requestId"], 1);
    let data = &answer["data"];
    assert_eq!(data["got"], json!({"a": 1}));
    assert_eq!(data["sub"], "alice");
    assert!(data["client"].is_string());
    let claims = &data["claims"];
    assert_eq!(
        claims["sub"], "tether",
        "the JWT verifies with the secret: {answer}"
    );
    assert_eq!(claims["permissions"], json!(["host"]));
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp <= unix_now() + 61 && exp > unix_now(), "{claims}");
    let refused = ask(&mut ws, "refuse", json!(null), 2);
    assert_error(&refused, "not_found");
    for (rid, event) in [(3, "boom"), (4, "notjson"), (5, "big")] {
        let failed = ask(&mut ws, event, json!(null), rid);
        assert_error(&failed, "host_unavailable");
        assert_eq!(failed["requestId"], rid);
    }
    let forbidden = ask(&mut ws, "appointments.view", json!(null), 6);
    assert_error(&forbidden, "forbidden");
    // Kept alive: one connection carried the requests that came one by one.
    let again = ask(&mut ws, "echo", json!(2), 7);
    assert_eq!(again["event"], "echo.ok");
    let posts = Backend::posts(dir.path());
    // Notices go out beside the requests and may take a second connection,
    // so which connection carries which request depends on timing; that the
    // requests reused connections does not.
    let requests: Vec<_> = posts
        .iter()
        .filter(|p| {
            !p["body"]["event"]
                .as_str()
                .unwrap_or("")
                .starts_with("host.")
        })
        .collect();
    let ports: std::collections::BTreeSet<String> =
        requests.iter().map(|p| p["port"].to_string()).collect();
    assert!(
        ports.len() < requests.len(),
        "every request took a new connection: {posts:?}"
    );
    // A failed answer is not sent twice.
    assert_eq!(
        posts.iter().filter(|p| p["body"]["event"] == "big").count(),
        1
    );
}

#[test]
fn a_slow_backend_times_out_and_a_missing_one_is_unavailable() {
    let dir = TempDir::new("url-slow");
    let (_backend, server) = start_with_backend(&dir, json!({"host": {"request_timeout_ms": 500}}));
    let mut ws = client(&server);
    let late = ask(&mut ws, "slow", json!(1.5), 1);
    assert_error(&late, "host_timeout");
    let fine = ask(&mut ws, "echo", json!(1), 2);
    assert_eq!(fine["event"], "echo.ok", "{fine}");
    drop(server);

    let dir = TempDir::new("url-refused");
    let port = free_port();
    let server = Server::start_in(
        dir.path(),
        url_settings(port, json!({})),
        &[("JWT_SECRET", SECRET)],
    );
    let mut ws = client(&server);
    let refused = ask(&mut ws, "echo", json!(1), 1);
    assert_error(&refused, "host_unavailable");
}

#[test]
fn at_most_max_in_flight_requests_reach_the_backend_at_once() {
    let dir = TempDir::new("url-inflight");
    let (_backend, server) = start_with_backend(&dir, json!({}));
    let mut ws = client(&server);
    assert_eq!(ask(&mut ws, "echo", json!(0), 100)["event"], "echo.ok");
    let started = Instant::now();
    for rid in 1..=4 {
        send_json(
            &mut ws,
            &json!({"event": "slow", "data": 0.4, "requestId": rid}),
        );
    }
    let mut answered = Vec::new();
    while answered.len() < 4 {
        let answer = match ws.read() {
            Ok(tungstenite::Message::Text(text)) => serde_json::from_str::<Value>(&text).unwrap(),
            Ok(_) => continue,
            // The test process's own children end meanwhile (SIGCHLD).
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                continue
            }
            Err(e) => panic!("read failed: {e}"),
        };
        assert_eq!(answer["event"], "slow.ok", "{answer}");
        answered.push(answer["requestId"].as_u64().unwrap());
        assert!(
            answer["data"]["max_active"].as_u64().unwrap() <= 2,
            "{answer}"
        );
    }
    answered.sort();
    assert_eq!(answered, [1, 2, 3, 4]);
    assert!(
        started.elapsed() >= Duration::from_millis(750),
        "two waves of two"
    );
    let last = ask(&mut ws, "echo", json!(0), 5);
    assert_eq!(last["data"]["max_active"], 2, "{last}");
}

#[test]
fn a_backend_hears_the_notices_it_asked_for() {
    let dir = TempDir::new("url-notify");
    let (_backend, server) = start_with_backend(&dir, json!({}));
    let ws = client(&server);
    drop(ws);
    let mut seen = Vec::new();
    wait_until("both notices posted", Duration::from_secs(5), || {
        seen = Backend::posts(dir.path())
            .into_iter()
            .map(|p| p["body"]["event"].as_str().unwrap_or("").to_string())
            .collect();
        // Two connections may carry them at once: wait for both, in either
        // order (the backend's).
        ["host.client_joined", "host.client_left"]
            .iter()
            .all(|want| seen.iter().any(|e| e == want))
    });
    seen.sort();
    assert_eq!(seen, ["host.client_joined", "host.client_left"]);
}

// ---------------------------------------------------------------------------
// The examples
// ---------------------------------------------------------------------------

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_program_host_example_rolls_dice() {
    let dir = TempDir::new("example-dice");
    let settings =
        json!({"hosts": [{"name": "dice", "command": ["python3", example("program_host.py")]}]});
    let server = Server::start_in(dir.path(), settings, &[("JWT_SECRET", SECRET)]);
    let mut ws = client(&server);
    let rolled = ask(&mut ws, "dice.roll", json!({"sides": 20}), 1);
    assert_eq!(rolled["event"], "dice.rolled", "{rolled}");
    let value = rolled["data"]["value"].as_u64().unwrap();
    assert!((1..=20).contains(&value), "{rolled}");
    assert!(server.wait_log("host dice: dice host ready", Duration::from_secs(2)));
}

#[test]
fn the_appointments_backend_example_serves_seed_001s_flow() {
    let dir = TempDir::new("example-appointments");
    let (backend_port, health_port) = (free_port(), free_port());
    let mut backend = std::process::Command::new("python3")
        .args([example("appointments_backend.py"), backend_port.to_string()])
        .env("JWT_SECRET", SECRET)
        .env(
            "TETHER_HEALTH_URL",
            format!("http://127.0.0.1:{health_port}"),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let events = json!({"appointment.list": "appointments.view", "appointment.create": "appointments.edit",
                        "appointment.update": "appointments.edit", "appointment.cancel": "appointments.edit"});
    let settings = json!({
        "server": {"health": {"host": "127.0.0.1", "port": health_port}},
        "hosts": [{"name": "appointments", "url": format!("http://127.0.0.1:{backend_port}/tether/"), "events": events}]
    });
    let server = Server::start_in(dir.path(), settings, &[("JWT_SECRET", SECRET)]);
    let token = mint_valid(
        "7",
        &["appointments.view", "appointments.edit"],
        &["calendar"],
        3600,
    );
    let (mut ws, _) = open_authed(server.port(), &token);
    // The backend may still be starting: retry while it refuses.
    let deadline = Instant::now() + Duration::from_secs(10);
    let created = loop {
        let answer = ask(
            &mut ws,
            "appointment.create",
            json!({"start": "2026-12-01T10:00", "provider": 3}),
            1,
        );
        if answer["data"]["code"] != "host_unavailable" || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The reply, and the broadcast to `calendar` through /api/publish, in either order.
    let other = recv_json(&mut ws);
    let (reply, broadcast) = if created["requestId"] == 1 {
        (created, other)
    } else {
        (other, created)
    };
    assert_eq!(reply["event"], "appointment.created", "{reply}");
    assert_eq!(reply["data"]["customer"], "7", "{reply}");
    assert_eq!(broadcast["event"], "appointment.created", "{broadcast}");
    assert_eq!(broadcast["room"], "calendar", "{broadcast}");
    let id = reply["data"]["id"].clone();
    let listed = ask(&mut ws, "appointment.list", json!(null), 2);
    assert_eq!(listed["data"]["appointments"][0]["id"], id, "{listed}");
    let missing = ask(&mut ws, "appointment.cancel", json!({"id": 999}), 3);
    assert_error(&missing, "not_found");
    let _ = backend.kill();
    let _ = backend.wait();
}

// ---------------------------------------------------------------------------
// The connect proxy (`auth.proxy_url`)
// ---------------------------------------------------------------------------

/// A session-cookie web app: `session=good` is user u1, `session=slow`
/// answers after 3 s, anything else is 401. Every POST goes to `proxy.log`.
const PROXY: &str = r#"
import json, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
class P(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open("proxy.log", "a") as f:
            f.write(json.dumps(body) + "\n")
        cookie = body["headers"].get("cookie", "")
        if "session=slow" in cookie:
            time.sleep(3)
        if "session=good" in cookie or "session=slow" in cookie:
            self.answer(200, {"sub": "u1", "permissions": ["publish"], "rooms": ["lobby"]})
        else:
            self.answer(401, {})
    def answer(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
srv = ThreadingHTTPServer(("127.0.0.1", 0), P)
srv.handle_error = lambda *a: None
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

fn start_with_proxy(dir: &TempDir, auth_timeout_ms: u64) -> (Backend, Server) {
    std::fs::write(dir.path().join("proxy.py"), PROXY).unwrap();
    let backend = Backend::start_script(dir.path(), "proxy.py");
    let url = format!("http://127.0.0.1:{}/auth", backend.port);
    let settings = json!({"server": {"websocket": {"auth": {"proxy_url": url, "auth_timeout_ms": auth_timeout_ms}}}});
    let server = Server::start_in(dir.path(), settings, &[("JWT_SECRET", SECRET)]);
    (backend, server)
}

fn proxy_posts(dir: &Path) -> Vec<Value> {
    Backend::logged(dir, "proxy.log")
}

#[test]
fn the_connect_proxy_accepts_a_session_cookie() {
    let dir = TempDir::new("proxy-accept");
    let (_proxy, server) = start_with_proxy(&dir, 5000);
    let headers = [
        ("Cookie", "session=good"),
        ("User-Agent", "e2e/1"),
        ("X-Other", "no"),
    ];
    let mut ws = connect(server.port(), "/chat?x=1", &headers).expect("accepted");
    let connected = recv_json(&mut ws);
    assert_eq!(connected["data"]["authenticated"], true, "{connected}");
    let authenticated = recv_json(&mut ws);
    assert_eq!(authenticated["event"], "authenticated", "{authenticated}");
    assert_eq!(authenticated["data"]["sub"], "u1");
    assert_eq!(authenticated["data"]["rooms"], json!(["lobby"]));
    let posts = proxy_posts(dir.path());
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["ip"], "127.0.0.1");
    assert_eq!(posts[0]["path"], "/chat");
    assert_eq!(
        posts[0]["headers"],
        json!({"cookie": "session=good", "user-agent": "e2e/1"}),
        "only the listed headers"
    );
    // A handshake with a token is not the proxy's business.
    let token = mint_valid("t", &[], &[], 3600);
    let (_ws, authed) = open_authed(server.port(), &token);
    assert_eq!(authed["data"]["sub"], "t");
    assert_eq!(proxy_posts(dir.path()).len(), 1);
}

#[test]
fn the_connect_proxy_refuses_and_times_out() {
    let dir = TempDir::new("proxy-refuse");
    let (_proxy, server) = start_with_proxy(&dir, 500);
    assert_eq!(
        refused(server.port(), "/", &[("Cookie", "session=bad")]),
        401
    );
    assert_eq!(refused(server.port(), "/", &[]), 401);
    let started = Instant::now();
    assert_eq!(
        refused(server.port(), "/", &[("Cookie", "session=slow")]),
        503
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "within auth_timeout_ms"
    );
    // The gateway is still fine.
    assert_eq!(
        refused(server.port(), "/", &[("Cookie", "session=nope")]),
        401
    );
}

#[test]
fn an_https_backend_is_verified_against_its_ca() {
    let dir = TempDir::new("url-https");
    let backend = Backend::start_tls(dir.path());
    let mut settings = url_settings(backend.port, json!({}));
    let host = &mut settings["hosts"][0];
    host["url"] = json!(format!("https://127.0.0.1:{}/tether/", backend.port));
    host["ca"] = json!(dir.path().join("cert.pem"));
    let server = Server::start_in(dir.path(), settings, &[("JWT_SECRET", SECRET)]);
    let mut ws = client(&server);
    let answer = ask(&mut ws, "echo", json!({"over": "tls"}), 1);
    assert_eq!(answer["event"], "echo.ok", "{answer} {:?}", server.logs());
    assert_eq!(answer["data"]["got"], json!({"over": "tls"}));
    let again = ask(&mut ws, "echo", json!(2), 2);
    assert_eq!(again["event"], "echo.ok", "{again}");
    drop(server);

    // Without the CA, the system's store does not know this certificate.
    let dir2 = TempDir::new("url-https-untrusted");
    let mut settings = url_settings(backend.port, json!({}));
    settings["hosts"][0]["url"] = json!(format!("https://127.0.0.1:{}/tether/", backend.port));
    let server = Server::start_in(dir2.path(), settings, &[("JWT_SECRET", SECRET)]);
    let mut ws = client(&server);
    let refused = ask(&mut ws, "echo", json!(1), 1);
    assert_error(&refused, "host_unavailable");
}
