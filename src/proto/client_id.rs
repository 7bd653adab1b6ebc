//! The layout of a connection id (`clientId` in SPEC §5): the connection key
//! in the low `KEY_BITS` bits, a serial above them, so that a reused key gets
//! a new id. Written in hex on the wire.

use crate::proto::rooms::ConnKey;
use std::fmt;

/// Bits of a connection id that hold its connection key (the rest is a serial).
pub const KEY_BITS: u32 = 24;

/// A connection id: `(serial << KEY_BITS) | key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(pub u64);

impl ClientId {
    /// The id of the `serial`-th connection, held in slot `key`.
    pub fn new(serial: u64, key: ConnKey) -> ClientId {
        ClientId((serial << KEY_BITS) | key as u64)
    }

    /// The connection key the id names.
    pub fn key(self) -> ConnKey {
        (self.0 & ((1 << KEY_BITS) - 1)) as ConnKey
    }

    /// Reads a `clientId` string; `None` when it is not hex.
    pub fn parse(client: &str) -> Option<ClientId> {
        u64::from_str_radix(client, 16).ok().map(ClientId)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// The `clientId` string of a connection id.
pub fn client_id_str(id: u64) -> String {
    ClientId(id).to_string()
}

/// The key and id a `clientId` string names, when it is one.
pub fn key_of(client: &str) -> Option<(ConnKey, u64)> {
    ClientId::parse(client).map(|id| (id.key(), id.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_through_its_string() {
        let id = ClientId::new(3, 42);
        assert_eq!(id.0, (3 << 24) | 42);
        assert_eq!(id.key(), 42);
        assert_eq!(client_id_str(id.0), "300002a");
        assert_eq!(key_of("300002a"), Some((42, id.0)));
        assert_eq!(key_of("not hex"), None);
    }
}
