//! The harness the hub's tests share: a hub with test settings, tokens
//! minted for it, and its outbox drained as JSON.

use super::{Action, Hub, HubConfig};
use crate::proto::auth::{Authenticator, MintRequest};
use crate::proto::rooms::ConnKey;
use serde_json::{json, Value};

/// A hub over `auth` with these limits.
pub(super) fn hub_with(auth: Authenticator, per_minute: u32, request_timeout_ms: u64) -> Hub {
    Hub::new(HubConfig {
        auth,
        auth_timeout_ms: 10_000,
        max_messages_per_minute: per_minute,
        request_timeout_ms,
        server_name: "tether/test".into(),
        compat: Default::default(),
    })
}

/// A token the hub accepts, minted at `unix`.
pub(super) fn mint(
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
pub(super) fn drain(h: &mut Hub) -> Vec<(ConnKey, Value)> {
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
