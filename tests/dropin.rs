//! SPEC §13 end to end, per seed: each seed's documented client flow against
//! the real binary, with the settings that make tether a drop-in for it.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;

/// `tether check-config --config PATH`, run in `dir`.
fn check_config(dir: &TempDir, path: &std::path::Path) -> std::process::Output {
    let path = path.to_str().expect("a UTF-8 path");
    run(dir.path(), &[], &["check-config", "--config", path])
}

/// The JSON body of `GET path` on the health listener.
fn get_json(port: u16, path: &str) -> Value {
    let answer = http_get(port, path);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

fn http_get(port: u16, path: &str) -> String {
    http_get_as(port, path, None)
}

/// The whole answer to `GET path` (the server closes after it).
fn http_get_as(port: u16, path: &str, bearer: Option<&str>) -> String {
    use std::io::{Read, Write};
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let mut stream = tcp(port);
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n");
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

// ---------------------------------------------------------------------------
// Seed 004 (Jeff Bot): the "action" dialect, its Python client unchanged
// ---------------------------------------------------------------------------

/// The seed's "Python Client" example as written (only the URL and where the
/// token comes from differ), plus the same flow for an unknown sound.
const JEFF_CLIENT: &str = r#"
import asyncio
import json
import os
import sys
import websockets

URL = sys.argv[1]

def generate_token(user_id):
    return os.environ["JEFF_TOKEN"]

async def play_sound(user_id, filename):
    token = generate_token(user_id)

    async with websockets.connect(URL) as websocket:
        # Wait for welcome
        await websocket.recv()

        # Authenticate
        auth_msg = {"action": "authenticate", "token": token}
        await websocket.send(json.dumps(auth_msg))
        await websocket.recv()  # Auth response

        # Play sound
        play_msg = {"action": "play", "filename": filename}
        await websocket.send(json.dumps(play_msg))
        response = await websocket.recv()

        return json.loads(response)

# Usage
result = asyncio.run(play_sound("123456789", "airhorn.mp3"))
missing = asyncio.run(play_sound("123456789", "invalid.mp3"))
print(json.dumps({"result": result, "missing": missing}))
"#;

#[test]
fn seed_004_python_client_against_a_section_6_host() {
    let server = Server::start(json!({"server": {"websocket": {"envelope": "action"}}}));
    let port = server.port();
    let host_token = server.token("soundbot", &["host"], &[], None, "1h");
    let mut bot = sound_bot(port, &host_token, &[]);
    let user_token = server.token("123456789", &[], &[], None, "1h");

    // The dialect seen from a Rust client first: the answers of the seed's API.
    let mut ws = connect(port, "/", &[]).expect("connect");
    assert_eq!(recv_json(&mut ws)["action"], "welcome");
    let early = request(&mut ws, &json!({"action": "list"}));
    assert_eq!(early["action"], "error", "{early}");
    assert_eq!(early["error_code"], "not_authenticated");
    assert!(early["error_message"].is_string() && early["timestamp"].is_u64());
    let auth = request(
        &mut ws,
        &json!({"action": "authenticate", "token": user_token}),
    );
    assert_eq!(auth["message"], "Authentication successful", "{auth}");
    assert_eq!(auth["user_id"], "123456789");
    let deadline = Instant::now() + Duration::from_secs(30);
    let list = loop {
        let answer = request(&mut ws, &json!({"action": "list"}));
        if answer["error_code"] != "unknown_action" {
            break answer;
        }
        assert!(Instant::now() < deadline, "the sound bot never registered");
        assert_running(&mut bot.0, "the sound bot");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(list["action"], "list", "{list}");
    assert_eq!(list["count"], list["sounds"].as_array().unwrap().len());
    let missing = request(&mut ws, &json!({"filename": "x.mp3"}));
    assert_eq!(missing["error_code"], "missing_action", "{missing}");
    let stopped = request(&mut ws, &json!({"action": "stop", "requestId": "s1"}));
    assert_eq!(stopped["action"], "stopped", "{stopped}");
    assert_eq!(stopped["requestId"], "s1");

    // Then the seed's own Python client, unchanged.
    let out = python3()
        .args(["-c", JEFF_CLIENT, &format!("ws://127.0.0.1:{port}")])
        .env("JEFF_TOKEN", &user_token)
        .output()
        .expect("python3 runs the seed's client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("the client's JSON");
    assert_eq!(
        got["result"],
        json!({"action": "playing", "filename": "airhorn.mp3", "title": "airhorn.mp3", "channel": "General"})
    );
    let missing = &got["missing"];
    assert_eq!(missing["action"], "error", "{missing}");
    assert_eq!(missing["error_code"], "sound_not_found");
    assert_eq!(missing["error_message"], "Sound \"invalid.mp3\" not found");
    assert!(missing["timestamp"].is_u64());
}

// ---------------------------------------------------------------------------
// Seed 003 (Django): URL paths, SimpleJWT-shaped tokens, monitoring figures
// ---------------------------------------------------------------------------

/// A token as Django SimpleJWT issues it: no `sub`, a numeric `user_id`.
fn simplejwt(user_id: u64, scope: &str) -> String {
    mint(
        SECRET.as_bytes(),
        None,
        Some(unix_now() + 600),
        json!({"token_type": "access", "jti": "5f2b1c", "user_id": user_id, "scope": scope}),
    )
}

#[test]
fn seed_003_paths_and_simplejwt_tokens() {
    let server = Server::start(json!({
        "server": {"websocket": {"auth": {"jwt_claims": {"sub": "user_id", "permissions": "scope"}}}},
        "rooms": {"by_path": {
            "/ws/projects/{project_id}/": ["project_{project_id}"],
            "/ws/notifications/": ["notifications_{sub}"]
        }}
    }));
    let port = server.port();
    let member = simplejwt(42, "room:project_* room:notifications_42 publish");
    let path = format!("/ws/projects/7/?token={member}");
    let mut alice = connect(port, &path, &[]).expect("connect");
    assert_eq!(recv_json(&mut alice)["data"]["authenticated"], true);
    let who = recv_json(&mut alice);
    assert_eq!(who["event"], "authenticated", "{who}");
    assert_eq!(who["data"]["sub"], "42");
    assert_eq!(who["data"]["rooms"], json!(["project_7"]));

    // A second member of the project, on the same path, hears alice.
    let other = simplejwt(43, "room:project_7");
    let mut bob = connect(port, &format!("/ws/projects/7/?token={other}"), &[]).expect("bob");
    recv_json(&mut bob);
    assert_eq!(recv_json(&mut bob)["data"]["rooms"], json!(["project_7"]));
    let published = request(
        &mut alice,
        &json!({"event": "publish", "data": {"room": "project_7", "event": "task.updated", "data": {"id": 1}}}),
    );
    assert_eq!(published["data"]["delivered"], 1, "{published}");
    let heard = recv_json(&mut bob);
    assert_eq!(heard["event"], "task.updated");
    assert_eq!(heard["from"], "42");

    // `{sub}` in a path's rooms; a path no template names joins nothing more.
    let mut notes = connect(port, &format!("/ws/notifications/?token={member}"), &[]).unwrap();
    recv_json(&mut notes);
    assert_eq!(
        recv_json(&mut notes)["data"]["rooms"],
        json!(["notifications_42"])
    );
    let mut health = connect(port, &format!("/ws/system-health/?token={other}"), &[]).unwrap();
    recv_json(&mut health);
    assert_eq!(recv_json(&mut health)["data"]["rooms"], json!([]));

    // Not a member of project 8: 403 with the handshake token, and with an
    // `auth` message room_not_allowed then close 4001.
    let outsider = simplejwt(44, "publish");
    assert_eq!(
        refused(port, &format!("/ws/projects/8/?token={outsider}"), &[]),
        403
    );
    let mut ws = connect(port, "/ws/projects/8/", &[]).expect("connect");
    recv_json(&mut ws);
    send_json(
        &mut ws,
        &json!({"event": "auth", "data": {"token": outsider}}),
    );
    assert_error(&recv_json(&mut ws), "room_not_allowed");
    assert_eq!(expect_close(&mut ws), 4001);
    // Still 401 for a token that is not valid at all.
    let forged = mint(
        b"another-secret-another-secret-0123",
        None,
        Some(unix_now() + 60),
        json!({"user_id": 1}),
    );
    assert_eq!(
        refused(port, &format!("/ws/projects/7/?token={forged}"), &[]),
        401
    );

    // Seed 003's monitoring figures: /health's extra keys and /metrics.
    drop(bob);
    close_normally(&mut notes);
    let http = health_port(&server);
    let deadline = Instant::now() + Duration::from_secs(5);
    let stats = loop {
        let stats = get_json(http, "/health")["stats"].clone();
        if stats["active_connections"] == 2 || Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(stats["total_connections"], 5, "{stats}");
    assert_eq!(stats["connections_last_24h"], 5, "{stats}");
    assert!(
        stats["messages_per_minute"].as_u64().unwrap() >= 2,
        "{stats}"
    );
    assert!(
        stats["avg_connection_duration_seconds"].is_number(),
        "{stats}"
    );
    let metrics = http_get(http, "/metrics");
    for line in [
        "# TYPE tether_connection_duration_seconds histogram",
        "tether_connection_duration_seconds_bucket{le=\"+Inf\"} ",
        "tether_connection_duration_seconds_count ",
        "tether_connections_last_24h 5",
        "tether_messages_per_minute ",
        "tether_refusals_total{reason=\"room_not_allowed\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
}

// ---------------------------------------------------------------------------
// Seed 001 (Easy!Appointments behind nginx): trusted proxies
// ---------------------------------------------------------------------------

/// An upgrade from `local` with these headers: the socket, or the HTTP status.
fn upgrade_from(
    local: std::net::Ipv4Addr,
    port: u16,
    headers: &[(&str, String)],
) -> Result<Ws, u16> {
    let mut request = format!("ws://127.0.0.1:{port}/ws")
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("name");
        request
            .headers_mut()
            .append(name, value.parse().expect("header value"));
    }
    let stream = tcp_from(local, port).expect("connect from a loopback address");
    match tungstenite::client::client(request, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(http_status(&e).expect("a status")),
        Err(tungstenite::HandshakeError::Interrupted(_)) => panic!("interrupted"),
    }
}

#[test]
fn seed_001_behind_a_trusted_proxy() {
    let proxy = std::net::Ipv4Addr::new(127, 0, 0, 1);
    let stranger = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let server = Server::start(json!({"server": {"websocket": {
        "trusted_proxies": ["127.0.0.1"],
        "auth": {"allowed_ip": "127.0.0.0/8,203.0.113.0/24"}
    }}}));
    let port = server.port();
    let admin = mint_valid("admin", &["admin"], &[], 600);

    // Six app users through one nginx: each is its own address, not the proxy's.
    let mut users = Vec::new();
    for n in 1..=6 {
        let headers = [
            ("X-Forwarded-For", format!("203.0.113.{n}")),
            ("X-Real-IP", format!("203.0.113.{n}")),
            (
                "Authorization",
                format!("Bearer {}", mint_valid(&format!("u{n}"), &[], &[], 600)),
            ),
        ];
        let mut ws =
            upgrade_from(proxy, port, &headers).unwrap_or_else(|s| panic!("user {n}: {s}"));
        assert_eq!(recv_json(&mut ws)["event"], "connected");
        users.push(ws);
    }
    let (mut dashboard, _) = open_authed(port, &admin);
    let _ = &mut dashboard;
    let http = health_port(&server);
    let answer = http_get_as(http, "/api/connections", Some(&admin));
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let mut ips: Vec<String> = body["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["sub"] != "admin")
        .map(|c| c["ip"].as_str().unwrap().to_string())
        .collect();
    ips.sort();
    let expected: Vec<String> = (1..=6).map(|n| format!("203.0.113.{n}")).collect();
    assert_eq!(ips, expected);
    assert!(server.wait_log("from 203.0.113.6 authenticated", Duration::from_secs(5)));

    // The proxy names a client allowed_ip does not allow: 403. A proxy that
    // appends to what the client sent: the rightmost untrusted address counts.
    let refused = upgrade_from(proxy, port, &[("X-Forwarded-For", "198.51.100.9".into())]);
    assert_eq!(refused.err(), Some(403));
    let spoof = [("X-Forwarded-For", "198.51.100.9, 203.0.113.50".to_string())];
    let mut ws = upgrade_from(proxy, port, &spoof).expect("the address nginx saw counts");
    assert_eq!(recv_json(&mut ws)["event"], "connected");

    // From an untrusted peer the headers change nothing: its own address
    // has the per-address limit of 5.
    let mut direct = Vec::new();
    for n in 1..=5 {
        let headers = [("X-Forwarded-For", format!("203.0.113.{}", 100 + n))];
        direct.push(upgrade_from(stranger, port, &headers).unwrap_or_else(|s| panic!("{n}: {s}")));
    }
    let sixth = upgrade_from(
        stranger,
        port,
        &[("X-Forwarded-For", "203.0.113.120".into())],
    );
    assert_eq!(sixth.err(), Some(429));
    // Not even allowed_ip looks at it: 198.51.100.9 is not allowed, the peer is.
    let headers = [("X-Forwarded-For", "198.51.100.9".to_string())];
    drop(direct.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut ws = loop {
        match upgrade_from(stranger, port, &headers) {
            Ok(ws) => break ws,
            Err(429) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(status) => panic!("a header from an untrusted peer changed the answer: {status}"),
        }
    };
    assert_eq!(recv_json(&mut ws)["event"], "connected");
}

// ---------------------------------------------------------------------------
// Seed 000 (MineBot): the bot's whole settings.json
// ---------------------------------------------------------------------------

#[test]
fn seed_000_whole_settings_file() {
    let settings = json!({
        "bot": {"token": "discord-bot-token", "prefix": "!", "owner": 1234},
        "database": {"url": "sqlite:///minebot.db"},
        "server": {
            "websocket": {
                "host": "127.0.0.1",
                "port": 0,
                "auth": {"allowed_ip": "127.0.0.1", "password": "MineAcademy"}
            },
            "minecraft": {"host": "mc.example.com", "port": 25565}
        },
        "modules": ["tickets", "music"]
    });
    let dir = TempDir::new("minebot");
    let path = dir.write_json("settings.json", &settings);
    let out = check_config(&dir, &path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for key in ["bot", "database", "modules", "server.minecraft"] {
        let warning = format!("warning: {key}: not one of tether's settings; ignored");
        assert_eq!(err.matches(&warning).count(), 1, "{warning} once in {err}");
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains("discord-bot-token"));

    let server = Server::start(settings);
    for key in ["bot", "database", "modules", "server.minecraft"] {
        let warning = format!("settings: {key}: not one of tether's settings; ignored");
        assert!(
            server.wait_log(&warning, Duration::from_secs(5)),
            "{warning}"
        );
    }
    server.assert_not_logged("discord-bot-token");
    let (mut ws, _) = open(server.port());
    let answer = request(
        &mut ws,
        &json!({"event": "auth", "data": {"password": "MineAcademy"}}),
    );
    assert_eq!(answer["event"], "authenticated", "{answer}");
    assert_eq!(answer["data"]["sub"], "password");

    // Unknown keys inside tether's own objects stay errors.
    let mut typo = settings_with_typo();
    typo["server"]["websocket"]["prot"] = json!(8080);
    let path = dir.write_json("typo.json", &typo);
    let out = check_config(&dir, &path);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.websocket.prot"));
}

fn settings_with_typo() -> Value {
    json!({"bot": {}, "server": {"websocket": {"port": 0}}})
}

// ---------------------------------------------------------------------------
// Origins with one wildcard label
// ---------------------------------------------------------------------------

/// An upgrade with `Origin: origin`, tried again if a signal interrupted the
/// client's blocking socket call (as tests/tls.rs tolerates too).
fn with_origin(port: u16, origin: &str) -> Result<Ws, tungstenite::Error> {
    let mut tries = 0;
    loop {
        match connect(port, "/", &[("Origin", origin)]) {
            Err(tungstenite::Error::Io(e))
                if e.kind() == std::io::ErrorKind::Interrupted && tries < 3 =>
            {
                tries += 1;
            }
            other => return other,
        }
    }
}

#[test]
fn origin_wildcard_accepts_one_label() {
    let server = Server::start(json!({"server": {"websocket": {"auth": {
        "allowed_origins": ["https://*.example.com", "https://exact.example"]
    }}}}));
    let port = server.port();
    for origin in [
        "https://app.example.com",
        "https://ADMIN.example.com",
        "https://exact.example",
    ] {
        let mut ws = with_origin(port, origin).unwrap_or_else(|e| panic!("{origin}: {e}"));
        assert_eq!(recv_json(&mut ws)["event"], "connected");
    }
    for origin in [
        "https://example.com",
        "https://a.b.example.com",
        "http://app.example.com",
        "https://app.example.com.evil",
        "https://sub.exact.example",
    ] {
        let status = with_origin(port, origin)
            .err()
            .and_then(|e| http_status(&e));
        assert_eq!(status, Some(403), "{origin}");
    }

    let dir = TempDir::new("origins");
    for bad in ["https://*example.com", "*", "https://app.*.com"] {
        let path = dir.write_json(
            "settings.json",
            &json!({"server": {"websocket": {"auth": {"allowed_origins": [bad]}}}}),
        );
        let out = check_config(&dir, &path);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("allowed_origins[0]"), "{bad}: {err}");
    }
}
