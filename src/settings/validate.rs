//! Checking every value of parsed settings, reporting all problems at once.

use super::allow_list::parse_allowed_ips;
use super::errors::{SettingError, SettingsErrors};
use super::schema::{Settings, KEY_JWT_SECRET, KEY_JWT_SECRET_FILE, MIN_JWT_SECRET_BYTES};
use crate::proto::frame::MAX_HEADER;

/// Minimum length of the client password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;

const MIN_MESSAGE_BYTES: usize = 125;
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
const MAX_OUTBOUND_BYTES: usize = 1024 * 1024 * 1024;
const MAX_CONNECTIONS: usize = 1_000_000;
const MAX_HISTORY_SIZE: usize = 100_000;
const MAX_HISTORY_BYTES: usize = 1 << 30;

pub(super) const LOG_LEVELS: &str = "off, error, warn, info, debug, trace";

impl Settings {
    /// Checks every value; returns all problems, not just the first.
    pub fn validate(&self) -> Result<(), SettingsErrors> {
        let mut errors = Vec::new();
        let mut fail = |key: &str, reason: String| errors.push(SettingError::new(key, reason));

        let ws = &self.server.websocket;
        let auth = &ws.auth;
        if ws.host.trim().is_empty() {
            fail("server.websocket.host", host_reason());
        }
        if self.server.health.host.trim().is_empty() {
            fail("server.health.host", host_reason());
        }

        if let Err(reason) = parse_allowed_ips(&auth.allowed_ip) {
            fail("server.websocket.auth.allowed_ip", reason);
        }
        if let Some(password) = &auth.password {
            // Counts characters, never shows them.
            if password.chars().count() < MIN_PASSWORD_CHARS {
                fail(
                    "server.websocket.auth.password",
                    format!(
                        "must be at least {MIN_PASSWORD_CHARS} characters; \
                         use null to disable password login"
                    ),
                );
            }
        }
        for (i, permission) in auth.password_permissions.iter().enumerate() {
            if permission.trim().is_empty() {
                fail(
                    &format!("server.websocket.auth.password_permissions[{i}]"),
                    "must not be empty; expected a permission name such as \"admin\"".into(),
                );
            }
        }
        if let Some(secret) = &auth.jwt_secret {
            if secret.len() < MIN_JWT_SECRET_BYTES {
                fail(KEY_JWT_SECRET, short_jwt_secret(KEY_JWT_SECRET).reason);
            }
        }
        if let Some(file) = &auth.jwt_secret_file {
            if file.as_os_str().is_empty() {
                fail(
                    KEY_JWT_SECRET_FILE,
                    "must not be empty; expected a file path or null".into(),
                );
            }
        }
        for (key, value) in [
            ("server.websocket.auth.jwt_issuer", &auth.jwt_issuer),
            ("server.websocket.auth.jwt_audience", &auth.jwt_audience),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                fail(
                    key,
                    "must not be empty; use null to not check this claim".into(),
                );
            }
        }
        if auth.auth_timeout_ms < 1 {
            fail(
                "server.websocket.auth.auth_timeout_ms",
                at_least_one("milliseconds"),
            );
        }
        for (i, origin) in auth.allowed_origins.iter().enumerate() {
            if origin.trim().is_empty() {
                fail(
                    &format!("server.websocket.auth.allowed_origins[{i}]"),
                    "must not be empty; expected an origin such as \"https://example.com\" \
                     (an empty list allows any origin)"
                        .into(),
                );
            }
        }
        if let Some(url) = &auth.proxy_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                fail(
                    "server.websocket.auth.proxy_url",
                    "expected an http:// or https:// URL, or null".into(),
                );
            }
        }
        if ws.tls.cert.is_some() != ws.tls.key.is_some() {
            fail(
                "server.websocket.tls",
                "cert and key must be set together (both paths, or both null)".into(),
            );
        }
        if ws.tls.self_signed && ws.tls.cert.is_some() {
            fail(
                "server.websocket.tls.self_signed",
                "must be false when cert and key are set (use either your files or a generated certificate)"
                    .into(),
            );
        }

        let limits = &self.limits;
        if !(1..=MAX_CONNECTIONS).contains(&limits.max_connections) {
            fail(
                "limits.max_connections",
                format!("must be from 1 to {MAX_CONNECTIONS}"),
            );
        }
        for (key, value) in [
            (
                "limits.max_connections_per_ip",
                limits.max_connections_per_ip,
            ),
            (
                "limits.max_connects_per_ip_per_hour",
                limits.max_connects_per_ip_per_hour,
            ),
            (
                "limits.max_messages_per_minute",
                limits.max_messages_per_minute,
            ),
        ] {
            if value < 1 {
                fail(key, "must be at least 1".into());
            }
        }
        let message_ok =
            (MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&limits.max_message_bytes);
        if !message_ok {
            fail(
                "limits.max_message_bytes",
                format!("must be from {MIN_MESSAGE_BYTES} to {MAX_MESSAGE_BYTES} (16 MiB) bytes"),
            );
        }
        let min_outbound = limits.max_message_bytes.saturating_add(MAX_HEADER);
        if limits.max_outbound_bytes < min_outbound
            || limits.max_outbound_bytes > MAX_OUTBOUND_BYTES
        {
            fail(
                "limits.max_outbound_bytes",
                format!(
                    "must be from {min_outbound} (max_message_bytes + {MAX_HEADER}, \
                     so that one message of the maximal size with its frame header fits) \
                     to {MAX_OUTBOUND_BYTES} (1 GiB) bytes"
                ),
            );
        }
        if limits.idle_timeout_s < 1 {
            fail("limits.idle_timeout_s", at_least_one("seconds"));
        }
        if limits.ping_interval_s < 1 {
            fail("limits.ping_interval_s", at_least_one("seconds"));
        }

        for (role, rooms) in &self.rooms.by_role {
            if role.trim().is_empty() {
                fail(
                    "rooms.by_role",
                    "role names must not be empty; expected {\"ROLE\": [\"room\", ...]}".into(),
                );
            }
            for (i, room) in rooms.iter().enumerate() {
                if room.trim().is_empty() {
                    fail(
                        &format!("rooms.by_role.{role}[{i}]"),
                        "room names must not be empty".into(),
                    );
                }
            }
        }

        let history = &self.rooms.history;
        if history.size > MAX_HISTORY_SIZE {
            fail(
                "rooms.history.size",
                format!("must be from 0 (off) to {MAX_HISTORY_SIZE} messages per room"),
            );
        }
        if history.ttl_s < 1 {
            fail("rooms.history.ttl_s", at_least_one("seconds"));
        }
        if !(1..=MAX_HISTORY_BYTES).contains(&history.max_bytes) {
            fail(
                "rooms.history.max_bytes",
                format!("must be from 1 to {MAX_HISTORY_BYTES} (1 GiB) bytes"),
            );
        }
        if self.rooms.presence.notify_max_members > MAX_CONNECTIONS {
            fail(
                "rooms.presence.notify_max_members",
                format!("must be from 0 to {MAX_CONNECTIONS}"),
            );
        }

        if self.host.request_timeout_ms < 1 {
            fail("host.request_timeout_ms", at_least_one("milliseconds"));
        }

        if self.log.level.parse::<log::LevelFilter>().is_err() {
            fail(
                "log.level",
                format!(
                    "unknown log level {:?}; expected one of {LOG_LEVELS}",
                    self.log.level
                ),
            );
        }

        super::hosts::check_hosts(&self.hosts, &mut errors);
        self.cluster.check(&mut errors);

        errors.extend(self.compat_problems());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SettingsErrors(errors))
        }
    }
}

