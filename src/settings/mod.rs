//! Settings: the `settings.json` schema (SPEC §2), where it is found (SPEC §1),
//! environment overrides, validation, redacted printing, the state directory and
//! the JWT secret.
//!
//! Every key is optional and defaults to the value written in the SPEC. Unknown
//! keys inside tether's objects and values of the wrong type are rejected with
//! the full dotted key path (other unknown keys are a bot's own and ignored),
//! and [`Settings::validate`] reports every problem at once so that a user fixes
//! a config file in one round.

mod allow_list;
mod cluster;
mod compat;
mod env;
mod errors;
mod hosts;
mod parse;
mod redis_url;
mod schema;
mod secrets;
#[cfg(test)]
pub(crate) mod testing;
mod validate;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use env::{env_var, non_empty};

pub(crate) use allow_list::canonical;
pub use allow_list::{parse_allowed_ips, IpAllowList};
pub use cluster::{check_node_name, default_node_name, ClusterSettings, MAX_NODE_NAME};
pub use compat::ignored_key_warning;
pub use env::{state_dir, state_dir_with};
pub use errors::{SettingError, SettingsErrors};
pub use hosts::{valid_host_name, BridgedHost, MAX_HOST_NAME};
pub use redis_url::{RedisAddress, RedisTarget};
pub use schema::{
    AuthSettings, CompressionSettings, Envelope, HealthSettings, HistorySettings, HostSettings,
    JwtClaims, Limits, LogSettings, PresenceSettings, RoomsSettings, ServerSettings, Settings,
    TlsSettings, WebSocketSettings, MIN_JWT_SECRET_BYTES, REDACTED,
};
pub use secrets::{check_secret_file, no_jwt_secret_report, SecretSource, JWT_KEY_FILE};
pub use validate::MIN_PASSWORD_CHARS;

/// Name of the config file looked up in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "settings.json";

/// Where the settings come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    Defaults,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(path) => write!(f, "{}", path.display()),
            ConfigSource::Defaults => f.write_str("built-in defaults"),
        }
    }
}

/// Config lookup (SPEC §1): `--config PATH`, else `$TETHER_CONFIG`, else
/// `./settings.json` if it exists, else built-in defaults.
pub fn locate(explicit: Option<&Path>) -> ConfigSource {
    locate_with(explicit, env_var)
}

/// [`locate`] with a given environment, for tests.
pub fn locate_with(explicit: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> ConfigSource {
    if let Some(path) = explicit {
        return ConfigSource::File(path.to_path_buf());
    }
    if let Some(path) = non_empty(env("TETHER_CONFIG")) {
        return ConfigSource::File(PathBuf::from(path));
    }
    let local = Path::new(DEFAULT_CONFIG_FILE);
    if local.exists() {
        return ConfigSource::File(local.to_path_buf());
    }
    ConfigSource::Defaults
}

/// Reads, parses, applies the process environment and validates.
pub fn load(source: &ConfigSource) -> Result<Settings, SettingsErrors> {
    load_with(source, env_var)
}

/// [`load`] with a given environment, for tests.
pub fn load_with(
    source: &ConfigSource,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Settings, SettingsErrors> {
    match load_lenient_with(source, env) {
        (Some(settings), errors) if errors.is_empty() => Ok(settings),
        (_, errors) => Err(SettingsErrors(errors)),
    }
}

/// Every problem [`load`] finds, and the settings as far as they could be
/// read (offending keys at their defaults; `None` when the file cannot be read
/// or is not a settings object), so that `check-config` can check the rest in
/// the same run.
pub fn load_lenient(source: &ConfigSource) -> (Option<Settings>, Vec<SettingError>) {
    load_lenient_with(source, env_var)
}

fn load_lenient_with(
    source: &ConfigSource,
    env: impl Fn(&str) -> Option<String>,
) -> (Option<Settings>, Vec<SettingError>) {
    let (settings, mut errors) = match source {
        ConfigSource::Defaults => (Some(Settings::default()), Vec::new()),
        ConfigSource::File(path) => {
            let origin = path.display().to_string();
            match fs::read_to_string(path) {
                Ok(text) => parse::parse_lenient(&text, &origin),
                Err(e) => {
                    let error = SettingError::new(origin, format!("cannot read config file: {e}"));
                    return (None, vec![error]);
                }
            }
        }
    };
    let Some(mut settings) = settings else {
        return (None, errors);
    };
    // Env values that failed to parse are not applied, so they are not
    // reported twice.
    if let Err(SettingsErrors(more)) = settings.apply_env(env) {
        errors.extend(more);
    }
    if let Err(SettingsErrors(more)) = settings.validate() {
        errors.extend(more);
    }
    (Some(settings), errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::testing::{fake_env, keys, no_env, temp_dir};

    #[test]
    fn load_reads_file_then_env_then_validates() {
        let dir = temp_dir("load");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("settings.json");
        fs::write(
            &path,
            r#"{"server":{"websocket":{"port":1234,"auth":{"password":"short"}}}}"#,
        )
        .unwrap();
        let source = ConfigSource::File(path.clone());
        let errors = load_with(&source, fake_env(&[("WEBSOCKET_PORT", "x")])).unwrap_err();
        assert_eq!(
            keys(&errors),
            vec!["WEBSOCKET_PORT", "server.websocket.auth.password"]
        );

        fs::write(&path, r#"{"server":{"websocket":{"port":1234}}}"#).unwrap();
        let settings = load_with(&source, fake_env(&[("WEBSOCKET_PORT", "4321")])).unwrap();
        assert_eq!(settings.server.websocket.port, 4321);

        let missing = ConfigSource::File(dir.join("missing.json"));
        let errors = load_with(&missing, no_env).unwrap_err();
        assert!(errors.to_string().contains("missing.json"), "{errors}");

        assert_eq!(
            load_with(&ConfigSource::Defaults, no_env).unwrap(),
            Settings::default()
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lenient_load_reports_parse_env_and_value_problems_together() {
        let dir = temp_dir("lenient");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("settings.json");
        fs::write(
            &path,
            r#"{"server":{"websocket":{"hots":"x","port":1234,"auth":{"password":"short"}}}}"#,
        )
        .unwrap();
        let source = ConfigSource::File(path);
        let (settings, errors) = load_lenient_with(&source, fake_env(&[("WEBSOCKET_PORT", "x")]));
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "server.websocket.hots",
                "WEBSOCKET_PORT",
                "server.websocket.auth.password"
            ]
        );
        assert_eq!(settings.map(|s| s.server.websocket.port), Some(1234));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn locate_order() {
        let explicit = Path::new("/x/explicit.json");
        let env = fake_env(&[("TETHER_CONFIG", "/x/env.json")]);
        assert_eq!(
            locate_with(Some(explicit), &env),
            ConfigSource::File(explicit.to_path_buf())
        );
        assert_eq!(
            locate_with(None, &env),
            ConfigSource::File("/x/env.json".into())
        );
        assert_eq!(ConfigSource::Defaults.to_string(), "built-in defaults");
        assert_eq!(
            ConfigSource::File("/a/b.json".into()).to_string(),
            "/a/b.json"
        );
    }
}
