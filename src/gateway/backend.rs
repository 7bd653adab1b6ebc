//! An HTTP backend as a host (SPEC §11, like Centrifugo's RPC proxy): each
//! `host.request` the hub sends this bridged session becomes `POST URL` on a
//! kept-alive connection (at most `max_in_flight` at once, more wait), and
//! the answer comes back as its `host.reply`. Notices it asked for are POSTed
//! too, best effort. The connections are an [`HttpPool`] on this endpoint's token.

use super::app::App;
use super::endpoint::Endpoint;
use super::http_pool::{HttpPool, HttpTarget, Outcome};
use crate::proto::auth::{MintRequest, MAX_TOKEN_BYTES};
use crate::proto::bounds::{host_request_bytes_bound, session_bytes_bound};
use crate::proto::host_link::MAX_PENDING_PER_HOST;
use crate::proto::http_response::Response;
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use log::{debug, info, warn};
use mio::event::Event;
use mio::{Registry, Token};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::io;

/// Notices waiting for a connection, at most (more are dropped: best effort).
const MAX_WAITING_NOTICES: usize = 1024;
/// Lifetime of the bearer token sent to backends.
const BEARER_TTL_S: u64 = 60;

/// What a backend host is started with.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub name: String,
    pub target: HttpTarget,
    pub events: Value,
    pub notify: Vec<String>,
    pub max_in_flight: usize,
    /// Requests pipelined on one kept-alive connection at most (1: none).
    pub pipeline: usize,
    pub permissions: Vec<String>,
    pub max_message_bytes: usize,
    /// What may wait for a connection, in bytes (requests and notices).
    pub max_outbound_bytes: usize,
    pub request_timeout_ms: u64,
}

/// Worst-case bytes a `url` host holds (SPEC §8 addition), for its
/// settings: the endpoint and its session in the core, its pool's
/// `max_in_flight` requests on connections of `pipeline` each (to a URL of
/// `url_bytes`, with TLS when `tls`), and what waits for them: bodies of at most `max_outbound_bytes`,
/// in at most as many requests as the core lets a host have pending, and
/// notices.
pub fn bytes_bound(
    in_flight: (usize, usize),
    (max_message_bytes, max_outbound_bytes): (usize, usize),
    url_bytes: usize,
    tls: bool,
) -> usize {
    let request = host_request_bytes_bound(max_message_bytes);
    let entries = MAX_PENDING_PER_HOST + MAX_WAITING_NOTICES;
    std::mem::size_of::<BackendHost>()
        + session_bytes_bound()
        + MAX_TOKEN_BYTES // the bearer token
        + HttpPool::<Job>::bytes_bound(in_flight, max_message_bytes, request, url_bytes, tls)
        + HttpPool::<Job>::queue_bytes_bound(entries, max_outbound_bytes)
}

/// What a POST was for.
enum Job {
    Request(u64),
    Notice,
}

/// The gateway's JWT for backends (`sub` "tether", permission `host`, 60 s),
/// minted again when half its life is gone.
#[derive(Default)]
pub struct Bearer {
    current: Option<(String, u64)>,
}

impl Bearer {
    pub fn get(&mut self, app: &mut App, now: Now) -> &str {
        let fresh = matches!(&self.current, Some((_, exp)) if now.unix + BEARER_TTL_S / 2 < *exp);
        if !fresh {
            self.current = Self::mint(app, now);
        }
        self.current.as_ref().map_or("", |(token, _)| token)
    }

    fn mint(app: &mut App, now: Now) -> Option<(String, u64)> {
        let request = MintRequest {
            sub: "tether".into(),
            permissions: vec!["host".into()],
            rooms: Vec::new(),
            role: None,
            ttl_s: BEARER_TTL_S,
        };
        app.hub_mut()?.config().auth.mint(&request, now.unix).ok()
    }
}

pub struct BackendHost {
    name: String,
    events: Value,
    notify: Vec<String>,
    permissions: Vec<String>,
    key: ConnKey,
    pool: HttpPool<Job>,
    started: bool,
    /// When to open the session (again).
    start_at_ms: u64,
    bearer: Bearer,
    max_outbound_bytes: usize,
    /// More than `max_outbound_bytes` wait: the core routes no request here.
    congested: bool,
}

