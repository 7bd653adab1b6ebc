//! An HTTP backend as a host (SPEC §11, like Centrifugo's RPC proxy): each
//! `host.request` the hub sends this bridged session becomes `POST URL` on a
//! kept-alive connection (at most `max_in_flight` at once, more wait), and
//! the answer comes back as its `host.reply`. Notices it asked for are POSTed
//! too, best effort. Connections are mio sockets on this endpoint's token.

use super::app::App;
use super::endpoint::Endpoint;
use super::nonblocking::retry;
use crate::proto::auth::MintRequest;
use crate::proto::http_response::{write_post, Parsed, Response, ResponseParser};
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use log::{debug, info, warn};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::SocketAddr;

/// Notices waiting for a connection, at most (more are dropped: best effort).
const MAX_WAITING_NOTICES: usize = 1024;
/// Lifetime of the bearer token sent to the backend.
const BEARER_TTL_S: u64 = 60;

/// What a backend host is started with.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub name: String,
    pub addr: SocketAddr,
    /// The `Host` header: the URL's authority.
    pub authority: String,
    pub path: String,
    pub events: Value,
    pub notify: Vec<String>,
    pub max_in_flight: usize,
    pub permissions: Vec<String>,
    pub max_message_bytes: usize,
    pub request_timeout_ms: u64,
}

/// Splits `http://HOST[:PORT]/PATH` into authority, host, port and path.
pub fn split_url(url: &str) -> Option<(String, String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().ok()?),
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return None;
    }
    Some((authority.into(), host.into(), port, path.into()))
}

enum Job {
    Request { id: u64, body: Vec<u8> },
    Notice { body: Vec<u8> },
}

struct Conn {
    sock: TcpStream,
    out: Vec<u8>,
    parser: ResponseParser,
    job: Option<(Job, u64)>,
    /// Carried a response already: a failure before any byte may be the
    /// backend closing an idle connection, so the job is tried once more.
    reused: bool,
}

pub struct BackendHost {
    cfg: BackendConfig,
    key: ConnKey,
    token: Token,
    registry: Registry,
    conns: Vec<Option<Conn>>,
    queue: VecDeque<(Job, bool)>,
    started: bool,
    /// When to open the session (again).
    start_at_ms: u64,
    bearer: Option<(String, u64)>,
}

impl BackendHost {
    pub fn new(cfg: BackendConfig, key: ConnKey, registry: Registry, token: Token) -> BackendHost {
        let slots = cfg.max_in_flight;
        BackendHost {
            cfg,
            key,
            token,
            registry,
            conns: (0..slots).map(|_| None).collect(),
            queue: VecDeque::new(),
            started: false,
            start_at_ms: 0,
            bearer: None,
        }
    }

    /// Opens its session and registers its events.
    fn start(&mut self, app: &mut App, now: Now) {
        self.started = true;
        let Some(hub) = app.hub_mut() else { return };
        hub.open_bridged(self.key, 1, &self.cfg.name, &self.cfg.permissions, now);
        let register = json!({"event": "host.register", "data": {"events": self.cfg.events}});
        hub.on_text(self.key, now, &register.to_string());
        info!(
            "host {}: POSTing to http://{}{}",
            self.cfg.name, self.cfg.authority, self.cfg.path
        );
    }

    /// A JWT for the backend: `sub` "tether", permission `host`, 60 s.
    fn bearer(&mut self, app: &mut App, now: Now) -> String {
        if let Some((token, exp)) = &self.bearer {
            if now.unix + BEARER_TTL_S / 2 < *exp {
                return token.clone();
            }
        }
        let request = MintRequest {
            sub: "tether".into(),
            permissions: vec!["host".into()],
            rooms: Vec::new(),
            role: None,
            ttl_s: BEARER_TTL_S,
        };
        let minted = app
            .hub_mut()
            .map(|hub| hub.config().auth.mint(&request, now.unix));
        match minted {
            Some(Ok((token, exp))) => {
                self.bearer = Some((token.clone(), exp));
                token
            }
            _ => String::new(),
        }
    }

