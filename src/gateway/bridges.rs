//! Settings `hosts` (SPEC §11) -> endpoints on the loop: each bridged host is
//! endpoint `i` of the server and session `BRIDGED_KEY_BASE + i` of the hub.

use super::backend::{BackendConfig, BackendHost};
use super::endpoint::{Endpoint, ENDPOINT_BASE};
use super::http_pool::HttpTarget;
use super::program::{ProgramConfig, ProgramHost};
use super::server::Server;
use crate::proto::hub::{BRIDGED_KEY_BASE, MAX_BRIDGED};
use crate::proto::rooms::ConnKey;
use crate::settings::{ConfigSource, Settings};
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
    if let Some(url) = &s.server.websocket.auth.proxy_url {
        let target = HttpTarget::from_url(url, None)
            .map_err(|e| format!("server.websocket.auth.proxy_url: {e}"))?;
        server
            .set_auth_proxy(target, s.server.websocket.auth.auth_timeout_ms)
            .map_err(|e| format!("server.websocket.auth.proxy_url: {e}"))?;
    }
    Ok(())
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
        permissions: host.permissions.clone(),
        max_message_bytes: s.limits.max_message_bytes,
        request_timeout_ms: s.host.request_timeout_ms,
    })
}
