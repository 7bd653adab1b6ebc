//! Issue 12 from outside: what clients and hosts make the gateway hold stays
//! within the worst case it logs at start (pending host requests, every
//! bounded structure at once), a host's own `host.clients` reaches it, and
//! a host that loses the `host` permission loses its role.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tether::proto::envelope::MAX_REQUEST_ID_BYTES;
use tether::proto::host_link::{pending_bytes_bound, MAX_PENDING_PER_CLIENT};
use tungstenite::Message;

/// `max_message_bytes` of the crowded tests.
const MAX_MESSAGE: usize = 16_384;
/// A `requestId` as long as such a message allows.
const LONG_ID: usize = 16_000;

/// Settings for `max_connections` from one address, each sending as fast
/// as it likes messages of up to 16 KiB to hosts that never answer, with
/// 64 KiB outbound queues; partial frames and heads may wait 30 s.
fn crowded(max_connections: usize) -> Value {
    json!({
        "limits": {
            "max_connections": max_connections,
            "max_connections_per_ip": 1000,
            "max_connects_per_ip_per_hour": 100_000,
            "max_messages_per_minute": 10_000,
            "max_message_bytes": MAX_MESSAGE,
            "max_outbound_bytes": 65_536
        },
        "host": {"request_timeout_ms": 60_000},
        "server": {"websocket": {"auth": {"auth_timeout_ms": 30_000}}}
    })
}

/// A `requestId` of exactly `len` bytes of JSON (quotes included).
fn request_id(tag: usize, len: usize) -> Value {
    let head = format!("{tag}-");
    json!(format!("{head}{}", "r".repeat(len - 2 - head.len())))
}

/// Reads `ws` in a thread until `stop` is set, counting the `host.request`s
/// it gets (and answering none); the thread returns the socket.
fn read_in_background(mut ws: Ws, stop: &Arc<AtomicBool>) -> (Arc<AtomicU64>, JoinHandle<Ws>) {
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let requests = Arc::new(AtomicU64::new(0));
    let (count, stop) = (Arc::clone(&requests), Arc::clone(stop));
    let reader = std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match ws.read() {
                Ok(Message::Text(text)) if text.as_str().contains("\"host.request\"") => {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("a background reader lost its connection: {e}"),
            }
        }
        ws.get_mut().set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        ws
    });
    (requests, reader)
}

/// A host serving `events` that reads its requests but never answers.
fn silent_host(
    port: u16,
    events: Value,
    stop: &Arc<AtomicBool>,
) -> (Arc<AtomicU64>, JoinHandle<Ws>) {
    read_in_background(host(port, "silent", events), stop)
}

/// Waits until `count` reaches `n` (or panics after `timeout`).
fn wait_count(count: &AtomicU64, n: u64, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while count.load(Ordering::SeqCst) < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} arrived",
            count.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `n` requests for `event` whose `requestId`s are `long` bytes, then
/// `MAX_PENDING_PER_CLIENT` whose ids are the longest accepted, and returns
/// the replies to the first `n` (they come first; none of the others is
/// answered while the host is silent).
fn fill_pending(ws: &mut Ws, event: &str, n: usize, long: usize) -> Vec<Value> {
    for r in 0..n {
        let rid = request_id(r, long);
        send_json(ws, &json!({"event": event, "requestId": rid}));
    }
    for r in 0..MAX_PENDING_PER_CLIENT {
        let rid = request_id(r, MAX_REQUEST_ID_BYTES);
        send_json(ws, &json!({"event": event, "requestId": rid}));
    }
    (0..n).map(|_| recv_json(ws)).collect()
}

