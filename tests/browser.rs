//! tether.js in a real browser: Debian's chromium, headless, driven by
//! tests/browser/tether_js.py (Python Playwright), loads a page from the
//! health listener, imports `/tether.js` from it and runs the library
//! against this gateway, which the script asks to restart once and to
//! freeze (a dead peer) once.

mod common;

use common::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn tether_js_in_chromium() {
    let health = free_port();
    let server = Server::start(json!({
        "server": { "health": { "port": health } },
        "limits": { "max_messages_per_minute": 1000, "max_connections_per_ip": 100 },
        "rooms": { "history": { "size": 100 } }
    }));
    let port = server.port();
    let tokens = json!({
        "alice": mint_valid("alice", &["room:chat_*"], &[], 3600),
        "bob": mint_valid("bob", &["publish", "room:chat_*"], &[], 3600),
        "fresh": mint_valid("carol", &[], &[], 3600),
    });
    let server = Arc::new(Mutex::new(server));
    let control = control::serve_gateway(Arc::clone(&server));
    let passed = browser::run_script(
        "tether_js.py",
        &[
            ("TETHER_URL", format!("ws://127.0.0.1:{port}/")),
            ("TETHER_PAGE", format!("http://127.0.0.1:{health}/health")),
            ("TETHER_TOKENS", tokens.to_string()),
            ("TETHER_CONTROL", control.to_string()),
        ],
        Duration::from_secs(180),
    );
    assert_eq!(
        passed,
        [
            "import",
            "connect",
            "request",
            "subscribe",
            "reconnect_recovers",
            "recovery_after_restart",
            "token_refresh",
            "dead_peer",
            "clean"
        ]
    );
    let server = server.lock().expect("the server");
    for token in tokens.as_object().expect("tokens").values() {
        server.assert_not_logged(token.as_str().expect("a token"));
    }
}

/// The dashboard (SPEC §14) in chromium: tests/browser/test_dashboard.py
/// signs in, watches clients come and go, kicks, publishes, and checks that
/// HTML in a `sub` stays text, that a hidden tab stops polling, that every
/// request stays on the gateway's origin and that no script fails.
#[test]
fn dashboard_in_chromium() {
    let health = free_port();
    let server = Server::start(json!({
        "server": { "health": { "port": health } },
        "limits": { "max_messages_per_minute": 1000, "max_connections_per_ip": 50 },
        "rooms": { "presence": { "enabled": true } }
    }));
    let lobby = |sub: &str, permissions: &[&str]| mint_valid(sub, permissions, &["lobby"], 3600);
    let tokens = json!({
        "admin": mint_valid("ops", &["admin"], &[], 3600),
        "user": mint_valid("watcher", &["publish", "host"], &[], 3600),
        "alice": lobby("alice", &[]),
        "bob": lobby("bob", &[]),
        "carol": lobby("carol", &[]),
        "evil_img": lobby("<img src=x onerror=alert(1)>", &[]),
        "evil_script": lobby("<script>alert(2)</script>", &[]),
        "publisher": lobby("publisher", &["publish"]),
    });
    let passed = browser::run_script(
        "test_dashboard.py",
        &[
            ("TETHER_URL", format!("ws://127.0.0.1:{}/", server.port())),
            ("TETHER_DASHBOARD", format!("http://127.0.0.1:{health}/")),
            ("TETHER_TOKENS", tokens.to_string()),
        ],
        Duration::from_secs(150),
    );
    assert_eq!(
        passed,
        [
            "non_admin_refused",
            "login",
            "appears",
            "disappears",
            "escaped",
            "tail",
            "publish",
            "kick",
            "hidden_pauses",
            "same_origin",
            "clean"
        ]
    );
    for token in tokens.as_object().expect("tokens").values() {
        server.assert_not_logged(token.as_str().expect("a token"));
    }
}
