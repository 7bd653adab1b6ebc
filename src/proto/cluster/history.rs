//! The node's side of history in a cluster (SPEC §10): room messages
//! numbered by the publish script, reads by the read script (see
//! [`scripts`](super::scripts)), numbered messages delivered in offset
//! order, and gaps (an offset that skips, e.g. after the subscriber link
//! was lost) filled from the stream before later messages go out.

use std::collections::HashMap;
use std::rc::Rc;

use log::{debug, warn};

use super::echoes::Echoes;
use super::envelope::{self, Envelope, Kind};
use super::numbering::{ClusterHistoryConfig, Read, ReadAnswer, ReadKind, ToNumber, MAX_LISTED};
use super::scripts;
use super::tap::RoomKind;
use crate::proto::history::MAX_REPLAY;
use crate::proto::hub::Hub;
use crate::proto::redis::link::LINK_LOST;
use crate::proto::redis::{Full, Link, Value};

/// Replies tagged from here on are this module's.
pub const TAG_BASE: u64 = 1 << 40;
/// How long a room's offsets are remembered without a publish or a read.
const MIN_META_TTL_S: u64 = 86_400;
/// Most messages one `history` answer reads: its reply stays well within
/// what the command link decodes.
pub const MAX_RECENT: usize = MAX_LISTED / 2;
/// Live messages of one room held while its gap is fetched.
const MAX_GAP_HELD: usize = MAX_REPLAY;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    Publish,
    Read,
}

impl Script {
    fn text(self) -> &'static str {
        match self {
            Script::Publish => scripts::PUBLISH,
            Script::Read => scripts::READ,
        }
    }
}

/// What a tagged command was, kept until its reply (and re-sent with EVAL
/// on NOSCRIPT).
enum Pending {
    Load(Script),
    Publish(ToNumber),
    Read(Read),
    /// The missed messages of a room that skipped offsets.
    Gap(Rc<str>, Read),
    /// A new epoch for a room whose history misses messages.
    Renew(Rc<str>),
}

/// A numbered message as it came from the channel.
struct Numbered {
    kind: RoomKind,
    offset: u64,
    sender: Rc<str>,
    body: Rc<[u8]>,
    /// Local members got it already (unnumbered, when the link was lost).
    passed_over: bool,
}

/// A room whose offsets skipped: later messages wait for the fetch.
struct Gap {
    held: Vec<Numbered>,
}

pub struct NodeHistory {
    cfg: ClusterHistoryConfig,
    prefix: String,
    origin: String,
    /// Bytes of messages one read returns at most (one reply must fit the link).
    read_budget: usize,
    shas: [Option<String>; 2],
    pending: HashMap<u64, Pending>,
    next_tag: u64,
    /// The last offset delivered per room (and its epoch).
    last: HashMap<Rc<str>, (Rc<str>, u64)>,
    gaps: HashMap<Rc<str>, Gap>,
    /// This node's publishes whose echo has not come.
    echoes: Echoes,
    /// Offsets that skipped, for the log and metrics.
    pub gaps_seen: u64,
}

impl NodeHistory {
    pub fn new(cfg: ClusterHistoryConfig, prefix: &str, origin: &str, read_budget: usize) -> Self {
        NodeHistory {
            cfg,
            prefix: prefix.to_string(),
            origin: origin.to_string(),
            read_budget,
            shas: [None, None],
            pending: HashMap::new(),
            next_tag: TAG_BASE,
            last: HashMap::new(),
            gaps: HashMap::new(),
            echoes: Echoes::default(),
            gaps_seen: 0,
        }
    }

    /// This module's tags and presence's (below the hosts' claims).
    pub fn owns(tag: u64) -> bool {
        (TAG_BASE..TAG_BASE << 2).contains(&tag)
    }

    /// The command link came up: load the scripts (EVAL until they are).
    pub fn on_up(&mut self, cmd: &mut Link) {
        self.shas = [None, None];
        for script in [Script::Publish, Script::Read] {
            let tag = self.tag();
            if cmd
                .command(&[b"SCRIPT", b"LOAD", script.text().as_bytes()], Some(tag))
                .is_ok()
            {
                self.pending.insert(tag, Pending::Load(script));
            }
        }
    }

