//! SPEC §10 across a cluster where history misses messages: a room that got
//! messages while the broker was down gets a new epoch when its node
//! rejoins, and a gap in the offsets is filled exactly as the live path
//! delivers (kind and sender kept). Two tether nodes over a real
//! redis-server of the test's own (stopped by PID).

mod common;

use common::cluster::*;
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const ROOM: &str = "r";

fn two_history_nodes(redis: &Redis) -> (Server, Server) {
    let a = history_node(redis, "a", 100, 300);
    let b = history_node(redis, "b", 100, 300);
    wait_health(&a, "two nodes", |h| h["cluster"]["nodes"] == 2);
    (a, b)
}

/// One command to the test's redis-server (after AUTH with `password`);
/// its reply as text.
fn redis_cli(redis: &Redis, password: Option<&str>, args: &[&[u8]]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", redis.port)).expect("redis connect");
    let mut out = Vec::new();
    let auth: [&[u8]; 2] = [b"AUTH", password.unwrap_or_default().as_bytes()];
    let commands: Vec<&[&[u8]]> = match password {
        Some(_) => vec![&auth, args],
        None => vec![args],
    };
    for command in &commands {
        out.extend(format!("*{}\r\n", command.len()).bytes());
        for arg in command.iter() {
            out.extend(format!("${}\r\n", arg.len()).bytes());
            out.extend_from_slice(arg);
            out.extend(b"\r\n");
        }
    }
    stream.write_all(&out).expect("redis write");
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// A client in the room by its token, with `permissions`.
fn in_room(server: &Server, sub: &str, permissions: &[&str]) -> Ws {
    let token = server.token(sub, permissions, &[ROOM], None, "1h");
    open_authed(server.port(), &token).0
}

fn send(ws: &mut Ws, data: Value) {
    let message = json!({"event":"publish","data":{"room":ROOM,"event":"tick","data":data}});
    send_json(ws, &message);
    let reply = next_but_notices(ws);
    assert_eq!(reply["event"], "published", "{reply}");
}

fn subscribe(ws: &mut Ws, since: Option<(u64, &str)>) -> Value {
    subscribe_since(ws, ROOM, since)
}

/// The next `n` room messages as (offset, data), then a ping answered
/// first: nothing more came.
fn ticks(ws: &mut Ws, n: usize) -> Vec<(u64, Value)> {
    let got = (0..n)
        .map(|_| {
            let m = next_but_notices(ws);
            assert_eq!(m["event"], "tick", "{m}");
            (m["offset"].as_u64().unwrap_or(0), m["data"].clone())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    send_json(ws, &json!({"event":"ping"}));
    let pong = next_but_notices(ws);
    assert_eq!(pong["event"], "pong", "one message too many: {pong}");
    got
}

fn epoch_of(position: &Value) -> String {
    let epoch = position["epoch"].as_str().unwrap_or_default().to_string();
    assert!(!epoch.is_empty(), "no epoch: {position}");
    epoch
}

#[test]
fn a_room_that_got_messages_while_the_broker_was_down_gets_a_new_epoch() {
    let redis = Redis::start(Some(REDIS_PASSWORD));
    let (a, b) = two_history_nodes(&redis);
    let mut m = in_room(&b, "m", &[]);
    let epoch = epoch_of(&subscribe(&mut m, None));
    let mut on_a = in_room(&a, "la", &["publish"]);
    send(&mut on_a, json!(1));
    assert_eq!(ticks(&mut m, 1), [(1, json!(1))]);
    drop(m);
    // The broker turns both nodes away for a while.
    let locked = Some("locked-out-pw");
    let set_password = |from: Option<&str>, to: &str| {
        let args: [&[u8]; 4] = [b"CONFIG", b"SET", b"requirepass", to.as_bytes()];
        let reply = redis_cli(&redis, from, &args);
        assert!(reply.ends_with("+OK\r\n"), "{reply}");
    };
    set_password(Some(REDIS_PASSWORD), "locked-out-pw");
    for kind in [&b"normal"[..], b"pubsub"] {
        redis_cli(&redis, locked, &[b"CLIENT", b"KILL", b"TYPE", kind]);
    }
    wait_health(&a, "broker down", |h| h["cluster"]["broker"] == "down");
    let mut listener = in_room(&a, "la2", &[]);
    send(&mut on_a, json!(2));
    assert_eq!(ticks(&mut listener, 1), [(0, json!(2))], "unnumbered");
    set_password(locked, REDIS_PASSWORD);
    for node in [&a, &b] {
        wait_health(node, "broker up", |h| h["cluster"]["broker"] == "up");
    }
    std::thread::sleep(Duration::from_millis(300));
    // 2 is in no history: a recovery from before the outage is not whole.
    let mut m = in_room(&b, "m", &[]);
    let back = subscribe(&mut m, Some((1, &epoch)));
    assert_eq!(back["recovered"], false, "{back}");
    assert_ne!(epoch_of(&back), epoch, "{back}");
    let again = subscribe(
        &mut m,
        Some((back["offset"].as_u64().unwrap(), &epoch_of(&back))),
    );
    assert_eq!(again["recovered"], true, "the new epoch recovers: {again}");
}

#[test]
fn a_gap_is_filled_as_the_live_path_delivers() {
    let redis = Redis::start(None);
    let (_a, b) = two_history_nodes(&redis);
    let mut listener = in_room(&b, "l", &[]);
    subscribe(&mut listener, None);
    let mut host = in_room(&b, "h", &["host"]);
    let register =
        json!({"event":"host.register","data":{"events":{"play":null}},"requestId":"reg"});
    assert_eq!(next_reply(&mut host, &register)["event"], "host.registered");
    let mut sender = in_room(&b, "s", &["publish"]);
    // 1 a broadcast (clients only), 2 the sender's publish (not to it).
    let broadcast = json!({"event":"host.broadcast","data":{"room":ROOM,"event":"tick","data":1},"requestId":"b"});
    assert_eq!(next_reply(&mut host, &broadcast)["event"], "ok");
    assert_eq!(ticks(&mut sender, 1), [(1, json!(1))]);
    send(&mut sender, json!(2));
    assert_eq!(ticks(&mut listener, 2), [(1, json!(1)), (2, json!(2))]);
    assert_eq!(ticks(&mut host, 1), [(2, json!(2))]);
    // Node b is made to see offset 0 of another epoch, so that the next
    // offset (3) skips 1 and 2, which it fetches from the stream.
    let meta = format!("tether:hist:{ROOM}");
    redis_cli(&redis, None, &[b"HSET", meta.as_bytes(), b"e", b"moved"]);
    let seed =
        format!("0 moved -\n{{\"event\":\"tick\",\"data\":0,\"room\":\"{ROOM}\",\"offset\":0}}");
    let mut envelope = vec![2u8];
    envelope.extend(b"zzP");
    envelope.extend((ROOM.len() as u16).to_be_bytes());
    envelope.extend(ROOM.bytes());
    envelope.extend(seed.bytes());
    let channel = format!("tether:room:{ROOM}");
    redis_cli(&redis, None, &[b"PUBLISH", channel.as_bytes(), &envelope]);
    for ws in [&mut listener, &mut host, &mut sender] {
        assert_eq!(ticks(ws, 1), [(0, json!(0))]);
    }
    // 3 from a client outside the room (members get the gap before any reply).
    let token = b.token("p", &["publish", "room:r"], &[], None, "1h");
    send(&mut open_authed(b.port(), &token).0, json!(3));
    let gap = [(1, json!(1)), (2, json!(2)), (3, json!(3))];
    assert_eq!(ticks(&mut listener, 3), gap);
    assert_eq!(ticks(&mut host, 2), gap[1..], "no broadcast to a host");
    let not_own = [gap[0].clone(), gap[2].clone()];
    assert_eq!(ticks(&mut sender, 2), not_own, "not its own message");
}

/// The reply to `message` (room messages and notices before it passed over).
fn next_reply(ws: &mut Ws, message: &Value) -> Value {
    send_json(ws, message);
    loop {
        let m = next_but_notices(ws);
        if m["event"] != "tick" {
            return m;
        }
    }
}

#[test]
fn a_publish_lost_with_the_command_link_reaches_local_members_once() {
    let redis = Redis::start(None);
    let (a, _b) = two_history_nodes(&redis);
    let mut listener = in_room(&a, "l", &[]);
    subscribe(&mut listener, None);
    let token = a.token("p", &["publish", "room:r"], &[], None, "1h");
    let mut publisher = open_authed(a.port(), &token).0;
    send(&mut publisher, json!(1));
    assert_eq!(ticks(&mut listener, 1), [(1, json!(1))]);
    // The publish script waits in Redis (writes paused) when the command
    // links are cut: it never runs, and no echo comes.
    let pause = redis_cli(&redis, None, &[b"CLIENT", b"PAUSE", b"10000", b"WRITE"]);
    assert!(pause.ends_with("+OK\r\n"), "{pause}");
    send(&mut publisher, json!(2));
    std::thread::sleep(Duration::from_millis(300));
    redis_cli(&redis, None, &[b"CLIENT", b"KILL", b"TYPE", b"normal"]);
    redis_cli(&redis, None, &[b"CLIENT", b"UNPAUSE"]);
    assert_eq!(ticks(&mut listener, 1), [(0, json!(2))], "unnumbered, once");
    wait_health(&a, "broker up", |h| h["cluster"]["broker"] == "up");
    send(&mut publisher, json!(3));
    let next = ticks(&mut listener, 1);
    assert_eq!(next[0].1, json!(3), "{next:?}");
}
