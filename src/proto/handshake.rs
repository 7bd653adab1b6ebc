//! HTTP/1.1 upgrade request parsing and answers (RFC 6455 §4.2), sans-IO.
//!
//! The request is parsed from a bounded buffer; nothing here allocates more
//! than the few strings a valid upgrade carries (key, token, origin).

use crate::proto::deflate::{self, Agreed};

/// Largest request head accepted; browsers with cookies stay well below it.
pub const MAX_REQUEST_BYTES: usize = 8192;
const MAX_HEADERS: usize = 48;

/// The subprotocol browsers offer to say they speak tether.
pub const SUBPROTOCOL: &str = "tether.v1";
/// Prefix of the subprotocol entry that carries a JWT for browsers.
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "tether.bearer.";

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// A valid WebSocket upgrade.
    Upgrade(Upgrade),
    /// Any other HTTP request (health endpoints, or a 426 answer).
    Plain {
        method: String,
        path: String,
        /// The token of `Authorization: Bearer`, if any.
        bearer: Option<String>,
        body: BodyLength,
    },
}

/// The body a plain request announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// `Content-Length: N` (absent means 0).
    Bytes(usize),
    /// A `Transfer-Encoding`, or a `Content-Length` that is not one number:
    /// not accepted (bounded bodies only).
    Unsupported,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// Request path without the query string (the query may hold a token).
    pub path: String,
    /// `Sec-WebSocket-Accept` value derived from the client's key.
    pub accept: String,
    pub origin: Option<String>,
    /// The token from `Authorization`, `?token=` or the bearer subprotocol, in that order.
    pub token: Option<String>,
    /// Whether the client offered `tether.v1`, which the answer then selects.
    pub offers_subprotocol: bool,
    /// The headers a connect proxy is shown (SPEC §11), those present.
    pub forwarded: Vec<(&'static str, String)>,
    /// The permessage-deflate offer accepted, if any (the shell clears it
    /// when compression is off); the answer then confirms it.
    pub deflate: Option<Agreed>,
    /// Every `X-Forwarded-For` header, joined by commas (read only from a
    /// trusted proxy, see [`super::forwarded`]).
    pub forwarded_for: Option<String>,
    pub real_ip: Option<String>,
}

/// What a connect proxy sees of a handshake, in this order.
pub const FORWARDED_HEADERS: [&str; 4] = ["cookie", "authorization", "origin", "user-agent"];

/// Why a request head is refused before any upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    UpgradeRequired,
    HeadersTooLarge,
    TooManyRequests,
    Unavailable,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadRequest => 400,
            Refusal::Unauthorized => 401,
            Refusal::Forbidden => 403,
            Refusal::NotFound => 404,
            Refusal::UpgradeRequired => 426,
            Refusal::HeadersTooLarge => 431,
            Refusal::TooManyRequests => 429,
            Refusal::Unavailable => 503,
        }
    }

    fn phrase(self) -> &'static str {
        status_phrase(self.status())
    }
}

/// The reason phrase of an HTTP status the gateway answers with: the upgrade
/// refusals here and the endpoints of `gateway::http_api`.
pub fn status_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Outcome of feeding the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The head is not complete yet (and still within the size limit).
    Partial,
    /// A complete head; `usize` is its length in bytes.
    Complete(Request, usize),
    /// Not HTTP, malformed, or too large: answer with this status and close.
    Invalid(Refusal),
}

