//! Settings: the `settings.json` schema (SPEC §2), where it is found (SPEC §1),
//! environment overrides, validation, redacted printing, the state directory and
//! the JWT secret.
//!
//! Every key is optional and defaults to the value written in the SPEC. Unknown
//! keys and values of the wrong type are rejected with the full dotted key path,
//! and [`Settings::validate`] reports every problem at once so that a user fixes
//! a config file in one round.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Text shown instead of a secret value.
pub const REDACTED: &str = "<redacted>";

/// Name of the config file looked up in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "settings.json";

/// Name of the generated JWT key inside the state directory.
pub const JWT_KEY_FILE: &str = "jwt.key";

/// Minimum length of a JWT HMAC secret, in bytes.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Minimum length of the client password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Largest WebSocket frame header the server writes (2 + 8 bytes length, plus
/// 4 bytes of mask in the worst case); a maximal message plus this must fit in
/// the outbound queue.
pub const MAX_FRAME_HEADER_BYTES: usize = 14;

const MIN_MESSAGE_BYTES: usize = 125;
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
const MAX_OUTBOUND_BYTES: usize = 1024 * 1024 * 1024;
const MAX_CONNECTIONS: usize = 1_000_000;

const LOG_LEVELS: &str = "off, error, warn, info, debug, trace";

// Dotted key paths used in error messages.
const KEY_JWT_SECRET: &str = "server.websocket.auth.jwt_secret";
const KEY_JWT_SECRET_FILE: &str = "server.websocket.auth.jwt_secret_file";

// ---------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------

/// The whole `settings.json` document.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
pub struct Settings {
    pub server: ServerSettings,
    pub limits: Limits,
    pub rooms: RoomsSettings,
    pub host: HostSettings,
    pub log: LogSettings,
}

/// `server`: the two listeners.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
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
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        WebSocketSettings {
            host: "localhost".to_string(),
            port: 8080,
            auth: AuthSettings::default(),
            tls: TlsSettings::default(),
        }
    }
}

