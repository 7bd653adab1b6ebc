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
    job: Option<(Waiting<T>, u64)>,
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
    marks: Vec<bool>,
    chunk: Box<[u8]>,
    max_body: usize,
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
    /// At most `slots` connections (requests in flight) at once; events
    /// come to the loop's `registry` under `token`.
    pub fn new(
        target: HttpTarget,
        slots: usize,
        (max_body, timeout_ms): (usize, u64),
        registry: &Registry,
        token: Token,
    ) -> io::Result<HttpPool<T>> {
        let ready = Poll::new()?;
        registry.register(&mut SourceFd(&ready.as_raw_fd()), token, Interest::READABLE)?;
        Ok(HttpPool {
            target,
            ready,
            events: Events::with_capacity(slots.max(1)),
            marks: vec![false; slots],
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            max_body,
            timeout_ms,
            conns: (0..slots).map(|_| None).collect(),
            queue: VecDeque::new(),
            queued_bytes: 0,
        })
    }

    /// Worst-case bytes a pool holds (SPEC §8 addition), its queue aside
    /// (its user bounds what waits): the read buffer and the poll's events;
    /// per connection its state, the request being written (`request_bytes`
    /// of body, the head, the bearer token, the URL) and the response (raw
    /// bytes, and the body copied out of them), with TLS when `tls`.
    pub fn bytes_bound(
        slots: usize,
        max_body: usize,
        request_bytes: usize,
        url_bytes: usize,
        tls: bool,
    ) -> usize {
        let request = request_bytes + REQUEST_HEAD_BYTES + MAX_TOKEN_BYTES + url_bytes;
        let per_conn = std::mem::size_of::<Option<PoolConn<T>>>()
            + grown_vec_bytes(request)
            + request_bytes + ALLOC_SLACK // the body kept for a retry
            + grown_vec_bytes(raw_bytes_bound(max_body))
            + max_body
            + ALLOC_SLACK
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

    /// Whether a request would be sent at once (a connection is idle or
    /// may be opened).
    pub fn has_free_slot(&self) -> bool {
        self.conns
            .iter()
            .any(|c| c.as_ref().is_none_or(|c| c.job.is_none()))
    }

    /// Whether requests wait or are in flight.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.conns.iter().flatten().all(|c| c.job.is_none())
    }

    /// Serves every connection, then starts waiting requests on free ones;
    /// finished requests go to `done`.
    pub fn pump(&mut self, bearer: &str, now_ms: u64, done: &mut Vec<(T, Outcome)>) {
        self.mark_ready();
        for slot in 0..self.conns.len() {
            if std::mem::take(&mut self.marks[slot]) {
                self.drive(slot, true, done);
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
                self.marks.iter_mut().for_each(|m| *m = true);
                return;
            }
            let mut seen = 0;
            for event in self.events.iter() {
                seen += 1;
                if let Some(mark) = self.marks.get_mut(event.token().0) {
                    *mark = true;
                }
            }
            if seen < self.events.capacity() {
                return;
            }
        }
    }

    /// Requests past their deadline end `TimedOut` (their connection closed).
    pub fn expire(&mut self, now_ms: u64, done: &mut Vec<(T, Outcome)>) {
        for slot in 0..self.conns.len() {
            let late = self.conns[slot]
                .as_ref()
                .and_then(|c| c.job.as_ref())
                .is_some_and(|(_, at)| now_ms >= *at);
            if late {
                let job = self.conns[slot].as_mut().and_then(|c| c.job.take());
                self.close(slot);
                if let Some((waiting, _)) = job {
                    done.push((waiting.tag, Outcome::TimedOut));
                }
            }
        }
    }

    /// The earliest deadline of a request in flight.
    pub fn deadline(&self) -> Option<u64> {
        self.conns
            .iter()
            .flatten()
            .filter_map(|c| c.job.as_ref().map(|(_, at)| *at))
            .min()
    }

    fn dispatch(&mut self, bearer: &str, now_ms: u64, done: &mut Vec<(T, Outcome)>) {
        while !self.queue.is_empty() {
            let idle = self
                .conns
                .iter()
                .position(|c| c.as_ref().is_some_and(|c| c.job.is_none()));
            let slot = idle.or_else(|| self.conns.iter().position(Option::is_none));
            let Some(slot) = slot else { return };
            let Some(waiting) = self.queue.pop_front() else {
                return;
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
            conn.job = Some((waiting, now_ms + self.timeout_ms));
            // Only written: the answer is not there yet, and its arrival is
            // an event of its own (a read now would be one `EAGAIN` per request).
            self.drive(slot, false, done);
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
            parser: ResponseParser::new(self.max_body),
            job: None,
            reused: false,
        })
    }

    /// Writes and (when `read`) reads connection `slot`; settles its
    /// request when answered.
    fn drive(&mut self, slot: usize, read: bool, done: &mut Vec<(T, Outcome)>) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let chunk = &mut self.chunk;
        let (failure, eof) = match conn.tls.as_deref_mut() {
            None => plain_io(
                &mut conn.sock,
                &mut conn.out,
                read.then_some((&mut conn.parser, chunk)),
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
        if conn.job.is_none() {
            // An idle connection that closes or talks out of turn is dropped.
            if eof || failure.is_some() || !conn.parser.is_empty() {
                self.close(slot);
            }
            return;
        }
        let verdict = match failure {
            Some(why) => Err(why),
            None => match conn.parser.parse(eof) {
                Parsed::Partial => return,
                Parsed::Done(response) => Ok(response),
                Parsed::Bad(why) => Err(why.to_string()),
            },
        };
        let Some((mut waiting, _)) = conn.job.take() else {
            return;
        };
        let answered_nothing = conn.parser.is_empty();
        conn.parser.reset();
        match verdict {
            Ok(response) => {
                if response.keep_alive {
                    conn.reused = true;
                } else {
                    self.close(slot);
                }
                done.push((waiting.tag, Outcome::Answer(response)));
            }
            Err(why) => {
                let again = conn.reused && answered_nothing;
                self.close(slot);
                if again {
                    debug!("a kept-alive connection failed ({why}); retrying");
                    waiting.retried = true;
                    self.queued_bytes += waiting.body.len();
                    self.queue.push_front(waiting);
                } else {
                    done.push((waiting.tag, Outcome::Failed(why)));
                }
            }
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(mut conn) = self.conns[slot].take() {
            let _ = self.ready.registry().deregister(&mut conn.sock);
        }
    }
}

/// Writes what is queued and, given a parser, reads what arrived on a
/// plain socket (until it would block, or the parser holds all it may):
/// (a failure, end of file).
fn plain_io(
    sock: &mut TcpStream,
    out: &mut Vec<u8>,
    reader: Option<(&mut ResponseParser, &mut [u8])>,
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
    let Some((parser, chunk)) = reader else {
        return (None, false);
    };
    while !parser.is_full() {
        match retry(|| sock.read(chunk)) {
            Ok(Some(0)) => return (None, true),
            // A short read took all there was: what arrives later is a new
            // edge (Linux signals each arrival), so no read to `WouldBlock`.
            Ok(Some(n)) if n < chunk.len() => {
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
mod tests {
    use super::split_url;

    #[test]
    fn urls_split() {
        assert_eq!(
            split_url("http://127.0.0.1:8000/tether/"),
            Some((
                "127.0.0.1:8000".into(),
                "127.0.0.1".into(),
                8000,
                "/tether/".into()
            ))
        );
        assert_eq!(
            split_url("http://example.com"),
            Some(("example.com".into(), "example.com".into(), 80, "/".into()))
        );
        assert_eq!(
            split_url("http://[::1]:81/x?y"),
            Some(("[::1]:81".into(), "::1".into(), 81, "/x?y".into()))
        );
        assert_eq!(
            split_url("https://x/"),
            Some(("x".into(), "x".into(), 443, "/".into()))
        );
        assert_eq!(split_url("ftp://x/"), None);
        assert_eq!(split_url("http:///x"), None);
    }
}
