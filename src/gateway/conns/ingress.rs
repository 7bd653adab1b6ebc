//! The request-head stage: the HTTP request a connection opens with, the
//! answers of the HTTP endpoints, and the checks before an upgrade.

use super::viewer::is_feed;
use super::Conns;
use crate::gateway::app::App;
use crate::gateway::auth_proxy::Verdict;
use crate::gateway::config::REFUSAL_LINGER_MS;
use crate::gateway::conn::{Serves, Stage};
use crate::gateway::http_api::{self, HttpAnswer, HttpRequest};
use crate::gateway::http_cluster;
use crate::gateway::metrics::{RefusalReason, ShellGauges};
use crate::proto::auth::Identity;
use crate::proto::client_id::client_id_str;
use crate::proto::forwarded;
use crate::proto::frame::Decoder;
use crate::proto::handshake::{self, BodyLength, Parsed, Refusal, Request, Upgrade};
use crate::proto::Now;
use log::{debug, warn};

impl Conns {
    pub(super) fn on_request_bytes(&mut self, key: usize, data: &[u8], app: &mut App, now: Now) {
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        let mut held = conn.inbuf.take();
        let bytes: &[u8] = match held.as_mut() {
            Some(buf) => {
                buf.extend_from_slice(data);
                buf
            }
            None => data,
        };
        match handshake::parse(bytes) {
            Parsed::Partial => {
                let buf = held.unwrap_or_else(|| {
                    let mut buf = self.pool.checkout(data.len());
                    buf.extend_from_slice(data);
                    buf
                });
                conn.inbuf = Some(buf);
            }
            Parsed::Invalid(refusal) => {
                if let Some(buf) = held {
                    self.pool.checkin(buf);
                }
                let reason = match refusal {
                    Refusal::HeadersTooLarge => "request head too large",
                    Refusal::UpgradeRequired => "only WebSocket version 13 is supported",
                    _ => "malformed WebSocket upgrade request",
                };
                self.refuse(key, refusal, reason, app, now);
            }
            Parsed::Complete(request, head_len) => {
                let body_len = match &request {
                    Request::Plain {
                        body: BodyLength::Bytes(n),
                        ..
                    } if conn.serves != Serves::WebSocket => *n,
                    _ => 0,
                };
                let received = bytes.len() - head_len;
                if body_len > http_api::MAX_BODY_BYTES {
                    if let Some(buf) = held {
                        self.pool.checkin(buf);
                    }
                    let too_large = HttpAnswer::error(413, "request body too large");
                    return self.answer_http(key, &too_large, app, now);
                }
                if received < body_len {
                    // Wait for the whole body (bounded above).
                    let buf = held.unwrap_or_else(|| {
                        let mut buf = self.pool.checkout(head_len + body_len);
                        buf.extend_from_slice(data);
                        buf
                    });
                    conn.inbuf = Some(buf);
                    return;
                }
                if body_len > 0 {
                    let body = bytes[head_len..head_len + body_len].to_vec();
                    if let Some(buf) = held {
                        self.pool.checkin(buf);
                    }
                    return self.on_plain_request(key, request, &body, app, now);
                }
                let mut rest = bytes[head_len..].to_vec();
                if let Some(buf) = held {
                    self.pool.checkin(buf);
                }
                self.on_request(key, request, app, now);
                if !rest.is_empty() && self.slab.get(key).is_some_and(|c| c.stage.is_open()) {
                    self.on_frame_bytes(key, &mut rest, app, now);
                }
            }
        }
    }

    fn on_request(&mut self, key: usize, request: Request, app: &mut App, now: Now) {
        let serves = self.slab[key].serves;
        match request {
            Request::Plain { .. } => self.on_plain_request(key, request, &[], app, now),
            Request::Upgrade(mut upgrade) if is_feed(serves) => {
                self.upgrade_viewer(key, &mut upgrade, app, now)
            }
            Request::Upgrade(_) if serves == Serves::HttpWhenFull => self.refuse(
                key,
                Refusal::Unavailable,
                "server is full (limits.max_connections)",
                app,
                now,
            ),
            Request::Upgrade(mut upgrade) => match self.admit_upgrade(key, &upgrade, app, now) {
                Ok(None) if self.proxy.is_some() => self.hold_for_proxy(key, upgrade),
                Ok(identity) => self.upgrade(key, &mut upgrade, identity, false, app, now),
                Err((refusal, label, reason)) => {
                    self.refuse_as(key, refusal, label, &reason, app, now)
                }
            },
        }
    }

