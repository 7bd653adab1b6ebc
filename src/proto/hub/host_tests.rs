//! The host link's events, driven through the hub.

use super::testing::{at, cid, drain, hub_for_hosts as hub, join, send, T0};
use crate::proto::hub::Hub;
use crate::proto::rooms::ConnKey;
use serde_json::{json, Value};

#[test]
fn register_forward_reply_and_notices() {
    let mut h = hub();
    join(&mut h, 0, "game", &["host"], &[]);
    drain(&mut h);
    let out = send(
        &mut h,
        0,
        T0,
        json!({"event":"host.register","data":{"events":{"getPlayers":null,"kickPlayer":"admin"}},"requestId":1}),
    );
    assert_eq!(
        out[0].1,
        json!({"event":"host.registered","data":{"events":["getPlayers","kickPlayer"]},"requestId":1})
    );
    join(&mut h, 1, "alice", &[], &["lobby"]);
    let out = drain(&mut h);
    let joined = out
        .iter()
        .find(|(to, m)| *to == 0 && m["event"] == "host.client_joined")
        .unwrap();
    assert_eq!(
        joined.1["data"],
        json!({"client": cid(&h, 1), "sub": "alice", "ip": "127.0.0.1"})
    );

    let out = send(
        &mut h,
        1,
        T0,
        json!({"event":"getPlayers","data":{"page":2},"requestId":"r7"}),
    );
    assert_eq!(out[0].0, 0);
    let request = &out[0].1["data"];
    assert_eq!(out[0].1["event"], "host.request");
    assert_eq!(request["event"], "getPlayers");
    assert_eq!(request["data"], json!({"page":2}));
    assert_eq!(request["sub"], "alice");
    assert_eq!(request["client"], cid(&h, 1));
    let id = request["id"].as_u64().unwrap();

    let out = send(&mut h, 1, T0, json!({"event":"kickPlayer","requestId":2}));
    assert_eq!(out[0].1["data"]["code"], "forbidden");

    let out = send(
        &mut h,
        0,
        T0,
        json!({"event":"host.reply","data":{"id":id,"event":"players","data":[1,2]},"requestId":"a"}),
    );
    assert_eq!(
        out[0],
        (1, json!({"event":"players","data":[1,2],"requestId":"r7"}))
    );
    assert_eq!(
        out[1].1,
        json!({"event":"ok","data":{"delivered":1},"requestId":"a"})
    );
    // A late (repeated) reply is dropped.
    let out = send(
        &mut h,
        0,
        T0,
        json!({"event":"host.reply","data":{"id":id,"event":"players"},"requestId":"b"}),
    );
    assert_eq!(
        out,
        [(
            0,
            json!({"event":"ok","data":{"delivered":0},"requestId":"b"})
        )]
    );

    h.disconnect(1, 1000, T0);
    let out = drain(&mut h);
    assert_eq!(out[0].1["event"], "host.client_left");
    assert_eq!(out[0].1["data"]["code"], 1000);
}

#[test]
fn error_reply_timeout_and_host_gone() {
    let mut h = hub();
    join(&mut h, 0, "bot", &["host"], &[]);
    join(&mut h, 1, "u", &[], &[]);
    drain(&mut h);
    send(
        &mut h,
        0,
        T0,
        json!({"event":"host.register","data":{"events":{"play":null}}}),
    );
    let out = send(&mut h, 1, T0, json!({"event":"play","requestId":1}));
    let id = out[0].1["data"]["id"].as_u64().unwrap();
    let out = send(
        &mut h,
        0,
        T0,
        json!({"event":"host.reply","data":{"id":id,"error":{"code":"not_in_voice","message":"join a channel"}}}),
    );
    assert_eq!(out[0].1["event"], "error");
    assert_eq!(out[0].1["data"]["code"], "not_in_voice");
    assert_eq!(out[0].1["requestId"], 1);

    send(&mut h, 1, T0, json!({"event":"play","requestId":2}));
    assert_eq!(h.deadline(1), Some(1_000));
    h.on_timer(1, at(999));
    assert!(drain(&mut h).is_empty());
    h.on_timer(1, at(1_000));
    let out = drain(&mut h);
    assert_eq!(out[0].1["data"]["code"], "host_timeout");
    assert_eq!(out[0].1["requestId"], 2);

    send(&mut h, 1, at(1_000), json!({"event":"play","requestId":3}));
    h.disconnect(0, 1006, at(1_000));
    let out = drain(&mut h);
    assert_eq!(out[0], (1, out[0].1.clone()));
    assert_eq!(out[0].1["data"]["code"], "host_unavailable");
    assert_eq!(out[0].1["requestId"], 3);
    let out = send(&mut h, 1, at(1_000), json!({"event":"play"}));
    assert_eq!(out[0].1["data"]["code"], "unknown_event");
}

