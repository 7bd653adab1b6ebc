//! Who a client is: JWT (HS256) and password logins, and what an identity may do.
//!
//! Time is passed in (`now_unix`), so verification is testable without a clock.

use crate::proto::claims::{ClaimError, ClaimNames};
use jwt_simple::prelude::*;
use jwt_simple::JWTError;
use std::collections::{BTreeMap, HashSet};

/// Clock skew tolerated on `exp`, `nbf` and `iat` (jwt-simple defaults to 15 minutes).
pub const CLOCK_SKEW_S: u64 = 30;
/// Longest token looked at; anything longer is refused unparsed.
pub const MAX_TOKEN_BYTES: usize = 8192;
/// `sub` given to password logins.
pub const PASSWORD_SUB: &str = "password";
/// Longest token lifetime minted: ten years. Longer ones overflow the
/// fixed-point clock arithmetic of jwt-simple (a panic in debug builds, a
/// wrapped `exp` claim in release builds).
pub const MAX_TTL_S: u64 = 10 * 365 * 86400;

/// Claims tether adds to the registered ones.
#[derive(Debug, Default, Serialize, Deserialize)]
struct TetherClaims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    permissions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rooms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
}

/// An authenticated principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub sub: Box<str>,
    pub permissions: Vec<Box<str>>,
    pub role: Option<Box<str>>,
    /// The token's rooms and its role's rooms: joined on authentication, always allowed.
    pub rooms: Vec<Box<str>>,
    /// Token expiry (unix seconds); `None` for password sessions.
    pub expires_at: Option<u64>,
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.permissions.iter().any(|p| &**p == "admin")
    }

    /// `admin` implies every permission.
    pub fn has(&self, permission: &str) -> bool {
        self.permissions
            .iter()
            .any(|p| &**p == permission || &**p == "admin")
    }

    /// SPEC §5: its own rooms, a matching `room:NAME` / `room:prefix*` permission, or admin.
    pub fn may_join(&self, room: &str) -> bool {
        if self.rooms.iter().any(|r| &**r == room) {
            return true;
        }
        self.permissions.iter().any(|p| {
            if &**p == "admin" {
                return true;
            }
            match p.strip_prefix("room:") {
                Some(pattern) => match pattern.strip_suffix('*') {
                    Some(prefix) => room.starts_with(prefix),
                    None => pattern == room,
                },
                None => false,
            }
        })
    }
}

/// Why a login was refused; for logs and metrics, never containing the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    MissingSub,
    MissingExp,
    WrongIssuer,
    WrongAudience,
    TooLong,
    BadPassword,
    PasswordDisabled,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthError::Malformed => "token is not a valid HS256 JWT",
            AuthError::BadSignature => "token signature or algorithm rejected",
            AuthError::Expired => "token expired",
            AuthError::NotYetValid => "token not valid yet",
            AuthError::MissingSub => "token has no non-empty string `sub` claim",
            AuthError::MissingExp => "token has no `exp` claim",
            AuthError::WrongIssuer => "token issuer not accepted",
            AuthError::WrongAudience => "token audience not accepted",
            AuthError::TooLong => "token too long",
            AuthError::BadPassword => "wrong password",
            AuthError::PasswordDisabled => "password login is not enabled",
        })
    }
}

/// What a new token should say (CLI `token`, host `host.token`).
#[derive(Debug, Clone, Default)]
pub struct MintRequest {
    pub sub: String,
    pub permissions: Vec<String>,
    pub rooms: Vec<String>,
    pub role: Option<String>,
    pub ttl_s: u64,
}

pub struct Authenticator {
    key: HS256Key,
    issuer: Option<String>,
    audience: Option<String>,
    password: Option<Box<[u8]>>,
    password_permissions: Vec<Box<str>>,
    by_role: BTreeMap<String, Vec<String>>,
    /// `auth.jwt_claims` when it is not the identity map.
    claim_names: Option<ClaimNames>,
}

impl Authenticator {
    pub fn new(
        secret: &[u8],
        issuer: Option<String>,
        audience: Option<String>,
        password: Option<&str>,
        password_permissions: &[String],
        by_role: BTreeMap<String, Vec<String>>,
    ) -> Authenticator {
        Authenticator {
            key: HS256Key::from_bytes(secret),
            issuer,
            audience,
            password: password.map(|p| p.as_bytes().into()),
            password_permissions: password_permissions
                .iter()
                .map(|p| p.as_str().into())
                .collect(),
            by_role,
            claim_names: None,
        }
    }

