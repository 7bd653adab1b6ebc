//! Hosts cluster-wide, the hub's side (SPEC §9): a `host.register` waits
//! for the broker's verdict on conflicts; the hosts of this node are
//! announced (and their claims renewed) every heartbeat; a client's request
//! for another node's host goes there and its answer comes back; notices
//! reach every node's hosts; a host that leaves is unregistered everywhere.
//!
//! While the broker is down a registration is decided here alone and
//! answered at once; the first renewal after the broker is back settles a
//! conflict: whoever holds the key keeps the event, and the other host
//! loses it (logged).

use super::host_events::{HostAnswer, ReplyData};
use super::Hub;
use crate::proto::cluster::{Claim, ClaimOut, HostOut, RemotePending, Served};
use crate::proto::envelope::{ErrorCode, JsonWriter};
use crate::proto::host_link::MAX_PENDING_PER_CLIENT;
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use log::{debug, warn};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::rc::Rc;

const GONE: &str = "the host that serves this event is gone";

impl Hub {
    /// Whether another node's host serves `event`.
    pub(super) fn served_elsewhere(&self, event: &str) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|t| t.hosts.route(event).is_some())
    }

    /// Sends `out` to the other nodes; false when the queue is full.
    fn send_hosts(&mut self, out: HostOut) -> bool {
        self.cluster.as_mut().is_some_and(|tap| {
            let max = tap.max_forward_bytes();
            tap.hosts.send(out, max)
        })
    }

    /// In a cluster with the broker up, asks it to decide `host.register`'s
    /// conflicts: true when the answer now waits for it.
    pub(super) fn claim_cluster_wide(
        &mut self,
        key: ConnKey,
        events: &[(Box<str>, Option<Box<str>>)],
        rid: Option<&RawValue>,
        now: Now,
    ) -> bool {
        let Some(host_id) = self.session(key).map(|s| s.id) else {
            return false;
        };
        let owner: Rc<str> = self.ids.str(host_id).into();
        let deadline_ms = now.ms.saturating_add(self.cfg.request_timeout_ms);
        let Some(tap) = self.cluster.as_mut() else {
            return false;
        };
        if events.is_empty() || !tap.status.broker_up {
            return false;
        }
        let claim = Claim {
            host: key,
            host_id,
            events: events.to_vec(),
            register: Some(rid.map(ToOwned::to_owned)),
            deadline_ms,
        };
        let Some(tag) = tap.hosts.add_claim(claim) else {
            return false;
        };
        let names = events.iter().map(|(name, _)| name.clone()).collect();
        let out = HostOut::Claim(ClaimOut {
            tag,
            owner,
            events: names,
            all: true,
        });
        if self.send_hosts(out) {
            return true;
        }
        self.cluster.as_mut().and_then(|t| t.hosts.take_claim(tag));
        false
    }

    /// The broker's verdict on claim `tag` (see `host_relay::claim_verdict`).
    pub fn claim_answered(&mut self, tag: u64, verdict: Option<usize>, now: Now) {
        let Some(claim) = self.cluster.as_mut().and_then(|t| t.hosts.take_claim(tag)) else {
            return;
        };
        if !self.is_session(claim.host, claim.host_id) {
            // The host went meanwhile: what was granted is freed again.
            if verdict == Some(0) && claim.register.is_some() {
                let owner = self.ids.str(claim.host_id).into();
                let events = claim.events.into_iter().map(|(name, _)| name).collect();
                self.send_hosts(HostOut::Release { owner, events });
            }
            return;
        }
        let lost = verdict
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| claim.events.get(i))
            .map(|(name, _)| name.clone());
        match (claim.register, lost) {
            (Some(rid), Some(name)) => {
                let msg = format!("`{name}` is already served by another host");
                self.error(
                    claim.host,
                    ErrorCode::InvalidData,
                    &msg,
                    now,
                    rid.as_deref(),
                );
            }
            // Granted, or the broker failed: decided here (renewals settle it).
            (Some(rid), None) => self.apply_register(claim.host, claim.events, rid.as_deref()),
            (None, Some(name)) => {
                warn!(
                    "cluster: host {} lost `{name}` to another node's host (registered while the broker was unreachable)",
                    self.ids.str(claim.host_id)
                );
                self.hosts.unserve(claim.host, &name);
                self.announce_host(claim.host);
            }
            (None, None) => {}
        }
    }

    /// Tells the other nodes which events host `key` serves.
    pub(super) fn announce_host(&mut self, key: ConnKey) {
        let (Some(id), Some(role)) = (self.session(key).map(|s| s.id), self.hosts.role(key)) else {
            return;
        };
        if self.cluster.is_none() {
            return;
        }
        let mut events_json = Vec::with_capacity(64);
        let mut doc = JsonWriter::object(&mut events_json);
        for event in &role.events {
            match self
                .hosts
                .route(event)
                .and_then(|e| e.permission.as_deref())
            {
                Some(permission) => doc.str(event, permission),
                None => doc.raw(event, "null"),
            };
        }
        doc.end();
        let events_json = String::from_utf8_lossy(&events_json).into_owned();
        let host = self.ids.str(id).into();
        self.send_hosts(HostOut::Announce { host, events_json });
    }

    /// Every heartbeat: each host's claims renewed and its events announced.
    pub fn renew_hosts(&mut self, now: Now) {
        let deadline_ms = now.ms.saturating_add(self.cfg.request_timeout_ms);
        for key in self.hosts.host_keys().to_vec() {
            let (Some(host_id), Some(role)) =
                (self.session(key).map(|s| s.id), self.hosts.role(key))
            else {
                continue;
            };
            let names = role.events.clone();
            if !names.is_empty() {
                let claim = Claim {
                    host: key,
                    host_id,
                    events: names.iter().map(|n| (n.clone(), None)).collect(),
                    register: None,
                    deadline_ms,
                };
                let tag = self.cluster.as_mut().and_then(|t| t.hosts.add_claim(claim));
                if let Some(tag) = tag {
                    let owner = self.ids.str(host_id).into();
                    let events = names;
                    self.send_hosts(HostOut::Claim(ClaimOut {
                        tag,
                        owner,
                        events,
                        all: false,
                    }));
                }
            }
            self.announce_host(key);
        }
    }

    /// Host `key` (session id `id`) leaves or is a host no more: its events
    /// are unregistered here and everywhere, its requests fail.
    pub(super) fn unregister_host(&mut self, key: ConnKey, id: u64, now: Now) {
        let events = self.hosts.role(key).map(|r| r.events.clone());
        let orphans = self.hosts.host_gone(key);
        self.report_orphans(orphans, now);
        let Some(events) = events else {
            return;
        };
        let Some(tap) = self.cluster.as_mut() else {
            return;
        };
        tap.hosts.forget_served(key);
        let owner: Rc<str> = self.ids.str(id).into();
        self.send_hosts(HostOut::Gone {
            host: owner.clone(),
        });
        if !events.is_empty() {
            self.send_hosts(HostOut::Release { owner, events });
        }
    }

    /// The process stops: every host's events are freed cluster-wide (the
    /// other nodes drop the hosts when this node says goodbye).
    pub fn release_hosts(&mut self) {
        for key in self.hosts.host_keys().to_vec() {
            let (Some(id), Some(role)) = (self.session(key).map(|s| s.id), self.hosts.role(key))
            else {
                continue;
            };
            let events = role.events.clone();
            if !events.is_empty() {
                let owner = self.ids.str(id).into();
                self.send_hosts(HostOut::Release { owner, events });
            }
        }
    }

    /// A client's request for an event another node's host serves; false
    /// when none does.
    pub(super) fn request_remote_host(
        &mut self,
        key: ConnKey,
        now: Now,
        event: &str,
        data: Option<&RawValue>,
        rid: Option<&RawValue>,
    ) -> bool {
        let Some(tap) = self.cluster.as_ref() else {
            return false;
        };
        let Some(route) = tap.hosts.route(event) else {
            return false;
        };
        let Some(node) = tap.hosts.node_of(&route.host) else {
            return false;
        };
        let (host, node) = (route.host.clone(), Box::<str>::from(node));
        let permission = route.permission.clone();
        let Some(session) = self.session(key) else {
            return true;
        };
        let Some(identity) = &session.identity else {
            return true;
        };
        if let Some(permission) = permission {
            if !identity.has(&permission) {
                let msg = format!("`{event}` needs the `{permission}` permission");
                self.error(key, ErrorCode::Forbidden, &msg, now, rid);
                return true;
            }
        }
        let waiting = self.hosts.waiting_len(key)
            + self.cluster.as_ref().map_or(0, |t| t.hosts.waiting_of(key));
        if waiting >= MAX_PENDING_PER_CLIENT {
            let msg = "too many requests are waiting for the host; retry later";
            self.error(key, ErrorCode::HostUnavailable, msg, now, rid);
            return true;
        }
        let mut body = Vec::with_capacity(128);
        JsonWriter::object(&mut body)
            .str("client", &self.ids.str(session.id))
            .str("sub", &identity.sub)
            .str_array("permissions", &identity.permissions)
            .str("event", event)
            .raw("data", data.map_or("null", |d| d.get()))
            .end();
        let pending = RemotePending {
            client: key,
            client_id: session.id,
            rid: rid.map(ToOwned::to_owned),
            deadline_ms: now.ms.saturating_add(self.cfg.request_timeout_ms),
            host: host.clone(),
        };
        let request = self
            .cluster
            .as_mut()
            .and_then(|t| t.hosts.add_pending(pending));
        let sent = request.is_some_and(|request| {
            let out = HostOut::Request {
                node,
                host,
                request,
                body,
            };
            self.send_hosts(out)
        });
        if !sent {
            if let Some(request) = request {
                self.cluster
                    .as_mut()
                    .and_then(|t| t.hosts.take_pending(request));
            }
            let msg = "too many requests are waiting for hosts of other nodes; retry later";
            self.error(key, ErrorCode::HostUnavailable, msg, now, rid);
        }
        true
    }

    /// Host `key` answered request `id`, which came from another node;
    /// returns 1 when it is on its way there, else 0.
    pub(super) fn relay_host_answer(&mut self, key: ConnKey, id: u64, answer: &HostAnswer) -> u64 {
        let Some(served) = self
            .cluster
            .as_mut()
            .and_then(|t| t.hosts.take_served(id, key))
        else {
            return 0;
        };
        u64::from(self.send_answer(served.node, served.request, answer))
    }

    /// Sends `answer` to `node`'s request `request`; false when full.
    fn send_answer(&mut self, node: Box<str>, request: u64, answer: &HostAnswer) -> bool {
        let mut body = Vec::with_capacity(64);
        // As `host.reply` has it, the id being the asking node's.
        let mut doc = JsonWriter::object(&mut body);
        doc.u64("id", request);
        match answer {
            HostAnswer::Event { event, data } => {
                doc.str("event", event).raw("data", data);
            }
            HostAnswer::Error { code, message } => {
                let mut error = doc.begin("error");
                error.str("code", code);
                if let Some(message) = message {
                    error.str("message", message);
                }
                error.end();
            }
        }
        doc.end();
        self.send_hosts(HostOut::Answer {
            node,
            request,
            body,
        })
    }

    /// Node `node` announced that its host `host` serves the events of
    /// `events_json`.
    pub fn host_announced(&mut self, node: &str, host: &str, events_json: &[u8], expires_ms: u64) {
        if self.ids.remote_node(host) != Some(node) {
            return;
        }
        let Ok(events) = serde_json::from_slice::<BTreeMap<String, Option<String>>>(events_json)
        else {
            debug!("cluster: ignored a malformed host announcement from {node}");
            return;
        };
        if let Some(tap) = self.cluster.as_mut() {
            let events = events.into_iter().collect();
            if !tap.hosts.announced(node, host, events, expires_ms) {
                debug!("cluster: too many remote hosts; ignored {host}");
            }
        }
    }

    /// Another node's host left: its clients' requests here fail.
    pub fn remote_host_gone(&mut self, host: &str, now: Now) {
        let failed = match self.cluster.as_mut() {
            Some(tap) => tap.hosts.host_gone(host),
            None => return,
        };
        self.fail_remote(failed, ErrorCode::HostUnavailable, GONE, now);
    }

    /// Node `node` stopped: its hosts are gone.
    pub fn remote_node_gone(&mut self, node: &str, now: Now) {
        let failed = match self.cluster.as_mut() {
            Some(tap) => tap.hosts.node_gone(node),
            None => return,
        };
        self.fail_remote(failed, ErrorCode::HostUnavailable, GONE, now);
    }

    fn fail_remote(&mut self, failed: Vec<RemotePending>, code: ErrorCode, msg: &str, now: Now) {
        for pending in failed {
            if self.is_session(pending.client, pending.client_id) {
                self.error(pending.client, code, msg, now, pending.rid.as_deref());
            }
        }
    }

    /// Timeouts: requests for other nodes' hosts, hosts not announced again
    /// within three heartbeats (their node is gone), and claims the broker
    /// did not answer (decided here).
    pub(super) fn expire_cluster_hosts(&mut self, now: Now) {
        let Some(tap) = self.cluster.as_mut() else {
            return;
        };
        let gone = tap.hosts.expire_hosts(now.ms);
        let (late, claims) = tap.hosts.expired(now.ms);
        self.fail_remote(gone, ErrorCode::HostUnavailable, GONE, now);
        let msg = "the host did not answer in time";
        self.fail_remote(late, ErrorCode::HostTimeout, msg, now);
        for claim in claims {
            if let (Some(rid), true) = (claim.register, self.is_session(claim.host, claim.host_id))
            {
                self.apply_register(claim.host, claim.events, rid.as_deref());
            }
        }
    }

    /// A request from node `node`'s client for host `host` here.
    pub fn host_request_from_cluster(
        &mut self,
        node: &str,
        host: &str,
        request: u64,
        body: &[u8],
        now: Now,
    ) {
        let fields = std::str::from_utf8(body)
            .ok()
            .filter(|b| serde_json::from_str::<&RawValue>(b).is_ok())
            .and_then(|b| b.strip_prefix('{'))
            .filter(|rest| rest.len() > 1);
        let target = self
            .client_key(host)
            .filter(|&k| self.hosts.is_host(k) && !self.hosts.is_congested(k));
        let (Some(fields), Some(target)) = (fields, target) else {
            return self.refuse_request(node, request, GONE);
        };
        let id = self.hosts.next_request_id();
        let served = Served {
            node: node.into(),
            request,
            host: target,
            deadline_ms: now.ms.saturating_add(self.cfg.request_timeout_ms),
        };
        if !self
            .cluster
            .as_mut()
            .is_some_and(|t| t.hosts.add_served(id, served))
        {
            let msg = "too many requests are waiting for the host; retry later";
            return self.refuse_request(node, request, msg);
        }
        let data = format!("{{\"id\":{id},{fields}");
        self.out.reply_raw(target, "host.request", None, &data);
    }

    /// Answers a request of `node` that no host here takes.
    fn refuse_request(&mut self, node: &str, request: u64, message: &str) {
        let answer = HostAnswer::Error {
            code: ErrorCode::HostUnavailable.as_str(),
            message: Some(message),
        };
        self.send_answer(node.into(), request, &answer);
    }

    /// The answer to this node's request `request` from another node's host.
    pub fn host_answer_from_cluster(&mut self, request: u64, body: &[u8], now: Now) {
        let Some(pending) = self
            .cluster
            .as_mut()
            .and_then(|t| t.hosts.take_pending(request))
        else {
            return;
        };
        if !self.is_session(pending.client, pending.client_id) {
            return;
        }
        let (client, rid) = (pending.client, pending.rid.as_deref());
        match serde_json::from_slice::<ReplyData>(body) {
            Ok(ReplyData {
                error: Some(error), ..
            }) => {
                let message = error
                    .message
                    .as_deref()
                    .unwrap_or("the host refused the request");
                self.out.error(client, &error.code, message, now.unix, rid);
            }
            Ok(ReplyData {
                event: Some(event),
                data,
                ..
            }) => {
                let data = data.map_or("null", |d| d.get());
                self.out.reply_raw(client, &event, rid, data);
            }
            _ => {
                let msg = "the host's answer was lost between nodes";
                self.error(client, ErrorCode::InternalError, msg, now, rid);
            }
        }
    }

    /// A `host.client_joined` / `host.client_left` for the other nodes'
    /// hosts, when there are any.
    pub(super) fn forward_notice(&mut self, message: &Rc<[u8]>) {
        let wanted = self
            .cluster
            .as_ref()
            .is_some_and(|t| t.hosts.has_remote_hosts());
        if wanted {
            self.send_hosts(HostOut::Notice {
                message: message.clone(),
            });
        }
    }

    /// Another node's notice, for this node's hosts.
    pub fn notice_from_cluster(&mut self, message: &[u8]) {
        if !self.hosts.host_keys().is_empty()
            && serde_json::from_slice::<&RawValue>(message).is_ok()
        {
            self.send_to_local_hosts(message.into());
        }
    }
}

#[cfg(test)]
#[path = "cluster_hosts_tests.rs"]
mod tests;
