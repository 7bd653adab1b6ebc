//! Settings `hosts` (SPEC §11) -> endpoints on the loop: each bridged host is
//! endpoint `i` of the server and session `BRIDGED_KEY_BASE + i` of the hub.

use super::endpoint::ENDPOINT_BASE;
use super::program::{ProgramConfig, ProgramHost};
use super::server::Server;
use crate::proto::hub::{BRIDGED_KEY_BASE, MAX_BRIDGED};
use crate::settings::{ConfigSource, Settings};
use std::path::{Path, PathBuf};

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

/// Adds every configured bridged host to `server`.
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
        let Some(command) = &host.command else {
            return Err(format!(
                "hosts[{i}].url: HTTP backends as hosts are not supported by this build yet"
            ));
        };
        let cfg = ProgramConfig {
            name: host.name.clone(),
            command: command.clone(),
            cwd: cwd.clone(),
            permissions: host.permissions.clone(),
            max_message_bytes: s.limits.max_message_bytes,
            max_outbound_bytes: s.limits.max_outbound_bytes,
        };
        let registry = server
            .registry()
            .try_clone()
            .map_err(|e| format!("hosts[{i}]: {e}"))?;
        server
            .add_endpoint(|_, token| {
                let key = BRIDGED_KEY_BASE + (token.0 - ENDPOINT_BASE);
                Ok(Box::new(ProgramHost::new(cfg, key, registry, token)))
            })
            .map_err(|e| format!("hosts[{i}]: {e}"))?;
    }
    Ok(())
}