#[test]
fn a_request_id_over_the_cap_is_refused_and_not_forwarded() {
    let server = Server::start(json!({}));
    let port = server.port();
    let mut game = host(port, "game", json!({"play": null}));
    let (mut alice, _) = client(port, "alice", &[], &[]);
    assert_eq!(recv_json(&mut game)["event"], "host.client_joined");

    let too_long = request_id(1, MAX_REQUEST_ID_BYTES + 1);
    let refused = request(&mut alice, &json!({"event": "play", "requestId": too_long}));
    assert_error(&refused, "invalid_format");
    let message = refused["data"]["message"].as_str().unwrap();
    assert!(message.contains("128"), "the cap is named: {message}");
    // The longest accepted id is forwarded; the host's next message is its
    // request, not the refused one.
    let longest = request_id(2, MAX_REQUEST_ID_BYTES);
    send_json(&mut alice, &json!({"event": "play", "requestId": longest}));
    let forwarded = recv_json(&mut game);
    assert_eq!(forwarded["event"], "host.request", "{forwarded}");
    let id = forwarded["data"]["id"].clone();
    send_json(
        &mut game,
        &json!({"event": "host.reply", "data": {"id": id, "event": "played", "data": 1}}),
    );
    let answer = recv_json(&mut alice);
    assert_eq!(answer["event"], "played", "{answer}");
    assert_eq!(answer["requestId"], longest);
}

