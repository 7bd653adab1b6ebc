//! SPEC §10 across a cluster: two tether nodes over a real redis-server
//! (started here on a free loopback port, stopped by PID). Offsets and
//! epochs are the cluster's, a client recovers on either node, and
//! `history` answers alike everywhere.

mod common;

use common::cluster::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const ROOM: &str = "r";

fn two_history_nodes(size: usize, ttl_s: u64) -> (Redis, Server, Server) {
    let redis = Redis::start(None);
    let a = history_node(&redis, "a", size, ttl_s);
    let b = history_node(&redis, "b", size, ttl_s);
    wait_health(&a, "two nodes", |h| h["cluster"]["nodes"] == 2);
    (redis, a, b)
}

/// A client that may publish to the room without being in it.
fn publisher(server: &Server, sub: &str) -> Ws {
    let token = server.token(sub, &["publish", "room:r"], &[], None, "1h");
    open_authed(server.port(), &token).0
}

/// A client in the room by its token.
fn listener(server: &Server, sub: &str) -> Ws {
    let token = server.token(sub, &[], &[ROOM], None, "1h");
    open_authed(server.port(), &token).0
}

fn send(ws: &mut Ws, data: Value) {
    let message = json!({"event":"publish","data":{"room":ROOM,"event":"tick","data":data}});
    let reply = request(ws, &message);
    assert_eq!(reply["event"], "published", "{reply}");
    assert_eq!(reply["data"]["cluster"], true, "{reply}");
}

fn subscribe(ws: &mut Ws, since: Option<(u64, &str)>) -> Value {
    subscribe_since(ws, ROOM, since)
}

/// The next message that is no presence notice.
fn next_but_presence(ws: &mut Ws) -> Value {
    loop {
        let m = recv_json(ws);
        if !m["event"]
            .as_str()
            .is_some_and(|e| e.starts_with("presence."))
        {
            return m;
        }
    }
}

fn epoch_of(position: &Value) -> String {
    let epoch = position["epoch"].as_str().unwrap_or_default().to_string();
    assert!(!epoch.is_empty(), "no epoch: {position}");
    epoch
}

/// The next `n` room messages as (offset, data); presence notices between
/// them are passed over.
fn ticks(ws: &mut Ws, n: usize) -> Vec<(u64, Value)> {
    let mut got = Vec::new();
    while got.len() < n {
        let m = recv_json(ws);
        if m["event"]
            .as_str()
            .is_some_and(|e| e.starts_with("presence."))
        {
            continue;
        }
        assert_eq!(m["event"], "tick", "{m}");
        got.push((m["offset"].as_u64().unwrap_or(0), m["data"].clone()));
    }
    got
}

fn numbered(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Value)> {
    range.map(|n| (n, json!(n))).collect()
}

/// Lets the publish scripts already sent run before a read on another node.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn offsets_are_the_clusters_and_every_node_delivers_them_in_order() {
    let (_redis, a, b) = two_history_nodes(100, 300);
    let mut on_a = listener(&a, "la");
    let mut on_b = listener(&b, "lb");
    let pos_a = subscribe(&mut on_a, None);
    let pos_b = subscribe(&mut on_b, None);
    assert_eq!(pos_a["offset"], 0, "{pos_a}");
    assert_eq!(epoch_of(&pos_a), epoch_of(&pos_b), "one epoch per room");
    let mut pub_a = publisher(&a, "pa");
    let mut pub_b = publisher(&b, "pb");
    for n in 0..20u64 {
        let publisher = if n % 2 == 0 { &mut pub_a } else { &mut pub_b };
        send(publisher, json!(n));
    }
    let seen_a = ticks(&mut on_a, 20);
    let seen_b = ticks(&mut on_b, 20);
    assert_eq!(
        seen_a, seen_b,
        "the same message at the same offset on both nodes"
    );
    let offsets: Vec<u64> = seen_a.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (1..=20).collect::<Vec<_>>());
    for parity in [0, 1] {
        let own: Vec<u64> = seen_a
            .iter()
            .filter_map(|(_, d)| d.as_u64())
            .filter(|d| d % 2 == parity)
            .collect();
        let sorted = {
            let mut s = own.clone();
            s.sort_unstable();
            s
        };
        assert_eq!(own, sorted, "one sender's messages in the order sent");
    }
    // A publisher that is also a member does not get its own message.
    let mut member_pub = {
        let token = a.token("mp", &["publish"], &[ROOM], None, "1h");
        open_authed(a.port(), &token).0
    };
    send(&mut member_pub, json!(100));
    assert_eq!(ticks(&mut on_b, 1), vec![(21, json!(100))]);
    assert_eq!(ticks(&mut on_a, 1), vec![(21, json!(100))]);
    let pong = request(&mut member_pub, &json!({"event":"ping"}));
    assert_eq!(pong["event"], "pong", "{pong}");
}

