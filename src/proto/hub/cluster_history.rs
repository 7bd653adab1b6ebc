//! History in a cluster, the hub's side (SPEC §10): room messages go to
//! Redis to be numbered and come back, from every node, in offset order;
//! `subscribe` and `history` wait for Redis's answer (bounded, with
//! `host.request_timeout_ms`), holding a recovering member's live messages
//! until its replay is out. With the broker down a room message is delivered
//! on its node without an offset, and a read answers at once with the
//! unknown position (offset 0, epoch "", `recovered: false`).

use super::audience::is_client;
use super::recovery::Since;
use super::Hub;
use crate::proto::cluster::numbering::{
    ClusterHistoryConfig, HistoryTap, ReadAnswer, ReadKind, ToNumber, Waiting,
};
use crate::proto::cluster::RoomKind;
use crate::proto::history::{History, Position};
use crate::proto::outbox::Broadcast;
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use serde_json::value::RawValue;
use std::rc::Rc;

impl Hub {
    /// History is Redis's for this cluster node: no rings here.
    pub fn enable_cluster_history(&mut self, cfg: ClusterHistoryConfig) {
        if let Some(tap) = &mut self.cluster {
            self.history = History::Off;
            let max = tap.max_forward_bytes();
            tap.history = Some(HistoryTap::new(cfg, max));
        }
    }

    /// The numbering queue and waiting reads, when history is the cluster's
    /// and the broker is up.
    fn history_tap(&mut self) -> Option<&mut HistoryTap> {
        let tap = self.cluster.as_mut()?;
        if !tap.status.broker_up {
            return None;
        }
        tap.history.as_mut()
    }

    fn is_cluster_history(&self) -> bool {
        self.cluster.as_ref().is_some_and(|t| t.history.is_some())
    }

    /// A room message to number in Redis, which then delivers it here and
    /// on every node; returns how many local members will get it, or `None`
    /// when it must go the unnumbered way (no cluster history, broker down,
    /// queue full).
    pub(super) fn number_in_cluster(
        &mut self,
        room: &str,
        kind: RoomKind,
        body: &Rc<[u8]>,
        sender: Option<ConnKey>,
    ) -> Option<u64> {
        let sender_id = sender
            .and_then(|key| self.session(key))
            .map(|s| Rc::from(self.ids.str(s.id)));
        let count = self.room_audience(room, kind, sender).count() as u64;
        let message = ToNumber {
            room: room.into(),
            kind,
            body: body.clone(),
            sender: sender_id,
        };
        let tap = self.cluster.as_mut()?;
        let broker_up = tap.status.broker_up;
        let history = tap.history.as_mut()?;
        if broker_up && history.number(message) {
            return Some(count);
        }
        // Delivered without an offset: the room's history misses it.
        history.note_unnumbered(room);
        None
    }

    /// A message Redis could not number (link full or lost): to this node's
    /// members without an offset, and its room noted.
    pub fn deliver_unnumbered(&mut self, m: &ToNumber) {
        self.note_unnumbered(&m.room);
        let sender = m.sender.as_deref().unwrap_or("-");
        self.deliver_numbered(&m.room, m.kind, 0, m.body.clone(), sender);
    }

    /// `room` got a message that is not in its history: its epoch is
    /// renewed at the node's next join.
    pub fn note_unnumbered(&mut self, room: &str) {
        if let Some(h) = self.cluster.as_mut().and_then(|t| t.history.as_mut()) {
            h.note_unnumbered(room);
        }
    }

    /// The rooms whose epoch the node renews as it joins: those noted, or
    /// after too many, every room with local members.
    pub fn take_unnumbered(&mut self) -> Vec<Rc<str>> {
        let noted = self
            .cluster
            .as_mut()
            .and_then(|t| t.history.as_mut())
            .map(|h| h.take_unnumbered());
        match noted {
            None => Vec::new(),
            Some(Some(rooms)) => rooms,
            Some(None) => self.rooms.names().cloned().collect(),
        }
    }

