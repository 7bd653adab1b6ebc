//! The `settings.json` schema (SPEC §2) with the SPEC's defaults, and its
//! redacted forms for logs and `check-config`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::cluster::ClusterSettings;
use super::hosts::BridgedHost;

pub use super::errors::REDACTED;

/// Minimum length of a JWT HMAC secret, in bytes.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

// Dotted key paths used in error messages.
pub(super) const KEY_JWT_SECRET: &str = "server.websocket.auth.jwt_secret";
pub(super) const KEY_JWT_SECRET_FILE: &str = "server.websocket.auth.jwt_secret_file";

/// The whole `settings.json` document. Unknown keys here and in `server` are
/// a bot's own settings beside tether's (SPEC §13): ignored, and listed in
/// `ignored_keys` so that each gets one warning.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, expecting = "a JSON object")]
pub struct Settings {
    pub server: ServerSettings,
    pub limits: Limits,
    pub rooms: RoomsSettings,
    pub host: HostSettings,
    pub log: LogSettings,
    /// Bridged hosts (SPEC §11); not shown when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<BridgedHost>,
    /// SPEC §9; left out of the serialized form while at its defaults, so
    /// that a §2 document round-trips as written ([`Settings::full_value`]
    /// and the redacted forms always show it).
    #[serde(skip_serializing_if = "ClusterSettings::is_default")]
    pub cluster: ClusterSettings,
    /// Dotted paths of the unknown keys that were ignored (not settings).
    #[serde(skip)]
    pub ignored_keys: Vec<String>,
}

/// Every block of [`Settings`], `cluster` included even at its defaults.
#[derive(Serialize)]
struct Shown<'a> {
    server: &'a ServerSettings,
    limits: &'a Limits,
    rooms: &'a RoomsSettings,
    host: &'a HostSettings,
    log: &'a LogSettings,
    #[serde(skip_serializing_if = "<[BridgedHost]>::is_empty")]
    hosts: &'a [BridgedHost],
    cluster: &'a ClusterSettings,
}

impl<'a> From<&'a Settings> for Shown<'a> {
    fn from(s: &'a Settings) -> Self {
        Shown {
            server: &s.server,
            limits: &s.limits,
            rooms: &s.rooms,
            host: &s.host,
            log: &s.log,
            hosts: &s.hosts,
            cluster: &s.cluster,
        }
    }
}

/// `server`: the two listeners.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, expecting = "a JSON object")]
pub struct ServerSettings {
    pub websocket: WebSocketSettings,
    pub health: HealthSettings,
}

/// `server.websocket`: the client listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
pub struct WebSocketSettings {
    pub host: String,
    /// 0 asks the OS for a free port (used by tests).
    pub port: u16,
    pub auth: AuthSettings,
    pub tls: TlsSettings,
    pub compression: CompressionSettings,
    /// The message dialect of this listener's clients (SPEC §13).
    #[serde(skip_serializing_if = "Envelope::is_default")]
    pub envelope: Envelope,
    /// Reverse proxies whose `X-Forwarded-For` / `X-Real-IP` name the client.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        WebSocketSettings {
            host: "localhost".to_string(),
            port: 8080,
            auth: AuthSettings::default(),
            tls: TlsSettings::default(),
            compression: CompressionSettings::default(),
            envelope: Envelope::default(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// `server.websocket.envelope`: `{"event", "data"}` (SPEC §4) or the flat
/// `{"action", ...fields}` of seed 004's clients.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Envelope {
    #[default]
    Event,
    Action,
}

impl Envelope {
    fn is_default(&self) -> bool {
        *self == Envelope::Event
    }
}

/// `server.websocket.auth.jwt_claims`: the token claim that carries each of
/// tether's (a Django SimpleJWT token names its subject `user_id`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
pub struct JwtClaims {
    pub sub: String,
    pub permissions: String,
    pub rooms: String,
    pub role: String,
}

impl Default for JwtClaims {
    fn default() -> Self {
        JwtClaims {
            sub: "sub".to_string(),
            permissions: "permissions".to_string(),
            rooms: "rooms".to_string(),
            role: "role".to_string(),
        }
    }
}

impl JwtClaims {
    pub fn is_default(&self) -> bool {
        *self == JwtClaims::default()
    }
}

/// `server.websocket.auth`. Debug is written by hand so secrets never reach logs.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
pub struct AuthSettings {
    /// Comma-separated addresses / CIDR blocks, or `*`; see [`super::parse_allowed_ips`].
    pub allowed_ip: String,
    pub password: Option<String>,
    pub password_permissions: Vec<String>,
    pub jwt_secret: Option<String>,
    pub jwt_secret_file: Option<PathBuf>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub auth_timeout_ms: u64,
    /// Empty means any origin.
    pub allowed_origins: Vec<String>,
    /// The connect proxy (SPEC §11): handshakes without a token are POSTed here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    #[serde(skip_serializing_if = "JwtClaims::is_default")]
    pub jwt_claims: JwtClaims,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            allowed_ip: "127.0.0.1,::1".to_string(),
            password: None,
            password_permissions: vec!["admin".to_string()],
            jwt_secret: None,
            jwt_secret_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            auth_timeout_ms: 10_000,
            allowed_origins: Vec::new(),
            proxy_url: None,
            jwt_claims: JwtClaims::default(),
        }
    }
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("allowed_ip", &self.allowed_ip)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("password_permissions", &self.password_permissions)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| REDACTED))
            .field("jwt_secret_file", &self.jwt_secret_file)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("auth_timeout_ms", &self.auth_timeout_ms)
            .field("allowed_origins", &self.allowed_origins)
            .field("proxy_url", &self.proxy_url)
            .field("jwt_claims", &self.jwt_claims)
            .finish()
    }
}

