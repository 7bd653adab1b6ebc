//! Outgoing HTTP/1.1 requests on the loop's `Poll`: a bounded pool of
//! kept-alive mio connections to one backend, with a waiting queue and a
//! deadline per request. Used by `url` hosts and the connect proxy (SPEC §11);
//! each request carries a tag its user gets back with the outcome.
//!
//! The connections are registered with the pool's own `Poll`, each under
//! its slot, and that poll's descriptor with the loop's under the pool's
//! token: an event then costs one `epoll_wait` that names the ready
//! connections, rather than a read on every connection of the pool.

use super::http_tls::{self, TlsTarget};
use super::nonblocking::retry;
use crate::proto::auth::MAX_TOKEN_BYTES;
use crate::proto::bounds::grown_vec_bytes;
use crate::proto::host_link::ALLOC_SLACK;
use crate::proto::http_response::{raw_bytes_bound, write_post, Parsed, Response, ResponseParser};
use log::debug;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use rustls::ClientConnection;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

/// Bytes read from a connection per `read` call (one buffer per pool).
pub const READ_CHUNK: usize = 16 * 1024;

/// Where requests go.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub addr: SocketAddr,
    /// The `Host` header: the URL's authority.
    pub authority: String,
    pub path: String,
    /// `https://`: how to speak TLS to it.
    pub tls: Option<TlsTarget>,
}

impl HttpTarget {
    /// `http(s)://HOST[:PORT]/PATH`, the name resolved now (once); `ca`:
    /// the CAs an `https://` server is checked against (else the system's).
    pub fn from_url(url: &str, ca: Option<&Path>) -> Result<HttpTarget, String> {
        let (authority, host, port, path) =
            split_url(url).ok_or("expected http(s)://HOST[:PORT]/PATH")?;
        let tls = if url.starts_with("https://") {
            Some(TlsTarget::new(&host, ca)?)
        } else {
            None
        };
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| format!("cannot resolve {host}"))?;
        Ok(HttpTarget {
            addr,
            authority,
            path,
            tls,
        })
    }
}

/// Splits `http(s)://HOST[:PORT]/PATH` into authority, host, port and path.
pub fn split_url(url: &str) -> Option<(String, String, u16, String)> {
    let (rest, default_port) = match url.strip_prefix("https://") {
        Some(rest) => (rest, 443),
        None => (url.strip_prefix("http://")?, 80),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().ok()?),
        _ => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((authority.into(), host.into(), port, path.into()))
}

/// How a request ended.
#[derive(Debug)]
pub enum Outcome {
    Answer(Response),
    Failed(String),
    TimedOut,
}

struct Waiting<T> {
    tag: T,
    body: Vec<u8>,
    /// Already retried once (on a fresh connection).
    retried: bool,
}

struct PoolConn<T> {
    sock: TcpStream,
    tls: Option<Box<ClientConnection>>,
    out: Vec<u8>,
    parser: ResponseParser,
    /// The requests written and not yet answered, oldest first, with their
    /// deadlines: the responses come in this order (at most `depth`).
    jobs: VecDeque<(Waiting<T>, u64)>,
    /// Carried a response already: a failure before any byte may be the
    /// backend closing an idle connection, so the request is tried once more.
    reused: bool,
}

pub struct HttpPool<T> {
    target: HttpTarget,
    /// The connections' own poll (see the module's comment).
    ready: Poll,
    events: Events,
    /// Slots the last look at `ready` named.
    marks: Vec<Reading>,
    chunk: Box<[u8]>,
    max_body: usize,
    /// Requests in flight at most, over every connection.
    max_in_flight: usize,
    /// Requests in flight at most per connection (HTTP/1.1 pipelining; 1:
    /// one at a time).
    depth: usize,
    timeout_ms: u64,
    conns: Vec<Option<PoolConn<T>>>,
    queue: VecDeque<Waiting<T>>,
    /// The bodies in `queue`, in bytes.
    queued_bytes: usize,
}

/// What one `https://` connection's rustls client may hold beside the
/// pool's own buffers: its state and keys, a received record being
/// deframed, one decrypted record, and sealed records up to rustls's
/// default buffer limit (64 KiB).
const TLS_CLIENT_BYTES: usize = 8 * 1024 + 2 * (16 * 1024 + 2048) + 16 * 1024 + 64 * 1024;
/// Room for the request head beside the bearer token and the URL.
const REQUEST_HEAD_BYTES: usize = 256;

