//! `allowed_origins` entries: an exact origin (`https://app.example`), or one
//! whose host starts with one wildcard label (`https://*.example.com`, SPEC §13).

/// One parsed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    Exact(String),
    /// `SCHEME://*.REST`: `prefix` is `SCHEME://`, `suffix` is `.REST`
    /// (port included), both lowercase.
    Wildcard {
        prefix: String,
        suffix: String,
    },
}

impl OriginPattern {
    pub fn parse(entry: &str) -> Result<OriginPattern, String> {
        let entry = entry.trim();
        if !entry.contains('*') {
            return Ok(OriginPattern::Exact(entry.to_ascii_lowercase()));
        }
        let invalid = || {
            format!(
                "{entry:?}: `*` may only stand for the first label of the host, \
                 as in \"https://*.example.com\""
            )
        };
        let (scheme, rest) = entry.split_once("://").ok_or_else(invalid)?;
        let suffix = rest.strip_prefix('*').ok_or_else(invalid)?;
        let domain = suffix.strip_prefix('.').ok_or_else(invalid)?;
        let host = domain.split(':').next().unwrap_or("");
        if scheme.is_empty()
            || scheme.contains('*')
            || host.is_empty()
            || suffix.contains(['*', '/'])
        {
            return Err(invalid());
        }
        Ok(OriginPattern::Wildcard {
            prefix: format!("{}://", scheme.to_ascii_lowercase()),
            suffix: suffix.to_ascii_lowercase(),
        })
    }

    /// Whether an `Origin` header value matches (ASCII case-insensitive); a
    /// wildcard stands for exactly one non-empty label.
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Exact(exact) => exact.eq_ignore_ascii_case(origin),
            OriginPattern::Wildcard { prefix, suffix } => {
                let Some(label) =
                    strip_prefix_ci(origin, prefix).and_then(|rest| strip_suffix_ci(rest, suffix))
                else {
                    return false;
                };
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }
        }
    }
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn strip_suffix_ci<'a>(text: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = text.len().checked_sub(suffix.len())?;
    let tail = text.get(cut..)?;
    tail.eq_ignore_ascii_case(suffix).then(|| &text[..cut])
}

/// The parsed `allowed_origins`: empty allows any origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    patterns: Vec<OriginPattern>,
}

impl OriginPolicy {
    /// Entries that do not parse are left out (settings validation refuses them).
    pub fn new(entries: &[String]) -> OriginPolicy {
        OriginPolicy {
            patterns: entries
                .iter()
                .filter_map(|e| OriginPattern::parse(e).ok())
                .collect(),
        }
    }

    pub fn allows(&self, origin: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_wildcard_label() {
        let p = OriginPattern::parse("https://*.example.com").unwrap();
        assert!(p.matches("https://app.example.com"));
        assert!(p.matches("HTTPS://App.Example.COM"));
        assert!(!p.matches("https://example.com"));
        assert!(!p.matches("https://.example.com"));
        assert!(!p.matches("https://a.b.example.com"));
        assert!(!p.matches("http://app.example.com"));
        assert!(!p.matches("https://app.example.com:8443"));
        assert!(!p.matches("https://appexample.com"));
        assert!(!p.matches("https://evil.com/.example.com"));
        let p = OriginPattern::parse("http://*.lan:8080").unwrap();
        assert!(p.matches("http://pi.lan:8080") && !p.matches("http://pi.lan"));
        let exact = OriginPattern::parse("https://App.example").unwrap();
        assert!(exact.matches("https://app.example") && !exact.matches("https://x.app.example"));
    }

    #[test]
    fn any_other_star_is_invalid() {
        for bad in [
            "*",
            "https://*",
            "https://*.",
            "https://*example.com",
            "https://a.*.example.com",
            "https://app.*",
            "*://x.example.com",
            "https://*.*.example.com",
            "https://*.example.com/*",
            "*.example.com",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policy() {
        assert!(OriginPolicy::new(&[]).allows("https://any.where"));
        let policy = OriginPolicy::new(&["https://a.example".into(), "https://*.lan".into()]);
        assert!(policy.allows("https://a.example") && policy.allows("https://pi.lan"));
        assert!(!policy.allows("https://b.example"));
    }
}
