//! Fuzzing harnesses: the bodies of the `cargo fuzz` targets in `tests/fuzz/`,
//! kept here so that the fuzzer and the regression test
//! (`regressions`, under `cargo test`) run the very same code.
//!
//! Each function takes arbitrary bytes, drives one part of the sans-IO core the
//! way the shell does, and panics when an invariant breaks; a panic inside the
//! core is a finding too. Everything is derived from the input: no clock, no
//! randomness, so a saved input replays exactly.
//!
//! Compiled only for tests and for the fuzz crate (`--cfg fuzzing`, which
//! `cargo fuzz` passes): no user of the library carries it.

use crate::proto::auth::Authenticator;
use crate::proto::history::HistoryConfig;
use crate::proto::hub::{PresenceConfig, RoomFeatures};
use std::collections::BTreeMap;

mod cluster;
mod dispatch;
mod frames;
mod handshake;
#[cfg(test)]
mod regressions;
mod resp;
mod responses;

pub use cluster::cluster;
pub use dispatch::dispatch;
pub use frames::frames;
pub use handshake::handshake;
pub use resp::resp;
pub use responses::responses;

const SECRET: &[u8] = b"tether-fuzzing-secret-0123456789";
const PASSWORD: &str = "pw";
const T0_UNIX: u64 = 1_800_000_000;

fn authenticator() -> Authenticator {
    let mut by_role = BTreeMap::new();
    by_role.insert("player".to_string(), vec!["arena".to_string()]);
    Authenticator::new(
        SECRET,
        None,
        None,
        Some(PASSWORD),
        &["publish".to_string()],
        by_role,
    )
}

/// History and presence on for half the configurations, with small rings
/// so that eviction happens.
pub(crate) fn fuzzed_features(config: u8) -> RoomFeatures {
    let on = config & 32 != 0;
    RoomFeatures {
        history: HistoryConfig {
            size: if on { 4 } else { 0 },
            ttl_ms: 1_000,
            max_bytes: 2_048,
            epoch_tag: 1,
        },
        presence: PresenceConfig {
            enabled: on,
            notify_max_members: 3,
        },
    }
}
