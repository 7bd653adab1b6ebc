//! The settings of SPEC §13 (a drop-in for other servers' clients): unknown
//! keys outside tether's own objects, `envelope`, `trusted_proxies`,
//! `jwt_claims`, `rooms.by_path` and wildcard origins.

use super::allow_list::{parse_network_list, IpAllowList};
use super::errors::SettingError;
use super::schema::{Envelope, Settings};
use crate::proto::action::Dialect;
use crate::proto::claims::ClaimNames;
use crate::proto::hub::Compat;
use crate::proto::origin::{OriginPattern, OriginPolicy};
use crate::proto::path_rooms::PathRooms;

/// tether's keys at the top of the document and in `server`; any other key
/// there belongs to the program whose settings file this is.
const TOP_KEYS: [&str; 7] = [
    "server", "limits", "rooms", "host", "log", "hosts", "cluster",
];
const SERVER_KEYS: [&str; 2] = ["websocket", "health"];
/// tether's objects of part two, not built yet: refused rather than ignored,
/// so that a file written for a later version does not half work.
const NOT_YET: [&str; 0] = [];

/// Dotted paths of the keys to ignore (each gets one warning), and errors
/// for tether's keys this version does not have yet.
pub(super) fn outside_keys(document: &serde_json::Value) -> (Vec<String>, Vec<SettingError>) {
    let mut ignored = Vec::new();
    let mut errors = Vec::new();
    let Some(top) = document.as_object() else {
        return (ignored, errors);
    };
    for key in top.keys() {
        if NOT_YET.contains(&key.as_str()) {
            errors.push(SettingError::new(
                key.as_str(),
                "not supported by this version of tether",
            ));
        } else if !TOP_KEYS.contains(&key.as_str()) {
            ignored.push(key.clone());
        }
    }
    if let Some(server) = top.get("server").and_then(|s| s.as_object()) {
        for key in server.keys() {
            if !SERVER_KEYS.contains(&key.as_str()) {
                ignored.push(format!("server.{key}"));
            }
        }
    }
    (ignored, errors)
}

/// The line shown for an ignored key.
pub fn ignored_key_warning(key: &str) -> String {
    format!("{key}: not one of tether's settings; ignored")
}

/// Shown among the errors of a refused file too, so that one round fixes it.
pub(super) fn ignored_as_problem(key: &str) -> SettingError {
    SettingError::new(key, "warning: not one of tether's settings; ignored")
}

impl Settings {
    /// The dialect, `jwt_claims` and `by_path` for the core.
    pub fn compat(&self) -> Compat {
        Compat {
            dialect: match self.server.websocket.envelope {
                Envelope::Event => Dialect::Event,
                Envelope::Action => Dialect::Action,
            },
            // Validation refused bad templates; none are left to drop here.
            path_rooms: PathRooms::new(&self.rooms.by_path).unwrap_or_default(),
        }
    }

    pub fn claim_names(&self) -> ClaimNames {
        let names = &self.server.websocket.auth.jwt_claims;
        ClaimNames {
            sub: names.sub.clone(),
            permissions: names.permissions.clone(),
            rooms: names.rooms.clone(),
            role: names.role.clone(),
        }
    }

    /// The parsed `trusted_proxies`. Cannot fail once [`Settings::validate`] passed.
    pub fn trusted_proxies(&self) -> Result<IpAllowList, SettingError> {
        parse_network_list(&self.server.websocket.trusted_proxies)
            .map_err(|(i, reason)| SettingError::new(trusted_key(i), reason))
    }

    pub fn origin_policy(&self) -> OriginPolicy {
        OriginPolicy::new(&self.server.websocket.auth.allowed_origins)
    }

    /// The problems of the SPEC §13 values.
    pub(super) fn compat_problems(&self) -> Vec<SettingError> {
        let mut errors = Vec::new();
        let ws = &self.server.websocket;
        if let Err(e) = self.trusted_proxies() {
            errors.push(e);
        }
        for (i, origin) in ws.auth.allowed_origins.iter().enumerate() {
            if let Err(reason) = OriginPattern::parse(origin) {
                let key = format!("server.websocket.auth.allowed_origins[{i}]");
                errors.push(SettingError::new(key, reason));
            }
        }
        let names = &ws.auth.jwt_claims;
        for (field, name) in [
            ("sub", &names.sub),
            ("permissions", &names.permissions),
            ("rooms", &names.rooms),
            ("role", &names.role),
        ] {
            if name.trim().is_empty() {
                errors.push(SettingError::new(
                    format!("server.websocket.auth.jwt_claims.{field}"),
                    "must not be empty; expected the name of a token claim",
                ));
            }
        }
        if let Err((template, reason)) = PathRooms::new(&self.rooms.by_path) {
            errors.push(SettingError::new(
                format!("rooms.by_path.{template}"),
                reason,
            ));
        }
        errors
    }
}

