//! Helpers shared by the settings unit tests.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use super::errors::SettingsErrors;
use super::schema::Settings;

pub(crate) fn fake_env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

pub(crate) fn no_env(_: &str) -> Option<String> {
    None
}

pub(crate) fn parse(text: &str) -> Result<Settings, SettingsErrors> {
    Settings::from_json_str(text, "test.json")
}

pub(crate) fn keys(errors: &SettingsErrors) -> Vec<&str> {
    errors.0.iter().map(|e| e.key.as_str()).collect()
}

/// A fresh, unique directory under the system temp dir.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
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
