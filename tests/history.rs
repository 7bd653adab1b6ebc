//! SPEC §10 on one node, over real sockets: offsets, recovery after a
//! reconnect, `recovered: false` after a restart and after eviction, a
//! recovery larger than `max_outbound_bytes`, `history`, presence and its
//! notices, and the members-only refusals.

mod common;

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

fn history(size: usize) -> Value {
    json!({
        "limits": { "max_messages_per_minute": 100000 },
        "rooms": { "history": { "size": size } }
    })
}

fn publisher(server: &Server) -> Ws {
    let token = server.token("pub", &["publish"], &["r"], None, "1h");
    open_authed(server.port(), &token).0
}

fn member(server: &Server, sub: &str) -> Ws {
    let token = server.token(sub, &[], &["r"], None, "1h");
    open_authed(server.port(), &token).0
}

/// A publisher, and the epoch of room `r` that member `m` saw before it went.
fn member_gone(server: &Server) -> (Ws, String) {
    let p = publisher(server);
    let mut m = member(server, "m");
    let epoch = subscribe(&mut m, None)["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    drop(m);
    (p, epoch)
}

fn publish(ws: &mut Ws, data: Value) {
    let message = json!({"event":"publish","data":{"room":"r","event":"tick","data":data}});
    let reply = request(ws, &message);
    assert_eq!(reply["event"], "published", "{reply}");
}

fn subscribe(ws: &mut Ws, since: Option<(u64, &str)>) -> Value {
    let mut data = json!({"room": "r"});
    if let Some((offset, epoch)) = since {
        data["since"] = json!({"offset": offset, "epoch": epoch});
    }
    let reply = request(ws, &json!({"event":"subscribe","data":data}));
    assert_eq!(reply["event"], "subscribed", "{reply}");
    reply["data"].clone()
}

fn offsets(ws: &mut Ws, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| {
            let message = recv_json(ws);
            assert_eq!(message["event"], "tick", "{message}");
            message["offset"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn a_client_that_reconnects_recovers_what_it_missed_in_order() {
    let server = Server::start(history(100));
    let mut p = publisher(&server);
    let mut m = member(&server, "m");
    let position = subscribe(&mut m, None);
    let epoch = position["epoch"].as_str().unwrap().to_string();
    assert_eq!(position["offset"], 0);
    publish(&mut p, json!(1));
    let live = recv_json(&mut m);
    assert_eq!(live["offset"], 1, "{live}");
    drop(m);
    for n in 2..=5 {
        publish(&mut p, json!(n));
    }
    let mut m = member(&server, "m");
    let recovery = subscribe(&mut m, Some((1, &epoch)));
    assert_eq!(
        recovery,
        json!({"room":"r","offset":5,"epoch":epoch,"recovered":true})
    );
    let replayed: Vec<Value> = (0..4).map(|_| recv_json(&mut m)).collect();
    let seen: Vec<(&Value, &Value)> = replayed
        .iter()
        .map(|r| (&r["offset"], &r["data"]))
        .collect();
    assert_eq!(
        seen,
        [
            (&json!(2), &json!(2)),
            (&json!(3), &json!(3)),
            (&json!(4), &json!(4)),
            (&json!(5), &json!(5))
        ]
    );
    assert_eq!(replayed[0]["from"], "pub");
    // Live messages go on after the replay.
    publish(&mut p, json!(6));
    assert_eq!(offsets(&mut m, 1), [6]);

    let listed = request(
        &mut m,
        &json!({"event":"history","data":{"room":"r","limit":2}}),
    );
    assert_eq!(listed["data"]["offset"], 6);
    assert_eq!(listed["data"]["epoch"], epoch.as_str());
    let messages = listed["data"]["messages"].as_array().unwrap();
    let kept: Vec<&Value> = messages.iter().map(|m| &m["offset"]).collect();
    assert_eq!(kept, [5, 6]);
    assert_eq!(messages[1]["event"], "tick");
    assert_eq!(messages[1]["from"], "pub");
}

#[test]
fn evicted_messages_and_a_restart_mean_recovered_false() {
    let mut server = Server::start(history(2));
    let (mut p, epoch) = member_gone(&server);
    for n in 1..=5 {
        publish(&mut p, json!(n));
    }
    let mut m = member(&server, "m");
    let recovery = subscribe(&mut m, Some((0, &epoch)));
    assert_eq!(recovery["recovered"], false, "{recovery}");
    assert_eq!(recovery["offset"], 5);
    assert_eq!(offsets(&mut m, 2), [4, 5], "what is left is still sent");
    assert_pong(&mut m);

    // A new process has lost every room's history: another epoch.
    server.stop();
    let server = Server::start(history(2));
    let mut m = member(&server, "m");
    let after = subscribe(&mut m, Some((5, &epoch)));
    assert_eq!(after["recovered"], false, "{after}");
    assert_ne!(after["epoch"], epoch.as_str());
    assert_eq!(after["offset"], 0);
    assert_pong(&mut m);
}

#[test]
fn a_recovery_larger_than_the_outbound_queue_is_a_slow_reader() {
    let mut settings = history(300);
    merge(
        &mut settings,
        json!({"limits": {"max_message_bytes": 4096, "max_outbound_bytes": 16384}}),
    );
    let server = Server::start(settings);
    let (mut p, epoch) = member_gone(&server);
    let filler = "x".repeat(1000);
    for _ in 0..100 {
        publish(&mut p, json!(filler));
    }
    let mut m = member(&server, "m");
    send_json(
        &mut m,
        &json!({"event":"subscribe","data":{"room":"r","since":{"offset":0,"epoch":epoch}}}),
    );
    let code = loop {
        match m.read() {
            Ok(Message::Close(frame)) => break frame.map_or(1005, |f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    };
    assert_eq!(code, 4009);
    assert_pong(&mut p);
    assert_serving(server.port());
}

#[test]
fn presence_counts_members_and_announces_joins_and_leaves() {
    let server = Server::start(json!({"rooms": {"presence": {"enabled": true}}}));
    let mut a = member(&server, "a");
    let mut b = member(&server, "b");
    let joined = recv_json(&mut a);
    assert_eq!(joined["event"], "presence.join", "{joined}");
    assert_eq!(joined["data"]["sub"], "b");
    assert_eq!(joined["data"]["room"], "r");
    let client_b = joined["data"]["client"].clone();
    let presence = request(&mut a, &json!({"event":"presence","data":{"room":"r"}}));
    assert_eq!(presence["data"]["count"], 2, "{presence}");
    let mut subs: Vec<&str> = presence["data"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["sub"].as_str().unwrap())
        .collect();
    subs.sort();
    assert_eq!(subs, ["a", "b"]);
    close_normally(&mut b);
    let left = recv_json(&mut a);
    assert_eq!(
        left,
        json!({"event":"presence.leave","data":{"room":"r","client":client_b,"sub":"b"}})
    );
    let presence = request(&mut a, &json!({"event":"presence","data":{"room":"r"}}));
    assert_eq!(presence["data"]["count"], 1);
}

#[test]
fn history_and_presence_are_for_members_only() {
    let server = Server::start(history(10));
    let token = server.token("outsider", &[], &[], None, "1h");
    let (mut ws, _) = open_authed(server.port(), &token);
    for event in ["history", "presence"] {
        let reply = request(&mut ws, &json!({"event":event,"data":{"room":"r"}}));
        assert_error(&reply, "room_not_allowed");
        let reply = request(&mut ws, &json!({"event":event}));
        assert_error(&reply, "invalid_data");
    }
    let reply = request(
        &mut ws,
        &json!({"event":"subscribe","data":{"room":"r","since":{"offset":0,"epoch":"e"}}}),
    );
    assert_error(&reply, "room_not_allowed");
}

#[test]
fn check_config_prints_and_checks_history_and_presence() {
    let dir = TempDir::new("history-check");
    let settings = json!({"rooms": {"history": {"size": 50}, "presence": {"enabled": true}}});
    let path = dir.write_json("settings.json", &settings);
    let out = run(
        dir.path(),
        &[],
        &["check-config", "--config", path.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective: Value = serde_json::from_slice(&out.stdout).expect("check-config prints JSON");
    assert_eq!(
        effective["rooms"]["history"],
        json!({"size": 50, "ttl_s": 300, "max_bytes": 8388608})
    );
    assert_eq!(
        effective["rooms"]["presence"],
        json!({"enabled": true, "notify_max_members": 100})
    );
    let bad = json!({"rooms": {"history": {"ttl_s": 0, "colour": 1}}});
    let path = dir.write_json("bad.json", &bad);
    let out = run(
        dir.path(),
        &[],
        &["check-config", "--config", path.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(errors.contains("rooms.history.colour"), "{errors}");
}

#[test]
fn sighup_applies_presence_and_keeps_history_until_a_restart() {
    let server = Server::start(history(10));
    let mut next = base_settings();
    merge(&mut next, history(20));
    merge(&mut next, json!({"rooms": {"presence": {"enabled": true}}}));
    std::fs::write(server.config_path(), next.to_string()).unwrap();
    server.signal(libc::SIGHUP);
    let kept = "reload: rooms.history.size changes only at restart";
    assert!(
        server.wait_log(kept, std::time::Duration::from_secs(5)),
        "{:?}",
        server.logs()
    );
    assert!(server.wait_log(
        "rooms.presence.enabled: false -> true",
        std::time::Duration::from_secs(5)
    ));
    let mut a = member(&server, "a");
    let _b = member(&server, "b");
    assert_eq!(recv_json(&mut a)["event"], "presence.join");
}
