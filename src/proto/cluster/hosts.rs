//! Hosts cluster-wide (SPEC §9), the state a node keeps of them, sans-IO:
//! the hosts of other nodes and the events they serve (from their
//! announcements, forgotten when not renewed within three heartbeats), the
//! requests of this node's clients waiting for another node's host, the
//! requests another node forwarded to a host here, the registrations
//! waiting for the broker's verdict, and what is to be sent. Each table is
//! bounded in count; what is to be sent in bytes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use serde_json::value::RawValue;

use super::directed::take_due;
use crate::proto::envelope::MAX_REQUEST_ID_BYTES;
use crate::proto::host_link::{table_entry_bytes, ALLOC_SLACK, MAX_EVENTS_PER_HOST};
use crate::proto::rooms::{ConnKey, MAX_ROOM_NAME};

/// Requests of this node's clients waiting for other nodes' hosts at once;
/// beyond, a request fails at once with `host_unavailable`.
pub const MAX_REMOTE_PENDING: usize = 4096;
/// Requests from other nodes waiting for this node's hosts at once.
pub const MAX_SERVED: usize = 4096;
/// Other nodes' hosts known at once.
pub const MAX_REMOTE_HOSTS: usize = 256;
/// Registrations and renewals waiting for the broker at once.
pub const MAX_CLAIMS: usize = 256;

/// Tags of the broker commands that claim hosts' events start here: above
/// the node's own small tags and the range from 1 << 40 that history in
/// Redis counts up in.
pub const CLAIM_TAG_BASE: u64 = 1 << 56;

/// Worst-case bytes the tables hold beside the send queue (which
/// `max_forward_bytes` bounds): every pending request with its `requestId`,
/// every remote host with all its events named twice and a permission each.
pub const fn bytes_bound() -> usize {
    let request = table_entry_bytes::<(u64, RemotePending)>()
        + table_entry_bytes::<(ConnKey, usize)>()
        + MAX_REQUEST_ID_BYTES
        + 64;
    let served = table_entry_bytes::<(u64, Served)>() + 64;
    let event = 2 * (MAX_ROOM_NAME + ALLOC_SLACK) + MAX_ROOM_NAME + table_entry_bytes::<Route>();
    let host = MAX_EVENTS_PER_HOST * event + 128;
    MAX_REMOTE_PENDING * request + MAX_SERVED * served + MAX_REMOTE_HOSTS * host
}

/// The host that serves an event on another node, and its permission.
#[derive(Debug, Clone)]
pub struct Route {
    pub host: Rc<str>,
    pub permission: Option<Box<str>>,
}

#[derive(Debug)]
struct RemoteHost {
    node: Box<str>,
    events: Vec<Box<str>>,
    expires_ms: u64,
}

/// A request of this node's client, sent to another node's host.
#[derive(Debug)]
pub struct RemotePending {
    pub client: ConnKey,
    pub client_id: u64,
    pub rid: Option<Box<RawValue>>,
    pub deadline_ms: u64,
    pub host: Rc<str>,
}

/// A request another node forwarded to host `host` here (its `id` there is
/// this table's key): the answer goes back to `node` as `request`.
#[derive(Debug)]
pub struct Served {
    pub node: Box<str>,
    pub request: u64,
    pub host: ConnKey,
    pub deadline_ms: u64,
}

/// A `host.register` (or a renewal) waiting for the broker's verdict.
#[derive(Debug)]
pub struct Claim {
    pub host: ConnKey,
    pub host_id: u64,
    /// The events claimed, in the order sent.
    pub events: Vec<(Box<str>, Option<Box<str>>)>,
    /// The `host.register` to answer; `None` for a renewal.
    pub register: Option<Option<Box<RawValue>>>,
    pub deadline_ms: u64,
}

/// Claim `events` for `owner` (a host's clientId): `all` of them or none
/// (a registration), or each one that is free (a renewal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimOut {
    pub tag: u64,
    pub owner: Rc<str>,
    pub events: Vec<Box<str>>,
    pub all: bool,
}

