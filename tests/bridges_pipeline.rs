//! `url` hosts with HTTP/1.1 pipelining (`"pipeline": N`, SPEC §11) end to
//! end: a real HTTP backend on loopback (Python's http.server, which serves
//! the requests of one connection in turn), answers attributed in order,
//! and a backend that closes mid-pipeline.

mod common;

use common::backend::Backend;
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// A backend: logs every POST (body and the client port) to `posts.log`;
/// `slow` sleeps `data` seconds first, `die` closes the connection without
/// an answer (dropping what else was pipelined on it), others are echoed.
const BACKEND: &str = r#"
import json, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
lock = threading.Lock()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        with lock:
            with open("posts.log", "a") as f:
                f.write(json.dumps({"body": body, "port": self.client_address[1]}) + "\n")
        ev = body.get("event")
        if ev == "die":
            self.close_connection = True
            return
        if ev == "slow":
            time.sleep(body["data"])
        answer = json.dumps({"event": ev + ".ok", "data": {"got": body["data"]}}).encode()
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        self.wfile.write((head % len(answer)).encode() + answer)
server = ThreadingHTTPServer(("127.0.0.1", 0), H)
server.handle_error = lambda *a: None  # tether closing a connection
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// The backend above, started in `dir`.
fn backend(dir: &Path) -> Backend {
    std::fs::write(dir.join("backend.py"), BACKEND).unwrap();
    Backend::start_script_with(dir, "backend.py", &[])
}

/// A gateway (see `start`) in a directory named `name`, and a client that
/// sent `(event, data)` requests numbered from 1 at once: their answers,
/// in the order they came.
fn pipelined(name: &str, requests: &[(&str, Value)]) -> (TempDir, Backend, Server, Ws, Vec<Value>) {
    let dir = TempDir::new(name);
    let (backend, server) = start(&dir);
    let mut ws = client(&server);
    first_echo(&mut ws);
    for (rid, (event, data)) in (1u64..).zip(requests) {
        send_json(
            &mut ws,
            &json!({"event": event, "data": data, "requestId": rid}),
        );
    }
    let got = answers(&mut ws, requests.len());
    (dir, backend, server, ws, got)
}

/// A gateway with one `url` host of `max_in_flight` 4, all on one pipelined
/// connection.
fn start(dir: &TempDir) -> (Backend, Server) {
    let backend = backend(dir.path());
    let settings = json!({
        "limits": {"max_connections_per_ip": 50, "max_messages_per_minute": 600},
        "host": {"request_timeout_ms": 3000},
        "hosts": [{"name": "web", "url": format!("http://127.0.0.1:{}/tether/", backend.port),
            "events": {"echo": null, "slow": null, "die": null}, "max_in_flight": 4, "pipeline": 4}]
    });
    let server = Server::start_in(dir.path(), settings, &[("JWT_SECRET", SECRET)]);
    (backend, server)
}

fn client(server: &Server) -> Ws {
    let token = mint_valid("alice", &[], &[], 3600);
    open_authed(server.port(), &token).0
}

/// Requests `echo` until the backend's host registered and answers.
fn first_echo(ws: &mut Ws) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = request(ws, &json!({"event": "echo", "data": 0, "requestId": 1000}));
        if answer["event"] == "echo.ok" {
            return;
        }
        assert!(Instant::now() < deadline, "no answer: {answer}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The answers to `count` requests, in the order they came.
fn answers(ws: &mut Ws, count: usize) -> Vec<Value> {
    (0..count).map(|_| recv_json(ws)).collect()
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    // The slow one holds the connection: the three behind it are pipelined.
    let (dir, _backend, _server, _ws, got) = pipelined(
        "pipeline-order",
        &[
            ("slow", json!(0.3)),
            ("echo", json!(20)),
            ("echo", json!(30)),
            ("echo", json!(40)),
        ],
    );
    assert_eq!(got[0]["event"], "slow.ok", "{got:?}");
    for (i, answer) in got.iter().enumerate().skip(1) {
        let rid = i as u64 + 1;
        assert_eq!(answer["requestId"], rid, "{got:?}");
        assert_eq!(answer["event"], "echo.ok", "{got:?}");
        assert_eq!(
            answer["data"]["got"],
            rid * 10,
            "each answer is its own request's"
        );
    }
    let ports: std::collections::BTreeSet<u64> = Backend::posts(dir.path())
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports.len(), 1, "one kept-alive connection: {ports:?}");
}

#[test]
fn a_backend_closing_mid_pipeline_fails_every_request_in_flight_once() {
    let (dir, _backend, _server, mut ws, got) = pipelined(
        "pipeline-close",
        &[
            ("slow", json!(0.3)),
            ("die", json!(2)),
            ("echo", json!(3)),
            ("echo", json!(4)),
        ],
    );
    assert_eq!(got[0]["event"], "slow.ok", "{got:?}");
    for answer in &got[1..] {
        assert_error(answer, "host_unavailable");
    }
    let rids: Vec<u64> = got
        .iter()
        .map(|a| a["requestId"].as_u64().unwrap())
        .collect();
    assert_eq!(rids, [1, 2, 3, 4]);
    // Never retried: the backend saw `die` once and never the two behind it.
    let posts = Backend::posts(dir.path());
    let events: Vec<&str> = posts
        .iter()
        .filter_map(|p| p["body"]["event"].as_str())
        .collect();
    assert_eq!(events, ["echo", "slow", "die"], "{posts:?}");
    // A new connection serves what comes next.
    let next = request(
        &mut ws,
        &json!({"event": "echo", "data": 5, "requestId": 5}),
    );
    assert_eq!(next["event"], "echo.ok", "{next}");
    assert_eq!(next["data"]["got"], 5, "{next}");
}

#[test]
fn a_late_answer_times_out_and_fails_the_requests_behind_it() {
    let dir = TempDir::new("pipeline-timeout");
    let backend = backend(dir.path());
    let settings = json!({
        "limits": {"max_connections_per_ip": 50, "max_messages_per_minute": 600},
        "host": {"request_timeout_ms": 500},
        "hosts": [{"name": "web", "url": format!("http://127.0.0.1:{}/tether/", backend.port),
            "events": {"echo": null, "slow": null}, "max_in_flight": 4, "pipeline": 4}]
    });
    let server = Server::start_in(dir.path(), settings, &[("JWT_SECRET", SECRET)]);
    let mut ws = client(&server);
    first_echo(&mut ws);
    send_json(
        &mut ws,
        &json!({"event": "slow", "data": 1.5, "requestId": 1}),
    );
    // Later than the first: its connection's close, not its own deadline, ends it.
    std::thread::sleep(Duration::from_millis(250));
    send_json(
        &mut ws,
        &json!({"event": "echo", "data": 2, "requestId": 2}),
    );
    let got = answers(&mut ws, 2);
    assert_error(&got[0], "host_timeout");
    assert_eq!(got[0]["requestId"], 1, "{got:?}");
    assert_error(&got[1], "host_unavailable");
    assert_eq!(got[1]["requestId"], 2, "{got:?}");
    let next = request(
        &mut ws,
        &json!({"event": "echo", "data": 3, "requestId": 3}),
    );
    assert_eq!(next["event"], "echo.ok", "{next}");
}
