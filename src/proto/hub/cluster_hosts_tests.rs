//! Hosts cluster-wide between two hubs, with the broker and the relay
//! played here: claims decided as the claim script does, envelopes handed
//! to the other hub.

use super::super::testing::{drain, hub_for_hosts, join, T0};
use super::super::Hub;
use crate::proto::cluster::{ClusterTap, HostOut};
use crate::proto::host_link::MAX_PENDING_PER_CLIENT;
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const NODES: [&str; 2] = ["a", "b"];
const TTL_MS: u64 = 3000;

struct Cluster {
    hubs: [Hub; 2],
    /// The broker's host keys: event → owner.
    keys: BTreeMap<String, String>,
}

impl Cluster {
    fn new() -> Cluster {
        let hubs = NODES.map(|name| {
            let mut hub = hub_for_hosts();
            let mut tap = ClusterTap::new(name, 1 << 20);
            tap.status.broker_up = true;
            hub.enable_cluster(tap);
            hub
        });
        Cluster {
            hubs,
            keys: BTreeMap::new(),
        }
    }

    /// Moves every host message between the hubs until none is left.
    fn pump(&mut self, now: Now) {
        loop {
            let mut moved = false;
            for from in 0..2 {
                while let Some(out) = self.hubs[from]
                    .cluster_mut()
                    .and_then(|t| t.hosts.take_out())
                {
                    moved = true;
                    self.deliver(from, out, now);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn deliver(&mut self, from: usize, out: HostOut, now: Now) {
        let other = &mut self.hubs[1 - from];
        match out {
            HostOut::Claim(claim) => {
                let (keys, owner) = (&mut self.keys, &claim.owner);
                let held: Vec<bool> = claim
                    .events
                    .iter()
                    .map(|e| keys.get(&**e).is_some_and(|o| **o != **owner))
                    .collect();
                let bad = held.iter().position(|&h| h).map_or(0, |i| i + 1);
                if bad == 0 || !claim.all {
                    for (e, _) in claim.events.iter().zip(&held).filter(|(_, &h)| !h) {
                        keys.insert(e.to_string(), owner.to_string());
                    }
                }
                self.hubs[from].claim_answered(claim.tag, Some(bad), now);
            }
            HostOut::Release { owner, events } => {
                for e in events.iter() {
                    if self.keys.get(&**e).is_some_and(|o| **o == *owner) {
                        self.keys.remove(&**e);
                    }
                }
            }
            HostOut::Announce { host, events_json } => {
                let expires = now.ms + TTL_MS;
                other.host_announced(NODES[from], &host, events_json.as_bytes(), expires);
            }
            HostOut::Gone { host } => other.remote_host_gone(&host, now),
            HostOut::Request {
                host,
                request,
                body,
                ..
            } => other.host_request_from_cluster(NODES[from], &host, request, &body, now),
            HostOut::Answer { request, body, .. } => {
                other.host_answer_from_cluster(request, &body, now)
            }
            HostOut::Notice { message } => other.notice_from_cluster(&message),
        }
    }

    fn send(&mut self, node: usize, key: ConnKey, msg: Value) -> Vec<(ConnKey, Value)> {
        self.hubs[node].on_text(key, T0, &msg.to_string());
        self.pump(T0);
        self.drain(node)
    }

    fn drain(&mut self, node: usize) -> Vec<(ConnKey, Value)> {
        drain(&mut self.hubs[node])
    }

    fn id(&self, node: usize, key: ConnKey) -> String {
        let hub = &self.hubs[node];
        hub.ids.str(hub.session(key).map_or(0, |s| s.id))
    }
}

fn register(events: Value) -> Value {
    json!({"event":"host.register","data":{"events":events},"requestId":"r"})
}

/// A host on a (key 0) serving `play`, a client on b (key 1); drained.
fn host_on_a_client_on_b() -> Cluster {
    let mut c = Cluster::new();
    join(&mut c.hubs[0], 0, "game", &["host"], &[]);
    let out = c.send(0, 0, register(json!({"play": null, "secret": "vip"})));
    assert!(out.contains(&(
        0,
        json!({"event":"host.registered","data":{"events":["play","secret"]},"requestId":"r"})
    )));
    join(&mut c.hubs[1], 1, "bob", &[], &[]);
    c.pump(T0);
    c.drain(0);
    c.drain(1);
    c
}

#[test]
fn a_host_on_one_node_serves_clients_of_another() {
    let mut c = host_on_a_client_on_b();
    let bob = c.id(1, 1);
    assert_eq!(c.keys.get("play"), Some(&c.id(0, 0)));
    c.send(1, 1, json!({"event":"play","data":{"x":1},"requestId":7}));
    let got = c.drain(0);
    assert_eq!(got.len(), 1, "{got:?}");
    let request = &got[0].1;
    assert_eq!(request["event"], "host.request");
    assert_eq!(
        request["data"],
        json!({"id":request["data"]["id"],"client":bob,"sub":"bob","permissions":[],"event":"play","data":{"x":1}})
    );
    let id = request["data"]["id"].clone();
    let ack = c.send(
        0,
        0,
        json!({"event":"host.reply","data":{"id":id,"event":"played","data":[1]},"requestId":2}),
    );
    assert_eq!(
        ack,
        vec![(
            0,
            json!({"event":"ok","data":{"delivered":1},"requestId":2})
        )]
    );
    assert_eq!(
        c.drain(1),
        vec![(1, json!({"event":"played","data":[1],"requestId":7}))]
    );
    // The host's errors pass through; permissions are checked on b.
    c.send(1, 1, json!({"event":"play","requestId":8}));
    let id = c.drain(0)[0].1["data"]["id"].clone();
    c.send(
        0,
        0,
        json!({"event":"host.reply","data":{"id":id,"error":{"code":"no_game","message":"none"}}}),
    );
    let out = c.drain(1);
    assert_eq!(out[0].1["data"]["code"], "no_game");
    assert_eq!(out[0].1["requestId"], 8);
    let out = c.send(1, 1, json!({"event":"secret","requestId":9}));
    assert_eq!(out[0].1["data"]["code"], "forbidden");
}

#[test]
fn registration_conflicts_are_cluster_wide() {
    let mut c = host_on_a_client_on_b();
    join(&mut c.hubs[1], 2, "other", &["host"], &[]);
    c.drain(1);
    // b knows a's host serves play.
    let out = c.send(1, 2, register(json!({"play": null})));
    assert_eq!(out[0].1["data"]["code"], "invalid_data", "{out:?}");
    // b does not know yet, the broker decides.
    c.keys.insert("race".into(), c.id(0, 0));
    let out = c.send(1, 2, register(json!({"race": null, "free": null})));
    assert_eq!(out[0].1["data"]["code"], "invalid_data", "{out:?}");
    assert!(!c.keys.contains_key("free"), "all or nothing");
    let out = c.send(1, 2, register(json!({"free": null})));
    assert_eq!(out[0].1["event"], "host.registered");
}

#[test]
fn notices_reach_hosts_on_every_node() {
    let mut c = host_on_a_client_on_b();
    join(&mut c.hubs[1], 3, "carol", &[], &[]);
    c.pump(T0);
    let carol = c.id(1, 3);
    let got = c.drain(0);
    assert_eq!(got[0].1["event"], "host.client_joined", "{got:?}");
    assert_eq!(got[0].1["data"]["client"], carol);
    c.hubs[1].disconnect(3, 1000, T0);
    c.pump(T0);
    let got = c.drain(0);
    assert_eq!(got[0].1["event"], "host.client_left");
    assert_eq!(got[0].1["data"]["code"], 1000);
}

#[test]
fn a_host_that_leaves_frees_its_events_and_fails_requests() {
    let mut c = host_on_a_client_on_b();
    c.send(1, 1, json!({"event":"play","requestId":1}));
    c.hubs[0].disconnect(0, 1000, T0);
    c.pump(T0);
    let out = c.drain(1);
    assert_eq!(out[0].1["data"]["code"], "host_unavailable", "{out:?}");
    assert_eq!(out[0].1["requestId"], 1);
    assert!(c.keys.is_empty());
    join(&mut c.hubs[1], 2, "next", &["host"], &[]);
    let out = c.send(1, 2, register(json!({"play": null})));
    assert_eq!(out.last().unwrap().1["event"], "host.registered");
}

#[test]
fn requests_time_out_and_a_silent_nodes_hosts_go() {
    let mut c = host_on_a_client_on_b();
    c.send(1, 1, json!({"event":"play","requestId":1}));
    let due = c.hubs[1].directed_deadline().unwrap();
    c.hubs[1].expire_directed(Now { ms: due, ..T0 });
    let out = c.drain(1);
    assert_eq!(out[0].1["data"]["code"], "host_timeout", "{out:?}");
    // No announcement within three heartbeats: a's host is gone for b.
    c.send(1, 1, json!({"event":"play","requestId":2}));
    c.hubs[1].expire_directed(Now { ms: TTL_MS, ..T0 });
    let out = c.drain(1);
    assert_eq!(out[0].1["data"]["code"], "host_unavailable", "{out:?}");
    let out = c.send(1, 1, json!({"event":"play","requestId":3}));
    assert_eq!(out[0].1["data"]["code"], "unknown_event");
}

#[test]
fn renewals_reannounce_and_settle_conflicts_after_the_broker_was_down() {
    let mut c = Cluster::new();
    for hub in &mut c.hubs {
        if let Some(tap) = hub.cluster_mut() {
            tap.status.broker_up = false;
        }
    }
    join(&mut c.hubs[0], 0, "g1", &["host"], &[]);
    join(&mut c.hubs[1], 0, "g2", &["host"], &[]);
    // Decided locally at once while the broker is down.
    for node in 0..2 {
        c.drain(node);
        c.hubs[node].on_text(0, T0, &register(json!({"play": null})).to_string());
        assert_eq!(c.drain(node)[0].1["event"], "host.registered");
        if let Some(tap) = c.hubs[node].cluster_mut() {
            while tap.hosts.take_out().is_some() {}
        }
    }
    // Back: a renews first and keeps it; b loses it to a.
    c.hubs[0].renew_hosts(T0);
    c.pump(T0);
    c.hubs[1].renew_hosts(T0);
    c.pump(T0);
    assert_eq!(c.keys.get("play"), Some(&c.id(0, 0)));
    assert!(c.hubs[1].hosts().route("play").is_none());
    assert!(c.hubs[1].served_elsewhere("play"));
    join(&mut c.hubs[1], 1, "bob", &[], &[]);
    c.drain(1);
    c.send(1, 1, json!({"event":"play","requestId":1}));
    assert_eq!(c.drain(0).last().unwrap().1["event"], "host.request");
}

#[test]
fn a_clients_requests_to_other_nodes_are_bounded() {
    let mut c = host_on_a_client_on_b();
    for n in 0..MAX_PENDING_PER_CLIENT {
        c.hubs[1].on_text(1, T0, &json!({"event":"play","requestId":n}).to_string());
    }
    assert!(c.drain(1).is_empty());
    let out = c.send(1, 1, json!({"event":"play","requestId":"over"}));
    assert_eq!(out[0].1["data"]["code"], "host_unavailable", "{out:?}");
    assert_eq!(
        c.drain(0).len(),
        MAX_PENDING_PER_CLIENT,
        "the host got each once"
    );
}