impl<T> HttpPool<T> {
    /// At most `max_in_flight` requests at once, `depth` of them pipelined
    /// on each connection (so `max_in_flight / depth` connections, rounded
    /// up); events come to the loop's `registry` under `token`.
    pub fn new(
        target: HttpTarget,
        (max_in_flight, depth): (usize, usize),
        (max_body, timeout_ms): (usize, u64),
        registry: &Registry,
        token: Token,
    ) -> io::Result<HttpPool<T>> {
        let depth = depth.max(1);
        let slots = connections(max_in_flight, depth);
        let ready = Poll::new()?;
        registry.register(&mut SourceFd(&ready.as_raw_fd()), token, Interest::READABLE)?;
        Ok(HttpPool {
            target,
            ready,
            events: Events::with_capacity(slots.max(1)),
            marks: vec![Reading::Skip; slots],
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            max_body,
            max_in_flight,
            depth,
            timeout_ms,
            conns: (0..slots).map(|_| None).collect(),
            queue: VecDeque::new(),
            queued_bytes: 0,
        })
    }

    /// Worst-case bytes a pool holds (SPEC §8 addition), its queue aside
    /// (its user bounds what waits): the read buffer and the poll's events;
    /// per connection its state, and per request in flight on it (`depth`)
    /// the request being written (`request_bytes` of body, the head, the
    /// bearer token, the URL) and the response (raw bytes, and the body
    /// copied out of them), with TLS when `tls`.
    pub fn bytes_bound(
        (max_in_flight, depth): (usize, usize),
        max_body: usize,
        request_bytes: usize,
        url_bytes: usize,
        tls: bool,
    ) -> usize {
        let depth = depth.max(1);
        let slots = connections(max_in_flight, depth);
        let request = request_bytes + REQUEST_HEAD_BYTES + MAX_TOKEN_BYTES + url_bytes;
        let per_conn = std::mem::size_of::<Option<PoolConn<T>>>()
            + grown_vec_bytes(depth * request)
            + grown_vec_bytes(depth * std::mem::size_of::<(Waiting<T>, u64)>())
            + depth * (request_bytes + ALLOC_SLACK) // the bodies kept for a retry
            + grown_vec_bytes(depth * raw_bytes_bound(max_body))
            + depth * (max_body + ALLOC_SLACK)
            + if tls { TLS_CLIENT_BYTES } else { 0 };
        std::mem::size_of::<HttpPool<T>>()
            + READ_CHUNK
            + slots * (per_conn + std::mem::size_of::<mio::event::Event>() + 1)
    }

    /// Worst-case bytes of a queue of at most `entries` requests whose
    /// bodies add up to at most `body_bytes`.
    pub fn queue_bytes_bound(entries: usize, body_bytes: usize) -> usize {
        grown_vec_bytes(entries * std::mem::size_of::<Waiting<T>>())
            + body_bytes
            + entries * ALLOC_SLACK
    }