/// `server.websocket.tls`: `cert` and `key` go together.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
pub struct TlsSettings {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub self_signed: bool,
}

/// `server.websocket.compression`: permessage-deflate (SPEC §12).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
pub struct CompressionSettings {
    pub enabled: bool,
    /// Messages shorter than this go uncompressed.
    pub min_bytes: usize,
}

impl Default for CompressionSettings {
    fn default() -> Self {
        CompressionSettings {
            enabled: false,
            min_bytes: 256,
        }
    }
}

/// `server.health`: the HTTP listener of SPEC §7.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
pub struct HealthSettings {
    pub host: String,
    pub port: u16,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            host: "localhost".to_string(),
            port: 8081,
        }
    }
}

/// `limits`: every buffer and rate bound.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: u32,
    pub max_connects_per_ip_per_hour: u32,
    pub max_messages_per_minute: u32,
    pub max_message_bytes: usize,
    pub max_outbound_bytes: usize,
    pub idle_timeout_s: u64,
    pub ping_interval_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_connections_per_ip: 5,
            max_connects_per_ip_per_hour: 600,
            max_messages_per_minute: 60,
            max_message_bytes: 65_536,
            max_outbound_bytes: 262_144,
            idle_timeout_s: 60,
            ping_interval_s: 20,
        }
    }
}

/// `rooms`: role name -> room names (`{sub}` is replaced by the token's `sub`),
/// request path template -> room names (`{name}` is one path segment), and
/// the history and presence of SPEC §10.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
pub struct RoomsSettings {
    pub by_role: BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_path: BTreeMap<String, Vec<String>>,
    pub history: HistorySettings,
    pub presence: PresenceSettings,
}

/// `rooms.history`: the last `size` messages of every room for `ttl_s`
/// seconds, within `max_bytes` for all rooms together; `size` 0 is off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
pub struct HistorySettings {
    pub size: usize,
    pub ttl_s: u64,
    pub max_bytes: usize,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            size: 0,
            ttl_s: 300,
            max_bytes: 8 << 20,
        }
    }
}

/// `rooms.presence`: `presence.join`/`presence.leave` notices, for rooms of
/// at most `notify_max_members` members.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
pub struct PresenceSettings {
    pub enabled: bool,
    pub notify_max_members: usize,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        PresenceSettings {
            enabled: false,
            notify_max_members: 100,
        }
    }
}

/// `host`: the host connection (SPEC §6).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
pub struct HostSettings {
    pub request_timeout_ms: u64,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            request_timeout_ms: 5_000,
        }
    }
}

/// `log`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
pub struct LogSettings {
    /// off, error, warn, info, debug or trace (any case).
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".to_string(),
        }
    }
}

impl Settings {
    /// The log level; `info` if the (unvalidated) value is not a level.
    pub fn level_filter(&self) -> log::LevelFilter {
        self.log.level.parse().unwrap_or(log::LevelFilter::Info)
    }

    /// The effective settings as JSON with `password` and `jwt_secret` replaced
    /// by `"<redacted>"` when set (null stays null). Keys come out sorted.
    pub fn redacted(&self) -> serde_json::Value {
        // Only a non-UTF-8 path could fail here; settings come from JSON, so
        // this is unreachable in practice, but stay panic-free.
        self.redacted_copy().full_value()
    }

