//! Lifecycle from outside: SIGHUP reloads (and a bad file keeps the running
//! settings), and systemd's notification protocol on a NOTIFY_SOCKET.

mod common;

use common::*;
use serde_json::{json, Value};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

fn write_settings(server: &Server, settings: Value) {
    let mut full = base_settings();
    merge(&mut full, settings);
    std::fs::write(
        server.config_path(),
        serde_json::to_string_pretty(&full).unwrap(),
    )
    .unwrap();
}

fn count_logged(server: &Server, needle: &str) -> usize {
    server.logs().iter().filter(|l| l.contains(needle)).count()
}

/// Sends SIGHUP and waits for the reload's outcome line number `n`.
fn reload(server: &Server, outcome: &str, n: usize) {
    server.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while count_logged(server, outcome) < n {
        assert!(
            Instant::now() < deadline,
            "no `{outcome}` after SIGHUP; logs:\n{}",
            server.logs().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_applies_new_limits_and_keeps_open_sessions() {
    let server = Server::start(json!({ "limits": { "max_connections_per_ip": 5 } }));
    let port = server.port();
    let token = server.token("alice", &["admin"], &[], None, "1h");
    let (mut first, _) = open_authed(port, &token);
    let (mut second, _) = open_authed(port, &token);
    // At level debug, each message is logged.
    request(&mut second, &json!({"event": "whoami"}));
    assert!(server.wait_log("sent \"whoami\"", Duration::from_secs(2)));

    write_settings(
        &server,
        json!({ "limits": { "max_connections_per_ip": 2 }, "log": { "level": "info" } }),
    );
    reload(&server, "reloaded ", 1);
    let logs = server.logs().join("\n");
    assert!(
        logs.contains("limits.max_connections_per_ip: 5 -> 2"),
        "{logs}"
    );
    assert!(logs.contains("log.level: \"debug\" -> \"info\""), "{logs}");

    // Two are open from this address: a third is refused under the new limit.
    assert_eq!(refused(port, "/", &[]), 429);
    // The sessions opened before the reload go on.
    assert_pong(&mut first);
    assert_pong(&mut second);
    // The new level is in force: per-message debug lines stop.
    let before = count_logged(&server, "sent \"whoami\"");
    request(&mut first, &json!({"event": "whoami"}));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(count_logged(&server, "sent \"whoami\""), before);
}

#[test]
fn sighup_with_a_bad_file_keeps_the_running_settings() {
    let server = Server::start(json!({ "limits": { "max_connections_per_ip": 1 } }));
    let port = server.port();
    std::fs::write(
        server.config_path(),
        "{ \"limits\": { \"max_connections\": ",
    )
    .unwrap();
    reload(&server, "reload failed, keeping the running settings", 1);
    write_settings(&server, json!({ "limits": { "max_connections_perip": 9 } }));
    reload(&server, "reload failed, keeping the running settings", 2);
    let logs = server.logs().join("\n");
    assert!(logs.contains("limits.max_connections_perip"), "{logs}");
    // Still one connection per address, and still serving.
    let (_ws, _) = open(port);
    assert_eq!(refused(port, "/", &[]), 429);
}

#[test]
fn sighup_changes_secrets_without_logging_them() {
    let server = Server::start(json!({}));
    let port = server.port();
    let password = "first-password-123";
    write_settings(
        &server,
        json!({ "server": { "websocket": { "auth": { "password": password } } } }),
    );
    reload(&server, "reloaded ", 1);
    let (mut ws, _) = open(port);
    let reply = request(
        &mut ws,
        &json!({"event": "auth", "data": {"password": password}}),
    );
    assert_eq!(reply["event"], "authenticated", "{reply}");
    assert!(server.wait_log(
        "server.websocket.auth.password (secret)",
        Duration::from_secs(2)
    ));
    server.assert_not_logged(password);
}

#[test]
fn sighup_keeps_listening_addresses_until_restart() {
    let server = Server::start(json!({}));
    let port = server.port();
    write_settings(&server, json!({ "server": { "websocket": { "port": 1 } } }));
    reload(&server, "reloaded ", 1);
    assert!(server.wait_log(
        "server.websocket.port changes only at restart",
        Duration::from_secs(2)
    ));
    assert_serving(port);
}

#[test]
fn systemd_notify_ready_watchdog_and_stopping() {
    let tmp = TempDir::new("notify");
    let socket_path = tmp.path().join("notify.sock");
    let listener = UnixDatagram::bind(&socket_path).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let socket = socket_path.to_str().unwrap();
    let mut server = Server::start_in(
        tmp.path(),
        json!({}),
        &[
            ("JWT_SECRET", SECRET),
            ("NOTIFY_SOCKET", socket),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut buf = [0u8; 512];
    let mut recv = || {
        let n = listener.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = recv();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    // Serving by the time READY=1 is sent.
    assert_serving(server.port());
    // WATCHDOG_USEC 200 ms: a ping every 100 ms.
    let start = Instant::now();
    let mut watchdogs = 0;
    while watchdogs < 3 {
        if recv() == "WATCHDOG=1" {
            watchdogs += 1;
        }
    }
    assert!(start.elapsed() < Duration::from_secs(2));
    server.sigterm();
    let mut stopping = false;
    for _ in 0..50 {
        if recv() == "STOPPING=1" {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM");
    let status = server.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(status.success());
}
