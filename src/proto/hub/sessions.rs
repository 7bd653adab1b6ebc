//! The session table: client connections by slab key, and bridged hosts
//! (SPEC §11) from [`BRIDGED_KEY_BASE`] up, each kind in its own dense list,
//! so the hub does not care how a session's bytes reach it.

use super::{Hub, Session};
use crate::proto::auth::Identity;
use crate::proto::client_id::{ClientId, KEY_BITS};
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use std::net::{IpAddr, Ipv4Addr};

/// Most bridged hosts at once.
pub const MAX_BRIDGED: usize = 1024;
/// The session key of bridged host `i` is `BRIDGED_KEY_BASE + i`: above every
/// connection key, and still within a client id's key bits.
pub const BRIDGED_KEY_BASE: ConnKey = (1 << KEY_BITS) - MAX_BRIDGED;

/// Whether `key` names a bridged host rather than a connection.
pub fn is_bridged(key: ConnKey) -> bool {
    key >= BRIDGED_KEY_BASE
}

#[derive(Debug, Default)]
pub struct Sessions {
    conns: Vec<Option<Session>>,
    bridged: Vec<Option<Session>>,
}

impl Sessions {
    fn list(&self, key: ConnKey) -> (&Vec<Option<Session>>, usize) {
        match key.checked_sub(BRIDGED_KEY_BASE) {
            Some(i) => (&self.bridged, i),
            None => (&self.conns, key),
        }
    }

    fn list_mut(&mut self, key: ConnKey) -> (&mut Vec<Option<Session>>, usize) {
        match key.checked_sub(BRIDGED_KEY_BASE) {
            Some(i) => (&mut self.bridged, i),
            None => (&mut self.conns, key),
        }
    }

    pub fn get(&self, key: ConnKey) -> Option<&Option<Session>> {
        let (list, i) = self.list(key);
        list.get(i)
    }

    pub fn get_mut(&mut self, key: ConnKey) -> Option<&mut Option<Session>> {
        let (list, i) = self.list_mut(key);
        list.get_mut(i)
    }

    /// The slot of `key`, made if needed.
    pub fn slot(&mut self, key: ConnKey) -> &mut Option<Session> {
        let (list, i) = self.list_mut(key);
        if list.len() <= i {
            list.resize_with(i + 1, || None);
        }
        &mut list[i]
    }

    /// Every slot with its key.
    pub fn iter(&self) -> impl Iterator<Item = (ConnKey, &Option<Session>)> + '_ {
        let bridged = self.bridged.iter().enumerate();
        self.conns
            .iter()
            .enumerate()
            .chain(bridged.map(|(i, s)| (BRIDGED_KEY_BASE + i, s)))
    }
}

impl Hub {
    /// Opens the session of a bridged host (its `serial`-th start): `sub` is
    /// its name, its permissions exactly those configured, no expiry.
    pub fn open_bridged(
        &mut self,
        key: ConnKey,
        serial: u64,
        name: &str,
        permissions: &[String],
        now: Now,
    ) {
        let identity = Identity {
            sub: name.into(),
            permissions: permissions.iter().map(|p| p.as_str().into()).collect(),
            role: None,
            rooms: Vec::new(),
            expires_at: None,
        };
        let id = ClientId::new(serial, key).0;
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        self.open(key, id, ip, now, Some(identity), "");
    }
}