/// Parses the request head in `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST_BYTES => {
            return Parsed::Invalid(Refusal::HeadersTooLarge)
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Invalid(Refusal::HeadersTooLarge),
        Err(_) => return Parsed::Invalid(Refusal::BadRequest),
    };
    if head_len > MAX_REQUEST_BYTES {
        return Parsed::Invalid(Refusal::HeadersTooLarge);
    }
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let header = |name: &str| -> Option<&str> {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let has_token = |name: &str, token: &str| -> bool {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };

    let joined = |name: &str| -> Option<String> {
        let values: Vec<&str> = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };

    let bearer = header("Authorization").and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
    });

    if !has_token("Upgrade", "websocket") {
        let lengths: Vec<&str> = req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("Content-Length"))
            .map(|h| std::str::from_utf8(h.value).unwrap_or("x").trim())
            .collect();
        let chunked = header("Transfer-Encoding").is_some();
        let body = match lengths.as_slice() {
            _ if chunked => BodyLength::Unsupported,
            [] => BodyLength::Bytes(0),
            [n] if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                n.parse().map_or(BodyLength::Unsupported, BodyLength::Bytes)
            }
            _ => BodyLength::Unsupported,
        };
        let request = Request::Plain {
            method: method.to_string(),
            path: path.to_string(),
            bearer: bearer.filter(|t| !t.is_empty()).map(str::to_string),
            body,
        };
        return Parsed::Complete(request, head_len);
    }
    // §4.2.1: a GET over HTTP/1.1 with Host, Connection: Upgrade and a 16-byte key.
    if method != "GET" || req.version != Some(1) || header("Host").is_none() {
        return Parsed::Invalid(Refusal::BadRequest);
    }
    if !has_token("Connection", "upgrade") {
        return Parsed::Invalid(Refusal::BadRequest);
    }
    if header("Sec-WebSocket-Version") != Some("13") {
        return Parsed::Invalid(Refusal::UpgradeRequired);
    }
    let Some(key) = header("Sec-WebSocket-Key").filter(|k| is_valid_key(k)) else {
        return Parsed::Invalid(Refusal::BadRequest);
    };

    let protocols: Vec<&str> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Protocol"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let token = bearer
        .map(str::to_string)
        .or_else(|| query.and_then(|q| query_param(q, "token")))
        .or_else(|| {
            protocols
                .iter()
                .find_map(|p| p.strip_prefix(BEARER_SUBPROTOCOL_PREFIX))
                .map(str::to_string)
        })
        .filter(|t| !t.is_empty());

    let upgrade = Upgrade {
        path: path.to_string(),
        accept: tungstenite::handshake::derive_accept_key(key.as_bytes()),
        origin: header("Origin").map(str::to_string),
        token,
        offers_subprotocol: protocols.contains(&SUBPROTOCOL),
        forwarded: FORWARDED_HEADERS
            .iter()
            .filter_map(|&name| header(name).map(|v| (name, v.to_string())))
            .collect(),
        deflate: deflate::negotiate(
            req.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
                .filter_map(|h| std::str::from_utf8(h.value).ok()),
        ),
        forwarded_for: joined("X-Forwarded-For"),
        real_ip: header("X-Real-IP").map(str::to_string),
    };
    Parsed::Complete(Request::Upgrade(upgrade), head_len)
}

/// A key is the base64 encoding of 16 bytes: 24 characters ending in "==".
fn is_valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.len() == 24
        && bytes[22..] == *b"=="
        && bytes[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// First value of `name` in a query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The 101 answer that completes the upgrade.
pub fn switching_protocols(upgrade: &Upgrade) -> String {
    let protocol = if upgrade.offers_subprotocol {
        "Sec-WebSocket-Protocol: tether.v1\r\n"
    } else {
        ""
    };
    let extensions = upgrade
        .deflate
        .map_or_else(String::new, |agreed| agreed.response_header());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n{protocol}{extensions}\r\n",
        upgrade.accept
    )
}

