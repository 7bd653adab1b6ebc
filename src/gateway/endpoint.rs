//! The token space of the one `mio::Poll`, and the slot where endpoint kinds
//! other than client connections plug in.
//!
//! Tokens, from the top: `SIGNAL`, then one per listener from
//! `LISTENER_BASE`, then one per endpoint from `ENDPOINT_BASE`; every token
//! below `ENDPOINT_BASE` is a client connection's slab key.
//!
//! A new endpoint kind (a broker link, a child process's pipes, an outgoing
//! HTTP connection) is a sans-IO state machine in `proto` plus a thin adapter
//! that implements [`Endpoint`]. `Server::add_endpoint` hands the adapter its
//! token to register its sources with; the loop routes that token's events to
//! it, and puts the deadline each call returns into the shared timer wheel
//! (key `ENDPOINT_BASE + index`), whose expiry calls its `on_timer`. Client
//! connections (`conns/`) are not touched.

use super::app::App;
use crate::proto::hub::BRIDGED_KEY_BASE;
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use mio::event::Event;
use mio::{Registry, Token};
use std::io;

/// The signal pipe (SIGTERM, SIGINT, SIGHUP).
pub const SIGNAL: Token = Token(usize::MAX);
/// The first listener's token; listener `i` is `LISTENER_BASE + i`.
pub const LISTENER_BASE: usize = usize::MAX - 64;
/// Endpoints other than client connections, at most this many.
pub const MAX_ENDPOINTS: usize = 1024;
/// The first endpoint's token; endpoint `i` is `ENDPOINT_BASE + i`.
pub const ENDPOINT_BASE: usize = LISTENER_BASE - MAX_ENDPOINTS;

/// What a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Conn(usize),
    Endpoint(usize),
    Listener(usize),
    Signal,
}

impl Source {
    pub fn of(token: Token) -> Source {
        match token {
            SIGNAL => Source::Signal,
            Token(t) if t >= LISTENER_BASE => Source::Listener(t - LISTENER_BASE),
            Token(t) if t >= ENDPOINT_BASE => Source::Endpoint(t - ENDPOINT_BASE),
            Token(key) => Source::Conn(key),
        }
    }
}

/// One non-client endpoint on the poll loop. Like a client connection it
/// reads and writes until `WouldBlock` and hands bytes and `now` to its core;
/// the core's actions go out through `app`. Each call returns when it next
/// wants `on_timer` (`None`: no deadline).
pub trait Endpoint {
    /// One of its sources is ready.
    fn on_event(&mut self, event: &Event, app: &mut App, now: Now) -> Option<u64>;
    /// A deadline it asked for is due. The wheel fires at tick resolution and
    /// keeps superseded entries, so this may come early or twice: compare
    /// `now` with the endpoint's own deadline.
    fn on_timer(&mut self, app: &mut App, now: Now) -> Option<u64>;
    /// Once per loop pass, after the connections ran: take what the core
    /// queued for this endpoint. `None`: nothing new to schedule.
    fn on_pass(&mut self, _app: &mut App, _now: Now) -> Option<u64> {
        None
    }
    /// The core sent this endpoint's own session (a bridged host) a message.
    fn on_message(&mut self, _body: &[u8], _app: &mut App, _now: Now) -> Option<u64> {
        None
    }
    /// The core ended this endpoint's session with `code`.
    fn on_close(&mut self, _code: u16, _app: &mut App, _now: Now) -> Option<u64> {
        None
    }
    /// SIGCHLD: some child process changed state (reap yours, if any).
    fn on_child_exit(&mut self, _app: &mut App, _now: Now) -> Option<u64> {
        None
    }
    /// The gateway stops: wind down, then report `is_finished`.
    fn on_shutdown(&mut self, _app: &mut App, _now: Now) -> Option<u64> {
        None
    }
    /// Work is waiting that no event or timer will announce (input taken a
    /// batch per pass): the loop does not sleep, and calls `on_pass` next.
    fn has_backlog(&self) -> bool {
        false
    }
    /// Nothing left to wind down (the loop may end).
    fn is_finished(&self) -> bool {
        true
    }
}

/// What the core addressed to bridged sessions (keys from
/// [`BRIDGED_KEY_BASE`]), collected while its actions are applied and then
/// handed to their endpoints: bridged host `i` is endpoint `i`.
#[derive(Debug, Default)]
pub struct Mail {
    arena: Vec<u8>,
    messages: Vec<(usize, usize, usize)>,
    closes: Vec<(usize, u16)>,
}

