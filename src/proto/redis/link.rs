//! One connection to Redis as a sans-IO state machine: the shell opens the
//! socket when [`Link::wants_connect`] says so and moves bytes; the link
//! authenticates, selects the database, pipelines commands, matches replies
//! in order, re-subscribes after a reconnect, and times out a silent broker.
//!
//! Driving contract, after every call: write [`Link::output`] and
//! [`Link::consume`] what the socket took; drain [`Link::poll_event`]; drop
//! the socket when [`Link::is_down`]; arm a timer for [`Link::poll_timeout`].
//! Read from the socket only while [`Link::wants_input`]: received messages
//! wait in the link until taken, and beyond [`INBOX_BYTES`] of them the rest
//! stays with the broker (Redis holds it in the connection's output buffer).

use std::collections::{BTreeSet, VecDeque};

use super::backoff::Backoff;
use super::resp::{command_len, decode, encode_command, DecodeError, Limits, Value};

/// What a connection is for: pub/sub pushes, or commands and their replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Subscriber,
    Command,
}

#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub role: Role,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    /// Bytes of commands held (queued while down plus unsent): the bound of
    /// `cluster.max_forward_bytes`.
    pub max_out_bytes: usize,
    pub limits: Limits,
    /// Longest whole reply (a pub/sub message with its channel and headers).
    pub max_reply_bytes: usize,
    pub connect_timeout_ms: u64,
    /// A broker that owes a reply and sends nothing for this long is dead.
    pub reply_timeout_ms: u64,
    /// With nothing received for this long, send PING (and expect a reply).
    pub probe_after_ms: u64,
}

/// What the link tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// Authenticated and ready; on a subscriber, subscriptions were re-sent.
    Up,
    /// The connection is gone; a reconnect is scheduled.
    Down(&'static str),
    /// The broker refused the handshake (AUTH, SELECT); its words, no secret.
    Refused(String),
    /// A pub/sub message (subscriber links).
    Message { channel: Vec<u8>, payload: Vec<u8> },
    /// The reply to a tagged command (command links); a lost link answers
    /// every outstanding tag with an error value.
    Reply { tag: u64, value: Value },
}

/// A command was not taken: holding it would pass `max_out_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Down { retry_at: u64 },
    Connecting { since: u64 },
    Handshake,
    Up,
}

/// What the next reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Handshake,
    Tagged(u64),
    Ignored,
}

/// Bytes of received, not yet taken messages past which the link asks for
/// no more input: what a burst from the broker may hold here at once.
pub const INBOX_BYTES: usize = 256 * 1024;
/// What a held message costs beside its channel and payload (the event and
/// two allocations), so that tiny messages count too.
const MESSAGE_OVERHEAD: usize = 128;

fn inbox_cost(channel: &[u8], payload: &[u8]) -> usize {
    channel.len() + payload.len() + MESSAGE_OVERHEAD
}

/// Error value given to tags outstanding when the link is lost.
pub const LINK_LOST: &[u8] = b"ERR tether: broker link lost";

pub struct Link {
    config: LinkConfig,
    phase: Phase,
    backoff: Backoff,
    /// Encoded commands ready for the socket (handshake first).
    out: Vec<u8>,
    /// Commands given while not up, sent once the handshake is done.
    queued: Vec<u8>,
    queued_expect: VecDeque<Expect>,
    expect: VecDeque<Expect>,
    input: Vec<u8>,
    channels: BTreeSet<Vec<u8>>,
    events: VecDeque<LinkEvent>,
    /// What the [`LinkEvent::Message`]s in `events` hold (see `inbox_cost`).
    inbox_bytes: usize,
    last_read_ms: u64,
    probing: bool,
    ups: u64,
    dropped: u64,
}

