//! The JWT secret: where it comes from, the secret file check, and the key
//! generated into the state directory.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::env::non_empty;
use super::errors::SettingError;
use super::schema::{Settings, KEY_JWT_SECRET, KEY_JWT_SECRET_FILE, MIN_JWT_SECRET_BYTES};
use super::validate::short_jwt_secret;

/// Name of the generated JWT key inside the state directory.
pub const JWT_KEY_FILE: &str = "jwt.key";

impl Settings {
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
        match self.existing_jwt_secret(env, state_dir)? {
            Some(found) => Ok(found),
            None => generate_or_adopt_state_key(state_dir),
        }
    }

    /// The JWT secret in the order of [`Settings::resolve_jwt_secret`], but
    /// never generated: `None` when no place holds one. `tether token` signs
    /// only with a secret a gateway uses; `check-config` has no side effects.
    pub fn existing_jwt_secret(
        &self,
        env: impl Fn(&str) -> Option<String>,
        state_dir: &Path,
    ) -> Result<Option<(Vec<u8>, SecretSource)>, SettingError> {
        if let Some(secret) = non_empty(env("JWT_SECRET")) {
            if secret.len() < MIN_JWT_SECRET_BYTES {
                return Err(short_jwt_secret("JWT_SECRET"));
            }
            return Ok(Some((secret.into_bytes(), SecretSource::Env)));
        }
        let auth = &self.server.websocket.auth;
        if let Some(secret) = &auth.jwt_secret {
            if secret.len() < MIN_JWT_SECRET_BYTES {
                return Err(short_jwt_secret(KEY_JWT_SECRET));
            }
            return Ok(Some((secret.clone().into_bytes(), SecretSource::Settings)));
        }
        if let Some(path) = &auth.jwt_secret_file {
            let secret = check_secret_file(path)?;
            return Ok(Some((secret, SecretSource::File(path.clone()))));
        }
        let path = state_dir.join(JWT_KEY_FILE);
        match read_state_key(&path) {
            Ok(secret) => Ok(Some((secret, SecretSource::Loaded(path)))),
            Err(StateKeyError::Missing) => Ok(None),
            Err(StateKeyError::Bad(error)) => Err(error),
        }
    }
}

/// Why `tether token` found no secret: every place it looked (the settings
/// keys as read from `settings_origin`), one per line, and how to get a secret
/// the gateway also uses.
pub fn no_jwt_secret_report(settings_origin: &dyn fmt::Display, state_dir: &Path) -> String {
    let key_path = state_dir.join(JWT_KEY_FILE);
    let key_path = std::path::absolute(&key_path).unwrap_or(key_path);
    [
        "no JWT secret to sign with (a newly generated one would not be the gateway's); \
         looked at:"
            .to_string(),
        "  the JWT_SECRET environment variable: not set".to_string(),
        format!("  {KEY_JWT_SECRET} in {settings_origin}: not set"),
        format!("  {KEY_JWT_SECRET_FILE} in {settings_origin}: not set"),
        format!(
            "  {}: no such file (the state directory is $STATE_DIRECTORY, else ./tether-data)",
            key_path.display()
        ),
        "run `tether token` with the gateway's --config and state directory (or in the \
         directory the gateway runs in), or start the gateway once so that it generates the key"
            .to_string(),
    ]
    .join("\n")
}

/// Reads `jwt_secret_file` and checks it holds a usable secret (trailing
/// whitespace trimmed). Shared by the server and `check-config`, which must
/// agree on what a good file is; reading has no side effects.
pub fn check_secret_file(path: &Path) -> Result<Vec<u8>, SettingError> {
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
    Ok(secret)
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

/// Generates `STATE/jwt.key`, or uses the one another process created first.
fn generate_or_adopt_state_key(state_dir: &Path) -> Result<(Vec<u8>, SecretSource), SettingError> {
    let path = state_dir.join(JWT_KEY_FILE);
    match generate_state_key(state_dir, &path) {
        Ok(secret) => Ok((secret, SecretSource::Generated(path))),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Another process (e.g. a second gateway started at once) created it
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

fn trim_trailing_whitespace(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::testing::{fake_env, no_env, temp_dir};

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
    fn existing_secret_is_never_generated() {
        let state = temp_dir("existing");
        let settings = Settings::default();
        assert_eq!(settings.existing_jwt_secret(no_env, &state), Ok(None));
        assert!(!state.exists(), "looking generated nothing");
        let (generated, _) = settings.resolve_jwt_secret(no_env, &state).unwrap();
        let key_path = state.join(JWT_KEY_FILE);
        assert_eq!(
            settings.existing_jwt_secret(no_env, &state),
            Ok(Some((generated, SecretSource::Loaded(key_path.clone()))))
        );

        let report = no_jwt_secret_report(&"built-in defaults", &state);
        for place in [
            "JWT_SECRET",
            "server.websocket.auth.jwt_secret in built-in defaults",
            "server.websocket.auth.jwt_secret_file in built-in defaults",
            &key_path.display().to_string(),
        ] {
            assert!(report.contains(place), "{report}");
        }
        fs::remove_dir_all(&state).unwrap();
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

    #[test]
    fn secret_file_check_reads_trims_and_names_the_key() {
        let dir = temp_dir("check");
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret.txt");
        let error = check_secret_file(&file).unwrap_err();
        assert_eq!(error.key, KEY_JWT_SECRET_FILE);
        assert!(error.reason.starts_with("cannot read "), "{error}");

        fs::write(&file, format!("{} \n", "F".repeat(31))).unwrap();
        let error = check_secret_file(&file).unwrap_err();
        assert_eq!(error.key, KEY_JWT_SECRET_FILE);
        assert!(
            error.reason.contains("holds fewer than 32 bytes"),
            "{error}"
        );
        assert!(
            !error.to_string().contains("FFFF"),
            "never echoes the secret"
        );

        fs::write(&file, format!("{}\n", "F".repeat(32))).unwrap();
        assert_eq!(
            check_secret_file(&file).unwrap(),
            "F".repeat(32).into_bytes()
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
