//! SPEC §9 from outside: several tether processes over a real redis-server
//! (started here on a free loopback port, stopped by PID; never the system
//! service).

mod common;

use common::cluster::*;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn room_messages_cross_nodes_in_order_exactly_once() {
    let (_redis, a, b) = two_nodes();
    let mut on_a = member(&a, "alice", "lobby");
    let mut on_b1 = member(&b, "bob", "lobby");
    let mut on_b2 = member(&b, "carol", "lobby");
    let mut publisher = member(&a, "pub", "lobby");
    for seq in 0..50 {
        let reply = publish(&mut publisher, "lobby", seq);
        assert_eq!(
            reply["data"],
            json!({"room":"lobby","delivered":1,"cluster":true}),
            "{reply}"
        );
    }
    let all: Vec<u64> = (0..50).collect();
    assert_eq!(received(&mut on_a, 50), all);
    assert_eq!(received(&mut on_b1, 50), all);
    assert_eq!(received(&mut on_b2, 50), all);
    // And back the other way.
    let reply = publish(&mut on_b1, "lobby", 99);
    assert_eq!(reply["data"]["delivered"], 1);
    assert_eq!(received(&mut on_a, 1), vec![99]);

    let health = wait_health(&a, "two nodes", |h| h["cluster"]["nodes"] == 2);
    assert_eq!(health["status"], "healthy");
    assert_eq!(
        health["cluster"],
        json!({"node":"a","broker":"up","nodes":2})
    );
    assert_eq!(get_json(&a, "/ready"), (200, json!({"ready": true})));
    let (_, metrics) = get(&b, "/metrics");
    assert_eq!(metric(&metrics, "tether_cluster_broker_up"), 1);
    assert_eq!(metric(&metrics, "tether_cluster_received_total"), 50);
    assert_eq!(metric(&metrics, "tether_cluster_forwarded_total"), 1);
    assert_eq!(metric(&metrics, "tether_cluster_dropped_total"), 0);
}

#[test]
fn a_killed_node_is_gone_within_three_heartbeats() {
    let (_redis, a, b) = two_nodes();
    wait_health(&a, "two nodes", |h| h["cluster"]["nodes"] == 2);
    b.signal(libc::SIGKILL);
    let killed = Instant::now();
    wait_health(&a, "b forgotten", |h| h["cluster"]["nodes"] == 1);
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_millis(3 * HEARTBEAT_MS + 600),
        "took {took:?}"
    );
}

#[test]
fn redis_down_keeps_local_delivery_then_cross_node_resumes() {
    let mut redis = Redis::start(None);
    let (a, b) = joined_nodes(&redis);
    let mut on_a = member(&a, "alice", "lobby");
    let mut on_b = member(&b, "bob", "lobby");
    let mut publisher = member(&a, "pub", "lobby");
    publish(&mut publisher, "lobby", 1);
    assert_eq!(received(&mut on_b, 1), vec![1]);
    assert_eq!(received(&mut on_a, 1), vec![1]);

    redis.kill();
    let health = wait_health(&a, "degraded", |h| h["status"] == "degraded");
    assert_eq!(health["cluster"]["broker"], "down");
    let (status, ready) = get_json(&a, "/ready");
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["ready"], false);
    assert!(ready["reason"].is_string());
    // Local delivery goes on.
    for seq in 2..12 {
        assert_eq!(
            publish(&mut publisher, "lobby", seq)["data"]["delivered"],
            1
        );
    }
    assert_eq!(received(&mut on_a, 10), (2..12).collect::<Vec<_>>());

    redis.spawn();
    wait_health(&a, "a back", |h| h["cluster"]["broker"] == "up");
    wait_health(&b, "b back", |h| h["cluster"]["broker"] == "up");
    // Messages queued while down (within max_forward_bytes) go out on
    // reconnect; b gets those published after it re-subscribed, in order
    // and once, then everything new.
    std::thread::sleep(Duration::from_millis(3 * HEARTBEAT_MS));
    publish(&mut publisher, "lobby", 20);
    let mut got = Vec::new();
    while got.last() != Some(&20) {
        let m = recv_json(&mut on_b);
        got.push(m["data"].as_u64().unwrap());
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    assert!(
        got.iter().all(|n| (2..12).contains(n) || *n == 20),
        "{got:?}"
    );
    assert_eq!(received(&mut on_a, 1), vec![20]);
    let (_, metrics) = get(&a, "/metrics");
    assert!(metric(&metrics, "tether_cluster_reconnects_total") >= 1);
    assert_eq!(get_json(&a, "/ready").0, 200);
}