/// `server.websocket.auth`. Debug is written by hand so secrets never reach logs.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
pub struct AuthSettings {
    /// Comma-separated addresses / CIDR blocks, or `*`; see [`parse_allowed_ips`].
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

/// `rooms`: role name -> room names (`{sub}` is replaced by the token's `sub`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
pub struct RoomsSettings {
    pub by_role: BTreeMap<String, Vec<String>>,
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

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// One problem with the settings: the dotted key (or env variable, or file path)
/// and what is wrong with it. Never holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub key: String,
    pub reason: String,
}

impl SettingError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        SettingError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for SettingError {}

/// Every problem found; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsErrors(pub Vec<SettingError>);

impl fmt::Display for SettingsErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SettingsErrors {}

impl From<SettingError> for SettingsErrors {
    fn from(error: SettingError) -> Self {
        SettingsErrors(vec![error])
    }
}

// ---------------------------------------------------------------------------
// Locating and loading
// ---------------------------------------------------------------------------

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
    let mut settings = match source {
        ConfigSource::Defaults => Settings::default(),
        ConfigSource::File(path) => {
            let origin = path.display().to_string();
            let text = fs::read_to_string(path).map_err(|e| {
                SettingError::new(origin.as_str(), format!("cannot read config file: {e}"))
            })?;
            Settings::from_json_str(&text, &origin)?
        }
    };
    // Report env and value problems together; env values that failed to parse
    // are not applied, so they are not reported twice.
    let mut errors = match settings.apply_env(env) {
        Ok(()) => Vec::new(),
        Err(SettingsErrors(errors)) => errors,
    };
    if let Err(SettingsErrors(more)) = settings.validate() {
        errors.extend(more);
    }
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(SettingsErrors(errors))
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// An empty environment variable counts as unset (systemd `Environment=X=`).
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

impl Settings {
    /// Parses a settings document. `origin` (usually the file path) names the
    /// problem when the text is not JSON at all; otherwise the dotted key path does.
    /// Does not apply the environment nor validate.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Settings, SettingsErrors> {
        // Syntax first, so that malformed JSON is reported with line and column
        // rather than under whatever key the parser had reached.
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| describe_parse_error(".", &e, origin))?;
        reject_arrays_as_objects(&value, origin)?;
        // Then the schema, on the text rather than the tree: only the text still
        // shows a key given twice, which serde then reports as a duplicate field.
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let first = match serde_path_to_error::deserialize(&mut deserializer) {
            Ok(settings) => return Ok(settings),
            Err(e) => e,
        };
        // One line per problem: drop each offending key from the tree and parse
        // again, so that every unknown key and wrong type is named, not only the
        // first. Value problems of the keys left are reported along with them.
        let mut errors = Vec::new();
        let mut tree = value;
        let mut next = Some(first);
        while let Some(e) = next.take() {
            errors.push(describe_parse_error(
                &e.path().to_string(),
                e.inner(),
                origin,
            ));
            if errors.len() >= MAX_REPORTED_PROBLEMS || !remove_at(&mut tree, e.path()) {
                return Err(SettingsErrors(errors));
            }
            match serde_path_to_error::deserialize::<_, Settings>(&tree) {
                Ok(rest) => {
                    if let Err(SettingsErrors(more)) = rest.validate() {
                        errors.extend(more);
                    }
                }
                Err(e) => next = Some(e),
            }
        }
        Err(SettingsErrors(errors))
    }

    /// Env overrides (SPEC §2): `JWT_SECRET`, `WEBSOCKET_PORT`, `TETHER_LOG`.
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
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SettingsErrors(errors))
        }
    }

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
        let min_outbound = limits
            .max_message_bytes
            .saturating_add(MAX_FRAME_HEADER_BYTES);
        if limits.max_outbound_bytes < min_outbound
            || limits.max_outbound_bytes > MAX_OUTBOUND_BYTES
        {
            fail(
                "limits.max_outbound_bytes",
                format!(
                    "must be from {min_outbound} (max_message_bytes + {MAX_FRAME_HEADER_BYTES}, \
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

        if errors.is_empty() {
            Ok(())
        } else {
            Err(SettingsErrors(errors))
        }
    }

    /// The log level; `info` if the (unvalidated) value is not a level.
    pub fn level_filter(&self) -> log::LevelFilter {
        self.log.level.parse().unwrap_or(log::LevelFilter::Info)
    }

    /// The parsed `allowed_ip` list. Cannot fail once [`Settings::validate`] passed.
    pub fn allowed_ips(&self) -> Result<IpAllowList, SettingError> {
        parse_allowed_ips(&self.server.websocket.auth.allowed_ip)
            .map_err(|reason| SettingError::new("server.websocket.auth.allowed_ip", reason))
    }

    /// The effective settings as JSON with `password` and `jwt_secret` replaced
    /// by `"<redacted>"` when set (null stays null). Keys come out sorted.
    pub fn redacted(&self) -> serde_json::Value {
        // Only a non-UTF-8 path could fail here; settings come from JSON, so
        // this is unreachable in practice, but stay panic-free.
        serde_json::to_value(self.redacted_copy()).unwrap_or_else(|e| {
            serde_json::Value::String(format!("<settings cannot be shown: {e}>"))
        })
    }

    /// [`Settings::redacted`] as pretty-printed JSON in the SPEC's key order
    /// (for `check-config`).
    pub fn redacted_pretty(&self) -> String {
        serde_json::to_string_pretty(&self.redacted_copy())
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
        copy
    }

    /// The JWT HMAC secret, in SPEC order: `JWT_SECRET` env, else `jwt_secret`,
    /// else `jwt_secret_file`, else `STATE/jwt.key`, generated on first use.
    ///
    /// A file's trailing whitespace (e.g. the newline `echo` adds) is trimmed.
    /// The generated key is 32 random bytes written hex-encoded (64 characters and
    /// a newline, mode 0600); the secret is those 64 ASCII hex bytes, exactly what
    /// a later read of the file yields, so `tether token` and the server agree.
    pub fn resolve_jwt_secret(
        &self,
        env: impl Fn(&str) -> Option<String>,
        state_dir: &Path,
    ) -> Result<(Vec<u8>, SecretSource), SettingError> {
        if let Some(secret) = non_empty(env("JWT_SECRET")) {
            if secret.len() < MIN_JWT_SECRET_BYTES {
                return Err(short_jwt_secret("JWT_SECRET"));
            }
            return Ok((secret.into_bytes(), SecretSource::Env));
        }
        let auth = &self.server.websocket.auth;
        if let Some(secret) = &auth.jwt_secret {
            if secret.len() < MIN_JWT_SECRET_BYTES {
                return Err(short_jwt_secret(KEY_JWT_SECRET));
            }
            return Ok((secret.clone().into_bytes(), SecretSource::Settings));
        }
        if let Some(path) = &auth.jwt_secret_file {
            let secret = fs::read(path).map_err(|e| {
                SettingError::new(
                    KEY_JWT_SECRET_FILE,
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let secret = trim_trailing_whitespace(secret);
            if secret.len() < MIN_JWT_SECRET_BYTES {
                return Err(SettingError::new(
                    KEY_JWT_SECRET_FILE,
                    format!(
                        "{} holds fewer than {MIN_JWT_SECRET_BYTES} bytes (after trimming \
                         trailing whitespace); a JWT secret needs at least {MIN_JWT_SECRET_BYTES}",
                        path.display()
                    ),
                ));
            }
            return Ok((secret, SecretSource::File(path.clone())));
        }
        state_key(state_dir)
    }
}

fn host_reason() -> String {
    "must not be empty; expected an address or a name such as \"localhost\" or \"0.0.0.0\""
        .to_string()
}

fn at_least_one(unit: &str) -> String {
    format!("must be at least 1 ({unit})")
}

fn short_jwt_secret(key: &str) -> SettingError {
    SettingError::new(
        key,
        format!(
            "must be at least {MIN_JWT_SECRET_BYTES} bytes; a shorter HMAC secret is guessable"
        ),
    )
}

/// JSON pointers of every object in the schema (maps excluded).
const OBJECT_POINTERS: [&str; 10] = [
    "",
    "/server",
    "/server/websocket",
    "/server/websocket/auth",
    "/server/websocket/tls",
    "/server/health",
    "/limits",
    "/rooms",
    "/host",
    "/log",
];

/// serde's derived structs also accept a JSON array, filling fields by position;
/// in a config file that is a mistake, so report it as the wrong type.
fn reject_arrays_as_objects(value: &serde_json::Value, origin: &str) -> Result<(), SettingError> {
    for pointer in OBJECT_POINTERS {
        if !value
            .pointer(pointer)
            .is_some_and(serde_json::Value::is_array)
        {
            continue;
        }
        return Err(match pointer.strip_prefix('/') {
            Some(path) => SettingError::new(
                path.replace('/', "."),
                "invalid type: sequence, expected a JSON object",
            ),
            None => SettingError::new(origin, "invalid type: sequence, expected a JSON object"),
        });
    }
    Ok(())
}

/// Turns a serde error into a [`SettingError`] naming the key (or, for text that
/// is not JSON, the origin with line and column).
/// At most this many problems are listed for one settings file.
const MAX_REPORTED_PROBLEMS: usize = 64;

/// Removes from `tree` the innermost object key on `path` (a whole list when
/// the problem is one of its elements, so later indexes stay as written); false
/// when there is no such key (so nothing could be removed).
fn remove_at(tree: &mut serde_json::Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some(cut) = segments
        .iter()
        .rposition(|s| matches!(s, Segment::Map { .. }))
    else {
        return false;
    };
    let mut node = tree;
    for segment in &segments[..cut] {
        let child = match (segment, node) {
            (Segment::Map { key }, serde_json::Value::Object(map)) => map.get_mut(key.as_str()),
            (Segment::Seq { index }, serde_json::Value::Array(items)) => items.get_mut(*index),
            _ => None,
        };
        match child {
            Some(child) => node = child,
            None => return false,
        }
    }
    match (segments[cut], node) {
        (Segment::Map { key }, serde_json::Value::Object(map)) => {
            map.remove(key.as_str()).is_some()
        }
        _ => false,
    }
}

fn describe_parse_error(path: &str, error: &serde_json::Error, origin: &str) -> SettingError {
    let message = strip_position(error);
    match error.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            SettingError::new(
                origin,
                format!(
                    "malformed JSON at line {}, column {}: {message}",
                    error.line(),
                    error.column()
                ),
            )
        }
        serde_json::error::Category::Io => {
            SettingError::new(origin, format!("cannot read config: {message}"))
        }
        serde_json::error::Category::Data => {
            if path == "." || path.is_empty() {
                // The document itself is not an object.
                return SettingError::new(origin, message);
            }
            // serde echoes the offending value ("invalid type: integer `1234`"):
            // never echo one given for a secret key.
            let last = path.rsplit('.').next().unwrap_or(path);
            if last == "password" || last == "jwt_secret" {
                return SettingError::new(
                    path,
                    "invalid value (not shown, it is a secret); expected a string or null",
                );
            }
            SettingError::new(path, message)
        }
    }
}

/// serde_json appends " at line L column C" to its messages; key paths say
/// more to the user, so the position is dropped (or reworded for syntax errors).
fn strip_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    match text.strip_suffix(&suffix) {
        Some(stripped) => stripped.to_string(),
        None => text,
    }
}

fn trim_trailing_whitespace(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    bytes
}

// ---------------------------------------------------------------------------
// State directory and the generated JWT key
// ---------------------------------------------------------------------------

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

/// Where the JWT secret came from (for the start-up log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The `JWT_SECRET` environment variable.
    Env,
    /// `server.websocket.auth.jwt_secret`.
    Settings,
    /// `server.websocket.auth.jwt_secret_file`.
    File(PathBuf),
    /// Generated now into `STATE/jwt.key`.
    Generated(PathBuf),
    /// Read from an earlier generated `STATE/jwt.key`.
    Loaded(PathBuf),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env => f.write_str("the JWT_SECRET environment variable"),
            SecretSource::Settings => write!(f, "{KEY_JWT_SECRET}"),
            SecretSource::File(path) => write!(f, "{}", path.display()),
            SecretSource::Generated(path) => write!(f, "{} (newly generated)", path.display()),
            SecretSource::Loaded(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Reads `STATE/jwt.key`, or generates it when it does not exist.
fn state_key(state_dir: &Path) -> Result<(Vec<u8>, SecretSource), SettingError> {
    let path = state_dir.join(JWT_KEY_FILE);
    match read_state_key(&path) {
        Ok(secret) => return Ok((secret, SecretSource::Loaded(path))),
        Err(StateKeyError::Missing) => {}
        Err(StateKeyError::Bad(error)) => return Err(error),
    }
    match generate_state_key(state_dir, &path) {
        Ok(secret) => Ok((secret, SecretSource::Generated(path))),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Another process (e.g. `tether token` next to the server) created it
            // first; use its key. It may still be writing, so retry briefly.
            let mut last = StateKeyError::Missing;
            for _ in 0..10 {
                match read_state_key(&path) {
                    Ok(secret) => return Ok((secret, SecretSource::Loaded(path))),
                    Err(error) => last = error,
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(match last {
                StateKeyError::Bad(error) => error,
                StateKeyError::Missing => SettingError::new(
                    path.display().to_string(),
                    "was created by another process but cannot be read",
                ),
            })
        }
        Err(e) => Err(SettingError::new(
            path.display().to_string(),
            format!(
                "cannot generate the JWT key: {e}; set STATE_DIRECTORY to a writable \
                 directory or configure {KEY_JWT_SECRET}"
            ),
        )),
    }
}

enum StateKeyError {
    Missing,
    Bad(SettingError),
}

fn read_state_key(path: &Path) -> Result<Vec<u8>, StateKeyError> {
    let name = || path.display().to_string();
    let secret = match fs::read(path) {
        Ok(secret) => secret,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StateKeyError::Missing),
        Err(e) => {
            return Err(StateKeyError::Bad(SettingError::new(
                name(),
                format!("cannot read the JWT key: {e}"),
            )))
        }
    };
    let secret = trim_trailing_whitespace(secret);
    if secret.len() < MIN_JWT_SECRET_BYTES {
        return Err(StateKeyError::Bad(SettingError::new(
            name(),
            format!(
                "holds fewer than {MIN_JWT_SECRET_BYTES} bytes; delete it to generate a new \
                 key (tokens signed with the old one stop working)"
            ),
        )));
    }
    // A key others can read lets them mint tokens; warn but keep working.
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            log::warn!(
                "{} is readable by other users; run chmod 600 on it",
                path.display()
            );
        }
    }
    Ok(secret)
}

