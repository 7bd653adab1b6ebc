//! SPEC §3: connecting, handshake tokens, refusals before the upgrade, auth timeout.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn connected_comes_first_without_token() {
    let server = Server::start(json!({}));
    let (mut ws, connected) = open(server.port());
    let data = &connected["data"];
    assert_eq!(data["authenticated"], false, "{connected}");
    let client_id = data["clientId"].as_str().expect("clientId is a string");
    assert!(!client_id.is_empty());
    assert_eq!(
        data["server"],
        format!("tether/{}", env!("CARGO_PKG_VERSION")),
        "{connected}"
    );
    // Nothing else is sent before the client speaks; ping works unauthenticated.
    assert_pong(&mut ws);

    // Each connection gets its own id.
    let (_ws2, second) = open(server.port());
    assert_ne!(second["data"]["clientId"], data["clientId"]);
}

#[test]
fn any_path_is_accepted() {
    let server = Server::start(json!({}));
    for path in ["/", "/ws", "/some/deep/path", "/x?foo=bar"] {
        let mut ws = connect(server.port(), path, &[]).expect(path);
        let connected = recv_json(&mut ws);
        assert_eq!(connected["event"], "connected", "{path}: {connected}");
    }
}

fn assert_authenticated_pair(ws: &mut Ws, sub: &str) {
    let connected = recv_json(ws);
    assert_eq!(connected["event"], "connected", "{connected}");
    assert_eq!(connected["data"]["authenticated"], true, "{connected}");
    let authenticated = recv_json(ws);
    assert_eq!(authenticated["event"], "authenticated", "{authenticated}");
    let data = &authenticated["data"];
    assert_eq!(data["sub"], sub, "{authenticated}");
    assert_eq!(data["clientId"], connected["data"]["clientId"]);
    assert!(data["permissions"].is_array(), "{authenticated}");
    assert!(data["rooms"].is_array(), "{authenticated}");
    assert!(data["expiresAt"].is_u64(), "{authenticated}");
}

#[test]
fn token_in_authorization_header() {
    let server = Server::start(json!({}));
    let token = server.token("alice", &["publish"], &["lobby"], None, "1h");
    let bearer = format!("Bearer {token}");
    let mut ws = connect(server.port(), "/", &[("Authorization", &bearer)]).unwrap();
    assert_authenticated_pair(&mut ws, "alice");
    // The session is usable at once, without an `auth` message.
    let whoami = request(&mut ws, &json!({"event": "whoami"}));
    assert_eq!(whoami["event"], "whoami", "{whoami}");
    assert_eq!(whoami["data"]["sub"], "alice");
    assert_eq!(whoami["data"]["permissions"], json!(["publish"]));
    assert_eq!(whoami["data"]["rooms"], json!(["lobby"]));
    let exp = jwt_claims(&token)["exp"].as_u64().unwrap();
    assert_eq!(whoami["data"]["expiresAt"], exp);
}

#[test]
fn token_in_query_parameter() {
    let server = Server::start(json!({}));
    let token = server.token("bob", &[], &[], None, "1h");
    let mut ws = connect(server.port(), &format!("/?token={token}"), &[]).unwrap();
    assert_authenticated_pair(&mut ws, "bob");
    let mut ws = connect(server.port(), &format!("/chat?x=1&token={token}&y=2"), &[]).unwrap();
    assert_authenticated_pair(&mut ws, "bob");
}

#[test]
fn token_in_subprotocol_list() {
    let server = Server::start(json!({}));
    let token = server.token("carol", &[], &[], None, "1h");
    let protocols = format!("tether.v1, tether.bearer.{token}");
    let (mut ws, response) = connect_full(
        server.port(),
        "/",
        &[("Sec-WebSocket-Protocol", &protocols)],
    )
    .unwrap();
    let chosen: Vec<&str> = response
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(chosen, vec!["tether.v1"], "the token is never echoed back");
    assert_authenticated_pair(&mut ws, "carol");
}