impl Mail {
    pub fn send(&mut self, key: ConnKey, body: &[u8]) {
        let start = self.arena.len();
        self.arena.extend_from_slice(body);
        self.messages.push((key, start, self.arena.len()));
    }

    pub fn close(&mut self, key: ConnKey, code: u16) {
        self.closes.push((key, code));
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.closes.is_empty()
    }

    /// Hands every message, then every close, to its endpoint.
    pub fn deliver(&self, endpoints: &mut Endpoints, app: &mut App, now: Now) -> Vec<(usize, u64)> {
        let mut wakes = Vec::new();
        for &(key, start, end) in &self.messages {
            let index = key - BRIDGED_KEY_BASE;
            if let Some(endpoint) = endpoints.slots.get_mut(index) {
                if let Some(at) = endpoint.on_message(&self.arena[start..end], app, now) {
                    wakes.push((index, at));
                }
            }
        }
        for &(key, code) in &self.closes {
            let index = key - BRIDGED_KEY_BASE;
            if let Some(endpoint) = endpoints.slots.get_mut(index) {
                if let Some(at) = endpoint.on_close(code, app, now) {
                    wakes.push((index, at));
                }
            }
        }
        wakes
    }
}

/// The endpoints in use, by index (`ENDPOINT_BASE + index` is the token).
#[derive(Default)]
pub struct Endpoints {
    slots: slab::Slab<Box<dyn Endpoint>>,
}

impl Endpoints {
    /// Adds an endpoint; `make` registers its sources under the token given.
    pub fn insert(
        &mut self,
        registry: &Registry,
        make: impl FnOnce(&Registry, Token) -> io::Result<Box<dyn Endpoint>>,
    ) -> io::Result<usize> {
        if self.slots.len() >= MAX_ENDPOINTS {
            return Err(io::Error::other("too many endpoints"));
        }
        let entry = self.slots.vacant_entry();
        let index = entry.key();
        entry.insert(make(registry, Token(ENDPOINT_BASE + index))?);
        Ok(index)
    }

    /// Drops an endpoint (its adapter deregisters its sources on drop).
    pub fn remove(&mut self, index: usize) {
        self.slots.try_remove(index);
    }

    /// Routes an event; returns the endpoint's next deadline.
    pub fn on_event(
        &mut self,
        index: usize,
        event: &Event,
        app: &mut App,
        now: Now,
    ) -> Option<u64> {
        self.slots.get_mut(index)?.on_event(event, app, now)
    }

    /// Gives every endpoint its end-of-pass call; `wake` gets each deadline.
    pub fn on_pass(&mut self, app: &mut App, now: Now, mut wake: impl FnMut(usize, u64)) {
        for (index, endpoint) in self.slots.iter_mut() {
            if let Some(at) = endpoint.on_pass(app, now) {
                wake(index, at);
            }
        }
    }

    /// Routes a due timer; returns the endpoint's next deadline.
    pub fn on_timer(&mut self, index: usize, app: &mut App, now: Now) -> Option<u64> {
        self.slots.get_mut(index)?.on_timer(app, now)
    }

    /// Calls `each` on every endpoint; returns the deadlines they ask for.
    pub fn for_each(
        &mut self,
        mut each: impl FnMut(&mut dyn Endpoint) -> Option<u64>,
    ) -> Vec<(usize, u64)> {
        let mut wakes = Vec::new();
        for (index, endpoint) in self.slots.iter_mut() {
            if let Some(at) = each(endpoint.as_mut()) {
                wakes.push((index, at));
            }
        }
        wakes
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether some endpoint has work for the next pass (see
    /// [`Endpoint::has_backlog`]).
    pub fn has_backlog(&self) -> bool {
        self.slots.iter().any(|(_, e)| e.has_backlog())
    }

    /// Whether every endpoint has wound down.
    pub fn all_finished(&self) -> bool {
        self.slots.iter().all(|(_, e)| e.is_finished())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_their_sources() {
        assert_eq!(Source::of(Token(0)), Source::Conn(0));
        assert_eq!(
            Source::of(Token(ENDPOINT_BASE - 1)),
            Source::Conn(ENDPOINT_BASE - 1)
        );
        assert_eq!(Source::of(Token(ENDPOINT_BASE + 3)), Source::Endpoint(3));
        assert_eq!(Source::of(Token(LISTENER_BASE + 1)), Source::Listener(1));
        assert_eq!(Source::of(SIGNAL), Source::Signal);
    }
}