impl BackendHost {
    pub fn new(
        cfg: BackendConfig,
        key: ConnKey,
        registry: &Registry,
        token: Token,
    ) -> io::Result<BackendHost> {
        let bounds = (cfg.max_message_bytes, cfg.request_timeout_ms);
        Ok(BackendHost {
            pool: HttpPool::new(
                cfg.target,
                (cfg.max_in_flight, cfg.pipeline),
                bounds,
                registry,
                token,
            )?,
            name: cfg.name,
            events: cfg.events,
            notify: cfg.notify,
            permissions: cfg.permissions,
            key,
            started: false,
            start_at_ms: 0,
            bearer: Bearer::default(),
            max_outbound_bytes: cfg.max_outbound_bytes,
            congested: false,
        })
    }

    /// Opens its session and registers its events.
    fn start(&mut self, app: &mut App, now: Now) {
        self.started = true;
        let Some(hub) = app.hub_mut() else { return };
        hub.open_bridged(self.key, 1, &self.name, &self.permissions, now);
        let register = json!({"event": "host.register", "data": {"events": self.events}});
        hub.on_text(self.key, now, &register.to_string());
        let target = self.pool.target();
        let scheme = if target.tls.is_some() {
            "https"
        } else {
            "http"
        };
        info!(
            "host {}: POSTing to {scheme}://{}{}",
            self.name, target.authority, target.path
        );
    }

    /// Runs the pool (its ready connections too when `ready`: not for a
    /// new request, see `HttpPool::send_waiting`) and relays what finished.
    fn pump(&mut self, ready: bool, app: &mut App, now: Now) -> Option<u64> {
        let mut done = Vec::new();
        self.pool.expire(now.ms, &mut done);
        let bearer = self.bearer.get(app, now);
        if ready {
            self.pool.pump(bearer, now.ms, &mut done);
        } else {
            self.pool.send_waiting(bearer, now.ms, &mut done);
        }
        for (job, outcome) in done {
            self.finish(job, outcome, app, now);
        }
        // Requests flow again once half of the backlog went out.
        if self.congested && self.pool.queued_bytes() <= self.max_outbound_bytes / 2 {
            self.set_congested(false, app);
        }
        self.pool.deadline()
    }

    fn set_congested(&mut self, congested: bool, app: &mut App) {
        self.congested = congested;
        if congested {
            warn!(
                "host {}: over limits.max_outbound_bytes of requests wait for the backend: requests to it fail with host_unavailable",
                self.name
            );
        } else {
            info!("host {}: the backend caught up; requests flow", self.name);
        }
        if let Some(hub) = app.hub_mut() {
            hub.set_host_congested(self.key, congested);
        }
    }

    /// Whether `len` more bytes may wait for a connection.
    fn has_room(&self, len: usize) -> bool {
        self.pool.queued_bytes() + len <= self.max_outbound_bytes
    }

    /// Queues request `id`, or past the bound answers it `host_unavailable`
    /// at once (the client hears; nothing waits beyond the bound).
    fn request(&mut self, id: u64, data: &str, app: &mut App, now: Now) {
        if self.has_room(data.len()) {
            self.pool.submit(Job::Request(id), data.as_bytes().to_vec());
            return;
        }
        if !self.congested {
            self.set_congested(true, app);
        }
        let reply = failure(id, "host_unavailable", "the backend is behind; retry later");
        if let Some(hub) = app.hub_mut() {
            hub.on_text(self.key, now, &reply);
        }
    }

    /// Relays the outcome of a request as its `host.reply`.
    fn finish(&mut self, job: Job, outcome: Outcome, app: &mut App, now: Now) {
        let Job::Request(id) = job else {
            if let Outcome::Failed(why) = outcome {
                debug!("host {}: notice not delivered: {why}", self.name);
            }
            return;
        };
        let reply = match outcome {
            Outcome::Answer(response) => self.answer(id, &response),
            Outcome::Failed(why) => {
                warn!("host {}: request {id} failed: {why}", self.name);
                failure(id, "host_unavailable", "the backend did not answer")
            }
            Outcome::TimedOut => {
                warn!("host {}: request {id} timed out", self.name);
                failure(id, "host_timeout", "the backend did not answer in time")
            }
        };
        if let Some(hub) = app.hub_mut() {
            hub.on_text(self.key, now, &reply);
        }
    }

