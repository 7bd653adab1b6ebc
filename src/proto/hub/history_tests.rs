//! History, recovery and presence through the hub's events, with synthetic time.

use super::testing::{at, cid, drain, hub_with_features, join, send, T0};
use super::Hub;
use super::{PresenceConfig, RoomFeatures};
use crate::proto::history::HistoryConfig;
use serde_json::{json, Value};

fn features(size: usize, presence: bool) -> RoomFeatures {
    RoomFeatures {
        history: HistoryConfig {
            size,
            ttl_ms: 60_000,
            max_bytes: 1 << 20,
            epoch_tag: 3,
        },
        presence: PresenceConfig {
            enabled: presence,
            notify_max_members: 2,
        },
    }
}

/// Opens session `key` with a token for these rooms, dropping its greeting.
fn enter(h: &mut Hub, key: usize, sub: &str, permissions: &[&str], rooms: &[&str]) {
    join(h, key, sub, permissions, rooms);
    drain(h);
}

fn publish(n: u64) -> Value {
    json!({"event":"publish","data":{"room":"r","event":"tick","data":n}})
}

fn events(out: &[(usize, Value)], to: usize) -> Vec<Value> {
    out.iter()
        .filter(|(k, _)| *k == to)
        .map(|(_, m)| m.clone())
        .collect()
}

#[test]
fn room_messages_carry_offsets_and_a_resubscribe_recovers_them_in_order() {
    let mut h = hub_with_features(features(10, false));
    enter(&mut h, 1, "pub", &["publish"], &["r"]);
    enter(&mut h, 2, "sub", &[], &["r"]);
    let sub = send(
        &mut h,
        2,
        T0,
        json!({"event":"subscribe","data":{"room":"r"}}),
    );
    let epoch = sub[0].1["data"]["epoch"].as_str().unwrap().to_string();
    assert_eq!(sub[0].1["data"]["offset"], 0, "{sub:?}");
    let out = send(&mut h, 1, at(1), publish(1));
    assert_eq!(events(&out, 2)[0]["offset"], 1);
    h.disconnect(2, 1006, at(2));
    for n in 2..=4 {
        send(&mut h, 1, at(n), publish(n));
    }
    enter(&mut h, 2, "sub", &[], &["r"]);
    let since = json!({"event":"subscribe","data":{"room":"r","since":{"offset":1,"epoch":epoch}}});
    let out = events(&send(&mut h, 2, at(5), since), 2);
    assert_eq!(out[0]["event"], "subscribed");
    assert_eq!(
        out[0]["data"],
        json!({"room":"r","offset":4,"epoch":epoch,"recovered":true})
    );
    let replayed: Vec<&Value> = out[1..].iter().map(|m| &m["offset"]).collect();
    assert_eq!(replayed, [2, 3, 4]);
    assert_eq!(out[1]["data"], 2);
    assert_eq!(out[1]["from"], "pub");

    let other = json!({"event":"subscribe","data":{"room":"r","since":{"offset":1,"epoch":"x"}}});
    let out = send(&mut h, 2, at(6), other);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1["data"]["recovered"], false);
    let bad = json!({"event":"subscribe","data":{"room":"r","since":{"offset":"1"}}});
    assert_eq!(
        send(&mut h, 2, at(6), bad)[0].1["data"]["code"],
        "invalid_data"
    );
}

#[test]
fn history_lists_the_newest_messages_to_members_only() {
    let mut h = hub_with_features(features(3, false));
    enter(&mut h, 1, "pub", &["publish"], &["r"]);
    enter(&mut h, 2, "outsider", &[], &[]);
    for n in 1..=5 {
        send(&mut h, 1, at(n), publish(n));
    }
    let out = send(
        &mut h,
        1,
        at(9),
        json!({"event":"history","data":{"room":"r","limit":2}}),
    );
    let data = &out[0].1["data"];
    assert_eq!(data["offset"], 5);
    let offsets: Vec<&Value> = data["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["offset"])
        .collect();
    assert_eq!(offsets, [4, 5]);
    assert_eq!(data["messages"][0]["event"], "tick");
    let all = send(
        &mut h,
        1,
        at(9),
        json!({"event":"history","data":{"room":"r"}}),
    );
    assert_eq!(all[0].1["data"]["messages"].as_array().unwrap().len(), 3);
    for event in ["history", "presence"] {
        let out = send(&mut h, 2, at(9), json!({"event":event,"data":{"room":"r"}}));
        assert_eq!(out[0].1["data"]["code"], "room_not_allowed", "{event}");
    }
}

#[test]
fn history_off_keeps_messages_as_they_were() {
    let mut h = hub_with_features(features(0, false));
    enter(&mut h, 1, "pub", &["publish"], &["r"]);
    enter(&mut h, 2, "sub", &[], &["r"]);
    let out = send(&mut h, 1, at(1), publish(1));
    assert_eq!(
        events(&out, 2)[0],
        json!({"event":"tick","data":1,"room":"r","from":"pub"})
    );
    let sub = send(
        &mut h,
        2,
        T0,
        json!({"event":"subscribe","data":{"room":"r"}}),
    );
    assert_eq!(sub[0].1["data"], json!({"room":"r"}));
}

#[test]
fn presence_counts_members_and_small_rooms_hear_joins_and_leaves() {
    let mut h = hub_with_features(features(0, true));
    enter(&mut h, 1, "a", &["room:*"], &[]);
    let a = cid(&h, 1);
    send(
        &mut h,
        1,
        T0,
        json!({"event":"subscribe","data":{"room":"r"}}),
    );
    enter(&mut h, 2, "b", &["room:*"], &[]);
    let b = cid(&h, 2);
    let out = send(
        &mut h,
        2,
        T0,
        json!({"event":"subscribe","data":{"room":"r"}}),
    );
    let notice = json!({"event":"presence.join","data":{"room":"r","client":b,"sub":"b"}});
    assert_eq!(events(&out, 1), [notice]);
    let out = send(
        &mut h,
        1,
        T0,
        json!({"event":"presence","data":{"room":"r"}}),
    );
    let data = &out[0].1["data"];
    assert_eq!(data["count"], 2);
    let mut listed: Vec<&str> = data["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["sub"].as_str().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, ["a", "b"]);
    // A third member: over notify_max_members (2), nobody is told.
    enter(&mut h, 3, "c", &[], &["r"]);
    assert!(send(&mut h, 3, T0, json!({"event":"ping"})).len() == 1);
    h.disconnect(3, 1000, T0);
    let left = send(
        &mut h,
        2,
        T0,
        json!({"event":"unsubscribe","data":{"room":"r"}}),
    );
    let notice = json!({"event":"presence.leave","data":{"room":"r","client":b,"sub":"b"}});
    assert_eq!(events(&left, 1), [notice]);
    h.disconnect(1, 1000, T0);
    assert!(h.out.actions.is_empty(), "nobody left to tell about {a}");
}