#[test]
fn subprotocol_without_token_selects_tether_v1() {
    let server = Server::start(json!({}));
    let (mut ws, response) = connect_full(
        server.port(),
        "/",
        &[("Sec-WebSocket-Protocol", "tether.v1")],
    )
    .unwrap();
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "tether.v1"
    );
    let connected = recv_json(&mut ws);
    assert_eq!(connected["data"]["authenticated"], false);
}

#[test]
fn token_sources_are_tried_in_spec_order() {
    let server = Server::start(json!({}));
    let header = mint_valid("from-header", &[], &[], 600);
    let query = mint_valid("from-query", &[], &[], 600);
    let proto = mint_valid("from-protocol", &[], &[], 600);
    let bearer = format!("Bearer {header}");
    let protocols = format!("tether.v1, tether.bearer.{proto}");

    let mut ws = connect(
        server.port(),
        &format!("/?token={query}"),
        &[
            ("Authorization", &bearer),
            ("Sec-WebSocket-Protocol", &protocols),
        ],
    )
    .unwrap();
    assert_authenticated_pair(&mut ws, "from-header");

    let mut ws = connect(
        server.port(),
        &format!("/?token={query}"),
        &[("Sec-WebSocket-Protocol", &protocols)],
    )
    .unwrap();
    assert_authenticated_pair(&mut ws, "from-query");
}

#[test]
fn invalid_handshake_token_is_401() {
    let server = Server::start(json!({}));
    let port = server.port();
    let now = unix_now();
    let expired = mint(SECRET.as_bytes(), Some("x"), Some(now - 3600), json!({}));
    let wrong_key = mint(
        b"another-secret-another-secret-another-secret",
        Some("x"),
        Some(now + 600),
        json!({}),
    );
    let none = alg_none_token(&json!({"sub": "x", "exp": now + 600}));
    let no_exp = mint(SECRET.as_bytes(), Some("x"), None, json!({}));
    let no_sub = mint(SECRET.as_bytes(), None, Some(now + 600), json!({}));
    let empty_sub = mint(SECRET.as_bytes(), Some(""), Some(now + 600), json!({}));
    for (what, token) in [
        ("garbage", "not-a-jwt".to_string()),
        ("expired", expired),
        ("wrong key", wrong_key),
        ("alg none", none),
        ("no exp", no_exp),
        ("no sub", no_sub),
        ("empty sub", empty_sub),
    ] {
        let bearer = format!("Bearer {token}");
        assert_eq!(
            refused(port, "/", &[("Authorization", &bearer)]),
            401,
            "{what} in Authorization"
        );
        assert_eq!(
            refused(port, &format!("/?token={token}"), &[]),
            401,
            "{what} in query"
        );
        let protocols = format!("tether.v1, tether.bearer.{token}");
        assert_eq!(
            refused(port, "/", &[("Sec-WebSocket-Protocol", &protocols)]),
            401,
            "{what} in subprotocol"
        );
    }
    assert_serving(port);
}

#[test]
fn ip_not_allowed_is_403() {
    let server = Server::start(json!({
        "server": {"websocket": {"auth": {"allowed_ip": "10.1.2.3,192.168.0.0/16"}}}
    }));
    assert_eq!(refused(server.port(), "/", &[]), 403);
    // A refused plain request is answered 403 as well, never 426.
    let line = http_exchange(server.port(), b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status_of(&line), Some(403), "{line:?}");
}

#[test]
fn ip_allowed_by_cidr_and_star() {
    let server = Server::start(json!({
        "server": {"websocket": {"auth": {"allowed_ip": "10.0.0.0/8, 127.0.0.0/8"}}}
    }));
    assert_serving(server.port());
    let server = Server::start(json!({
        "server": {"websocket": {"auth": {"allowed_ip": "*"}}}
    }));
    assert_serving(server.port());
}

