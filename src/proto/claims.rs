//! `auth.jwt_claims` (SPEC §13): tokens minted by another backend (Django
//! SimpleJWT names its subject `user_id`, a number) read through a map from
//! tether's claims to the token's.

use serde_json::{Map, Value};

/// Why a token's claims do not make an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimError {
    /// No non-empty string or integer subject.
    MissingSub,
    /// A claim of the wrong shape.
    Malformed,
}

/// The token claim that carries each of tether's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    pub sub: String,
    pub permissions: String,
    pub rooms: String,
    pub role: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        ClaimNames {
            sub: "sub".into(),
            permissions: "permissions".into(),
            rooms: "rooms".into(),
            role: "role".into(),
        }
    }
}

/// tether's claims read from a token's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub sub: String,
    pub permissions: Vec<String>,
    pub rooms: Vec<String>,
    pub role: Option<String>,
}

impl ClaimNames {
    /// Reads tether's claims: `subject` is the registered `sub` (jwt-simple
    /// takes it out of `custom`, which holds every other claim). A claim the
    /// token lacks under its mapped name is read under tether's own, so that
    /// tokens tether mints (`tether token`, `host.token`) still verify.
    pub fn read(
        &self,
        subject: Option<String>,
        custom: &Map<String, Value>,
    ) -> Result<Mapped, ClaimError> {
        let defaults = ClaimNames::default();
        let claim = |name: &str, own: &str| {
            let named = |n: &str| custom.get(n).filter(|v| !v.is_null());
            named(name).or_else(|| named(own))
        };
        let sub = match (self.sub != defaults.sub)
            .then(|| custom.get(&self.sub))
            .flatten()
        {
            None | Some(Value::Null) => subject,
            Some(Value::String(s)) => Some(s.clone()),
            // A number is its decimal string (`user_id: 42` is "42").
            Some(Value::Number(n)) if !n.is_f64() => Some(n.to_string()),
            Some(_) => return Err(ClaimError::MissingSub),
        };
        let sub = sub
            .filter(|s| !s.is_empty())
            .ok_or(ClaimError::MissingSub)?;
        let permissions = match claim(&self.permissions, &defaults.permissions) {
            None => Vec::new(),
            // OAuth-style `scope`: one space-separated string.
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            Some(other) => strings(other)?,
        };
        let rooms = claim(&self.rooms, &defaults.rooms)
            .map(strings)
            .transpose()?
            .unwrap_or_default();
        let role = match claim(&self.role, &defaults.role) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(ClaimError::Malformed),
        };
        Ok(Mapped {
            sub,
            permissions,
            rooms,
            role,
        })
    }
}

fn strings(value: &Value) -> Result<Vec<String>, ClaimError> {
    let Value::Array(items) = value else {
        return Err(ClaimError::Malformed);
    };
    items
        .iter()
        .map(|item| {
            item.as_str()
                .map(str::to_string)
                .ok_or(ClaimError::Malformed)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names() -> ClaimNames {
        ClaimNames {
            sub: "user_id".into(),
            permissions: "scope".into(),
            ..ClaimNames::default()
        }
    }

    fn custom(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn simplejwt_shape() {
        let token = custom(
            json!({"token_type": "access", "jti": "ab", "user_id": 42, "scope": "publish room:project_7"}),
        );
        let mapped = names().read(None, &token).unwrap();
        assert_eq!(mapped.sub, "42");
        assert_eq!(mapped.permissions, ["publish", "room:project_7"]);
        assert!(mapped.rooms.is_empty() && mapped.role.is_none());
        let token = custom(
            json!({"user_id": "u-1", "scope": ["a", "b"], "rooms": ["r"], "role": "provider"}),
        );
        let mapped = names().read(Some("ignored".into()), &token).unwrap();
        assert_eq!((mapped.sub.as_str(), mapped.rooms.len()), ("u-1", 1));
        assert_eq!(mapped.permissions, ["a", "b"]);
        assert_eq!(mapped.role.as_deref(), Some("provider"));
    }

    #[test]
    fn wrong_shapes_are_refused() {
        let read = |v: Value| names().read(None, &custom(v));
        assert_eq!(read(json!({})), Err(ClaimError::MissingSub));
        assert_eq!(read(json!({"user_id": 1.5})), Err(ClaimError::MissingSub));
        assert_eq!(read(json!({"user_id": ""})), Err(ClaimError::MissingSub));
        assert_eq!(
            read(json!({"user_id": 1, "scope": [1]})),
            Err(ClaimError::Malformed)
        );
        assert_eq!(
            read(json!({"user_id": 1, "rooms": "r"})),
            Err(ClaimError::Malformed)
        );
        assert_eq!(
            read(json!({"user_id": 1, "role": 3})),
            Err(ClaimError::Malformed)
        );
        assert_eq!(read(json!({"user_id": -3})).unwrap().sub, "-3");
        // The default names read the registered `sub`; so do mapped names
        // for a token without the mapped claims (one tether minted).
        let mapped = ClaimNames::default()
            .read(Some("alice".into()), &Map::new())
            .unwrap();
        assert_eq!(mapped.sub, "alice");
        let own = custom(json!({"permissions": ["host"]}));
        let mapped = names().read(Some("bot".into()), &own).unwrap();
        assert_eq!(
            (mapped.sub.as_str(), &mapped.permissions[..]),
            ("bot", &["host".to_string()][..])
        );
    }
}
