//! What one connection can make the core hold, in bytes, at most (SPEC §8
//! and its addition): the shell adds it to each connection's ceiling, so
//! the worst case it logs at start covers sessions, rooms, pending host
//! requests and host roles too.

use crate::proto::auth::{Identity, MAX_TOKEN_BYTES};
use crate::proto::history;
use crate::proto::host_link::{
    host_role_bytes_bound, pending_bytes_bound, table_entry_bytes, ALLOC_SLACK, MAX_HOSTS,
};
use crate::proto::hub::{Session, MAX_ROOMS_PER_CLIENT, MAX_ROOM_NAME};
use std::mem::size_of;
use std::rc::Rc;

/// Worst-case bytes of an identity: its claims come from a token of at most
/// `MAX_TOKEN_BYTES`, whose payload (base64, 3/4 of it) holds at most one
/// string per 4 bytes (`"a",`), each a boxed string in a vector that may
/// have doubled.
pub const fn identity_bytes_bound() -> usize {
    let strings = MAX_TOKEN_BYTES * 3 / 4 / 4;
    size_of::<Identity>() + strings * (2 * size_of::<Box<str>>() + ALLOC_SLACK) + MAX_TOKEN_BYTES
}

/// Worst-case bytes of one client's rooms: `MAX_ROOMS_PER_CLIENT` rooms of
/// which it is the only member, each with its longest name, its entry in
/// the room table and its member list, and its slot in the session's list.
pub const fn rooms_bytes_bound() -> usize {
    let per_room = 2 * size_of::<Rc<str>>()
        + 2 * size_of::<usize>() + MAX_ROOM_NAME + ALLOC_SLACK // the shared name
        + table_entry_bytes::<(Rc<str>, Vec<usize>)>()
        + 4 * size_of::<usize>() + ALLOC_SLACK; // the member list
    MAX_ROOMS_PER_CLIENT * per_room
}

/// Worst-case bytes the core holds for one connection: its session and
/// identity, its rooms and its requests waiting for hosts. Excludes the
/// shell's buffers (the shell bounds those) and host roles (see below).
pub const fn session_bytes_bound() -> usize {
    size_of::<Option<Session>>()
        + identity_bytes_bound()
        + rooms_bytes_bound()
        + pending_bytes_bound()
}

/// With history on, worst-case bytes of one client's empty rings: a room
/// with members keeps its ring (and offsets) when its messages are
/// evicted. Rings with messages count against `rooms.history.max_bytes`.
pub const fn rings_bytes_bound() -> usize {
    MAX_ROOMS_PER_CLIENT * (history::ROOM_OVERHEAD + MAX_ROOM_NAME)
}

/// Longest message the core sends a host for one request (`host.request`):
/// the request's data as the client sent it, the caller's `sub` and
/// permissions (from a token of at most `MAX_TOKEN_BYTES`) and the event
/// name, each escaped at worst (6 bytes per byte), and the fixed keys,
/// the ids and the client's id.
pub const fn host_request_bytes_bound(max_message_bytes: usize) -> usize {
    max_message_bytes + 6 * (MAX_TOKEN_BYTES + MAX_ROOM_NAME) + 256
}

/// What a `Vec` grown by appends to at most `len` bytes may have
/// allocated: amortized growth at most doubles its longest length.
pub const fn grown_vec_bytes(len: usize) -> usize {
    2 * len + ALLOC_SLACK
}

/// Worst-case bytes the core holds beside its connections: the roles of
/// at most `MAX_HOSTS` hosts.
pub const fn shared_bytes_bound() -> usize {
    MAX_HOSTS * host_role_bytes_bound()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::envelope::MAX_REQUEST_ID_BYTES;
    use crate::proto::host_link::{MAX_EVENTS_PER_HOST, MAX_PENDING_PER_CLIENT};

    #[test]
    fn the_bound_covers_every_part_at_its_maximum() {
        // Pending requests: at least their capped `requestId`s.
        assert!(pending_bytes_bound() > MAX_PENDING_PER_CLIENT * MAX_REQUEST_ID_BYTES);
        assert!(rooms_bytes_bound() > MAX_ROOMS_PER_CLIENT * MAX_ROOM_NAME);
        assert!(host_role_bytes_bound() > MAX_EVENTS_PER_HOST * 2 * MAX_ROOM_NAME);
        assert!(identity_bytes_bound() > MAX_TOKEN_BYTES);
        let parts = pending_bytes_bound() + rooms_bytes_bound() + identity_bytes_bound();
        assert!(session_bytes_bound() > parts);
        assert!(shared_bytes_bound() >= MAX_HOSTS * host_role_bytes_bound());
        // A fraction of the default outbound queue: the logged worst case
        // stays useful.
        assert!(
            session_bytes_bound() < 300 << 10,
            "{}",
            session_bytes_bound()
        );
    }
}
