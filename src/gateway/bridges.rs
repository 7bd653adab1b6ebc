//! Settings `hosts` (SPEC §11) -> endpoints on the loop: each bridged host is
//! endpoint `i` of the server and session `BRIDGED_KEY_BASE + i` of the hub.

use super::backend::{self, BackendConfig, BackendHost};
use super::endpoint::{Endpoint, ENDPOINT_BASE};
use super::http_pool::HttpTarget;
use super::program::{self, ProgramConfig, ProgramHost};
use super::server::Server;
use crate::proto::hub::{BRIDGED_KEY_BASE, MAX_BRIDGED};
use crate::proto::rooms::ConnKey;
use crate::settings::{ConfigSource, Settings};
use log::info;
use mio::{Registry, Token};
use std::io;
use std::path::{Path, PathBuf};

/// Makes a bridged host's endpoint, given its session key and token.
type MakeEndpoint = dyn FnOnce(&Registry, ConnKey, Token) -> io::Result<Box<dyn Endpoint>>;

/// Where programs run: the settings file's directory.
fn settings_dir(source: &ConfigSource) -> PathBuf {
    match source {
        ConfigSource::File(path) => match path.parent() {
            Some(dir) if dir != Path::new("") => dir.to_path_buf(),
            _ => PathBuf::from("."),
        },
        ConfigSource::Defaults => PathBuf::from("."),
    }
}

/// Adds every configured bridged host, and the connect proxy, to `server`.
pub fn add_bridged_hosts(
    server: &mut Server,
    s: &Settings,
    source: &ConfigSource,
) -> Result<(), String> {
    if s.hosts.len() > MAX_BRIDGED {
        return Err(format!("hosts: at most {MAX_BRIDGED} bridged hosts"));
    }
    let cwd = settings_dir(source);
    for (i, host) in s.hosts.iter().enumerate() {
        let endpoint: Box<MakeEndpoint> = match &host.command {
            Some(command) => {
                let cfg = ProgramConfig {
                    name: host.name.clone(),
                    command: command.clone(),
                    cwd: cwd.clone(),
                    permissions: host.permissions.clone(),
                    max_message_bytes: s.limits.max_message_bytes,
                    max_outbound_bytes: s.limits.max_outbound_bytes,
                };
                Box::new(move |registry, key, token| {
                    let registry = registry.try_clone()?;
                    Ok(Box::new(ProgramHost::new(cfg, key, registry, token)))
                })
            }
            None => {
                let cfg = backend_config(s, i)?;
                Box::new(move |registry, key, token| {
                    Ok(Box::new(BackendHost::new(cfg, key, registry, token)?))
                })
            }
        };
        server
            .add_endpoint(|registry, token| {
                let key = BRIDGED_KEY_BASE + (token.0 - ENDPOINT_BASE);
                endpoint(registry, key, token)
            })
            .map_err(|e| format!("hosts[{i}]: {e}"))?;
    }
    if !s.hosts.is_empty() {
        let bytes = bridged_bytes_bound(s);
        info!(
            "bridged hosts memory ceiling: {bytes} bytes ({} MiB) for {} hosts' pipes, HTTP connections and queues (in the worst case above)",
            bytes.div_ceil(1 << 20),
            s.hosts.len()
        );
    }
    if let Some(url) = &s.server.websocket.auth.proxy_url {
        let target = HttpTarget::from_url(url, None)
            .map_err(|e| format!("server.websocket.auth.proxy_url: {e}"))?;
        server
            .set_auth_proxy(target, s.server.websocket.auth.auth_timeout_ms)
            .map_err(|e| format!("server.websocket.auth.proxy_url: {e}"))?;
    }
    Ok(())
}