#[test]
fn origin_checks() {
    let server = Server::start(json!({
        "server": {"websocket": {"auth": {
            "allowed_origins": ["https://good.example", "http://localhost:3000"]
        }}}
    }));
    let port = server.port();
    assert_eq!(
        refused(port, "/", &[("Origin", "https://evil.example")]),
        403
    );
    // Even with a valid token, a bad origin is refused.
    let token = mint_valid("x", &[], &[], 600);
    let bearer = format!("Bearer {token}");
    assert_eq!(
        refused(
            port,
            "/",
            &[
                ("Origin", "https://evil.example"),
                ("Authorization", &bearer)
            ]
        ),
        403
    );
    for origin in ["https://good.example", "http://localhost:3000"] {
        let mut ws = connect(port, "/", &[("Origin", origin)]).expect(origin);
        assert_eq!(recv_json(&mut ws)["event"], "connected");
    }
    // No Origin header (non-browser client): allowed.
    assert_serving(port);
}

#[test]
fn empty_allowed_origins_allows_any() {
    let server = Server::start(json!({}));
    let mut ws = connect(
        server.port(),
        "/",
        &[("Origin", "https://anything.example")],
    )
    .unwrap();
    assert_eq!(recv_json(&mut ws)["event"], "connected");
}

#[test]
fn too_many_connections_per_ip_is_429() {
    let server = Server::start(json!({"limits": {"max_connections_per_ip": 2}}));
    let port = server.port();
    let (mut first, _) = open(port);
    let (_second, _) = open(port);
    assert_eq!(refused(port, "/", &[]), 429);
    // Freeing a slot lets a new client in.
    assert_eq!(close_normally(&mut first), Some(1000));
    drop(first);
    let mut ws = connect_eventually(port, Duration::from_secs(2));
    assert_eq!(recv_json(&mut ws)["event"], "connected");
}

#[test]
fn too_many_connects_per_hour_is_429_and_refusals_count() {
    let server = Server::start(json!({"limits": {"max_connects_per_ip_per_hour": 3}}));
    let port = server.port();
    // Two refused upgrades (bad token) count against the budget...
    assert_eq!(refused(port, "/", &[("Authorization", "Bearer nope")]), 401);
    assert_eq!(refused(port, "/?token=nope", &[]), 401);
    // ...the third is accepted...
    let (mut ws, _) = open(port);
    assert_pong(&mut ws);
    drop(ws);
    // ...and the fourth is over the hourly budget, whatever it carries.
    assert_eq!(refused(port, "/", &[]), 429);
    let token = mint_valid("x", &["admin"], &[], 600);
    let bearer = format!("Bearer {token}");
    assert_eq!(refused(port, "/", &[("Authorization", &bearer)]), 429);
}

#[test]
fn max_connections_reached_is_503() {
    let server = Server::start(json!({"limits": {"max_connections": 2}}));
    let port = server.port();
    let (mut first, _) = open(port);
    let (_second, _) = open(port);
    assert_eq!(refused(port, "/", &[]), 503);
    assert_eq!(close_normally(&mut first), Some(1000));
    drop(first);
    let mut ws = connect_eventually(port, Duration::from_secs(2));
    assert_eq!(recv_json(&mut ws)["event"], "connected");
}

#[test]
fn plain_http_request_is_426() {
    let server = Server::start(json!({}));
    for request in [
        "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "GET /anything?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "POST /api HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
    ] {
        let line = http_exchange(server.port(), request.as_bytes());
        assert_eq!(status_of(&line), Some(426), "{request:?} -> {line:?}");
    }
    // The health paths are not served on the WebSocket port by default.
    let line = http_exchange(
        server.port(),
        b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(status_of(&line), Some(426), "{line:?}");
    assert_serving(server.port());
}

#[test]
fn auth_timeout_sends_error_then_4002() {
    let server =
        Server::start(json!({"server": {"websocket": {"auth": {"auth_timeout_ms": 300}}}}));
    let started = Instant::now();
    let (mut ws, _) = open(server.port());
    let error = recv_json(&mut ws);
    assert_error(&error, "auth_timeout");
    assert_eq!(expect_close(&mut ws), 4002);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_millis(2000),
        "auth timeout fired after {elapsed:?}"
    );
}

