//! One node of the cluster, sans-IO: two broker links (pub/sub and
//! commands), the node's claim on its name, the JWT secret check, heartbeats
//! and the node list, room channels subscribed while local members exist,
//! and room messages in both directions.
//!
//! Driving contract: after the hub ran (every loop pass) call [`Node::pump`];
//! move the links' bytes ([`Node::links`]); call [`Node::on_timer`] at
//! [`Node::poll_timeout`]; stop the process when [`Node::fatal`] says so;
//! call [`Node::end_pass`] last in every loop pass (before the members'
//! sockets are written); while [`Node::has_backlog`], pump on the next.

use std::collections::BTreeMap;
use std::rc::Rc;

use log::{debug, error, info, warn};

use super::batch::Batch;
use super::envelope::{self, Kind};
use super::features::{link_limits, Features};
use super::host_relay::{claim_verdict, Relay};
use super::hosts::CLAIM_TAG_BASE;
use super::keys::{control_channel, fingerprint_key, node_channel, node_key, room_channel};
use super::numbering::ClusterHistoryConfig;
use super::tap::RoomKind;
use crate::proto::hub::Hub;
use crate::proto::redis::{Link, LinkConfig, LinkEvent, Role, INBOX_BYTES};
use crate::proto::Now;

/// A room's channel is dropped this long after its last local member left,
/// so that a member who rejoins at once does not churn subscriptions.
const UNSUBSCRIBE_DELAY_MS: u64 = 1000;
/// A node (and its name claim) is gone after this many missed heartbeats.
const MISSED_HEARTBEATS: u64 = 3;

const TAG_CLAIM: u64 = 1;
const TAG_OWNER: u64 = 2;
const TAG_FINGERPRINT: u64 = 3;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub prefix: String,
    pub heartbeat_ms: u64,
    pub max_forward_bytes: usize,
    /// The largest payload a node forwards (`limits.max_message_bytes` and
    /// the message's own fields).
    pub max_payload_bytes: usize,
    /// A keyed fingerprint of the JWT secret (never the secret).
    pub fingerprint: String,
    /// Random per process: tells this node's claim from a namesake's.
    pub instance: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    /// `rooms.history` when it is on: kept in Redis (see cluster/history.rs).
    pub history: Option<ClusterHistoryConfig>,
}

pub struct Node {
    cfg: NodeConfig,
    sub: Link,
    cmd: Link,
    name_ok: bool,
    fingerprint_ok: bool,
    joined: bool,
    refused: Option<String>,
    fatal: Option<String>,
    /// Other nodes by name: when their last heartbeat came.
    peers: BTreeMap<String, u64>,
    last_echo_ms: u64,
    next_heartbeat_ms: u64,
    pending_unsubscribe: BTreeMap<Rc<str>, u64>,
    /// Room messages delivered in this loop pass (bounded, see `batch`).
    batch: Batch,
    forwarded: u64,
    received: u64,
    dropped: u64,
    scratch: Vec<u8>,
    /// History and presence in Redis.
    features: Features,
    /// Nodes found gone by the timer, for the next pump.
    gone_peers: Vec<String>,
    /// A heartbeat went out: the hosts' claims and announcements are due.
    hosts_due: bool,
}