    /// The `host.reply` of a backend's response: its event and data are
    /// passed on as they came (valid JSON, not decoded and encoded again).
    fn answer(&self, id: u64, response: &Response) -> String {
        if !(200..300).contains(&response.status) {
            warn!(
                "host {}: request {id} answered {}",
                self.name, response.status
            );
            return failure(id, "host_unavailable", "the backend refused the request");
        }
        // An object: serde would also read a struct from an array.
        let object = response.body.trim_ascii_start().starts_with(b"{");
        let parsed = serde_json::from_slice::<Answer>(&response.body).ok();
        let Some(answer) = parsed.filter(|_| object) else {
            warn!(
                "host {}: request {id}: the answer is not a JSON object",
                self.name
            );
            return failure(id, "host_unavailable", "the backend's answer is not JSON");
        };
        let error = answer.error.and_then(|raw| {
            let error: Value = serde_json::from_str(raw.get()).ok()?;
            error["code"].is_string().then_some(error)
        });
        if let Some(error) = error {
            return json!({"event": "host.reply", "data": {"id": id, "error": error}}).to_string();
        }
        match answer.event {
            Some(event) if event.get().starts_with('"') => {
                let data = answer.data.map_or("null", |d| d.get());
                let event = event.get();
                format!(
                    "{{\"event\":\"host.reply\",\"data\":{{\"id\":{id},\"event\":{event},\"data\":{data}}}}}"
                )
            }
            _ => failure(id, "host_unavailable", "the backend's answer has no event"),
        }
    }
}

/// A backend's answer, its parts left as raw JSON.
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

/// What the gateway sends its bridged session: the event, and the data
/// left as raw JSON (a request's data is the body POSTed as it is).
#[derive(Deserialize)]
struct ToHost<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// The id of a `host.request`'s data.
#[derive(Deserialize)]
struct RequestId {
    id: u64,
}

/// A `host.reply` with an error, as text.
fn failure(id: u64, code: &str, message: &str) -> String {
    json!({"event": "host.reply", "data": {"id": id, "error": {"code": code, "message": message}}})
        .to_string()
}

impl Endpoint for BackendHost {
    fn on_event(&mut self, _event: &Event, app: &mut App, now: Now) -> Option<u64> {
        // Every connection shares the token: the pool serves them all.
        self.pump(true, app, now)
    }

    fn on_timer(&mut self, app: &mut App, now: Now) -> Option<u64> {
        if !self.started && now.ms >= self.start_at_ms {
            self.start(app, now);
        }
        self.pump(true, app, now)
    }

    fn on_message(&mut self, body: &[u8], app: &mut App, now: Now) -> Option<u64> {
        let Ok(message) = serde_json::from_slice::<ToHost>(body) else {
            return self.pool.deadline();
        };
        let event = message.event.as_ref();
        match event {
            "host.request" => {
                let data = message.data.map_or("null", |d| d.get());
                if let Ok(request) = serde_json::from_str::<RequestId>(data) {
                    self.request(request.id, data, app, now);
                }
                // With every connection busy it waits: nothing to look at now.
                if !self.pool.has_free_slot() {
                    return self.pool.deadline();
                }
            }
            "host.client_joined" | "host.client_left" => {
                let wanted = self.notify.iter().any(|n| event.ends_with(n.as_str()));
                let waiting = self
                    .pool
                    .waiting()
                    .filter(|j| matches!(j, Job::Notice))
                    .count();
                if wanted && waiting < MAX_WAITING_NOTICES && self.has_room(body.len()) {
                    self.pool.submit(Job::Notice, body.to_vec());
                }
            }
            "error" => warn!(
                "host {}: the gateway answered {}",
                self.name,
                String::from_utf8_lossy(body)
            ),
            _ => {}
        }
        self.pump(false, app, now)
    }

    fn on_close(&mut self, code: u16, _app: &mut App, now: Now) -> Option<u64> {
        warn!(
            "host {}: the gateway ended its session ({code}); registering again in 1 s",
            self.name
        );
        self.started = false;
        self.start_at_ms = now.ms + 1_000;
        Some(self.start_at_ms)
    }
}