    /// The bodies waiting for a connection, in bytes.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    pub fn target(&self) -> &HttpTarget {
        &self.target
    }

    /// Queues a `POST` of `body`; `pump` sends it when a connection is free.
    pub fn submit(&mut self, tag: T, body: Vec<u8>) {
        self.queued_bytes += body.len();
        self.queue.push_back(Waiting {
            tag,
            body,
            retried: false,
        });
    }

    /// The tags still waiting for a connection.
    pub fn waiting(&self) -> impl Iterator<Item = &T> {
        self.queue.iter().map(|w| &w.tag)
    }

    /// Whether a request would be sent at once (fewer than `max_in_flight`
    /// are: a connection has room or may be opened).
    pub fn has_free_slot(&self) -> bool {
        self.in_flight() < self.max_in_flight
    }

    fn in_flight(&self) -> usize {
        self.conns.iter().flatten().map(|c| c.jobs.len()).sum()
    }

    /// Whether requests wait or are in flight.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight() == 0
    }

    /// Serves every connection, then starts waiting requests on free ones;
    /// finished requests go to `done`.
    pub fn pump(&mut self, bearer: &str, now_ms: u64, done: &mut Vec<(T, Outcome)>) {
        self.mark_ready();
        for slot in 0..self.conns.len() {
            let reading = std::mem::take(&mut self.marks[slot]);
            if reading != Reading::Skip {
                self.drive(slot, reading, done);
            }
        }
        self.dispatch(bearer, now_ms, done);
    }

    /// Starts waiting requests on free connections without looking at the
    /// ready ones: for a new request, whose arrival readied nothing (what
    /// the connections got raised the pool's event, and `pump` serves it),
    /// so no `epoll_wait` per request.
    pub fn send_waiting(&mut self, bearer: &str, now_ms: u64, done: &mut Vec<(T, Outcome)>) {
        self.dispatch(bearer, now_ms, done);
    }

    /// Marks the slots whose connection is ready (every slot if the pool's
    /// poll fails, so that nothing is missed).
    fn mark_ready(&mut self) {
        loop {
            if self
                .ready
                .poll(&mut self.events, Some(Duration::ZERO))
                .is_err()
            {
                self.marks.iter_mut().for_each(|m| *m = Reading::ToEnd);
                return;
            }
            let mut seen = 0;
            for event in self.events.iter() {
                seen += 1;
                if let Some(mark) = self.marks.get_mut(event.token().0) {
                    // A close that came with the data is no edge of its own.
                    let closed = event.is_read_closed() || event.is_error();
                    *mark = (*mark).max(if closed {
                        Reading::ToEnd
                    } else {
                        Reading::Arrived
                    });
                }
            }
            if seen < self.events.capacity() {
                return;
            }
        }
    }

    /// Requests past their deadline end `TimedOut`; their connection is
    /// closed, failing the requests pipelined behind them.
    pub fn expire(&mut self, now_ms: u64, done: &mut Vec<(T, Outcome)>) {
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            if conn.jobs.front().is_some_and(|(_, at)| now_ms >= *at) {
                if let Some((waiting, _)) = conn.jobs.pop_front() {
                    done.push((waiting.tag, Outcome::TimedOut));
                }
                self.close(slot, "an earlier request on its connection timed out", done);
            }
        }
    }

    /// The earliest deadline of a request in flight (the oldest on each
    /// connection has the earliest of its connection).
    pub fn deadline(&self) -> Option<u64> {
        self.conns
            .iter()
            .flatten()
            .filter_map(|c| c.jobs.front().map(|(_, at)| *at))
            .min()
    }

    /// The connection for one more request: the fullest one with room
    /// (one pipeline fills before the next: fewer, fuller writes), else a
    /// slot without one.
    fn pick_slot(&self) -> Option<usize> {
        let open = (0..self.conns.len())
            .filter_map(|slot| Some((slot, self.conns[slot].as_ref()?.jobs.len())))
            .filter(|(_, jobs)| *jobs < self.depth)
            .max_by_key(|(slot, jobs)| (*jobs, std::cmp::Reverse(*slot)));
        open.map(|(slot, _)| slot)
            .or_else(|| self.conns.iter().position(Option::is_none))
    }

    /// Writes waiting requests into free room, then sends each touched
    /// connection's in one write (pipelined requests go out together).
    fn dispatch(&mut self, bearer: &str, now_ms: u64, done: &mut Vec<(T, Outcome)>) {
        let mut in_flight = self.in_flight();
        while !self.queue.is_empty() && in_flight < self.max_in_flight {
            let Some(slot) = self.pick_slot() else { break };
            let Some(waiting) = self.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= waiting.body.len();
            if self.conns[slot].is_none() {
                match self.connect(slot) {
                    Ok(conn) => self.conns[slot] = Some(conn),
                    Err(why) => {
                        done.push((waiting.tag, Outcome::Failed(why)));
                        continue;
                    }
                }
            }
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            let target = &self.target;
            write_post(
                &mut conn.out,
                &target.authority,
                &target.path,
                bearer,
                &waiting.body,
            );
            // A retried request is not retried again.
            conn.reused &= !waiting.retried;
            conn.jobs.push_back((waiting, now_ms + self.timeout_ms));
            in_flight += 1;
            self.marks[slot] = Reading::Arrived;
        }
        for slot in 0..self.conns.len() {
            if std::mem::take(&mut self.marks[slot]) != Reading::Skip {
                // Only written: the answers are not there yet, and their
                // arrival is an event of its own (a read now would be one
                // `EAGAIN` per write).
                self.drive(slot, Reading::Skip, done);
            }
        }
    }

    fn connect(&self, slot: usize) -> Result<PoolConn<T>, String> {
        let mut sock =
            TcpStream::connect(self.target.addr).map_err(|e| format!("cannot connect: {e}"))?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.ready
            .registry()
            .register(&mut sock, Token(slot), interest)
            .map_err(|e| format!("cannot register: {e}"))?;
        let _ = sock.set_nodelay(true);
        let tls = match &self.target.tls {
            Some(target) => Some(Box::new(target.connect()?)),
            None => None,
        };
        Ok(PoolConn {
            sock,
            tls,
            out: Vec::new(),
            parser: ResponseParser::pipelined(self.max_body, self.depth),
            jobs: VecDeque::new(),
            reused: false,
        })
    }

    /// Writes and reads (as `reading` says) connection `slot`; settles its
    /// requests as they are answered.
    fn drive(&mut self, slot: usize, reading: Reading, done: &mut Vec<(T, Outcome)>) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let chunk = &mut self.chunk;
        let (failure, eof) = match conn.tls.as_deref_mut() {
            None => plain_io(
                &mut conn.sock,
                &mut conn.out,
                (reading, &mut conn.parser, chunk),
            ),
            Some(tls) => {
                let parser = &mut conn.parser;
                let wrote = http_tls::write(tls, &mut conn.sock, &mut conn.out);
                let read = |_| http_tls::read(tls, &mut conn.sock, chunk, |b| parser.feed(b));
                match wrote.and_then(read) {
                    Ok(eof) => (None, eof),
                    Err(e) => (Some(e.to_string()), false),
                }
            }
        };
        if conn.jobs.is_empty() {
            // An idle connection that closes or talks out of turn is dropped.
            if eof || failure.is_some() || !conn.parser.is_empty() {
                self.close(slot, "connection closed", done);
            }
            return;
        }
        self.settle(slot, failure, eof, done);
    }

    /// Attributes the responses that arrived on `slot` to its requests in
    /// order; on a failure (or a response closing the connection) every
    /// request still in flight on it fails, never retried (it may have
    /// reached the backend), but a lone request on a kept-alive, unpipelined
    /// connection that got no byte is tried once more.
    fn settle(
        &mut self,
        slot: usize,
        failure: Option<String>,
        eof: bool,
        done: &mut Vec<(T, Outcome)>,
    ) {
        while let Some(conn) = self.conns[slot].as_mut() {
            if conn.jobs.is_empty() {
                // Closed after its last answer (no later edge tells), or
                // more than was asked for: the backend talks out of turn.
                if eof || !conn.parser.is_empty() {
                    self.close(slot, "connection closed", done);
                }
                return;
            }
            let answered_nothing = conn.parser.is_empty();
            let verdict = match &failure {
                Some(why) => Err(why.clone()),
                None => match conn.parser.next(eof) {
                    Parsed::Partial => return,
                    Parsed::Done(response) => Ok(response),
                    Parsed::Bad(why) => Err(why.to_string()),
                },
            };
            let Some((mut waiting, _)) = conn.jobs.pop_front() else {
                return;
            };
            match verdict {
                Ok(response) => {
                    let keep_alive = response.keep_alive;
                    conn.reused |= keep_alive;
                    done.push((waiting.tag, Outcome::Answer(response)));
                    if !keep_alive {
                        self.close(slot, "the backend closed the connection", done);
                        return;
                    }
                }
                Err(why) => {
                    if self.depth == 1 && conn.reused && answered_nothing {
                        debug!("a kept-alive connection failed ({why}); retrying");
                        waiting.retried = true;
                        self.queued_bytes += waiting.body.len();
                        self.queue.push_front(waiting);
                    } else {
                        // First: its answer goes out before those behind it.
                        done.push((waiting.tag, Outcome::Failed(why.clone())));
                    }
                    self.close(slot, &why, done);
                    return;
                }
            }
        }
    }

    /// Closes connection `slot`; the requests still in flight on it fail.
    fn close(&mut self, slot: usize, why: &str, done: &mut Vec<(T, Outcome)>) {
        if let Some(mut conn) = self.conns[slot].take() {
            let _ = self.ready.registry().deregister(&mut conn.sock);
            for (waiting, _) in conn.jobs {
                done.push((waiting.tag, Outcome::Failed(why.to_string())));
            }
        }
    }
}

