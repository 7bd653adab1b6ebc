//! The `cluster` block (SPEC §9): several nodes over one Redis.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::errors::SettingError;
use super::redis_url::{redact_url, RedisTarget};

/// Longest `cluster.node`.
pub const MAX_NODE_NAME: usize = 32;
/// Longest `cluster.prefix`.
const MAX_PREFIX: usize = 64;
const MIN_HEARTBEAT_MS: u64 = 10;
const MAX_HEARTBEAT_MS: u64 = 600_000;
const MIN_FORWARD_BYTES: usize = 1024;
const MAX_FORWARD_BYTES: usize = 1024 * 1024 * 1024;

/// `cluster`. Debug is written by hand so the Redis password never reaches logs.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
pub struct ClusterSettings {
    /// `null` runs a single node.
    pub redis: Option<String>,
    /// Default: the host name and 4 random hex digits.
    pub node: Option<String>,
    pub prefix: String,
    pub heartbeat_ms: u64,
    pub max_forward_bytes: usize,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            redis: None,
            node: None,
            prefix: "tether".to_string(),
            heartbeat_ms: 3000,
            max_forward_bytes: 1_048_576,
        }
    }
}

impl fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("redis", &self.redis.as_deref().map(redact_url))
            .field("node", &self.node)
            .field("prefix", &self.prefix)
            .field("heartbeat_ms", &self.heartbeat_ms)
            .field("max_forward_bytes", &self.max_forward_bytes)
            .finish()
    }
}

impl ClusterSettings {
    /// True when every key is at its default (the block is then not serialized,
    /// so a settings document without it round-trips unchanged).
    pub fn is_default(&self) -> bool {
        *self == ClusterSettings::default()
    }

    /// The parsed `redis`, if set and valid.
    pub fn target(&self) -> Option<RedisTarget> {
        self.redis
            .as_deref()
            .and_then(|u| RedisTarget::parse(u).ok())
    }

    /// A copy with the Redis password replaced by `<redacted>`.
    pub fn redacted(&self) -> ClusterSettings {
        ClusterSettings {
            redis: self.redis.as_deref().map(redact_url),
            ..self.clone()
        }
    }

    pub(super) fn check(&self, errors: &mut Vec<SettingError>) {
        if let Some(url) = &self.redis {
            if let Err(reason) = RedisTarget::parse(url) {
                errors.push(SettingError::new("cluster.redis", reason));
            }
        }
        if let Some(node) = &self.node {
            if let Err(reason) = check_node_name(node) {
                errors.push(SettingError::new("cluster.node", reason));
            }
        }
        let prefix_ok = !self.prefix.is_empty()
            && self.prefix.len() <= MAX_PREFIX
            && self.prefix.bytes().all(|b| b.is_ascii_graphic());
        if !prefix_ok {
            errors.push(SettingError::new(
                "cluster.prefix",
                format!("must be 1 to {MAX_PREFIX} printable characters without spaces"),
            ));
        }
        if !(MIN_HEARTBEAT_MS..=MAX_HEARTBEAT_MS).contains(&self.heartbeat_ms) {
            errors.push(SettingError::new(
                "cluster.heartbeat_ms",
                format!("must be from {MIN_HEARTBEAT_MS} to {MAX_HEARTBEAT_MS} (milliseconds)"),
            ));
        }
        if !(MIN_FORWARD_BYTES..=MAX_FORWARD_BYTES).contains(&self.max_forward_bytes) {
            errors.push(SettingError::new(
                "cluster.max_forward_bytes",
                format!("must be from {MIN_FORWARD_BYTES} to {MAX_FORWARD_BYTES} (bytes)"),
            ));
        }
    }
}

/// Letters, digits, `-`, `_`; 1 to 32 of them.
pub fn check_node_name(node: &str) -> Result<(), String> {
    let ok = !node.is_empty()
        && node.len() <= MAX_NODE_NAME
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be 1 to {MAX_NODE_NAME} letters, digits, '-' or '_'"
        ))
    }
}

/// The default node name: the host name cut to what `cluster.node` allows,
/// then `-` and 4 hex digits from `random`.
pub fn default_node_name(host_name: &str, random: u16) -> String {
    let mut base: String = host_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_NODE_NAME - 5)
        .collect();
    if base.is_empty() {
        base.push_str("node");
    }
    format!("{base}-{random:04x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::testing::{keys, parse};
    use crate::settings::SettingsErrors;

    #[test]
    fn defaults_and_every_bad_value() {
        let s = parse(r#"{"cluster":{}}"#).unwrap();
        assert!(s.cluster.is_default());
        assert_eq!(s.cluster.prefix, "tether");
        assert_eq!(s.cluster.heartbeat_ms, 3000);
        assert_eq!(s.cluster.max_forward_bytes, 1_048_576);
        let errors = parse(
            r#"{"cluster":{"redis":"redis://u:pw-in-the-clear@h:x","node":"a b",
                "prefix":"","heartbeat_ms":1,"max_forward_bytes":10}}"#,
        )
        .unwrap()
        .validate()
        .unwrap_err();
        assert_eq!(
            keys(&errors),
            vec![
                "cluster.redis",
                "cluster.node",
                "cluster.prefix",
                "cluster.heartbeat_ms",
                "cluster.max_forward_bytes"
            ]
        );
        assert!(!errors.to_string().contains("pw-in-the-clear"));
        let errors: SettingsErrors = parse(r#"{"cluster":{"nodes":1}}"#).unwrap_err();
        assert_eq!(keys(&errors), vec!["cluster.nodes"]);
        assert!(parse(r#"{"cluster":[]}"#).is_err());
    }

    #[test]
    fn node_names() {
        assert!(check_node_name("pi-1_a").is_ok());
        assert!(check_node_name(&"x".repeat(33)).is_err());
        assert!(check_node_name("").is_err());
        let name = default_node_name("raspberrypi.local", 0xab);
        assert_eq!(name, "raspberrypi-local-00ab");
        assert!(check_node_name(&default_node_name(&"h".repeat(80), 1)).is_ok());
        assert!(check_node_name(&default_node_name("", 1)).is_ok());
    }

    #[test]
    fn debug_and_redacted_hide_the_password() {
        let c = ClusterSettings {
            redis: Some("redis://:topsecretpw@h:1".into()),
            ..ClusterSettings::default()
        };
        assert!(!format!("{c:?}").contains("topsecretpw"));
        assert_eq!(
            c.redacted().redis.as_deref(),
            Some("redis://:<redacted>@h:1/0")
        );
        assert!(c.target().is_some());
        let settings = crate::settings::Settings {
            cluster: c,
            ..Default::default()
        };
        let pretty = settings.redacted_pretty();
        assert!(pretty.contains("\"cluster\"") && !pretty.contains("topsecretpw"));
        assert!(!settings.redacted().to_string().contains("topsecretpw"));
        assert!(crate::settings::Settings::default().redacted()["cluster"]["redis"].is_null());
    }
}
