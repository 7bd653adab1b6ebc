//! The broker endpoint (SPEC §9): the cluster node's two Redis sockets on
//! the shared Poll and timer wheel. It only moves bytes: connecting, reading
//! and writing until `WouldBlock`; every decision is `proto::cluster::Node`'s.
//! Both sockets share the endpoint's token; an event services both.
//! A burst from the broker is taken a batch per loop pass (the node bounds
//! it; `on_pass`, the pass's last call before the clients' sockets are
//! written, starts the next), so that members' sockets are written between
//! batches; a socket not read to `WouldBlock` is read again on the next pass
//! (mio is edge-triggered).

use super::app::App;
use super::endpoint::Endpoint;
use super::nonblocking::retry;
use crate::proto::cluster::Node;
use crate::proto::redis::Link;
use crate::proto::Now;
use crate::settings::{RedisAddress, RedisTarget};
use log::{debug, error};
use mio::event::{Event, Source};
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// Reads per socket per call, so that a flood from the broker cannot starve
/// clients (the link also stops asking for input while its inbox is full).
const MAX_READS_PER_CALL: usize = 64;
const READ_CHUNK: usize = 16 * 1024;

/// Where to connect, resolved once at start (no name lookups in the loop).
#[derive(Debug, Clone)]
pub enum BrokerAddress {
    Tcp(Vec<SocketAddr>),
    Unix(PathBuf),
}

