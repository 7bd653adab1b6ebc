//! SPEC §1-2: the command line, config lookup and validation, `tether token`,
//! and the generated JWT key in the state directory.

mod common;

use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::Duration;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `check-config --config FILE` on `settings` (raw text) and returns the output.
fn check_text(text: &str) -> Output {
    let dir = TempDir::new("check");
    let path = dir.path().join("settings.json");
    std::fs::write(&path, text).unwrap();
    run(
        dir.path(),
        &[],
        &["check-config", "--config", path.to_str().unwrap()],
    )
}

/// Asserts exit 1 and a message naming `key` (and every `also` fragment).
fn assert_rejected(out: &Output, key: &str, also: &[&str]) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1; stdout {:?} stderr {:?}",
        stdout(out),
        stderr(out)
    );
    let err = stderr(out);
    assert!(err.contains(key), "error does not name {key:?}: {err}");
    for fragment in also {
        assert!(err.contains(fragment), "error lacks {fragment:?}: {err}");
    }
}

#[test]
fn version_and_help() {
    let dir = TempDir::new("version");
    for flag in ["--version", "-V"] {
        let out = run(dir.path(), &[], &[flag]);
        assert!(out.status.success(), "{flag}");
        assert_eq!(
            stdout(&out).trim(),
            format!("tether {}", env!("CARGO_PKG_VERSION"))
        );
    }
    let out = run(dir.path(), &[], &["--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for word in [
        "serve",
        "token",
        "check-config",
        "--config",
        "--sub",
        "--ttl",
    ] {
        assert!(
            help.contains(word),
            "--help does not mention {word}: {help}"
        );
    }
    // --help after a command works too.
    let out = run(dir.path(), &[], &["token", "--help"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("token"));
}

#[test]
fn unknown_command_or_option_fails() {
    let dir = TempDir::new("unknown");
    let out = run(dir.path(), &[], &["frobnicate"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("frobnicate"), "{}", stderr(&out));
    let out = run(dir.path(), &[], &["check-config", "--bogus"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--bogus"), "{}", stderr(&out));
}

#[test]
fn check_config_prints_effective_settings_with_secrets_redacted() {
    let password = "MineAcademy-pw";
    let secret = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t";
    let out = check_text(
        &json!({
            "server": {"websocket": {"port": 9001, "auth": {"password": password, "jwt_secret": secret}}},
            "limits": {"max_connections": 7}
        })
        .to_string(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let all = format!("{text}{}", stderr(&out));
    assert!(!all.contains(password), "password shown: {all}");
    assert!(!all.contains(secret), "jwt_secret shown: {all}");
    let effective: Value = serde_json::from_str(&text).expect("check-config prints JSON");
    let auth = &effective["server"]["websocket"]["auth"];
    assert_eq!(auth["password"], "<redacted>");
    assert_eq!(auth["jwt_secret"], "<redacted>");
    // Given values and defaults, all of them.
    assert_eq!(effective["server"]["websocket"]["port"], 9001);
    assert_eq!(effective["limits"]["max_connections"], 7);
    assert_eq!(effective["limits"]["max_connections_per_ip"], 5);
    assert_eq!(effective["limits"]["max_message_bytes"], 65536);
    assert_eq!(effective["server"]["health"]["port"], 8081);
    assert_eq!(auth["allowed_ip"], "127.0.0.1,::1");
    assert_eq!(auth["password_permissions"], json!(["admin"]));
    assert_eq!(effective["host"]["request_timeout_ms"], 5000);
    assert_eq!(effective["log"]["level"], "info");
}

#[test]
fn check_config_secret_from_env_is_not_shown() {
    let dir = TempDir::new("envsecret");
    let secret = "environment-secret-environment-secret";
    let path = dir.write_json("s.json", &json!({}));
    let out = run(
        dir.path(),
        &[("JWT_SECRET", secret)],
        &["check-config", "--config", path.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains(secret) && !stderr(&out).contains(secret));
    let short = "too-short";
    let out = run(
        dir.path(),
        &[("JWT_SECRET", short)],
        &["check-config", "--config", path.to_str().unwrap()],
    );
    assert_rejected(&out, "JWT_SECRET", &[]);
    assert!(!stderr(&out).contains(short));
}

#[test]
fn seed_websocket_block_is_accepted() {
    let out = check_text(
        r#"{"server":{"websocket":{"host":"0.0.0.0","port":8080,
            "auth":{"allowed_ip":"127.0.0.1","password":"MineAcademy"}}}}"#,
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn unknown_key_is_rejected_by_name() {
    let out = check_text(r#"{"limits":{"max_conections":3}}"#);
    assert_rejected(&out, "max_conections", &["limits"]);
    let out = check_text(r#"{"server":{"websocket":{"auth":{"passwd":"12345678"}}}}"#);
    assert_rejected(&out, "passwd", &[]);
    // SPEC §13: a key outside tether's objects is another program's setting,
    // ignored with one warning; unknown keys inside tether's cluster block
    // (SPEC §9) are refused.
    let out = check_text(r#"{"extra":true}"#);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning: extra:"), "{}", stderr(&out));
    let out = check_text(r#"{"cluster":{"nodes":1}}"#);
    assert_rejected(&out, "nodes", &["cluster"]);
}

#[test]
fn every_unknown_key_and_wrong_type_gets_its_own_line() {
    // SPEC §1: "exit 1 with a one-line reason per problem", not only the first.
    let out = check_text(
        r#"{"limits":{"bogus":1,"idle_timeout_s":"x","max_message_bytes":10},
            "server":{"websocket":{"auth":{"password_permissions":[1,"a",2]}}},
            "log":{"level":"loud"},"extra":{}}"#,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    for key in [
        "limits.bogus:",
        "limits.idle_timeout_s:",
        "limits.max_message_bytes:",
        "server.websocket.auth.password_permissions[0]:",
        "log.level:",
        "extra:",
    ] {
        let n = lines.iter().filter(|l| l.contains(key)).count();
        assert_eq!(n, 1, "{key} on {n} lines: {err}");
    }
    assert_eq!(lines.len(), 6, "{err}");
}

#[test]
fn wrong_type_is_rejected_by_key() {
    let out = check_text(r#"{"server":{"websocket":{"port":"80"}}}"#);
    assert_rejected(&out, "server.websocket.port", &[]);
    let out = check_text(r#"{"limits":{"max_connections":-1}}"#);
    assert_rejected(&out, "limits.max_connections", &[]);
    let out = check_text(r#"{"rooms":{"by_role":{"a":"room"}}}"#);
    assert_rejected(&out, "rooms.by_role", &[]);
    // The value of a secret key is never echoed, even when of the wrong type.
    let out = check_text(r#"{"server":{"websocket":{"auth":{"password":987654321}}}}"#);
    assert_rejected(&out, "server.websocket.auth.password", &[]);
    assert!(!stderr(&out).contains("987654321"), "{}", stderr(&out));
}

#[test]
fn invalid_values_are_rejected_by_key() {
    let out = check_text(r#"{"server":{"websocket":{"auth":{"password":"Sekr1t!"}}}}"#);
    assert_rejected(&out, "server.websocket.auth.password", &["8"]);
    assert!(!stderr(&out).contains("Sekr1t!"), "password echoed");
    let out = check_text(r#"{"server":{"websocket":{"auth":{"jwt_secret":"short-secret"}}}}"#);
    assert_rejected(&out, "server.websocket.auth.jwt_secret", &["32"]);
    assert!(!stderr(&out).contains("short-secret"));
    let out = check_text(r#"{"server":{"websocket":{"auth":{"allowed_ip":"10.0.0.0/33"}}}}"#);
    assert_rejected(&out, "server.websocket.auth.allowed_ip", &[]);
    let out = check_text(r#"{"log":{"level":"loud"}}"#);
    assert_rejected(&out, "log.level", &[]);
    // Every problem at once, one line each.
    let out = check_text(r#"{"limits":{"max_connections":0,"idle_timeout_s":0}}"#);
    assert_rejected(&out, "limits.max_connections", &["limits.idle_timeout_s"]);
    assert!(stderr(&out).lines().count() >= 2);
}

#[test]
fn malformed_json_is_rejected() {
    let out = check_text("{\"server\": ");
    assert_rejected(&out, "settings.json", &[]);
    let out = check_text("not json");
    assert_rejected(&out, "settings.json", &[]);
    let out = check_text("[]");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn missing_explicit_config_file_fails() {
    let dir = TempDir::new("missing");
    let out = run(
        dir.path(),
        &[],
        &["check-config", "--config", "does-not-exist.json"],
    );
    assert_rejected(&out, "does-not-exist.json", &[]);
    let out = run(
        dir.path(),
        &[],
        &["serve", "--config", "does-not-exist.json"],
    );
    assert_rejected(&out, "does-not-exist.json", &[]);
}

#[test]
fn serve_with_a_bad_config_exits_1_without_listening() {
    let dir = TempDir::new("badserve");
    for settings in [
        json!({"server": {"websocket": {"port": 0, "auth": {"password": "short"}}}}),
        json!({"server": {"websocket": {"port": 0}}, "limits": {"nope": 1}}),
        json!({"server": {"websocket": {"port": 0, "auth": {"allowed_ip": ""}}}}),
    ] {
        let path = dir.write_json("bad.json", &settings);
        let out = run(
            dir.path(),
            &[],
            &["serve", "--config", path.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(1), "{settings}: {}", stderr(&out));
        assert!(!stderr(&out).contains("listening on"), "{}", stderr(&out));
        assert!(
            !dir.path().join("tether-data").exists(),
            "a bad config must not generate a key"
        );
    }
    // try_start_in reports the same thing through the test harness.
    let err = Server::try_start_in(
        dir.path(),
        json!({"limits": {"max_message_bytes": 1}}),
        &[("JWT_SECRET", SECRET)],
    )
    .err()
    .expect("a bad config must not start");
    assert!(err.contains("limits.max_message_bytes"), "{err}");
}

#[test]
fn token_prints_one_jwt_with_the_claims() {
    let dir = TempDir::new("token");
    let path = dir.write_json("s.json", &json!({}));
    let before = unix_now();
    let out = run(
        dir.path(),
        &[("JWT_SECRET", SECRET)],
        &[
            "token",
            "--sub",
            "alice",
            "--permissions",
            "publish,room:project_*",
            "--rooms",
            "lobby,ops",
            "--role",
            "provider",
            "--ttl",
            "15m",
            "--config",
            path.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line: {text:?}");
    let token = lines[0];
    assert_eq!(token.split('.').count(), 3, "{token}");
    let header = jwt_header(token);
    assert_eq!(header["alg"], "HS256", "{header}");
    let claims = jwt_claims(token);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["permissions"], json!(["publish", "room:project_*"]));
    assert_eq!(claims["rooms"], json!(["lobby", "ops"]));
    assert_eq!(claims["role"], "provider");
    let exp = claims["exp"].as_u64().expect("exp");
    let after = unix_now();
    assert!(
        exp >= before + 900 && exp <= after + 900,
        "exp {exp} is not 15 minutes after {before}..{after}"
    );
    if let Some(iat) = claims["iat"].as_u64() {
        assert!(iat >= before && iat <= after);
    }

    // The default ttl is 24 h; a plain number is seconds.
    let out = run(
        dir.path(),
        &[("JWT_SECRET", SECRET)],
        &["token", "--sub", "bob", "--config", path.to_str().unwrap()],
    );
    let claims = jwt_claims(stdout(&out).trim());
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp.abs_diff(unix_now() + 86400) <= 5, "{claims}");
    for (ttl, seconds) in [("90", 90), ("90s", 90), ("1h", 3600), ("7d", 7 * 86400)] {
        let out = run(
            dir.path(),
            &[("JWT_SECRET", SECRET)],
            &[
                "token",
                "--sub",
                "c",
                "--ttl",
                ttl,
                "--config",
                path.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "--ttl {ttl}: {}", stderr(&out));
        let exp = jwt_claims(stdout(&out).trim())["exp"].as_u64().unwrap();
        assert!(exp.abs_diff(unix_now() + seconds) <= 5, "--ttl {ttl}");
    }
}

#[test]
fn token_argument_errors() {
    let dir = TempDir::new("tokenerr");
    let path = dir.write_json("s.json", &json!({}));
    let config = path.to_str().unwrap();
    let envs = [("JWT_SECRET", SECRET)];
    // Usage errors exit 2, as an unknown option does (README: "Usage errors exit 2").
    let out = run(dir.path(), &envs, &["token", "--config", config]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--sub"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    let out = run(
        dir.path(),
        &envs,
        &["token", "--sub", "", "--config", config],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    for ttl in ["soon", "0", "5y", "-1h"] {
        let out = run(
            dir.path(),
            &envs,
            &["token", "--sub", "x", "--ttl", ttl, "--config", config],
        );
        assert_eq!(out.status.code(), Some(2), "--ttl {ttl}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "--ttl {ttl} printed a token");
    }
}

#[test]
fn token_from_cli_is_accepted_by_the_server() {
    let server = Server::start(json!({}));
    let token = server.token("cli-user", &["publish"], &["r"], None, "5m");
    let (_ws, authenticated) = open_authed(server.port(), &token);
    assert_eq!(authenticated["data"]["sub"], "cli-user");
    assert_eq!(authenticated["data"]["rooms"], json!(["r"]));
}

#[test]
fn config_lookup_order() {
    let dir = TempDir::new("lookup");
    let from_env = dir.write_json("env.json", &json!({"limits": {"max_connections": 11}}));
    let explicit = dir.write_json("explicit.json", &json!({"limits": {"max_connections": 22}}));
    let max = |out: &Output| -> Value {
        assert!(out.status.success(), "{}", stderr(out));
        let effective: Value = serde_json::from_str(&stdout(out)).unwrap();
        effective["limits"]["max_connections"].clone()
    };
    // Built-in defaults.
    assert_eq!(max(&run(dir.path(), &[], &["check-config"])), 1024);
    // ./settings.json when it exists.
    dir.write_json("settings.json", &json!({"limits": {"max_connections": 33}}));
    assert_eq!(max(&run(dir.path(), &[], &["check-config"])), 33);
    // $TETHER_CONFIG over ./settings.json.
    let env = [("TETHER_CONFIG", from_env.to_str().unwrap())];
    assert_eq!(max(&run(dir.path(), &env, &["check-config"])), 11);
    // --config over both.
    let out = run(
        dir.path(),
        &env,
        &["check-config", "--config", explicit.to_str().unwrap()],
    );
    assert_eq!(max(&out), 22);
}

#[test]
fn serve_reads_tether_config_from_env() {
    let dir = TempDir::new("envserve");
    // A config that only TETHER_CONFIG points at (not ./settings.json).
    let path = dir.write_json(
        "elsewhere.json",
        &json!({
            "server": {"websocket": {"host": "127.0.0.1", "port": 0}},
            "log": {"level": "debug"},
            "limits": {"max_connections": 2}
        }),
    );
    let mut child = command(
        dir.path(),
        &[
            ("TETHER_CONFIG", path.to_str().unwrap()),
            ("JWT_SECRET", SECRET),
        ],
    )
    .arg("serve")
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut port = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        if let Some(rest) = line.split("listening on ws://127.0.0.1:").nth(1) {
            port = rest.trim().parse::<u16>().ok();
            break;
        }
    }
    let port = port.expect("serve with TETHER_CONFIG did not listen on 127.0.0.1");
    let (_a, _) = open(port);
    let (_b, _) = open(port);
    assert_eq!(
        refused(port, "/", &[]),
        503,
        "max_connections from the env config"
    );
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    drop((_a, _b));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn env_overrides_apply() {
    let dir = TempDir::new("envover");
    let path = dir.write_json("s.json", &json!({"server": {"websocket": {"port": 1234}}}));
    let out = run(
        dir.path(),
        &[("WEBSOCKET_PORT", "4321"), ("TETHER_LOG", "warn")],
        &["check-config", "--config", path.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let effective: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(effective["server"]["websocket"]["port"], 4321);
    assert_eq!(effective["log"]["level"], "warn");
    let out = run(
        dir.path(),
        &[("WEBSOCKET_PORT", "80a")],
        &["check-config", "--config", path.to_str().unwrap()],
    );
    assert_rejected(&out, "WEBSOCKET_PORT", &[]);
}

#[test]
fn generated_jwt_key_is_private_and_reused_across_restarts() {
    let dir = TempDir::new("keygen");
    let mut server = Server::start_in(dir.path(), json!({}), &[]);
    let key_path = dir.path().join("tether-data").join("jwt.key");
    let key = std::fs::read(&key_path).expect("tether-data/jwt.key was generated");
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "jwt.key mode {:o}", mode & 0o777);
    assert!(
        key.iter().filter(|b| !b.is_ascii_whitespace()).count() >= 32,
        "the generated secret holds at least 32 bytes"
    );
    // `tether token` (same dir, no JWT_SECRET) signs with the same key.
    let token = server.token("keeper", &[], &["k"], None, "1h");
    let (mut ws, authenticated) = open_authed(server.port(), &token);
    assert_eq!(authenticated["data"]["sub"], "keeper");
    assert_eq!(close_normally(&mut ws), Some(1000));
    drop(ws);
    // A token signed with some other key is refused.
    let foreign = mint_valid("keeper", &[], &[], 600);
    assert_eq!(
        refused(server.port(), &format!("/?token={foreign}"), &[]),
        401
    );
    assert_eq!(server.stop().code(), Some(0));

    // Restart: the key is reused, so the token minted before still works.
    let server = Server::start_in(dir.path(), json!({}), &[]);
    assert_eq!(
        std::fs::read(&key_path).unwrap(),
        key,
        "jwt.key was rewritten"
    );
    let (_ws, authenticated) = open_authed(server.port(), &token);
    assert_eq!(authenticated["data"]["sub"], "keeper");
    assert!(server
        .logs()
        .iter()
        .all(|l| !l.contains(std::str::from_utf8(&key).unwrap().trim())));
}

#[test]
fn state_directory_env_holds_the_key() {
    let dir = TempDir::new("statedir");
    let state = dir.path().join("state");
    let state_str = state.to_str().unwrap().to_string();
    let server = Server::start_in(dir.path(), json!({}), &[("STATE_DIRECTORY", &state_str)]);
    let key_path = state.join("jwt.key");
    assert!(key_path.exists(), "no key in $STATE_DIRECTORY");
    assert!(!dir.path().join("tether-data").exists());
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = server.token("s", &[], &[], None, "1h");
    let (_ws, _) = open_authed(server.port(), &token);
}

#[test]
fn configured_jwt_secret_matches_independent_signing() {
    let secret = "configured-secret-configured-secret-42";
    let dir = TempDir::new("cfgsecret");
    let server = Server::start_in(
        dir.path(),
        json!({"server": {"websocket": {"auth": {"jwt_secret": secret}}}}),
        &[],
    );
    let token = mint(
        secret.as_bytes(),
        Some("indie"),
        Some(unix_now() + 600),
        json!({"permissions": ["publish"]}),
    );
    let (_ws, authenticated) = open_authed(server.port(), &token);
    assert_eq!(authenticated["data"]["permissions"], json!(["publish"]));
    // And `tether token` with that config signs tokens the server accepts.
    let cli = server.token("cli", &[], &[], None, "1h");
    let (_ws2, _) = open_authed(server.port(), &cli);
}

#[test]
fn listen_address_problems_name_the_key() {
    // A host that cannot resolve (a NUL byte: refused before any lookup) is
    // reported by check-config and by serve under its key.
    let out = check_text(r#"{"server":{"websocket":{"host":"bad\u0000host"}}}"#);
    assert_rejected(&out, "server.websocket.host", &["cannot resolve"]);
    let out = check_text(r#"{"server":{"health":{"host":"bad\u0000host"}}}"#);
    assert_rejected(&out, "server.health.host", &["cannot resolve"]);
    // An address this machine does not have (TEST-NET-1): bind fails, exit 1,
    // the message names the block and the address.
    let dir = TempDir::new("noaddr");
    let path = dir.write_json(
        "s.json",
        &json!({"server": {"websocket": {"host": "192.0.2.1", "port": 0}}}),
    );
    let out = run(
        dir.path(),
        &[("JWT_SECRET", SECRET)],
        &["serve", "--config", path.to_str().unwrap()],
    );
    assert_rejected(&out, "server.websocket", &["192.0.2.1"]);
}

#[test]
fn serve_on_a_busy_port_exits_1() {
    let first = Server::start(json!({}));
    let port = first.port().to_string();
    let dir = TempDir::new("busy");
    let path = dir.write_json(
        "s.json",
        &json!({"server": {"websocket": {"host": "127.0.0.1", "port": first.port()}}}),
    );
    let out = run(
        dir.path(),
        &[("JWT_SECRET", SECRET)],
        &["serve", "--config", path.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&port), "{}", stderr(&out));
    // The first server is unaffected.
    assert_serving(first.port());
}
