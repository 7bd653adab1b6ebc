//! `hosts` (SPEC §11): programs and HTTP backends bridged in as hosts, and
//! the checks on them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::errors::SettingError;

/// Longest bridged host name (as `cluster.node`).
pub const MAX_HOST_NAME: usize = 32;
/// Most requests one `url` host may have in flight.
const MAX_IN_FLIGHT: usize = 1024;
/// Requests one `url` host may pipeline on a connection.
const MAX_PIPELINE: usize = 64;
/// Notices a `url` host may ask for.
const NOTICES: [&str; 2] = ["client_joined", "client_left"];

/// One entry of `hosts`: a `command` or a `url`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, expecting = "a JSON object")]
pub struct BridgedHost {
    pub name: String,
    /// The program and its arguments (run without a shell).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub permissions: Vec<String>,
    /// `url` hosts: event -> permission (null: any authenticated client).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub events: BTreeMap<String, Option<String>>,
    /// `url` hosts: the notices POSTed to it (`client_joined`, `client_left`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
    pub max_in_flight: usize,
    /// `url` hosts: requests pipelined on one kept-alive connection at most
    /// (HTTP/1.1 pipelining, opt-in; 1: one at a time).
    pub pipeline: usize,
    /// `https://` hosts: a PEM file of CAs to verify against instead of the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

impl Default for BridgedHost {
    fn default() -> Self {
        BridgedHost {
            name: String::new(),
            command: None,
            url: None,
            permissions: vec!["host".to_string()],
            events: BTreeMap::new(),
            notify: Vec::new(),
            max_in_flight: 8,
            pipeline: 1,
            ca: None,
        }
    }
}

/// Letters, digits, `-` and `_`, 1 to 32 of them (the rule of `cluster.node`).
pub fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HOST_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Every problem of `hosts`, keyed `hosts[i].field`.
pub(super) fn check_hosts(hosts: &[BridgedHost], errors: &mut Vec<SettingError>) {
    let mut fail = |key: String, reason: &str| errors.push(SettingError::new(key, reason));
    for (i, host) in hosts.iter().enumerate() {
        let at = |field: &str| format!("hosts[{i}].{field}");
        if !valid_host_name(&host.name) {
            fail(at("name"), "expected 1 to 32 letters, digits, `-` or `_`");
        } else if hosts[..i].iter().any(|h| h.name == host.name) {
            fail(
                at("name"),
                "another host has this name; names must be unique",
            );
        }
        match (&host.command, &host.url) {
            (Some(_), Some(_)) | (None, None) => fail(
                format!("hosts[{i}]"),
                "expected exactly one of `command` (a program) or `url` (an HTTP backend)",
            ),
            (Some(command), None) => {
                if command.first().is_none_or(|p| p.trim().is_empty()) {
                    fail(
                        at("command"),
                        "expected [\"program\", \"arg\", ...] with a program name",
                    );
                }
                let url_only = !host.events.is_empty() || !host.notify.is_empty();
                if url_only {
                    fail(
                        at("events"),
                        "`events` and `notify` are for `url` hosts; a program registers its \
                         events with host.register",
                    );
                }
            }
            (None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    fail(at("url"), "expected an http:// or https:// URL");
                }
            }
        }
        for (j, permission) in host.permissions.iter().enumerate() {
            if permission.trim().is_empty() {
                fail(at(&format!("permissions[{j}]")), "must not be empty");
            }
        }
        for (event, permission) in &host.events {
            if event.trim().is_empty() || event.starts_with("host.") {
                fail(
                    at("events"),
                    "event names must not be empty nor start with `host.`",
                );
            }
            if permission.as_deref().is_some_and(|p| p.trim().is_empty()) {
                fail(
                    at(&format!("events.{event}")),
                    "must not be empty; use null for any authenticated client",
                );
            }
        }
        for (j, notice) in host.notify.iter().enumerate() {
            if !NOTICES.contains(&notice.as_str()) {
                fail(
                    at(&format!("notify[{j}]")),
                    "expected \"client_joined\" or \"client_left\"",
                );
            }
        }
        if !(1..=MAX_IN_FLIGHT).contains(&host.max_in_flight) {
            fail(at("max_in_flight"), "must be from 1 to 1024");
        }
        if !(1..=MAX_PIPELINE).contains(&host.pipeline) {
            fail(at("pipeline"), "must be from 1 to 64");
        } else if host.pipeline > 1 && host.command.is_some() {
            fail(at("pipeline"), "`pipeline` is for `url` hosts");
        } else if host.pipeline > host.max_in_flight.max(1) {
            fail(at("pipeline"), "must not be over `max_in_flight`");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::testing::{keys, parse};

    #[test]
    fn hosts_parse_with_defaults() {
        let s = parse(
            r#"{"hosts":[{"name":"soundbot","command":["python3","bot.py"]},
            {"name":"web","url":"http://127.0.0.1:8000/tether/","events":{"getAppointments":"appointments.view","ping.backend":null},
             "notify":["client_joined","client_left"],"max_in_flight":4}]}"#,
        )
        .unwrap();
        assert_eq!(s.hosts.len(), 2);
        assert_eq!(s.hosts[0].permissions, vec!["host"]);
        assert_eq!(s.hosts[0].max_in_flight, 8);
        assert_eq!(s.hosts[1].events.len(), 2);
        assert_eq!(s.validate(), Ok(()));
        let shown = s.redacted();
        assert_eq!(shown["hosts"][0]["name"], "soundbot");
        // No hosts: the key is not shown, so the SPEC §2 document stays as it is.
        assert!(parse("{}").unwrap().redacted().get("hosts").is_none());
    }