impl Link {
    pub fn new(config: LinkConfig, seed: u64) -> Link {
        Link {
            config,
            phase: Phase::Down { retry_at: 0 },
            backoff: Backoff::new(seed),
            out: Vec::new(),
            queued: Vec::new(),
            queued_expect: VecDeque::new(),
            expect: VecDeque::new(),
            input: Vec::new(),
            channels: BTreeSet::new(),
            events: VecDeque::new(),
            inbox_bytes: 0,
            last_read_ms: 0,
            probing: false,
            ups: 0,
            dropped: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.phase == Phase::Up
    }

    pub fn is_down(&self) -> bool {
        matches!(self.phase, Phase::Down { .. })
    }

    /// Times the link came up after its first time (for `_reconnects_total`).
    pub fn reconnects(&self) -> u64 {
        self.ups.saturating_sub(1)
    }

    /// Commands refused because the bound was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The shell should open a socket now.
    pub fn wants_connect(&self, now_ms: u64) -> bool {
        matches!(self.phase, Phase::Down { retry_at } if now_ms >= retry_at)
    }

    /// The shell started a non-blocking connect.
    pub fn on_connecting(&mut self, now_ms: u64) {
        self.phase = Phase::Connecting { since: now_ms };
    }

    /// The socket is connected: the handshake goes out first.
    pub fn on_connected(&mut self, now_ms: u64) {
        self.phase = Phase::Handshake;
        self.last_read_ms = now_ms;
        self.out.clear();
        self.input.clear();
        self.expect.clear();
        if let Some(password) = self.config.password.clone() {
            match self.config.user.clone() {
                Some(user) => self.raw(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => self.raw(&[b"AUTH", password.as_bytes()]),
            }
            self.expect.push_back(Expect::Handshake);
        }
        if self.config.db != 0 && self.config.role == Role::Command {
            let db = self.config.db.to_string();
            self.raw(&[b"SELECT", db.as_bytes()]);
            self.expect.push_back(Expect::Handshake);
        }
        self.finish_handshake_if_done();
    }

    /// The socket failed or closed (or the shell gave up on it).
    pub fn on_closed(&mut self, now_ms: u64, why: &'static str) {
        if self.is_down() {
            return;
        }
        // Commands still queued wait for the next connection (within the
        // bound); those handed to the lost socket are gone.
        for expect in self.expect.drain(..) {
            if let Expect::Tagged(tag) = expect {
                self.events.push_back(LinkEvent::Reply {
                    tag,
                    value: Value::Error(LINK_LOST.to_vec()),
                });
            }
        }
        self.out.clear();
        self.input.clear();
        self.probing = false;
        let delay = self.backoff.next_delay_ms();
        self.phase = Phase::Down {
            retry_at: now_ms.saturating_add(delay),
        };
        self.events.push_back(LinkEvent::Down(why));
    }

    /// Bytes read from the socket.
    pub fn on_bytes(&mut self, bytes: &[u8], now_ms: u64) {
        if !matches!(self.phase, Phase::Handshake | Phase::Up) {
            return;
        }
        self.last_read_ms = now_ms;
        self.probing = false;
        if self.input.is_empty() {
            // The usual case: whole replies, decoded where they were read;
            // only a partial one at the end is kept.
            if let Some(used) = self.decode_all(bytes, now_ms) {
                self.input.extend_from_slice(&bytes[used..]);
            }
        } else {
            let mut input = std::mem::take(&mut self.input);
            input.extend_from_slice(bytes);
            if let Some(used) = self.decode_all(&input, now_ms) {
                input.drain(..used);
                self.input = input;
            }
        }
        if self.input.len() > self.config.max_reply_bytes {
            self.on_closed(now_ms, "reply too large");
        }
    }

    /// Handles every whole reply at the front of `data`: how many bytes they
    /// took, or `None` when the link went down.
    fn decode_all(&mut self, data: &[u8], now_ms: u64) -> Option<usize> {
        let mut used = 0;
        loop {
            match decode(&data[used..], &self.config.limits) {
                Ok(Some((_, n))) if n > self.config.max_reply_bytes => {
                    self.on_closed(now_ms, "reply too large");
                    return None;
                }
                Ok(Some((value, n))) => {
                    used += n;
                    if !self.on_value(value, now_ms) {
                        return None;
                    }
                }
                Ok(None) => return Some(used),
                Err(DecodeError::Syntax) => {
                    self.on_closed(now_ms, "not RESP");
                    return None;
                }
                Err(DecodeError::TooLarge) => {
                    self.on_closed(now_ms, "reply too large");
                    return None;
                }
            }
        }
    }

    /// Whether the shell should read more: the messages received and not yet
    /// taken are under [`INBOX_BYTES`].
    pub fn wants_input(&self) -> bool {
        self.inbox_bytes < INBOX_BYTES
    }

    /// Whether events wait to be taken with [`Link::poll_event`].
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// False when the link went down.
    fn on_value(&mut self, value: Value, now_ms: u64) -> bool {
        if self.phase == Phase::Up && self.config.role == Role::Subscriber {
            self.on_push(value);
            return true;
        }
        match self.expect.pop_front() {
            Some(Expect::Handshake) => {
                if let Value::Error(text) = value {
                    let text = String::from_utf8_lossy(&text).into_owned();
                    self.events.push_back(LinkEvent::Refused(text));
                    self.on_closed(now_ms, "handshake refused");
                    return false;
                }
                self.finish_handshake_if_done();
            }
            Some(Expect::Tagged(tag)) => self.events.push_back(LinkEvent::Reply { tag, value }),
            Some(Expect::Ignored) => {}
            None => {
                self.on_closed(now_ms, "unexpected reply");
                return false;
            }
        }
        true
    }

    fn on_push(&mut self, value: Value) {
        let Value::Array(Some(items)) = value else {
            return;
        };
        // The decoded bytes move into the event: no copy per message.
        let Ok([kind, channel, payload]) = <[Value; 3]>::try_from(items) else {
            return;
        };
        if kind.as_bytes() != Some(b"message") {
            return;
        }
        if let (Some(channel), Some(payload)) = (channel.into_bytes(), payload.into_bytes()) {
            self.inbox_bytes += inbox_cost(&channel, &payload);
            self.events
                .push_back(LinkEvent::Message { channel, payload });
        }
        // subscribe/unsubscribe confirmations and pongs need nothing.
    }

    fn finish_handshake_if_done(&mut self) {
        if self.phase != Phase::Handshake || !self.expect.is_empty() {
            return;
        }
        self.phase = Phase::Up;
        self.backoff.reset();
        self.ups += 1;
        if self.config.role == Role::Subscriber && !self.channels.is_empty() {
            let channels: Vec<Vec<u8>> = self.channels.iter().cloned().collect();
            let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
            args.extend(channels.iter().map(Vec::as_slice));
            self.raw(&args);
        }
        self.out.append(&mut self.queued);
        self.expect.append(&mut self.queued_expect);
        self.events.push_back(LinkEvent::Up);
    }

    fn raw(&mut self, args: &[&[u8]]) {
        encode_command(&mut self.out, args);
    }

    fn held(&self) -> usize {
        self.out.len() + self.queued.len()
    }

    /// Queues a command; its reply comes back as [`LinkEvent::Reply`] with
    /// `tag`, or is discarded with `None`. While the link is down the command
    /// waits (within the bound) for the next connection.
    pub fn command(&mut self, args: &[&[u8]], tag: Option<u64>) -> Result<(), Full> {
        if self.held() + command_len(args) > self.config.max_out_bytes {
            self.dropped += 1;
            return Err(Full);
        }
        let expect = tag.map_or(Expect::Ignored, Expect::Tagged);
        if self.phase == Phase::Up {
            encode_command(&mut self.out, args);
            self.expect.push_back(expect);
        } else {
            encode_command(&mut self.queued, args);
            self.queued_expect.push_back(expect);
        }
        Ok(())
    }

    /// Subscribes now if up, and after every reconnect (subscriber links).
    pub fn subscribe(&mut self, channel: &[u8]) {
        if self.channels.insert(channel.to_vec()) && self.phase == Phase::Up {
            self.raw(&[b"SUBSCRIBE", channel]);
        }
    }

    pub fn unsubscribe(&mut self, channel: &[u8]) {
        if self.channels.remove(channel) && self.phase == Phase::Up {
            self.raw(&[b"UNSUBSCRIBE", channel]);
        }
    }

    pub fn is_subscribed(&self, channel: &[u8]) -> bool {
        self.channels.contains(channel)
    }

    /// Bytes for the socket.
    pub fn output(&self) -> &[u8] {
        match self.phase {
            Phase::Handshake | Phase::Up => &self.out,
            _ => &[],
        }
    }

    /// The socket took `n` bytes of [`Link::output`].
    pub fn consume(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }

    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        let event = self.events.pop_front()?;
        if let LinkEvent::Message { channel, payload } = &event {
            self.inbox_bytes -= inbox_cost(channel, payload);
        }
        Some(event)
    }

    fn owes_reply(&self) -> bool {
        self.probing || !self.expect.is_empty()
    }

    /// When [`Link::on_timer`] is next due.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.phase {
            Phase::Down { retry_at } => Some(retry_at),
            Phase::Connecting { since } => {
                Some(since.saturating_add(self.config.connect_timeout_ms))
            }
            // The handshake always owes a reply.
            Phase::Handshake | Phase::Up if self.owes_reply() => Some(
                self.last_read_ms
                    .saturating_add(self.config.reply_timeout_ms),
            ),
            Phase::Handshake | Phase::Up => {
                Some(self.last_read_ms.saturating_add(self.config.probe_after_ms))
            }
        }
    }

    /// Connect and reply timeouts; a PING when the broker has been quiet.
    pub fn on_timer(&mut self, now_ms: u64) {
        let quiet = now_ms.saturating_sub(self.last_read_ms);
        let why = match self.phase {
            Phase::Down { .. } => return,
            Phase::Connecting { since } => {
                if now_ms < since.saturating_add(self.config.connect_timeout_ms) {
                    return;
                }
                "connect timed out"
            }
            Phase::Handshake | Phase::Up if self.owes_reply() => {
                if quiet < self.config.reply_timeout_ms {
                    return;
                }
                "broker stopped answering"
            }
            Phase::Handshake | Phase::Up => {
                if quiet >= self.config.probe_after_ms {
                    self.probe(now_ms);
                }
                return;
            }
        };
        self.on_closed(now_ms, why);
    }

    fn probe(&mut self, now_ms: u64) {
        self.probing = true;
        self.last_read_ms = now_ms;
        self.raw(&[b"PING"]);
        if self.config.role == Role::Command {
            self.expect.push_back(Expect::Ignored);
        }
    }
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