fn trusted_key(i: usize) -> String {
    format!("server.websocket.trusted_proxies[{i}]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::testing::{keys, parse};

    #[test]
    fn a_bots_whole_settings_file_is_accepted() {
        let text = r#"{
          "bot": {"token": "xyz", "prefix": "!"},
          "discord": {"guild": 1},
          "server": {
            "websocket": {"host": "localhost", "port": 8080,
                          "auth": {"allowed_ip": "127.0.0.1", "password": "MineAcademy"}},
            "web": {"port": 80}
          }
        }"#;
        let settings = parse(text).unwrap();
        assert_eq!(settings.ignored_keys, ["bot", "discord", "server.web"]);
        assert_eq!(settings.server.websocket.port, 8080);
        assert_eq!(settings.validate(), Ok(()));
        assert_eq!(
            ignored_key_warning("bot"),
            "bot: not one of tether's settings; ignored"
        );
        // Not in the printed settings.
        assert!(!settings.redacted_pretty().contains("discord"));
    }

    #[test]
    fn inside_tethers_objects_unknown_keys_stay_errors() {
        for (text, key) in [
            (
                r#"{"server":{"websocket":{"nope":1}}}"#,
                "server.websocket.nope",
            ),
            (r#"{"server":{"health":{"nope":1}}}"#, "server.health.nope"),
            (r#"{"rooms":{"by_room":{}}}"#, "rooms.by_room"),
            (r#"{"host":{"nope":1}}"#, "host.nope"),
            (r#"{"log":{"nope":1}}"#, "log.nope"),
            (r#"{"cluster":{"nodes":1}}"#, "cluster.nodes"),
            (
                r#"{"server":{"websocket":{"auth":{"jwt_claims":{"uid":"x"}}}}}"#,
                "server.websocket.auth.jwt_claims.uid",
            ),
        ] {
            let errors = parse(text).unwrap_err();
            assert_eq!(keys(&errors), [key], "{text}");
        }
        // A refused file still lists the ignored keys, once each.
        let errors = parse(r#"{"bot":1,"limits":{"bogus":1}}"#).unwrap_err();
        assert_eq!(keys(&errors), ["limits.bogus", "bot"]);
        assert!(errors.to_string().contains("bot: warning:"), "{errors}");
    }

    #[test]
    fn compat_values() {
        let text = r#"{
          "server": {"websocket": {
            "envelope": "action",
            "trusted_proxies": ["10.0.0.2", "172.16.0.0/12"],
            "auth": {"jwt_claims": {"sub": "user_id", "permissions": "scope"},
                     "allowed_origins": ["https://*.example.com"]}
          }},
          "rooms": {"by_path": {"/ws/projects/{id}/": ["project_{id}"]}}
        }"#;
        let settings = parse(text).unwrap();
        assert_eq!(settings.validate(), Ok(()));
        assert_eq!(settings.compat().dialect, Dialect::Action);
        assert_eq!(
            settings.compat().path_rooms.rooms_for("/ws/projects/7/"),
            vec!["project_7".into()] as Vec<Box<str>>
        );
        let names = settings.claim_names();
        assert_eq!(
            (names.sub.as_str(), names.rooms.as_str()),
            ("user_id", "rooms")
        );
        let proxies = settings.trusted_proxies().unwrap();
        assert!(proxies.allows("172.20.1.1".parse().unwrap()));
        assert!(!proxies.allows("10.0.0.3".parse().unwrap()));
        assert!(settings.origin_policy().allows("https://app.example.com"));
        let shown = settings.redacted_pretty();
        for key in ["envelope", "trusted_proxies", "jwt_claims", "by_path"] {
            assert!(shown.contains(key), "{key} not printed: {shown}");
        }
        assert!(!Settings::default().redacted_pretty().contains("envelope"));

        let bad = r#"{
          "server": {"websocket": {
            "trusted_proxies": ["10.0.0.2", "*"],
            "auth": {"jwt_claims": {"sub": ""},
                     "allowed_origins": ["https://a.*.example.com"]}
          }},
          "rooms": {"by_path": {"ws/{id}": ["r"]}}
        }"#;
        let errors = parse(bad).unwrap().validate().unwrap_err();
        assert_eq!(
            keys(&errors),
            [
                "server.websocket.trusted_proxies[1]",
                "server.websocket.auth.allowed_origins[0]",
                "server.websocket.auth.jwt_claims.sub",
                "rooms.by_path.ws/{id}",
            ]
        );
        let errors = parse(r#"{"server":{"websocket":{"envelope":"flat"}}}"#).unwrap_err();
        assert_eq!(keys(&errors), ["server.websocket.envelope"]);
    }
}
