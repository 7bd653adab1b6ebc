//! SPEC §13 in the core: the action dialect beside a section-6 host,
//! `rooms.by_path` and `auth.jwt_claims`.

use super::testing::{drain, mint};
use super::*;
use crate::proto::claims::ClaimNames;
use serde_json::json;
use std::collections::BTreeMap;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const T0: Now = Now {
    ms: 1_000,
    unix: 1_800_000_000,
};

fn hub_over(auth: Authenticator, dialect: Dialect, by_path: &[(&str, &[&str])]) -> Hub {
    let map = by_path
        .iter()
        .map(|(t, r)| (t.to_string(), r.iter().map(|s| s.to_string()).collect()))
        .collect();
    Hub::new(HubConfig {
        auth,
        auth_timeout_ms: 10_000,
        max_messages_per_minute: 60,
        request_timeout_ms: 5_000,
        server_name: "tether/test".into(),
        max_reply_bytes: 1 << 20,
        compat: Compat {
            dialect,
            path_rooms: PathRooms::new(&map).unwrap(),
        },
        features: RoomFeatures::default(),
    })
}

fn hub(dialect: Dialect, by_path: &[(&str, &[&str])]) -> Hub {
    let auth = Authenticator::new(SECRET, None, None, None, &[], BTreeMap::new());
    hub_over(auth, dialect, by_path)
}

fn ip() -> IpAddr {
    "127.0.0.1".parse().unwrap()
}

fn send(h: &mut Hub, key: ConnKey, text: &str) -> Vec<(ConnKey, serde_json::Value)> {
    h.on_text(key, T0, text);
    drain(h)
}

