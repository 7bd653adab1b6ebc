//! The example hosts outlive the gateway: after a restart (SIGTERM, then a
//! new process on the same port) each reconnects, registers again and
//! serves a new client (issue 12 item 13).

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A child process killed (by its own pid) when the test ends.
struct Host(std::process::Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the (current) gateway logs that a host registered.
fn wait_registered(server: &Server, host: &mut Host, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.wait_log("registered as a host", Duration::from_millis(100)) {
        assert_running(&mut host.0, what);
        assert!(Instant::now() < deadline, "{what} did not register in 20 s");
    }
}

/// A new client's answer to `event` (which needs `permission`).
fn ask_new_client(server: &Server, permission: &str, event: &str) -> Value {
    let token = mint_valid("player", &[permission], &[], 3600);
    let (mut ws, _) = open_authed(server.port(), &token);
    send_json(&mut ws, &json!({"event": event, "requestId": 1}));
    // The game host broadcasts to every client while it runs: skip those.
    loop {
        let message = recv_json(&mut ws);
        if message["requestId"] == 1 {
            return message;
        }
    }
}

/// Starts `host`, checks it serves `event` (to a client with `permission`),
/// restarts the gateway and checks the host serves it again; `expected` is
/// the answer's event.
fn survives_restart(
    mut command: std::process::Command,
    what: &str,
    (permission, event, expected): (&str, &str, &str),
) {
    let mut server = Server::start(json!({}));
    let token = mint_valid("a-host", &["host"], &[], 3600);
    let mut host = Host(
        command
            .args(["--url", &format!("ws://127.0.0.1:{}/", server.port())])
            .env("TETHER_HOST_TOKEN", &token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}")),
    );
    wait_registered(&server, &mut host, what);
    let answer = ask_new_client(&server, permission, event);
    assert_eq!(answer["event"], expected, "{answer}");

    server.restart();
    wait_registered(&server, &mut host, what);
    let answer = ask_new_client(&server, permission, event);
    assert_eq!(answer["event"], expected, "after the restart: {answer}");
    assert_eq!(answer["requestId"], 1, "{answer}");
    // Once more, so that a host that reconnects only once is caught too.
    server.restart();
    wait_registered(&server, &mut host, what);
    assert_eq!(
        ask_new_client(&server, permission, event)["event"],
        expected
    );
    server.assert_not_logged(&token);
}

#[test]
fn game_host_example_reconnects_after_a_gateway_restart() {
    let mut command = std::process::Command::new(example_bin("game_host"));
    command.args(["--interval-ms", "50", "--seed", "3"]);
    let call = ("stats.view", "getStats", "stats");
    survives_restart(command, "the game_host example", call);
}

#[test]
fn sound_bot_example_reconnects_after_a_gateway_restart() {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sound_bot_host.py");
    let mut command = python3();
    command.arg(script);
    let call = ("any", "list", "list");
    survives_restart(command, "the sound bot example", call);
}
