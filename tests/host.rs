//! The host link (SPEC §6) end to end: a host and clients talk to the real
//! binary over sockets, with tungstenite as an independent client library.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::Message;

/// Settings for tests with many connections from 127.0.0.1.
fn roomy() -> Value {
    json!({"limits": {"max_connections_per_ip": 200}})
}

/// The next message that is not a `host.client_joined` / `host.client_left` notice.
fn recv_skip_notices(ws: &mut Ws) -> Value {
    loop {
        let message = recv_json(ws);
        match message["event"].as_str() {
            Some("host.client_joined") | Some("host.client_left") => continue,
            _ => return message,
        }
    }
}

/// Asserts that nothing but Ping/Pong arrives within `wait`.
fn assert_silent(ws: &mut Ws, wait: Duration) {
    assert_quiet(ws, wait, false);
}

/// Asserts that nothing but Ping/Pong (and host notices, when `notices`)
/// arrives within `wait`.
fn assert_quiet(ws: &mut Ws, wait: Duration, notices: bool) {
    ws.get_mut().set_read_timeout(Some(wait)).unwrap();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            Ok(Message::Text(text)) if notices && text.as_str().contains("\"host.client_") => {
                continue
            }
            Ok(other) => panic!("expected silence, got {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
    ws.get_mut().set_read_timeout(Some(READ_TIMEOUT)).unwrap();
}

/// Sends a host's message and returns the next answer, skipping notices.
fn host_request(host: &mut Ws, message: &Value) -> Value {
    send_json(host, message);
    recv_skip_notices(host)
}

/// The `host.request` for the next client request.
fn next_request(host: &mut Ws) -> Value {
    let message = recv_skip_notices(host);
    assert_eq!(message["event"], "host.request", "{message}");
    message["data"].clone()
}

fn reply(host: &mut Ws, id: &Value, event: &str, data: Value, rid: Value) -> Value {
    host_request(
        host,
        &json!({"event": "host.reply", "data": {"id": id, "event": event, "data": data}, "requestId": rid}),
    )
}

#[test]
fn register_answers_every_served_event_and_refuses_conflicts() {
    let server = Server::start(json!({}));
    let port = server.port();
    let mut game = host(port, "game", json!({"getPlayers": "players.view"}));
    // Registering more adds to what it serves.
    let more = host_request(
        &mut game,
        &json!({"event": "host.register", "data": {"events": {"announce": "announce", "getStats": null}}, "requestId": 2}),
    );
    assert_eq!(
        more,
        json!({"event": "host.registered", "data": {"events": ["announce", "getPlayers", "getStats"]}, "requestId": 2})
    );

    let (mut other, _) = client(port, "other", &["admin"], &[]);
    for events in [
        json!({"getPlayers": null}),
        json!({"ping": null}),
        json!({"auth": null}),
        json!({"publish": null}),
        json!({"host.reply": null}),
        json!({"": null}),
    ] {
        let answer = host_request(
            &mut other,
            &json!({"event": "host.register", "data": {"events": events}, "requestId": "x"}),
        );
        assert_error(&answer, "invalid_data");
        assert_eq!(answer["requestId"], "x");
    }
    for bad in [json!(null), json!({"events": [1]}), json!({"nope": {}})] {
        let answer = host_request(&mut other, &json!({"event": "host.register", "data": bad}));
        assert_error(&answer, "invalid_data");
    }
    // An empty map is fine.
    let empty = host_request(
        &mut other,
        &json!({"event": "host.register", "data": {"events": {}}}),
    );
    assert_eq!(empty["event"], "host.registered", "{empty}");
    assert_eq!(empty["data"]["events"], json!([]));

    // Without `host` (or `admin`) every host event is forbidden.
    let (mut plain, _) = client(port, "plain", &["publish"], &[]);
    for event in [
        "host.register",
        "host.reply",
        "host.broadcast",
        "host.send",
        "host.clients",
        "host.kick",
        "host.token",
    ] {
        let answer = request(
            &mut plain,
            &json!({"event": event, "data": {"events": {}}, "requestId": event}),
        );
        assert_error(&answer, "forbidden");
        assert_eq!(answer["requestId"], event);
    }

    // When the host goes, its events are free again.
    drop(game);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = host_request(
            &mut other,
            &json!({"event": "host.register", "data": {"events": {"getPlayers": null}}}),
        );
        if answer["event"] == "host.registered" {
            assert_eq!(answer["data"]["events"], json!(["getPlayers"]));
            break;
        }
        assert_error(&answer, "invalid_data");
        assert!(Instant::now() < deadline, "getPlayers still taken");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn requests_are_forwarded_and_answered_with_the_clients_request_id() {
    let server = Server::start(json!({}));
    let port = server.port();
    let mut game = host(
        port,
        "game",
        json!({"getPlayers": "players.view", "announce": null}),
    );
    let (mut alice, alice_id) = client(port, "alice", &["players.view", "x"], &[]);

    send_json(
        &mut alice,
        &json!({"event": "getPlayers", "data": {"page": 2}, "requestId": "r1"}),
    );
    let forwarded = next_request(&mut game);
    let id = forwarded["id"].clone();
    assert!(id.is_u64(), "{forwarded}");
    assert_eq!(
        forwarded,
        json!({"id": id, "client": alice_id, "sub": "alice", "permissions": ["players.view", "x"], "event": "getPlayers", "data": {"page": 2}})
    );
    let players = json!({"players": [{"source": 1, "name": "Ann"}]});
    let ack = reply(&mut game, &id, "players", players.clone(), json!("a1"));
    assert_eq!(
        ack,
        json!({"event": "ok", "data": {"delivered": 1}, "requestId": "a1"})
    );
    assert_eq!(
        recv_json(&mut alice),
        json!({"event": "players", "data": players, "requestId": "r1"})
    );

    // A numeric requestId comes back as a number; no data is null data.
    send_json(&mut alice, &json!({"event": "announce", "requestId": 42}));
    let forwarded = next_request(&mut game);
    assert_eq!(forwarded["data"], Value::Null);
    send_json(
        &mut game,
        &json!({"event": "host.reply", "data": {"id": forwarded["id"], "event": "success"}}),
    );
    assert_eq!(
        recv_json(&mut alice),
        json!({"event": "success", "data": null, "requestId": 42})
    );

    // Without a requestId the answer has none.
    send_json(&mut alice, &json!({"event": "announce", "data": "hi"}));
    let forwarded = next_request(&mut game);
    send_json(
        &mut game,
        &json!({"event": "host.reply", "data": {"id": forwarded["id"], "event": "success", "data": 1}}),
    );
    assert_eq!(
        recv_json(&mut alice),
        json!({"event": "success", "data": 1})
    );

    // An error reply reaches the client as an error with the host's code.
    send_json(
        &mut alice,
        &json!({"event": "getPlayers", "requestId": "r2"}),
    );
    let forwarded = next_request(&mut game);
    let ack = host_request(
        &mut game,
        &json!({"event": "host.reply", "data": {"id": forwarded["id"], "error": {"code": "no_players", "message": "nobody is online"}}, "requestId": "a2"}),
    );
    assert_eq!(ack["data"]["delivered"], 1, "{ack}");
    let error = recv_json(&mut alice);
    assert_error(&error, "no_players");
    assert_eq!(error["data"]["message"], "nobody is online");
    assert_eq!(error["requestId"], "r2");

    // Permission checks happen in the gateway: the host never sees the request.
    let (mut bob, _) = client(port, "bob", &[], &[]);
    let refused = request(&mut bob, &json!({"event": "getPlayers", "requestId": 7}));
    assert_error(&refused, "forbidden");
    assert_eq!(refused["requestId"], 7);
    let (mut root, _) = client(port, "root", &["admin"], &[]);
    send_json(&mut root, &json!({"event": "getPlayers", "requestId": 8}));
    let forwarded = next_request(&mut game);
    assert_eq!(forwarded["sub"], "root", "admin implies players.view");
    let unknown = request(&mut bob, &json!({"event": "getJobs", "requestId": 9}));
    assert_error(&unknown, "unknown_event");

    // A bad reply is invalid_data; a reply for an id nobody asked is dropped.
    let bad = host_request(
        &mut game,
        &json!({"event": "host.reply", "data": {"id": "x"}, "requestId": "b"}),
    );
    assert_error(&bad, "invalid_data");
    let stray = reply(&mut game, &json!(999_999), "players", json!(1), json!("s"));
    assert_eq!(stray["data"]["delivered"], 0, "{stray}");
    assert_pong(&mut bob);
}

#[test]
fn unanswered_requests_time_out_and_late_replies_are_dropped() {
    let server = Server::start(json!({"host": {"request_timeout_ms": 400}}));
    let port = server.port();
    let mut game = host(port, "game", json!({"getStats": null}));
    let (mut alice, _) = client(port, "alice", &[], &[]);

    let sent = Instant::now();
    send_json(
        &mut alice,
        &json!({"event": "getStats", "requestId": "slow"}),
    );
    let forwarded = next_request(&mut game);
    let timeout = recv_json(&mut alice);
    let waited = sent.elapsed();
    assert_error(&timeout, "host_timeout");
    assert_eq!(timeout["requestId"], "slow");
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(1500),
        "host_timeout after {waited:?}, expected about 400 ms"
    );

    // The late answer goes nowhere.
    let late = reply(
        &mut game,
        &forwarded["id"],
        "stats",
        json!({}),
        json!("late"),
    );
    assert_eq!(
        late,
        json!({"event": "ok", "data": {"delivered": 0}, "requestId": "late"})
    );
    assert_pong(&mut alice);

    // An answer in time still works, and a second answer to it is dropped.
    send_json(
        &mut alice,
        &json!({"event": "getStats", "requestId": "fast"}),
    );
    let forwarded = next_request(&mut game);
    let ack = reply(
        &mut game,
        &forwarded["id"],
        "stats",
        json!({"n": 1}),
        json!(1),
    );
    assert_eq!(ack["data"]["delivered"], 1);
    assert_eq!(recv_json(&mut alice)["requestId"], "fast");
    let again = reply(
        &mut game,
        &forwarded["id"],
        "stats",
        json!({"n": 2}),
        json!(2),
    );
    assert_eq!(again["data"]["delivered"], 0);
    // No host_timeout follows an answered request.
    assert_silent(&mut alice, Duration::from_millis(700));

    // A client that left: its request's answer is dropped too.
    send_json(
        &mut alice,
        &json!({"event": "getStats", "requestId": "gone"}),
    );
    let forwarded = next_request(&mut game);
    assert_eq!(close_normally(&mut alice), Some(1000));
    let left = recv_json(&mut game);
    assert_eq!(left["event"], "host.client_left", "{left}");
    let ack = reply(&mut game, &forwarded["id"], "stats", json!({}), json!(3));
    assert_eq!(ack["data"]["delivered"], 0);
}

#[test]
fn a_host_that_disconnects_fails_every_pending_request() {
    for how in ["tcp drop", "close frame"] {
        let server = Server::start(json!({}));
        let port = server.port();
        let mut bot = host(port, "bot", json!({"play": null, "list": null}));
        let (mut a, _) = client(port, "a", &[], &[]);
        let (mut b, _) = client(port, "b", &[], &[]);
        for n in 0..3 {
            send_json(
                &mut a,
                &json!({"event": "play", "requestId": format!("a{n}")}),
            );
        }
        send_json(&mut b, &json!({"event": "list", "requestId": 1}));
        send_json(&mut b, &json!({"event": "play", "requestId": 2}));
        for _ in 0..5 {
            next_request(&mut bot);
        }
        match how {
            "tcp drop" => drop(bot),
            _ => assert_eq!(close_normally(&mut bot), Some(1000)),
        }
        for n in 0..3 {
            let error = recv_json(&mut a);
            assert_error(&error, "host_unavailable");
            assert_eq!(error["requestId"], format!("a{n}"), "{how}");
        }
        let mut ids: Vec<Value> = (0..2)
            .map(|_| {
                let error = recv_json(&mut b);
                assert_error(&error, "host_unavailable");
                error["requestId"].clone()
            })
            .collect();
        ids.sort_by_key(|v| v.as_u64());
        assert_eq!(ids, [json!(1), json!(2)], "{how}");
        // Its events are gone with it.
        let answer = request(&mut a, &json!({"event": "play", "requestId": "after"}));
        assert_error(&answer, "unknown_event");
    }
}

#[test]
fn broadcast_to_all_or_a_room_reaches_authenticated_non_hosts_only() {
    let server = Server::start(roomy());
    let port = server.port();
    let mut game = host(port, "game", json!({}));
    let mut other_host = host(port, "other", json!({}));
    let (mut red, _) = client(port, "red", &[], &["red"]);
    let (mut blue, _) = client(port, "blue", &[], &["blue"]);
    let (mut anonymous, _) = open(port);
    // A second host in the room still gets no broadcast.
    let admin_token = mint_valid("roomhost", &["admin"], &["red"], 3600);
    let (mut room_host, _) = open_authed(port, &admin_token);
    let reg = host_request(
        &mut room_host,
        &json!({"event": "host.register", "data": {"events": {}}}),
    );
    assert_eq!(reg["event"], "host.registered");

    let ack = host_request(
        &mut game,
        &json!({"event": "host.broadcast", "data": {"event": "playerJoined", "data": {"source": 5, "name": "Ann"}}, "requestId": "b1"}),
    );
    assert_eq!(
        ack,
        json!({"event": "ok", "data": {"delivered": 2}, "requestId": "b1"})
    );
    let expected = json!({"event": "playerJoined", "data": {"source": 5, "name": "Ann"}});
    assert_eq!(recv_json(&mut red), expected);
    assert_eq!(recv_json(&mut blue), expected);

    let ack = host_request(
        &mut game,
        &json!({"event": "host.broadcast", "data": {"event": "alarm", "data": [1], "room": "red"}, "requestId": "b2"}),
    );
    assert_eq!(ack["data"]["delivered"], 1, "{ack}");
    assert_eq!(
        recv_json(&mut red),
        json!({"event": "alarm", "data": [1], "room": "red"})
    );
    let ack = host_request(
        &mut game,
        &json!({"event": "host.broadcast", "data": {"event": "alarm", "room": "nobody"}, "requestId": "b3"}),
    );
    assert_eq!(ack["data"]["delivered"], 0);
    let bad = host_request(
        &mut game,
        &json!({"event": "host.broadcast", "data": {"data": 1}, "requestId": "b4"}),
    );
    assert_error(&bad, "invalid_data");
    assert_eq!(bad["requestId"], "b4");

    // Nothing reached the anonymous client or the other hosts, and blue got only the first.
    for ws in [&mut anonymous, &mut blue] {
        assert_silent(ws, Duration::from_millis(200));
    }
    for ws in [&mut other_host, &mut room_host] {
        assert_quiet(ws, Duration::from_millis(200), true);
    }
}

#[test]
fn acks_only_for_host_messages_with_a_request_id() {
    let server = Server::start(json!({}));
    let port = server.port();
    let mut game = host(port, "game", json!({}));
    let (mut alice, alice_id) = client(port, "alice", &[], &[]);
    assert_eq!(recv_json(&mut game)["event"], "host.client_joined");
    send_json(
        &mut game,
        &json!({"event": "host.broadcast", "data": {"event": "tick"}}),
    );
    send_json(
        &mut game,
        &json!({"event": "host.send", "data": {"client": alice_id, "event": "dm"}}),
    );
    assert_eq!(recv_json(&mut alice)["event"], "tick");
    assert_eq!(recv_json(&mut alice)["event"], "dm");
    // The next message the host gets answers this one: no ack came before it.
    let listing = host_request(&mut game, &json!({"event": "host.clients", "requestId": 1}));
    assert_eq!(listing["event"], "host.clients", "{listing}");
}

#[test]
fn send_and_clients() {
    let server = Server::start(json!({}));
    let port = server.port();
    let mut game = host(port, "game", json!({}));
    let since = unix_now();
    let (mut alice, alice_id) = client(port, "alice", &["players.view"], &["lobby"]);
    let (_bob, bob_id) = client(port, "bob", &[], &[]);
    let (_anonymous, _) = open(port);
    let _other_host = host(port, "other", json!({}));

    let ack = host_request(
        &mut game,
        &json!({"event": "host.send", "data": {"client": alice_id, "event": "whisper", "data": {"text": "hi"}}, "requestId": "s1"}),
    );
    assert_eq!(
        ack,
        json!({"event": "ok", "data": {"delivered": 1}, "requestId": "s1"})
    );
    assert_eq!(
        recv_json(&mut alice),
        json!({"event": "whisper", "data": {"text": "hi"}})
    );
    for nobody in ["ffffff", "zz", ""] {
        let ack = host_request(
            &mut game,
            &json!({"event": "host.send", "data": {"client": nobody, "event": "x"}, "requestId": "s2"}),
        );
        assert_eq!(ack["data"]["delivered"], 0, "{nobody}: {ack}");
    }
    let bad = host_request(
        &mut game,
        &json!({"event": "host.send", "data": {"event": "x"}, "requestId": "s3"}),
    );
    assert_error(&bad, "invalid_data");

    let listing = host_request(
        &mut game,
        &json!({"event": "host.clients", "requestId": "c"}),
    );
    assert_eq!(listing["event"], "host.clients", "{listing}");
    assert_eq!(listing["requestId"], "c");
    let mut clients = listing["data"]["clients"].as_array().unwrap().clone();
    clients.sort_by_key(|c| c["sub"].as_str().unwrap_or("").to_string());
    assert_eq!(
        clients.len(),
        2,
        "hosts and anonymous clients are not listed: {clients:?}"
    );
    let connected_at = clients[0]["connectedAt"].as_u64().unwrap();
    assert!(connected_at >= since && connected_at <= unix_now());
    assert_eq!(
        clients[0],
        json!({"id": alice_id, "sub": "alice", "ip": "127.0.0.1", "rooms": ["lobby"], "permissions": ["players.view"], "connectedAt": connected_at})
    );
    assert_eq!(clients[1]["id"], bob_id);
    assert_eq!(clients[1]["rooms"], json!([]));
}

#[test]
fn kick_sends_kicked_then_closes_4010() {
    let server = Server::start(json!({}));
    let port = server.port();
    let mut game = host(port, "game", json!({}));
    let (mut alice, alice_id) = client(port, "alice", &[], &[]);
    let joined = recv_json(&mut game);
    assert_eq!(
        joined,
        json!({"event": "host.client_joined", "data": {"client": alice_id, "sub": "alice", "ip": "127.0.0.1"}})
    );
    send_json(
        &mut game,
        &json!({"event": "host.kick", "data": {"client": alice_id, "reason": "cheating"}, "requestId": "k"}),
    );
    assert_eq!(
        recv_json(&mut alice),
        json!({"event": "kicked", "data": {"reason": "cheating"}})
    );
    assert_eq!(expect_close(&mut alice), 4010);
    // The kick's acknowledgement first, then the notice the kick caused.
    assert_eq!(
        recv_json(&mut game),
        json!({"event": "ok", "data": {"delivered": 1}, "requestId": "k"})
    );
    assert_eq!(
        recv_json(&mut game),
        json!({"event": "host.client_left", "data": {"client": alice_id, "sub": "alice", "code": 4010}})
    );
    // Gone: a second kick reaches nobody.
    let ack = host_request(
        &mut game,
        &json!({"event": "host.kick", "data": {"client": alice_id, "reason": "again"}, "requestId": "k2"}),
    );
    assert_eq!(ack["data"]["delivered"], 0);
    let bad = host_request(
        &mut game,
        &json!({"event": "host.kick", "data": {"reason": "who"}, "requestId": "k3"}),
    );
    assert_error(&bad, "invalid_data");
}

#[test]
fn client_joined_and_left_notices() {
    let server = Server::start(json!({}));
    let port = server.port();
    let mut game = host(port, "game", json!({}));
    // A host's token (with `host`) is not announced as a client.
    let mut second = host(port, "second", json!({}));

    // Joined on authentication, by handshake token or by `auth`.
    let (mut anonymous, connected) = open(port);
    let anonymous_id = connected["data"]["clientId"].as_str().unwrap().to_string();
    assert_silent(&mut game, Duration::from_millis(200));
    let token = mint_valid("late", &[], &[], 3600);
    let authenticated = request(
        &mut anonymous,
        &json!({"event": "auth", "data": {"token": token}}),
    );
    assert_eq!(authenticated["event"], "authenticated");
    for ws in [&mut game, &mut second] {
        assert_eq!(
            recv_json(ws),
            json!({"event": "host.client_joined", "data": {"client": anonymous_id, "sub": "late", "ip": "127.0.0.1"}})
        );
    }
    // Re-authenticating is not a second join.
    let again = request(
        &mut anonymous,
        &json!({"event": "auth", "data": {"token": token}}),
    );
    assert_eq!(again["event"], "authenticated");

    let (mut bob, bob_id) = client(port, "bob", &[], &[]);
    assert_eq!(recv_json(&mut game)["data"]["client"], bob_id);
    assert_eq!(recv_json(&mut second)["data"]["client"], bob_id);
    assert_eq!(close_normally(&mut bob), Some(1000));
    for ws in [&mut game, &mut second] {
        assert_eq!(
            recv_json(ws),
            json!({"event": "host.client_left", "data": {"client": bob_id, "sub": "bob", "code": 1000}})
        );
    }
    // A client that just drops the TCP connection leaves with 1006.
    drop(anonymous);
    let left = recv_json(&mut game);
    assert_eq!(left["event"], "host.client_left", "{left}");
    assert_eq!(left["data"]["client"], anonymous_id);
    assert_eq!(left["data"]["code"], 1006);
    recv_json(&mut second);

    // Hosts coming and going are not clients: no notices about them.
    let third = host(port, "third", json!({}));
    drop(third);
    // An admin client is a client until it registers: its joined notice
    // gets the matching left notice when it goes.
    let (mut admin, admin_id) = client(port, "root", &["admin"], &[]);
    assert_eq!(recv_json(&mut game)["data"]["client"], admin_id);
    let reg = host_request(
        &mut admin,
        &json!({"event": "host.register", "data": {"events": {}}}),
    );
    assert_eq!(reg["event"], "host.registered");
    assert_eq!(close_normally(&mut admin), Some(1000));
    assert_eq!(
        recv_json(&mut game),
        json!({"event": "host.client_left", "data": {"client": admin_id, "sub": "root", "code": 1000}})
    );
    // An unauthenticated connection closing says nothing either.
    let (ws, _) = open(port);
    drop(ws);
    assert_silent(&mut game, Duration::from_millis(300));
}

#[test]
fn token_minting_rules() {
    let server = Server::start(json!({}));
    let port = server.port();
    let mut game = host(port, "game", json!({}));
    let now = unix_now();
    let minted = host_request(
        &mut game,
        &json!({"event": "host.token", "data": {"sub": "player7", "permissions": ["players.view"], "rooms": ["lobby"], "role": "player", "ttl": "15m"}, "requestId": "t1"}),
    );
    assert_eq!(minted["event"], "host.token", "{minted}");
    assert_eq!(minted["requestId"], "t1");
    let expires_at = minted["data"]["expiresAt"].as_u64().unwrap();
    assert!((now + 900..=unix_now() + 900).contains(&expires_at));
    let token = minted["data"]["token"].as_str().unwrap();
    let claims = jwt_claims(token);
    assert_eq!(claims["sub"], "player7");
    assert_eq!(claims["role"], "player");
    assert_eq!(claims["exp"], expires_at);
    // The minted token works.
    let (_player, authenticated) = open_authed(port, token);
    assert_eq!(
        authenticated["data"]["permissions"],
        json!(["players.view"])
    );
    assert_eq!(authenticated["data"]["rooms"], json!(["lobby"]));
    assert_eq!(authenticated["data"]["expiresAt"], expires_at);

    for (ttl, seconds) in [
        (json!(60), 60),
        (json!("90s"), 90),
        (json!("1h"), 3600),
        (json!("7d"), 604_800),
        (Value::Null, 86_400),
    ] {
        let now = unix_now();
        let minted = host_request(
            &mut game,
            &json!({"event": "host.token", "data": {"sub": "p", "ttl": ttl}}),
        );
        let expires_at = minted["data"]["expiresAt"].as_u64().unwrap();
        assert!(
            (now + seconds..=unix_now() + seconds).contains(&expires_at),
            "ttl {ttl}: {minted}"
        );
    }
    for bad in [
        json!({"sub": "p", "ttl": "soon"}),
        json!({"sub": "p", "ttl": 0}),
        json!({"sub": ""}),
        json!({"permissions": []}),
        json!({"sub": "p", "permissions": "admin"}),
    ] {
        let answer = host_request(
            &mut game,
            &json!({"event": "host.token", "data": bad, "requestId": "bad"}),
        );
        assert_error(&answer, "invalid_data");
    }
    // Only an admin host may mint `host` or `admin`.
    for permissions in [json!(["host"]), json!(["x", "admin"])] {
        let answer = host_request(
            &mut game,
            &json!({"event": "host.token", "data": {"sub": "p", "permissions": permissions}, "requestId": "f"}),
        );
        assert_error(&answer, "forbidden");
        assert_eq!(answer["requestId"], "f");
    }
    let (mut admin, _) = client(port, "root", &["admin"], &[]);
    let minted = request(
        &mut admin,
        &json!({"event": "host.token", "data": {"sub": "newhost", "permissions": ["host"]}}),
    );
    assert_eq!(minted["event"], "host.token", "{minted}");
    let new_host = minted["data"]["token"].as_str().unwrap();
    let (mut ws, _) = open_authed(port, new_host);
    let reg = request(
        &mut ws,
        &json!({"event": "host.register", "data": {"events": {"x": null}}}),
    );
    assert_eq!(reg["event"], "host.registered");
}

#[test]
fn a_registered_host_is_not_rate_limited() {
    let server = Server::start(json!({"limits": {"max_messages_per_minute": 10}}));
    let port = server.port();
    let mut game = host(port, "game", json!({}));
    let (mut alice, _) = client(port, "alice", &[], &[]);
    for n in 0..100 {
        send_json(
            &mut game,
            &json!({"event": "host.broadcast", "data": {"event": "tick", "data": n}}),
        );
    }
    for n in 0..100 {
        assert_eq!(recv_json(&mut alice), json!({"event": "tick", "data": n}));
    }
    // Clients still are.
    for _ in 0..10 {
        assert_pong(&mut alice);
    }
    assert_error(
        &request(&mut alice, &json!({"event": "ping"})),
        "rate_limited",
    );
}

/// Even requests carry a number as `requestId`, odd ones a string.
fn request_id_for(r: usize) -> Value {
    if r.is_multiple_of(2) {
        json!(r)
    } else {
        json!(format!("r{r}"))
    }
}

/// 50 clients with 20 requests each in flight at once; the host answers them
/// all in reverse order; every answer reaches the client that asked, under
/// the `requestId` it chose.
#[test]
fn many_clients_with_many_requests_in_flight_never_get_crossed_answers() {
    const CLIENTS: usize = 50;
    const REQUESTS: usize = 20;
    let server = Server::start(roomy());
    let port = server.port();
    let mut game = host(port, "game", json!({"echo": null}));
    let mut clients: Vec<(Ws, String)> = (0..CLIENTS)
        .map(|c| client(port, &format!("user{c}"), &[], &[]))
        .collect();
    // All requests go out before any answer comes back.
    for (c, (ws, _)) in clients.iter_mut().enumerate() {
        for r in 0..REQUESTS {
            // Clients pick colliding requestIds on purpose: they are per client.
            let rid = request_id_for(r);
            send_json(
                ws,
                &json!({"event": "echo", "data": {"c": c, "r": r}, "requestId": rid}),
            );
        }
    }
    let mut requests = Vec::new();
    while requests.len() < CLIENTS * REQUESTS {
        requests.push(next_request(&mut game));
    }
    let ids: std::collections::HashSet<u64> =
        requests.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), CLIENTS * REQUESTS, "request ids are unique");
    for forwarded in requests.iter().rev() {
        // The answer names who asked, as the host saw it.
        let answer = json!({"client": forwarded["client"], "sub": forwarded["sub"], "asked": forwarded["data"]});
        send_json(
            &mut game,
            &json!({"event": "host.reply", "data": {"id": forwarded["id"], "event": "echoed", "data": answer}}),
        );
    }
    for (c, (ws, id)) in clients.iter_mut().enumerate() {
        let mut seen = [false; REQUESTS];
        for _ in 0..REQUESTS {
            let answer = recv_json(ws);
            assert_eq!(answer["event"], "echoed", "{answer}");
            let data = &answer["data"];
            assert_eq!(data["client"], *id, "client {c} got {answer}");
            assert_eq!(data["sub"], format!("user{c}"));
            assert_eq!(data["asked"]["c"], c);
            let r = data["asked"]["r"].as_u64().unwrap() as usize;
            let rid = request_id_for(r);
            assert_eq!(answer["requestId"], rid, "client {c}: {answer}");
            assert!(!seen[r], "answered twice: {answer}");
            seen[r] = true;
        }
        // And nothing more.
        assert_silent(ws, Duration::from_millis(10));
    }
}