/// Writes 32 random bytes, hex-encoded plus a newline, to a new file of mode
/// 0600 (`create_new`: a concurrent writer is never overwritten). Returns the
/// hex text, which is the secret.
fn generate_state_key(state_dir: &Path, path: &Path) -> io::Result<Vec<u8>> {
    let mut random = [0u8; MIN_JWT_SECRET_BYTES];
    fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let hex = hex_encode(&random);

    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let written = file
        .write_all(hex.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        // A truncated key would be rejected on every later start; remove it so
        // the next start generates a fresh one.
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(hex.into_bytes())
}

fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    text
}

// ---------------------------------------------------------------------------
// IP allow-list
// ---------------------------------------------------------------------------

/// The parsed `allowed_ip`: networks as (address, prefix length) pairs, kept
/// masked so matching is a mask and a compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpAllowList {
    all: bool,
    entries: Vec<(IpAddr, u8)>,
}

impl IpAllowList {
    /// Whether a client at `ip` may connect. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`, as a dual-stack socket reports IPv4 peers) match IPv4 entries.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.all {
            return true;
        }
        let ip = canonical(ip);
        self.entries
            .iter()
            .any(|&(network, prefix)| in_network(ip, network, prefix))
    }

    /// True when `*` is in the list.
    pub fn allows_all(&self) -> bool {
        self.all
    }
}

