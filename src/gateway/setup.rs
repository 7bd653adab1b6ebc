//! From settings to the running gateway: the shell's and the core's
//! configurations, and what a SIGHUP reload may change.

use super::broker::BrokerAddress;
use super::config::{ReloadError, Reloaded, ShellConfig};
use crate::proto::auth::Authenticator;
use crate::proto::cluster::gather::MAX_GATHERS;
use crate::proto::cluster::hosts::bytes_bound as cluster_hosts_bytes;
use crate::proto::cluster::{memory_ceiling, ClusterTap, Node, NodeConfig};
use crate::proto::history::HistoryConfig;
use crate::proto::hub::{Hub, HubConfig, PresenceConfig, RoomFeatures};
use crate::settings::{self, ConfigSource, IpAllowList, Settings};
use log::{info, warn};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

/// Keys a running process cannot change (listening sockets): a reload that
/// changes them keeps the old values and says a restart is needed.
const RESTART_ONLY: &[&str] = &[
    "server.websocket.host",
    "server.websocket.port",
    "server.websocket.tls",
    "server.health",
    // Bridged programs and backends are started once (SPEC §11).
    "hosts",
    // The broker link, the node's identity and its heartbeat are set up once.
    "cluster",
    // Rings, offsets and the history budget in the logged ceiling stay as started.
    "rooms.history",
];