#[test]
fn ping_does_not_count_as_auth() {
    let server =
        Server::start(json!({"server": {"websocket": {"auth": {"auth_timeout_ms": 400}}}}));
    let (mut ws, _) = open(server.port());
    assert_pong(&mut ws);
    std::thread::sleep(Duration::from_millis(150));
    assert_pong(&mut ws);
    assert_error(&recv_json(&mut ws), "auth_timeout");
    assert_eq!(expect_close(&mut ws), 4002);
}

#[test]
fn authenticated_clients_have_no_auth_timeout() {
    let server =
        Server::start(json!({"server": {"websocket": {"auth": {"auth_timeout_ms": 300}}}}));
    let token = mint_valid("dora", &[], &[], 600);
    let (mut by_header, _) = open_authed(server.port(), &token);
    let (mut by_message, _) = open(server.port());
    let reply = request(
        &mut by_message,
        &json!({"event": "auth", "data": {"token": token}}),
    );
    assert_eq!(reply["event"], "authenticated", "{reply}");
    std::thread::sleep(Duration::from_millis(700));
    assert_pong(&mut by_header);
    assert_pong(&mut by_message);
}

#[test]
fn tokens_and_passwords_never_reach_the_logs() {
    let password = "Corr3ct-Horse-Battery";
    let server = Server::start(json!({
        "server": {"websocket": {"auth": {"password": password}}},
        "log": {"level": "trace"}
    }));
    let port = server.port();
    let good = server.token("logger", &["admin"], &[], None, "1h");
    let bad = mint(
        b"wrong-secret-wrong-secret-wrong-secret!!",
        Some("mallory"),
        Some(unix_now() + 600),
        json!({}),
    );

    // A valid token in the query, a bad one in the query, header and subprotocol.
    let mut ws = connect(port, &format!("/path?token={good}"), &[]).unwrap();
    assert_eq!(recv_json(&mut ws)["data"]["authenticated"], true);
    assert_eq!(refused(port, &format!("/?token={bad}"), &[]), 401);
    let bearer = format!("Bearer {bad}");
    assert_eq!(refused(port, "/", &[("Authorization", &bearer)]), 401);
    let protocols = format!("tether.v1, tether.bearer.{bad}");
    assert_eq!(
        refused(port, "/", &[("Sec-WebSocket-Protocol", &protocols)]),
        401
    );

    // A wrong password, a right one, and tokens sent in `auth` messages.
    let wrong_password = "Wr0ng-Password-Guess";
    let (mut ws, _) = open(port);
    send_json(
        &mut ws,
        &json!({"event": "auth", "data": {"password": wrong_password}}),
    );
    assert_error(&recv_json(&mut ws), "auth_failed");
    assert_eq!(expect_close(&mut ws), 4001);
    let (mut ws, _) = open(port);
    let reply = request(
        &mut ws,
        &json!({"event": "auth", "data": {"password": password}}),
    );
    assert_eq!(reply["event"], "authenticated");
    let reply = request(&mut ws, &json!({"event": "auth", "data": {"token": good}}));
    assert_eq!(reply["event"], "authenticated");
    let (mut ws, _) = open(port);
    send_json(&mut ws, &json!({"event": "auth", "data": {"token": bad}}));
    assert_error(&recv_json(&mut ws), "auth_failed");
    assert_eq!(expect_close(&mut ws), 4001);

    // Give the server a moment to log everything about these connections.
    assert!(server.wait_log("auth failed", Duration::from_secs(2)));
    std::thread::sleep(Duration::from_millis(100));
    for secret in [good.as_str(), bad.as_str(), password, wrong_password] {
        server.assert_not_logged(secret);
    }
    // Not even the signature part of a token.
    for token in [&good, &bad] {
        server.assert_not_logged(token.rsplit('.').next().unwrap());
    }
}

#[test]
fn recently_expired_handshake_token_is_401() {
    let server = Server::start(json!({}));
    let token = mint(
        SECRET.as_bytes(),
        Some("late"),
        Some(unix_now() - 5),
        json!({}),
    );
    assert_eq!(
        refused(server.port(), &format!("/?token={token}"), &[]),
        401
    );
}