/// Parses a comma-separated list of IPv4/IPv6 addresses, CIDR blocks
/// (`192.168.1.0/24`, `fd00::/8`) and `*`. Whitespace around entries and empty
/// entries (a stray comma) are ignored; a list with no entry at all is an error,
/// since no client could connect.
pub fn parse_allowed_ips(s: &str) -> Result<IpAllowList, String> {
    let mut list = IpAllowList {
        all: false,
        entries: Vec::new(),
    };
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry == "*" {
            list.all = true;
            continue;
        }
        let network = parse_network(entry).ok_or_else(|| {
            format!(
                "invalid entry {entry:?}; expected IPv4/IPv6 addresses or CIDR blocks such as \
                 192.168.1.0/24, separated by commas, or * to allow all"
            )
        })?;
        list.entries.push(network);
    }
    if !list.all && list.entries.is_empty() {
        return Err("is empty, so no client could connect; use * to allow all".to_string());
    }
    Ok(list)
}

/// `ADDR` or `ADDR/PREFIX` -> masked (network, prefix); IPv4-mapped IPv6 blocks
/// become IPv4 ones so they match the way clients are matched.
fn parse_network(entry: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = match entry.split_once('/') {
        Some((address, prefix)) => (address.trim(), Some(prefix.trim())),
        None => (entry, None),
    };
    // Tolerate the URL-style "[::1]".
    let address = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    let address: IpAddr = address.parse().ok()?;
    let max = match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let prefix = match prefix {
        // Digits only: u8's parser would accept "+8".
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u8>().ok()?
        }
        Some(_) => return None,
        None => max,
    };
    if prefix > max {
        return None;
    }
    let (address, prefix) = match address {
        IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), prefix - 96),
            None => (address, prefix),
        },
        _ => (address, prefix),
    };
    Some((mask(address, prefix), prefix))
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4) & v4_mask(prefix);
            IpAddr::V4(Ipv4Addr::from(bits))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & v6_mask(prefix);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