    #[test]
    fn bad_hosts_are_named() {
        let errors = parse(
            r#"{"hosts":[{"name":"a b","command":[]},{"name":"x","url":"ftp://x"},
            {"name":"x","command":["p"],"url":"http://x"},{"name":"y","command":["p"],"events":{"e":null}},
            {"name":"z","url":"http://x","notify":["joined"],"max_in_flight":0,"permissions":[""]}]}"#,
        )
        .unwrap()
        .validate()
        .unwrap_err();
        assert_eq!(
            keys(&errors),
            [
                "hosts[0].name",
                "hosts[0].command",
                "hosts[1].url",
                "hosts[2].name",
                "hosts[2]",
                "hosts[3].events",
                "hosts[4].permissions[0]",
                "hosts[4].notify[0]",
                "hosts[4].max_in_flight",
            ]
        );
        let errors = parse(r#"{"hosts":[{"name":"a","command":["p"],"nope":1}]}"#).unwrap_err();
        assert_eq!(keys(&errors), ["hosts[0].nope"]);
    }

    #[test]
    fn pipeline_is_checked() {
        let ok =
            parse(r#"{"hosts":[{"name":"p","url":"http://x","max_in_flight":32,"pipeline":8}]}"#)
                .unwrap();
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(
            parse("{\"hosts\":[{\"name\":\"p\",\"url\":\"http://x\"}]}")
                .unwrap()
                .hosts[0]
                .pipeline,
            1
        );
        let errors = parse(
            r#"{"hosts":[{"name":"p","url":"http://x","max_in_flight":4,"pipeline":5},
            {"name":"q","url":"http://x","pipeline":0},{"name":"r","command":["p"],"pipeline":2},
            {"name":"s","url":"http://x","max_in_flight":128,"pipeline":65}]}"#,
        )
        .unwrap()
        .validate()
        .unwrap_err();
        assert_eq!(
            keys(&errors),
            [
                "hosts[0].pipeline",
                "hosts[1].pipeline",
                "hosts[2].pipeline",
                "hosts[3].pipeline"
            ]
        );
    }
}
