//! Fuzzing hosts cluster-wide (SPEC §9): the envelopes other nodes send
//! about hosts (announcements, requests, answers, notices) decoded and
//! handled by a clustered hub that has a host and a client, between the
//! client's requests to other nodes' hosts, the host's answers, timeouts,
//! the host leaving and the broker's verdicts.

use super::{authenticator, T0_UNIX};
use crate::proto::auth::{Identity, MintRequest};
use crate::proto::cluster::envelope::{self, Kind};
use crate::proto::cluster::host_relay::Relay;
use crate::proto::cluster::hosts::{CLAIM_TAG_BASE, MAX_REMOTE_PENDING};
use crate::proto::cluster::{ClusterTap, HostOut};
use crate::proto::hub::{Action, Hub, HubConfig};
use crate::proto::Now;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr};

const HOST: usize = 0;
const CLIENT: usize = 1;
const EVENTS: [&str; 4] = ["play", "chat", "score", "auth"];
const TTL_MS: u64 = 300;

thread_local! {
    static IDENTITIES: [Identity; 2] = [identity("game", &["host"]), identity("bob", &[])];
}

fn identity(sub: &str, permissions: &[&str]) -> Identity {
    let auth = authenticator();
    let request = MintRequest {
        sub: sub.into(),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        rooms: Vec::new(),
        role: None,
        ttl_s: 3600,
    };
    let verified = auth
        .mint(&request, T0_UNIX)
        .map_err(|e| e.to_string())
        .and_then(|(token, _)| auth.verify(&token, T0_UNIX).map_err(|e| e.to_string()));
    match verified {
        Ok(identity) => identity,
        Err(e) => panic!("a fixed token failed: {e}"),
    }
}

fn open(hub: &mut Hub, key: usize, serial: u64, ms: u64) {
    let identity = IDENTITIES.with(|ids| ids[key].clone());
    let now = Now {
        ms,
        unix: T0_UNIX + ms / 1000,
    };
    let id = (serial << 24) | key as u64;
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    hub.open(key, id, ip, now, Some(identity), "");
}

/// Input: records of `[op][len][len bytes]`. Ops: 0 an envelope from the
/// broker (decoded as received), 1 the client asks an event, 2 the host
/// answers its latest request with the bytes as data, 3 time passes, 4 the
/// host leaves and comes back registered, 5 the broker answers a claim.
///
/// Invariants: no panic; everything sent to a session is one JSON object;
/// the tables stay bounded; every envelope to send decodes back to itself.
pub fn cluster(data: &[u8]) {
    let mut hub = Hub::new(HubConfig {
        auth: authenticator(),
        auth_timeout_ms: 10_000,
        max_messages_per_minute: 1_000_000,
        request_timeout_ms: 200,
        server_name: "tether/fuzz".into(),
        compat: Default::default(),
        max_reply_bytes: 1 << 16,
        features: Default::default(),
    });
    let mut tap = ClusterTap::new("a", 1 << 14);
    tap.status.broker_up = true;
    tap.status.peers = vec!["b".into()];
    hub.enable_cluster(tap);
    let relay = Relay {
        prefix: "t",
        name: "a",
        ttl_ms: TTL_MS,
    };
    let mut ms = 0;
    let mut serial = 1;
    open(&mut hub, HOST, serial, ms);
    open(&mut hub, CLIENT, serial, ms);
    let register = r#"{"event":"host.register","data":{"events":{"play":null}}}"#;
    let mut latest_request: u64 = 0;
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let (bytes, next) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = next;
        let now = Now {
            ms,
            unix: T0_UNIX + ms / 1000,
        };
        match op % 6 {
            0 => {
                if let Some(env) = envelope::decode(bytes).filter(|e| e.origin != "a") {
                    relay.on_message(&env, &mut hub, now);
                }
            }
            1 => {
                let event = EVENTS[usize::from(bytes.first().copied().unwrap_or(0)) % 4];
                let msg = format!(r#"{{"event":"{event}","data":1,"requestId":{ms}}}"#);
                hub.on_text(CLIENT, now, &msg);
            }
            2 => {
                let data = String::from_utf8_lossy(bytes);
                let data = serde_json::from_str::<Value>(&data).unwrap_or(Value::Null);
                let reply = serde_json::json!({"event":"host.reply","data":{"id":latest_request,"event":"r","data":data}});
                hub.on_text(HOST, now, &reply.to_string());
            }
            3 => {
                ms += u64::from(bytes.first().copied().unwrap_or(1)) * 10;
                hub.expire_directed(Now {
                    ms,
                    unix: T0_UNIX + ms / 1000,
                });
            }
            4 => {
                hub.disconnect(HOST, 1000, now);
                serial += 1;
                open(&mut hub, HOST, serial, ms);
                hub.on_text(HOST, now, register);
            }
            _ => {
                let tag = CLAIM_TAG_BASE + u64::from(bytes.first().copied().unwrap_or(1));
                let verdict = bytes.get(1).map(|&b| usize::from(b % 3));
                hub.claim_answered(tag, verdict, now);
            }
        }
        latest_request = check_outbox(&mut hub, latest_request);
        check_sends(&mut hub);
    }
}

/// Every message to a session is one JSON object; returns the id of the
/// host's latest `host.request`.
fn check_outbox(hub: &mut Hub, mut latest: u64) -> u64 {
    for action in &hub.out.actions {
        let Action::Send { to, body } = action else {
            continue;
        };
        let message: Value = match serde_json::from_slice(hub.out.body(body)) {
            Ok(value) => value,
            Err(e) => panic!("not JSON to {to}: {e}"),
        };
        assert!(message.is_object(), "{message}");
        if *to == HOST && message["event"] == "host.request" {
            latest = message["data"]["id"].as_u64().unwrap_or(latest);
        }
    }
    hub.out.clear();
    latest
}

/// What is to be sent for the hosts round-trips through the envelope.
fn check_sends(hub: &mut Hub) {
    while let Some(out) = hub.cluster_mut().and_then(|t| t.hosts.take_out()) {
        if let HostOut::Request { request, body, .. } | HostOut::Answer { request, body, .. } = &out
        {
            let mut payload = request.to_be_bytes().to_vec();
            payload.extend_from_slice(body);
            let mut bytes = Vec::new();
            envelope::encode(&mut bytes, "a", Kind::HostAnswer, "", &payload);
            let env = envelope::decode(&bytes).map(|e| envelope::request_of(e.payload));
            assert_eq!(env, Some(Some((*request, &body[..]))));
        }
    }
    let pending = hub.cluster().map_or(0, |t| t.hosts.pending_len());
    assert!(pending <= MAX_REMOTE_PENDING);
}
