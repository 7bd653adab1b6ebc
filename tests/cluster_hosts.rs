//! SPEC §9, hosts cluster-wide, from outside: tether nodes over a real
//! redis-server of the test's own (see tests/common/cluster.rs).

mod common;

use common::cluster::*;
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The heartbeat of the tests that time in heartbeats: slow enough that a
/// loaded machine keeps the margin, fast enough to keep the tests short.
const SLOW_BEAT_MS: u64 = 500;

/// A connection on `server` with the `host` permission that registered `events`.
fn host(server: &Server, sub: &str, events: Value) -> Ws {
    let token = server.token(sub, &["host"], &[], None, "1h");
    let (mut ws, _) = open_authed(server.port(), &token);
    let reply = request(
        &mut ws,
        &json!({"event":"host.register","data":{"events":events},"requestId":"reg"}),
    );
    assert_eq!(reply["event"], "host.registered", "{reply}");
    ws
}

/// `host.register` of `event` on `server`, retried until granted or `within`
/// passed; the time it took.
fn register_within(server: &Server, event: &str, within: Duration) -> (Ws, Duration) {
    let token = server.token("next", &["host"], &[], None, "1h");
    let (mut ws, _) = open_authed(server.port(), &token);
    let start = Instant::now();
    loop {
        let reply = request(
            &mut ws,
            &json!({"event":"host.register","data":{"events":{event: null}}}),
        );
        if reply["event"] == "host.registered" {
            return (ws, start.elapsed());
        }
        assert_error(&reply, "invalid_data");
        assert!(start.elapsed() < within, "{event} still taken: {reply}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client(server: &Server, sub: &str) -> (Ws, String) {
    let token = server.token(sub, &[], &[], None, "1h");
    let (ws, authenticated) = open_authed(server.port(), &token);
    let id = authenticated["data"]["clientId"]
        .as_str()
        .unwrap()
        .to_string();
    (ws, id)
}

/// The announcement of a registration reaches the other nodes.
fn settle() {
    std::thread::sleep(Duration::from_millis(2 * HEARTBEAT_MS));
}

/// The host's next message, skipping client notices.
fn next_request(host: &mut Ws) -> Value {
    loop {
        let m = recv_json(host);
        if m["event"] != "host.client_joined" && m["event"] != "host.client_left" {
            assert_eq!(m["event"], "host.request", "{m}");
            return m;
        }
    }
}

/// A host of `play` on `a` and a client on `b` whose request it holds.
fn unanswered_request(a: &Server, b: &Server) -> (Ws, Ws) {
    let mut game = host(a, "game", json!({"play": null}));
    settle();
    let (mut ws, _) = client(b, "bob");
    send_json(&mut ws, &json!({"event":"play","requestId":"p"}));
    next_request(&mut game);
    (game, ws)
}

#[test]
fn a_host_on_one_node_serves_clients_of_every_node() {
    let redis = Redis::start(None);
    let nodes: Vec<Server> = ["a", "b", "c"].iter().map(|n| node(&redis, n)).collect();
    for (server, name) in nodes.iter().zip(["a", "b", "c"]) {
        joined(server, name);
    }
    let mut game = host(&nodes[0], "game", json!({"play": null}));
    settle();
    for (i, server) in nodes.iter().enumerate().skip(1) {
        let (mut ws, id) = client(server, "bob");
        send_json(
            &mut ws,
            &json!({"event":"play","data":{"n":i},"requestId":format!("q{i}")}),
        );
        let req = next_request(&mut game);
        assert_eq!(req["data"]["client"], id.as_str(), "{req}");
        assert_eq!(req["data"]["sub"], "bob");
        assert_eq!(req["data"]["data"], json!({"n": i}));
        let ack = request(
            &mut game,
            &json!({"event":"host.reply","data":{"id":req["data"]["id"],"event":"played","data":i},"requestId":1}),
        );
        assert_eq!(ack["data"]["delivered"], 1, "{ack}");
        assert_eq!(
            recv_json(&mut ws),
            json!({"event":"played","data":i,"requestId":format!("q{i}")})
        );
        // The host's errors pass through as they are.
        send_json(&mut ws, &json!({"event":"play","requestId":2}));
        let req = next_request(&mut game);
        send_json(
            &mut game,
            &json!({"event":"host.reply","data":{"id":req["data"]["id"],"error":{"code":"game_over","message":"no more"}}}),
        );
        let error = recv_json(&mut ws);
        assert_error(&error, "game_over");
        assert_eq!(error["requestId"], 2);
    }
}

#[test]
fn registration_conflicts_are_cluster_wide() {
    let (_redis, a, b) = two_nodes();
    let _game = host(&a, "game", json!({"play": null}));
    settle();
    let token = b.token("rival", &["host"], &[], None, "1h");
    let (mut rival, _) = open_authed(b.port(), &token);
    let reply = request(
        &mut rival,
        &json!({"event":"host.register","data":{"events":{"play":null}},"requestId":1}),
    );
    assert_error(&reply, "invalid_data");
    assert_eq!(reply["requestId"], 1);
    let reply = request(
        &mut rival,
        &json!({"event":"host.register","data":{"events":{"chat":null}},"requestId":2}),
    );
    assert_eq!(reply["data"]["events"], json!(["chat"]), "{reply}");
}

#[test]
fn simultaneous_registrations_on_two_nodes_have_one_winner() {
    let (_redis, a, b) = two_nodes();
    let mut hosts: Vec<Ws> = [&a, &b]
        .iter()
        .map(|server| {
            let token = server.token("racer", &["host"], &[], None, "1h");
            open_authed(server.port(), &token).0
        })
        .collect();
    for round in 0..5 {
        let event = format!("race{round}");
        let register = json!({"event":"host.register","data":{"events":{&event: null}}});
        for ws in &mut hosts {
            send_json(ws, &register);
        }
        let won: Vec<bool> = hosts
            .iter_mut()
            .map(|ws| recv_json(ws)["event"] == "host.registered")
            .collect();
        assert_eq!(won.iter().filter(|&&w| w).count(), 1, "{event}: {won:?}");
    }
}

#[test]
fn client_notices_reach_a_host_on_another_node() {
    let (_redis, a, b) = two_nodes();
    let mut game = host(&a, "game", json!({}));
    settle();
    let (mut ws, id) = client(&b, "bob");
    let joined = recv_json(&mut game);
    assert_eq!(joined["event"], "host.client_joined", "{joined}");
    assert_eq!(joined["data"]["client"], id.as_str());
    assert_eq!(joined["data"]["sub"], "bob");
    close_normally(&mut ws);
    let left = recv_json(&mut game);
    assert_eq!(left["event"], "host.client_left", "{left}");
    assert_eq!(left["data"]["client"], id.as_str());
}

#[test]
fn a_host_that_disconnects_frees_its_events_and_fails_requests() {
    let (_redis, a, b) = two_nodes_beating(SLOW_BEAT_MS);
    let (mut game, mut ws) = unanswered_request(&a, &b);
    close_normally(&mut game);
    let error = recv_json(&mut ws);
    assert_error(&error, "host_unavailable");
    assert_eq!(error["requestId"], "p");
    let (_next, took) = register_within(&b, "play", Duration::from_secs(2));
    assert!(took < Duration::from_millis(SLOW_BEAT_MS), "took {took:?}");
}

#[test]
fn a_killed_host_node_fails_requests_and_frees_events_within_three_heartbeats() {
    let (_redis, a, b) = two_nodes_beating(SLOW_BEAT_MS);
    let (_game, mut ws) = unanswered_request(&a, &b);
    a.signal(libc::SIGKILL);
    let killed = Instant::now();
    let error = recv_json(&mut ws);
    assert_error(&error, "host_unavailable");
    assert!(
        killed.elapsed() <= Duration::from_millis(3 * SLOW_BEAT_MS + 300),
        "took {:?}",
        killed.elapsed()
    );
    let three = Duration::from_millis(3 * SLOW_BEAT_MS + 300);
    register_within(&b, "play", three);
    assert!(killed.elapsed() <= three, "took {:?}", killed.elapsed());
}

/// An HTTP request with a bearer token on the health listener: status and JSON.
fn http(server: &Server, method: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", health_port(server))).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (status_of(head).unwrap_or(0), json)
}

fn nodes_of(connections: &Value) -> Vec<String> {
    let mut nodes: Vec<String> = connections["connections"]
        .as_array()
        .unwrap_or_else(|| panic!("{connections}"))
        .iter()
        .map(|c| c["node"].as_str().unwrap().to_string())
        .collect();
    nodes.sort_unstable();
    nodes
}

#[test]
fn api_connections_lists_every_node_and_answers_without_a_silent_one() {
    let (_redis, a, b) = two_nodes();
    wait_health(&a, "two nodes", |h| h["cluster"]["nodes"] == 2);
    let (_on_a, _) = client(&a, "alice");
    let (_on_b, id_b) = client(&b, "bob");
    let admin = a.token("ops", &["admin"], &[], None, "1h");
    let (status, list) = http(&a, "GET", "/api/connections", &admin, "");
    assert_eq!(status, 200, "{list}");
    assert_eq!(nodes_of(&list), ["a", "b"]);
    assert!(list.to_string().contains(&id_b));
    let user = a.token("u", &["publish"], &[], None, "1h");
    assert_eq!(http(&a, "GET", "/api/connections", &user, "").0, 401);
    // b stops answering (but is not yet known gone): a answers in time.
    b.signal(libc::SIGSTOP);
    let asked = Instant::now();
    let (status, list) = http(&a, "GET", "/api/connections", &admin, "");
    let took = asked.elapsed();
    b.signal(libc::SIGCONT);
    assert_eq!(status, 200);
    assert_eq!(nodes_of(&list), ["a"]);
    assert!(
        took <= Duration::from_millis(REQUEST_TIMEOUT_MS + 400),
        "took {took:?}"
    );
}

#[test]
fn api_publish_reaches_a_client_of_another_node() {
    let (_redis, a, b) = two_nodes();
    let (mut on_b, id_b) = client(&b, "bob");
    let token = a.token("svc", &["publish"], &[], None, "1h");
    let body = json!({"event":"note","data":{"x":1},"client":id_b}).to_string();
    let (status, reply) = http(&a, "POST", "/api/publish", &token, &body);
    assert_eq!((status, reply), (200, json!({"delivered": 1})));
    assert_eq!(recv_json(&mut on_b), json!({"event":"note","data":{"x":1}}));
    let gone = json!({"event":"note","client":"b.ffffff"}).to_string();
    let (status, reply) = http(&a, "POST", "/api/publish", &token, &gone);
    assert_eq!((status, reply), (200, json!({"delivered": 0})));
    // A node nobody runs: delivered 0 after host.request_timeout_ms.
    let asked = Instant::now();
    let nowhere = json!({"event":"note","client":"zz.1000000"}).to_string();
    let (status, reply) = http(&a, "POST", "/api/publish", &token, &nowhere);
    assert_eq!((status, reply), (200, json!({"delivered": 0})));
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(REQUEST_TIMEOUT_MS - 100)
            && took <= Duration::from_millis(REQUEST_TIMEOUT_MS + 400),
        "took {took:?}"
    );
}

#[test]
fn registrations_while_redis_is_down_are_settled_when_it_is_back() {
    let mut redis = Redis::start(None);
    let (a, b) = joined_nodes(&redis);
    redis.kill();
    wait_health(&a, "a degraded", |h| h["status"] == "degraded");
    wait_health(&b, "b degraded", |h| h["status"] == "degraded");
    // Decided by each node alone, answered at once.
    let asked = Instant::now();
    let mut first = host(&a, "first", json!({"solo": null}));
    assert!(asked.elapsed() < Duration::from_millis(REQUEST_TIMEOUT_MS / 2));
    std::thread::sleep(Duration::from_millis(HEARTBEAT_MS));
    let mut second = host(&b, "second", json!({"solo": null}));

    redis.spawn();
    for (server, name) in [(&a, "a"), (&b, "b")] {
        wait_health(server, name, |h| h["cluster"]["broker"] == "up");
    }
    assert!(
        b.wait_log("lost `solo` to another node's host", Duration::from_secs(5))
            || a.wait_log("lost `solo` to another node's host", Duration::from_secs(1)),
        "nobody lost the conflict"
    );
    settle();
    // One host serves `solo` for the clients of both nodes.
    let a_won = b.logs().iter().any(|l| l.contains("lost `solo`"));
    let winner = if a_won { &mut first } else { &mut second };
    for server in [&a, &b] {
        let (mut ws, id) = client(server, "bob");
        send_json(&mut ws, &json!({"event":"solo","requestId":1}));
        let req = next_request(winner);
        assert_eq!(req["data"]["client"], id.as_str());
        send_json(
            winner,
            &json!({"event":"host.reply","data":{"id":req["data"]["id"],"event":"ok","data":null}}),
        );
        assert_eq!(recv_json(&mut ws)["requestId"], 1);
    }
}
