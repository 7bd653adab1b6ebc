//! The JavaScript library (clients/js) against the real binary: Node's own
//! test runner runs clients/js/test/ with the ws package (Node 20 has no
//! global WebSocket); the scripts ask this test, over a control port, to
//! restart the gateway, freeze it (SIGSTOP: a dead peer) and thaw it.

mod common;

use common::node::{node_ws, require_node};
use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn js_library_end_to_end() {
    require_node();
    let modules = node_ws().join("node_modules");
    let server = Server::start(json!({
        "limits": { "max_messages_per_minute": 1000, "max_connections_per_ip": 100, "ping_interval_s": 1, "idle_timeout_s": 10 },
        "rooms": { "history": { "size": 100 } }
    }));
    let port = server.port();
    let tokens = json!({
        "host": mint_valid("jshost", &["host"], &[], 3600),
        "alice": mint_valid("alice", &["room:chat_*"], &[], 3600),
        "bob": mint_valid("bob", &["publish", "room:chat_*"], &[], 3600),
        "fresh": mint_valid("carol", &[], &[], 3600),
    });
    let server = Arc::new(Mutex::new(server));
    let control = control::serve_gateway(Arc::clone(&server));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = KillOnDrop(
        Command::new("node")
            .args(["--test", "--test-reporter=tap", "clients/js/test/"])
            .current_dir(root)
            .env("TETHER_URL", format!("ws://127.0.0.1:{port}/"))
            .env("TETHER_TOKENS", tokens.to_string())
            .env("TETHER_CONTROL", control.to_string())
            .env("TETHER_NODE_MODULES", &modules)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run node --test"),
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "node --test ran over 180 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut report = String::new();
    if let Some(mut stdout) = child.0.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut stdout, &mut report);
    }
    eprintln!("{report}");
    let failed: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("not ok "))
        .collect();
    assert!(
        status.success(),
        "node --test failed ({status}): {failed:?}"
    );
    let passed = report.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(passed, 12, "every test of clients/js/test ran");
    let server = server.lock().expect("the server");
    for token in tokens.as_object().expect("tokens").values() {
        server.assert_not_logged(token.as_str().expect("a token"));
    }
}

#[test]
fn tether_js_is_served_with_its_headers() {
    let server = Server::start(json!({}));
    let mut stream = tcp(health_port(&server));
    stream
        .write_all(b"GET /tether.js HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send the request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read the answer");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&answer[..split]);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    for header in [
        "Content-Type: text/javascript",
        "Content-Security-Policy: default-src 'self'",
        "X-Content-Type-Options: nosniff",
    ] {
        assert!(head.contains(header), "{header} in {head}");
    }
    let file = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js/tether.js"))
        .expect("clients/js/tether.js");
    assert!(
        answer[split + 4..] == file[..],
        "the body is clients/js/tether.js"
    );
}