    /// The subscriber link was lost: messages may be missed, so the next
    /// offset of every room is taken as it comes.
    pub fn on_sub_down(&mut self) {
        self.last.clear();
        self.echoes.on_sub_down();
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// Runs the publish script for `message`; gives it back when the link is full.
    pub fn publish(&mut self, cmd: &mut Link, message: ToNumber) -> Result<(), ToNumber> {
        let tag = self.tag();
        if self.send_publish(cmd, &message, tag).is_err() {
            return Err(message);
        }
        self.echoes.sent(tag, &message.room, &message.body);
        self.pending.insert(tag, Pending::Publish(message));
        Ok(())
    }

    fn send_publish(&self, cmd: &mut Link, m: &ToNumber, tag: u64) -> Result<(), Full> {
        let kind = match m.kind {
            RoomKind::Publish => Kind::NumberedPublish,
            RoomKind::Broadcast => Kind::NumberedBroadcast,
        };
        let mut head = Vec::with_capacity(64 + m.room.len());
        envelope::encode(&mut head, &self.origin, kind, &m.room, b"");
        let (meta, stream) = self.keys(&m.room);
        let channel = super::keys::room_channel(&self.prefix, &m.room);
        let (size, ttl, meta_ttl) = self.numbers();
        let sender = m.sender.as_deref().unwrap_or("-");
        let kind: &[u8] = match m.kind {
            RoomKind::Publish => b"p",
            RoomKind::Broadcast => b"b",
        };
        let args: [&[u8]; 10] = [
            &m.body,
            size.as_bytes(),
            ttl.as_bytes(),
            meta_ttl.as_bytes(),
            channel.as_bytes(),
            &head,
            sender.as_bytes(),
            kind,
            meta.as_bytes(),
            stream.as_bytes(),
        ];
        self.eval(cmd, Script::Publish, &args, tag)
    }

    /// Runs the read script for `read`; false when the link is full.
    pub fn read(&mut self, cmd: &mut Link, read: Read) -> bool {
        let tag = self.tag();
        let sent = self.send_read(cmd, &read, tag, false).is_ok();
        if sent {
            self.pending.insert(tag, Pending::Read(read));
        }
        sent
    }

    /// A `gap` read heads each message with its kind and sender.
    fn send_read(&self, cmd: &mut Link, read: &Read, tag: u64, gap: bool) -> Result<(), Full> {
        let since_mode = if gap { "g" } else { "s" };
        let (mode, since, epoch, most) = match &read.kind {
            ReadKind::Position => ("p", 0, "", 0),
            ReadKind::Since { offset, epoch } => (since_mode, *offset, epoch.as_str(), MAX_REPLAY),
            ReadKind::Recent { limit } => ("r", 0, "", (*limit).min(self.cfg.size).min(MAX_RECENT)),
        };
        let (meta, stream) = self.keys(&read.room);
        let (size, _, meta_ttl) = self.numbers();
        let (since, most) = (since.to_string(), most.to_string());
        let ttl_ms = self.cfg.ttl_s.saturating_mul(1000).to_string();
        let budget = self.read_budget.to_string();
        let args: [&[u8]; 10] = [
            mode.as_bytes(),
            since.as_bytes(),
            epoch.as_bytes(),
            most.as_bytes(),
            size.as_bytes(),
            ttl_ms.as_bytes(),
            budget.as_bytes(),
            meta_ttl.as_bytes(),
            meta.as_bytes(),
            stream.as_bytes(),
        ];
        self.eval(cmd, Script::Read, &args, tag)
    }

    /// EVALSHA (EVAL before the script is loaded) with the two keys last in `args`.
    fn eval(&self, cmd: &mut Link, script: Script, args: &[&[u8]], tag: u64) -> Result<(), Full> {
        let (argv, keys) = args.split_at(args.len() - 2);
        let (verb, body): (&[u8], &[u8]) = match &self.shas[script as usize] {
            Some(sha) => (b"EVALSHA", sha.as_bytes()),
            None => (b"EVAL", script.text().as_bytes()),
        };
        let mut command: Vec<&[u8]> = vec![verb, body, b"2"];
        command.extend_from_slice(keys);
        command.extend_from_slice(argv);
        cmd.command(&command, Some(tag))
    }

    fn keys(&self, room: &str) -> (String, String) {
        (
            format!("{}:hist:{room}", self.prefix),
            format!("{}:stream:{room}", self.prefix),
        )
    }

    fn numbers(&self) -> (String, String, String) {
        let ttl = self.cfg.ttl_s.max(1);
        (
            self.cfg.size.to_string(),
            ttl.to_string(),
            ttl.max(MIN_META_TTL_S).to_string(),
        )
    }

    /// A reply to one of this module's tags.
    pub fn on_reply(&mut self, tag: u64, value: Value, cmd: &mut Link, hub: &mut Hub) {
        let Some(pending) = self.pending.remove(&tag) else {
            return;
        };
        if let Value::Error(text) = &value {
            if text.starts_with(b"NOSCRIPT") {
                return self.retry(tag, pending, cmd, hub);
            }
            // A lost link answers every command it had; the link's own warning says so.
            if text != LINK_LOST {
                let text = String::from_utf8_lossy(text);
                warn!("cluster history: broker error: {text}");
            }
        }
        match pending {
            Pending::Load(script) => {
                if let Some(sha) = value.as_bytes() {
                    self.shas[script as usize] = Some(String::from_utf8_lossy(sha).into_owned());
                }
            }
            Pending::Publish(m) => {
                // Lost before its echo: local members get it now, unnumbered.
                if matches!(value, Value::Error(_)) && self.echoes.lost(tag) {
                    hub.deliver_unnumbered(&m);
                }
            }
            Pending::Renew(room) => {
                if matches!(value, Value::Error(_)) {
                    // Not renewed (the link was lost): again at the next join.
                    hub.note_unnumbered(&room);
                }
            }
            Pending::Read(read) => hub.answer_read(read.id, answer_of(&value)),
            Pending::Gap(room, _) => self.fill_gap(&room, answer_of(&value), hub),
        }
    }

    /// The script was gone (a flushed or restarted Redis): EVAL it and load it again.
    fn retry(&mut self, old: u64, pending: Pending, cmd: &mut Link, hub: &mut Hub) {
        self.shas = [None, None];
        let tag = self.tag();
        let sent = match &pending {
            Pending::Load(_) | Pending::Renew(_) => return,
            Pending::Publish(m) => self.send_publish(cmd, m, tag),
            Pending::Read(r) => self.send_read(cmd, r, tag, false),
            Pending::Gap(_, r) => self.send_read(cmd, r, tag, true),
        };
        match (sent, pending) {
            (Ok(()), pending) => {
                if let Pending::Publish(m) = &pending {
                    self.echoes.resent(old, tag, &m.room);
                }
                self.pending.insert(tag, pending);
            }
            (Err(Full), Pending::Read(read)) => hub.answer_read(read.id, None),
            (Err(Full), Pending::Gap(room, _)) => self.fill_gap(&room, None, hub),
            (Err(Full), Pending::Publish(m)) if self.echoes.lost(old) => hub.deliver_unnumbered(&m),
            (Err(Full), _) => {}
        }
        self.on_up(cmd);
    }

    /// A numbered message from the room's channel (this node's own included).
    pub fn on_numbered(&mut self, env: &Envelope<'_>, cmd: &mut Link, hub: &mut Hub) -> bool {
        let Some((offset, epoch, sender, body)) = split_numbered(env.payload) else {
            debug!("cluster history: ignored a malformed numbered message");
            return false;
        };
        let kind = if env.kind == Kind::NumberedPublish {
            RoomKind::Publish
        } else {
            RoomKind::Broadcast
        };
        let passed_over = env.origin == self.origin && self.echoes.echoed(env.room, body);
        let message = Numbered {
            kind,
            offset,
            sender: sender.into(),
            body: body.into(),
            passed_over,
        };
        if let Some(gap) = self.gaps.get_mut(env.room) {
            if gap.held.len() < MAX_GAP_HELD {
                gap.held.push(message);
                return true;
            }
        }
        let room: Rc<str> = env.room.into();
        let last = self.last.get(&room).cloned();
        match last {
            Some((e, last)) if *e == *epoch && offset <= last => return false,
            Some((e, last))
                if *e == *epoch && offset > last + 1 && !self.gaps.contains_key(&room) =>
            {
                self.gaps_seen += 1;
                debug!("cluster history: room {room} skipped from {last} to {offset}; fetching");
                let read = Read {
                    id: 0,
                    room: room.clone(),
                    kind: ReadKind::Since {
                        offset: last,
                        epoch: epoch.to_string(),
                    },
                };
                let tag = self.tag();
                if self.send_read(cmd, &read, tag, true).is_ok() {
                    self.pending.insert(tag, Pending::Gap(room.clone(), read));
                    self.gaps.insert(
                        room,
                        Gap {
                            held: vec![message],
                        },
                    );
                    return true;
                }
            }
            _ => {}
        }
        self.deliver(&room, epoch, message, hub);
        true
    }

    fn deliver(&mut self, room: &Rc<str>, epoch: &str, m: Numbered, hub: &mut Hub) {
        self.last.insert(room.clone(), (epoch.into(), m.offset));
        if m.passed_over {
            return;
        }
        hub.deliver_numbered(room, m.kind, m.offset, m.body, &m.sender);
    }

    /// The fetch for a room's gap answered (or failed): what it missed, then
    /// what was held, in order.
    fn fill_gap(&mut self, room: &Rc<str>, answer: Option<ReadAnswer>, hub: &mut Hub) {
        let Some(gap) = self.gaps.remove(room) else {
            return;
        };
        let first_held = gap.held.first().map_or(u64::MAX, |m| m.offset);
        let (epoch, last) = self.last.get(room).cloned().unwrap_or(("".into(), 0));
        if let Some(answer) = answer.filter(|a| *a.epoch == *epoch) {
            for entry in answer.messages {
                let Some(missed) = gap_entry(&entry) else {
                    continue;
                };
                if missed.offset > last && missed.offset < first_held {
                    self.deliver(room, &epoch, missed, hub);
                }
            }
        }
        for m in gap.held {
            if self.last.get(room).is_none_or(|(_, last)| m.offset > *last) {
                self.deliver(room, &epoch, m, hub);
            }
        }
    }

    /// Gives `room` a new epoch in Redis (its history misses messages).
    pub fn renew_epoch(&mut self, cmd: &mut Link, room: Rc<str>, hub: &mut Hub) {
        let tag = self.tag();
        let meta = self.keys(&room).0;
        let script = scripts::RENEW_EPOCH.as_bytes();
        let sent = cmd.command(&[b"EVAL", script, b"1", meta.as_bytes()], Some(tag));
        if sent.is_ok() {
            self.pending.insert(tag, Pending::Renew(room));
        } else {
            hub.note_unnumbered(&room);
        }
    }

    /// The room's channel was dropped: its next message starts afresh.
    pub fn forget_room(&mut self, room: &str) {
        self.last.remove(room);
    }
}

/// `{offset} {epoch} {sender}\n{message}`.
fn split_numbered(payload: &[u8]) -> Option<(u64, &str, &str, &[u8])> {
    let newline = payload.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&payload[..newline]).ok()?;
    let mut parts = head.split(' ');
    let offset = parts.next()?.parse().ok()?;
    let epoch = parts.next()?;
    let sender = parts.next()?;
    Some((offset, epoch, sender, &payload[newline + 1..]))
}