#[test]
fn a_second_node_with_the_same_name_exits_1() {
    let redis = Redis::start(None);
    // A slow heartbeat: a loaded test machine must not let a's claim lapse.
    let envs = [("JWT_SECRET", SECRET)];
    let a = node_beating(&redis, "twin", &envs, 2000);
    joined(&a, "twin");
    let mut twin = node_beating(&redis, "twin", &envs, 2000);
    let status = twin
        .wait_exit(Duration::from_secs(10))
        .expect("the twin exits");
    assert_eq!(status.code(), Some(1));
    assert!(
        twin.logs().iter().any(|l| l.contains("cluster.node")),
        "{:#?}",
        twin.logs()
    );
}

#[test]
fn a_node_with_another_jwt_secret_does_not_join() {
    let redis = Redis::start(None);
    let a = node(&redis, "a");
    joined(&a, "a");
    let other = "another-secret-0123456789abcdef-0123456789";
    let b = node_with(&redis, "b", &[("JWT_SECRET", other)]);
    assert!(
        b.wait_log("JWT secret differs", Duration::from_secs(10)),
        "{:#?}",
        b.logs()
    );
    let (status, ready) = get_json(&b, "/ready");
    assert_eq!(status, 503);
    assert_eq!(ready["reason"], "the JWT secret differs from the cluster's");
    assert_eq!(get_json(&b, "/health").1["status"], "degraded");
    b.assert_not_logged(other);
    // a still sees itself alone.
    assert_eq!(get_json(&a, "/health").1["cluster"]["nodes"], 1);
}