/// What the node is to send for the hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostOut {
    Claim(ClaimOut),
    /// Delete the keys of `events` that `owner` still holds.
    Release {
        owner: Rc<str>,
        events: Vec<Box<str>>,
    },
    /// Host `host` serves the events of `events_json` (control channel).
    Announce {
        host: Rc<str>,
        events_json: String,
    },
    /// Host `host` is gone (control channel).
    Gone {
        host: Rc<str>,
    },
    /// A client's request for `host` on `node`: the `host.request` fields
    /// but `id`, as a JSON object.
    Request {
        node: Box<str>,
        host: Rc<str>,
        request: u64,
        body: Vec<u8>,
    },
    /// The answer to `request` of `node`: `{"event","data"}` or `{"error"}`.
    Answer {
        node: Box<str>,
        request: u64,
        body: Vec<u8>,
    },
    /// `host.client_joined` / `host.client_left` for every node's hosts.
    Notice {
        message: Rc<[u8]>,
    },
}

impl HostOut {
    fn cost(&self) -> usize {
        let names = |events: &[Box<str>]| events.iter().map(|e| e.len() + 8).sum::<usize>();
        64 + match self {
            HostOut::Claim(ClaimOut { owner, events, .. }) | HostOut::Release { owner, events } => {
                owner.len() + names(events)
            }
            HostOut::Announce { host, events_json } => host.len() + events_json.len(),
            HostOut::Gone { host } => host.len(),
            HostOut::Request { host, body, .. } => host.len() + body.len(),
            HostOut::Answer { body, .. } => body.len(),
            HostOut::Notice { message } => message.len(),
        }
    }
}

#[derive(Debug, Default)]
pub struct ClusterHosts {
    remote: BTreeMap<Rc<str>, RemoteHost>,
    routes: HashMap<Box<str>, Route>,
    pending: BTreeMap<u64, RemotePending>,
    /// How many of `pending` each client has (bounded per client as local
    /// requests are).
    per_client: HashMap<ConnKey, usize>,
    next_request: u64,
    served: BTreeMap<u64, Served>,
    claims: BTreeMap<u64, Claim>,
    next_claim: u64,
    out: VecDeque<HostOut>,
    out_bytes: usize,
    /// Sends refused because the queue was full.
    pub dropped: u64,
}

impl ClusterHosts {
    /// Queues `out` within `max_bytes`; false (and counted) when full.
    pub fn send(&mut self, out: HostOut, max_bytes: usize) -> bool {
        let cost = out.cost();
        if self.out_bytes + cost > max_bytes {
            self.dropped += 1;
            return false;
        }
        self.out_bytes += cost;
        self.out.push_back(out);
        true
    }

    pub fn take_out(&mut self) -> Option<HostOut> {
        let out = self.out.pop_front()?;
        self.out_bytes -= out.cost();
        Some(out)
    }

    pub fn has_out(&self) -> bool {
        !self.out.is_empty()
    }

    /// Who serves `event` on another node.
    pub fn route(&self, event: &str) -> Option<&Route> {
        self.routes.get(event)
    }

    /// Whether any other node has a host (notices are then forwarded).
    pub fn has_remote_hosts(&self) -> bool {
        !self.remote.is_empty()
    }

    /// Host `host` of `node` serves `events` (all of them, replacing what it
    /// announced before) until `expires_ms` unless announced again. False
    /// when the table is full.
    pub fn announced(
        &mut self,
        node: &str,
        host: &str,
        events: Vec<(String, Option<String>)>,
        expires_ms: u64,
    ) -> bool {
        let key: Rc<str> = match self.remote.get_key_value(host) {
            Some((key, _)) => key.clone(),
            None if self.remote.len() >= MAX_REMOTE_HOSTS => return false,
            None => host.into(),
        };
        self.unroute(&key);
        let mut names = Vec::with_capacity(events.len());
        for (name, permission) in events.into_iter().take(MAX_EVENTS_PER_HOST) {
            let name: Box<str> = name.into();
            let route = Route {
                host: key.clone(),
                permission: permission.map(Into::into),
            };
            self.routes.insert(name.clone(), route);
            names.push(name);
        }
        let entry = RemoteHost {
            node: node.into(),
            events: names,
            expires_ms,
        };
        self.remote.insert(key, entry);
        true
    }

