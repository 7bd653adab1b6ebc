//! The layout of a connection id (`clientId` in SPEC §5): the connection key
//! in the low `KEY_BITS` bits, a serial above them, so that a reused key gets
//! a new id. Written in hex on the wire.

use crate::proto::rooms::ConnKey;
use std::fmt;
use std::rc::Rc;

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

/// How this process writes `clientId`s: plain hex on a single node; in a
/// cluster (SPEC §9) `NODE.HEX`, unique across nodes and naming the client's
/// node (node names have no `.`).
#[derive(Debug, Clone, Default)]
pub struct IdFormat {
    node: Option<Rc<str>>,
}

impl IdFormat {
    pub fn clustered(node: &str) -> IdFormat {
        IdFormat {
            node: Some(node.into()),
        }
    }

    pub fn str(&self, id: u64) -> String {
        match &self.node {
            Some(node) => format!("{node}.{}", ClientId(id)),
            None => client_id_str(id),
        }
    }

    /// The key and id of a `clientId` of this node; `None` for another
    /// node's or for what is no `clientId`.
    pub fn local(&self, client: &str) -> Option<(ConnKey, u64)> {
        match &self.node {
            Some(node) => key_of(client.strip_prefix(&**node)?.strip_prefix('.')?),
            None => key_of(client),
        }
    }

    /// The node a clustered `clientId` names, when it is another node.
    pub fn remote_node<'a>(&self, client: &'a str) -> Option<&'a str> {
        let node = self.node.as_deref()?;
        let (named, hex) = client.rsplit_once('.')?;
        (named != node && ClientId::parse(hex).is_some()).then_some(named)
    }

    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }
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

    #[test]
    fn clustered_ids_name_their_node() {
        let ids = IdFormat::clustered("pi-1");
        assert_eq!(ids.str(0x300002a), "pi-1.300002a");
        assert_eq!(ids.local("pi-1.300002a"), Some((42, 0x300002a)));
        assert_eq!(ids.local("300002a"), None);
        assert_eq!(ids.local("pi-2.300002a"), None);
        assert_eq!(ids.remote_node("pi-2.300002a"), Some("pi-2"));
        assert_eq!(ids.remote_node("pi-1.300002a"), None);
        assert_eq!(ids.remote_node("pi-2.xyz"), None);
        let single = IdFormat::default();
        assert_eq!(single.str(0x300002a), "300002a");
        assert_eq!(single.local("300002a"), Some((42, 0x300002a)));
        assert_eq!(single.remote_node("pi-2.300002a"), None);
    }
}