/// Connections for `max_in_flight` requests, `depth` on each.
fn connections(max_in_flight: usize, depth: usize) -> usize {
    max_in_flight.div_ceil(depth.max(1))
}

/// How far a connection is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Reading {
    /// Not at all (nothing arrived).
    #[default]
    Skip,
    /// Until a short read: what arrives later is a new edge (Linux signals
    /// each arrival), so no read to `WouldBlock`.
    Arrived,
    /// Until it would block or ends: the peer closed, and its end of file
    /// may wait behind the data.
    ToEnd,
}

/// Writes what is queued and reads what arrived on a plain socket (as
/// `reading` says, and while the parser may hold more): (a failure, end
/// of file).
fn plain_io(
    sock: &mut TcpStream,
    out: &mut Vec<u8>,
    (reading, parser, chunk): (Reading, &mut ResponseParser, &mut [u8]),
) -> (Option<String>, bool) {
    while !out.is_empty() {
        match retry(|| sock.write(out)) {
            Ok(Some(0)) => return (Some("connection closed".into()), false),
            Ok(Some(n)) => {
                out.drain(..n);
            }
            Ok(None) => break,
            Err(e) => return (Some(e.to_string()), false),
        }
    }
    if reading == Reading::Skip {
        return (None, false);
    }
    while !parser.is_full() {
        match retry(|| sock.read(chunk)) {
            Ok(Some(0)) => return (None, true),
            Ok(Some(n)) if n < chunk.len() && reading == Reading::Arrived => {
                parser.feed(&chunk[..n]);
                break;
            }
            Ok(Some(n)) => parser.feed(&chunk[..n]),
            Ok(None) => return (None, false),
            Err(e) => return (Some(e.to_string()), false),
        }
    }
    (None, false)
}

#[cfg(test)]
#[path = "http_pool_tests.rs"]
mod tests;