    /// A request that is not an upgrade: an HTTP endpoint, or 426.
    fn on_plain_request(
        &mut self,
        key: usize,
        request: Request,
        body: &[u8],
        app: &mut App,
        now: Now,
    ) {
        let Request::Plain {
            method,
            path,
            bearer,
            body: length,
        } = request
        else {
            return;
        };
        let serves = self.slab[key].serves;
        let endpoint = match serves {
            Serves::WebSocket => false,
            Serves::Both | Serves::HttpWhenFull => http_api::is_endpoint(&path),
            Serves::Http => true,
        };
        if !endpoint {
            return self.refuse(
                key,
                Refusal::UpgradeRequired,
                "this is a WebSocket endpoint: send an Upgrade request",
                app,
                now,
            );
        }
        let App::Gateway(hub) = &mut *app else {
            return self.refuse(
                key,
                Refusal::NotFound,
                "no HTTP endpoints in this mode",
                app,
                now,
            );
        };
        self.metrics.http_requests += 1;
        let answer = if length == BodyLength::Unsupported {
            HttpAnswer::error(400, "only bodies with one Content-Length are accepted")
        } else {
            let gauges = ShellGauges {
                open_sockets: self.slab.len(),
                max_connections: self.cfg.max_connections,
                pool_lent: self.pool.lent,
                pool_free: self.pool.free_count(),
                uptime_s: self.start.elapsed().as_secs(),
            };
            let req = HttpRequest {
                method: &method,
                path: &path,
                bearer: bearer.as_deref(),
                body,
            };
            if http_cluster::answer_later(&req, hub, (key, self.slab[key].id), now) {
                return self.await_http(key, app, now);
            }
            http_api::answer(&req, hub, &self.metrics, &gauges, now)
        };
        debug!(
            "http {method} {path} from {}: {}",
            self.slab[key].ip, answer.status
        );
        self.answer_http(key, &answer, app, now);
        self.apply_outbox(app, now);
    }

    /// Queues an HTTP answer, then closes like a refusal does.
    pub(super) fn answer_http(&mut self, key: usize, answer: &HttpAnswer, app: &mut App, now: Now) {
        self.answer_and_close(key, &answer.to_bytes(), app, now);
    }

    /// Replaces anything queued with one HTTP answer; once it is written the
    /// write side is shut and the connection drained until EOF or a deadline.
    fn answer_and_close(&mut self, key: usize, response: &[u8], app: &mut App, now: Now) {
        self.request_done(key);
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        conn.out.clear(&mut self.pool);
        conn.out.push_copy(&mut self.pool, &[response]);
        conn.stage = Stage::refusing(now.ms + REFUSAL_LINGER_MS);
        if conn.admitted {
            conn.admitted = false;
            self.admitted -= 1;
        }
        self.mark_dirty(key);
        self.schedule(key, app);
    }

    /// SPEC §3 checks, in order: origin (403), token (401), the rooms of the
    /// path (403), per-address limits (429). Behind a trusted proxy the
    /// client's address comes from its headers first, and the allow list is
    /// checked on it (403).
    fn admit_upgrade(
        &mut self,
        key: usize,
        upgrade: &Upgrade,
        app: &App,
        now: Now,
    ) -> Result<Option<Identity>, (Refusal, RefusalReason, String)> {
        let App::Gateway(hub) = app else {
            return Ok(None);
        };
        let peer = self.slab[key].ip;
        let ip = forwarded::client_ip(
            peer,
            |a| self.cfg.trusted_proxies.allows(a),
            upgrade.forwarded_for.as_deref(),
            upgrade.real_ip.as_deref(),
        );
        if ip != peer {
            debug!("connection {key} from proxy {peer} is for {ip}");
            self.slab[key].ip = ip;
        }
        if self.cfg.trusted_proxies.allows(peer) && !self.cfg.allow.allows(ip) {
            // A trusted proxy's own address skipped the check on accept.
            let reason = "address not allowed (server.websocket.auth.allowed_ip)";
            return Err((
                Refusal::Forbidden,
                RefusalReason::IpNotAllowed,
                reason.into(),
            ));
        }
        // Every upgrade request counts against the hourly budget, refused ones too.
        let per_ip = self.ip_table.on_upgrade(
            ip,
            now.ms,
            self.cfg.max_connects_per_ip_per_hour,
            self.cfg.max_connections_per_ip,
        );
        if let Some(origin) = &upgrade.origin {
            if !self.cfg.origins.allows(origin) {
                let label = RefusalReason::OriginNotAllowed;
                return Err((Refusal::Forbidden, label, "origin not allowed".into()));
            }
        }
        let identity = match &upgrade.token {
            Some(token) => match hub.config().auth.verify(token, now.unix) {
                Ok(identity) => Some(identity),
                Err(reason) => {
                    let label = RefusalReason::InvalidToken;
                    return Err((
                        Refusal::Unauthorized,
                        label,
                        format!("invalid token: {reason}"),
                    ));
                }
            },
            None => None,
        };
        if identity
            .as_ref()
            .is_some_and(|i| !hub.path_allows(i, &upgrade.path))
        {
            let reason = "this token may not join the rooms of this path (rooms.by_path)";
            return Err((
                Refusal::Forbidden,
                RefusalReason::RoomNotAllowed,
                reason.into(),
            ));
        }
        per_ip.map_err(|r| {
            let label = RefusalReason::PerIpLimit;
            (Refusal::TooManyRequests, label, r.reason().to_string())
        })?;
        Ok(identity)
    }

