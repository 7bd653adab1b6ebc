//! The shell's counters, and `/metrics` in the Prometheus text format
//! (with the core's counters beside them).

use super::held::Held;
use crate::proto::activity::DURATION_BUCKETS_S;
use crate::proto::cluster::ClusterStatus;
use crate::proto::handshake::Refusal;
use crate::proto::hub::Hub;
use std::fmt::Write;

/// Why a client was refused before a WebSocket opened (a `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    IpNotAllowed,
    OriginNotAllowed,
    /// A handshake token that may not join the rooms of its path (`rooms.by_path`).
    RoomNotAllowed,
    InvalidToken,
    PerIpLimit,
    ServerFull,
    NotWebSocket,
    BadRequest,
    HeadTooLarge,
    /// Accepted on the spare descriptor at the descriptor limit: 503.
    FdLimit,
}

impl RefusalReason {
    const ALL: [RefusalReason; 10] = [
        RefusalReason::IpNotAllowed,
        RefusalReason::OriginNotAllowed,
        RefusalReason::RoomNotAllowed,
        RefusalReason::InvalidToken,
        RefusalReason::PerIpLimit,
        RefusalReason::ServerFull,
        RefusalReason::NotWebSocket,
        RefusalReason::BadRequest,
        RefusalReason::HeadTooLarge,
        RefusalReason::FdLimit,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::IpNotAllowed => "ip_not_allowed",
            RefusalReason::OriginNotAllowed => "origin_not_allowed",
            RefusalReason::RoomNotAllowed => "room_not_allowed",
            RefusalReason::InvalidToken => "invalid_token",
            RefusalReason::PerIpLimit => "per_ip_limit",
            RefusalReason::ServerFull => "server_full",
            RefusalReason::NotWebSocket => "not_websocket",
            RefusalReason::BadRequest => "bad_request",
            RefusalReason::HeadTooLarge => "head_too_large",
            RefusalReason::FdLimit => "fd_limit",
        }
    }

    /// The reason of a refusal status (the 403s of the origin and path checks
    /// are told apart by the caller).
    pub fn of(refusal: Refusal) -> RefusalReason {
        match refusal {
            Refusal::Forbidden => RefusalReason::IpNotAllowed,
            Refusal::Unauthorized => RefusalReason::InvalidToken,
            Refusal::TooManyRequests => RefusalReason::PerIpLimit,
            Refusal::Unavailable => RefusalReason::ServerFull,
            Refusal::UpgradeRequired => RefusalReason::NotWebSocket,
            Refusal::HeadersTooLarge => RefusalReason::HeadTooLarge,
            Refusal::BadRequest | Refusal::NotFound => RefusalReason::BadRequest,
        }
    }
}

/// Why `accept` failed (a `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// EMFILE / ENFILE: out of file descriptors.
    FdLimit,
    Other,
}

impl AcceptError {
    const ALL: [AcceptError; 2] = [AcceptError::FdLimit, AcceptError::Other];

    pub fn label(self) -> &'static str {
        match self {
            AcceptError::FdLimit => "fd_limit",
            AcceptError::Other => "other",
        }
    }
}

/// Counters kept by the shell.
#[derive(Debug, Default, Clone)]
pub struct ShellMetrics {
    pub tcp_accepted: u64,
    /// Failed `accept` calls, indexed by `AcceptError as usize`.
    pub accept_errors: [u64; AcceptError::ALL.len()],
    /// Indexed by `RefusalReason as usize`.
    pub refusals: [u64; RefusalReason::ALL.len()],
    /// Incomplete connections dropped to make room for a new client:
    /// handshakes, then HTTP requests.
    pub evictions: [u64; 2],
    pub messages_in: u64,
    pub messages_out: u64,
    /// Every byte read from client sockets.
    pub bytes_in: u64,
    /// WebSocket frame bytes queued for clients.
    pub bytes_out: u64,
    pub slow_reader_closes: u64,
    pub idle_closes: u64,
    /// Messages deflated (a broadcast counts once, however many receive it).
    pub compressed_messages: u64,
    pub http_requests: u64,
}