/// A host floods broadcasts while one client never reads: that client is
/// closed 4009 as a slow reader, the others receive every broadcast, and the
/// gateway's memory stays within what its settings allow.
#[test]
fn a_broadcast_flood_with_a_client_that_never_reads() {
    const BROADCASTS: u64 = 20_000;
    /// Every this many broadcasts the host asks for an `ok`.
    const ACK_EVERY: u64 = 100;
    const PAYLOAD: usize = 1024;
    const READERS: usize = 2;
    /// How far the host may run ahead of the slowest reader (messages).
    const LAG: u64 = 200;
    let server = Server::start(json!({
        "limits": {"max_outbound_bytes": 1_048_576, "max_message_bytes": 65_536}
    }));
    let port = server.port();
    let pid = server.pid();
    let ceiling = logged_ceiling(&server);
    let mut game = host(port, "game", json!({}));

    // The slow client: authenticated, a small receive window, never reads.
    let mut slow = slow_client(port, "slow");
    // Once the gateway gave up on it, it reads (within the 2 s the gateway
    // waits for its close) to see the close frame.
    let slow_closed = Arc::new(AtomicBool::new(false));
    let slow_reader = {
        let slow_closed = Arc::clone(&slow_closed);
        std::thread::spawn(move || {
            while !slow_closed.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            let read_from = Instant::now();
            loop {
                match slow.read() {
                    Ok(Message::Close(frame)) => {
                        return (
                            frame.map_or(1005, |f| u16::from(f.code)),
                            read_from.elapsed(),
                        )
                    }
                    Ok(_) => continue,
                    Err(e) => panic!("slow client: no close frame: {e}"),
                }
            }
        })
    };
    let counts: Vec<Arc<AtomicU64>> = (0..READERS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let failed = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = counts
        .iter()
        .enumerate()
        .map(|(i, count)| {
            let (mut ws, _) = client(port, &format!("reader{i}"), &[], &[]);
            let count = Arc::clone(count);
            let failed = Arc::clone(&failed);
            std::thread::spawn(move || {
                ws.get_mut()
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                for n in 0..BROADCASTS {
                    let message = match ws.read() {
                        Ok(Message::Text(text)) => text,
                        Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                        other => {
                            failed.store(true, Ordering::SeqCst);
                            panic!("reader {i} at {n}: {other:?}");
                        }
                    };
                    let value: Value = serde_json::from_str(message.as_str()).unwrap();
                    if value["data"]["n"] != n {
                        failed.store(true, Ordering::SeqCst);
                        panic!(
                            "reader {i} expected broadcast {n}, got {}",
                            value["data"]["n"]
                        );
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                }
                ws
            })
        })
        .collect();
    // Every client is in; notices to the host are read before the flood.
    for _ in 0..READERS + 1 {
        assert_eq!(recv_json(&mut game)["event"], "host.client_joined");
    }
    let (rss_before, _) = rss(pid);

    let filler = "x".repeat(PAYLOAD);
    let started = Instant::now();
    let mut delivered_to_all = 0;
    let mut slow_left = false;
    for n in 0..BROADCASTS {
        // Keep the readers (not the slow client) within LAG messages.
        while counts
            .iter()
            .any(|c| n > LAG && c.load(Ordering::SeqCst) < n - LAG)
        {
            assert!(!failed.load(Ordering::SeqCst), "a reader failed");
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "flood too slow"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut message = json!({"event": "host.broadcast", "data": {"event": "tick", "data": {"n": n, "filler": filler}}});
        if n % ACK_EVERY == 0 {
            message["requestId"] = json!(n);
        }
        send_json(&mut game, &message);
        if n % ACK_EVERY == 0 {
            let ack = loop {
                let message = recv_json(&mut game);
                if message["event"] == "host.client_left" {
                    assert_eq!(message["data"]["sub"], "slow", "{message}");
                    assert_eq!(message["data"]["code"], 4009, "{message}");
                    slow_left = true;
                    slow_closed.store(true, Ordering::SeqCst);
                    continue;
                }
                break message;
            };
            assert_eq!(ack["event"], "ok", "{ack}");
            if ack["data"]["delivered"] == json!(READERS) {
                delivered_to_all += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    for reader in readers {
        let ws = reader.join().expect("a reader failed");
        drop(ws);
    }
    let (rss_after, peak) = rss(pid);
    for count in &counts {
        assert_eq!(count.load(Ordering::SeqCst), BROADCASTS);
    }
    assert!(slow_left, "the slow client was not closed");
    assert!(
        delivered_to_all >= 1,
        "the slow client should have been dropped from the broadcasts"
    );
    // The slow client was closed 4009 (after whatever its buffers held).
    let (code, drained_in) = slow_reader.join().expect("slow client");
    assert_eq!(
        code, 4009,
        "slow client's close code (read in {drained_in:?})"
    );
    eprintln!("slow client: its backlog and the 4009 close frame read in {drained_in:?}");
    assert!(server.wait_log("reads too slowly", Duration::from_secs(2)));

    // Bound: four connections (host, two readers, the slow client) at the
    // logged per-connection ceiling, plus 4 MiB for the allocator and the
    // buffer pool, over what the process held before the flood. An unbounded
    // queue for the slow client would need the whole flood, ~20 MiB.
    let bound = rss_before + 4 * ceiling + (4 << 20);
    eprintln!(
        "flood: {BROADCASTS} x {PAYLOAD} B in {elapsed:?}; RSS before {} KiB, after {} KiB, peak {} KiB; bound {} KiB (ceiling {ceiling} B per connection)",
        rss_before >> 10,
        rss_after >> 10,
        peak >> 10,
        bound >> 10
    );
    assert!(
        peak <= bound,
        "peak RSS {peak} over the bound {bound} (before {rss_before})"
    );
}

/// A child process killed (by its own pid) when the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `event` with `requestId` `rid` and returns its answer; messages
/// without that requestId (broadcasts) that come first go to `other`.
fn ask(ws: &mut Ws, event: &str, data: Value, rid: u64, other: &mut dyn FnMut(&Value)) -> Value {
    send_json(ws, &json!({"event": event, "data": data, "requestId": rid}));
    loop {
        let message = recv_json(ws);
        if message["requestId"] == rid {
            return message;
        }
        assert!(message.get("requestId").is_none(), "{message}");
        other(&message);
    }
}

/// Players as the broadcasts tell them: source -> (name, characterId).
type Roster = std::collections::BTreeMap<u64, (String, Option<u64>)>;

fn apply_broadcast(roster: &mut Roster, message: &Value) {
    let data = &message["data"];
    let source = data["source"].as_u64().expect("source");
    match message["event"].as_str() {
        Some("playerJoined") => {
            let name = data["name"].as_str().expect("name").to_string();
            assert!(data["license"].as_str().unwrap().starts_with("license:"));
            assert!(roster.insert(source, (name, None)).is_none(), "{message}");
        }
        Some("characterSelected") => {
            let player = roster.get_mut(&source).expect("a known player");
            player.1 = Some(data["characterId"].as_u64().expect("characterId"));
            assert!(data["name"].is_string());
        }
        Some("playerLeft") => {
            let (name, _) = roster.remove(&source).expect("a known player");
            assert_eq!(data["name"], name);
        }
        Some("playerKicked") => assert!(roster.contains_key(&source)),
        _ => panic!("unexpected message {message}"),
    }
}

fn roster_of(players: &Value) -> Roster {
    players["data"]["players"]
        .as_array()
        .unwrap_or_else(|| panic!("not a player list: {players}"))
        .iter()
        .map(|p| {
            assert!(p["identifiers"]["license"].is_string(), "{p}");
            let name = p["name"].as_str().unwrap().to_string();
            (
                p["source"].as_u64().unwrap(),
                (name, p["character"]["id"].as_u64()),
            )
        })
        .collect()
}

/// examples/game_host.rs against the real gateway: its answers agree with
/// the broadcasts the client saw before them.
#[test]
fn game_host_example_serves_players_and_broadcasts() {
    let server = Server::start(json!({}));
    let port = server.port();
    // Minted as the README says, with `tether token`.
    let token = server.token("game", &["host"], &[], None, "1h");
    let _game = Child(
        std::process::Command::new(example_bin("game_host"))
            .args(["--url", &format!("ws://127.0.0.1:{port}/")])
            .args(["--interval-ms", "50", "--seed", "7"])
            .env("TETHER_HOST_TOKEN", &token)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the game_host example"),
    );
    let (mut admin, _) = client(
        port,
        "dashboard",
        &["players.view", "stats.view", "jobs.view", "players.kick"],
        &[],
    );
    let mut ignore = |_: &Value| {};
    let deadline = Instant::now() + Duration::from_secs(20);
    let jobs = loop {
        let answer = ask(&mut admin, "getJobs", Value::Null, 0, &mut ignore);
        if answer["data"]["code"] != "unknown_event" {
            break answer;
        }
        assert!(Instant::now() < deadline, "the example never registered");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(jobs["event"], "jobs", "{jobs}");
    let list = jobs["data"]["jobs"].as_array().unwrap();
    assert!(list
        .iter()
        .any(|j| j["name"] == "police" && j["grades"].is_array()));

    // From a first answer on, the broadcasts tell every change: each later
    // answer must match what they told.
    let mut roster = roster_of(&ask(&mut admin, "getPlayers", Value::Null, 1, &mut ignore));
    let mut seen = std::collections::BTreeSet::new();
    let mut rid = 2;
    while seen.len() < 3 || rid < 6 {
        assert!(Instant::now() < deadline, "saw only {seen:?} in 20 s");
        std::thread::sleep(Duration::from_millis(40));
        let answer = ask(
            &mut admin,
            "getPlayers",
            json!({}),
            rid,
            &mut |m: &Value| {
                seen.insert(m["event"].as_str().unwrap_or("").to_string());
                apply_broadcast(&mut roster, m);
            },
        );
        assert_eq!(
            roster_of(&answer),
            roster,
            "getPlayers {rid} against the broadcasts"
        );
        rid += 1;
    }
    for kind in ["playerJoined", "characterSelected", "playerLeft"] {
        assert!(seen.contains(kind), "no {kind} in {seen:?}");
    }

    let stats = ask(&mut admin, "getStats", Value::Null, 100, &mut ignore);
    assert_eq!(stats["event"], "stats", "{stats}");
    assert_eq!(stats["data"]["maxPlayers"], 64);
    // The host's own error code reaches the client.
    let kick = ask(
        &mut admin,
        "kickPlayer",
        json!({"source": 999_999, "reason": "x"}),
        101,
        &mut ignore,
    );
    assert_error(&kick, "player_not_found");
    // Permissions are the seed's: `announce` needs `announce`.
    let refused = ask(
        &mut admin,
        "announce",
        json!({"message": "hi"}),
        102,
        &mut ignore,
    );
    assert_error(&refused, "forbidden");
}

/// examples/sound_bot_host.py (Python, `websockets`) against the real
/// gateway: a client's requests and the seed's error codes.
#[test]
fn sound_bot_example_in_python() {
    let server = Server::start(json!({}));
    let port = server.port();
    let token = server.token("soundbot", &["host"], &[], None, "1h");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sound_bot_host.py");
    let mut bot = Child(
        python3()
            .arg(&script)
            .args(["--url", &format!("ws://127.0.0.1:{port}")])
            .args(["--voice", "dj=Music"])
            .env("TETHER_HOST_TOKEN", &token)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs examples/sound_bot_host.py"),
    );
    let (mut dj, _) = client(port, "dj", &[], &[]);
    let mut ignore = |m: &Value| panic!("the sound bot broadcasts nothing: {m}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let list = loop {
        let answer = ask(&mut dj, "list", Value::Null, 0, &mut ignore);
        if answer["data"]["code"] != "unknown_event" {
            break answer;
        }
        assert!(Instant::now() < deadline, "the sound bot never registered");
        assert_running(&mut bot.0, "the sound bot");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(list["event"], "list", "{list}");
    let sounds = list["data"]["sounds"].as_array().unwrap();
    assert_eq!(list["data"]["count"], sounds.len());
    assert!(sounds.iter().any(|s| s["name"] == "airhorn.mp3"), "{list}");

    let playing = ask(
        &mut dj,
        "play",
        json!({"filename": "airhorn.mp3"}),
        1,
        &mut ignore,
    );
    assert_eq!(
        playing,
        json!({"event": "playing", "data": {"filename": "airhorn.mp3", "title": "airhorn.mp3", "channel": "Music"}, "requestId": 1})
    );
    let status = ask(&mut dj, "status", Value::Null, 2, &mut ignore);
    assert_eq!(status["event"], "status", "{status}");
    assert_eq!(status["data"]["playing"], true);
    assert_eq!(status["data"]["now_playing"], "airhorn.mp3");
    let random = ask(&mut dj, "random", Value::Null, 3, &mut ignore);
    assert_eq!(random["data"]["random"], true, "{random}");
    let stopped = ask(&mut dj, "stop", Value::Null, 4, &mut ignore);
    assert_eq!(stopped["event"], "stopped", "{stopped}");
    assert_eq!(
        ask(&mut dj, "status", Value::Null, 5, &mut ignore)["data"]["playing"],
        false
    );

    // The seed's error codes, as errors with the client's requestId.
    let missing = ask(
        &mut dj,
        "play",
        json!({"filename": "nope.mp3"}),
        6,
        &mut ignore,
    );
    assert_error(&missing, "sound_not_found");
    assert_eq!(missing["data"]["message"], "Sound \"nope.mp3\" not found");
    assert_eq!(missing["requestId"], 6);
    assert_error(
        &ask(&mut dj, "play", json!({}), 7, &mut ignore),
        "missing_filename",
    );
    let (mut listener, _) = client(port, "listener", &[], &[]);
    let refused = ask(&mut listener, "random", Value::Null, 8, &mut ignore);
    assert_error(&refused, "no_voice_channel");
    assert_eq!(refused["requestId"], 8);
}
