//! The harness the hub's tests share: a hub with test settings, tokens
//! minted for it, and its outbox drained as JSON; for host tests, sessions
//! opened with a token and messages sent as JSON.

use super::{Action, Hub, HubConfig, RoomFeatures};
use crate::proto::auth::{Authenticator, MintRequest};
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A hub over `auth` with these limits.
pub(crate) fn hub_with(auth: Authenticator, per_minute: u32, request_timeout_ms: u64) -> Hub {
    Hub::new(HubConfig {
        auth,
        auth_timeout_ms: 10_000,
        max_messages_per_minute: per_minute,
        request_timeout_ms,
        server_name: "tether/test".into(),
        compat: Default::default(),
        max_reply_bytes: 1 << 20,
        features: RoomFeatures::default(),
    })
}

/// A hub for host tests (see [`hub_for_hosts`]) with history and presence as given.
pub(super) fn hub_with_features(features: RoomFeatures) -> Hub {
    let mut h = hub_for_hosts();
    h.history = crate::proto::history::History::new(features.history.clone());
    h.cfg.features = features;
    h
}

/// A token the hub accepts, minted at `unix`.
pub(crate) fn mint(
    h: &Hub,
    sub: &str,
    permissions: &[&str],
    rooms: &[&str],
    ttl_s: u64,
    unix: u64,
) -> String {
    let req = MintRequest {
        sub: sub.into(),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        rooms: rooms.iter().map(|r| r.to_string()).collect(),
        role: None,
        ttl_s,
    };
    h.config().auth.mint(&req, unix).unwrap().0
}

/// Drains the outbox as (recipient, JSON) and closes as (recipient, code).
pub(crate) fn drain(h: &mut Hub) -> Vec<(ConnKey, Value)> {
    let out = h
        .out
        .actions
        .iter()
        .map(|a| match a {
            Action::Send { to, body } => (*to, serde_json::from_slice(h.out.body(body)).unwrap()),
            Action::Close { to, code, .. } => (*to, json!({ "close": code })),
        })
        .collect();
    h.out.clear();
    out
}

pub(crate) const T0: Now = Now {
    ms: 0,
    unix: 1_800_000_000,
};

pub(crate) fn at(ms: u64) -> Now {
    Now {
        ms,
        unix: T0.unix + ms / 1000,
    }
}

/// A hub for host tests: a fixed key, 10,000 messages a minute, requests time out in 1 s.
pub(crate) fn hub_for_hosts() -> Hub {
    let auth = Authenticator::new(&[9u8; 32], None, None, None, &[], BTreeMap::new());
    hub_with(auth, 10_000, 1_000)
}

pub(crate) fn join(h: &mut Hub, key: ConnKey, sub: &str, permissions: &[&str], rooms: &[&str]) {
    let token = mint(h, sub, permissions, rooms, 3600, T0.unix);
    let identity = h.config().auth.verify(&token, T0.unix).unwrap();
    h.open(
        key,
        ((key as u64 + 1) << 24) | key as u64,
        "127.0.0.1".parse().unwrap(),
        T0,
        Some(identity),
        "",
    );
}

pub(crate) fn send(h: &mut Hub, key: ConnKey, now: Now, msg: Value) -> Vec<(ConnKey, Value)> {
    h.on_text(key, now, &msg.to_string());
    drain(h)
}

pub(crate) fn cid(h: &Hub, key: ConnKey) -> String {
    format!("{:x}", h.session(key).unwrap().id)
}

/// Connection `key` sends `host.register` for `events`; returns the outbox.
pub(crate) fn register(h: &mut Hub, key: ConnKey, events: Value) -> Vec<(ConnKey, Value)> {
    send(
        h,
        key,
        T0,
        json!({"event":"host.register","data":{"events":events}}),
    )
}