    fn unroute(&mut self, host: &str) {
        let Some(old) = self.remote.get(host) else {
            return;
        };
        for event in &old.events {
            if self.routes.get(event).is_some_and(|r| &*r.host == host) {
                self.routes.remove(event);
            }
        }
    }

    /// Host `host` is gone: its routes go; returns its clients' requests.
    pub fn host_gone(&mut self, host: &str) -> Vec<RemotePending> {
        self.unroute(host);
        self.remote.remove(host);
        let mine: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| &*p.host == host)
            .map(|(&r, _)| r)
            .collect();
        mine.iter().filter_map(|&r| self.take_pending(r)).collect()
    }

    /// Every host of `node` is gone (it stopped); returns their requests.
    pub fn node_gone(&mut self, node: &str) -> Vec<RemotePending> {
        let hosts: Vec<Rc<str>> = self
            .remote
            .iter()
            .filter(|(_, h)| &*h.node == node)
            .map(|(k, _)| k.clone())
            .collect();
        hosts.iter().flat_map(|h| self.host_gone(h)).collect()
    }

    /// Hosts not announced again in time are gone; returns their requests.
    pub fn expire_hosts(&mut self, now_ms: u64) -> Vec<RemotePending> {
        let late: Vec<Rc<str>> = self
            .remote
            .iter()
            .filter(|(_, h)| h.expires_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        late.iter().flat_map(|h| self.host_gone(h)).collect()
    }

    /// Records a request for `pending.host`; its number, or `None` when full.
    pub fn add_pending(&mut self, pending: RemotePending) -> Option<u64> {
        if self.pending.len() >= MAX_REMOTE_PENDING {
            return None;
        }
        self.next_request += 1;
        *self.per_client.entry(pending.client).or_default() += 1;
        self.pending.insert(self.next_request, pending);
        Some(self.next_request)
    }

    /// Requests of this node's clients waiting for other nodes' hosts.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn take_pending(&mut self, request: u64) -> Option<RemotePending> {
        let pending = self.pending.remove(&request)?;
        self.uncount(&pending);
        Some(pending)
    }

    fn uncount(&mut self, pending: &RemotePending) {
        if let Some(n) = self.per_client.get_mut(&pending.client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&pending.client);
            }
        }
    }

    /// How many requests of client `key` wait for other nodes' hosts.
    pub fn waiting_of(&self, key: ConnKey) -> usize {
        self.per_client.get(&key).copied().unwrap_or(0)
    }

    /// The node a remote host is on.
    pub fn node_of(&self, host: &str) -> Option<&str> {
        self.remote.get(host).map(|h| &*h.node)
    }

    /// Records a request from another node under `id` (a host request id
    /// of this node); false when full.
    pub fn add_served(&mut self, id: u64, served: Served) -> bool {
        if self.served.len() >= MAX_SERVED {
            return false;
        }
        self.served.insert(id, served);
        true
    }

    /// The request `id` forwarded to `host` from another node.
    pub fn take_served(&mut self, id: u64, host: ConnKey) -> Option<Served> {
        if self.served.get(&id)?.host != host {
            return None;
        }
        self.served.remove(&id)
    }

    /// A local host left: other nodes' requests to it are answered by them.
    pub fn forget_served(&mut self, host: ConnKey) {
        self.served.retain(|_, s| s.host != host);
    }

    /// Records a claim; its tag, or `None` when too many wait.
    pub fn add_claim(&mut self, claim: Claim) -> Option<u64> {
        if self.claims.len() >= MAX_CLAIMS {
            return None;
        }
        self.next_claim += 1;
        let tag = CLAIM_TAG_BASE + self.next_claim;
        self.claims.insert(tag, claim);
        Some(tag)
    }

    pub fn take_claim(&mut self, tag: u64) -> Option<Claim> {
        self.claims.remove(&tag)
    }

    /// Everything due by `now_ms`: requests that timed out, requests served
    /// for other nodes that no host answered, claims the broker did not
    /// answer.
    pub fn expired(&mut self, now_ms: u64) -> (Vec<RemotePending>, Vec<Claim>) {
        take_due(&mut self.served, now_ms, |s| s.deadline_ms);
        let pending = take_due(&mut self.pending, now_ms, |p| p.deadline_ms);
        for p in &pending {
            self.uncount(p);
        }
        (
            pending,
            take_due(&mut self.claims, now_ms, |c| c.deadline_ms),
        )
    }

    pub fn next_deadline(&self) -> Option<u64> {
        let pending = self.pending.values().map(|p| p.deadline_ms);
        let served = self.served.values().map(|s| s.deadline_ms);
        let claims = self.claims.values().map(|c| c.deadline_ms);
        let hosts = self.remote.values().map(|h| h.expires_ms);
        pending.chain(served).chain(claims).chain(hosts).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(host: &str, deadline_ms: u64) -> RemotePending {
        RemotePending {
            client: 1,
            client_id: 7,
            rid: None,
            deadline_ms,
            host: host.into(),
        }
    }

    #[test]
    fn routes_follow_announcements_and_die_with_their_host_or_node() {
        let mut h = ClusterHosts::default();
        let events = vec![("play".to_string(), Some("game".to_string()))];
        assert!(h.announced("a", "a.1", events, 100));
        assert_eq!(h.route("play").map(|r| &*r.host), Some("a.1"));
        assert_eq!(h.node_of("a.1"), Some("a"));
        // A new announcement replaces the old set.
        assert!(h.announced("a", "a.1", vec![("chat".into(), None)], 200));
        assert!(h.route("play").is_none());
        let r = h.add_pending(pending("a.1", 500)).unwrap();
        assert!(h.expire_hosts(199).is_empty());
        let failed = h.expire_hosts(200);
        assert_eq!(failed.len(), 1);
        assert!(h.take_pending(r).is_none());
        assert!(h.route("chat").is_none() && !h.has_remote_hosts());
        h.announced("b", "b.1", vec![("x".into(), None)], 900);
        h.add_pending(pending("b.1", 500));
        assert_eq!(h.node_gone("b").len(), 1);
        assert!(h.route("x").is_none());
    }

    #[test]
    fn requests_claims_and_sends_are_bounded_and_expire() {
        let mut h = ClusterHosts::default();
        let r = h.add_pending(pending("a.1", 50)).unwrap();
        assert_eq!(h.waiting_of(1), 1);
        assert!(h.take_pending(r).is_some());
        assert_eq!(h.waiting_of(1), 0);
        h.add_pending(pending("a.1", 50));
        let served = |host| Served {
            node: "b".into(),
            request: 3,
            host,
            deadline_ms: 60,
        };
        assert!(h.add_served(11, served(4)));
        assert!(h.take_served(11, 5).is_none(), "another host's");
        assert_eq!(h.take_served(11, 4).map(|s| s.request), Some(3));
        assert!(h.add_served(12, served(4)));
        let claim = Claim {
            host: 4,
            host_id: 9,
            events: vec![("e".into(), None)],
            register: None,
            deadline_ms: 70,
        };
        let tag = h.add_claim(claim).unwrap();
        assert!(tag > CLAIM_TAG_BASE);
        assert_eq!(h.next_deadline(), Some(50));
        let (late, claims) = h.expired(70);
        assert_eq!((late.len(), claims.len()), (1, 1));
        assert_eq!(h.waiting_of(1), 0);
        assert!(h.take_served(12, 4).is_none());
        assert_eq!(h.next_deadline(), None);
        let gone = HostOut::Gone { host: "a.1".into() };
        assert!(h.send(gone.clone(), 100));
        assert!(!h.send(gone.clone(), 100));
        assert_eq!(h.dropped, 1);
        assert_eq!(h.take_out(), Some(gone));
        assert!(!h.has_out());
    }
}
