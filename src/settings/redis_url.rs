//! `cluster.redis` (SPEC §9): `redis://[user:password@]HOST:PORT[/DB]` or
//! `unix:///path/to/redis.sock`. Problems never echo the password.

use std::fmt;
use std::path::PathBuf;

use super::errors::REDACTED;

/// Where the broker listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAddress {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

/// A parsed `cluster.redis`. Debug and Display redact the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub address: RedisAddress,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
}

const TCP_SCHEME: &str = "redis://";
const UNIX_SCHEME: &str = "unix://";
const DEFAULT_PORT: u16 = 6379;

impl RedisTarget {
    /// Parses the URL; the error says what is wrong without the password.
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        if let Some(path) = url.strip_prefix(UNIX_SCHEME) {
            if !path.starts_with('/') {
                return Err("expected unix:///absolute/path/to/redis.sock".into());
            }
            return Ok(RedisTarget {
                address: RedisAddress::Unix(PathBuf::from(path)),
                user: None,
                password: None,
                db: 0,
            });
        }
        let Some(rest) = url.strip_prefix(TCP_SCHEME) else {
            return Err(
                "expected redis://[user:password@]HOST:PORT[/DB] or unix:///path/to/redis.sock"
                    .into(),
            );
        };
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((credentials, rest)) => (Some(credentials), rest),
            None => (None, rest),
        };
        let (user, password) = match credentials {
            None => (None, None),
            Some(c) => match c.split_once(':') {
                Some((user, password)) => (
                    Some(user.to_string()).filter(|u| !u.is_empty()),
                    Some(password.to_string()),
                ),
                None => return Err("credentials must be user:password (user may be empty)".into()),
            },
        };
        if password.as_deref() == Some("") {
            return Err("the password after ':' is empty".into());
        }
        let (hostport, db) = match rest.split_once('/') {
            Some((hostport, "")) => (hostport, 0),
            Some((hostport, db)) => match db.parse::<u32>() {
                Ok(db) => (hostport, db),
                Err(_) => return Err(format!("database {db:?} is not a number")),
            },
            None => (rest, 0),
        };
        let (host, port) = split_host_port(hostport)?;
        Ok(RedisTarget {
            address: RedisAddress::Tcp { host, port },
            user,
            password,
            db,
        })
    }

    /// The URL as written, the password replaced by `<redacted>`.
    pub fn redacted(&self) -> String {
        self.to_string()
    }
}

fn split_host_port(hostport: &str) -> Result<(String, u16), String> {
    // `[::1]:6379` for IPv6 literals.
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        match v6.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => match port.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err("expected [ADDRESS]:PORT".into()),
            },
            None => return Err("missing ']' after an IPv6 address".into()),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => {
                return Err(format!(
                    "port {port:?} is not a port number from 1 to 65535"
                ))
            }
        },
    };
    Ok((host.to_string(), port))
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.address {
            RedisAddress::Unix(path) => write!(f, "{UNIX_SCHEME}{}", path.display()),
            RedisAddress::Tcp { host, port } => {
                f.write_str(TCP_SCHEME)?;
                if self.user.is_some() || self.password.is_some() {
                    let password = self.password.as_ref().map_or("", |_| REDACTED);
                    write!(f, "{}:{password}@", self.user.as_deref().unwrap_or(""))?;
                }
                if host.contains(':') {
                    write!(f, "[{host}]:{port}")?;
                } else {
                    write!(f, "{host}:{port}")?;
                }
                write!(f, "/{}", self.db)
            }
        }
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisTarget({self})")
    }
}

/// `url` with any password replaced, for printing a value that may not parse.
pub fn redact_url(url: &str) -> String {
    match RedisTarget::parse(url) {
        Ok(target) => target.redacted(),
        Err(_) if url.contains('@') => REDACTED.to_string(),
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_and_unix_urls() {
        let t = RedisTarget::parse("redis://bob:hunter22@10.0.0.2:6380/3").unwrap();
        assert_eq!(
            t.address,
            RedisAddress::Tcp {
                host: "10.0.0.2".into(),
                port: 6380
            }
        );
        assert_eq!(t.user.as_deref(), Some("bob"));
        assert_eq!(t.password.as_deref(), Some("hunter22"));
        assert_eq!(t.db, 3);
        assert_eq!(t.to_string(), "redis://bob:<redacted>@10.0.0.2:6380/3");
        assert!(!format!("{t:?}").contains("hunter22"));

        let t = RedisTarget::parse("redis://:pw@localhost").unwrap();
        assert_eq!((t.user, t.password.as_deref(), t.db), (None, Some("pw"), 0));
        let t = RedisTarget::parse("redis://[::1]:7000/").unwrap();
        assert_eq!(t.to_string(), "redis://[::1]:7000/0");
        let t = RedisTarget::parse("unix:///run/redis/redis.sock").unwrap();
        assert_eq!(
            t.address,
            RedisAddress::Unix(PathBuf::from("/run/redis/redis.sock"))
        );
    }

    #[test]
    fn bad_urls_are_refused_without_the_password() {
        for url in [
            "http://x",
            "redis://",
            "redis://h:0",
            "redis://h:99999",
            "redis://h/x",
            "redis://nocolonpw@h",
            "redis://u:@h",
            "unix://relative",
            "redis://[::1",
        ] {
            let e = RedisTarget::parse(url).unwrap_err();
            assert!(!e.contains("nocolonpw"), "{url}: {e}");
        }
        assert_eq!(redact_url("redis://u:secretpw@"), REDACTED);
        assert_eq!(redact_url("redis://h:1"), "redis://h:1/0");
    }
}