    /// Starts waiting jobs on free connections.
    fn dispatch(&mut self, app: &mut App, now: Now) {
        while !self.queue.is_empty() {
            let idle = self
                .conns
                .iter()
                .position(|c| c.as_ref().is_some_and(|c| c.job.is_none()));
            let slot = idle.or_else(|| self.conns.iter().position(Option::is_none));
            let Some(slot) = slot else { return };
            let Some((job, retried)) = self.queue.pop_front() else {
                return;
            };
            if self.conns[slot].is_none() {
                match TcpStream::connect(self.cfg.addr) {
                    Ok(mut sock) => {
                        let interest = Interest::READABLE | Interest::WRITABLE;
                        if let Err(e) = self.registry.register(&mut sock, self.token, interest) {
                            self.finish(job, Err(&format!("cannot register: {e}")), app, now);
                            continue;
                        }
                        let _ = sock.set_nodelay(true);
                        self.conns[slot] = Some(Conn {
                            sock,
                            out: Vec::new(),
                            parser: ResponseParser::new(self.cfg.max_message_bytes),
                            job: None,
                            reused: false,
                        });
                    }
                    Err(e) => {
                        self.finish(job, Err(&format!("cannot connect: {e}")), app, now);
                        continue;
                    }
                }
            }
            let bearer = self.bearer(app, now);
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            let body = match &job {
                Job::Request { body, .. } | Job::Notice { body } => body,
            };
            write_post(
                &mut conn.out,
                &self.cfg.authority,
                &self.cfg.path,
                &bearer,
                body,
            );
            // A retried job is not retried again.
            conn.reused &= !retried;
            conn.job = Some((job, now.ms + self.cfg.request_timeout_ms));
            self.drive(slot, app, now);
        }
    }

    /// Writes and reads connection `slot`; settles its job when answered.
    fn drive(&mut self, slot: usize, app: &mut App, now: Now) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let mut failure = None;
        while !conn.out.is_empty() {
            match retry(|| conn.sock.write(&conn.out)) {
                Ok(Some(0)) => failure = Some("connection closed".to_string()),
                Ok(Some(n)) => {
                    conn.out.drain(..n);
                    continue;
                }
                Ok(None) => {}
                Err(e) => failure = Some(e.to_string()),
            }
            break;
        }
        let mut eof = false;
        let mut chunk = [0u8; 16 * 1024];
        while failure.is_none() {
            match retry(|| conn.sock.read(&mut chunk)) {
                Ok(Some(0)) => eof = true,
                Ok(Some(n)) => {
                    conn.parser.feed(&chunk[..n]);
                    continue;
                }
                Ok(None) => {}
                Err(e) => failure = Some(e.to_string()),
            }
            break;
        }
        if conn.job.is_none() {
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
        let Some((job, _)) = conn.job.take() else {
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
                self.finish(job, Ok(response), app, now);
            }
            Err(why) => {
                let again = conn.reused && answered_nothing;
                self.close(slot);
                if again {
                    debug!(
                        "host {}: kept-alive connection failed ({why}); retrying",
                        self.cfg.name
                    );
                    self.queue.push_front((job, true));
                } else {
                    self.finish(job, Err(&why), app, now);
                }
            }
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(mut conn) = self.conns[slot].take() {
            let _ = self.registry.deregister(&mut conn.sock);
        }
    }

    /// Relays the outcome of a request as its `host.reply`.
    fn finish(&mut self, job: Job, outcome: Result<Response, &str>, app: &mut App, now: Now) {
        let Job::Request { id, .. } = job else {
            if let Err(why) = outcome {
                debug!("host {}: notice not delivered: {why}", self.cfg.name);
            }
            return;
        };
        let data = match outcome {
            Ok(response) => self.answer(id, &response),
            Err(why) => {
                warn!("host {}: request {id} failed: {why}", self.cfg.name);
                failure(id, "host_unavailable", "the backend did not answer")
            }
        };
        let reply = json!({"event": "host.reply", "data": data});
        if let Some(hub) = app.hub_mut() {
            hub.on_text(self.key, now, &reply.to_string());
        }
    }

