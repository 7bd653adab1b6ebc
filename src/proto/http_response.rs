//! A bounded HTTP/1.1 response parser for the gateway's own requests to
//! backends (SPEC §11): status, `Content-Length`, chunked or until-close
//! bodies, and whether the connection may be reused. Sans-IO: bytes in,
//! a verdict out; it never holds more than its head and body bounds.

/// Longest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// A complete response.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The connection may carry the next request.
    pub keep_alive: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes needed.
    Partial,
    Done(Response),
    /// Not a valid response, or over a bound: the connection is done for.
    Bad(&'static str),
}

#[derive(Debug, Clone, Copy)]
enum Body {
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug)]
pub struct ResponseParser {
    buf: Vec<u8>,
    max_body: usize,
    /// Bytes arrived beyond `bound`: dropped, the response is bad.
    over: bool,
    /// Raw bytes held at most: `raw_bytes_bound` per response in flight.
    bound: usize,
    /// The bytes of the response the last `parse` found complete.
    consumed: usize,
}

/// The most raw bytes a parser for bodies of `max_body` holds: a head,
/// the body and its chunk framing (chunks of at least a few bytes).
pub const fn raw_bytes_bound(max_body: usize) -> usize {
    MAX_HEAD + 2 * max_body + 1024
}

impl ResponseParser {
    pub fn new(max_body: usize) -> ResponseParser {
        ResponseParser::pipelined(max_body, 1)
    }

    /// A parser for up to `depth` responses in flight on one connection
    /// (HTTP/1.1 pipelining): it holds the raw bytes of that many.
    pub fn pipelined(max_body: usize, depth: usize) -> ResponseParser {
        ResponseParser {
            buf: Vec::new(),
            max_body,
            over: false,
            bound: raw_bytes_bound(max_body).saturating_mul(depth.max(1)),
            consumed: 0,
        }
    }

    /// Bytes read from the connection (beyond the bound they are dropped).
    pub fn feed(&mut self, bytes: &[u8]) {
        let room = self.bound.saturating_sub(self.buf.len());
        if bytes.len() > room {
            self.over = true;
        }
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Whether it holds all it may (reading more is pointless).
    pub fn is_full(&self) -> bool {
        self.over
    }

    /// Whether nothing of a response arrived yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn reset(&mut self) {
        self.buf.clear();
        self.over = false;
    }

    /// The first response of those held, removed from them when complete:
    /// responses come in the order of their requests, so calling it again
    /// gives the next request's.
    pub fn next(&mut self, eof: bool) -> Parsed {
        let parsed = self.parse(eof);
        if matches!(parsed, Parsed::Done(_)) {
            self.buf.drain(..self.consumed.min(self.buf.len()));
        }
        parsed
    }

    /// What the bytes so far make; `eof`: the peer closed its side.
    pub fn parse(&mut self, eof: bool) -> Parsed {
        if self.over {
            return Parsed::Bad("response too large");
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Response::new(&mut headers);
        let head_len = match head.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD => {
                return Parsed::Bad("response head too large")
            }
            Ok(httparse::Status::Partial) if eof => return Parsed::Bad("connection closed"),
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::Bad("malformed response"),
        };
        let status = head.code.unwrap_or(0);
        let mut body = Body::UntilClose;
        let mut keep_alive = head.version == Some(1);
        for header in head.headers.iter() {
            let value = std::str::from_utf8(header.value).unwrap_or("").trim();
            if header.name.eq_ignore_ascii_case("content-length") {
                match value.parse::<usize>() {
                    Ok(n) if n > self.max_body => return Parsed::Bad("response too large"),
                    Ok(n) => body = Body::Length(n),
                    Err(_) => return Parsed::Bad("bad Content-Length"),
                }
            } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                if !value.eq_ignore_ascii_case("chunked") {
                    return Parsed::Bad("unsupported Transfer-Encoding");
                }
                body = Body::Chunked;
            } else if header.name.eq_ignore_ascii_case("connection") {
                keep_alive = !value.eq_ignore_ascii_case("close");
            }
        }
        let rest = &self.buf[head_len..];
        let consumed = &mut self.consumed;
        let mut done = |body: Vec<u8>, body_len: usize, keep_alive| {
            *consumed = head_len + body_len;
            Parsed::Done(Response {
                status,
                body,
                keep_alive,
            })
        };
        match body {
            Body::Length(n) if rest.len() >= n => done(rest[..n].to_vec(), n, keep_alive),
            Body::Length(_) if eof => Parsed::Bad("connection closed"),
            Body::Length(_) => Parsed::Partial,
            Body::UntilClose if rest.len() > self.max_body => Parsed::Bad("response too large"),
            Body::UntilClose if eof => done(rest.to_vec(), rest.len(), false),
            Body::UntilClose => Parsed::Partial,
            Body::Chunked => match dechunk(rest, self.max_body) {
                Chunks::Done(body, len) => done(body, len, keep_alive),
                Chunks::Partial if eof => Parsed::Bad("connection closed"),
                Chunks::Partial => Parsed::Partial,
                Chunks::Bad(why) => Parsed::Bad(why),
            },
        }
    }
}

