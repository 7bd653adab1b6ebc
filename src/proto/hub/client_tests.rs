//! The hub's own events: connect, auth, rooms, publish, rate limits.

use super::testing::{drain, hub_with, mint};
use super::*;
use std::collections::BTreeMap;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const T0: Now = Now {
    ms: 1_000,
    unix: 1_800_000_000,
};

fn at(ms_later: u64) -> Now {
    Now {
        ms: T0.ms + ms_later,
        unix: T0.unix + ms_later / 1000,
    }
}

fn hub() -> Hub {
    let auth = Authenticator::new(
        SECRET,
        None,
        None,
        Some("password1"),
        &["admin".into()],
        BTreeMap::new(),
    );
    hub_with(auth, 60, 5_000)
}

fn token(h: &Hub, sub: &str, permissions: &[&str], rooms: &[&str], ttl_s: u64) -> String {
    mint(h, sub, permissions, rooms, ttl_s, T0.unix)
}

fn send(h: &mut Hub, key: ConnKey, now: Now, text: &str) -> Vec<(ConnKey, serde_json::Value)> {
    h.on_text(key, now, text);
    drain(h)
}

fn open_authed(h: &mut Hub, key: ConnKey, t: &str) {
    h.open(
        key,
        100 + key as u64,
        "127.0.0.1".parse().unwrap(),
        T0,
        None,
        "",
    );
    drain(h);
    let out = send(
        h,
        key,
        T0,
        &format!(r#"{{"event":"auth","data":{{"token":"{t}"}}}}"#),
    );
    assert_eq!(out[0].1["event"], "authenticated", "{out:?}");
}

#[test]
fn connected_then_auth_timeout() {
    let mut h = hub();
    h.open(3, 0x2a, "127.0.0.1".parse().unwrap(), T0, None, "");
    let out = drain(&mut h);
    assert_eq!(out[0].1["event"], "connected");
    assert_eq!(out[0].1["data"]["clientId"], "2a");
    assert_eq!(out[0].1["data"]["authenticated"], false);
    assert_eq!(h.deadline(3), Some(T0.ms + 10_000));
    h.on_timer(3, at(9_999));
    assert!(drain(&mut h).is_empty());
    h.on_timer(3, at(10_000));
    let out = drain(&mut h);
    assert_eq!(out[0].1["data"]["code"], "auth_timeout");
    assert_eq!(out[1].1["close"], 4002);
    assert!(h.session(3).is_none());
}

#[test]
fn handshake_token_authenticates_at_once() {
    let mut h = hub();
    let t = token(&h, "alice", &[], &["lobby"], 60);
    let identity = h.config().auth.verify(&t, T0.unix).unwrap();
    h.open(0, 1, "127.0.0.1".parse().unwrap(), T0, Some(identity), "");
    let out = drain(&mut h);
    assert_eq!(out[0].1["data"]["authenticated"], true);
    assert_eq!(out[1].1["event"], "authenticated");
    assert_eq!(out[1].1["data"]["rooms"], serde_json::json!(["lobby"]));
    assert_eq!(out[1].1["data"]["expiresAt"], T0.unix + 60);
}

#[test]
fn only_auth_and_ping_before_auth() {
    let mut h = hub();
    h.open(0, 1, "127.0.0.1".parse().unwrap(), T0, None, "");
    drain(&mut h);
    let out = send(&mut h, 0, T0, r#"{"event":"ping","requestId":5}"#);
    assert_eq!(out[0].1["event"], "pong");
    assert_eq!(out[0].1["data"]["time"], T0.unix);
    assert_eq!(out[0].1["requestId"], 5);
    for event in ["whoami", "subscribe", "nope"] {
        let out = send(
            &mut h,
            0,
            T0,
            &format!(r#"{{"event":"{event}","requestId":"r"}}"#),
        );
        assert_eq!(out[0].1["data"]["code"], "not_authenticated");
        assert_eq!(out[0].1["requestId"], "r");
    }
    let out = send(&mut h, 0, T0, r#"{"event":"auth","data":{"nothing":1}}"#);
    assert_eq!(out[0].1["data"]["code"], "invalid_data");
    let out = send(&mut h, 0, T0, "{oops");
    assert_eq!(out[0].1["data"]["code"], "invalid_json");
}

#[test]
fn bad_password_closes_4001_good_one_authenticates() {
    let mut h = hub();
    h.open(0, 1, "127.0.0.1".parse().unwrap(), T0, None, "");
    h.open(1, 2, "127.0.0.1".parse().unwrap(), T0, None, "");
    drain(&mut h);
    let out = send(
        &mut h,
        0,
        T0,
        r#"{"event":"auth","data":{"password":"wrong"},"requestId":1}"#,
    );
    assert_eq!(out[0].1["data"]["code"], "auth_failed");
    assert_eq!(out[0].1["requestId"], 1);
    assert_eq!(out[1].1["close"], 4001);
    let out = send(
        &mut h,
        1,
        T0,
        r#"{"event":"auth","data":{"password":"password1"}}"#,
    );
    assert_eq!(out[0].1["data"]["sub"], "password");
    assert_eq!(
        out[0].1["data"]["permissions"],
        serde_json::json!(["admin"])
    );
    assert_eq!(out[0].1["data"]["expiresAt"], serde_json::Value::Null);
    assert_eq!(h.stats.auth_failures, 1);
}

#[test]
fn token_expiry_closes_4003_unless_refreshed() {
    let mut h = hub();
    let short = token(&h, "bob", &[], &[], 30);
    open_authed(&mut h, 0, &short);
    assert_eq!(h.deadline(0), Some(T0.ms + 30_000));
    // A fresh token before expiry extends the session.
    let fresh = token(&h, "bob", &[], &[], 120);
    let out = send(
        &mut h,
        0,
        at(20_000),
        &format!(r#"{{"event":"auth","data":{{"token":"{fresh}"}}}}"#),
    );
    assert_eq!(out[0].1["event"], "authenticated");
    h.on_timer(0, at(30_000));
    assert!(drain(&mut h).is_empty());
    h.on_timer(0, at(120_000));
    let out = drain(&mut h);
    assert_eq!(out[0].1["data"]["code"], "token_expired");
    assert_eq!(out[1].1["close"], 4003);
}

#[test]
fn rooms_subscribe_publish() {
    let mut h = hub();
    let a = token(&h, "a", &["publish", "room:project_*"], &["lobby"], 600);
    let b = token(&h, "b", &[], &["lobby"], 600);
    let c = token(&h, "c", &["publish"], &[], 600);
    open_authed(&mut h, 0, &a);
    open_authed(&mut h, 1, &b);
    open_authed(&mut h, 2, &c);
    assert_eq!(h.active_rooms(), 1);

    let out = send(
        &mut h,
        0,
        T0,
        r#"{"event":"subscribe","data":{"room":"project_x"},"requestId":"s"}"#,
    );
    assert_eq!(
        out[0].1,
        serde_json::json!({"event":"subscribed","data":{"room":"project_x"},"requestId":"s"})
    );
    let out = send(
        &mut h,
        1,
        T0,
        r#"{"event":"subscribe","data":{"room":"project_x"}}"#,
    );
    assert_eq!(out[0].1["data"]["code"], "room_not_allowed");
    let out = send(&mut h, 1, T0, r#"{"event":"subscribe","data":{"room":5}}"#);
    assert_eq!(out[0].1["data"]["code"], "invalid_data");

    let out = send(
        &mut h,
        0,
        T0,
        r#"{"event":"publish","data":{"room":"lobby","event":"hi","data":{"n":1}},"requestId":9}"#,
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].0, 1);
    assert_eq!(
        out[0].1,
        serde_json::json!({"event":"hi","data":{"n":1},"room":"lobby","from":"a"})
    );
    assert_eq!(
        out[1].1,
        serde_json::json!({"event":"published","data":{"room":"lobby","delivered":1},"requestId":9})
    );

    let out = send(
        &mut h,
        1,
        T0,
        r#"{"event":"publish","data":{"room":"lobby","event":"hi"}}"#,
    );
    assert_eq!(out[0].1["data"]["code"], "forbidden");
    let out = send(
        &mut h,
        2,
        T0,
        r#"{"event":"publish","data":{"room":"lobby","event":"hi"}}"#,
    );
    assert_eq!(out[0].1["data"]["code"], "room_not_allowed");
    let out = send(
        &mut h,
        0,
        T0,
        r#"{"event":"publish","data":{"room":"lobby"}}"#,
    );
    assert_eq!(out[0].1["data"]["code"], "invalid_data");

    let out = send(
        &mut h,
        1,
        T0,
        r#"{"event":"unsubscribe","data":{"room":"lobby"}}"#,
    );
    assert_eq!(out[0].1["event"], "unsubscribed");
    let out = send(
        &mut h,
        0,
        T0,
        r#"{"event":"publish","data":{"room":"lobby","event":"hi"}}"#,
    );
    assert_eq!(out[0].1["data"]["delivered"], 0);

    let out = send(&mut h, 1, T0, r#"{"event":"whoami"}"#);
    assert_eq!(out[0].1["event"], "whoami");
    assert_eq!(out[0].1["data"]["rooms"], serde_json::json!([]));
    let out = send(&mut h, 1, T0, r#"{"event":"fly"}"#);
    assert_eq!(out[0].1["data"]["code"], "unknown_event");

    h.disconnect(0, 1000, T0);
    assert_eq!(h.active_rooms(), 0);
    assert_eq!(h.active_connections(), 2);
}

#[test]
fn rate_limit_then_flood_close() {
    let mut h = hub();
    h.open(0, 1, "127.0.0.1".parse().unwrap(), T0, None, "");
    drain(&mut h);
    for _ in 0..60 {
        assert_eq!(
            send(&mut h, 0, T0, r#"{"event":"ping"}"#)[0].1["event"],
            "pong"
        );
    }
    for _ in 0..60 {
        let out = send(&mut h, 0, T0, r#"{"event":"ping","requestId":1}"#);
        assert_eq!(out[0].1["data"]["code"], "rate_limited");
    }
    let out = send(&mut h, 0, T0, r#"{"event":"ping"}"#);
    assert_eq!(out[0].1["close"], 4008);
    assert!(h.session(0).is_none());
}

#[test]
fn binary_is_invalid_format() {
    let mut h = hub();
    h.open(0, 1, "127.0.0.1".parse().unwrap(), T0, None, "");
    drain(&mut h);
    h.on_binary(0, T0);
    assert_eq!(drain(&mut h)[0].1["data"]["code"], "invalid_format");
}
