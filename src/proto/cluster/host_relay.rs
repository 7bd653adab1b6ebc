//! The node's side of hosts cluster-wide (SPEC §9): it sends what the hub
//! queued for the hosts ([`HostOut`]) as broker commands and envelopes, and
//! hands the hub what other nodes sent about hosts.
//!
//! Which host serves an event is decided once, by the broker: a key
//! `PREFIX:host:EVENT` holding the host's clientId with an expiry of three
//! heartbeats, renewed every heartbeat. [`CLAIM_SCRIPT`] checks and sets the
//! keys of one registration atomically.

use log::debug;

use super::envelope::{self, Envelope, Kind};
use super::hosts::HostOut;
use super::keys::{control_channel, host_key, node_channel};
use crate::proto::hub::Hub;
use crate::proto::redis::{Link, Value};
use crate::proto::Now;

/// KEYS: the events' keys; ARGV: owner, expiry in ms, `all` or `each`.
/// Returns 0, or the 1-based index of the first key another owner holds.
/// With `all` nothing is set then; with `each` the free keys are set.
const CLAIM_SCRIPT: &[u8] = b"local bad = 0 \
for i, k in ipairs(KEYS) do local v = redis.call('GET', k) \
if v and v ~= ARGV[1] and bad == 0 then bad = i end end \
if bad > 0 and ARGV[3] == 'all' then return bad end \
for _, k in ipairs(KEYS) do local v = redis.call('GET', k) \
if not v or v == ARGV[1] then redis.call('SET', k, ARGV[1], 'PX', ARGV[2]) end end \
return bad";

/// KEYS: the events' keys; ARGV: owner. Deletes the keys the owner holds.
const RELEASE_SCRIPT: &[u8] = b"for _, k in ipairs(KEYS) do \
if redis.call('GET', k) == ARGV[1] then redis.call('DEL', k) end end return 0";

/// Names and timing the relay needs from its node.
pub struct Relay<'a> {
    pub prefix: &'a str,
    pub name: &'a str,
    pub ttl_ms: u64,
}

impl Relay<'_> {
    /// Sends everything the hub queued for the hosts. What the link cannot
    /// take is dropped: requests then time out, claims are settled at the
    /// next renewal.
    pub fn send_queued(&self, cmd: &mut Link, hub: &mut Hub) {
        while let Some(out) = hub.cluster_mut().and_then(|t| t.hosts.take_out()) {
            let sent = self.send(cmd, out);
            if !sent {
                debug!("cluster: a host message did not fit the command link");
            }
        }
    }

    fn send(&self, cmd: &mut Link, out: HostOut) -> bool {
        let mut bytes = Vec::new();
        let (channel, kind, room, payload) = match out {
            HostOut::Claim(claim) => {
                let mode: &[u8] = if claim.all { b"all" } else { b"each" };
                let (events, owner) = (&claim.events, &claim.owner);
                return self.eval(cmd, CLAIM_SCRIPT, events, owner, Some((claim.tag, mode)));
            }
            HostOut::Release { owner, events } => {
                return self.eval(cmd, RELEASE_SCRIPT, &events, &owner, None);
            }
            HostOut::Announce { host, events_json } => (
                self.control(),
                Kind::HostAnnounce,
                host.to_string(),
                events_json.into_bytes(),
            ),
            HostOut::Gone { host } => (self.control(), Kind::HostGone, host.to_string(), vec![]),
            HostOut::Request {
                node,
                host,
                request,
                body,
            } => (
                self.node_channel(&node),
                Kind::HostRequest,
                host.to_string(),
                with_request(request, &body),
            ),
            HostOut::Answer {
                node,
                request,
                body,
            } => (
                self.node_channel(&node),
                Kind::HostAnswer,
                String::new(),
                with_request(request, &body),
            ),
            HostOut::Notice { message } => (
                self.control(),
                Kind::HostNotice,
                String::new(),
                message.to_vec(),
            ),
        };
        envelope::encode(&mut bytes, self.name, kind, &room, &payload);
        cmd.command(&[b"PUBLISH", channel.as_bytes(), &bytes], None)
            .is_ok()
    }

    fn eval(
        &self,
        cmd: &mut Link,
        script: &[u8],
        events: &[Box<str>],
        owner: &str,
        claim: Option<(u64, &[u8])>,
    ) -> bool {
        let keys: Vec<String> = events.iter().map(|e| host_key(self.prefix, e)).collect();
        let numkeys = keys.len().to_string();
        let ttl = self.ttl_ms.to_string();
        let mut args: Vec<&[u8]> = vec![b"EVAL", script, numkeys.as_bytes()];
        args.extend(keys.iter().map(|k| k.as_bytes()));
        args.push(owner.as_bytes());
        if let Some((_, mode)) = claim {
            args.push(ttl.as_bytes());
            args.push(mode);
        }
        cmd.command(&args, claim.map(|(tag, _)| tag)).is_ok()
    }

    fn control(&self) -> String {
        control_channel(self.prefix)
    }

    fn node_channel(&self, node: &str) -> String {
        node_channel(self.prefix, node)
    }

    /// An envelope about hosts from node `env.origin` (not this one).
    pub fn on_message(&self, env: &Envelope<'_>, hub: &mut Hub, now: Now) {
        match env.kind {
            Kind::HostAnnounce => {
                let expires_ms = now.ms.saturating_add(self.ttl_ms);
                hub.host_announced(env.origin, env.room, env.payload, expires_ms);
            }
            Kind::HostGone => hub.remote_host_gone(env.room, now),
            Kind::HostRequest => {
                if let Some((request, body)) = envelope::request_of(env.payload) {
                    hub.host_request_from_cluster(env.origin, env.room, request, body, now);
                }
            }
            Kind::HostAnswer => {
                if let Some((request, body)) = envelope::request_of(env.payload) {
                    hub.host_answer_from_cluster(request, body, now);
                }
            }
            Kind::HostNotice => hub.notice_from_cluster(env.payload),
            _ => {}
        }
    }
}

/// The broker's verdict on claim `tag`: 0 granted, else the 1-based index
/// of the first event another host holds; `None` when it answered an error.
pub fn claim_verdict(value: &Value) -> Option<usize> {
    match value {
        Value::Integer(i) => usize::try_from(*i).ok(),
        _ => None,
    }
}

fn with_request(request: u64, body: &[u8]) -> Vec<u8> {
    let mut payload = request.to_be_bytes().to_vec();
    payload.extend_from_slice(body);
    payload
}
