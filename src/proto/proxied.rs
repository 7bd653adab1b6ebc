//! What a connect proxy's answer makes of a handshake (SPEC §11): the
//! identity its `{"sub",...}` names, as a token with those claims would.

use crate::proto::auth::{Authenticator, Identity};
use serde::Deserialize;

impl Authenticator {
    /// The identity a connect proxy's 200 answer names (SPEC §11):
    /// `{"sub","permissions"?,"rooms"?,"role"?,"expiresAt"?}`; `None` when it
    /// is not that, or already expired.
    pub fn proxied_identity(&self, body: &[u8], now_unix: u64) -> Option<Identity> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Proxied {
            sub: String,
            #[serde(default)]
            permissions: Vec<String>,
            #[serde(default)]
            rooms: Vec<String>,
            role: Option<String>,
            expires_at: Option<u64>,
        }
        let answer: Proxied = serde_json::from_slice(body).ok()?;
        if answer.sub.is_empty() || answer.expires_at.is_some_and(|exp| exp <= now_unix) {
            return None;
        }
        Some(self.identity(
            answer.sub,
            answer.permissions,
            answer.rooms,
            answer.role,
            answer.expires_at,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const NOW: u64 = 1_800_000_000;

    fn auth() -> Authenticator {
        let mut by_role = BTreeMap::new();
        by_role.insert(
            "provider".to_string(),
            vec!["provider_{sub}".to_string(), "calendar".to_string()],
        );
        Authenticator::new(
            b"proxy-test-secret-0123456789abcdef",
            None,
            None,
            None,
            &[],
            by_role,
        )
    }

    #[test]
    fn a_connect_proxy_answer_is_an_identity() {
        let a = auth();
        let answer =
            br#"{"sub":"9","permissions":["publish"],"role":"provider","expiresAt":2000000000}"#;
        let id = a.proxied_identity(answer, NOW).unwrap();
        assert_eq!(&*id.sub, "9");
        assert_eq!(id.rooms, vec!["provider_9".into(), "calendar".into()]);
        assert_eq!(id.expires_at, Some(2_000_000_000));
        assert!(a.proxied_identity(br#"{"sub":"9"}"#, NOW).is_some());
        for bad in [
            &br#"{"sub":""}"#[..],
            br#"{}"#,
            b"nope",
            br#"{"sub":"9","expiresAt":1}"#,
        ] {
            assert!(a.proxied_identity(bad, NOW).is_none());
        }
    }
}
