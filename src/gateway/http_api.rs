//! The HTTP endpoints of SPEC §7: `/health`, `/metrics`, `/api/connections`
//! and `/api/publish`; for SPEC §14 the embedded files (`/tether.js`, the
//! dashboard), `/api/rooms` and `/api/kick`. A request in, a complete HTTP answer out;
//! the shell reads the request (bounded) and writes the answer, then closes.

use super::assets;
use super::dashboard;
use super::metrics::{self, ShellGauges, ShellMetrics};
use crate::proto::auth::Identity;
use crate::proto::envelope::JsonWriter;
use crate::proto::handshake::status_phrase;
use crate::proto::hub::{Audience, Hub, KickData, Kicked, PublishData};
use crate::proto::Now;

/// Largest request body accepted (`/api/publish`).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

const PATHS: [&str; 7] = [
    "/health",
    "/ready",
    "/metrics",
    "/api/connections",
    "/api/publish",
    "/api/rooms",
    "/api/kick",
];

/// Whether `path` is one of the endpoints (on a shared port, other plain
/// requests get 426).
pub fn is_endpoint(path: &str) -> bool {
    PATHS.contains(&path) || assets::PATHS.contains(&path)
}

pub struct HttpRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub bearer: Option<&'a str>,
    pub body: &'a [u8],
}

