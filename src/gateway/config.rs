//! The shell's settings and bounds: what each connection may cost, how many
//! sockets are held, and the fixed timings of SPEC §3-§4.

use super::conn::Conn;
use super::held;
use super::http_api::MAX_BODY_BYTES;
use super::pool::BUF_SIZE;
use crate::proto::bounds;
use crate::proto::frame::MAX_HEADER;
use crate::proto::handshake::MAX_REQUEST_BYTES;
use crate::proto::hub::HubConfig;
use crate::proto::origin::OriginPolicy;
use crate::proto::tail::MAX_VIEWERS;
use crate::settings::IpAllowList;
use std::fmt;

/// Bytes read per `read` call (one buffer shared by all connections).
pub const READ_CHUNK: usize = 64 * 1024;
/// Reads per connection per pass, so one busy client cannot starve the others.
pub const READS_PER_PASS: usize = 4;
/// Accepts per listener per pass.
pub const ACCEPTS_PER_PASS: usize = 128;
/// How long a peer has to answer our close frame (SPEC §4).
pub const CLOSE_LINGER_MS: u64 = 2_000;
/// How long a refused client has to read its HTTP answer.
pub const REFUSAL_LINGER_MS: u64 = 1_000;
/// Slots beyond `max_connections` for answering refusals politely.
pub const REFUSAL_RESERVE: usize = 64;
/// Connections served by the HTTP endpoints at once (beside `max_connections`,
/// so that health checks answer while the WebSocket side is full).
pub const MAX_HTTP_CONNS: usize = 32;
/// HTTP connections one address may hold, so that one client cannot take
/// every slot of the health listener.
pub const MAX_HTTP_CONNS_PER_IP: usize = 8;
/// The fewest handshakes in progress one address may have (see
/// `accept::handshakes_per_ip`).
pub const MIN_HANDSHAKES_PER_IP: usize = 8;
/// The longest an HTTP-only connection may take to send its request: a
/// health check is one short request, so a slow one is dropped early.
pub const HTTP_HEAD_TIMEOUT_MS: u64 = 2_000;

/// The shell's settings (from `settings::Limits` and the auth block).
pub struct ShellConfig {
    pub max_connections: usize,
    pub max_connections_per_ip: u32,
    pub max_connects_per_ip_per_hour: u32,
    pub max_message_bytes: usize,
    pub max_outbound_bytes: usize,
    pub idle_timeout_ms: u64,
    pub ping_interval_ms: u64,
    pub handshake_timeout_ms: u64,
    pub allow: IpAllowList,
    pub origins: OriginPolicy,
    /// Reverse proxies whose forwarding headers name the client (SPEC §13).
    pub trusted_proxies: IpAllowList,
    /// permessage-deflate is offered to new connections (SPEC §12).
    pub compression: bool,
    /// Messages shorter than this go uncompressed.
    pub compression_min_bytes: usize,
    /// What the room histories may hold, all rooms together (not per connection).
    pub history_bytes: usize,
    /// What the bridged hosts (SPEC §11) may hold, all together.
    pub bridged_bytes: usize,
}

impl ShellConfig {
    /// Worst-case bytes one connection may hold: its state (with its entry in
    /// the accept-time tables), its session in the core, a partial frame
    /// plus one read, a reassembled message, and a full outbound queue; with
    /// history on, its rooms' empty rings.
    pub fn per_connection_ceiling(&self) -> usize {
        std::mem::size_of::<Conn>()
            + held::BYTES_PER_CONNECTION
            + bounds::session_bytes_bound() // session, identity, rooms, pending requests
            + self.max_message_bytes + MAX_HEADER + READ_CHUNK
            + self.max_message_bytes
            + self.max_outbound_bytes + BUF_SIZE
            + if self.history_bytes > 0 { bounds::rings_bytes_bound() } else { 0 }
    }

    /// The deadline for an HTTP-only connection's request: the handshake
    /// deadline, at most `HTTP_HEAD_TIMEOUT_MS`.
    pub fn http_head_timeout_ms(&self) -> u64 {
        self.handshake_timeout_ms.min(HTTP_HEAD_TIMEOUT_MS)
    }

    /// `max_connections` connections of `ceiling` bytes each (and the
    /// dashboards' feeds, WebSockets on the health listener), plus what is
    /// not per connection (host roles; room histories; bridged hosts; HTTP
    /// requests and refusals, each with a request head and body), in MiB.
    pub fn worst_case_mib(&self, ceiling: usize) -> u64 {
        let side_conn = std::mem::size_of::<Conn>()
            + held::BYTES_PER_CONNECTION
            + 2 * (MAX_REQUEST_BYTES + MAX_BODY_BYTES)
            + BUF_SIZE;
        let shared = bounds::shared_bytes_bound()
            + self.history_bytes
            + self.bridged_bytes
            + (MAX_HTTP_CONNS + REFUSAL_RESERVE) * side_conn;
        let sessions = self.max_connections + MAX_VIEWERS;
        (ceiling as u64 * sessions as u64 + shared as u64) >> 20
    }

    /// Sockets held at most: `max_connections`, the slots for answering
    /// refusals, and the HTTP endpoints' own.
    pub fn socket_capacity(&self) -> usize {
        self.max_connections + REFUSAL_RESERVE + MAX_HTTP_CONNS
    }

    /// Small limits for unit tests: 10 connections, any address.
    #[cfg(test)]
    pub fn for_tests() -> ShellConfig {
        ShellConfig {
            max_connections: 10,
            max_connections_per_ip: 10,
            max_connects_per_ip_per_hour: 100,
            max_message_bytes: 1024,
            max_outbound_bytes: 4096,
            idle_timeout_ms: 60_000,
            ping_interval_ms: 20_000,
            handshake_timeout_ms: 5_000,
            allow: crate::settings::parse_allowed_ips("*").expect("a valid list"),
            origins: OriginPolicy::default(),
            trusted_proxies: IpAllowList::default(),
            compression: false,
            compression_min_bytes: 256,
            history_bytes: 0,
            bridged_bytes: 0,
        }
    }
}

/// What a SIGHUP reload applies: the shell's limits and lists, the core's
/// secrets and limits, and the log level.
pub struct Reloaded {
    pub shell: ShellConfig,
    pub hub: HubConfig,
    pub level: log::LevelFilter,
}

/// Re-reads the settings; an error keeps the running ones.
pub type ReloadFn = Box<dyn FnMut() -> Result<Reloaded, ReloadError>>;

/// Why a reload was refused (the running settings stay). Each shows the
/// message of what failed, as logged.
#[derive(Debug)]
pub enum ReloadError {
    /// The file does not load or validate.
    Settings(String),
    /// The JWT secret cannot be resolved.
    Secret(String),
    /// `allowed_ip` does not parse.
    AllowList(String),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Settings(e) | ReloadError::Secret(e) | ReloadError::AllowList(e) => {
                f.write_str(e)
            }
        }
    }
}

impl std::error::Error for ReloadError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_request_has_at_most_two_seconds_and_never_more_than_a_handshake() {
        let mut cfg = ShellConfig::for_tests();
        cfg.handshake_timeout_ms = 10_000;
        assert_eq!(cfg.http_head_timeout_ms(), HTTP_HEAD_TIMEOUT_MS);
        cfg.handshake_timeout_ms = 300;
        assert_eq!(cfg.http_head_timeout_ms(), 300);
    }
}
