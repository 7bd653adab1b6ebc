//! Settings problems: one [`SettingError`] per key, all of them in [`SettingsErrors`].

use std::fmt;

/// Text shown instead of a secret value.
pub const REDACTED: &str = "<redacted>";

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