    /// Switches protocols and opens the session; a dashboard `viewer`
    /// (see `viewer.rs`) counts against no per-address WebSocket limit.
    pub(super) fn upgrade(
        &mut self,
        key: usize,
        upgrade: &mut Upgrade,
        identity: Option<Identity>,
        viewer: bool,
        app: &mut App,
        now: Now,
    ) {
        // Compression is negotiated at the upgrade: a reload that turns it
        // on or off applies to new connections only.
        if !self.cfg.compression {
            upgrade.deflate = None;
        }
        let response = handshake::switching_protocols(upgrade);
        self.request_done(key);
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        if upgrade.deflate.is_some() {
            conn.decoder = Decoder::with_compression();
        }
        conn.deflate = upgrade.deflate;
        conn.out.push_copy(&mut self.pool, &[response.as_bytes()]);
        conn.stage = Stage::Open {
            next_ping_ms: now.ms + self.cfg.ping_interval_ms,
        };
        conn.last_rx_ms = now.ms;
        let (id, ip) = (conn.id, conn.ip);
        debug!(
            "client {} from {ip} connected to {}",
            client_id_str(id),
            upgrade.path
        );
        if let App::Gateway(hub) = &mut *app {
            if viewer {
                hub.add_viewer(key);
            } else {
                self.ip_table
                    .opened(ip, now.ms, self.cfg.max_connects_per_ip_per_hour);
                conn.counted_ip = true;
            }
            hub.open(key, id, ip, now, identity, &upgrade.path);
        }
        self.mark_dirty(key);
        self.apply_outbox(app, now);
        self.schedule(key, app);
    }

    /// A handshake without a token waits for the connect proxy (SPEC §11);
    /// its handshake deadline (`auth_timeout_ms`) still runs.
    fn hold_for_proxy(&mut self, key: usize, upgrade: Upgrade) {
        let (Some(conn), Some(link)) = (self.slab.get_mut(key), &self.proxy) else {
            return;
        };
        let headers: serde_json::Map<String, serde_json::Value> = upgrade
            .forwarded
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_str().into()))
            .collect();
        let body = serde_json::json!({
            "ip": conn.ip.to_string(),
            "path": upgrade.path,
            "headers": headers,
        });
        link.borrow_mut()
            .jobs
            .push(((key, conn.id), body.to_string().into_bytes()));
        conn.proxied = Some(Box::new(upgrade));
    }

    /// Whether handshakes wait for the connect proxy to take them.
    pub fn proxy_has_jobs(&self) -> bool {
        self.proxy
            .as_ref()
            .is_some_and(|l| !l.borrow().jobs.is_empty())
    }

    /// Upgrades or refuses the handshakes the connect proxy has judged.
    pub fn apply_proxy_verdicts(&mut self, app: &mut App, now: Now) {
        let Some(link) = &self.proxy else { return };
        let verdicts = std::mem::take(&mut link.borrow_mut().verdicts);
        for ((key, id), verdict) in verdicts {
            let held = self
                .slab
                .get_mut(key)
                .filter(|c| c.id == id)
                .and_then(|c| c.proxied.take());
            let Some(mut upgrade) = held else { continue };
            match verdict {
                Verdict::Accept(identity) => {
                    let allowed = match &*app {
                        App::Gateway(hub) => hub.path_allows(&identity, &upgrade.path),
                        App::Echo => true,
                    };
                    if allowed {
                        self.upgrade(key, &mut upgrade, Some(identity), false, app, now)
                    } else {
                        let reason =
                            "this user may not join the rooms of this path (rooms.by_path)";
                        self.refuse(key, Refusal::Forbidden, reason, app, now)
                    }
                }
                Verdict::Refuse => {
                    let reason = "refused by the connect proxy";
                    self.refuse(key, Refusal::Unauthorized, reason, app, now)
                }
                Verdict::Unavailable => {
                    let reason = "the connect proxy did not answer";
                    self.refuse(key, Refusal::Unavailable, reason, app, now)
                }
            }
        }
    }

    /// Answers an HTTP refusal after reading the request, then closes.
    pub(super) fn refuse(
        &mut self,
        key: usize,
        refusal: Refusal,
        reason: &str,
        app: &mut App,
        now: Now,
    ) {
        self.refuse_as(key, refusal, RefusalReason::of(refusal), reason, app, now);
    }

    /// [`Conns::refuse`], counted under `label`.
    fn refuse_as(
        &mut self,
        key: usize,
        refusal: Refusal,
        label: RefusalReason,
        reason: &str,
        app: &mut App,
        now: Now,
    ) {
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        warn!("refused {}: {} {reason}", conn.ip, refusal.status());
        self.metrics.refused(label);
        let response = handshake::refusal_response(refusal, reason);
        self.answer_and_close(key, response.as_bytes(), app, now);
    }
}