#[test]
fn localhost_binds_both_loopbacks_on_one_port() {
    let server = Server::start(json!({"server": {"websocket": {"host": "localhost"}}}));
    let port = server.port();
    assert_serving(port);
    let v6 = format!("listening on ws://[::1]:{port}");
    if !server.wait_log(&v6, Duration::from_millis(200)) {
        // No IPv6 loopback on this machine: the IPv4 one is enough.
        return;
    }
    let stream = std::net::TcpStream::connect(("::1", port)).expect("connect to [::1]");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let (mut ws, _) = tungstenite::client::client(format!("ws://[::1]:{port}/"), stream)
        .expect("upgrade over ::1");
    let connected = recv_json(&mut ws);
    assert_eq!(connected["event"], "connected");
    assert_pong(&mut ws);
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let server = Server::start(json!({
        "server": {"websocket": {"auth": {"jwt_issuer": "tether-e2e", "jwt_audience": "dashboards"}}}
    }));
    let port = server.port();
    // `tether token` adds both claims.
    let cli = server.token("issued", &[], &[], None, "1h");
    let claims = jwt_claims(&cli);
    assert_eq!(claims["iss"], "tether-e2e", "{claims}");
    assert!(
        claims["aud"] == "dashboards" || claims["aud"] == json!(["dashboards"]),
        "{claims}"
    );
    let (_ws, authenticated) = open_authed(port, &cli);
    assert_eq!(authenticated["data"]["sub"], "issued");

    let exp = Some(unix_now() + 600);
    let good = mint(
        SECRET.as_bytes(),
        Some("x"),
        exp,
        json!({"iss": "tether-e2e", "aud": "dashboards"}),
    );
    let (_ws2, _) = open_authed(port, &good);
    for custom in [
        json!({}),
        json!({"iss": "tether-e2e"}),
        json!({"aud": "dashboards"}),
        json!({"iss": "someone-else", "aud": "dashboards"}),
        json!({"iss": "tether-e2e", "aud": "phones"}),
    ] {
        let token = mint(SECRET.as_bytes(), Some("x"), exp, custom.clone());
        assert_eq!(
            refused(port, &format!("/?token={token}"), &[]),
            401,
            "{custom}"
        );
    }
}

#[test]
fn closed_and_failed_connections_free_their_per_ip_slot() {
    let server = Server::start(json!({
        "limits": {"max_connections_per_ip": 2},
        "server": {"websocket": {"auth": {"auth_timeout_ms": 300}}}
    }));
    let port = server.port();
    for _ in 0..3 {
        // auth_failed -> 4001
        let (mut a, _) = open(port);
        send_json(&mut a, &json!({"event": "auth", "data": {"token": "bad"}}));
        assert_error(&recv_json(&mut a), "auth_failed");
        assert_eq!(expect_close(&mut a), 4001);
        // auth_timeout -> 4002
        let (mut b, _) = open(port);
        assert_error(&recv_json(&mut b), "auth_timeout");
        assert_eq!(expect_close(&mut b), 4002);
        drop((a, b));
    }
    let mut first = connect_eventually(port, Duration::from_secs(2));
    assert_eq!(recv_json(&mut first)["event"], "connected");
    let mut second = connect_eventually(port, Duration::from_secs(2));
    assert_eq!(recv_json(&mut second)["event"], "connected");
    assert_pong(&mut first);
    assert_pong(&mut second);
}

#[test]
fn a_freed_slot_below_max_connections_admits_a_client() {
    let server =
        Server::start(json!({"limits": {"max_connections": 10, "max_connections_per_ip": 20}}));
    let port = server.port();
    let mut clients: Vec<Ws> = (0..10).map(|_| open(port).0).collect();
    assert_eq!(refused(port, "/", &[]), 503);
    let mut leaving = clients.pop().unwrap();
    assert_eq!(close_normally(&mut leaving), Some(1000));
    drop(leaving);
    // 9 of 10 in use: max_connections is not reached any more.
    let mut ws = connect_eventually(port, Duration::from_secs(2));
    assert_eq!(recv_json(&mut ws)["event"], "connected");
}