/// A member of the room on `on` (its epoch) that got message 1, sent by a
/// publisher on `from` (returned too).
fn member_got_one(on: &Server, from: &Server) -> (Ws, String, Ws) {
    let mut m = listener(on, "m");
    let epoch = epoch_of(&subscribe(&mut m, None));
    let mut publisher = publisher(from, "p1");
    send(&mut publisher, json!(1));
    assert_eq!(ticks(&mut m, 1), numbered(1..=1));
    (m, epoch, publisher)
}

/// A client of node a saw offset 1 and left; 2..=5 were published on b;
/// it comes back on b (or a) and recovers them in order.
fn recovers_after_moving(back_to_other: bool) {
    let (_redis, a, b) = two_history_nodes(100, 300);
    let (m, epoch, mut pub_a) = member_got_one(&a, &a);
    drop(m);
    let mut pub_b = publisher(&b, "pb");
    for n in 2..=5 {
        send(&mut pub_b, json!(n));
    }
    settle();
    let back = if back_to_other { &b } else { &a };
    let mut m = listener(back, "m");
    let recovery = subscribe(&mut m, Some((1, &epoch)));
    assert_eq!(
        recovery,
        json!({"room":ROOM,"offset":5,"epoch":epoch,"recovered":true})
    );
    assert_eq!(ticks(&mut m, 4), numbered(2..=5));
    // Live messages go on after the replay.
    send(&mut pub_a, json!(6));
    assert_eq!(ticks(&mut m, 1), numbered(6..=6));
}

#[test]
fn a_client_recovers_on_the_other_node() {
    recovers_after_moving(true);
}

#[test]
fn a_client_recovers_on_its_own_node_what_the_other_published() {
    recovers_after_moving(false);
}

#[test]
fn another_epoch_or_trimmed_messages_are_not_recovered() {
    let (_redis, a, b) = two_history_nodes(3, 300);
    let mut m = listener(&a, "m");
    let epoch = epoch_of(&subscribe(&mut m, None));
    drop(m);
    let mut pub_b = publisher(&b, "pb");
    for n in 1..=10 {
        send(&mut pub_b, json!(n));
    }
    settle();
    let mut m = listener(&a, "m");
    let other = subscribe(&mut m, Some((0, "not-this-epoch")));
    assert_eq!(
        other,
        json!({"room":ROOM,"offset":10,"epoch":epoch,"recovered":false})
    );
    let trimmed = subscribe(&mut m, Some((0, &epoch)));
    assert_eq!(trimmed["recovered"], false, "{trimmed}");
    assert_eq!(
        ticks(&mut m, 3),
        numbered(8..=10),
        "the newest `size` messages"
    );
    let kept = subscribe(&mut m, Some((8, &epoch)));
    assert_eq!(kept["recovered"], true, "{kept}");
    assert_eq!(ticks(&mut m, 2), numbered(9..=10));
}

#[test]
fn expired_messages_are_not_recovered() {
    let (_redis, a, b) = two_history_nodes(100, 1);
    let (mut m, epoch, _pub_b) = member_got_one(&a, &b);
    std::thread::sleep(Duration::from_millis(1500));
    let expired = subscribe(&mut m, Some((0, &epoch)));
    assert_eq!(expired["recovered"], false, "{expired}");
    assert_eq!(expired["offset"], 1, "{expired}");
}

#[test]
fn history_answers_alike_on_either_node() {
    let (_redis, a, b) = two_history_nodes(100, 300);
    let mut pub_a = publisher(&a, "pa");
    for n in 1..=3 {
        send(&mut pub_a, json!(n));
    }
    settle();
    let mut answers = Vec::new();
    for server in [&a, &b] {
        let mut m = listener(server, "h");
        let reply = request(
            &mut m,
            &json!({"event":"history","data":{"room":ROOM,"limit":2}}),
        );
        assert_eq!(reply["event"], "history", "{reply}");
        let data = reply["data"].clone();
        assert_eq!(data["offset"], 3, "{data}");
        let kept = data["messages"].as_array().cloned().unwrap_or_default();
        let offsets: Vec<Value> = kept.into_iter().map(|m| m["offset"].clone()).collect();
        assert_eq!(offsets, [json!(2), json!(3)], "{data}");
        answers.push(data);
    }
    assert_eq!(answers[0], answers[1]);
}

/// `presence` of the room as `ws` sees it: (count, sorted subs).
fn presence(ws: &mut Ws) -> (u64, Vec<String>) {
    send_json(ws, &json!({"event":"presence","data":{"room":ROOM}}));
    let reply = next_but_presence(ws);
    assert_eq!(reply["event"], "presence", "{reply}");
    let mut subs: Vec<String> = reply["data"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["sub"].as_str().unwrap_or_default().to_string())
        .collect();
    subs.sort();
    (reply["data"]["count"].as_u64().unwrap_or(0), subs)
}

