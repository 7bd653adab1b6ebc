//! SPEC §9 under stress: Redis killed while both nodes publish (memory
//! flat, drops counted, local delivery on), restarted (cross-node again,
//! counters consistent), and a burst from Redis that fast clients absorb
//! without being closed as slow readers. A redis-server of the test's own
//! (free loopback port, stopped by PID; never the system service).

mod common;

use common::cluster::*;
use common::*;
use serde_json::json;
use std::io::Write;
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Small, so that the traffic while Redis is down is many times the bound.
const MAX_FORWARD_BYTES: u64 = 65_536;
/// Room messages each node's publisher sends in the killed-Redis test.
const PER_NODE: u64 = 1000;
/// Redis is killed after this many of them.
const KILL_AT: u64 = 40;
const PAD: usize = 8000;

/// A node with a small forward bound and per-message logs off.
fn lean_node(redis: &Redis, name: &str, max_outbound_bytes: u64) -> Server {
    let tmp = TempDir::new(name);
    let dir = tmp.path().to_path_buf();
    std::mem::forget(tmp);
    let server = Server::start_in(
        &dir,
        json!({
            "cluster": {"redis": redis.url(), "node": name, "heartbeat_ms": HEARTBEAT_MS,
                        "max_forward_bytes": MAX_FORWARD_BYTES},
            "limits": {"max_messages_per_minute": 1_000_000, "max_outbound_bytes": max_outbound_bytes},
            "log": {"level": "info"}
        }),
        &[("JWT_SECRET", SECRET)],
    );
    joined(&server, name);
    server
}

/// A client that may publish to `room` (it is in it, as its token says).
fn publisher(server: &Server, room: &str) -> Ws {
    let token = server.token("pub", &["publish"], &[room], None, "1h");
    open_authed(server.port(), &token).0
}

/// Publishes `{"from","seq","pad"}` to `room`; the reply's `delivered`
/// (room messages that came meanwhile are skipped).
fn publish_padded(ws: &mut Ws, room: &str, from: &str, seq: u64) -> u64 {
    let data = json!({"from": from, "seq": seq, "pad": "p".repeat(PAD)});
    send_json(
        ws,
        &json!({"event":"publish","data":{"room":room,"event":"n","data":data},"requestId":seq}),
    );
    loop {
        let reply = recv_json(ws);
        if reply["event"] != "n" {
            assert_eq!(reply["event"], "published", "{reply}");
            return reply["data"]["delivered"].as_u64().unwrap();
        }
    }
}

/// Reads room messages `(from, seq)` on another thread until `from`'s
/// `last` came; hands the socket back with them.
fn collect_until(
    mut ws: Ws,
    from: &'static str,
    last: u64,
) -> JoinHandle<(Ws, Vec<(String, u64)>)> {
    std::thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            let m = recv_json(&mut ws);
            assert_eq!(m["event"], "n", "{m}");
            let origin = m["data"]["from"].as_str().unwrap().to_string();
            let seq = m["data"]["seq"].as_u64().unwrap();
            let done = origin == from && seq == last;
            got.push((origin, seq));
            if done {
                return (ws, got);
            }
        }
    })
}

fn seqs_from(got: &[(String, u64)], from: &str) -> Vec<u64> {
    got.iter()
        .filter(|(o, _)| o == from)
        .map(|&(_, s)| s)
        .collect()
}

/// The bytes the node logged as its cluster worst case.
fn logged_ceiling(server: &Server) -> u64 {
    server
        .logs()
        .iter()
        .find_map(|l| {
            let rest = l.split("cluster memory ceiling: ").nth(1)?;
            rest.split(' ').next()?.parse().ok()
        })
        .expect("the cluster memory ceiling is logged")
}

fn counters(server: &Server) -> (u64, u64, u64) {
    let (_, text) = get(server, "/metrics");
    (
        metric(&text, "tether_cluster_forwarded_total"),
        metric(&text, "tether_cluster_received_total"),
        metric(&text, "tether_cluster_dropped_total"),
    )
}

