//! SPEC §4-5: the message envelope, every error code reachable without a host,
//! and the built-in client events.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tungstenite::Message;

fn code(message: &Value) -> &str {
    message["data"]["code"].as_str().unwrap_or("")
}

#[test]
fn malformed_messages_get_errors_and_the_connection_stays() {
    let server = Server::start(json!({}));
    let (mut ws, _) = open(server.port());
    for (text, expected) in [
        ("{oops", "invalid_json"),
        ("", "invalid_json"),
        ("not json at all", "invalid_json"),
        ("[1,2,3]", "invalid_format"),
        ("42", "invalid_format"),
        ("\"ping\"", "invalid_format"),
        ("null", "invalid_format"),
        (r#"{"event":5}"#, "invalid_format"),
        (r#"{"event":["ping"]}"#, "invalid_format"),
        (r#"{"event":null}"#, "invalid_format"),
        (r#"{"data":1}"#, "missing_event"),
        ("{}", "missing_event"),
    ] {
        send_text(&mut ws, text);
        let reply = recv_json(&mut ws);
        assert_error(&reply, expected);
        assert_eq!(code(&reply), expected, "{text:?} -> {reply}");
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    assert_error(&recv_json(&mut ws), "invalid_format");
    assert_pong(&mut ws);
}

#[test]
fn request_id_is_echoed_as_string_or_number() {
    let server = Server::start(json!({}));
    let (mut ws, _) = open(server.port());
    for id in [json!("abc-1"), json!(42), json!(0), json!(-7), json!(1.5)] {
        let pong = request(&mut ws, &json!({"event": "ping", "requestId": id}));
        assert_eq!(pong["event"], "pong");
        assert_eq!(pong["requestId"], id, "{pong}");
        // Errors answer with the requestId too.
        let error = request(&mut ws, &json!({"event": "whoami", "requestId": id}));
        assert_error(&error, "not_authenticated");
        assert_eq!(error["requestId"], id, "{error}");
        let error = request(&mut ws, &json!({"data": {}, "requestId": id}));
        assert_error(&error, "missing_event");
        assert_eq!(error["requestId"], id, "{error}");
    }
    // Without a requestId, none is sent back.
    let pong = request(
        &mut ws,
        &json!({"event": "ping", "data": {"anything": true}}),
    );
    assert!(pong.get("requestId").is_none(), "{pong}");
    // A requestId that is neither a string nor a number is a format error.
    let error = request(&mut ws, &json!({"event": "ping", "requestId": {"x": 1}}));
    assert_error(&error, "invalid_format");
}

#[test]
fn only_auth_and_ping_before_authentication() {
    let server = Server::start(json!({}));
    let (mut ws, _) = open(server.port());
    for event in [
        "whoami",
        "subscribe",
        "unsubscribe",
        "publish",
        "no.such.event",
    ] {
        let reply = request(
            &mut ws,
            &json!({"event": event, "data": {"room": "lobby"}, "requestId": event}),
        );
        assert_error(&reply, "not_authenticated");
        assert_eq!(reply["requestId"], event);
    }
    assert_pong(&mut ws);
    let token = mint_valid("late", &[], &[], 600);
    let reply = request(
        &mut ws,
        &json!({"event": "auth", "data": {"token": token}, "requestId": 1}),
    );
    assert_eq!(reply["event"], "authenticated", "{reply}");
    assert_eq!(reply["requestId"], 1);
}

#[test]
fn auth_with_bad_data_is_invalid_data() {
    let server = Server::start(json!({}));
    let (mut ws, _) = open(server.port());
    for data in [
        Value::Null,
        json!({}),
        json!({"nothing": 1}),
        json!("token"),
        json!({"token": 5}),
    ] {
        let mut message = json!({"event": "auth"});
        if !data.is_null() {
            message["data"] = data.clone();
        }
        let reply = request(&mut ws, &message);
        assert_error(&reply, "invalid_data");
    }
    assert_pong(&mut ws);
}

#[test]
fn bad_tokens_in_auth_fail_with_4001() {
    let server = Server::start(json!({}));
    let now = unix_now();
    let tokens = [
        "garbage".to_string(),
        mint(SECRET.as_bytes(), Some("x"), Some(now - 3600), json!({})),
        mint(
            b"wrong-key-wrong-key-wrong-key-wrong-key",
            Some("x"),
            Some(now + 600),
            json!({}),
        ),
        alg_none_token(&json!({"sub": "x", "exp": now + 600})),
        mint(SECRET.as_bytes(), Some("x"), None, json!({})),
        // An empty `sub` names nobody, like a missing one.
        mint(SECRET.as_bytes(), Some(""), Some(now + 600), json!({})),
    ];
    for token in tokens {
        let (mut ws, _) = open(server.port());
        send_json(
            &mut ws,
            &json!({"event": "auth", "data": {"token": token}, "requestId": "a"}),
        );
        let reply = recv_json(&mut ws);
        assert_error(&reply, "auth_failed");
        assert_eq!(reply["requestId"], "a");
        assert_eq!(expect_close(&mut ws), 4001, "token {token}");
    }
    assert_serving(server.port());
}

#[test]
fn password_login() {
    let server = Server::start(json!({
        "server": {"websocket": {"auth": {
            "password": "MineAcademy",
            "password_permissions": ["publish", "room:ops"]
        }}}
    }));
    let (mut ws, connected) = open(server.port());
    let reply = request(
        &mut ws,
        &json!({"event": "auth", "data": {"password": "MineAcademy"}, "requestId": 3}),
    );
    assert_eq!(reply["event"], "authenticated", "{reply}");
    assert_eq!(reply["requestId"], 3);
    let data = &reply["data"];
    assert_eq!(data["sub"], "password");
    assert_eq!(data["clientId"], connected["data"]["clientId"]);
    assert_eq!(data["permissions"], json!(["publish", "room:ops"]));
    assert_eq!(data["rooms"], json!([]));
    assert_eq!(data["expiresAt"], Value::Null);
    let reply = request(
        &mut ws,
        &json!({"event": "subscribe", "data": {"room": "ops"}}),
    );
    assert_eq!(reply["event"], "subscribed", "{reply}");

    for wrong in ["mineacademy", "MineAcademy ", "MineAcadem", ""] {
        let (mut ws, _) = open(server.port());
        send_json(
            &mut ws,
            &json!({"event": "auth", "data": {"password": wrong}}),
        );
        assert_error(&recv_json(&mut ws), "auth_failed");
        assert_eq!(expect_close(&mut ws), 4001);
    }
}

#[test]
fn password_login_disabled_by_default() {
    let server = Server::start(json!({}));
    let (mut ws, _) = open(server.port());
    send_json(
        &mut ws,
        &json!({"event": "auth", "data": {"password": "whatever-password"}}),
    );
    assert_error(&recv_json(&mut ws), "auth_failed");
    assert_eq!(expect_close(&mut ws), 4001);
}

#[test]
fn default_password_permissions_are_admin() {
    let server =
        Server::start(json!({"server": {"websocket": {"auth": {"password": "longenough"}}}}));
    let (mut ws, _) = open(server.port());
    let reply = request(
        &mut ws,
        &json!({"event": "auth", "data": {"password": "longenough"}}),
    );
    assert_eq!(reply["data"]["permissions"], json!(["admin"]), "{reply}");
}

/// Sleeps until the unix clock is past `exp` by `margin_ms`.
fn sleep_past(exp: u64, margin_ms: u64) {
    let target = Duration::from_secs(exp) + Duration::from_millis(margin_ms);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    if let Some(left) = target.checked_sub(now) {
        std::thread::sleep(left);
    }
}

#[test]
fn token_expiry_sends_error_then_4003() {
    let server = Server::start(json!({}));
    let token = server.token("shortlived", &[], &[], None, "2s");
    let exp = jwt_claims(&token)["exp"].as_u64().unwrap();
    let (mut ws, authenticated) = open_authed(server.port(), &token);
    assert_eq!(authenticated["data"]["expiresAt"], exp);
    let started = Instant::now();
    let error = recv_json(&mut ws);
    assert_error(&error, "token_expired");
    assert_eq!(expect_close(&mut ws), 4003);
    let now = unix_now();
    assert!(now >= exp, "closed at {now}, before exp {exp}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn reauth_with_a_fresh_token_extends_the_session() {
    let server = Server::start(json!({}));
    let short = server.token("renewer", &[], &["lobby"], None, "2s");
    let exp = jwt_claims(&short)["exp"].as_u64().unwrap();
    let (mut ws, _) = open_authed(server.port(), &short);
    let fresh = server.token("renewer", &["publish"], &["lobby"], None, "1h");
    let reply = request(
        &mut ws,
        &json!({"event": "auth", "data": {"token": fresh}, "requestId": "renew"}),
    );
    assert_eq!(reply["event"], "authenticated", "{reply}");
    assert_eq!(reply["requestId"], "renew");
    let fresh_exp = jwt_claims(&fresh)["exp"].as_u64().unwrap();
    assert_eq!(reply["data"]["expiresAt"], fresh_exp);
    assert_eq!(reply["data"]["permissions"], json!(["publish"]));
    sleep_past(exp, 400);
    // Still open: no token_expired, ping answered, whoami shows the new expiry.
    assert_pong(&mut ws);
    let whoami = request(&mut ws, &json!({"event": "whoami"}));
    assert_eq!(whoami["data"]["expiresAt"], fresh_exp, "{whoami}");
    assert_eq!(whoami["data"]["rooms"], json!(["lobby"]), "{whoami}");
}

#[test]
fn whoami_matches_authenticated() {
    let server = Server::start(json!({}));
    let token = server.token("wendy", &["publish", "room:x"], &["a", "b"], None, "1h");
    let (mut ws, authenticated) = open_authed(server.port(), &token);
    let whoami = request(&mut ws, &json!({"event": "whoami", "requestId": "w"}));
    assert_eq!(whoami["event"], "whoami");
    assert_eq!(whoami["requestId"], "w");
    assert_eq!(whoami["data"], authenticated["data"]);
    let data = &whoami["data"];
    for field in ["clientId", "sub", "permissions", "rooms", "expiresAt"] {
        assert!(data.get(field).is_some(), "{field} missing in {whoami}");
    }
    assert_eq!(data["sub"], "wendy");
    assert_eq!(data["permissions"], json!(["publish", "room:x"]));
    assert_eq!(data["rooms"], json!(["a", "b"]));
}

#[test]
fn unknown_event_after_authentication() {
    let server = Server::start(json!({}));
    let (mut ws, _) = open_authed(server.port(), &mint_valid("u", &["admin"], &[], 600));
    for event in ["fly", "host.nothing", "", "AUTH"] {
        let reply = request(&mut ws, &json!({"event": event, "requestId": 9}));
        assert_error(&reply, "unknown_event");
        assert_eq!(reply["requestId"], 9);
    }
    assert_pong(&mut ws);
}

#[test]
fn subscribe_unsubscribe_publish() {
    let server = Server::start(json!({}));
    let port = server.port();
    let (mut alice, _) = open_authed(
        port,
        &mint_valid("alice", &["publish", "room:chat"], &["lobby"], 600),
    );
    let (mut bob, bob_auth) = open_authed(port, &mint_valid("bob", &[], &["lobby"], 600));
    let (mut carol, _) = open_authed(port, &mint_valid("carol", &["publish"], &[], 600));
    assert_eq!(bob_auth["data"]["rooms"], json!(["lobby"]));

    // A token's rooms are joined on authentication.
    let reply = request(
        &mut alice,
        &json!({"event": "publish", "data": {"room": "lobby", "event": "hi", "data": {"n": 1}}, "requestId": 9}),
    );
    assert_eq!(
        reply,
        json!({"event": "published", "data": {"room": "lobby", "delivered": 1}, "requestId": 9})
    );
    let got = recv_json(&mut bob);
    assert_eq!(
        got,
        json!({"event": "hi", "data": {"n": 1}, "room": "lobby", "from": "alice"})
    );

    // Publishing without `data` delivers null data.
    let reply = request(
        &mut alice,
        &json!({"event": "publish", "data": {"room": "lobby", "event": "bare"}}),
    );
    assert_eq!(reply["data"]["delivered"], 1);
    let got = recv_json(&mut bob);
    assert_eq!(got["event"], "bare");
    assert_eq!(got["room"], "lobby");
    assert_eq!(got["from"], "alice");
    assert!(got["data"].is_null(), "{got}");

    // Subscribing through a room: permission; others may not.
    let reply = request(
        &mut alice,
        &json!({"event": "subscribe", "data": {"room": "chat"}, "requestId": "s"}),
    );
    assert_eq!(
        reply,
        json!({"event": "subscribed", "data": {"room": "chat"}, "requestId": "s"})
    );
    let reply = request(
        &mut bob,
        &json!({"event": "subscribe", "data": {"room": "chat"}}),
    );
    assert_error(&reply, "room_not_allowed");
    let reply = request(
        &mut alice,
        &json!({"event": "publish", "data": {"room": "chat", "event": "e"}}),
    );
    assert_eq!(reply["data"]["delivered"], 0, "only the sender is in chat");

    // Unsubscribe, then nobody else is in lobby; subscribe again works (own room).
    let reply = request(
        &mut bob,
        &json!({"event": "unsubscribe", "data": {"room": "lobby"}, "requestId": 2}),
    );
    assert_eq!(
        reply,
        json!({"event": "unsubscribed", "data": {"room": "lobby"}, "requestId": 2})
    );
    let whoami = request(&mut bob, &json!({"event": "whoami"}));
    assert_eq!(whoami["data"]["rooms"], json!([]));
    let reply = request(
        &mut alice,
        &json!({"event": "publish", "data": {"room": "lobby", "event": "hi"}}),
    );
    assert_eq!(reply["data"]["delivered"], 0);
    let reply = request(
        &mut bob,
        &json!({"event": "subscribe", "data": {"room": "lobby"}}),
    );
    assert_eq!(reply["event"], "subscribed", "{reply}");
    let reply = request(
        &mut alice,
        &json!({"event": "publish", "data": {"room": "lobby", "event": "again", "data": [1]}}),
    );
    assert_eq!(reply["data"]["delivered"], 1);
    assert_eq!(recv_json(&mut bob)["event"], "again");

    // forbidden: publish without the permission; room_not_allowed: not a member.
    let reply = request(
        &mut bob,
        &json!({"event": "publish", "data": {"room": "lobby", "event": "x"}, "requestId": 5}),
    );
    assert_error(&reply, "forbidden");
    assert_eq!(reply["requestId"], 5);
    let reply = request(
        &mut carol,
        &json!({"event": "publish", "data": {"room": "lobby", "event": "x"}}),
    );
    assert_error(&reply, "room_not_allowed");
    let reply = request(
        &mut carol,
        &json!({"event": "subscribe", "data": {"room": "lobby"}}),
    );
    assert_error(&reply, "room_not_allowed");

    // Nothing stray arrived at carol, who is in no room.
    assert_pong(&mut carol);
    assert_pong(&mut bob);
}

#[test]
fn room_events_with_bad_data_are_invalid_data() {
    let server = Server::start(json!({}));
    let (mut ws, _) = open_authed(server.port(), &mint_valid("d", &["admin"], &["lobby"], 600));
    for (event, data) in [
        ("subscribe", Value::Null),
        ("subscribe", json!({})),
        ("subscribe", json!({"room": 5})),
        ("subscribe", json!({"room": ""})),
        ("subscribe", json!("lobby")),
        ("unsubscribe", Value::Null),
        ("unsubscribe", json!({"room": ["lobby"]})),
        ("publish", Value::Null),
        ("publish", json!({"room": "lobby"})),
        ("publish", json!({"event": "e"})),
        ("publish", json!({"room": "lobby", "event": 3})),
    ] {
        let mut message = json!({"event": event, "requestId": "bad"});
        if !data.is_null() {
            message["data"] = data.clone();
        }
        let reply = request(&mut ws, &message);
        assert_error(&reply, "invalid_data");
        assert_eq!(reply["requestId"], "bad", "{event} {data}");
    }
    assert_pong(&mut ws);
}

#[test]
fn roles_give_rooms_with_sub_substituted() {
    let server = Server::start(json!({
        "rooms": {"by_role": {
            "provider": ["provider_{sub}", "calendar"],
            "admin": ["admin", "calendar"]
        }}
    }));
    let port = server.port();
    let provider = server.token("p1", &[], &["own"], Some("provider"), "1h");
    let (mut p1, authenticated) = open_authed(port, &provider);
    let rooms: Vec<String> =
        serde_json::from_value(authenticated["data"]["rooms"].clone()).unwrap();
    for room in ["own", "provider_p1", "calendar"] {
        assert!(rooms.contains(&room.to_string()), "{room} not in {rooms:?}");
    }
    assert!(!rooms.iter().any(|r| r.contains("{sub}")));

    let boss = server.token("boss", &["publish"], &[], Some("admin"), "1h");
    let (mut boss_ws, authenticated) = open_authed(port, &boss);
    assert_eq!(authenticated["data"]["rooms"], json!(["admin", "calendar"]));
    // boss is in calendar through its role, so it may publish there.
    let reply = request(
        &mut boss_ws,
        &json!({"event": "publish", "data": {"room": "calendar", "event": "booked", "data": {"slot": 3}}}),
    );
    assert_eq!(reply["data"]["delivered"], 1, "{reply}");
    assert_eq!(
        recv_json(&mut p1),
        json!({"event": "booked", "data": {"slot": 3}, "room": "calendar", "from": "boss"})
    );
    // ...but not in provider_p1, which is p1's own.
    let reply = request(
        &mut boss_ws,
        &json!({"event": "publish", "data": {"room": "provider_p1", "event": "x"}}),
    );
    assert_error(&reply, "room_not_allowed");
    // A role without an entry gives no rooms.
    let plain = server.token("v", &[], &[], Some("viewer"), "1h");
    let (_ws, authenticated) = open_authed(port, &plain);
    assert_eq!(authenticated["data"]["rooms"], json!([]));
}

#[test]
fn room_prefix_permissions() {
    let server = Server::start(json!({}));
    let (mut ws, _) = open_authed(
        server.port(),
        &mint_valid("pat", &["room:project_*", "room:exact"], &[], 600),
    );
    for room in ["project_x", "project_", "project_a/b", "exact"] {
        let reply = request(
            &mut ws,
            &json!({"event": "subscribe", "data": {"room": room}}),
        );
        assert_eq!(reply["event"], "subscribed", "{room}: {reply}");
        assert_eq!(reply["data"]["room"], room);
    }
    for room in ["projectx", "project", "other", "exactly", "Project_x"] {
        let reply = request(
            &mut ws,
            &json!({"event": "subscribe", "data": {"room": room}}),
        );
        assert_error(&reply, "room_not_allowed");
    }
    let whoami = request(&mut ws, &json!({"event": "whoami"}));
    let mut rooms: Vec<String> = serde_json::from_value(whoami["data"]["rooms"].clone()).unwrap();
    rooms.sort();
    assert_eq!(rooms, ["exact", "project_", "project_a/b", "project_x"]);
}

#[test]
fn admin_implies_every_permission_and_room() {
    let server = Server::start(json!({}));
    let port = server.port();
    let (mut admin, _) = open_authed(port, &mint_valid("root", &["admin"], &[], 600));
    let (mut member, _) = open_authed(port, &mint_valid("m", &[], &["secret-room"], 600));
    let reply = request(
        &mut admin,
        &json!({"event": "subscribe", "data": {"room": "anything"}}),
    );
    assert_eq!(reply["event"], "subscribed", "{reply}");
    // admin publishes without the `publish` permission, to a room it is not in.
    let reply = request(
        &mut admin,
        &json!({"event": "publish", "data": {"room": "secret-room", "event": "note", "data": "x"}}),
    );
    assert_eq!(reply["event"], "published", "{reply}");
    assert_eq!(reply["data"]["delivered"], 1);
    assert_eq!(
        recv_json(&mut member),
        json!({"event": "note", "data": "x", "room": "secret-room", "from": "root"})
    );
}

#[test]
fn rate_limit_drops_then_flood_closes_4008() {
    let server = Server::start(json!({"limits": {"max_messages_per_minute": 5}}));
    let (mut ws, _) = open(server.port());
    let (mut other, _) = open(server.port());
    for i in 0..5 {
        let reply = request(&mut ws, &json!({"event": "ping", "requestId": i}));
        assert_eq!(reply["event"], "pong", "message {i}: {reply}");
    }
    for i in 5..10 {
        let reply = request(&mut ws, &json!({"event": "ping", "requestId": i}));
        assert_error(&reply, "rate_limited");
        assert_eq!(reply["requestId"], i);
    }
    // The 11th message in a minute is more than twice the limit.
    send_json(&mut ws, &json!({"event": "ping"}));
    assert_eq!(expect_close(&mut ws), 4008);
    // Another client from the same address is not affected.
    assert_pong(&mut other);
}

#[test]
fn bad_messages_count_against_the_rate_limit() {
    let server = Server::start(json!({"limits": {"max_messages_per_minute": 5}}));
    let (mut ws, _) = open(server.port());
    for _ in 0..5 {
        send_text(&mut ws, "{oops");
        assert_error(&recv_json(&mut ws), "invalid_json");
    }
    let reply = request(&mut ws, &json!({"event": "ping"}));
    assert_error(&reply, "rate_limited");
}

#[test]
fn recently_expired_token_in_auth_is_auth_failed() {
    let server = Server::start(json!({}));
    let token = mint(
        SECRET.as_bytes(),
        Some("late"),
        Some(unix_now() - 5),
        json!({}),
    );
    let (mut ws, _) = open(server.port());
    let reply = request(&mut ws, &json!({"event": "auth", "data": {"token": token}}));
    assert_error(&reply, "auth_failed");
    assert_eq!(expect_close(&mut ws), 4001);
}