impl Node {
    pub fn new(cfg: NodeConfig, seed: u64) -> Node {
        // What other nodes may send us: generous, so that a node with a
        // larger `max_message_bytes` cannot make this link reset, and bounded.
        let max_in = receive_limit(&cfg);
        let link = |role| LinkConfig {
            limits: link_limits(role, max_in),
            role,
            user: cfg.user.clone(),
            password: cfg.password.clone(),
            db: cfg.db,
            max_out_bytes: cfg.max_forward_bytes,
            max_reply_bytes: max_in + 1024,
            connect_timeout_ms: 2000,
            reply_timeout_ms: cfg.heartbeat_ms.max(1000) * MISSED_HEARTBEATS,
            probe_after_ms: cfg.heartbeat_ms.max(1000),
        };
        let mut sub = Link::new(link(Role::Subscriber), seed);
        let cmd = Link::new(link(Role::Command), seed.rotate_left(17));
        sub.subscribe(control_channel(&cfg.prefix).as_bytes());
        sub.subscribe(node_channel(&cfg.prefix, &cfg.name).as_bytes());
        let (prefix, name, read_budget) = (&cfg.prefix, &cfg.name, receive_limit(&cfg) / 2);
        let features = Features::new(cfg.history, prefix, name, cfg.heartbeat_ms, read_budget);
        Node {
            features,
            gone_peers: Vec::new(),
            cfg,
            sub,
            cmd,
            name_ok: false,
            fingerprint_ok: false,
            joined: false,
            refused: None,
            fatal: None,
            peers: BTreeMap::new(),
            last_echo_ms: 0,
            next_heartbeat_ms: 0,
            pending_unsubscribe: BTreeMap::new(),
            batch: Batch::default(),
            forwarded: 0,
            received: 0,
            dropped: 0,
            scratch: Vec::new(),
            hosts_due: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The subscriber link, then the command link, for the shell to drive.
    pub fn links(&mut self) -> [&mut Link; 2] {
        [&mut self.sub, &mut self.cmd]
    }

    /// Set when this process must stop: its name is a live node's.
    pub fn fatal(&self) -> Option<&str> {
        self.fatal.as_deref()
    }

    fn ttl_ms(&self) -> u64 {
        self.cfg.heartbeat_ms * MISSED_HEARTBEATS
    }

    /// Takes what the hub queued (room changes, forwards), handles what the
    /// links received, and updates the hub's view of the node.
    pub fn pump(&mut self, hub: &mut Hub, now: Now) {
        for (room, opened) in hub.take_room_changes() {
            self.features.on_room(&room, opened, &mut self.cmd, hub);
            if opened {
                self.pending_unsubscribe.remove(&room);
                self.sub
                    .subscribe(room_channel(&self.cfg.prefix, &room).as_bytes());
            } else {
                self.pending_unsubscribe
                    .insert(room, now.ms + UNSUBSCRIBE_DELAY_MS);
            }
        }
        while let Some(forward) = hub.cluster_mut().and_then(|tap| tap.take_forward()) {
            // Too big for any node's link (or refused): dropped and counted.
            let size = forward.room.len() + forward.message.len() + 64;
            if self.refused.is_some() || size > self.cfg.max_payload_bytes {
                self.dropped += 1;
                continue;
            }
            let kind = match forward.kind {
                RoomKind::Publish => Kind::Publish,
                RoomKind::Broadcast => Kind::Broadcast,
            };
            self.scratch.clear();
            envelope::encode(
                &mut self.scratch,
                &self.cfg.name,
                kind,
                &forward.room,
                &forward.message,
            );
            let channel = room_channel(&self.cfg.prefix, &forward.room);
            if self.publish(&channel) {
                self.forwarded += 1;
            } else {
                self.dropped += 1;
            }
        }
        for node in std::mem::take(&mut self.gone_peers) {
            self.features.on_peer(&node, false, &mut self.cmd, hub);
        }
        let (forwarded, dropped) = self.features.pump(&mut self.cmd, hub);
        self.forwarded += forwarded;
        self.dropped += dropped;
        while let Some(directed) = hub.cluster_mut().and_then(|tap| tap.directed.take()) {
            self.scratch.clear();
            envelope::encode_directed(&mut self.scratch, &self.cfg.name, &directed);
            // Unsent (link full), the host's ok comes at its timeout.
            self.publish(&node_channel(&self.cfg.prefix, &directed.node));
        }
        while let Some((node, request)) = hub.cluster_mut().and_then(|t| t.gathers.take_question())
        {
            self.scratch.clear();
            envelope::encode_request(
                &mut self.scratch,
                &self.cfg.name,
                Kind::Clients,
                request,
                &[],
            );
            self.publish(&node_channel(&self.cfg.prefix, &node));
        }
        if std::mem::take(&mut self.hosts_due) {
            hub.renew_hosts(now);
        }
        self.flush_hosts(hub);
        // Room messages in a bounded batch per pass: the rest after a flush.
        while !self.batch.is_full() {
            let Some(event) = self.sub.poll_event() else {
                break;
            };
            self.on_sub_event(event, hub, now);
        }
        while let Some(event) = self.cmd.poll_event() {
            self.on_cmd_event(event, hub, now);
        }
        self.update_status(hub, now);
    }

    /// Received messages not yet handled (the pass's batch was full).
    pub fn has_backlog(&self) -> bool {
        self.sub.has_events()
    }

    /// The loop pass ends (members' sockets are written next): the next
    /// pass may deliver a new batch.
    pub fn end_pass(&mut self) {
        self.batch = Batch::default();
    }

    fn on_sub_event(&mut self, event: LinkEvent, hub: &mut Hub, now: Now) {
        match event {
            LinkEvent::Up => {
                info!("cluster: subscriber link up");
                self.last_echo_ms = now.ms;
            }
            LinkEvent::Down(why) => {
                warn!("cluster: subscriber link down: {why}");
                self.features.on_sub_down();
            }
            LinkEvent::Refused(text) => {
                error!("cluster: the broker refused the subscriber link: {text}")
            }
            LinkEvent::Message { payload, .. } => {
                // What it queued for local members counts against the batch.
                let queued = hub.out.actions.len();
                self.on_message(&payload, hub, now);
                let delivered = hub.out.actions.len().saturating_sub(queued);
                self.batch.add(payload.len(), delivered as u64);
            }
            LinkEvent::Reply { .. } => {}
        }
    }

    fn on_message(&mut self, bytes: &[u8], hub: &mut Hub, now: Now) {
        let Some(env) = envelope::decode(bytes) else {
            debug!("cluster: ignored a malformed message");
            return;
        };
        if self.joined {
            if let Some(counted) = self.features.on_message(&env, &mut self.cmd, hub) {
                self.received += u64::from(counted);
                return;
            }
        }
        if env.origin == self.cfg.name {
            if env.kind == Kind::Heartbeat {
                self.last_echo_ms = now.ms;
            }
            return;
        }
        match env.kind {
            Kind::Heartbeat => {
                if self.peers.insert(env.origin.to_string(), now.ms).is_none() {
                    info!("cluster: node {} is up", env.origin);
                    self.features.on_peer(env.origin, true, &mut self.cmd, hub);
                }
            }
            Kind::Bye => {
                if self.peers.remove(env.origin).is_some() {
                    info!("cluster: node {} stopped", env.origin);
                    self.features.on_peer(env.origin, false, &mut self.cmd, hub);
                }
                hub.remote_node_gone(env.origin, now);
            }
            Kind::HostAnnounce
            | Kind::HostGone
            | Kind::HostRequest
            | Kind::HostAnswer
            | Kind::HostNotice => {
                if self.joined {
                    relay(&self.cfg).on_message(&env, hub, now);
                }
            }
            Kind::Publish | Kind::Broadcast if self.joined => {
                let kind = if env.kind == Kind::Publish {
                    RoomKind::Publish
                } else {
                    RoomKind::Broadcast
                };
                self.received += 1;
                hub.deliver_from_cluster(env.room, kind, env.payload.into(), now);
            }
            Kind::Send | Kind::Kick => {
                let Some((request, op)) = envelope::decode_directed(&env) else {
                    return;
                };
                let delivered = hub.directed_from_cluster(env.room, &op, now);
                self.scratch.clear();
                envelope::encode_result(&mut self.scratch, &self.cfg.name, request, delivered);
                let channel = node_channel(&self.cfg.prefix, env.origin);
                self.publish(&channel);
            }
            Kind::Clients => {
                let Some((request, _)) = envelope::request_of(env.payload) else {
                    return;
                };
                let mut list = Vec::with_capacity(256);
                hub.write_client_page(&mut list, 0, usize::MAX, self.cfg.max_payload_bytes);
                self.scratch.clear();
                envelope::encode_request(
                    &mut self.scratch,
                    &self.cfg.name,
                    Kind::ClientList,
                    request,
                    &list,
                );
                self.publish(&node_channel(&self.cfg.prefix, env.origin));
            }
            Kind::ClientList => {
                if let Some((request, list)) = envelope::request_of(env.payload) {
                    hub.gathered(request, env.origin, list);
                }
            }
            Kind::Result => {
                if let Some((request, delivered)) = envelope::decode_result(&env) {
                    hub.complete_directed(request, delivered);
                }
            }
            // Not joined yet; history and presence are the features' when joined.
            Kind::Publish | Kind::Broadcast | Kind::NumberedPublish => {}
            Kind::NumberedBroadcast | Kind::Joined | Kind::Left => {}
        }
    }

    /// Sends what the hub queued for hosts cluster-wide (also at shutdown).
    pub fn flush_hosts(&mut self, hub: &mut Hub) {
        relay(&self.cfg).send_queued(&mut self.cmd, hub);
    }

    /// PUBLISHes `self.scratch` on `channel`; false when the link is full.
    fn publish(&mut self, channel: &str) -> bool {
        let payload = std::mem::take(&mut self.scratch);
        let sent = self
            .cmd
            .command(&[b"PUBLISH", channel.as_bytes(), &payload], None)
            .is_ok();
        self.scratch = payload;
        sent
    }

    fn on_cmd_event(&mut self, event: LinkEvent, hub: &mut Hub, now: Now) {
        match event {
            LinkEvent::Up => {
                info!(
                    "cluster: command link up; announcing node {}",
                    self.cfg.name
                );
                self.joined = false;
                self.name_ok = false;
                self.fingerprint_ok = false;
                self.claim_name();
                self.check_fingerprint();
                self.features.on_cmd_up(&mut self.cmd);
            }
            LinkEvent::Down(why) => {
                warn!("cluster: command link down: {why}");
                self.joined = false;
            }
            LinkEvent::Refused(text) => {
                error!("cluster: the broker refused the command link: {text}")
            }
            LinkEvent::Message { .. } => {}
            LinkEvent::Reply { tag, value } if Features::owns(tag) => {
                self.features.on_reply(tag, value, &mut self.cmd, hub)
            }
            LinkEvent::Reply { tag, value } if tag >= CLAIM_TAG_BASE => {
                hub.claim_answered(tag, claim_verdict(&value), now)
            }
            LinkEvent::Reply { tag, value } => self.on_reply(tag, value, hub, now),
        }
    }

    fn heartbeat(&mut self, now: Now) {
        if now.ms < self.next_heartbeat_ms {
            return;
        }
        self.next_heartbeat_ms = now.ms + self.cfg.heartbeat_ms;
        if !self.joined || !self.cmd.is_up() {
            return;
        }
        self.scratch.clear();
        let hb = self.cfg.heartbeat_ms.to_string();
        envelope::encode(
            &mut self.scratch,
            &self.cfg.name,
            Kind::Heartbeat,
            "",
            hb.as_bytes(),
        );
        self.publish(&control_channel(&self.cfg.prefix));
        self.features.on_heartbeat(&mut self.cmd);
        let ttl = self.ttl_ms().to_string();
        let key = node_key(&self.cfg.prefix, &self.cfg.name);
        let renew: [&[u8]; 5] = [
            b"SET",
            key.as_bytes(),
            self.cfg.instance.as_bytes(),
            b"PX",
            ttl.as_bytes(),
        ];
        let _ = self.cmd.command(&renew, None);
        let fp = fingerprint_key(&self.cfg.prefix);
        let _ = self
            .cmd
            .command(&[b"PEXPIRE", fp.as_bytes(), ttl.as_bytes()], None);
        self.hosts_due = true;
    }

    /// The process stops: tell the other nodes (they drop this one at once
    /// rather than after 3 missed heartbeats) and free the name for a
    /// restart. Nothing more is sent after it.
    pub fn stop(&mut self) {
        if !self.joined {
            return;
        }
        self.joined = false;
        self.scratch.clear();
        envelope::encode(&mut self.scratch, &self.cfg.name, Kind::Bye, "", b"");
        self.publish(&control_channel(&self.cfg.prefix));
        let key = node_key(&self.cfg.prefix, &self.cfg.name);
        let _ = self.cmd.command(&[b"DEL", key.as_bytes()], None);
        info!("cluster: node {} leaving", self.cfg.name);
    }

    /// Heartbeats, delayed unsubscribes, forgetting silent nodes, and the
    /// liveness of the subscriber link (this node hears its own heartbeat).
    pub fn on_timer(&mut self, now: Now) {
        self.sub.on_timer(now.ms);
        self.cmd.on_timer(now.ms);
        self.heartbeat(now);
        let due: Vec<Rc<str>> = self
            .pending_unsubscribe
            .iter()
            .filter(|(_, &at)| at <= now.ms)
            .map(|(room, _)| room.clone())
            .collect();
        for room in due {
            self.pending_unsubscribe.remove(&room);
            self.sub
                .unsubscribe(room_channel(&self.cfg.prefix, &room).as_bytes());
            self.features.on_unsubscribed(&room);
        }
        let ttl = self.ttl_ms();
        let gone = &mut self.gone_peers;
        self.peers.retain(|name, seen| {
            let alive = now.ms.saturating_sub(*seen) <= ttl;
            if !alive {
                info!("cluster: node {name} missed {MISSED_HEARTBEATS} heartbeats; gone");
                gone.push(name.clone());
            }
            alive
        });
        if self.joined && self.sub.is_up() && now.ms.saturating_sub(self.last_echo_ms) > ttl {
            self.sub.on_closed(now.ms, "own heartbeat not heard back");
        }
    }

    /// When [`Node::on_timer`] is next due.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut at = self.next_heartbeat_ms;
        for t in [self.sub.poll_timeout(), self.cmd.poll_timeout()]
            .into_iter()
            .flatten()
        {
            at = at.min(t);
        }
        if let Some(&t) = self.pending_unsubscribe.values().min() {
            at = at.min(t);
        }
        Some(at)
    }

    fn update_status(&self, hub: &mut Hub, now: Now) {
        let ttl = self.ttl_ms();
        let broker_up = self.joined && self.sub.is_up() && self.cmd.is_up();
        let not_ready = if let Some(why) = &self.refused {
            Some(why.clone())
        } else if !broker_up {
            Some("the broker is down".to_string())
        } else {
            None
        };
        let live: Vec<String> = if broker_up {
            self.peers
                .iter()
                .filter(|(_, &seen)| now.ms.saturating_sub(seen) <= ttl)
                .map(|(name, _)| name.clone())
                .collect()
        } else {
            Vec::new()
        };
        let (forwarded, received, dropped) = (self.forwarded, self.received, self.dropped);
        let reconnects = self.sub.reconnects() + self.cmd.reconnects();
        if let Some(tap) = hub.cluster_mut() {
            let status = &mut tap.status;
            status.broker_up = broker_up;
            status.nodes = 1 + live.len() as u64;
            status.peers = live;
            status.not_ready = not_ready;
            status.forwarded = forwarded;
            status.received = received;
            status.dropped = dropped + tap.dropped;
            status.reconnects = reconnects;
        }
    }
}

/// The largest message a node takes from the broker.
fn receive_limit(cfg: &NodeConfig) -> usize {
    cfg.max_payload_bytes.max(cfg.max_forward_bytes) + 1024
}

/// Bytes the node's broker links can hold at once: commands waiting
/// (`max_forward_bytes`), one reply being read on each link, and received
/// messages not yet delivered (the inbox's bound, and what the read that
/// crossed it added).
pub fn memory_ceiling(cfg: &NodeConfig) -> usize {
    cfg.max_forward_bytes + 2 * (receive_limit(cfg) + 1024) + 2 * INBOX_BYTES
}

/// The hosts' relay of the node with `cfg`.
fn relay(cfg: &NodeConfig) -> Relay<'_> {
    Relay {
        prefix: &cfg.prefix,
        name: &cfg.name,
        ttl_ms: cfg.heartbeat_ms * MISSED_HEARTBEATS,
    }
}

#[path = "node_join.rs"]
mod join;

#[cfg(test)]
#[path = "node_tests.rs"]
pub(super) mod tests;
