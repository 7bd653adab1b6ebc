//! The names of the node's Redis keys and channels (all under
//! `cluster.prefix`).

pub(super) fn room_channel(prefix: &str, room: &str) -> String {
    format!("{prefix}:room:{room}")
}

pub(super) fn node_channel(prefix: &str, node: &str) -> String {
    format!("{prefix}:to:{node}")
}

pub(super) fn control_channel(prefix: &str) -> String {
    format!("{prefix}:control")
}

pub(super) fn node_key(prefix: &str, node: &str) -> String {
    format!("{prefix}:node:{node}")
}

pub(super) fn fingerprint_key(prefix: &str) -> String {
    format!("{prefix}:jwt-fingerprint")
}

/// Which host serves `event`, cluster-wide (see `host_relay`).
pub(super) fn host_key(prefix: &str, event: &str) -> String {
    format!("{prefix}:host:{event}")
}