    /// Every key as JSON, unredacted (for comparing two settings on reload).
    pub fn full_value(&self) -> serde_json::Value {
        // Only a non-UTF-8 path could fail here; settings come from JSON, so
        // this is unreachable in practice, but stay panic-free.
        serde_json::to_value(Shown::from(self)).unwrap_or_else(|e| {
            serde_json::Value::String(format!("<settings cannot be shown: {e}>"))
        })
    }

    /// [`Settings::redacted`] as pretty-printed JSON in the SPEC's key order
    /// (for `check-config`).
    pub fn redacted_pretty(&self) -> String {
        serde_json::to_string_pretty(&Shown::from(&self.redacted_copy()))
            .unwrap_or_else(|e| format!("<settings cannot be shown: {e}>"))
    }

    fn redacted_copy(&self) -> Settings {
        let mut copy = self.clone();
        let auth = &mut copy.server.websocket.auth;
        if auth.password.is_some() {
            auth.password = Some(REDACTED.to_string());
        }
        if auth.jwt_secret.is_some() {
            auth.jwt_secret = Some(REDACTED.to_string());
        }
        copy.cluster = copy.cluster.redacted();
        copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::testing::parse;

    #[test]
    fn defaults_match_spec() {
        let spec = r#"{
          "server": {
            "websocket": {
              "host": "localhost",
              "port": 8080,
              "auth": {
                "allowed_ip": "127.0.0.1,::1",
                "password": null,
                "password_permissions": ["admin"],
                "jwt_secret": null,
                "jwt_secret_file": null,
                "jwt_issuer": null,
                "jwt_audience": null,
                "auth_timeout_ms": 10000,
                "allowed_origins": []
              },
              "tls": { "cert": null, "key": null, "self_signed": false },
              "compression": { "enabled": false, "min_bytes": 256 }
            },
            "health": { "host": "localhost", "port": 8081 }
          },
          "limits": {
            "max_connections": 1024,
            "max_connections_per_ip": 5,
            "max_connects_per_ip_per_hour": 600,
            "max_messages_per_minute": 60,
            "max_message_bytes": 65536,
            "max_outbound_bytes": 262144,
            "idle_timeout_s": 60,
            "ping_interval_s": 20
          },
          "rooms": {
            "by_role": {},
            "history": { "size": 0, "ttl_s": 300, "max_bytes": 8388608 },
            "presence": { "enabled": false, "notify_max_members": 100 }
          },
          "host": { "request_timeout_ms": 5000 },
          "log": { "level": "info" }
        }"#;
        let from_spec = parse(spec).unwrap();
        assert_eq!(from_spec, Settings::default());
        assert_eq!(parse("{}").unwrap(), Settings::default());
        // Serializing the defaults gives the SPEC document back.
        let spec_value: serde_json::Value = serde_json::from_str(spec).unwrap();
        assert_eq!(
            serde_json::to_value(Settings::default()).unwrap(),
            spec_value
        );
        assert_eq!(Settings::default().validate(), Ok(()));
        assert_eq!(Settings::default().level_filter(), log::LevelFilter::Info);
    }

    #[test]
    fn redaction() {
        let mut settings = Settings::default();
        let redacted = settings.redacted();
        assert_eq!(
            redacted["server"]["websocket"]["auth"]["password"],
            serde_json::Value::Null
        );
        assert_eq!(
            redacted["server"]["websocket"]["auth"]["jwt_secret"],
            serde_json::Value::Null
        );

        settings.server.websocket.auth.password = Some("MineAcademy".to_string());
        settings.server.websocket.auth.jwt_secret =
            Some("s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t".to_string());
        let redacted = settings.redacted();
        assert_eq!(
            redacted["server"]["websocket"]["auth"]["password"],
            REDACTED
        );
        assert_eq!(
            redacted["server"]["websocket"]["auth"]["jwt_secret"],
            REDACTED
        );
        assert_eq!(redacted["limits"]["max_connections"], 1024);
        let text = redacted.to_string();
        assert!(!text.contains("MineAcademy") && !text.contains("s3cr3t"));
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("MineAcademy") && !debug.contains("s3cr3t"),
            "{debug}"
        );
        assert!(debug.contains(REDACTED));
        let pretty = settings.redacted_pretty();
        assert!(!pretty.contains("MineAcademy") && !pretty.contains("s3cr3t"));
        assert!(pretty.contains(REDACTED));
        assert!(
            pretty.find("\"server\"") < pretty.find("\"limits\""),
            "SPEC order"
        );
        let reparsed: serde_json::Value = serde_json::from_str(&pretty).unwrap();
        assert_eq!(reparsed, redacted);
    }
}