/// The cluster node of SPEC §9, when `cluster.redis` is set: its name
/// (logged), the JWT secret's keyed fingerprint, and the broker's address
/// resolved once. The hub starts tapping room messages for it.
pub fn cluster_node(
    s: &Settings,
    secret: &[u8],
    hub: &mut Hub,
) -> Result<Option<(Node, BrokerAddress)>, String> {
    let cluster = &s.cluster;
    let Some(target) = cluster.target() else {
        return Ok(None);
    };
    let address = BrokerAddress::resolve(&target).map_err(|e| format!("cluster.redis: {e}"))?;
    let rng = SystemRandom::new();
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes)
        .map_err(|_| "cluster: no randomness for the node's instance id".to_string())?;
    let name = match &cluster.node {
        Some(name) => name.clone(),
        None => settings::default_node_name(&host_name(), u16::from_be_bytes([bytes[0], bytes[1]])),
    };
    let fingerprint_key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&fingerprint_key, b"tether cluster fingerprint v1");
    let cfg = NodeConfig {
        name: name.clone(),
        prefix: cluster.prefix.clone(),
        heartbeat_ms: cluster.heartbeat_ms,
        max_forward_bytes: cluster.max_forward_bytes,
        max_payload_bytes: s.limits.max_message_bytes + 1024,
        fingerprint: hex(&tag.as_ref()[..16]),
        instance: hex(&bytes[2..10]),
        user: target.user.clone(),
        password: target.password.clone(),
        db: target.db,
    };
    info!(
        "cluster: node {name}, broker {target}, prefix {:?}, heartbeat every {} ms",
        cluster.prefix, cluster.heartbeat_ms
    );
    // The hub's side: forwards, directed requests and host messages (each
    // within max_forward_bytes), the host.clients gathers, and the tables of
    // hosts cluster-wide.
    let hub_side = 3 * cluster.max_forward_bytes
        + MAX_GATHERS * hub.config().max_reply_bytes
        + cluster_hosts_bytes();
    let ceiling = memory_ceiling(&cfg) + hub_side;
    info!(
        "cluster memory ceiling: {ceiling} bytes ({} MiB) for the broker links and forward queues",
        ceiling.div_ceil(1 << 20)
    );
    hub.enable_cluster(ClusterTap::new(&name, cluster.max_forward_bytes));
    let seed = u64::from_be_bytes([
        bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15],
    ]);
    Ok(Some((Node::new(cfg, seed), address)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// This machine's host name, or "node" when the OS will not say.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "node".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

pub fn authenticator(s: &Settings, secret: &[u8]) -> Authenticator {
    let auth = &s.server.websocket.auth;
    Authenticator::new(
        secret,
        auth.jwt_issuer.clone(),
        auth.jwt_audience.clone(),
        auth.password.as_deref(),
        &auth.password_permissions,
        s.rooms.by_role.clone(),
    )
    .with_claim_names(s.claim_names())
}

pub fn hub_config(s: &Settings, secret: &[u8]) -> HubConfig {
    HubConfig {
        auth: authenticator(s, secret),
        auth_timeout_ms: s.server.websocket.auth.auth_timeout_ms,
        max_messages_per_minute: s.limits.max_messages_per_minute,
        request_timeout_ms: s.host.request_timeout_ms,
        server_name: crate::server_name(),
        compat: s.compat(),
        max_reply_bytes: crate::proto::hub::reply_budget(s.limits.max_outbound_bytes),
        features: room_features(s),
    }
}

/// `rooms.history` and `rooms.presence`, with this process's epoch tag.
pub fn room_features(s: &Settings) -> RoomFeatures {
    let (history, presence) = (&s.rooms.history, &s.rooms.presence);
    RoomFeatures {
        history: HistoryConfig {
            size: history.size,
            ttl_ms: history.ttl_s.saturating_mul(1000),
            max_bytes: history.max_bytes,
            epoch_tag: epoch_tag(),
        },
        presence: PresenceConfig {
            enabled: presence.enabled,
            notify_max_members: presence.notify_max_members,
        },
    }
}

/// A value that differs between process starts (a randomly keyed hash of
/// the time and the process id): history is lost at a restart, so epochs
/// must change.
fn epoch_tag() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

pub fn shell_config(s: &Settings, allow: IpAllowList) -> ShellConfig {
    let limits = &s.limits;
    let auth = &s.server.websocket.auth;
    ShellConfig {
        max_connections: limits.max_connections,
        max_connections_per_ip: limits.max_connections_per_ip,
        max_connects_per_ip_per_hour: limits.max_connects_per_ip_per_hour,
        max_message_bytes: limits.max_message_bytes,
        max_outbound_bytes: limits.max_outbound_bytes,
        idle_timeout_ms: limits.idle_timeout_s.saturating_mul(1000),
        ping_interval_ms: limits.ping_interval_s.saturating_mul(1000),
        // A client gets as long to send its request head as to authenticate.
        handshake_timeout_ms: auth.auth_timeout_ms,
        allow,
        origins: s.origin_policy(),
        // Validated with the other settings: a list that does not parse trusts no one.
        trusted_proxies: s.trusted_proxies().unwrap_or_default(),
        compression: s.server.websocket.compression.enabled,
        compression_min_bytes: s.server.websocket.compression.min_bytes,
        history_bytes: history_bytes_bound(s),
        bridged_bytes: super::bridges::bridged_bytes_bound(s),
    }
}

/// What the room histories hold at most: nothing when off, else
/// `max_bytes` (overheads counted) and one message over it while it is
/// being added.
fn history_bytes_bound(s: &Settings) -> usize {
    let history = &s.rooms.history;
    if history.size == 0 {
        return 0;
    }
    let one = s.limits.max_message_bytes + crate::proto::history::ENTRY_OVERHEAD;
    history.max_bytes
        + one
        + crate::proto::history::ROOM_OVERHEAD
        + crate::proto::hub::MAX_ROOM_NAME
}

/// Leaf keys (dotted paths) whose values differ between two JSON documents.
fn changed_paths(old: &Value, new: &Value, path: &mut String, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys = a.keys().chain(b.keys().filter(|k| !a.contains_key(*k)));
            for key in keys {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                let null = Value::Null;
                changed_paths(
                    a.get(key).unwrap_or(&null),
                    b.get(key).unwrap_or(&null),
                    path,
                    out,
                );
                path.truncate(len);
            }
        }
        (a, b) if a != b => out.push(path.clone()),
        _ => {}
    }
}

fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .try_fold(value, |v, key| v.get(key))
        .unwrap_or(&Value::Null)
}

fn restart_only(path: &str) -> bool {
    RESTART_ONLY
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}.")))
}

/// Re-reads the settings on each call and returns what to apply. Changes are
/// logged key by key; secrets by name only. A bad file is an error and the
/// caller keeps what it runs with.
pub struct Reloader {
    source: ConfigSource,
    current: Settings,
}

impl Reloader {
    pub fn new(source: ConfigSource, current: Settings) -> Reloader {
        Reloader { source, current }
    }

    pub fn reload(&mut self) -> Result<Reloaded, ReloadError> {
        let mut next =
            settings::load(&self.source).map_err(|e| ReloadError::Settings(e.to_string()))?;
        for key in &next.ignored_keys {
            warn!("reload: settings: {}", settings::ignored_key_warning(key));
        }
        let (old, new) = (self.current.full_value(), next.full_value());
        let mut paths = Vec::new();
        changed_paths(&old, &new, &mut String::new(), &mut paths);
        // Listening sockets stay as they are until a restart.
        next.server.websocket.host = self.current.server.websocket.host.clone();
        next.server.websocket.port = self.current.server.websocket.port;
        next.server.websocket.tls = self.current.server.websocket.tls.clone();
        next.server.health = self.current.server.health.clone();
        next.cluster = self.current.cluster.clone();
        // Bridged hosts are started once: the running ones stay counted.
        next.hosts = self.current.hosts.clone();
        let (secret, secret_source) = next
            .resolve_jwt_secret(|k| std::env::var(k).ok(), &settings::state_dir())
            .map_err(|e| ReloadError::Secret(e.to_string()))?;
        let allow = next
            .allowed_ips()
            .map_err(|e| ReloadError::AllowList(e.to_string()))?;
        let (old_shown, new_shown) = (self.current.redacted(), next.redacted());
        let mut applied = Vec::new();
        for path in &paths {
            if restart_only(path) {
                warn!(
                    "reload: {path} changes only at restart; keeping {}",
                    at(&old_shown, path)
                );
                continue;
            }
            let secret =
                at(&new_shown, path) != at(&new, path) || at(&old_shown, path) != at(&old, path);
            if secret {
                applied.push(format!("{path} (secret)"));
            } else {
                applied.push(format!("{path}: {} -> {}", at(&old, path), at(&new, path)));
            }
        }
        if applied.is_empty() {
            info!("reloaded {}: nothing changed", self.source);
        } else {
            info!("reloaded {}: {}", self.source, applied.join("; "));
        }
        info!("jwt secret from {secret_source}");
        let reloaded = Reloaded {
            shell: shell_config(&next, allow),
            hub: hub_config(&next, &secret),
            level: next.level_filter(),
        };
        self.current = next;
        Ok(reloaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_changed_leaves_by_dotted_path() {
        let old = json!({"a": {"b": 1, "c": [1]}, "d": null});
        let new = json!({"a": {"b": 2, "c": [1]}, "d": "x", "e": true});
        let mut out = Vec::new();
        changed_paths(&old, &new, &mut String::new(), &mut out);
        assert_eq!(out, vec!["a.b", "d", "e"]);
    }

    #[test]
    fn listening_keys_need_a_restart() {
        assert!(restart_only("server.websocket.port"));
        assert!(restart_only("server.health.port"));
        assert!(restart_only("server.websocket.tls.cert"));
        assert!(!restart_only("server.websocket.auth.allowed_ip"));
        assert!(!restart_only("server.websocket.hostname"));
        assert!(restart_only("cluster.redis"));
        assert!(restart_only("cluster.heartbeat_ms"));
        assert!(restart_only("rooms.history.size"));
        assert!(!restart_only("rooms.presence.enabled"));
    }
}