#[test]
fn register_conflicts_are_refused() {
    let mut h = hub();
    join(&mut h, 0, "a", &["host"], &[]);
    join(&mut h, 1, "b", &["admin"], &[]);
    join(&mut h, 2, "c", &[], &[]);
    drain(&mut h);
    send(
        &mut h,
        0,
        T0,
        json!({"event":"host.register","data":{"events":{"x":null}}}),
    );
    for events in [
        json!({"x":null}),
        json!({"ping":null}),
        json!({"host.foo":null}),
    ] {
        let out = send(
            &mut h,
            1,
            T0,
            json!({"event":"host.register","data":{"events":events}}),
        );
        assert_eq!(out[0].1["data"]["code"], "invalid_data", "{events}");
    }
    let out = send(
        &mut h,
        1,
        T0,
        json!({"event":"host.register","data":{"events":{}}}),
    );
    assert_eq!(out[0].1["data"]["events"], json!([]));
    let out = send(
        &mut h,
        2,
        T0,
        json!({"event":"host.register","data":{"events":{}}}),
    );
    assert_eq!(out[0].1["data"]["code"], "forbidden");
}

#[test]
fn broadcast_send_clients_kick_token() {
    let mut h = hub();
    join(&mut h, 0, "game", &["host"], &[]);
    join(&mut h, 1, "p1", &[], &["red"]);
    join(&mut h, 2, "p2", &[], &[]);
    drain(&mut h);
    send(
        &mut h,
        0,
        T0,
        json!({"event":"host.register","data":{"events":{}}}),
    );
    let out = send(
        &mut h,
        0,
        T0,
        json!({"event":"host.broadcast","data":{"event":"playerJoined","data":{"n":1}},"requestId":1}),
    );
    let recipients: Vec<ConnKey> = out
        .iter()
        .filter(|(_, m)| m["event"] == "playerJoined")
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(recipients, [1, 2]);
    assert_eq!(
        out.last().unwrap().1,
        json!({"event":"ok","data":{"delivered":2},"requestId":1})
    );
    let out = send(
        &mut h,
        0,
        T0,
        json!({"event":"host.broadcast","data":{"event":"e","room":"red"},"requestId":2}),
    );
    assert_eq!(out[0], (1, json!({"event":"e","data":null,"room":"red"})));

    let (c1, c2) = (cid(&h, 1), cid(&h, 2));
    // The publish fields, but a client is host.send's, and unknown ones are refused.
    for data in [
        json!({"event":"e","client":c1}),
        json!({"event":"e","colour":"red"}),
    ] {
        let msg = json!({"event":"host.broadcast","data":data,"requestId":1});
        let out = send(&mut h, 0, T0, msg);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].1["data"]["code"], "invalid_data");
    }
    let out = send(
        &mut h,
        0,
        T0,
        json!({"event":"host.send","data":{"client":c2,"event":"dm","data":"hi"},"requestId":3}),
    );
    assert_eq!(out[0], (2, json!({"event":"dm","data":"hi"})));
    let out = send(
        &mut h,
        0,
        T0,
        json!({"event":"host.send","data":{"client":"ffff","event":"dm"},"requestId":4}),
    );
    assert_eq!(out[0].1["data"]["delivered"], 0);

    let out = send(&mut h, 0, T0, json!({"event":"host.clients","requestId":5}));
    let clients = out[0].1["data"]["clients"].as_array().unwrap().clone();
    assert_eq!(clients.len(), 2);
    assert_eq!(clients[0]["sub"], "p1");
    assert_eq!(clients[0]["rooms"], json!(["red"]));
    assert_eq!(clients[0]["connectedAt"], T0.unix);

    let out = send(
        &mut h,
        0,
        T0,
        json!({"event":"host.kick","data":{"client":c1,"reason":"afk"}}),
    );
    assert_eq!(
        out[0],
        (1, json!({"event":"kicked","data":{"reason":"afk"}}))
    );
    assert_eq!(
        out.iter().find(|(_, m)| m.get("close").is_some()).unwrap(),
        &(1, json!({"close": 4010}))
    );
    // Found by fuzzing: a host that kicks itself got an `ok` after its close.
    join(&mut h, 3, "boss", &["admin"], &[]);
    drain(&mut h);
    let c3 = cid(&h, 3);
    let out = send(
        &mut h,
        3,
        T0,
        json!({"event":"host.kick","data":{"client":c3},"requestId":8}),
    );
    let to_boss: Vec<&Value> = out
        .iter()
        .filter(|(k, _)| *k == 3)
        .map(|(_, m)| m)
        .collect();
    assert_eq!(
        to_boss,
        [
            &json!({"event":"kicked","data":{"reason":"kicked by the host"}}),
            &json!({"close": 4010})
        ]
    );

    let out = send(
        &mut h,
        0,
        T0,
        json!({"event":"host.token","data":{"sub":"x","permissions":["admin"]}}),
    );
    assert_eq!(out[0].1["data"]["code"], "forbidden");
    let out = send(
        &mut h,
        0,
        T0,
        json!({"event":"host.token","data":{"sub":"x","rooms":["red"],"ttl":"15m"},"requestId":6}),
    );
    assert_eq!(out[0].1["event"], "host.token");
    assert_eq!(out[0].1["data"]["expiresAt"], T0.unix + 900);
    let token = out[0].1["data"]["token"].as_str().unwrap();
    assert_eq!(&*h.config().auth.verify(token, T0.unix).unwrap().sub, "x");
    let out = send(
        &mut h,
        0,
        T0,
        json!({"event":"host.token","data":{"sub":"x","ttl":60}}),
    );
    assert_eq!(out[0].1["data"]["expiresAt"], T0.unix + 60);
    // Found by fuzzing: a huge numeric ttl overflowed jwt-simple's clock.
    for ttl in [
        json!(u64::MAX),
        json!(10 * 365 * 86400 + 1),
        json!("99999999d"),
    ] {
        let out = send(
            &mut h,
            0,
            T0,
            json!({"event":"host.token","data":{"sub":"x","ttl":ttl},"requestId":7}),
        );
        assert_eq!(out[0].1["data"]["code"], "invalid_data", "ttl {ttl}");
    }
}