/// Asks `presence` until it says `count` members (the other nodes'
/// announcements travel through Redis).
fn presence_becomes(ws: &mut Ws, count: u64) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (n, subs) = presence(ws);
        if n == count {
            return subs;
        }
        assert!(std::time::Instant::now() < deadline, "count {n}: {subs:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The next presence notice: (event, client, sub).
fn notice(ws: &mut Ws) -> (String, String, String) {
    let m = recv_json(ws);
    let event = m["event"].as_str().unwrap_or_default().to_string();
    assert!(event.starts_with("presence."), "{m}");
    let text = |k: &str| m["data"][k].as_str().unwrap_or_default().to_string();
    (event, text("client"), text("sub"))
}

fn client_id(ws: &mut Ws) -> String {
    let me = request(ws, &json!({"event":"whoami"}));
    me["data"]["clientId"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn presence_counts_and_notices_span_the_nodes() {
    let (_redis, a, b) = two_history_nodes(10, 300);
    let mut first = listener(&a, "first");
    let mut second = listener(&a, "second");
    assert_eq!(notice(&mut first).2, "second");
    let mut far = listener(&b, "far");
    let far_id = client_id(&mut far);
    assert!(far_id.starts_with("b."), "{far_id}");
    let (event, client, sub) = notice(&mut first);
    assert_eq!(
        (event.as_str(), client.as_str(), sub.as_str()),
        ("presence.join", far_id.as_str(), "far")
    );
    assert_eq!(notice(&mut second).1, far_id);
    let everyone = vec!["far".to_string(), "first".into(), "second".into()];
    assert_eq!(presence_becomes(&mut first, 3), everyone);
    assert_eq!(presence_becomes(&mut far, 3), everyone);
    drop(far);
    let (event, client, _) = notice(&mut first);
    assert_eq!(
        (event.as_str(), client.as_str()),
        ("presence.leave", far_id.as_str())
    );
    assert_eq!(presence_becomes(&mut second, 2), ["first", "second"]);
    // A room opened on a node later reads who is in it elsewhere.
    let mut late = listener(&b, "late");
    assert_eq!(presence_becomes(&mut late, 3), ["first", "late", "second"]);
}

#[test]
fn a_killed_nodes_members_leave_within_three_heartbeats() {
    let (redis, a, b) = two_history_nodes(10, 300);
    let mut here = listener(&a, "here");
    let mut there = listener(&b, "there");
    let there_id = client_id(&mut there);
    assert_eq!(notice(&mut here).1, there_id);
    assert_eq!(presence_becomes(&mut here, 2), ["here", "there"]);
    b.signal(libc::SIGKILL);
    let killed = std::time::Instant::now();
    let (event, client, _) = notice(&mut here);
    let took = killed.elapsed();
    assert_eq!(
        (event.as_str(), client.as_str()),
        ("presence.leave", there_id.as_str())
    );
    assert!(
        took <= Duration::from_millis(3 * HEARTBEAT_MS + 600),
        "took {took:?}"
    );
    assert_eq!(presence(&mut here), (1, vec!["here".to_string()]));
    // Restarted under its name, the node lists none of its old members.
    std::thread::sleep(Duration::from_millis(2 * HEARTBEAT_MS));
    let _b = history_node(&redis, "b", 10, 300);
    wait_health(&a, "b back", |h| h["cluster"]["nodes"] == 2);
    std::thread::sleep(Duration::from_millis(2 * HEARTBEAT_MS));
    assert_eq!(presence(&mut here), (1, vec!["here".to_string()]));
}

#[test]
fn with_the_broker_down_messages_stay_local_and_reads_say_unknown() {
    let (mut redis, a, _b) = two_history_nodes(10, 300);
    let (mut m, epoch, _) = member_got_one(&a, &a);
    redis.kill();
    wait_health(&a, "degraded", |h| h["status"] == "degraded");
    let unknown = subscribe(&mut m, Some((1, &epoch)));
    assert_eq!(
        unknown,
        json!({"room":ROOM,"offset":0,"epoch":"","recovered":false})
    );
    let reply = request(&mut m, &json!({"event":"history","data":{"room":ROOM}}));
    assert_eq!(
        reply["data"],
        json!({"room":ROOM,"offset":0,"epoch":"","messages":[]}),
        "{reply}"
    );
    let mut local = publisher(&a, "p2");
    send(&mut local, json!(2));
    let live = next_but_presence(&mut m);
    assert_eq!((&live["event"], &live["data"]), (&json!("tick"), &json!(2)));
    assert!(live.get("offset").is_none(), "unnumbered: {live}");
}

#[test]
fn history_of_a_long_room_is_bounded_and_the_link_stays_up() {
    // More messages than one broker reply may list.
    let (_redis, a, b) = two_history_nodes(3000, 300);
    let mut pub_a = publisher(&a, "pa");
    for n in 1..=2100 {
        send(&mut pub_a, json!(n));
    }
    settle();
    let mut m = listener(&b, "h");
    let reply = request(&mut m, &json!({"event":"history","data":{"room":ROOM}}));
    let messages = reply["data"]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(reply["data"]["offset"], 2100, "{}", reply["data"]["offset"]);
    assert_eq!(messages.len(), 1024);
    assert_eq!(messages[0]["offset"], 1077);
    send(&mut pub_a, json!(2101));
    assert_eq!(
        ticks(&mut m, 1),
        numbered(2101..=2101),
        "the broker link is up"
    );
}
