//! The sans-IO core: protocol, sessions, auth, rooms and limits.
//! Nothing here touches a socket or reads the clock: time is passed in.

pub mod action;
pub mod activity;
pub mod auth;
pub mod bounds;
pub mod claims;
pub mod client_id;
pub mod cluster;
pub mod deflate;
pub mod envelope;
pub mod forwarded;
pub mod frame;
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod history;
pub mod host_link;
pub mod http_response;
pub mod hub;
pub mod limits;
pub mod origin;
pub mod outbox;
pub mod path_rooms;
pub mod program_host;
pub mod proxied;
pub mod redis;
pub mod rooms;
pub mod tail;

/// The current time, as the shell read it once per loop pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds (since the gateway started): deadlines.
    pub ms: u64,
    /// Wall-clock unix seconds: token validity, timestamps in messages.
    pub unix: u64,
}

impl Now {
    /// The monotonic instant at which unix time `unix` arrives.
    pub fn ms_at_unix(&self, unix: u64) -> u64 {
        self.ms
            .saturating_add(unix.saturating_sub(self.unix).saturating_mul(1000))
    }
}
