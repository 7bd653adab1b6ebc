//! History in the room events (SPEC §10): room messages numbered and kept,
//! `subscribe` with `since` (the reply, then the missed messages through
//! the same outbound queue as live ones), and the `history` event.

use super::Hub;
use crate::proto::envelope::JsonWriter;
use crate::proto::history::{Position, Recovery};
use crate::proto::outbox::Broadcast;
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::rc::Rc;

/// Where a client's copy of a room's history ends: `since` of `subscribe`.
#[derive(Deserialize)]
pub(super) struct Since<'a> {
    pub(super) offset: u64,
    #[serde(borrow)]
    pub(super) epoch: Cow<'a, str>,
}

#[derive(Deserialize)]
struct HistoryData {
    #[serde(default)]
    limit: Option<usize>,
}

impl Hub {
    /// Frames a room message once (`fields`, then `offset` with history on),
    /// keeps it in the room's history and returns the body every member shares.
    pub(super) fn room_message(
        &mut self,
        room: &str,
        now: Now,
        capacity: usize,
        fields: impl FnOnce(&mut JsonWriter<'_>),
    ) -> Rc<[u8]> {
        let rooms = &self.rooms;
        let occupied = |r: &str| !rooms.members(r).is_empty();
        self.history.append(room, now.ms, occupied, |offset| {
            let mut message = Vec::with_capacity(capacity + 24);
            let mut msg = JsonWriter::object(&mut message);
            fields(&mut msg);
            if let Some(offset) = offset {
                msg.u64("offset", offset);
            }
            msg.end();
            message.into()
        })
    }

    /// `subscribed` for a member of `room`: `{"room"}`, with history on also
    /// `"offset","epoch"`, and with `since` `"recovered"` followed by the
    /// missed messages.
    pub(super) fn reply_subscribed(
        &mut self,
        key: ConnKey,
        room: &str,
        since: Option<Since<'_>>,
        now: Now,
        rid: Option<&RawValue>,
    ) {
        if self.subscribe_in_cluster(key, room, since.as_ref(), now, rid) {
            return;
        }
        let (position, recovery) = match &since {
            Some(since) => match self.history.since(room, since.offset, &since.epoch, now.ms) {
                Some(Recovery {
                    position,
                    recovered,
                    messages,
                }) => (Some(position), Some((recovered, messages))),
                None => (None, Some((false, Vec::new()))),
            },
            None => (self.history.position(room, now.ms), None),
        };
        self.out.reply(key, "subscribed", rid, |w| {
            w.str("room", room);
            if let Some(Position { offset, epoch }) = &position {
                w.u64("offset", *offset).str("epoch", epoch);
            }
            if let Some((recovered, _)) = &recovery {
                w.bool("recovered", *recovered);
            }
        });
        for body in recovery.into_iter().flat_map(|(_, messages)| messages) {
            self.out.send_shared(key, &mut Broadcast::shared(body));
        }
    }

    /// `history` `{"room","limit"?}` from a member: `{"room","offset","epoch",
    /// "messages":[...]}`, the newest `limit` messages as delivered (oldest
    /// first) that fit one reply.
    pub(super) fn on_history(
        &mut self,
        key: ConnKey,
        now: Now,
        data: Option<&RawValue>,
        rid: Option<&RawValue>,
    ) {
        let Some(room) = self.member_room(key, now, data, rid) else {
            return;
        };
        let limit = data
            .and_then(|d| serde_json::from_str::<HistoryData>(d.get()).ok())
            .and_then(|d| d.limit)
            .unwrap_or(usize::MAX);
        if self.history_in_cluster(key, &room, limit, now, rid) {
            return;
        }
        let (position, messages) = self
            .history
            .recent(&room, limit, now.ms)
            .unwrap_or_else(|| (Position::none(), Vec::new()));
        self.reply_history(key, &room, &position, &messages, rid);
    }

    /// `history` `{"room","offset","epoch","messages":[...]}` with the
    /// newest of `messages` that fit one reply.
    pub(super) fn reply_history(
        &mut self,
        key: ConnKey,
        room: &str,
        position: &Position,
        messages: &[Rc<[u8]>],
        rid: Option<&RawValue>,
    ) {
        // The newest messages that fit the reply budget.
        let mut budget = self
            .cfg
            .max_reply_bytes
            .saturating_sub(128 + 2 * room.len());
        let fitting = messages
            .iter()
            .rev()
            .take_while(|m| {
                let fits = m.len() < budget;
                budget = budget.saturating_sub(m.len() + 1);
                fits
            })
            .count();
        let shown = &messages[messages.len() - fitting..];
        self.out.reply(key, "history", rid, |w| {
            w.str("room", room)
                .u64("offset", position.offset)
                .str("epoch", &position.epoch)
                .with_raw("messages", |buf| {
                    buf.push(b'[');
                    for (n, message) in shown.iter().enumerate() {
                        if n > 0 {
                            buf.push(b',');
                        }
                        buf.extend_from_slice(message);
                    }
                    buf.push(b']');
                });
        });
    }
}