fn in_network(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => u32::from(ip) & v4_mask(prefix) == u32::from(net),
        (IpAddr::V6(ip), IpAddr::V6(net)) => u128::from(ip) & v6_mask(prefix) == u128::from(net),
        _ => false,
    }
}

fn v4_mask(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn v6_mask(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn fake_env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Settings, SettingsErrors> {
        Settings::from_json_str(text, "test.json")
    }

    fn keys(errors: &SettingsErrors) -> Vec<&str> {
        errors.0.iter().map(|e| e.key.as_str()).collect()
    }

    /// A fresh, unique directory under the system temp dir.
    fn temp_dir(name: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tether-settings-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

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
              "tls": { "cert": null, "key": null, "self_signed": false }
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
          "rooms": { "by_role": {} },
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
    fn seed_000_block_is_accepted() {
        let text = r#"{"server":{"websocket":{"host":"localhost","port":8080,"auth":{"allowed_ip":"127.0.0.1","password":"MineAcademy"}}}}"#;
        let settings = parse(text).unwrap();
        assert_eq!(
            settings.server.websocket.auth.password.as_deref(),
            Some("MineAcademy")
        );
        assert_eq!(settings.server.websocket.auth.allowed_ip, "127.0.0.1");
        assert_eq!(
            settings.server.websocket.auth.password_permissions,
            vec!["admin"]
        );
        assert_eq!(settings.validate(), Ok(()));
    }

    #[test]
    fn unknown_key_names_its_path() {
        let errors = parse(r#"{"limits":{"max_conections":5}}"#).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        let line = errors.to_string();
        assert!(
            line.starts_with("limits.max_conections: unknown field"),
            "{line}"
        );

        let errors = parse(r#"{"server":{"websocket":{"auth":{"pasword":"x"}}}}"#).unwrap_err();
        assert_eq!(errors.0[0].key, "server.websocket.auth.pasword");

        let errors = parse(r#"{"nope":1}"#).unwrap_err();
        assert_eq!(errors.0[0].key, "nope");
    }

    #[test]
    fn wrong_type_names_its_path() {
        let errors = parse(r#"{"server":{"websocket":{"port":"80"}}}"#).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "server.websocket.port: invalid type: string \"80\", expected u16"
        );
        let errors = parse(r#"{"server":{"websocket":{"port":70000}}}"#).unwrap_err();
        assert_eq!(errors.0[0].key, "server.websocket.port");
        let errors = parse(r#"{"server":{"websocket":{"auth":{"password_permissions":["a",3]}}}}"#)
            .unwrap_err();
        assert_eq!(
            errors.0[0].key,
            "server.websocket.auth.password_permissions[1]"
        );
        let errors = parse("[]").unwrap_err();
        assert_eq!(errors.0[0].key, "test.json");
        let errors = parse(r#"{"server":{"health":["0.0.0.0",80]}}"#).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "server.health: invalid type: sequence, expected a JSON object"
        );
        let errors = parse(r#"{"log":null}"#).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "log: invalid type: null, expected a JSON object"
        );
        let errors = parse(r#"{"limits":{"idle_timeout_s":5,"idle_timeout_s":6}}"#).unwrap_err();
        assert_eq!(errors.0[0].key, "limits");
        assert!(errors.to_string().contains("duplicate field"), "{errors}");
    }

    #[test]
    fn secret_of_wrong_type_is_not_echoed() {
        let errors =
            parse(r#"{"server":{"websocket":{"auth":{"password":987654321}}}}"#).unwrap_err();
        assert_eq!(errors.0[0].key, "server.websocket.auth.password");
        assert!(!errors.to_string().contains("987654321"), "{errors}");
    }

    #[test]
    fn malformed_json_gives_line_and_column() {
        let errors = parse("{\n  \"limits\": {\n    \"max_connections\": 5,\n  }\n}").unwrap_err();
        let text = errors.to_string();
        assert!(
            text.starts_with("test.json: malformed JSON at line 4, column 3"),
            "{text}"
        );
        let errors = parse("{} trailing").unwrap_err();
        assert!(
            errors.to_string().contains("malformed JSON at line 1"),
            "{errors}"
        );
        let errors = parse("").unwrap_err();
        assert!(errors.to_string().contains("malformed JSON"), "{errors}");
    }

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

    #[test]
    fn allow_list_matching() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();

        let list = parse_allowed_ips("127.0.0.1,::1").unwrap();
        assert!(list.allows(ip("127.0.0.1")));
        assert!(list.allows(ip("::1")));
        assert!(list.allows(ip("::ffff:127.0.0.1")));
        assert!(!list.allows(ip("127.0.0.2")));
        assert!(!list.allows(ip("10.0.0.1")));
        assert!(!list.allows_all());

        let list = parse_allowed_ips(" 192.168.1.0/24 , fd00::/8,10.1.2.3/0 ").unwrap();
        assert!(list.allows(ip("192.168.1.200")));
        assert!(list.allows(ip("::ffff:192.168.1.7")));
        assert!(list.allows(ip("fd12:3456::1")));
        assert!(list.allows(ip("8.8.8.8")), "/0 matches every IPv4 address");
        assert!(!list.allows(ip("fe80::1")));

        let list = parse_allowed_ips("192.168.1.77/24").unwrap();
        assert!(
            list.allows(ip("192.168.1.1")),
            "host bits of the entry are ignored"
        );

        let list = parse_allowed_ips("::ffff:10.0.0.0/104,[::1]").unwrap();
        assert!(list.allows(ip("10.9.9.9")));
        assert!(list.allows(ip("::1")));

        let list = parse_allowed_ips("*").unwrap();
        assert!(list.allows_all());
        assert!(list.allows(ip("203.0.113.9")));
        assert!(list.allows(ip("2001:db8::1")));

        for bad in [
            "",
            " , ",
            "localhost",
            "10.0.0.0/33",
            "::/129",
            "1.2.3.4/",
            "1.2.3.4/+8",
            "1.2.3",
        ] {
            assert!(
                parse_allowed_ips(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert!(parse_allowed_ips("")
            .unwrap_err()
            .contains("use * to allow all"));
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

    #[test]
    fn secret_is_generated_once_and_reused() {
        let state = temp_dir("gen").join("nested");
        let settings = Settings::default();
        let (first, source) = settings.resolve_jwt_secret(no_env, &state).unwrap();
        let key_path = state.join(JWT_KEY_FILE);
        assert_eq!(source, SecretSource::Generated(key_path.clone()));
        assert_eq!(first.len(), 64);
        assert!(first.iter().all(|b| b.is_ascii_hexdigit()));

        let meta = fs::metadata(&key_path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o077,
            0
        );
        let on_disk = fs::read(&key_path).unwrap();
        assert_eq!(on_disk.len(), 65);
        assert_eq!(on_disk.last(), Some(&b'\n'));

        let (second, source) = settings.resolve_jwt_secret(no_env, &state).unwrap();
        assert_eq!(source, SecretSource::Loaded(key_path.clone()));
        assert_eq!(second, first);

        // A truncated key is an error naming the file, not silently replaced.
        fs::write(&key_path, "abc\n").unwrap();
        let error = settings.resolve_jwt_secret(no_env, &state).unwrap_err();
        assert_eq!(error.key, key_path.display().to_string());
        fs::remove_dir_all(state.parent().unwrap()).unwrap();
    }

    #[test]
    fn secret_resolution_order() {
        let state = temp_dir("order");
        let env_secret = "E".repeat(32);
        let mut settings = Settings::default();
        settings.server.websocket.auth.jwt_secret = Some("S".repeat(40));

        let (secret, source) = settings
            .resolve_jwt_secret(fake_env(&[("JWT_SECRET", &env_secret)]), &state)
            .unwrap();
        assert_eq!(
            (secret, source),
            (env_secret.into_bytes(), SecretSource::Env)
        );
        let error = settings
            .resolve_jwt_secret(fake_env(&[("JWT_SECRET", "short")]), &state)
            .unwrap_err();
        assert_eq!(error.key, "JWT_SECRET");

        let (secret, source) = settings.resolve_jwt_secret(no_env, &state).unwrap();
        assert_eq!(
            (secret, source),
            ("S".repeat(40).into_bytes(), SecretSource::Settings)
        );

        settings.server.websocket.auth.jwt_secret = None;
        fs::create_dir_all(&state).unwrap();
        let file = state.join("secret.txt");
        settings.server.websocket.auth.jwt_secret_file = Some(file.clone());
        let error = settings.resolve_jwt_secret(no_env, &state).unwrap_err();
        assert_eq!(error.key, KEY_JWT_SECRET_FILE);
        assert!(error.reason.contains("secret.txt"), "{error}");

        fs::write(&file, format!("{}\n", "F".repeat(32))).unwrap();
        let (secret, source) = settings.resolve_jwt_secret(no_env, &state).unwrap();
        assert_eq!(
            (secret, source),
            (
                "F".repeat(32).into_bytes(),
                SecretSource::File(file.clone())
            )
        );

        fs::write(&file, "F".repeat(31)).unwrap();
        let error = settings.resolve_jwt_secret(no_env, &state).unwrap_err();
        assert_eq!(error.key, KEY_JWT_SECRET_FILE);
        assert!(
            !state.join(JWT_KEY_FILE).exists(),
            "no key generated while a file is configured"
        );
        fs::remove_dir_all(&state).unwrap();
    }
}
