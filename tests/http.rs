//! SPEC §7 from outside: the health listener's endpoints, on their own port
//! and sharing the WebSocket port, with bounded and malformed requests.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.head, self.body))
    }
}

/// Sends raw bytes and reads the whole answer (the server closes after it).
fn exchange(port: u16, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.write_all(request).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer {
        status: status_of(head.lines().next().unwrap_or("")).unwrap_or(0),
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn get(port: u16, path: &str, bearer: Option<&str>) -> Answer {
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    exchange(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes(),
    )
}

fn post(port: u16, path: &str, bearer: Option<&str>, body: &str) -> Answer {
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    exchange(
        port,
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

#[test]
fn health_reports_the_seed_fields() {
    let server = Server::start(json!({}));
    let hp = health_port(&server);
    assert_ne!(hp, server.port());
    let answer = get(hp, "/health", None);
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert!(answer.head.contains("Content-Type: application/json"));
    let body = answer.json();
    assert_eq!(body["status"], "healthy");
    let stats = body["stats"].as_object().unwrap();
    // Seed 001's fields, and beside them seed 003's figures (issue 17).
    let seed_003 = [
        "avg_connection_duration_seconds",
        "connections_last_24h",
        "messages_per_minute",
    ];
    let mut keys: Vec<&str> = stats
        .keys()
        .map(String::as_str)
        .filter(|k| !seed_003.contains(k))
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "active_connections",
            "active_rooms",
            "total_connections",
            "total_messages",
            "uptime_seconds"
        ]
    );
    assert_eq!(stats.len(), keys.len() + seed_003.len(), "{stats:?}");
    assert_eq!(stats["active_connections"], 0);

    let token = server.token("alice", &[], &["lobby"], None, "1h");
    let (mut ws, _) = open_authed(server.port(), &token);
    request(&mut ws, &json!({"event": "ping", "requestId": 1}));
    let stats = get(hp, "/health", None).json()["stats"].clone();
    assert_eq!(stats["active_connections"], 1);
    assert_eq!(stats["active_rooms"], 1);
    assert_eq!(stats["total_connections"], 1);
    assert_eq!(stats["total_messages"], 1);
}

#[test]
fn metrics_count_what_happens() {
    let server = Server::start(json!({}));
    let hp = health_port(&server);
    // One refusal (bad token), one session with two messages.
    assert_eq!(refused(server.port(), "/?token=nope", &[]), 401);
    let token = server.token("bob", &[], &[], None, "1h");
    let (mut ws, _) = open_authed(server.port(), &token);
    request(&mut ws, &json!({"event": "ping", "requestId": 1}));
    request(&mut ws, &json!({"event": "ping", "requestId": 2}));

    let answer = get(hp, "/metrics", None);
    assert_eq!(answer.status, 200);
    assert!(answer
        .head
        .contains("Content-Type: text/plain; version=0.0.4"));
    let text = &answer.body;
    for line in text.lines() {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        assert!(name.starts_with("tether_"), "{line}");
    }
    assert_eq!(metric(text, "tether_connections_active"), 1);
    assert_eq!(metric(text, "tether_connections_total"), 1);
    assert_eq!(
        metric(text, "tether_refusals_total{reason=\"invalid_token\"}"),
        1
    );
    assert_eq!(metric(text, "tether_messages_received_total"), 2);
    // connected + authenticated + two pongs.
    assert_eq!(metric(text, "tether_messages_sent_total"), 4);
    assert!(metric(text, "tether_bytes_received_total") > 0);
    assert_eq!(metric(text, "tether_rooms_active"), 0);
    assert_eq!(metric(text, "tether_host_requests_total"), 0);
}

#[test]
fn connections_and_publish_need_tokens_with_permissions() {
    let server = Server::start(json!({}));
    let hp = health_port(&server);
    let (mut red, hello) =
        open_authed(server.port(), &server.token("r", &[], &["red"], None, "1h"));
    let red_id = hello["data"]["clientId"].as_str().unwrap().to_string();
    let (mut blue, _) = open_authed(server.port(), &server.token("b", &[], &[], None, "1h"));

    assert_eq!(get(hp, "/api/connections", None).status, 401);
    let user = server.token("u", &["publish"], &[], None, "1h");
    assert_eq!(get(hp, "/api/connections", Some(&user)).status, 401);
    let admin = server.token("root", &["admin"], &[], None, "1h");
    let answer = get(hp, "/api/connections", Some(&admin));
    assert_eq!(answer.status, 200);
    let connections = answer.json()["connections"].as_array().unwrap().clone();
    assert_eq!(connections.len(), 2);
    assert!(connections
        .iter()
        .any(|c| c["id"] == red_id.as_str() && c["sub"] == "r"));

    // Publish to all, to a room, to one client.
    let all = post(
        hp,
        "/api/publish",
        Some(&user),
        r#"{"event":"news","data":{"n":1}}"#,
    );
    assert_eq!((all.status, all.json()), (200, json!({"delivered": 2})));
    assert_eq!(
        recv_json(&mut red),
        json!({"event": "news", "data": {"n": 1}})
    );
    assert_eq!(
        recv_json(&mut blue),
        json!({"event": "news", "data": {"n": 1}})
    );
    let room = post(
        hp,
        "/api/publish",
        Some(&admin),
        r#"{"event":"e","room":"red"}"#,
    );
    assert_eq!(room.json(), json!({"delivered": 1}));
    assert_eq!(
        recv_json(&mut red),
        json!({"event": "e", "data": null, "room": "red"})
    );
    let one = format!(r#"{{"event":"dm","data":"hi","client":"{red_id}"}}"#);
    assert_eq!(
        post(hp, "/api/publish", Some(&user), &one).json(),
        json!({"delivered": 1})
    );
    assert_eq!(recv_json(&mut red), json!({"event": "dm", "data": "hi"}));
    // Blue got nothing more: its next message is the answer to its own ping.
    let pong = request(&mut blue, &json!({"event": "ping", "requestId": 9}));
    assert_eq!(pong["requestId"], 9);

    assert_eq!(
        post(hp, "/api/publish", None, r#"{"event":"e"}"#).status,
        401
    );
    let reader = server.token("x", &["read"], &[], None, "1h");
    assert_eq!(
        post(hp, "/api/publish", Some(&reader), r#"{"event":"e"}"#).status,
        401
    );
    let bad = post(hp, "/api/publish", Some(&user), r#"{"event":"#);
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"]
        .as_str()
        .unwrap()
        .contains("body must be"));
    assert_eq!(
        post(hp, "/api/publish", Some(&user), r#"{"data":1}"#).status,
        400
    );
    server.assert_not_logged(&admin);
    server.assert_not_logged(&user);
}

#[test]
fn bad_and_oversized_requests_get_their_status() {
    let mut server = Server::start(json!({}));
    let hp = health_port(&server);
    assert_eq!(exchange(hp, b"\x16\x03\x01garbage\r\n\r\n").status, 400);
    assert_eq!(get(hp, "/nope", None).status, 404);
    assert_eq!(post(hp, "/health", None, "").status, 405);
    let huge = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    assert_eq!(exchange(hp, huge.as_bytes()).status, 431);
    let too_big = "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n";
    assert_eq!(exchange(hp, too_big.as_bytes()).status, 413);
    let chunked =
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(exchange(hp, chunked.as_bytes()).status, 400);
    // A WebSocket upgrade on the health port is refused.
    assert_eq!(refused(hp, "/", &[]), 400);
    // The body may come in pieces.
    let token = server.token("p", &["publish"], &[], None, "1h");
    let body = r#"{"event":"e"}"#;
    let mut stream = TcpStream::connect(("127.0.0.1", hp)).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..4]
    );
    stream.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    stream.write_all(&body.as_bytes()[4..]).unwrap();
    assert_eq!(status_of(&read_status_line(&mut stream)), Some(200));
    assert!(server.is_running());
}

#[test]
fn a_stalled_request_is_dropped_at_the_deadline() {
    let server =
        Server::start(json!({ "server": { "websocket": { "auth": { "auth_timeout_ms": 300 } } } }));
    let hp = health_port(&server);
    let mut stream = TcpStream::connect(("127.0.0.1", hp)).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost").unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "dropped without an answer");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(get(hp, "/health", None).status, 200);
}

#[test]
fn health_answers_while_the_websocket_side_is_full() {
    for shared in [false, true] {
        let settings = if shared {
            let port = free_port();
            json!({
                "limits": { "max_connections": 1 },
                "server": {
                    "websocket": { "port": port },
                    "health": { "host": "127.0.0.1", "port": port }
                }
            })
        } else {
            json!({ "limits": { "max_connections": 1 } })
        };
        let server = Server::start(settings);
        let hp = if shared {
            server.port()
        } else {
            health_port(&server)
        };
        let (_ws, _) = open(server.port());
        assert_eq!(refused(server.port(), "/", &[]), 503, "shared: {shared}");
        let answer = get(hp, "/health", None);
        assert_eq!(answer.status, 200, "shared: {shared}");
        assert_eq!(answer.json()["stats"]["active_connections"], 1);
    }
}

#[test]
fn a_shared_port_serves_the_endpoints_and_426_elsewhere() {
    let port = free_port();
    let server = Server::start(json!({ "server": {
        "websocket": { "port": port },
        "health": { "host": "127.0.0.1", "port": port }
    } }));
    assert_eq!(server.port(), port);
    assert!(server.wait_log(
        &format!("health endpoints on http://127.0.0.1:{port}"),
        Duration::from_secs(2)
    ));
    assert_eq!(get(port, "/health", None).json()["status"], "healthy");
    assert_eq!(get(port, "/metrics", None).status, 200);
    assert_eq!(get(port, "/", None).status, 426);
    assert_eq!(get(port, "/other", None).status, 426);
    // WebSockets work on it as usual.
    let (mut ws, _) = open(port);
    assert_pong(&mut ws);
}

#[test]
fn port_zero_for_both_listeners_gives_two_ports() {
    // Port 0 asks for a free port for each listener; it does not mean "share".
    let server =
        Server::start(json!({ "server": { "health": { "host": "127.0.0.1", "port": 0 } } }));
    let hp = health_port(&server);
    assert_ne!(hp, server.port());
    assert_eq!(get(hp, "/health", None).status, 200);
    assert_eq!(get(hp, "/other", None).status, 404);
    assert_eq!(get(server.port(), "/health", None).status, 426);
    assert_eq!(get(server.port(), "/metrics", None).status, 426);
}

#[test]
fn http_connections_are_bounded_and_health_recovers() {
    let server =
        Server::start(json!({ "server": { "websocket": { "auth": { "auth_timeout_ms": 500 } } } }));
    let hp = health_port(&server);
    // Far more idle connections than the HTTP bound; none completes a request.
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(("127.0.0.1", hp)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    // The WebSocket side is not affected.
    let (mut ws, _) = open(server.port());
    assert_pong(&mut ws);
    // Once their deadline passes, health answers again.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(get(hp, "/health", None).status, 200);
    drop(idle);
}

#[test]
fn echo_mode_has_no_http_endpoints() {
    let tmp = TempDir::new("echo-http");
    let mut child = command(tmp.path(), &[])
        .args(["echo", "--host", "127.0.0.1", "--port", "0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut reader = std::io::BufReader::new(stderr);
    let mut line = String::new();
    let port: u16 = loop {
        line.clear();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        if let Some(port) = port_after(&line, "ws://127.0.0.1:") {
            break port;
        }
    };
    assert_eq!(get(port, "/health", None).status, 426);
    let _ = child.kill();
    let _ = child.wait();
}