/// Worst-case bytes the bridged hosts of `s` hold together (SPEC §8
/// addition): their pipes' line buffers and stdin queues, their HTTP
/// connections with their requests and responses, and what waits for them.
pub fn bridged_bytes_bound(s: &Settings) -> usize {
    let limits = (s.limits.max_message_bytes, s.limits.max_outbound_bytes);
    s.hosts
        .iter()
        .map(|host| match (&host.command, host.url.as_deref()) {
            (Some(_), _) => program::bytes_bound(limits.0, limits.1),
            (None, url) => {
                let url = url.unwrap_or("");
                backend::bytes_bound(
                    (host.max_in_flight, host.pipeline),
                    limits,
                    url.len(),
                    url.starts_with("https://"),
                )
            }
        })
        .sum()
}

/// The running form of `url` host `i`: its address resolved once, now.
fn backend_config(s: &Settings, i: usize) -> Result<BackendConfig, String> {
    let host = &s.hosts[i];
    let url = host.url.as_deref().unwrap_or("");
    let target = HttpTarget::from_url(url, host.ca.as_deref())
        .map_err(|e| format!("hosts[{i}].url: {e}"))?;
    let events: serde_json::Map<String, serde_json::Value> = host
        .events
        .iter()
        .map(|(event, permission)| (event.clone(), permission.clone().into()))
        .collect();
    Ok(BackendConfig {
        name: host.name.clone(),
        target,
        events: events.into(),
        notify: host.notify.clone(),
        max_in_flight: host.max_in_flight,
        pipeline: host.pipeline,
        permissions: host.permissions.clone(),
        max_message_bytes: s.limits.max_message_bytes,
        max_outbound_bytes: s.limits.max_outbound_bytes,
        request_timeout_ms: s.host.request_timeout_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::config::ShellConfig;
    use crate::settings::testing::parse;

    fn settings(hosts: &str, limits: &str) -> Settings {
        parse(&format!(r#"{{"limits":{{{limits}}},"hosts":[{hosts}]}}"#)).unwrap()
    }

    #[test]
    fn bridged_hosts_count_their_buffers_in_the_worst_case() {
        let limits = r#""max_message_bytes":65536,"max_outbound_bytes":262144"#;
        let program = r#"{"name":"p","command":["true"]}"#;
        let url = |n: usize| {
            format!(
                r#"{{"name":"u","url":"http://127.0.0.1:9/t/","events":{{"e":null}},"max_in_flight":{n}}}"#
            )
        };
        assert_eq!(bridged_bytes_bound(&settings("", limits)), 0);
        // A program: its stdin queue restarts it past twice max_outbound_bytes;
        // its stdout holds a partial line and one read pass.
        let one = bridged_bytes_bound(&settings(program, limits));
        assert_eq!(one, program::bytes_bound(65536, 262144));
        assert!(one > 2 * 262144 + 65536 + 256 * 1024, "{one}");
        assert!(one < 4 << 20, "{one}");
        // A url host: per connection a request and a response of up to
        // max_message_bytes; what waits is bounded by max_outbound_bytes.
        let url8 = bridged_bytes_bound(&settings(&url(8), limits));
        let url16 = bridged_bytes_bound(&settings(&url(16), limits));
        let per_conn = (url16 - url8) / 8;
        assert!(per_conn > 2 * 65536, "{per_conn}");
        assert!(url8 > 8 * per_conn + 262144, "{url8}");
        let https = url(8).replace("http:", "https:");
        assert!(bridged_bytes_bound(&settings(&https, limits)) > url8 + 8 * 64 * 1024);
        // Both add up, and scale with the limits.
        let both = bridged_bytes_bound(&settings(&format!("{program},{}", url(8)), limits));
        assert_eq!(both, one + url8);
        let bigger = r#""max_message_bytes":131072,"max_outbound_bytes":524288"#;
        assert!(bridged_bytes_bound(&settings(program, bigger)) > one + 2 * 262144);
        // The logged worst case includes them.
        let mut cfg = ShellConfig::for_tests();
        let ceiling = cfg.per_connection_ceiling();
        let without = cfg.worst_case_mib(ceiling);
        cfg.bridged_bytes = 64 << 20;
        assert_eq!(cfg.worst_case_mib(ceiling), without + 64);
    }
}