#[test]
fn registered_hosts_are_not_rate_limited() {
    let mut h = hub();
    h.cfg.max_messages_per_minute = 5;
    join(&mut h, 0, "game", &["host"], &[]);
    join(&mut h, 1, "p", &[], &[]);
    drain(&mut h);
    send(
        &mut h,
        0,
        T0,
        json!({"event":"host.register","data":{"events":{}}}),
    );
    for n in 0..200 {
        let out = send(
            &mut h,
            0,
            T0,
            json!({"event":"host.broadcast","data":{"event":"tick","data":n},"requestId":n}),
        );
        assert_eq!(out[1].1["event"], "ok", "{n}: {out:?}");
    }
    // Clients still are.
    let codes: Vec<Value> = (0..6)
        .map(|_| send(&mut h, 1, T0, json!({"event":"ping"}))[0].1.clone())
        .collect();
    assert_eq!(codes[5]["data"]["code"], "rate_limited");
}

#[test]
fn re_registering_served_events_does_not_count_twice() {
    let mut h = hub();
    join(&mut h, 0, "game", &["host"], &[]);
    drain(&mut h);
    let events = |permission: &str, n: usize| -> Value {
        (0..n)
            .map(|i| (format!("e{i}"), json!(permission)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let register = |h: &mut Hub, events: Value| {
        send(
            h,
            0,
            T0,
            json!({"event":"host.register","data":{"events":events}}),
        )[0]
        .1["event"]
            .clone()
    };
    assert_eq!(register(&mut h, events("read", 200)), "host.registered");
    assert_eq!(register(&mut h, events("admin", 200)), "host.registered");
    assert_eq!(register(&mut h, events("read", 256)), "host.registered");
    assert_eq!(register(&mut h, events("read", 257)), "error");
}

#[test]
fn clients_lists_authenticated_non_hosts() {
    let mut h = hub();
    join(&mut h, 0, "game", &["host"], &[]);
    join(&mut h, 1, "p", &[], &[]);
    h.open(2, (3 << 24) | 2, "127.0.0.1".parse().unwrap(), T0, None);
    drain(&mut h);
    send(
        &mut h,
        0,
        T0,
        json!({"event":"host.register","data":{"events":{}}}),
    );
    let out = send(&mut h, 0, T0, json!({"event":"host.clients"}));
    let clients = out[0].1["data"]["clients"].as_array().unwrap().clone();
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert_eq!(clients[0]["id"], cid(&h, 1));
}