#[test]
fn action_client_beside_a_section_6_host() {
    let mut h = hub(Dialect::Action, &[]);
    // The host: its token names `host`, so it speaks section 6 from the start.
    let host_token = mint(&h, "soundbot", &["host"], &[], 600, T0.unix);
    let host_identity = h.config().auth.verify(&host_token, T0.unix).unwrap();
    h.open(1, 1, ip(), T0, Some(host_identity), "");
    let out = drain(&mut h);
    assert_eq!(out[0].1["event"], "connected");
    assert_eq!(out[1].1["event"], "authenticated");
    let out = send(
        &mut h,
        1,
        r#"{"event":"host.register","data":{"events":{"play":null}},"requestId":1}"#,
    );
    assert_eq!(out[0].1["event"], "host.registered");

    // The client: welcome, authenticate, auth_success.
    h.open(2, 2, ip(), T0, None, "");
    let out = drain(&mut h);
    assert_eq!(
        out[0].1,
        json!({"action": "welcome", "clientId": "2", "server": "tether/test"})
    );
    let token = mint(&h, "123456789", &[], &[], 600, T0.unix);
    let out = send(
        &mut h,
        2,
        &format!(r#"{{"action":"authenticate","token":"{token}"}}"#),
    );
    assert_eq!(out[0].0, 2);
    assert_eq!(
        out[0].1,
        json!({"action": "auth_success", "message": "Authentication successful",
               "user_id": "123456789", "clientId": "2", "permissions": [], "rooms": [],
               "expiresAt": T0.unix + 600})
    );
    // The host hears of the client in section 6.
    assert_eq!(out[1].1["event"], "host.client_joined");

    // play -> host.request with the fields as data -> playing, flat.
    let out = send(&mut h, 2, r#"{"action":"play","filename":"airhorn.mp3"}"#);
    assert_eq!(out[0].0, 1);
    assert_eq!(out[0].1["event"], "host.request");
    assert_eq!(out[0].1["data"]["data"], json!({"filename": "airhorn.mp3"}));
    let id = out[0].1["data"]["id"].as_u64().unwrap();
    let reply = json!({"event": "host.reply", "data": {"id": id, "event": "playing",
        "data": {"filename": "airhorn.mp3", "title": "airhorn.mp3", "channel": "General"}}});
    let out = send(&mut h, 1, &reply.to_string());
    assert_eq!(
        out[0],
        (
            2,
            json!({"action": "playing", "filename": "airhorn.mp3", "title": "airhorn.mp3", "channel": "General"})
        )
    );
    // A host error, and the gateway's own, with error_code / error_message.
    send(
        &mut h,
        2,
        r#"{"action":"play","filename":"nope.mp3","requestId":"r1"}"#,
    );
    let reply = json!({"event": "host.reply", "data": {"id": id + 1,
        "error": {"code": "sound_not_found", "message": "Sound \"nope.mp3\" not found"}}});
    let out = send(&mut h, 1, &reply.to_string());
    assert_eq!(out[0].1["action"], "error");
    assert_eq!(out[0].1["error_code"], "sound_not_found");
    assert_eq!(out[0].1["error_message"], "Sound \"nope.mp3\" not found");
    assert_eq!(out[0].1["requestId"], "r1");
    assert!(out[0].1["timestamp"].is_u64());
    let out = send(&mut h, 2, r#"{"action":"dance"}"#);
    assert_eq!(out[0].1["error_code"], "unknown_action");
    let out = send(&mut h, 2, r#"{"filename":"x"}"#);
    assert_eq!(out[0].1["error_code"], "missing_action");
    let out = send(&mut h, 2, r#"{"action":"ping","requestId":5}"#);
    assert_eq!(
        out[0].1,
        json!({"action": "pong", "time": T0.unix, "requestId": 5})
    );

    // Broadcasts reach the client flat and the host not at all.
    let out = send(
        &mut h,
        1,
        r#"{"event":"host.broadcast","data":{"event":"stopped","data":{"message":"bye"}}}"#,
    );
    assert_eq!(
        out,
        vec![(2, json!({"action": "stopped", "message": "bye"}))]
    );
}

#[test]
fn a_host_authenticating_by_message_speaks_section_6() {
    let mut h = hub(Dialect::Action, &[]);
    h.open(1, 1, ip(), T0, None, "");
    assert_eq!(drain(&mut h)[0].1["action"], "welcome");
    let token = mint(&h, "bot", &["host"], &[], 600, T0.unix);
    let out = send(
        &mut h,
        1,
        &format!(r#"{{"event":"auth","data":{{"token":"{token}"}}}}"#),
    );
    assert_eq!(out[0].1["event"], "authenticated");
    assert_eq!(out[0].1["data"]["sub"], "bot");
    let out = send(&mut h, 1, r#"{"event":"ping"}"#);
    assert_eq!(out[0].1["event"], "pong");
}

#[test]
fn path_rooms_join_when_allowed_and_refuse_otherwise() {
    let by_path: &[(&str, &[&str])] = &[("/ws/projects/{id}/", &["project_{id}", "user_{sub}"])];
    let mut h = hub(Dialect::Event, by_path);
    let allowed = mint(
        &h,
        "42",
        &["room:project_*", "room:user_42"],
        &[],
        600,
        T0.unix,
    );
    let identity = h.config().auth.verify(&allowed, T0.unix).unwrap();
    assert!(h.path_allows(&identity, "/ws/projects/7/"));
    assert!(h.path_allows(&identity, "/elsewhere"));
    h.open(1, 1, ip(), T0, Some(identity), "/ws/projects/7/");
    let out = drain(&mut h);
    assert_eq!(out[1].1["data"]["rooms"], json!(["project_7", "user_42"]));

    let outsider = mint(&h, "43", &[], &["lobby"], 600, T0.unix);
    let identity = h.config().auth.verify(&outsider, T0.unix).unwrap();
    assert!(!h.path_allows(&identity, "/ws/projects/7/"));
    // By message: room_not_allowed, then close 4001.
    h.open(2, 2, ip(), T0, None, "/ws/projects/7/");
    drain(&mut h);
    let out = send(
        &mut h,
        2,
        &format!(r#"{{"event":"auth","data":{{"token":"{outsider}"}}}}"#),
    );
    assert_eq!(out[0].1["data"]["code"], "room_not_allowed");
    assert_eq!(out[1].1["close"], 4001);
    assert!(h.session(2).is_none());
    // Its own rooms on any other path.
    h.open(3, 3, ip(), T0, None, "/ws/notifications/");
    drain(&mut h);
    let out = send(
        &mut h,
        3,
        &format!(r#"{{"event":"auth","data":{{"token":"{outsider}"}}}}"#),
    );
    assert_eq!(out[0].1["data"]["rooms"], json!(["lobby"]));
}

#[test]
fn simplejwt_tokens_through_jwt_claims() {
    use jwt_simple::prelude::*;
    let names = ClaimNames {
        sub: "user_id".into(),
        permissions: "scope".into(),
        ..ClaimNames::default()
    };
    let auth = Authenticator::new(SECRET, None, None, None, &[], BTreeMap::new());
    let h = hub_over(auth.with_claim_names(names), Dialect::Event, &[]);
    let claims = Claims::with_custom_claims(
        json!({"token_type": "access", "jti": "9f", "user_id": 42, "scope": "publish"}),
        Duration::from_secs(600),
    );
    let token = HS256Key::from_bytes(SECRET).authenticate(claims).unwrap();
    let now = Clock::now_since_epoch().as_secs();
    let identity = h.config().auth.verify(&token, now).unwrap();
    assert_eq!(&*identity.sub, "42");
    assert!(identity.has("publish"));
}