    /// The `host.reply` data of a backend's response.
    fn answer(&self, id: u64, response: &Response) -> Value {
        if !(200..300).contains(&response.status) {
            warn!(
                "host {}: request {id} answered {}",
                self.cfg.name, response.status
            );
            return failure(id, "host_unavailable", "the backend refused the request");
        }
        let parsed: Option<Value> = serde_json::from_slice(&response.body).ok();
        match parsed {
            Some(Value::Object(mut answer)) => {
                if let Some(error) = answer.get("error").filter(|e| e["code"].is_string()) {
                    return json!({"id": id, "error": error});
                }
                if answer.get("event").is_some_and(Value::is_string) {
                    let data = answer.remove("data").unwrap_or(Value::Null);
                    return json!({"id": id, "event": answer["event"], "data": data});
                }
                failure(id, "host_unavailable", "the backend's answer has no event")
            }
            _ => {
                warn!(
                    "host {}: request {id}: the answer is not a JSON object",
                    self.cfg.name
                );
                failure(id, "host_unavailable", "the backend's answer is not JSON")
            }
        }
    }

    fn deadline(&self) -> Option<u64> {
        self.conns
            .iter()
            .flatten()
            .filter_map(|c| c.job.as_ref().map(|(_, at)| *at))
            .min()
    }
}

fn failure(id: u64, code: &str, message: &str) -> Value {
    json!({"id": id, "error": {"code": code, "message": message}})
}

impl Endpoint for BackendHost {
    fn on_event(&mut self, _event: &Event, app: &mut App, now: Now) -> Option<u64> {
        // Every connection shares the token: serve them all.
        for slot in 0..self.conns.len() {
            self.drive(slot, app, now);
        }
        self.dispatch(app, now);
        self.deadline()
    }

    fn on_timer(&mut self, app: &mut App, now: Now) -> Option<u64> {
        if !self.started && now.ms >= self.start_at_ms {
            self.start(app, now);
        }
        for slot in 0..self.conns.len() {
            let late = self.conns[slot]
                .as_ref()
                .and_then(|c| c.job.as_ref())
                .is_some_and(|(_, at)| now.ms >= *at);
            if !late {
                continue;
            }
            let job = self.conns[slot].as_mut().and_then(|c| c.job.take());
            self.close(slot);
            if let Some((Job::Request { id, .. }, _)) = job {
                warn!("host {}: request {id} timed out", self.cfg.name);
                let data = failure(id, "host_timeout", "the backend did not answer in time");
                let reply = json!({"event": "host.reply", "data": data});
                if let Some(hub) = app.hub_mut() {
                    hub.on_text(self.key, now, &reply.to_string());
                }
            }
        }
        self.dispatch(app, now);
        self.deadline()
    }

    fn on_message(&mut self, body: &[u8], app: &mut App, now: Now) -> Option<u64> {
        let Ok(message) = serde_json::from_slice::<Value>(body) else {
            return self.deadline();
        };
        let event = message["event"].as_str().unwrap_or("");
        match event {
            "host.request" => {
                if let Some(id) = message["data"]["id"].as_u64() {
                    let body = message["data"].to_string().into_bytes();
                    self.queue.push_back((Job::Request { id, body }, false));
                }
            }
            "host.client_joined" | "host.client_left" => {
                let wanted = self.cfg.notify.iter().any(|n| event.ends_with(n.as_str()));
                let waiting = self
                    .queue
                    .iter()
                    .filter(|(j, _)| matches!(j, Job::Notice { .. }))
                    .count();
                if wanted && waiting < MAX_WAITING_NOTICES {
                    self.queue.push_back((
                        Job::Notice {
                            body: body.to_vec(),
                        },
                        false,
                    ));
                }
            }
            "error" => warn!("host {}: the gateway answered {message}", self.cfg.name),
            _ => {}
        }
        self.dispatch(app, now);
        self.deadline()
    }

    fn on_close(&mut self, code: u16, _app: &mut App, now: Now) -> Option<u64> {
        warn!(
            "host {}: the gateway ended its session ({code}); registering again in 1 s",
            self.cfg.name
        );
        self.started = false;
        self.start_at_ms = now.ms + 1_000;
        Some(self.start_at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls_split() {
        let split = split_url;
        assert_eq!(
            split("http://127.0.0.1:8000/tether/"),
            Some((
                "127.0.0.1:8000".into(),
                "127.0.0.1".into(),
                8000,
                "/tether/".into()
            ))
        );
        assert_eq!(
            split("http://example.com"),
            Some(("example.com".into(), "example.com".into(), 80, "/".into()))
        );
        assert_eq!(
            split("http://[::1]:81/x?y"),
            Some(("[::1]:81".into(), "::1".into(), 81, "/x?y".into()))
        );
        assert_eq!(split("https://x/"), None);
        assert_eq!(split("http:///x"), None);
    }
}