#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    content_type: &'static str,
    /// Extra header lines, each ending in CRLF.
    headers: &'static str,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub(super) fn json(status: u16, body: Vec<u8>) -> HttpAnswer {
        HttpAnswer {
            status,
            content_type: "application/json",
            headers: "",
            body,
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> HttpAnswer {
        let mut body = Vec::with_capacity(16 + message.len());
        JsonWriter::object(&mut body).str("error", message).end();
        HttpAnswer::json(status, body)
    }

    fn unauthorized(message: &str) -> HttpAnswer {
        HttpAnswer {
            headers: "WWW-Authenticate: Bearer\r\n",
            ..HttpAnswer::error(401, message)
        }
    }

    fn method_not_allowed(allow: &'static str) -> HttpAnswer {
        HttpAnswer {
            headers: allow,
            ..HttpAnswer::error(405, "method not allowed")
        }
    }

    /// An embedded file, with the security headers of served pages.
    fn asset(asset: &assets::Asset) -> HttpAnswer {
        HttpAnswer {
            status: 200,
            content_type: asset.content_type,
            headers: assets::SECURITY_HEADERS,
            body: asset.body.to_vec(),
        }
    }

    /// The whole HTTP/1.1 response; the connection closes after it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{}Connection: close\r\n\r\n",
            self.status,
            status_phrase(self.status),
            self.content_type,
            self.body.len(),
            self.headers
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// The identity of a bearer token that passes `allowed`; else a 401 answer.
pub(super) fn authorize(
    req: &HttpRequest<'_>,
    hub: &Hub,
    now: Now,
    allowed: fn(&Identity) -> bool,
    needs: &str,
) -> Result<Identity, HttpAnswer> {
    let Some(token) = req.bearer else {
        return Err(HttpAnswer::unauthorized(
            "an Authorization: Bearer JWT is required",
        ));
    };
    match hub.config().auth.verify(token, now.unix) {
        Ok(identity) if allowed(&identity) => Ok(identity),
        Ok(_) => Err(HttpAnswer::unauthorized(&format!(
            "the token lacks {needs}"
        ))),
        Err(reason) => Err(HttpAnswer::unauthorized(&format!(
            "invalid token: {reason}"
        ))),
    }
}

/// Answers one request.
pub fn answer(
    req: &HttpRequest<'_>,
    hub: &mut Hub,
    shell: &ShellMetrics,
    gauges: &ShellGauges,
    now: Now,
) -> HttpAnswer {
    let get = req.method == "GET";
    match req.path {
        "/health" if get => health(hub, gauges, now.unix),
        "/ready" if get => ready(hub),
        "/metrics" if get => HttpAnswer {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            headers: "",
            body: metrics::render(shell, gauges, hub, now.unix).into_bytes(),
        },
        "/api/connections" if get => admin_json(req, hub, now, |hub, body| {
            let mut doc = JsonWriter::object(body);
            doc.with_raw("connections", |buf| hub.write_client_list(buf));
            doc.end();
        }),
        "/api/rooms" if get => admin_json(req, hub, now, |hub, body| hub.write_room_list(body)),
        "/api/publish" if req.method == "POST" => publish(req, hub, now),
        "/api/kick" if req.method == "POST" => kick(req, hub, now),
        "/health" | "/ready" | "/metrics" | "/api/connections" | "/api/rooms" => {
            HttpAnswer::method_not_allowed("Allow: GET\r\n")
        }
        "/api/publish" | "/api/kick" => HttpAnswer::method_not_allowed("Allow: POST\r\n"),
        path => match assets::find(path).or_else(|| dashboard::file(path)) {
            Some(asset) if get => HttpAnswer::asset(asset),
            Some(_) => HttpAnswer::method_not_allowed("Allow: GET\r\n"),
            None => HttpAnswer::error(404, "no such endpoint"),
        },
    }
}

/// 200 with the JSON `write` makes, for a bearer token with admin; else 401.
fn admin_json(
    req: &HttpRequest<'_>,
    hub: &Hub,
    now: Now,
    write: impl FnOnce(&Hub, &mut Vec<u8>),
) -> HttpAnswer {
    match authorize(req, hub, now, Identity::is_admin, "the admin permission") {
        Ok(_) => {
            let mut body = Vec::with_capacity(256);
            write(hub, &mut body);
            HttpAnswer::json(200, body)
        }
        Err(answer) => answer,
    }
}

/// What a kicked client is told without a `reason`.
pub const KICK_REASON: &str = "kicked by an operator";

/// `POST /api/kick` `{"client","reason"?}` (admin): 200 `{"delivered"}`
/// (another node's client is `http_cluster`'s, unless it cannot be sent).
fn kick(req: &HttpRequest<'_>, hub: &mut Hub, now: Now) -> HttpAnswer {
    let admin = Identity::is_admin;
    if let Err(answer) = authorize(req, hub, now, admin, "the admin permission") {
        return answer;
    }
    let Ok(body) = serde_json::from_slice::<KickData>(req.body) else {
        return HttpAnswer::error(400, "body must be {\"client\",\"reason\"?}");
    };
    let reason = body.reason.as_deref().unwrap_or(KICK_REASON);
    match hub.kick(&body.client, reason, now) {
        Kicked::Here(found) => {
            let mut out = Vec::with_capacity(20);
            JsonWriter::object(&mut out)
                .u64("delivered", u64::from(found))
                .end();
            HttpAnswer::json(200, out)
        }
        Kicked::Unreachable => HttpAnswer::error(503, "the client's node cannot be reached now"),
    }
}

fn health(hub: &Hub, gauges: &ShellGauges, now_unix: u64) -> HttpAnswer {
    let mut body = Vec::with_capacity(320);
    let mut doc = JsonWriter::object(&mut body);
    let cluster = hub.cluster().map(|tap| &tap.status);
    let degraded = cluster.is_some_and(|c| !c.broker_up);
    doc.str("status", if degraded { "degraded" } else { "healthy" });
    let mut stats = doc.begin("stats");
    stats
        .u64("active_connections", hub.active_connections() as u64)
        .u64("active_rooms", hub.active_rooms() as u64)
        .u64("total_connections", hub.stats.total_connections)
        .u64("total_messages", hub.stats.total_messages)
        .u64("uptime_seconds", gauges.uptime_s)
        // Seed 003's monitoring figures, beside the seed 001 ones above.
        .u64("connections_last_24h", hub.activity.opened.sum(now_unix))
        .raw(
            "avg_connection_duration_seconds",
            &format!("{:.1}", hub.activity.average_duration_s()),
        )
        .u64("messages_per_minute", hub.activity.messages.sum(now_unix));
    stats.end();
    if let Some(c) = cluster {
        doc.begin("cluster")
            .str("node", &c.node)
            .str("broker", if c.broker_up { "up" } else { "down" })
            .u64("nodes", c.nodes)
            .end();
    }
    doc.end();
    HttpAnswer::json(200, body)
}

/// `GET /ready` (SPEC §9): 503 while the broker is down. A stopping node
/// has closed its listeners, so it answers no new request at all.
fn ready(hub: &Hub) -> HttpAnswer {
    let reason = hub
        .cluster()
        .and_then(|tap| tap.status.not_ready.as_deref());
    let mut body = Vec::with_capacity(64);
    let mut doc = JsonWriter::object(&mut body);
    doc.bool("ready", reason.is_none());
    if let Some(reason) = reason {
        doc.str("reason", reason);
    }
    doc.end();
    HttpAnswer::json(if reason.is_none() { 200 } else { 503 }, body)
}

pub(super) fn may_publish(identity: &Identity) -> bool {
    identity.has("publish") || identity.has("host")
}

fn publish(req: &HttpRequest<'_>, hub: &mut Hub, now: Now) -> HttpAnswer {
    if let Err(answer) = authorize(
        req,
        hub,
        now,
        may_publish,
        "the publish, host or admin permission",
    ) {
        return answer;
    }
    let body: PublishData = match serde_json::from_slice(req.body) {
        Ok(body) => body,
        Err(e) => {
            return HttpAnswer::error(
                400,
                &format!("body must be {{\"event\",\"data\",\"room\"?,\"client\"?}}: {e}"),
            )
        }
    };
    if body.event.is_empty() {
        return HttpAnswer::error(400, "event must be a non-empty string");
    }
    let audience = match (&body.room, &body.client) {
        (Some(_), Some(_)) => return HttpAnswer::error(400, "give room or client, not both"),
        (Some(room), None) if room.is_empty() => {
            return HttpAnswer::error(400, "room must be a non-empty string")
        }
        (Some(room), None) => Audience::Room(room),
        (None, Some(client)) => Audience::Client(client),
        (None, None) => Audience::All,
    };
    let data = body.data.map_or("null", |d| d.get());
    let to_room = matches!(audience, Audience::Room(_));
    let delivered = hub.publish(&body.event, data, audience, now);
    let mut out = Vec::with_capacity(40);
    let mut doc = JsonWriter::object(&mut out);
    doc.u64("delivered", delivered);
    if to_room && hub.is_clustered() {
        doc.bool("cluster", true);
    }
    doc.end();
    HttpAnswer::json(200, out)
}

#[cfg(test)]
#[path = "http_api_admin_tests.rs"]
mod admin_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::auth::{Authenticator, MintRequest};
    use crate::proto::hub::{Action, HubConfig, RoomFeatures};
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    const NOW: Now = Now {
        ms: 0,
        unix: 1_800_000_000,
    };
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn auth() -> Authenticator {
        Authenticator::new(SECRET, None, None, None, &[], BTreeMap::new())
    }

    pub(super) fn hub() -> Hub {
        Hub::new(HubConfig {
            auth: auth(),
            auth_timeout_ms: 10_000,
            max_messages_per_minute: 60,
            request_timeout_ms: 5_000,
            server_name: "tether/test".into(),
            compat: Default::default(),
            max_reply_bytes: 1 << 20,
            features: RoomFeatures::default(),
        })
    }

    pub(super) fn token(permissions: &[&str], rooms: &[&str]) -> String {
        let request = MintRequest {
            sub: "u".into(),
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
            rooms: rooms.iter().map(|p| p.to_string()).collect(),
            role: None,
            ttl_s: 3600,
        };
        auth().mint(&request, NOW.unix).unwrap().0
    }

    pub(super) fn call(
        hub: &mut Hub,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        let req = HttpRequest {
            method,
            path,
            bearer,
            body: body.as_bytes(),
        };
        let gauges = ShellGauges {
            open_sockets: 0,
            max_connections: 10,
            pool_lent: 0,
            pool_free: 0,
            uptime_s: 7,
        };
        let answer = answer(&req, hub, &ShellMetrics::default(), &gauges, NOW);
        let value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        (answer.status, value)
    }

    pub(super) fn open_client(hub: &mut Hub, key: usize, rooms: &[&str]) -> u64 {
        let id = (key as u64) | (7 << 24);
        let identity = auth().verify(&token(&[], rooms), NOW.unix).unwrap();
        hub.open(
            key,
            id,
            "127.0.0.1".parse().unwrap(),
            NOW,
            Some(identity),
            "",
        );
        hub.out.clear();
        id
    }

    #[test]
    fn health_has_exactly_the_seed_fields() {
        let mut h = hub();
        open_client(&mut h, 0, &["a"]);
        let (status, body) = call(&mut h, "GET", "/health", None, "");
        assert_eq!(status, 200);
        // Seed 001's fields as they were, then seed 003's figures (issue 17).
        let mut seed_001 = body.clone();
        let stats = seed_001["stats"].as_object_mut().unwrap();
        for key in [
            "connections_last_24h",
            "avg_connection_duration_seconds",
            "messages_per_minute",
        ] {
            assert!(stats.remove(key).is_some(), "{key} missing: {body}");
        }
        assert_eq!(
            seed_001,
            json!({"status": "healthy", "stats": {
                "active_connections": 1, "active_rooms": 1, "total_connections": 1,
                "total_messages": 0, "uptime_seconds": 7}})
        );
        assert_eq!(body["stats"]["connections_last_24h"], 1);
        assert_eq!(body["stats"]["messages_per_minute"], 0);
    }

    #[test]
    fn connections_need_an_admin_token() {
        let mut h = hub();
        open_client(&mut h, 0, &[]);
        assert_eq!(call(&mut h, "GET", "/api/connections", None, "").0, 401);
        let user = token(&["publish"], &[]);
        assert_eq!(
            call(&mut h, "GET", "/api/connections", Some(&user), "").0,
            401
        );
        assert_eq!(
            call(&mut h, "GET", "/api/connections", Some("x.y.z"), "").0,
            401
        );
        let admin = token(&["admin"], &[]);
        let (status, body) = call(&mut h, "GET", "/api/connections", Some(&admin), "");
        assert_eq!(status, 200);
        assert_eq!(body["connections"][0]["sub"], "u");
    }

    #[test]
    fn publish_to_all_a_room_or_a_client() {
        let mut h = hub();
        open_client(&mut h, 0, &["red"]);
        let c1 = open_client(&mut h, 1, &[]);
        let t = token(&["publish"], &[]);
        let (status, body) = call(
            &mut h,
            "POST",
            "/api/publish",
            Some(&t),
            r#"{"event":"e","data":{"x":1}}"#,
        );
        assert_eq!((status, body), (200, json!({"delivered": 2})));
        let sent: Vec<usize> = h
            .out
            .actions
            .iter()
            .map(|a| match a {
                Action::Send { to, .. } => *to,
                Action::Close { to, .. } => *to,
            })
            .collect();
        assert_eq!(sent, vec![0, 1]);
        let first = h.out.body(match &h.out.actions[0] {
            Action::Send { body, .. } => body,
            Action::Close { .. } => unreachable!(),
        });
        let first: Value = serde_json::from_slice(first).unwrap();
        assert_eq!(first, json!({"event": "e", "data": {"x": 1}}));
        h.out.clear();
        let body = r#"{"event":"e","room":"red"}"#;
        assert_eq!(
            call(&mut h, "POST", "/api/publish", Some(&t), body).1,
            json!({"delivered": 1})
        );
        h.out.clear();
        let body = format!(r#"{{"event":"e","client":"{c1:x}"}}"#);
        assert_eq!(
            call(&mut h, "POST", "/api/publish", Some(&t), &body).1,
            json!({"delivered": 1})
        );
        let body = r#"{"event":"e","client":"ffffff"}"#;
        assert_eq!(
            call(&mut h, "POST", "/api/publish", Some(&t), body).1,
            json!({"delivered": 0})
        );
    }

    #[test]
    fn publish_refuses_bad_bodies_and_tokens() {
        let mut h = hub();
        let t = token(&["host"], &[]);
        for bad in [
            "",
            "{",
            "[]",
            r#"{"data":1}"#,
            r#"{"event":""}"#,
            r#"{"event":"e","x":1}"#,
            r#"{"event":"e","room":"r","client":"c"}"#,
            r#"{"event":"e","room":""}"#,
            "\u{0}",
        ] {
            assert_eq!(
                call(&mut h, "POST", "/api/publish", Some(&t), bad).0,
                400,
                "{bad}"
            );
        }
        let reader = token(&["read"], &[]);
        assert_eq!(
            call(
                &mut h,
                "POST",
                "/api/publish",
                Some(&reader),
                r#"{"event":"e"}"#
            )
            .0,
            401
        );
        assert_eq!(
            call(&mut h, "POST", "/api/publish", None, r#"{"event":"e"}"#).0,
            401
        );
    }

    #[test]
    fn methods_and_paths() {
        let mut h = hub();
        assert_eq!(call(&mut h, "POST", "/health", None, "").0, 405);
        assert_eq!(call(&mut h, "GET", "/api/publish", None, "").0, 405);
        assert_eq!(call(&mut h, "GET", "/nope", None, "").0, 404);
        // The served bytes and headers: tests/js_client.rs, over HTTP.
        assert_eq!(call(&mut h, "GET", "/tether.js", None, "").0, 200);
        assert!(is_endpoint("/tether.js"));
        assert_eq!(call(&mut h, "POST", "/tether.js", None, "").0, 405);
        let answer = HttpAnswer::error(401, "x").to_bytes();
        assert!(answer.starts_with(b"HTTP/1.1 401 Unauthorized\r\n"));
    }

    #[test]
    fn metrics_are_prometheus_text_with_the_prefix() {
        let mut h = hub();
        let req = HttpRequest {
            method: "GET",
            path: "/metrics",
            bearer: None,
            body: b"",
        };
        let gauges = ShellGauges {
            open_sockets: 3,
            max_connections: 10,
            pool_lent: 1,
            pool_free: 2,
            uptime_s: 5,
        };
        let a = answer(&req, &mut h, &ShellMetrics::default(), &gauges, NOW);
        let text = String::from_utf8(a.body).unwrap();
        for line in text.lines() {
            assert!(
                line.starts_with("# HELP tether_")
                    || line.starts_with("# TYPE tether_")
                    || line.starts_with("tether_"),
                "{line}"
            );
        }
        assert!(text.contains("tether_sockets_open 3\n"));
        assert!(text.contains("tether_refusals_total{reason=\"server_full\"} 0\n"));
    }
}