fn host_reason() -> String {
    "must not be empty; expected an address or a name such as \"localhost\" or \"0.0.0.0\""
        .to_string()
}

fn at_least_one(unit: &str) -> String {
    format!("must be at least 1 ({unit})")
}

pub(super) fn short_jwt_secret(key: &str) -> SettingError {
    SettingError::new(
        key,
        format!(
            "must be at least {MIN_JWT_SECRET_BYTES} bytes; a shorter HMAC secret is guessable"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::testing::{keys, parse};

    #[test]
    fn short_password_error_does_not_echo_it() {
        let mut settings = Settings::default();
        settings.server.websocket.auth.password = Some("Sekr1t!".to_string());
        let errors = settings.validate().unwrap_err();
        assert_eq!(keys(&errors), vec!["server.websocket.auth.password"]);
        let text = errors.to_string();
        assert!(text.contains("at least 8 characters"), "{text}");
        assert!(!text.contains("Sekr1t!"));
        assert!(!format!("{errors:?}").contains("Sekr1t!"));
        // Eight characters, even multi-byte ones, pass.
        settings.server.websocket.auth.password = Some("ééééééé1".to_string());
        assert_eq!(settings.validate(), Ok(()));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"{
          "server": {
            "websocket": {
              "host": "",
              "auth": {
                "allowed_ip": "",
                "password": "short",
                "jwt_secret": "too short",
                "password_permissions": [""],
                "auth_timeout_ms": 0,
                "allowed_origins": [" "]
              },
              "tls": { "cert": "/etc/cert.pem" }
            },
            "health": { "host": " " }
          },
          "limits": {
            "max_connections": 0,
            "max_connections_per_ip": 0,
            "max_connects_per_ip_per_hour": 0,
            "max_messages_per_minute": 0,
            "max_message_bytes": 100,
            "max_outbound_bytes": 0,
            "idle_timeout_s": 0,
            "ping_interval_s": 0
          },
          "rooms": { "by_role": { "": ["a"], "viewer": [""] } },
          "host": { "request_timeout_ms": 0 },
          "log": { "level": "loud" }
        }"#;
        let errors = parse(text).unwrap().validate().unwrap_err();
        let expected = [
            "server.websocket.host",
            "server.health.host",
            "server.websocket.auth.allowed_ip",
            "server.websocket.auth.password",
            "server.websocket.auth.password_permissions[0]",
            "server.websocket.auth.jwt_secret",
            "server.websocket.auth.auth_timeout_ms",
            "server.websocket.auth.allowed_origins[0]",
            "server.websocket.tls",
            "limits.max_connections",
            "limits.max_connections_per_ip",
            "limits.max_connects_per_ip_per_hour",
            "limits.max_messages_per_minute",
            "limits.max_message_bytes",
            "limits.max_outbound_bytes",
            "limits.idle_timeout_s",
            "limits.ping_interval_s",
            "rooms.by_role",
            "rooms.by_role.viewer[0]",
            "host.request_timeout_ms",
            "log.level",
        ];
        assert_eq!(keys(&errors), expected);
        assert_eq!(errors.to_string().lines().count(), expected.len());
        assert!(!errors.to_string().contains("too short"));
        assert!(errors.to_string().contains("use * to allow all"));
    }

    #[test]
    fn outbound_must_hold_one_maximal_message() {
        let mut settings = Settings::default();
        settings.limits.max_message_bytes = 1000;
        settings.limits.max_outbound_bytes = 1013;
        let errors = settings.validate().unwrap_err();
        assert_eq!(keys(&errors), vec!["limits.max_outbound_bytes"]);
        assert!(errors.to_string().contains("1014"), "{errors}");
        settings.limits.max_outbound_bytes = 1014;
        assert_eq!(settings.validate(), Ok(()));
        settings.limits.max_outbound_bytes = MAX_OUTBOUND_BYTES + 1;
        assert!(settings.validate().is_err());
        settings.limits.max_message_bytes = MAX_MESSAGE_BYTES + 1;
        settings.limits.max_outbound_bytes = MAX_OUTBOUND_BYTES;
        assert_eq!(
            keys(&settings.validate().unwrap_err()),
            vec!["limits.max_message_bytes"]
        );
    }

    #[test]
    fn history_and_presence_values_are_checked() {
        let text = r#"{"rooms": {
          "history": { "size": 100001, "ttl_s": 0, "max_bytes": 0 },
          "presence": { "enabled": true, "notify_max_members": 1000001 }
        }}"#;
        let errors = parse(text).unwrap().validate().unwrap_err();
        let expected = [
            "rooms.history.size",
            "rooms.history.ttl_s",
            "rooms.history.max_bytes",
            "rooms.presence.notify_max_members",
        ];
        assert_eq!(keys(&errors), expected);
        let ok = r#"{"rooms": {"history": {"size": 100}, "presence": {"enabled": true}}}"#;
        assert_eq!(parse(ok).unwrap().validate(), Ok(()));
        assert!(parse(r#"{"rooms": {"history": {"sise": 1}}}"#).is_err());
    }

    #[test]
    fn port_zero_and_log_levels_are_accepted() {
        let mut settings =
            parse(r#"{"server":{"websocket":{"port":0},"health":{"port":0}}}"#).unwrap();
        assert_eq!(settings.validate(), Ok(()));
        for (level, filter) in [
            ("OFF", log::LevelFilter::Off),
            ("Error", log::LevelFilter::Error),
            ("warn", log::LevelFilter::Warn),
            ("debug", log::LevelFilter::Debug),
            ("TRACE", log::LevelFilter::Trace),
        ] {
            settings.log.level = level.to_string();
            assert_eq!(settings.validate(), Ok(()));
            assert_eq!(settings.level_filter(), filter);
        }
    }
}