/// Issue 12 item 3: clients hold the maximum of pending requests against a
/// host that reads but never answers, after trying `requestId`s of 16 KB;
/// the process stays under the logged worst case, and what the requests
/// hold within their bound.
#[test]
fn pending_requests_with_maximal_ids_stay_under_the_logged_worst_case() {
    const CLIENTS: usize = 98;
    let server = Server::start(crowded(100));
    let port = server.port();
    let worst_mib = logged_worst_case_mib(&server);
    let stop = Arc::new(AtomicBool::new(false));
    // Two hosts: one host may have MAX_PENDING_PER_HOST (4096) in flight.
    let hosts = [
        silent_host(port, json!({"slow0": null}), &stop),
        silent_host(port, json!({"slow1": null}), &stop),
    ];
    let mut clients: Vec<Ws> = (0..CLIENTS)
        .map(|i| client(port, &format!("c{i}"), &[], &[]).0)
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (rss_before, _) = rss(server.pid());

    for (i, ws) in clients.iter_mut().enumerate() {
        let event = format!("slow{}", i % 2);
        for refused in fill_pending(ws, &event, MAX_PENDING_PER_CLIENT, LONG_ID) {
            assert_error(&refused, "invalid_format");
        }
    }
    let held = (CLIENTS * MAX_PENDING_PER_CLIENT) as u64;
    let forwarded = || {
        hosts
            .iter()
            .map(|(n, _)| n.load(Ordering::SeqCst))
            .sum::<u64>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while forwarded() < held {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {held} forwarded",
            forwarded()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Each client is at its maximum: one more is refused at once.
    let over = request(
        &mut clients[0],
        &json!({"event": "slow0", "requestId": "over"}),
    );
    assert_error(&over, "host_unavailable");
    assert_eq!(over["requestId"], "over");

    let (rss_after, peak) = rss(server.pid());
    let worst = worst_mib << 20;
    let held_bound = (CLIENTS * pending_bytes_bound()) as u64 + (8 << 20);
    eprintln!(
        "{held} pending requests: RSS {} KiB before, {} KiB after, peak {} KiB; worst case {worst_mib} MiB",
        rss_before >> 10,
        rss_after >> 10,
        peak >> 10
    );
    assert!(
        peak <= worst,
        "peak RSS {peak} over the logged worst case {worst}"
    );
    assert!(
        rss_after.saturating_sub(rss_before) <= held_bound,
        "pending requests took {} bytes, over their bound {held_bound}",
        rss_after - rss_before
    );
    stop.store(true, Ordering::SeqCst);
    for (_, reader) in hosts {
        drop(reader.join().expect("a silent host"));
    }
}

/// Issue 12 item 6: more clients than one `host.clients` reply may hold in a
/// host's outbound queue. The host gets them all, page by page, and stays.
#[test]
fn host_clients_reaches_the_host_when_the_list_outgrows_its_queue() {
    const CLIENTS: usize = 150;
    let server = Server::start(json!({
        "limits": {
            "max_connections": 200,
            "max_connections_per_ip": 200,
            "max_message_bytes": 4096,
            "max_outbound_bytes": 8192
        }
    }));
    let port = server.port();
    let mut game = host(port, "game", json!({}));
    let mut ids = HashSet::new();
    let _clients: Vec<Ws> = (0..CLIENTS)
        .map(|i| {
            let (ws, id) = client(port, &format!("player-{i:03}"), &[], &["lobby"]);
            assert_eq!(recv_json(&mut game)["event"], "host.client_joined");
            ids.insert(id);
            ws
        })
        .collect();
    // All of them would be some 20 KB: over the 8 KiB queue.
    let mut listed = HashSet::new();
    let mut offset = json!(0);
    let mut pages = 0;
    loop {
        let page = request(
            &mut game,
            &json!({"event": "host.clients", "data": {"offset": offset}, "requestId": pages}),
        );
        assert_eq!(page["event"], "host.clients", "{page}");
        assert_eq!(page["requestId"], pages);
        assert_eq!(page["data"]["total"], CLIENTS);
        for c in page["data"]["clients"].as_array().expect("clients") {
            assert!(
                listed.insert(c["id"].as_str().unwrap().to_string()),
                "twice: {c}"
            );
        }
        pages += 1;
        offset = page["data"]["next"].clone();
        if offset.is_null() {
            break;
        }
        assert!(pages < CLIENTS, "paging does not progress");
    }
    assert!(
        pages > 1,
        "one page held {CLIENTS} clients in an 8 KiB queue"
    );
    assert_eq!(listed, ids);
    // The host is still served.
    let ack = request(
        &mut game,
        &json!({"event": "host.broadcast", "data": {"event": "tick"}, "requestId": "b"}),
    );
    assert_eq!(ack["data"]["delivered"], CLIENTS, "{ack}");
    assert!(!server.logs().iter().any(|l| l.contains("reads too slowly")));
}

/// Issue 12 item 7: a registered host re-authenticates with a token without
/// `host`: its events are gone, its pending requests fail, it is rate
/// limited, and another host hears of it as a client.
#[test]
fn a_host_reauthenticated_without_host_loses_its_role() {
    let server = Server::start(json!({
        "limits": {"max_messages_per_minute": 5},
        "host": {"request_timeout_ms": 30_000}
    }));
    let port = server.port();
    let mut game = host(port, "game", json!({"play": null}));
    let mut watcher = host(port, "watcher", json!({}));
    let (mut alice, _) = client(port, "alice", &[], &[]);
    assert_eq!(recv_json(&mut game)["event"], "host.client_joined");
    assert_eq!(recv_json(&mut watcher)["event"], "host.client_joined");
    send_json(&mut alice, &json!({"event": "play", "requestId": "p1"}));
    assert_eq!(recv_json(&mut game)["event"], "host.request");

    let token = mint_valid("game", &["players.view"], &[], 3600);
    let authenticated = request(
        &mut game,
        &json!({"event": "auth", "data": {"token": token}, "requestId": "a"}),
    );
    assert_eq!(authenticated["event"], "authenticated", "{authenticated}");
    let failed = recv_json(&mut alice);
    assert_error(&failed, "host_unavailable");
    assert_eq!(failed["requestId"], "p1");
    let joined = recv_json(&mut watcher);
    assert_eq!(joined["event"], "host.client_joined", "{joined}");
    assert_eq!(joined["data"]["sub"], "game");

    let gone = request(&mut alice, &json!({"event": "play", "requestId": "p2"}));
    assert_error(&gone, "unknown_event");
    let forbidden = request(
        &mut game,
        &json!({"event": "host.broadcast", "data": {"event": "x"}, "requestId": "b"}),
    );
    assert_error(&forbidden, "forbidden");
    // No exemption from the rate limit any more (5 a minute; one spent).
    let answers: Vec<Value> = (0..5)
        .map(|_| request(&mut game, &json!({"event": "ping"})))
        .collect();
    assert_error(&answers[4], "rate_limited");
}

/// A WebSocket (raw) that sent all but the last bytes of a maximal frame.
fn partial_frame(port: u16, max_message: usize) -> RawWs {
    let mut ws = RawWs::open(port);
    let whole = frame(true, 0x1, &vec![b' '; max_message]);
    ws.send(&whole[..whole.len() - 1]);
    ws
}

/// A connection that sent most of a request head of the largest size.
fn partial_head(port: u16) -> TcpStream {
    let mut stream = tcp(port);
    let head = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}", "p".repeat(7_000));
    stream
        .write_all(head.as_bytes())
        .expect("send a partial head");
    stream
}

/// The issue's last bullet: every bounded structure filled at once —
/// outbound queues full of broadcasts nobody reads, partial frames, pending
/// requests, handshakes in progress and HTTP connections — and the process's
/// peak RSS compared with the worst case logged at start.
#[test]
fn every_bound_filled_at_once_stays_under_the_logged_worst_case() {
    const PENDING_CLIENTS: usize = 10;
    const PARTIAL_FRAMES: usize = 15;
    const SLOW_READERS: usize = 15;
    const HANDSHAKES: usize = 15;
    const HTTP: usize = 32;
    let server = Server::start(crowded(60));
    let port = server.port();
    let health = health_port(&server);
    let worst_mib = logged_worst_case_mib(&server);

    // Pending requests, after trying ids as long as a message allows.
    let stop = Arc::new(AtomicBool::new(false));
    let (forwarded, silent) = silent_host(port, json!({"slow": null}), &stop);
    let mut pending: Vec<Ws> = (0..PENDING_CLIENTS)
        .map(|i| client(port, &format!("p{i}"), &[], &[]).0)
        .collect();
    for ws in &mut pending {
        // However the gateway answers (refused ids, or a full queue), as many.
        assert_eq!(
            fill_pending(ws, "slow", MAX_PENDING_PER_CLIENT, LONG_ID).len(),
            64
        );
    }
    // They read on (broadcasts reach them too), so that they stay.
    let pending: Vec<_> = pending
        .into_iter()
        .map(|ws| read_in_background(ws, &stop).1)
        .collect();
    wait_count(
        &forwarded,
        (PENDING_CLIENTS * MAX_PENDING_PER_CLIENT) as u64,
        Duration::from_secs(20),
    );
    // Partial frames of the largest message, handshakes in progress, and
    // HTTP requests in progress on the health port.
    let _frames: Vec<RawWs> = (0..PARTIAL_FRAMES)
        .map(|_| partial_frame(port, MAX_MESSAGE))
        .collect();
    let _heads: Vec<TcpStream> = (0..HANDSHAKES).map(|_| partial_head(port)).collect();
    let _http: Vec<TcpStream> = (0..HTTP).map(|_| partial_head(health)).collect();
    // Full outbound queues: readers that never read, and a host that
    // broadcasts until the gateway gave up on every one of them (4009).
    let _slow: Vec<Ws> = (0..SLOW_READERS)
        .map(|i| slow_client(port, &format!("slow{i}")))
        .collect();
    let mut caster = host(port, "caster", json!({}));
    let filler = "x".repeat(MAX_MESSAGE - 200);
    let mut left = 0;
    for n in 0..400 {
        send_json(
            &mut caster,
            &json!({"event": "host.broadcast", "data": {"event": "fill", "data": filler}, "requestId": n}),
        );
        loop {
            let message = recv_json(&mut caster);
            match message["event"].as_str() {
                Some("host.client_left") => left += 1,
                Some("ok") => break,
                _ => {}
            }
        }
        if left == SLOW_READERS {
            break;
        }
    }
    assert_eq!(left, SLOW_READERS, "the slow readers were not all closed");

    let (rss_now, peak) = rss(server.pid());
    let worst = worst_mib << 20;
    eprintln!(
        "every bound at once: RSS {} KiB, peak {} KiB; logged worst case {worst_mib} MiB",
        rss_now >> 10,
        peak >> 10
    );
    assert!(
        peak <= worst,
        "peak RSS {peak} over the logged worst case {worst}"
    );
    // Everything held is still served or answered.
    let (mut bystander, _) = open(port);
    assert_pong(&mut bystander);
    stop.store(true, Ordering::SeqCst);
    drop(silent.join().expect("the silent host"));
    for reader in pending {
        drop(reader.join().expect("a pending client"));
    }
}