#[test]
fn redis_killed_mid_traffic_memory_stays_flat_drops_are_counted_then_all_resumes() {
    let mut redis = Redis::start(None);
    let a = lean_node(&redis, "a", 262_144);
    let b = lean_node(&redis, "b", 262_144);
    wait_health(&a, "a sees b", |h| h["cluster"]["nodes"] == 2);
    wait_health(&b, "b sees a", |h| h["cluster"]["nodes"] == 2);
    let on_a = member(&a, "alice", "lobby");
    let on_b = member(&b, "bob", "lobby");
    // b's subscription to the room is in place before the traffic.
    std::thread::sleep(Duration::from_millis(300));
    let (mut pub_a, mut pub_b) = (publisher(&a, "lobby"), publisher(&b, "lobby"));
    let last = PER_NODE - 1;
    let reader_a = collect_until(on_a, "a", last);
    let reader_b = collect_until(on_b, "b", last);

    let (mut base, mut peak) = ([0u64; 2], [0u64; 2]);
    for seq in 0..PER_NODE {
        // The member (the publisher is in the room, and not its own audience).
        assert_eq!(publish_padded(&mut pub_a, "lobby", "a", seq), 1);
        assert_eq!(publish_padded(&mut pub_b, "lobby", "b", seq), 1);
        if seq == KILL_AT {
            redis.kill();
        }
        // Past the bound well before the baseline (40 x 8 KB > 64 KiB).
        if seq >= KILL_AT + 40 && seq % 10 == 0 {
            for (i, node) in [&a, &b].iter().enumerate() {
                let rss = rss_kib(node.pid());
                if seq == KILL_AT + 40 {
                    base[i] = rss;
                }
                peak[i] = peak[i].max(rss);
            }
        }
    }
    // Local delivery went on throughout: every local message, in order, once.
    let (on_a, got_a) = reader_a.join().expect("a's member");
    let (on_b, got_b) = reader_b.join().expect("b's member");
    let all: Vec<u64> = (0..PER_NODE).collect();
    assert_eq!(seqs_from(&got_a, "a"), all);
    assert_eq!(seqs_from(&got_b, "b"), all);
    // What crossed before the kill came in order and once.
    for remote in [seqs_from(&got_a, "b"), seqs_from(&got_b, "a")] {
        assert!(remote.windows(2).all(|w| w[0] < w[1]), "{remote:?}");
        assert!(remote.iter().all(|&s| s <= KILL_AT), "{remote:?}");
    }

    for node in [&a, &b] {
        let health = wait_health(node, "degraded", |h| h["status"] == "degraded");
        assert_eq!(health["cluster"]["broker"], "down");
        assert_eq!(get_json(node, "/ready").0, 503);
    }
    // Memory: flat while ~7 MB per node went to a 64 KiB forward bound. The
    // logged worst case also budgets pending cross-node host requests (tens of
    // MiB), so RSS is held to a tighter bound that an unbounded forward queue
    // would pass several times over, as well as to the logged ceiling.
    const FLAT: u64 = 2 * 1024 * 1024;
    for (i, node) in [&a, &b].iter().enumerate() {
        let grew = peak[i].saturating_sub(base[i]) * 1024;
        let ceiling = logged_ceiling(node);
        let after_base = (PER_NODE - KILL_AT - 40) * PAD as u64;
        assert!(
            after_base > 3 * FLAT,
            "the traffic ({after_base} bytes) is too small to tell"
        );
        eprintln!(
            "node {i}: RSS {} KiB, grew {grew} bytes; ceiling {ceiling}",
            base[i]
        );
        assert!(
            grew <= FLAT.min(ceiling),
            "node {i}: RSS grew {grew} bytes (from {} KiB), over {} (logged ceiling {ceiling})",
            base[i],
            FLAT.min(ceiling)
        );
    }
    let down: Vec<(u64, u64, u64)> = [&a, &b].iter().map(|n| counters(n)).collect();
    for &(forwarded, _, dropped) in &down {
        assert!(dropped > 0, "{down:?}");
        // Each room message was either handed on (queued) or dropped.
        assert_eq!(forwarded + dropped, PER_NODE, "{down:?}");
    }

    redis.spawn();
    for node in [&a, &b] {
        wait_health(node, "broker back", |h| {
            h["cluster"]["broker"] == "up" && h["cluster"]["nodes"] == 2
        });
        assert_eq!(get_json(node, "/ready").0, 200);
    }
    std::thread::sleep(Duration::from_millis(3 * HEARTBEAT_MS));
    // Cross-node resumes both ways (what was queued while down may come
    // first, in order).
    let more = 10;
    let reader_a = collect_until(on_a, "b", PER_NODE + more - 1);
    let reader_b = collect_until(on_b, "a", PER_NODE + more - 1);
    for seq in PER_NODE..PER_NODE + more {
        publish_padded(&mut pub_a, "lobby", "a", seq);
        publish_padded(&mut pub_b, "lobby", "b", seq);
    }
    let (_, got_a) = reader_a.join().expect("a's member");
    let (_, got_b) = reader_b.join().expect("b's member");
    let fresh: Vec<u64> = (PER_NODE..PER_NODE + more).collect();
    for (got, remote) in [(&got_a, "b"), (&got_b, "a")] {
        let from = seqs_from(got, remote);
        assert!(from.windows(2).all(|w| w[0] < w[1]), "{from:?}");
        assert!(from.ends_with(&fresh), "{from:?}");
    }
    for (node, (forwarded, received, dropped)) in [&a, &b].iter().zip(down) {
        let (f, r, d) = counters(node);
        assert_eq!(d, dropped, "no drops once the broker is back");
        assert_eq!(f, forwarded + more, "the new messages were handed on");
        assert!(r >= received + more, "received {received} -> {r}");
        let (_, text) = get(node, "/metrics");
        assert!(metric(&text, "tether_cluster_reconnects_total") >= 2);
        assert_eq!(metric(&text, "tether_slow_reader_closes_total"), 0);
    }
}

