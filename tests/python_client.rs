//! The Python library (clients/python) against the real binary: its own
//! script (clients/python/tests/test_tether.py) drives a client, a host and
//! a gateway restart that this test performs when the script asks.

mod common;

use common::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The checks the script prints as `ok NAME`, in order.
const CHECKS: usize = 8;

#[test]
fn python_library_end_to_end() {
    let mut server = Server::start(json!({}));
    let tokens = json!({
        "host": mint_valid("pyhost", &["host"], &[], 3600),
        "alice": mint_valid("alice", &["slow.call", "room:chat_*"], &[], 3600),
        "bob": mint_valid("bob", &["publish", "room:chat_*"], &[], 3600),
    });
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients/python/tests/test_tether.py");
    let mut child = python3()
        .arg(&script)
        .env("TETHER_URL", format!("ws://127.0.0.1:{}/", server.port()))
        .env("TETHER_TOKENS", tokens.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the library's test script");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut passed = Vec::new();
    let mut restarted = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            break; // the script ended (or hangs: the status below says)
        };
        eprintln!("test_tether.py: {line}");
        if line == "restart" {
            server.restart();
            restarted = true;
            writeln!(stdin, "restarted").expect("write to the script");
        } else if let Some(name) = line.strip_prefix("ok ") {
            passed.push(name.to_string());
        }
    }
    let exit_deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > exit_deadline.max(deadline) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the script did not finish within 60 s; passed {passed:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "the script failed ({status}); passed {passed:?}"
    );
    assert!(restarted, "the script never asked for the restart");
    assert_eq!(passed.len(), CHECKS, "{passed:?}");
    assert!(server.wait_log("registered as a host", Duration::from_secs(1)));
    for token in tokens.as_object().expect("tokens").values() {
        server.assert_not_logged(token.as_str().expect("a token"));
    }
}