    /// The members of `room` a message of `kind` from `sender` goes to.
    fn room_audience(
        &self,
        room: &str,
        kind: RoomKind,
        sender: Option<ConnKey>,
    ) -> impl Iterator<Item = ConnKey> + '_ {
        self.rooms
            .members(room)
            .iter()
            .copied()
            .filter(move |&key| match kind {
                RoomKind::Publish => Some(key) != sender,
                RoomKind::Broadcast => self.session(key).is_some_and(|s| is_client(self, key, s)),
            })
    }

    /// A message Redis numbered (any node's): to this node's members but
    /// its sender, held for members whose `subscribe` still waits.
    pub fn deliver_numbered(
        &mut self,
        room: &str,
        kind: RoomKind,
        offset: u64,
        body: Rc<[u8]>,
        sender: &str,
    ) -> u64 {
        let except = self.client_key(sender);
        let holding: Vec<(u64, ConnKey)> = self
            .cluster
            .as_ref()
            .and_then(|t| t.history.as_ref())
            .map(|h| {
                h.waiting
                    .iter()
                    .filter(|(_, w)| w.holds && *w.room == *room)
                    .map(|(&id, w)| (id, w.key))
                    .collect()
            })
            .unwrap_or_default();
        let targets: Vec<ConnKey> = self.room_audience(room, kind, except).collect();
        let mut message = Broadcast::shared(body.clone());
        let mut delivered = 0;
        for key in targets {
            match holding.iter().find(|(_, k)| *k == key) {
                Some(&(id, _)) => {
                    if let Some(h) = self.cluster.as_mut().and_then(|t| t.history.as_mut()) {
                        h.hold(id, offset, &body);
                    }
                }
                None => self.out.send_shared(key, &mut message),
            }
            delivered += 1;
        }
        delivered
    }

    /// `subscribe` of a member when history is the cluster's: the reply
    /// waits for Redis. False when history is not the cluster's.
    pub(super) fn subscribe_in_cluster(
        &mut self,
        key: ConnKey,
        room: &str,
        since: Option<&Since<'_>>,
        now: Now,
        rid: Option<&RawValue>,
    ) -> bool {
        if !self.is_cluster_history() {
            return false;
        }
        let kind = match since {
            Some(s) => ReadKind::Since {
                offset: s.offset,
                epoch: s.epoch.to_string(),
            },
            None => ReadKind::Position,
        };
        if !self.read_in_cluster(key, room, kind, true, now, rid) {
            self.reply_position(key, room, None, since.map(|_| false), rid);
        }
        true
    }

    /// `history` of a member when history is the cluster's: the reply waits
    /// for Redis. False when history is not the cluster's.
    pub(super) fn history_in_cluster(
        &mut self,
        key: ConnKey,
        room: &str,
        limit: usize,
        now: Now,
        rid: Option<&RawValue>,
    ) -> bool {
        if !self.is_cluster_history() {
            return false;
        }
        let kind = ReadKind::Recent { limit };
        if !self.read_in_cluster(key, room, kind, false, now, rid) {
            self.reply_history(key, room, &Position::none(), &[], rid);
        }
        true
    }

    /// Queues a read for `key`; false when it cannot wait (broker down, too many).
    fn read_in_cluster(
        &mut self,
        key: ConnKey,
        room: &str,
        kind: ReadKind,
        subscribe: bool,
        now: Now,
        rid: Option<&RawValue>,
    ) -> bool {
        let Some(session) = self.session(key).map(|s| s.id) else {
            return false;
        };
        let waiting = Waiting {
            key,
            session,
            room: room.into(),
            rid: rid.map(|r| r.to_owned()),
            deadline_ms: now.ms.saturating_add(self.cfg.request_timeout_ms),
            holds: subscribe,
            since: matches!(kind, ReadKind::Since { .. }),
            held: Vec::new(),
            lost: false,
        };
        self.history_tap()
            .and_then(|h| h.read(kind, waiting))
            .is_some()
    }

    /// `subscribed` `{"room","offset","epoch","recovered"?}`.
    fn reply_position(
        &mut self,
        key: ConnKey,
        room: &str,
        position: Option<&Position>,
        recovered: Option<bool>,
        rid: Option<&RawValue>,
    ) {
        let unknown = Position::none();
        let position = position.unwrap_or(&unknown);
        self.out.reply(key, "subscribed", rid, |w| {
            w.str("room", room)
                .u64("offset", position.offset)
                .str("epoch", &position.epoch);
            if let Some(recovered) = recovered {
                w.bool("recovered", recovered);
            }
        });
    }

    /// Redis answered read `id` (`None`: it failed).
    pub fn answer_read(&mut self, id: u64, answer: Option<ReadAnswer>) {
        let waiting = self
            .cluster
            .as_mut()
            .and_then(|t| t.history.as_mut())
            .and_then(|h| h.finish(id));
        if let Some(waiting) = waiting {
            self.answer_waiting(waiting, answer);
        }
    }

    /// Answers what Redis did not in time as if the broker were down.
    pub(super) fn expire_cluster_reads(&mut self, now: Now) {
        let expired = self
            .cluster
            .as_mut()
            .and_then(|t| t.history.as_mut())
            .map(|h| h.expired(now.ms))
            .unwrap_or_default();
        for waiting in expired {
            self.answer_waiting(waiting, None);
        }
    }

    pub(super) fn cluster_reads_deadline(&self) -> Option<u64> {
        self.cluster.as_ref()?.history.as_ref()?.next_deadline()
    }

    fn answer_waiting(&mut self, w: Waiting, answer: Option<ReadAnswer>) {
        // The member may have gone (and its key been reused) meanwhile.
        if self.session(w.key).is_none_or(|s| s.id != w.session) {
            return;
        }
        let rid = w.rid.as_deref();
        let position = answer.as_ref().map(|a| Position {
            offset: a.offset,
            epoch: a.epoch.clone(),
        });
        if !w.holds {
            let messages = answer.map(|a| a.messages).unwrap_or_default();
            let position = position.unwrap_or_else(Position::none);
            return self.reply_history(w.key, &w.room, &position, &messages, rid);
        }
        let recovered = answer.as_ref().is_some_and(|a| a.complete) && !w.lost;
        self.reply_position(
            w.key,
            &w.room,
            position.as_ref(),
            w.since.then_some(recovered),
            rid,
        );
        // A recovery replays up to the position; a plain subscribe sends
        // every held message (a token member was getting them live).
        let after = answer.as_ref().filter(|_| w.since).map_or(0, |a| a.offset);
        let replay = answer
            .into_iter()
            .filter(|_| w.since)
            .flat_map(|a| a.messages);
        let held = w.held.into_iter().filter(|(offset, _)| *offset > after);
        for body in replay.chain(held.map(|(_, body)| body)) {
            self.out.send_shared(w.key, &mut Broadcast::shared(body));
        }
    }
}
