//! The host link's bounds, through the hub: `host.clients` pages, the
//! number of hosts and their permissions, and a host losing `host`.

use super::testing::{drain, hub_for_hosts as hub, join, mint, register, send, T0};
use crate::proto::hub::Hub;
use crate::proto::rooms::ConnKey;
use serde_json::{json, Value};

#[test]
fn clients_come_in_pages_that_fit_the_reply_budget() {
    let mut h = hub();
    join(&mut h, 0, "game", &["host"], &[]);
    for key in 1..=30 {
        join(&mut h, key, &format!("player{key:02}"), &[], &["lobby"]);
    }
    drain(&mut h);
    register(&mut h, 0, json!({}));
    // Small lists: everything in one reply, as before (and no next page).
    let out = send(&mut h, 0, T0, json!({"event":"host.clients"}));
    assert_eq!(out[0].1["data"]["clients"].as_array().unwrap().len(), 30);
    assert_eq!(out[0].1["data"]["next"], Value::Null);
    assert_eq!(out[0].1["data"]["total"], 30);
    // A budget of about four entries: pages of at most that, which together
    // list every client once.
    h.cfg.max_reply_bytes = 600;
    let mut seen = Vec::new();
    let mut offset = json!(0);
    for _ in 0..30 {
        let out = send(
            &mut h,
            0,
            T0,
            json!({"event":"host.clients","data":{"offset":offset},"requestId":1}),
        );
        let data = &out[0].1["data"];
        let page = data["clients"].as_array().unwrap();
        assert!(!page.is_empty() && page.len() < 6, "{data}");
        assert!(serde_json::to_vec(page).unwrap().len() <= 600);
        assert_eq!(data["total"], 30);
        seen.extend(page.iter().map(|c| c["sub"].as_str().unwrap().to_string()));
        offset = data["next"].clone();
        if offset.is_null() {
            break;
        }
    }
    let expected: Vec<String> = (1..=30).map(|k| format!("player{k:02}")).collect();
    assert_eq!(seen, expected);
    // A limit: that many at most; an entry over the budget still comes alone.
    let out = send(
        &mut h,
        0,
        T0,
        json!({"event":"host.clients","data":{"limit":2}}),
    );
    assert_eq!(out[0].1["data"]["clients"].as_array().unwrap().len(), 2);
    h.cfg.max_reply_bytes = 10;
    let out = send(&mut h, 0, T0, json!({"event":"host.clients"}));
    assert_eq!(out[0].1["data"]["clients"].as_array().unwrap().len(), 1);
    for bad in [
        json!({"limit":0}),
        json!({"offset":"x"}),
        json!({"page":1}),
        json!(5),
    ] {
        let out = send(&mut h, 0, T0, json!({"event":"host.clients","data":bad}));
        assert_eq!(out[0].1["data"]["code"], "invalid_data", "{out:?}");
    }
}

#[test]
fn a_host_that_loses_the_host_permission_is_a_host_no_more() {
    let mut h = hub();
    h.cfg.max_messages_per_minute = 5;
    join(&mut h, 0, "game", &["host"], &[]);
    join(&mut h, 1, "other", &["host"], &[]);
    join(&mut h, 2, "p", &[], &[]);
    drain(&mut h);
    register(&mut h, 0, json!({"play":null}));
    register(&mut h, 1, json!({}));
    send(&mut h, 2, T0, json!({"event":"play","requestId":"r1"}));
    let token = mint(&h, "game", &["players.view"], &[], 3600, T0.unix);
    let out = send(
        &mut h,
        0,
        T0,
        json!({"event":"auth","data":{"token":token}}),
    );
    let of = |to: ConnKey, event: &str| out.iter().find(|(k, m)| *k == to && m["event"] == event);
    assert!(of(0, "authenticated").is_some(), "{out:?}");
    // Its pending request fails as when a host leaves.
    let failed = of(2, "error").expect("the request fails");
    assert_eq!(failed.1["data"]["code"], "host_unavailable");
    assert_eq!(failed.1["requestId"], "r1");
    // The other host now hears of it as a client.
    assert_eq!(
        of(1, "host.client_joined").unwrap().1["data"]["sub"],
        "game"
    );
    // Its events are gone, and so is its role.
    let out = send(&mut h, 2, T0, json!({"event":"play","requestId":"r2"}));
    assert_eq!(out[0].1["data"]["code"], "unknown_event");
    assert!(!h.hosts().is_host(0));
    let out = send(&mut h, 0, T0, json!({"event":"host.clients"}));
    assert_eq!(out[0].1["data"]["code"], "forbidden");
    // And it is rate limited like any client (`host.clients` above counted).
    let codes: Vec<Value> = (0..5)
        .map(|_| send(&mut h, 0, T0, json!({"event":"ping"}))[0].1["event"].clone())
        .collect();
    assert_eq!(codes[4], "error", "{codes:?}");
    // A re-auth that keeps `host` (or `admin`) keeps the role.
    let token = mint(&h, "other", &["admin"], &[], 3600, T0.unix);
    send(
        &mut h,
        1,
        T0,
        json!({"event":"auth","data":{"token":token}}),
    );
    assert!(h.hosts().is_host(1));
}

#[test]
fn permissions_of_served_events_are_bounded() {
    let mut h = hub();
    join(&mut h, 0, "game", &["host"], &[]);
    drain(&mut h);
    let register = |h: &mut Hub, permission: String| {
        send(
            h,
            0,
            T0,
            json!({"event":"host.register","data":{"events":{"e":permission}}}),
        )[0]
        .1
        .clone()
    };
    assert_eq!(
        register(&mut h, "p".repeat(256))["event"],
        "host.registered"
    );
    let refused = register(&mut h, "p".repeat(257));
    assert_eq!(refused["data"]["code"], "invalid_data", "{refused}");
}

#[test]
fn hosts_are_bounded_in_number() {
    use crate::proto::host_link::MAX_HOSTS;
    let mut h = hub();
    for key in 0..=MAX_HOSTS {
        join(&mut h, key, &format!("h{key}"), &["host"], &[]);
    }
    drain(&mut h);
    let register = json!({"event":"host.register","data":{"events":{}}});
    for key in 0..MAX_HOSTS {
        assert_eq!(
            send(&mut h, key, T0, register.clone())[0].1["event"],
            "host.registered"
        );
    }
    let refused = send(&mut h, MAX_HOSTS, T0, register.clone());
    assert_eq!(refused[0].1["data"]["code"], "invalid_data", "{refused:?}");
    // A registered host may still register more events; one that leaves frees a place.
    assert_eq!(
        send(&mut h, 0, T0, register.clone())[0].1["event"],
        "host.registered"
    );
    h.disconnect(0, 1000, T0);
    drain(&mut h);
    assert_eq!(
        send(&mut h, MAX_HOSTS, T0, register)[0].1["event"],
        "host.registered"
    );
}
