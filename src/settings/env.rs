//! The process environment: overrides of settings (SPEC §2) and the state directory.

use std::path::PathBuf;

use super::errors::{SettingError, SettingsErrors};
use super::redis_url::RedisTarget;
use super::schema::{Settings, MIN_JWT_SECRET_BYTES};
use super::validate::{short_jwt_secret, LOG_LEVELS};

impl Settings {
    /// Env overrides (SPEC §2, §9): `JWT_SECRET`, `WEBSOCKET_PORT`, `TETHER_LOG`,
    /// `TETHER_REDIS`.
    /// Empty variables count as unset. A bad value is reported under the
    /// variable's name and not applied; the other variables are still applied.
    pub fn apply_env(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), SettingsErrors> {
        let mut errors = Vec::new();
        if let Some(secret) = non_empty(env("JWT_SECRET")) {
            if secret.len() < MIN_JWT_SECRET_BYTES {
                errors.push(short_jwt_secret("JWT_SECRET"));
            } else {
                self.server.websocket.auth.jwt_secret = Some(secret);
            }
        }
        if let Some(port) = non_empty(env("WEBSOCKET_PORT")) {
            match port.trim().parse::<u16>() {
                Ok(port) => self.server.websocket.port = port,
                Err(_) => errors.push(SettingError::new(
                    "WEBSOCKET_PORT",
                    format!("{port:?} is not a port number; expected an integer from 0 to 65535"),
                )),
            }
        }
        if let Some(level) = non_empty(env("TETHER_LOG")) {
            match level.parse::<log::LevelFilter>() {
                Ok(_) => self.log.level = level,
                Err(_) => errors.push(SettingError::new(
                    "TETHER_LOG",
                    format!("unknown log level {level:?}; expected one of {LOG_LEVELS}"),
                )),
            }
        }
        if let Some(url) = non_empty(env("TETHER_REDIS")) {
            match RedisTarget::parse(&url) {
                Ok(_) => self.cluster.redis = Some(url),
                Err(reason) => errors.push(SettingError::new("TETHER_REDIS", reason)),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SettingsErrors(errors))
        }
    }
}

pub(super) fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// An empty environment variable counts as unset (systemd `Environment=X=`).
pub(super) fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// The state directory: `$STATE_DIRECTORY` (the first of its colon-separated
/// paths, as systemd may pass several), else `./tether-data`.
pub fn state_dir() -> PathBuf {
    state_dir_with(env_var)
}

/// [`state_dir`] with a given environment, for tests.
pub fn state_dir_with(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    env("STATE_DIRECTORY")
        .and_then(|dirs| dirs.split(':').next().map(str::to_string))
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("./tether-data"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::testing::{fake_env, keys, no_env};

    #[test]
    fn env_overrides_apply() {
        let secret = "0123456789abcdef0123456789abcdef";
        let mut settings = Settings::default();
        settings
            .apply_env(fake_env(&[
                ("JWT_SECRET", secret),
                ("WEBSOCKET_PORT", "9000"),
                ("TETHER_LOG", "debug"),
            ]))
            .unwrap();
        assert_eq!(
            settings.server.websocket.auth.jwt_secret.as_deref(),
            Some(secret)
        );
        assert_eq!(settings.server.websocket.port, 9000);
        assert_eq!(settings.level_filter(), log::LevelFilter::Debug);

        // Empty variables are ignored.
        let mut settings = Settings::default();
        settings
            .apply_env(fake_env(&[("JWT_SECRET", ""), ("WEBSOCKET_PORT", "")]))
            .unwrap();
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let mut settings = Settings::default();
        let errors = settings
            .apply_env(fake_env(&[
                ("JWT_SECRET", "shortsecret"),
                ("WEBSOCKET_PORT", "80a"),
                ("TETHER_LOG", "chatty"),
            ]))
            .unwrap_err();
        assert_eq!(
            keys(&errors),
            vec!["JWT_SECRET", "WEBSOCKET_PORT", "TETHER_LOG"]
        );
        assert!(!errors.to_string().contains("shortsecret"));
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn tether_redis_overrides_cluster_redis() {
        let mut settings = Settings::default();
        settings
            .apply_env(fake_env(&[(
                "TETHER_REDIS",
                "redis://:envpw@127.0.0.1:7001",
            )]))
            .unwrap();
        assert_eq!(
            settings.cluster.redis.as_deref(),
            Some("redis://:envpw@127.0.0.1:7001")
        );
        let errors = Settings::default()
            .apply_env(fake_env(&[("TETHER_REDIS", "redis://:envpw@h:port")]))
            .unwrap_err();
        assert_eq!(keys(&errors), vec!["TETHER_REDIS"]);
        assert!(!errors.to_string().contains("envpw"));
    }

    #[test]
    fn state_dir_takes_first_path() {
        assert_eq!(
            state_dir_with(fake_env(&[(
                "STATE_DIRECTORY",
                "/var/lib/tether:/var/lib/other"
            )])),
            PathBuf::from("/var/lib/tether")
        );
        assert_eq!(state_dir_with(no_env), PathBuf::from("./tether-data"));
        assert_eq!(
            state_dir_with(fake_env(&[("STATE_DIRECTORY", "")])),
            PathBuf::from("./tether-data")
        );
    }
}
