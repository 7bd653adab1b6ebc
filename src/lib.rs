//! tether: a small, fast WebSocket gateway for Raspberry Pi-class boards.
//!
//! `proto` is the sans-IO core (protocol, sessions, auth, rooms, limits);
//! `gateway` is the one-thread mio shell that drives it; `settings` is the
//! configuration contract of SPEC §2.

pub mod gateway;
pub mod proto;
pub mod settings;

/// `tether/VERSION`, as sent in `connected`.
pub fn server_name() -> String {
    format!("tether/{}", env!("CARGO_PKG_VERSION"))
}