impl BrokerAddress {
    /// Resolves `cluster.redis` (at start, before the loop runs).
    pub fn resolve(target: &RedisTarget) -> io::Result<BrokerAddress> {
        match &target.address {
            RedisAddress::Unix(path) => Ok(BrokerAddress::Unix(path.clone())),
            RedisAddress::Tcp { host, port } => {
                let addrs: Vec<SocketAddr> = (host.as_str(), *port).to_socket_addrs()?.collect();
                if addrs.is_empty() {
                    return Err(io::Error::other(format!("{host} has no address")));
                }
                Ok(BrokerAddress::Tcp(addrs))
            }
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn connect(address: &BrokerAddress, attempt: usize) -> io::Result<Stream> {
        match address {
            BrokerAddress::Tcp(addrs) => Ok(Stream::Tcp(TcpStream::connect(
                addrs[attempt % addrs.len()],
            )?)),
            BrokerAddress::Unix(path) => Ok(Stream::Unix(UnixStream::connect(path)?)),
        }
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    /// `Ok(true)` once the non-blocking connect finished.
    fn is_connected(&self) -> io::Result<bool> {
        let (error, peer) = match self {
            Stream::Tcp(s) => (s.take_error()?, s.peer_addr().map(|_| ())),
            Stream::Unix(s) => (s.take_error()?, s.peer_addr().map(|_| ())),
        };
        if let Some(e) = error {
            return Err(e);
        }
        match peer {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
}

/// One socket of the node and whether its connect finished.
#[derive(Default)]
struct Slot {
    stream: Option<Stream>,
    connected: bool,
    attempts: usize,
    /// Reading stopped before `WouldBlock`: no new event will come for what
    /// is already there.
    unread: bool,
}

pub struct BrokerEndpoint {
    node: Node,
    address: BrokerAddress,
    slots: [Slot; 2],
    registry: Registry,
    token: Token,
    buf: Vec<u8>,
}

impl BrokerEndpoint {
    pub fn new(
        node: Node,
        address: BrokerAddress,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Self> {
        Ok(BrokerEndpoint {
            node,
            address,
            slots: Default::default(),
            registry: registry.try_clone()?,
            token,
            buf: vec![0; READ_CHUNK],
        })
    }

    /// Moves bytes both ways on both sockets, lets the node handle them, and
    /// moves what it answered.
    fn drive(&mut self, app: &mut App, now: Now) -> Option<u64> {
        let App::Gateway(hub) = app else {
            return None;
        };
        hub.expire_directed(now);
        for i in 0..2 {
            self.service(i, now);
        }
        self.node.pump(hub, now);
        for i in 0..2 {
            self.service(i, now);
        }
        // Events the second pass produced (replies read) are handled now.
        self.node.pump(hub, now);
        for i in 0..2 {
            self.flush(i, now);
        }
        if let Some(why) = self.node.fatal() {
            error!("{why}");
            std::process::exit(1);
        }
        match (self.node.poll_timeout(), hub.directed_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn service(&mut self, i: usize, now: Now) {
        let link = &mut self.node.links()[i];
        let slot = &mut self.slots[i];
        if slot.stream.is_none() && link.wants_connect(now.ms) {
            link.on_connecting(now.ms);
            slot.attempts += 1;
            match Stream::connect(&self.address, slot.attempts) {
                Ok(mut stream) => {
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    match self
                        .registry
                        .register(stream.source(), self.token, interest)
                    {
                        Ok(()) => {
                            slot.stream = Some(stream);
                            slot.connected = false;
                        }
                        Err(e) => link.on_closed(now.ms, closed_reason(&e)),
                    }
                }
                Err(e) => {
                    debug!("cluster: connect failed: {e}");
                    link.on_closed(now.ms, "connect failed");
                }
            }
        }
        let Some(stream) = slot.stream.as_mut() else {
            return;
        };
        if !slot.connected {
            match stream.is_connected() {
                Ok(true) => {
                    slot.connected = true;
                    link.on_connected(now.ms);
                }
                Ok(false) => return,
                Err(e) => {
                    debug!("cluster: connect failed: {e}");
                    link.on_closed(now.ms, "connect failed");
                }
            }
        }
        if slot.connected {
            slot.unread = !read_all(stream, link, &mut self.buf, now);
        }
        self.flush(i, now);
    }

    /// Writes what the link has for its socket; drops the socket of a link
    /// that went down.
    fn flush(&mut self, i: usize, now: Now) {
        let link = &mut self.node.links()[i];
        let slot = &mut self.slots[i];
        if let (Some(stream), true) = (slot.stream.as_mut(), slot.connected) {
            write_all(stream, link, now);
        }
        if link.is_down() {
            if let Some(mut stream) = slot.stream.take() {
                let _ = self.registry.deregister(stream.source());
            }
            slot.connected = false;
            slot.unread = false;
        }
    }
}

/// Reads while the link wants input; true when the socket was read to
/// `WouldBlock` (or is gone), false when bytes may be left in it.
fn read_all(stream: &mut Stream, link: &mut Link, buf: &mut [u8], now: Now) -> bool {
    for _ in 0..MAX_READS_PER_CALL {
        if !link.wants_input() {
            return false;
        }
        match retry(|| stream.read(buf)) {
            Ok(Some(0)) => link.on_closed(now.ms, "the broker closed the connection"),
            Ok(Some(n)) => link.on_bytes(&buf[..n], now.ms),
            Ok(None) => return true,
            Err(e) => link.on_closed(now.ms, closed_reason(&e)),
        }
        if link.is_down() {
            return true;
        }
    }
    false
}

fn write_all(stream: &mut Stream, link: &mut Link, now: Now) {
    while !link.output().is_empty() {
        match retry(|| stream.write(link.output())) {
            Ok(Some(0)) => return link.on_closed(now.ms, "the broker closed the connection"),
            Ok(Some(n)) => link.consume(n),
            Ok(None) => return,
            Err(e) => return link.on_closed(now.ms, closed_reason(&e)),
        }
    }
}

fn closed_reason(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => "connection reset",
        io::ErrorKind::ConnectionRefused => "connection refused",
        _ => "socket error",
    }
}

impl Endpoint for BrokerEndpoint {
    fn on_event(&mut self, _event: &Event, app: &mut App, now: Now) -> Option<u64> {
        self.drive(app, now)
    }

    fn on_timer(&mut self, app: &mut App, now: Now) -> Option<u64> {
        self.node.on_timer(now);
        self.drive(app, now)
    }

    fn on_shutdown(&mut self, app: &mut App, now: Now) -> Option<u64> {
        // The hosts' events are freed for other nodes' hosts at once.
        if let App::Gateway(hub) = app {
            hub.release_hosts();
            self.node.flush_hosts(hub);
        }
        self.node.stop();
        for i in 0..2 {
            self.flush(i, now);
        }
        None
    }

    /// The last call before the pass writes the clients' sockets: what the
    /// hub queued goes out, and the broker's input batch starts afresh.
    fn on_pass(&mut self, app: &mut App, now: Now) -> Option<u64> {
        let App::Gateway(hub) = &*app else {
            return None;
        };
        let wake = if hub.cluster().is_some_and(|tap| tap.has_forwards())
            || hub.has_room_changes()
            || self.has_backlog()
        {
            self.drive(app, now)
        } else {
            None
        };
        self.node.end_pass();
        wake
    }

    /// Input is waiting that no event will announce: received messages
    /// beyond the last batch, or a socket not read to the end.
    fn has_backlog(&self) -> bool {
        self.node.has_backlog()
            || self
                .slots
                .iter()
                .any(|s| s.unread && s.connected && s.stream.is_some())
    }
}