/// A complete refusal answer with a one-line plain-text body naming the reason.
pub fn refusal_response(refusal: Refusal, reason: &str) -> String {
    let extra = match refusal {
        Refusal::UpgradeRequired => "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
        Refusal::TooManyRequests | Refusal::Unavailable => "Retry-After: 5\r\n",
        _ => "",
    };
    format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         {extra}Connection: close\r\n\r\n{reason}\n",
        refusal.status(),
        refusal.phrase(),
        reason.len() + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_request(extra: &str, target: &str) -> String {
        format!(
            "GET {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
             Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn upgrade_of(req: &str) -> Upgrade {
        match parse(req.as_bytes()) {
            Parsed::Complete(Request::Upgrade(u), n) => {
                assert_eq!(n, req.len());
                u
            }
            other => panic!("not an upgrade: {other:?}"),
        }
    }

    #[test]
    fn rfc_sample_key() {
        let u = upgrade_of(&upgrade_request("", "/chat"));
        assert_eq!(u.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(u.path, "/chat");
        assert_eq!(u.token, None);
        assert!(switching_protocols(&u).contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    }

    #[test]
    fn token_sources_in_order() {
        let u = upgrade_of(&upgrade_request(
            "Authorization: Bearer AAA\r\n",
            "/?token=BBB",
        ));
        assert_eq!(u.token.as_deref(), Some("AAA"));
        let u = upgrade_of(&upgrade_request(
            "Sec-WebSocket-Protocol: tether.v1, tether.bearer.CCC\r\n",
            "/ws?x=1&token=B%2DB+B",
        ));
        assert_eq!(u.token.as_deref(), Some("B-B B"));
        assert!(u.offers_subprotocol);
        let u = upgrade_of(&upgrade_request(
            "Sec-WebSocket-Protocol: tether.v1, tether.bearer.CCC\r\n",
            "/",
        ));
        assert_eq!(u.token.as_deref(), Some("CCC"));
        assert!(switching_protocols(&u).contains("Sec-WebSocket-Protocol: tether.v1\r\n"));
    }

    #[test]
    fn plain_request_bearer_and_body_length() {
        let body_of = |head: &str| match parse(head.as_bytes()) {
            Parsed::Complete(Request::Plain { body, bearer, .. }, _) => (body, bearer),
            other => panic!("{other:?}"),
        };
        let post = "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer T1\r\n";
        assert_eq!(
            body_of(&format!("{post}Content-Length: 12\r\n\r\n")),
            (BodyLength::Bytes(12), Some("T1".into()))
        );
        assert_eq!(body_of(&format!("{post}\r\n")).0, BodyLength::Bytes(0));
        for bad in [
            "Content-Length: -1\r\n",
            "Content-Length: 1 2\r\n",
            "Content-Length: 99999999999999999999999\r\n",
            "Content-Length: 1\r\nContent-Length: 1\r\n",
            "Transfer-Encoding: chunked\r\n",
        ] {
            assert_eq!(
                body_of(&format!("{post}{bad}\r\n")).0,
                BodyLength::Unsupported,
                "{bad}"
            );
        }
    }

    #[test]
    fn plain_request_and_partial() {
        let req = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            parse(req.as_bytes()),
            Parsed::Complete(
                Request::Plain {
                    method: "GET".into(),
                    path: "/health".into(),
                    bearer: None,
                    body: BodyLength::Bytes(0),
                },
                req.len()
            )
        );
        let full = upgrade_request("", "/");
        for cut in 0..full.len() {
            assert_eq!(parse(&full.as_bytes()[..cut]), Parsed::Partial, "cut {cut}");
        }
    }

    #[test]
    fn invalid_requests() {
        assert_eq!(
            parse(b"\x16\x03\x01garbage\r\n\r\n"),
            Parsed::Invalid(Refusal::BadRequest)
        );
        let no_key = upgrade_request("", "/").replace("dGhlIHNhbXBsZSBub25jZQ==", "short");
        assert_eq!(
            parse(no_key.as_bytes()),
            Parsed::Invalid(Refusal::BadRequest)
        );
        let v8 = upgrade_request("", "/").replace("Version: 13", "Version: 8");
        assert_eq!(
            parse(v8.as_bytes()),
            Parsed::Invalid(Refusal::UpgradeRequired)
        );
        let post = upgrade_request("", "/").replace("GET", "POST");
        assert_eq!(parse(post.as_bytes()), Parsed::Invalid(Refusal::BadRequest));
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_REQUEST_BYTES));
        assert_eq!(
            parse(huge.as_bytes()),
            Parsed::Invalid(Refusal::HeadersTooLarge)
        );
    }

    #[test]
    fn percent_decoding_edges() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%zz%"), "A%zz%");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
    }

    #[test]
    fn refusal_has_length_and_reason() {
        let r = refusal_response(Refusal::Forbidden, "origin not allowed");
        assert!(r.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(r.contains("Content-Length: 19\r\n"));
        assert!(r.ends_with("\r\n\r\norigin not allowed\n"));
        assert!(
            refusal_response(Refusal::UpgradeRequired, "x").contains("Sec-WebSocket-Version: 13")
        );
    }
}
