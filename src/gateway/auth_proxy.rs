//! The connect proxy (SPEC §11 `auth.proxy_url`): a handshake without a
//! token is held while its IP, path and a few headers are POSTed to the web
//! app; a 200 `{"sub",...}` authenticates it as a token would, 401/403
//! refuse it (401), no answer within `auth_timeout_ms` refuses it (503).
//! The connection set hands jobs over and takes verdicts back through a
//! shared [`ProxyLink`]; the requests run on an [`HttpPool`].

use super::app::App;
use super::backend::Bearer;
use super::endpoint::Endpoint;
use super::http_pool::{HttpPool, HttpTarget, Outcome};
use crate::proto::auth::Identity;
use crate::proto::Now;
use log::warn;
use mio::event::Event;
use mio::{Registry, Token};
use std::cell::RefCell;
use std::io;
use std::rc::Rc;

/// Handshakes checked at once.
const PROXY_CONNECTIONS: usize = 16;
/// Longest answer read from the proxy.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// What the proxy said of one handshake.
#[derive(Debug)]
pub enum Verdict {
    Accept(Identity),
    Refuse,
    Unavailable,
}

/// A held handshake: its connection key and id (a reused key has a new id).
pub type Held = (usize, u64);

/// Between the connection set and the proxy endpoint.
#[derive(Debug, Default)]
pub struct ProxyLink {
    pub jobs: Vec<(Held, Vec<u8>)>,
    pub verdicts: Vec<(Held, Verdict)>,
}

pub type SharedProxyLink = Rc<RefCell<ProxyLink>>;

pub struct AuthProxy {
    link: SharedProxyLink,
    pool: HttpPool<Held>,
    bearer: Bearer,
}

impl AuthProxy {
    pub fn new(
        target: HttpTarget,
        timeout_ms: u64,
        link: SharedProxyLink,
        registry: &Registry,
        token: Token,
    ) -> io::Result<AuthProxy> {
        let bounds = (MAX_ANSWER_BYTES, timeout_ms);
        Ok(AuthProxy {
            link,
            pool: HttpPool::new(target, (PROXY_CONNECTIONS, 1), bounds, registry, token)?,
            bearer: Bearer::default(),
        })
    }

    fn pump(&mut self, app: &mut App, now: Now) -> Option<u64> {
        let jobs = std::mem::take(&mut self.link.borrow_mut().jobs);
        for (held, body) in jobs {
            self.pool.submit(held, body);
        }
        let mut done = Vec::new();
        self.pool.expire(now.ms, &mut done);
        let bearer = self.bearer.get(app, now);
        self.pool.pump(bearer, now.ms, &mut done);
        let mut link = self.link.borrow_mut();
        for (held, outcome) in done {
            let verdict = match outcome {
                Outcome::Answer(answer) if answer.status == 200 => {
                    let identity = app
                        .hub_mut()
                        .and_then(|hub| hub.config().auth.proxied_identity(&answer.body, now.unix));
                    match identity {
                        Some(identity) => Verdict::Accept(identity),
                        None => {
                            warn!("connect proxy: a 200 answer without a valid {{\"sub\",...}}");
                            Verdict::Unavailable
                        }
                    }
                }
                Outcome::Answer(answer) if matches!(answer.status, 401 | 403) => Verdict::Refuse,
                Outcome::Answer(answer) => {
                    warn!("connect proxy: answered {}", answer.status);
                    Verdict::Unavailable
                }
                Outcome::Failed(why) => {
                    warn!("connect proxy: {why}");
                    Verdict::Unavailable
                }
                Outcome::TimedOut => Verdict::Unavailable,
            };
            link.verdicts.push((held, verdict));
        }
        self.pool.deadline()
    }
}

impl Endpoint for AuthProxy {
    fn on_event(&mut self, _event: &Event, app: &mut App, now: Now) -> Option<u64> {
        self.pump(app, now)
    }

    /// Also called when the connection set queued new jobs.
    fn on_timer(&mut self, app: &mut App, now: Now) -> Option<u64> {
        self.pump(app, now)
    }
}