    /// Reads tokens through `auth.jwt_claims` (SPEC §13).
    pub fn with_claim_names(mut self, names: ClaimNames) -> Authenticator {
        self.claim_names = (names != ClaimNames::default()).then_some(names);
        self
    }

    /// Verifies an HS256 token at `now_unix`. Other algorithms (`none` included) fail.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Identity, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLong);
        }
        let options = VerificationOptions {
            time_tolerance: Some(Duration::from_secs(CLOCK_SKEW_S)),
            artificial_time: Some(UnixTimeStamp::from_secs(now_unix)),
            allowed_issuers: self.issuer.as_ref().map(|i| HashSet::from([i.clone()])),
            allowed_audiences: self.audience.as_ref().map(|a| HashSet::from([a.clone()])),
            max_token_length: Some(MAX_TOKEN_BYTES),
            ..VerificationOptions::default()
        };
        if let Some(names) = &self.claim_names {
            let claims = self
                .key
                .verify_token::<serde_json::Map<String, serde_json::Value>>(token, Some(options))
                .map_err(classify)?;
            let exp = claims.expires_at.ok_or(AuthError::MissingExp)?.as_secs();
            let mapped = names
                .read(claims.subject, &claims.custom)
                .map_err(|e| match e {
                    ClaimError::MissingSub => AuthError::MissingSub,
                    ClaimError::Malformed => AuthError::Malformed,
                })?;
            if exp <= now_unix {
                return Err(AuthError::Expired);
            }
            let (permissions, rooms) = (mapped.permissions, mapped.rooms);
            return Ok(self.identity(mapped.sub, permissions, rooms, mapped.role, Some(exp)));
        }
        let claims = self
            .key
            .verify_token::<TetherClaims>(token, Some(options))
            .map_err(classify)?;
        // An empty `sub` names nobody: refused like a missing one.
        let sub = claims
            .subject
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::MissingSub)?;
        let exp = claims.expires_at.ok_or(AuthError::MissingExp)?.as_secs();
        // Skew is tolerated on `nbf`/`iat` only: a token past its `exp` would
        // open a session that closes 4003 at once.
        if exp <= now_unix {
            return Err(AuthError::Expired);
        }
        let custom = claims.custom;
        Ok(self.identity(
            sub,
            custom.permissions.unwrap_or_default(),
            custom.rooms.unwrap_or_default(),
            custom.role,
            Some(exp),
        ))
    }

    /// Compares in time that depends only on the configured password's length.
    pub fn check_password(&self, given: &str) -> Result<Identity, AuthError> {
        let expected = self.password.as_ref().ok_or(AuthError::PasswordDisabled)?;
        let given = given.as_bytes();
        let mut diff = u8::from(given.len() != expected.len());
        for (i, e) in expected.iter().enumerate() {
            diff |= e ^ given.get(i).copied().unwrap_or(0);
        }
        if diff != 0 {
            return Err(AuthError::BadPassword);
        }
        let permissions = self
            .password_permissions
            .iter()
            .map(|p| p.to_string())
            .collect();
        Ok(self.identity(PASSWORD_SUB.into(), permissions, Vec::new(), None, None))
    }

    pub fn password_enabled(&self) -> bool {
        self.password.is_some()
    }

    /// Signs a token valid from `now_unix` for `ttl_s` seconds; returns it and its expiry.
    pub fn mint(&self, req: &MintRequest, now_unix: u64) -> Result<(String, u64), String> {
        if req.sub.is_empty() {
            return Err("`sub` must not be empty".into());
        }
        if req.ttl_s == 0 || req.ttl_s > MAX_TTL_S {
            return Err(format!(
                "a token lifetime of {} s is not between one second and ten years",
                req.ttl_s
            ));
        }
        let custom = TetherClaims {
            permissions: Some(req.permissions.clone()),
            rooms: Some(req.rooms.clone()),
            role: req.role.clone(),
        };
        let now = UnixTimeStamp::from_secs(now_unix);
        let exp = now_unix.saturating_add(req.ttl_s);
        let mut claims = Claims::with_custom_claims(custom, Duration::from_secs(req.ttl_s))
            .with_subject(&req.sub);
        claims.issued_at = Some(now);
        claims.invalid_before = Some(now);
        claims.expires_at = Some(UnixTimeStamp::from_secs(exp));
        if let Some(issuer) = &self.issuer {
            claims = claims.with_issuer(issuer);
        }
        if let Some(audience) = &self.audience {
            claims = claims.with_audience(audience);
        }
        let token = self.key.authenticate(claims).map_err(|e| e.to_string())?;
        Ok((token, exp))
    }

    pub(crate) fn identity(
        &self,
        sub: String,
        permissions: Vec<String>,
        token_rooms: Vec<String>,
        role: Option<String>,
        expires_at: Option<u64>,
    ) -> Identity {
        let mut rooms: Vec<Box<str>> = Vec::with_capacity(token_rooms.len());
        let role_rooms = role
            .as_ref()
            .and_then(|r| self.by_role.get(r))
            .into_iter()
            .flatten()
            .map(|template| template.replace("{sub}", &sub));
        for room in token_rooms.into_iter().chain(role_rooms) {
            if !room.is_empty() && !rooms.iter().any(|r| **r == *room) {
                rooms.push(room.into());
            }
        }
        Identity {
            sub: sub.into(),
            permissions: permissions.into_iter().map(Into::into).collect(),
            role: role.map(Into::into),
            rooms,
            expires_at,
        }
    }
}

