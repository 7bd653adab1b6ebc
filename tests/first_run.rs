//! Issue 12 items 9-11, a new user's first hour: `tether token` never invents a
//! secret (SPEC §13), `localhost` with seed 000's `allowed_ip: "127.0.0.1"`
//! says that ::1 clients are refused, `check-config` reports every problem in
//! one run, and `--help` says what SIGHUP re-reads.

mod common;

use common::*;
use serde_json::json;
use std::io::Read;
use std::net::TcpStream;
use std::process::Output;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The warning `serve` logs and `check-config` prints for a listen address
/// whose clients `allowed_ip` refuses.
const REFUSED_WARNING: &str = "server.websocket.host: clients connecting to [::1]:";

#[test]
fn token_without_a_secret_fails_naming_where_it_looked() {
    let dir = TempDir::new("nosecret");
    let out = run(dir.path(), &[], &["token", "--sub", "alice"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "printed a token: {}", stdout(&out));
    let err = stderr(&out);
    let key_path = dir.path().join("tether-data").join("jwt.key");
    for place in [
        "JWT_SECRET",
        "server.websocket.auth.jwt_secret in built-in defaults",
        "server.websocket.auth.jwt_secret_file in built-in defaults",
        key_path.to_str().unwrap(),
    ] {
        assert!(err.contains(place), "does not name {place:?}: {err}");
    }
    assert!(
        !dir.path().join("tether-data").exists(),
        "token generated a state directory"
    );

    // With a settings file and $STATE_DIRECTORY, those are the places named.
    let config = dir.write_json("s.json", &json!({}));
    let state = dir.path().join("state");
    let out = run(
        dir.path(),
        &[("STATE_DIRECTORY", state.to_str().unwrap())],
        &["token", "--sub", "a", "--config", config.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(config.to_str().unwrap()), "{err}");
    assert!(
        err.contains(state.join("jwt.key").to_str().unwrap()),
        "{err}"
    );
    assert!(!state.exists(), "token generated {}", state.display());
}

#[test]
fn token_signs_with_the_key_the_gateway_generated() {
    let dir = TempDir::new("genkey");
    let state = dir.path().join("state");
    let state_env = [("STATE_DIRECTORY", state.to_str().unwrap())];
    let server = Server::start_in(dir.path(), json!({}), &state_env);
    assert!(state.join("jwt.key").exists(), "serve generates the key");

    // From another directory, with the gateway's settings and state directory.
    let elsewhere = TempDir::new("elsewhere");
    let config = server.config_path().to_str().unwrap();
    let out = run(
        elsewhere.path(),
        &state_env,
        &[
            "token", "--sub", "remote", "--ttl", "5m", "--config", config,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (_ws, authenticated) = open_authed(server.port(), stdout(&out).trim());
    assert_eq!(authenticated["data"]["sub"], "remote");

    // Without the state directory it fails rather than sign with a new key.
    let out = run(
        elsewhere.path(),
        &[],
        &["token", "--sub", "remote", "--config", config],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!elsewhere.path().join("tether-data").exists());
}

/// Whether this machine has an IPv6 loopback to listen on.
fn has_ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// The status code a client connecting to `[::1]:port` gets. It sends
/// nothing: addresses not allowed are answered on accept (README), and unread
/// request bytes could turn the server's close into a reset that loses the answer.
fn status_over_ipv6(port: u16) -> String {
    let mut stream = TcpStream::connect(("::1", port)).expect("connect to [::1]");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).expect("a status line");
    String::from_utf8_lossy(&head[9..12]).into_owned()
}

#[test]
fn localhost_with_an_ipv4_allow_list_warns_about_ipv6_clients() {
    // Seed 000's block (port 0 so that tests do not collide).
    let seed = json!({"server": {"websocket": {
        "host": "localhost", "port": 0, "auth": {"allowed_ip": "127.0.0.1"}
    }}});
    let dir = TempDir::new("localhost");
    let config = dir.write_json("seed.json", &seed);
    let out = run(
        dir.path(),
        &[],
        &["check-config", "--config", config.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "a warning is not a problem: {}",
        stderr(&out)
    );
    let err = stderr(&out);
    let warning = err
        .lines()
        .find(|l| l.contains(REFUSED_WARNING))
        .unwrap_or_else(|| panic!("no warning about [::1]: {err}"));
    assert!(warning.starts_with("tether: warning: "), "{warning}");
    assert!(
        warning.contains("server.websocket.auth.allowed_ip"),
        "{warning}"
    );

    let server = Server::start_in(dir.path(), seed, &[("JWT_SECRET", SECRET)]);
    let logged = server
        .logs()
        .into_iter()
        .find(|l| l.contains(REFUSED_WARNING));
    if has_ipv6_loopback() {
        let line = logged.expect("serve warns at start about [::1]");
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains(&format!("[::1]:{}", server.port())), "{line}");
        // And the warning is true: a client over ::1 is refused.
        assert_eq!(status_over_ipv6(server.port()), "403");
    } else {
        // Without ::1 nothing listens there, so there is nothing to warn about.
        assert_eq!(logged, None);
    }

    // The default allow-list has both loopbacks: no warning.
    let out = run(dir.path(), &[], &["check-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn check_config_reports_every_problem_in_one_run() {
    let dir = TempDir::new("allproblems");
    let config = dir.write_json(
        "s.json",
        &json!({
            "server": {
                "websocket": {
                    "host": "no-such-host.invalid",
                    "auth": {"password": "short", "jwt_secret_file": "missing-secret.txt"}
                },
                "health": {"host": "no-such-host.invalid"}
            },
            "limits": {"max_conections": 5, "idle_timeout_s": 0}
        }),
    );
    let out = run(
        dir.path(),
        &[("WEBSOCKET_PORT", "80a")],
        &["check-config", "--config", config.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let err = stderr(&out);
    let expected = [
        "limits.max_conections: unknown field",
        "WEBSOCKET_PORT:",
        "server.websocket.auth.password: must be at least 8",
        "limits.idle_timeout_s:",
        "server.websocket.auth.jwt_secret_file: cannot read",
        "server.websocket.host: cannot resolve `no-such-host.invalid`",
        "server.health.host: cannot resolve `no-such-host.invalid`",
    ];
    for problem in expected {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("tether: {problem}"))),
            "{problem:?} is not reported: {err}"
        );
    }
    assert_eq!(err.lines().count(), expected.len(), "one line each: {err}");
}

#[test]
fn help_says_what_sighup_re_reads() {
    let dir = TempDir::new("help");
    let out = run(dir.path(), &[], &["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    let sighup: String = help
        .split("SIGHUP")
        .nth(1)
        .unwrap_or_else(|| panic!("--help does not mention SIGHUP: {help}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for reread in [
        "settings file",
        "allowed_ip",
        "limits",
        "log.level",
        "restart",
        "TLS certificate and key",
    ] {
        assert!(
            sighup.contains(reread),
            "SIGHUP help lacks {reread:?}: {help}"
        );
    }
}