#[test]
fn the_redis_password_is_in_no_log() {
    let redis = Redis::start(Some(REDIS_PASSWORD));
    let (a, b) = joined_nodes(&redis);
    let mut on_b = member(&b, "bob", "lobby");
    let mut publisher = member(&a, "pub", "lobby");
    publish(&mut publisher, "lobby", 7);
    assert_eq!(received(&mut on_b, 1), vec![7]);
    a.assert_not_logged(REDIS_PASSWORD);
    b.assert_not_logged(REDIS_PASSWORD);
    assert!(a.logs().iter().any(|l| l.contains("<redacted>")));
    let out = run(
        a.dir(),
        &[("JWT_SECRET", SECRET)],
        &[
            "check-config",
            "--config",
            a.config_path().to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("\"cluster\""),
        "{text}"
    );
    assert!(!text.contains(REDIS_PASSWORD));
    // A wrong password is refused by Redis and said so, still without it.
    let mut wrong = Redis::start(None);
    wrong.kill();
    wrong.password = Some("wrong-password-xyz");
    wrong.port = redis.port;
    let c = node(&wrong, "c");
    assert!(
        c.wait_log("refused", Duration::from_secs(10)),
        "{:#?}",
        c.logs()
    );
    c.assert_not_logged("wrong-password-xyz");
}

#[test]
fn client_ids_are_unique_across_nodes_and_name_their_node() {
    let redis = Redis::start(None);
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    let token = a.token("alice", &[], &[], None, "1h");
    let (_ws_a, on_a) = open_authed(a.port(), &token);
    let (_ws_b, on_b) = open_authed(b.port(), &token);
    let (id_a, id_b) = (
        on_a["data"]["clientId"].as_str().unwrap(),
        on_b["data"]["clientId"].as_str().unwrap(),
    );
    assert!(
        id_a.starts_with("a.") && id_b.starts_with("b."),
        "{id_a} {id_b}"
    );
    assert_ne!(id_a, id_b);
}

#[test]
fn host_send_and_kick_reach_clients_of_other_nodes() {
    let (_redis, a, b) = two_nodes();
    let host_token = a.token("game", &["host"], &[], None, "1h");
    let (mut host, _) = open_authed(a.port(), &host_token);
    let client_token = b.token("bob", &[], &[], None, "1h");
    let (mut client, authenticated) = open_authed(b.port(), &client_token);
    let id = authenticated["data"]["clientId"]
        .as_str()
        .unwrap()
        .to_string();

    let ok = request(
        &mut host,
        &json!({"event":"host.send","data":{"client":id,"event":"hello","data":{"x":1}},"requestId":1}),
    );
    assert_eq!(
        ok,
        json!({"event":"ok","data":{"delivered":1},"requestId":1})
    );
    assert_eq!(
        recv_json(&mut client),
        json!({"event":"hello","data":{"x":1}})
    );

    // A client that is not on b: b answers delivered 0.
    let ok = request(
        &mut host,
        &json!({"event":"host.send","data":{"client":"b.ffffff","event":"e"},"requestId":2}),
    );
    assert_eq!(ok["data"]["delivered"], 0, "{ok}");
    // A node nobody runs: delivered 0 after host.request_timeout_ms.
    let asked = Instant::now();
    let ok = request(
        &mut host,
        &json!({"event":"host.send","data":{"client":"zz.1000000","event":"e"},"requestId":3}),
    );
    assert_eq!(
        ok,
        json!({"event":"ok","data":{"delivered":0},"requestId":3})
    );
    assert!(asked.elapsed() >= Duration::from_millis(REQUEST_TIMEOUT_MS - 100));

    let ok = request(
        &mut host,
        &json!({"event":"host.kick","data":{"client":id,"reason":"bye"},"requestId":4}),
    );
    assert_eq!(
        ok,
        json!({"event":"ok","data":{"delivered":1},"requestId":4})
    );
    assert_eq!(
        recv_json(&mut client),
        json!({"event":"kicked","data":{"reason":"bye"}})
    );
    assert_eq!(expect_close(&mut client), 4010);
}

#[test]
fn host_clients_lists_every_nodes_clients() {
    let (_redis, a, b) = two_nodes();
    wait_health(&a, "two nodes", |h| h["cluster"]["nodes"] == 2);
    let host_token = a.token("game", &["host"], &[], None, "1h");
    let (mut host, _) = open_authed(a.port(), &host_token);
    let registered = request(
        &mut host,
        &json!({"event":"host.register","data":{"events":{}}}),
    );
    assert_eq!(registered["event"], "host.registered", "{registered}");
    let token = b.token("bob", &[], &[], None, "1h");
    let (_on_a, _) = open_authed(a.port(), &token);
    let (_on_b, _) = open_authed(b.port(), &token);
    let joined_a = recv_json(&mut host);
    assert_eq!(joined_a["event"], "host.client_joined", "{joined_a}");
    // Hosts hear of every node's clients (SPEC §9): b's client too.
    let joined_b = recv_json(&mut host);
    assert_eq!(joined_b["event"], "host.client_joined", "{joined_b}");
    assert!(joined_b["data"]["client"]
        .as_str()
        .unwrap()
        .starts_with("b."));
    let reply = request(&mut host, &json!({"event":"host.clients","requestId":1}));
    assert_eq!(reply["event"], "host.clients", "{reply}");
    let clients = reply["data"]["clients"].as_array().unwrap();
    let mut nodes: Vec<&str> = clients
        .iter()
        .map(|c| c["node"].as_str().unwrap())
        .collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["a", "b"], "{reply}");
    assert_eq!(reply["data"]["total"], 2);
    assert!(clients.iter().all(|c| c["id"]
        .as_str()
        .unwrap()
        .starts_with(c["node"].as_str().unwrap())));
}

#[test]
fn a_stopped_node_is_gone_at_once_and_its_name_free() {
    let (redis, a, mut b) = two_nodes();
    wait_health(&a, "two nodes", |h| h["cluster"]["nodes"] == 2);
    let stopped = Instant::now();
    assert_eq!(b.stop().code(), Some(0));
    wait_health(&a, "b gone", |h| h["cluster"]["nodes"] == 1);
    assert!(
        stopped.elapsed() < Duration::from_millis(3 * HEARTBEAT_MS),
        "{:?}",
        stopped.elapsed()
    );
    assert!(a.wait_log("cluster: node b stopped", Duration::from_secs(2)));
    // Restarted under the same name at once: the claim was freed.
    let b = node(&redis, "b");
    joined(&b, "b");
}

#[test]
fn nodes_over_a_unix_socket() {
    let redis = Redis::start_unix();
    let (a, b) = joined_nodes(&redis);
    let mut on_b = member(&b, "bob", "lobby");
    let mut publisher = member(&a, "pub", "lobby");
    publish(&mut publisher, "lobby", 5);
    assert_eq!(received(&mut on_b, 1), vec![5]);
}
