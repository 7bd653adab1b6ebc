//! Events published from outside any session (SPEC §7 `POST /api/publish`):
//! to every client, to a room, or to one client. A broadcast is serialised
//! once and its bytes shared by every recipient.

use super::{Hub, Session};
use crate::proto::client_id::IdFormat;
use crate::proto::cluster::RoomKind;
use crate::proto::envelope::JsonWriter;
use crate::proto::outbox::Broadcast;
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::rc::Rc;

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

/// Clients receive published events; hosts, dashboard viewers and
/// unauthenticated sessions do not.
pub(super) fn is_client(hub: &Hub, key: ConnKey, session: &Session) -> bool {
    session.identity.is_some() && !hub.hosts.is_host(key) && !hub.is_viewer(key)
}

impl Hub {
    /// Queues `{"event","data","room"?}` for the audience; `data` is raw JSON.
    /// Returns how many clients it was queued for.
    /// A room's message goes into its history (`now` ages it).
    pub fn publish(&mut self, event: &str, data: &str, audience: Audience<'_>, now: Now) -> u64 {
        let capacity = 32 + event.len() + data.len();
        let shared: Rc<[u8]> = match audience {
            Audience::Room(room) => self.room_message(room, now, capacity + room.len(), |msg| {
                msg.str("event", event).raw("data", data).str("room", room);
            }),
            Audience::All | Audience::Client(_) => {
                let mut message = Vec::with_capacity(capacity);
                let mut msg = JsonWriter::object(&mut message);
                msg.str("event", event).raw("data", data);
                msg.end();
                message.into()
            }
        };
        if let Audience::Room(room) = audience {
            if let Some(n) = self.number_in_cluster(room, RoomKind::Broadcast, &shared, None) {
                return n;
            }
            self.forward_room(room, RoomKind::Broadcast, &shared);
            self.tap_tail(room, &shared, now);
        }
        self.send_to_audience(shared, audience)
    }

    /// Queues the JSON `message` for the audience on this node; returns how
    /// many clients it was queued for.
    pub(super) fn send_to_audience(&mut self, shared: Rc<[u8]>, audience: Audience<'_>) -> u64 {
        let targets: Vec<usize> = match audience {
            Audience::All => self.clients().map(|(key, _)| key).collect(),
            Audience::Room(room) => self
                .rooms
                .members(room)
                .iter()
                .copied()
                .filter(|&key| self.session(key).is_some_and(|s| is_client(self, key, s)))
                .collect(),
            Audience::Client(client) => self
                .ids
                .local(client)
                .filter(|&(key, id)| {
                    self.session(key)
                        .is_some_and(|s| s.id == id && is_client(self, key, s))
                })
                .map(|(key, _)| key)
                .into_iter()
                .collect(),
        };
        let mut message = Broadcast::shared(shared);
        for &to in &targets {
            self.out.send_shared(to, &mut message);
        }
        targets.len() as u64
    }

    /// `[{"id","sub","ip","rooms","permissions","connectedAt"}, ...]` of every
    /// authenticated client (hosts excluded): `/api/connections`.
    pub fn write_client_list(&self, buf: &mut Vec<u8>) {
        self.write_client_page(buf, 0, usize::MAX, usize::MAX);
    }

    /// The clients (as [`Hub::write_client_list`]) from session key `from`
    /// on: at most `limit` of them, and no more than `max_bytes` of JSON
    /// (but always one, so that paging progresses). Returns the key to start
    /// the next page from, when clients are left.
    pub fn write_client_page(
        &self,
        buf: &mut Vec<u8>,
        from: ConnKey,
        limit: usize,
        max_bytes: usize,
    ) -> Option<ConnKey> {
        let start = buf.len();
        buf.push(b'[');
        let mut next = None;
        let page = self.clients().skip_while(|&(key, _)| key < from);
        for (written, (key, session)) in page.enumerate() {
            if written == limit {
                next = Some(key);
                break;
            }
            let before = buf.len();
            if written > 0 {
                buf.push(b',');
            }
            write_client_info(buf, session, &self.ids);
            // With the closing `]`.
            if written > 0 && buf.len() + 1 - start > max_bytes {
                buf.truncate(before);
                next = Some(key);
                break;
            }
        }
        buf.push(b']');
        next
    }

    /// Authenticated clients (hosts excluded): the `total` of `host.clients`.
    pub fn client_count(&self) -> usize {
        self.clients().count()
    }

    /// Every authenticated session that is not a host, by key.
    fn clients(&self) -> impl Iterator<Item = (ConnKey, &Session)> + '_ {
        self.sessions.iter().filter_map(|(key, s)| {
            s.as_ref()
                .filter(|s| is_client(self, key, s))
                .map(|s| (key, s))
        })
    }
}

/// `{"id","sub","ip","rooms","permissions","connectedAt"}` of one client.
fn write_client_info(buf: &mut Vec<u8>, session: &Session, ids: &IdFormat) {
    let mut info = JsonWriter::object(buf);
    info.str("id", &ids.str(session.id));
    if let Some(node) = ids.node() {
        info.str("node", node);
    }
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