/// `{kind} {sender}\n{message}`, as a gap read returns each message (a
/// bare message is taken as a publish from no one).
fn gap_entry(entry: &[u8]) -> Option<Numbered> {
    let newline = match entry.first() {
        Some(b'{') => None,
        _ => Some(entry.iter().position(|&b| b == b'\n')?),
    };
    let head = match newline {
        Some(at) => std::str::from_utf8(&entry[..at]).ok()?,
        None => "p -",
    };
    let (kind, sender) = head.split_once(' ')?;
    let kind = match kind {
        "b" => RoomKind::Broadcast,
        _ => RoomKind::Publish,
    };
    let body: Rc<[u8]> = entry[newline.map_or(0, |at| at + 1)..].into();
    Some(Numbered {
        kind,
        offset: offset_of(&body)?,
        sender: sender.into(),
        body,
        passed_over: false,
    })
}

/// The `"offset":N` a numbered message ends with.
pub fn offset_of(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.rfind("\"offset\":")? + 9;
    text[start..].trim_end_matches('}').parse().ok()
}

/// `{offset, epoch, complete, {message...}}`, or `None` for anything else.
fn answer_of(value: &Value) -> Option<ReadAnswer> {
    let Value::Array(Some(items)) = value else {
        return None;
    };
    let [Value::Integer(offset), epoch, Value::Integer(complete), Value::Array(Some(messages))] =
        items.as_slice()
    else {
        return None;
    };
    Some(ReadAnswer {
        offset: u64::try_from(*offset).ok()?,
        epoch: String::from_utf8_lossy(epoch.as_bytes()?).into(),
        complete: *complete == 1,
        messages: messages
            .iter()
            .filter_map(|m| m.as_bytes().map(Rc::from))
            .collect(),
    })
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