/// PUBLISH of an envelope from node `origin` to `room`, as RESP.
fn resp_publish(out: &mut Vec<u8>, origin: &str, room: &str, payload: &[u8]) {
    let mut env = vec![origin.len() as u8];
    env.extend_from_slice(origin.as_bytes());
    env.push(b'p');
    env.extend_from_slice(&(room.len() as u16).to_be_bytes());
    env.extend_from_slice(room.as_bytes());
    env.extend_from_slice(payload);
    let channel = format!("tether:room:{room}");
    write!(
        out,
        "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{channel}\r\n${}\r\n",
        channel.len(),
        env.len()
    )
    .unwrap();
    out.extend_from_slice(&env);
    out.extend_from_slice(b"\r\n");
}

#[test]
fn bursts_from_redis_reach_fast_members_without_slow_reader_closes() {
    let redis = Redis::start(None);
    // The smallest outbound bound the default message size allows (64 KiB
    // and a header). Each burst is about 1.5 times it: queued whole it
    // would close the members; written as it comes, their sockets' buffers
    // (128 KiB to receive on Linux, to start with) take it.
    let b = lean_node(&redis, "b", 65_536 + 16);
    let members: Vec<Ws> = (0..3)
        .map(|i| member(&b, &format!("m{i}"), "lobby"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    const BURSTS: u64 = 6;
    const PER_BURST: u64 = 500;
    let count = BURSTS * PER_BURST;
    let readers: Vec<_> = members
        .into_iter()
        .map(|ws| collect_until(ws, "z", count - 1))
        .collect();
    let mut raw = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    let started = Instant::now();
    let mut sent = 0;
    for burst_no in 0..BURSTS {
        let mut burst = Vec::new();
        for seq in burst_no * PER_BURST..(burst_no + 1) * PER_BURST {
            let payload = json!({"event":"n","data":{"from":"z","seq":seq,"pad":"q".repeat(120)}});
            resp_publish(&mut burst, "z", "lobby", payload.to_string().as_bytes());
        }
        // One write: Redis fans it out to b's subscriber link at once.
        raw.write_all(&burst).unwrap();
        sent += burst.len();
        // The members catch up between bursts (on a loaded machine too).
        std::thread::sleep(Duration::from_millis(300));
    }
    for reader in readers {
        let (_, got) = reader.join().expect("a member was closed");
        let seqs: Vec<u64> = got.iter().map(|&(_, s)| s).collect();
        assert_eq!(seqs, (0..count).collect::<Vec<_>>());
    }
    eprintln!(
        "{BURSTS} bursts of {} KiB to 3 members in {:?}",
        sent / 1024 / BURSTS as usize,
        started.elapsed()
    );
    let (_, text) = get(&b, "/metrics");
    assert_eq!(metric(&text, "tether_slow_reader_closes_total"), 0);
    assert_eq!(metric(&text, "tether_cluster_received_total"), count);
}