impl ShellMetrics {
    pub fn refused(&mut self, reason: RefusalReason) {
        self.refusals[reason as usize] += 1;
    }

    pub fn evicted(&mut self, kind: Held) {
        self.evictions[kind.index()] += 1;
    }
}

/// A point-in-time view of the shell for `/metrics`.
pub struct ShellGauges {
    pub open_sockets: usize,
    pub max_connections: usize,
    pub pool_lent: usize,
    pub pool_free: usize,
    pub uptime_s: u64,
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP tether_{name} {help}\n# TYPE tether_{name} {kind}\ntether_{name} {value}"
    );
}

/// A counter with one line per `reason` label.
fn counter_by(
    out: &mut String,
    name: &str,
    label: &str,
    help: &str,
    rows: impl IntoIterator<Item = (&'static str, u64)>,
) {
    let _ = writeln!(
        out,
        "# HELP tether_{name} {help}\n# TYPE tether_{name} counter"
    );
    for (value_of_label, value) in rows {
        let _ = writeln!(out, "tether_{name}{{{label}=\"{value_of_label}\"}} {value}");
    }
}

/// The Prometheus text exposition (version 0.0.4).
/// SPEC §9's cluster metrics.
fn cluster_metrics(o: &mut String, c: &ClusterStatus) {
    let rows: [(&str, &str, &str, u64); 6] = [
        (
            "cluster_broker_up",
            "gauge",
            "1 while the Redis broker is connected and this node joined.",
            u64::from(c.broker_up),
        ),
        (
            "cluster_nodes",
            "gauge",
            "Live nodes this node knows of, itself included.",
            c.nodes,
        ),
        (
            "cluster_forwarded_total",
            "counter",
            "Room messages handed to the broker for other nodes.",
            c.forwarded,
        ),
        (
            "cluster_received_total",
            "counter",
            "Room messages from other nodes delivered here.",
            c.received,
        ),
        (
            "cluster_dropped_total",
            "counter",
            "Room messages for other nodes dropped (max_forward_bytes reached, or not joined).",
            c.dropped,
        ),
        (
            "cluster_reconnects_total",
            "counter",
            "Broker connections re-established after a loss.",
            c.reconnects,
        ),
    ];
    for (name, kind, help, value) in rows {
        metric(o, name, kind, help, value);
    }
}

pub fn render(shell: &ShellMetrics, gauges: &ShellGauges, hub: &Hub, now_unix: u64) -> String {
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    metric(
        o,
        "uptime_seconds",
        "gauge",
        "Seconds since the gateway started.",
        gauges.uptime_s,
    );
    metric(
        o,
        "connections_active",
        "gauge",
        "Open WebSocket sessions.",
        hub.active_connections() as u64,
    );
    metric(
        o,
        "connections_total",
        "counter",
        "WebSocket sessions opened since start.",
        hub.stats.total_connections,
    );
    metric(
        o,
        "connections_max",
        "gauge",
        "limits.max_connections.",
        gauges.max_connections as u64,
    );
    metric(
        o,
        "sockets_open",
        "gauge",
        "TCP connections held (handshakes, sessions, closings, HTTP).",
        gauges.open_sockets as u64,
    );
    metric(
        o,
        "tcp_accepted_total",
        "counter",
        "TCP connections accepted.",
        shell.tcp_accepted,
    );
    counter_by(
        o,
        "accept_errors_total",
        "reason",
        "Failed accept() calls, by reason (after each the listener backs off).",
        AcceptError::ALL.map(|r| (r.label(), shell.accept_errors[r as usize])),
    );
    counter_by(
        o,
        "refusals_total",
        "reason",
        "Clients refused before a WebSocket opened, by reason.",
        RefusalReason::ALL.map(|r| (r.label(), shell.refusals[r as usize])),
    );
    counter_by(
        o,
        "evictions_total",
        "kind",
        "Incomplete connections dropped to make room for a new client, by kind.",
        [Held::Handshake, Held::Http].map(|k| (k.label(), shell.evictions[k.index()])),
    );
    metric(
        o,
        "messages_received_total",
        "counter",
        "Data frames received from clients.",
        shell.messages_in,
    );
    metric(
        o,
        "messages_sent_total",
        "counter",
        "Data frames queued for clients.",
        shell.messages_out,
    );
    metric(
        o,
        "bytes_received_total",
        "counter",
        "Bytes read from client sockets.",
        shell.bytes_in,
    );
    metric(
        o,
        "bytes_sent_total",
        "counter",
        "WebSocket frame bytes queued for clients.",
        shell.bytes_out,
    );
    metric(
        o,
        "auth_failures_total",
        "counter",
        "Failed auth messages.",
        hub.stats.auth_failures,
    );
    metric(
        o,
        "rate_limited_total",
        "counter",
        "Messages refused with rate_limited.",
        hub.stats.rate_limited,
    );
    metric(
        o,
        "flood_closes_total",
        "counter",
        "Clients closed 4008 for sending far over the rate limit.",
        hub.stats.flood_closes,
    );
    metric(
        o,
        "slow_reader_closes_total",
        "counter",
        "Clients closed 4009 for reading too slowly.",
        shell.slow_reader_closes,
    );
    metric(
        o,
        "compressed_messages_total",
        "counter",
        "Messages deflated for permessage-deflate clients; a broadcast counts once.",
        shell.compressed_messages,
    );
    metric(
        o,
        "idle_closes_total",
        "counter",
        "Clients closed 1001 after idle_timeout_s of silence.",
        shell.idle_closes,
    );
    let hosts = hub.hosts();
    metric(
        o,
        "hosts",
        "gauge",
        "Registered hosts.",
        hosts.host_count() as u64,
    );
    metric(
        o,
        "host_requests_total",
        "counter",
        "Client requests forwarded to a host.",
        hosts.requests_forwarded,
    );
    metric(
        o,
        "host_timeouts_total",
        "counter",
        "Forwarded requests answered host_timeout.",
        hosts.requests_timed_out,
    );
    metric(
        o,
        "host_requests_pending",
        "gauge",
        "Forwarded requests waiting for a host.",
        hosts.pending_len() as u64,
    );
    metric(
        o,
        "rooms_active",
        "gauge",
        "Rooms with at least one member.",
        hub.active_rooms() as u64,
    );
    metric(
        o,
        "buffer_pool_lent",
        "gauge",
        "Pooled buffers lent to connections.",
        gauges.pool_lent as u64,
    );
    metric(
        o,
        "buffer_pool_free",
        "gauge",
        "Pooled buffers free for reuse.",
        gauges.pool_free as u64,
    );
    metric(
        o,
        "http_requests_total",
        "counter",
        "Requests answered on the HTTP endpoints.",
        shell.http_requests,
    );
    render_activity(o, hub, now_unix);
    if let Some(tap) = hub.cluster() {
        cluster_metrics(o, &tap.status);
    }
    out
}

/// Seed 003's figures: sessions in the last 24 h, messages in the last
/// minute, and a histogram of how long sessions lasted.
fn render_activity(o: &mut String, hub: &Hub, now_unix: u64) {
    let activity = &hub.activity;
    metric(
        o,
        "connections_last_24h",
        "gauge",
        "WebSocket sessions opened in the last 24 hours (counted per hour).",
        activity.opened.sum(now_unix),
    );
    metric(
        o,
        "messages_per_minute",
        "gauge",
        "Client messages received in the last 60 seconds.",
        activity.messages.sum(now_unix),
    );
    let name = "tether_connection_duration_seconds";
    let _ = writeln!(
        o,
        "# HELP {name} How long ended WebSocket sessions lasted.
# TYPE {name} histogram"
    );
    let mut cumulative = 0;
    for (bound, count) in DURATION_BUCKETS_S.iter().zip(&activity.durations) {
        cumulative += count;
        let _ = writeln!(o, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {}", activity.ended);
    let _ = writeln!(o, "{name}_sum {}", activity.duration_sum_s);
    let _ = writeln!(o, "{name}_count {}", activity.ended);
}
