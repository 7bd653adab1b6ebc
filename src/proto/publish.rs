//! Events published from outside any session (SPEC §7 `POST /api/publish`):
//! to every client, to a room, or to one client. A broadcast is serialised
//! once and its bytes shared by every recipient.

use crate::proto::envelope::JsonWriter;
use crate::proto::host::{key_of, write_client_info};
use crate::proto::hub::{Action, Body, Hub, Session};
use std::rc::Rc;

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
fn is_client(session: &Session) -> bool {
    session.identity.is_some() && session.host.is_none()
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
                .filter(|(_, s)| s.as_ref().is_some_and(is_client))
                .map(|(key, _)| key)
                .collect(),
            Audience::Room(room) => self
                .rooms
                .members(room)
                .iter()
                .copied()
                .filter(|&key| self.session(key).is_some_and(is_client))
                .collect(),
            Audience::Client(client) => key_of(client)
                .filter(|&(key, id)| {
                    self.session(key)
                        .is_some_and(|s| s.id == id && is_client(s))
                })
                .map(|(key, _)| key)
                .into_iter()
                .collect(),
        };
        let shared: Rc<[u8]> = message.into();
        for &to in &targets {
            let body = Body::Shared(shared.clone());
            self.out.actions.push(Action::Send { to, body });
        }
        targets.len() as u64
    }

    /// `[{"id","sub","ip","rooms","permissions","connectedAt"}, ...]` of every
    /// authenticated client (hosts excluded): `host.clients` and `/api/connections`.
    pub fn write_client_list(&self, buf: &mut Vec<u8>) {
        buf.push(b'[');
        let clients = self.sessions.iter().flatten().filter(|s| is_client(s));
        for (i, session) in clients.enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            write_client_info(buf, session);
        }
        buf.push(b']');
    }
}