fn classify(err: jwt_simple::Error) -> AuthError {
    match err.downcast_ref::<JWTError>() {
        Some(JWTError::TokenHasExpired) => AuthError::Expired,
        Some(JWTError::TokenNotValidYet) | Some(JWTError::ClockDrift) => AuthError::NotYetValid,
        Some(JWTError::RequiredIssuerMismatch) | Some(JWTError::RequiredIssuerMissing) => {
            AuthError::WrongIssuer
        }
        Some(JWTError::RequiredAudienceMismatch) | Some(JWTError::RequiredAudienceMissing) => {
            AuthError::WrongAudience
        }
        Some(JWTError::InvalidAuthenticationTag) | Some(JWTError::AlgorithmMismatch) => {
            AuthError::BadSignature
        }
        Some(JWTError::TokenTooLong) => AuthError::TooLong,
        _ => AuthError::Malformed,
    }
}

/// Parses a lifetime: `90s`, `15m`, `1h`, `7d`, or a plain number of seconds.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 15m, 1h or 7d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("`{text}` has an unknown unit; use s, m, h or d")),
    };
    match n.checked_mul(scale) {
        Some(0) => Err("a token lifetime must be at least one second".into()),
        Some(s) if s <= MAX_TTL_S => Ok(s),
        _ => Err(format!("`{text}` is longer than ten years")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn auth() -> Authenticator {
        let mut by_role = BTreeMap::new();
        by_role.insert(
            "provider".into(),
            vec!["provider_{sub}".into(), "calendar".into()],
        );
        Authenticator::new(
            SECRET,
            None,
            None,
            Some("hunter2hunter2"),
            &["admin".into()],
            by_role,
        )
    }

    fn mint(a: &Authenticator, req: MintRequest) -> String {
        a.mint(&req, NOW).unwrap().0
    }

    #[test]
    fn mint_and_verify_round_trip_with_role_rooms() {
        let a = auth();
        let token = mint(
            &a,
            MintRequest {
                sub: "42".into(),
                permissions: vec!["publish".into()],
                rooms: vec!["lobby".into(), "calendar".into()],
                role: Some("provider".into()),
                ttl_s: 3600,
            },
        );
        let id = a.verify(&token, NOW + 10).unwrap();
        assert_eq!(&*id.sub, "42");
        assert_eq!(id.expires_at, Some(NOW + 3600));
        let rooms: Vec<&str> = id.rooms.iter().map(|r| &**r).collect();
        assert_eq!(rooms, ["lobby", "calendar", "provider_42"]);
        assert!(id.has("publish") && !id.has("host") && !id.is_admin());
    }

    #[test]
    fn mint_bounds_the_lifetime() {
        // Found by fuzzing host.token: a huge ttl overflowed jwt-simple's clock.
        let a = auth();
        for ttl_s in [0, MAX_TTL_S + 1, u64::MAX] {
            let req = MintRequest {
                sub: "s".into(),
                ttl_s,
                ..Default::default()
            };
            assert!(a.mint(&req, NOW).is_err(), "ttl {ttl_s}");
        }
        let req = MintRequest {
            sub: "s".into(),
            ttl_s: MAX_TTL_S,
            ..Default::default()
        };
        let token = mint(&a, req);
        let id = a.verify(&token, NOW).unwrap();
        assert_eq!(id.expires_at, Some(NOW + MAX_TTL_S));
    }

    #[test]
    fn exp_is_strict_nbf_has_thirty_seconds_of_skew() {
        let a = auth();
        let token = mint(
            &a,
            MintRequest {
                sub: "s".into(),
                ttl_s: 60,
                ..Default::default()
            },
        );
        assert!(a.verify(&token, NOW + 59).is_ok());
        assert!(a.verify(&token, NOW - CLOCK_SKEW_S).is_ok());
        assert_eq!(a.verify(&token, NOW + 60), Err(AuthError::Expired));
        assert_eq!(
            a.verify(&token, NOW - CLOCK_SKEW_S - 1),
            Err(AuthError::NotYetValid)
        );
    }

    #[test]
    fn other_keys_algorithms_and_garbage_fail() {
        let a = auth();
        let other = Authenticator::new(&[7u8; 32], None, None, None, &[], BTreeMap::new());
        let foreign = mint(
            &other,
            MintRequest {
                sub: "s".into(),
                ttl_s: 60,
                ..Default::default()
            },
        );
        assert_eq!(a.verify(&foreign, NOW), Err(AuthError::BadSignature));
        // alg none: header {"alg":"none","typ":"JWT"}, claims {"sub":"x","exp":...}
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(a.verify(none, NOW).is_err());
        let hs512 = HS512Key::from_bytes(SECRET)
            .authenticate(Claims::create(Duration::from_secs(60)).with_subject("x"))
            .unwrap();
        assert!(a.verify(&hs512, NOW).is_err());
        assert_eq!(a.verify("not.a.jwt", NOW), Err(AuthError::Malformed));
        assert_eq!(
            a.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), NOW),
            Err(AuthError::TooLong)
        );
    }

    #[test]
    fn sub_and_exp_are_required() {
        let a = auth();
        let key = HS256Key::from_bytes(SECRET);
        let mut no_exp = Claims::create(Duration::from_secs(60)).with_subject("x");
        no_exp.expires_at = None;
        let t = key.authenticate(no_exp).unwrap();
        assert_eq!(
            a.verify(&t, Clock::now_since_epoch().as_secs()),
            Err(AuthError::MissingExp)
        );
        let t = key
            .authenticate(Claims::create(Duration::from_secs(60)))
            .unwrap();
        assert_eq!(
            a.verify(&t, Clock::now_since_epoch().as_secs()),
            Err(AuthError::MissingSub)
        );
    }

    #[test]
    fn issuer_and_audience_when_configured() {
        let strict = Authenticator::new(
            SECRET,
            Some("me".into()),
            Some("app".into()),
            None,
            &[],
            BTreeMap::new(),
        );
        let lax = auth();
        let from_lax = mint(
            &lax,
            MintRequest {
                sub: "s".into(),
                ttl_s: 60,
                ..Default::default()
            },
        );
        assert_eq!(strict.verify(&from_lax, NOW), Err(AuthError::WrongIssuer));
        let from_strict = mint(
            &strict,
            MintRequest {
                sub: "s".into(),
                ttl_s: 60,
                ..Default::default()
            },
        );
        assert!(strict.verify(&from_strict, NOW).is_ok());
    }

    #[test]
    fn password_login() {
        let a = auth();
        let id = a.check_password("hunter2hunter2").unwrap();
        assert_eq!(&*id.sub, PASSWORD_SUB);
        assert!(id.is_admin());
        assert_eq!(
            a.check_password("hunter2hunter"),
            Err(AuthError::BadPassword)
        );
        assert_eq!(
            a.check_password("hunter2hunter22"),
            Err(AuthError::BadPassword)
        );
        assert_eq!(a.check_password(""), Err(AuthError::BadPassword));
        let none = Authenticator::new(SECRET, None, None, None, &[], BTreeMap::new());
        assert_eq!(none.check_password("x"), Err(AuthError::PasswordDisabled));
    }

    #[test]
    fn room_rules() {
        let id = Identity {
            sub: "u".into(),
            permissions: vec!["room:project_*".into(), "room:exact".into()],
            role: None,
            rooms: vec!["mine".into()],
            expires_at: None,
        };
        assert!(id.may_join("mine") && id.may_join("exact") && id.may_join("project_9"));
        assert!(!id.may_join("exactly") && !id.may_join("other") && !id.may_join("project"));
        let admin = Identity {
            permissions: vec!["admin".into()],
            ..id
        };
        assert!(admin.may_join("anything") && admin.has("host"));
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("24h"), Ok(86400));
        assert_eq!(parse_ttl("7d"), Ok(604800));
        assert_eq!(parse_ttl("120"), Ok(120));
        assert!(parse_ttl("1w").is_err() && parse_ttl("").is_err() && parse_ttl("0").is_err());
        assert!(parse_ttl("99999999999999999999d").is_err());
        assert!(parse_ttl("3651d").is_err() && parse_ttl("3650d").is_ok());
    }
}