enum Chunks {
    /// The body, and the bytes its chunks took.
    Done(Vec<u8>, usize),
    Partial,
    Bad(&'static str),
}

/// Decodes a chunked body (trailers are skipped).
fn dechunk(all: &[u8], max: usize) -> Chunks {
    let mut rest = all;
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return if rest.len() > 1024 {
                Chunks::Bad("bad chunk size")
            } else {
                Chunks::Partial
            };
        };
        let line = std::str::from_utf8(&rest[..eol]).unwrap_or("");
        let digits = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(digits, 16) else {
            return Chunks::Bad("bad chunk size");
        };
        rest = &rest[eol + 2..];
        if size == 0 {
            // Trailers, then an empty line.
            let mut trailers = rest;
            loop {
                let Some(eol) = trailers.windows(2).position(|w| w == b"\r\n") else {
                    return Chunks::Partial;
                };
                if eol == 0 {
                    return Chunks::Done(body, all.len() - trailers.len() + 2);
                }
                trailers = &trailers[eol + 2..];
            }
        }
        if size > max || body.len() + size > max {
            return Chunks::Bad("response too large");
        }
        if rest.len() < size + 2 {
            return Chunks::Partial;
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Chunks::Bad("bad chunk");
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// The request head and body of one `POST` with a JSON body.
pub fn write_post(out: &mut Vec<u8>, host: &str, path: &str, bearer: &str, body: &[u8]) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\nAuthorization: Bearer ");
    out.extend_from_slice(bearer.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], eof: bool) -> Parsed {
        let mut p = ResponseParser::new(64);
        p.feed(bytes);
        p.parse(eof)
    }

    fn done(status: u16, body: &[u8], keep_alive: bool) -> Parsed {
        Parsed::Done(Response {
            status,
            body: body.to_vec(),
            keep_alive,
        })
    }

    #[test]
    fn lengths_chunks_and_close() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse(ok, false), done(200, b"{}", true));
        assert_eq!(parse(&ok[..ok.len() - 1], false), Parsed::Partial);
        assert_eq!(
            parse(&ok[..ok.len() - 1], true),
            Parsed::Bad("connection closed")
        );
        let close = b"HTTP/1.0 500 X\r\n\r\noops";
        assert_eq!(parse(close, false), Parsed::Partial);
        assert_eq!(parse(close, true), done(500, b"oops", false));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{\"\r\n3;x=1\r\na\":\r\n1\r\n1\r\n0\r\nT: v\r\n\r\n";
        assert_eq!(parse(chunked, false), done(200, b"{\"a\":1", true));
        assert_eq!(parse(&chunked[..60], false), Parsed::Partial);
        let conn_close = b"HTTP/1.1 204 No\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse(conn_close, false), done(204, b"", false));
    }

    #[test]
    fn pipelined_responses_come_out_in_order() {
        let mut p = ResponseParser::pipelined(64, 3);
        let first = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n\"a\"";
        let second = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\n";
        let third = b"HTTP/1.1 503 No\r\nConnection: close\r\nContent-Length: 1\r\n\r\nc";
        p.feed(&[first.as_slice(), second, &third[..10]].concat());
        assert_eq!(p.next(false), done(200, b"\"a\"", true));
        assert_eq!(p.next(false), done(200, b"b", true));
        assert_eq!(p.next(false), Parsed::Partial);
        p.feed(&third[10..]);
        assert_eq!(p.next(false), done(503, b"c", false));
        assert!(p.is_empty());
        assert_eq!(p.next(true), Parsed::Bad("connection closed"));
        // Three responses' raw bytes fit where one parser holds one.
        let mut one = ResponseParser::new(64);
        let mut three = ResponseParser::pipelined(64, 3);
        let bytes = vec![b'x'; 2 * raw_bytes_bound(64)];
        one.feed(&bytes);
        three.feed(&bytes);
        assert!(one.is_full() && !three.is_full());
    }

    #[test]
    fn bounds_and_garbage() {
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n";
        assert_eq!(parse(big, false), Parsed::Bad("response too large"));
        let big_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n";
        assert_eq!(parse(big_chunk, false), Parsed::Bad("response too large"));
        assert_eq!(
            parse(b"garbage\r\n\r\n", false),
            Parsed::Bad("malformed response")
        );
        let te = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(
            parse(te, false),
            Parsed::Bad("unsupported Transfer-Encoding")
        );
        let until_close = [b"HTTP/1.1 200 OK\r\n\r\n".as_slice(), &[b'x'; 65]].concat();
        assert_eq!(
            parse(&until_close, false),
            Parsed::Bad("response too large")
        );
    }

    #[test]
    fn raw_bytes_stop_at_the_bound() {
        let mut p = ResponseParser::new(64);
        let bound = raw_bytes_bound(64);
        p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        while !p.is_full() {
            p.feed(b"0;pad=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        }
        assert_eq!(p.buf.len(), bound);
        assert_eq!(p.parse(false), Parsed::Bad("response too large"));
        p.reset();
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
        assert!(matches!(p.parse(false), Parsed::Done(_)));
    }

    #[test]
    fn post_is_written_whole() {
        let mut out = Vec::new();
        write_post(&mut out, "127.0.0.1:80", "/t/", "JWT", b"{}");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("POST /t/ HTTP/1.1\r\nHost: 127.0.0.1:80\r\n"));
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"));
        assert!(text.contains("Authorization: Bearer JWT\r\n"));
    }
}
