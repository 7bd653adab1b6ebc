//! Events published from outside any session (SPEC §7 `POST /api/publish`):
//! to every client, to a room, or to one client. A broadcast is serialised
//! once and its bytes shared by every recipient.

use super::{Hub, Session};
use crate::proto::client_id::{client_id_str, key_of};
use crate::proto::envelope::JsonWriter;
use crate::proto::host_link::HostLink;
use crate::proto::outbox::Broadcast;
use crate::proto::rooms::ConnKey;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// An event published to an audience: the body of `POST /api/publish` and
/// the data of `host.broadcast` (which takes no `client`). Unknown fields are
/// refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishData<'a> {
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    #[serde(default, borrow)]
    pub data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub room: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub client: Option<Cow<'a, str>>,
}

/// Who receives a published event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience<'a> {
    /// Every authenticated client (hosts excluded).
    All,
    /// The authenticated clients in this room.
    Room(&'a str),
    /// One client by its `clientId`.
    Client(&'a str),
}

/// Clients receive published events; hosts and unauthenticated sessions do not.
fn is_client(hosts: &HostLink, key: ConnKey, session: &Session) -> bool {
    session.identity.is_some() && !hosts.is_host(key)
}

impl Hub {
    /// Queues `{"event","data","room"?}` for the audience; `data` is raw JSON.
    /// Returns how many clients it was queued for.
    pub fn publish(&mut self, event: &str, data: &str, audience: Audience<'_>) -> u64 {
        let mut message = Vec::with_capacity(32 + event.len() + data.len());
        let mut msg = JsonWriter::object(&mut message);
        msg.str("event", event).raw("data", data);
        if let Audience::Room(room) = audience {
            msg.str("room", room);
        }
        msg.end();
        let targets: Vec<usize> = match audience {
            Audience::All => self
                .sessions
                .iter()
                .enumerate()
                .filter(|&(key, s)| s.as_ref().is_some_and(|s| is_client(&self.hosts, key, s)))
                .map(|(key, _)| key)
                .collect(),
            Audience::Room(room) => self
                .rooms
                .members(room)
                .iter()
                .copied()
                .filter(|&key| {
                    self.session(key)
                        .is_some_and(|s| is_client(&self.hosts, key, s))
                })
                .collect(),
            Audience::Client(client) => key_of(client)
                .filter(|&(key, id)| {
                    self.session(key)
                        .is_some_and(|s| s.id == id && is_client(&self.hosts, key, s))
                })
                .map(|(key, _)| key)
                .into_iter()
                .collect(),
        };
        let mut message = Broadcast::new(message);
        for &to in &targets {
            self.out.send_shared(to, &mut message);
        }
        targets.len() as u64
    }

    /// `[{"id","sub","ip","rooms","permissions","connectedAt"}, ...]` of every
    /// authenticated client (hosts excluded): `host.clients` and `/api/connections`.
    pub fn write_client_list(&self, buf: &mut Vec<u8>) {
        buf.push(b'[');
        let clients = self
            .sessions
            .iter()
            .enumerate()
            .filter_map(|(key, s)| s.as_ref().filter(|s| is_client(&self.hosts, key, s)));
        for (i, session) in clients.enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            write_client_info(buf, session);
        }
        buf.push(b']');
    }
}

/// `{"id","sub","ip","rooms","permissions","connectedAt"}` of one client.
fn write_client_info(buf: &mut Vec<u8>, session: &Session) {
    let mut info = JsonWriter::object(buf);
    info.str("id", &client_id_str(session.id));
    match &session.identity {
        Some(identity) => info.str("sub", &identity.sub),
        None => info.raw("sub", "null"),
    };
    info.str("ip", &session.ip.to_string())
        .str_array("rooms", &session.rooms);
    match &session.identity {
        Some(identity) => info.str_array("permissions", &identity.permissions),
        None => info.raw("permissions", "[]"),
    };
    info.u64("connectedAt", session.connected_at);
    info.end();
}
