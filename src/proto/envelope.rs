//! The message envelope `{"event", "data", "requestId"}` (SPEC §4): parsing
//! without copying, error codes, and writing replies as JSON text.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Longest `requestId` accepted, in bytes of its JSON text (quotes
/// included): a request waiting for a host holds its `requestId`, so the cap
/// bounds what pending requests cost (see `host_link::pending_bytes_bound`).
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Error codes of SPEC §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidJson,
    InvalidFormat,
    MissingEvent,
    NotAuthenticated,
    AuthFailed,
    AuthTimeout,
    TokenExpired,
    Forbidden,
    RoomNotAllowed,
    UnknownEvent,
    InvalidData,
    RateLimited,
    HostUnavailable,
    HostTimeout,
    InternalError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidFormat => "invalid_format",
            ErrorCode::MissingEvent => "missing_event",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::AuthTimeout => "auth_timeout",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RoomNotAllowed => "room_not_allowed",
            ErrorCode::UnknownEvent => "unknown_event",
            ErrorCode::InvalidData => "invalid_data",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::HostUnavailable => "host_unavailable",
            ErrorCode::HostTimeout => "host_timeout",
            ErrorCode::InternalError => "internal_error",
        }
    }
}

/// A parsed message; borrows the frame's text.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub event: Cow<'a, str>,
    /// `None` when absent or `null`.
    pub data: Option<&'a RawValue>,
    /// Only a string or a number.
    pub request_id: Option<&'a RawValue>,
}

/// A message that could not be parsed: the code to answer with, and the
/// `requestId` when it could still be read.
#[derive(Debug)]
pub struct BadEnvelope<'a> {
    pub code: ErrorCode,
    pub message: &'static str,
    pub request_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Raw<'a> {
    // `present` keeps an explicit `null` as a value instead of "absent".
    #[serde(default, borrow, deserialize_with = "present")]
    event: Option<&'a RawValue>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, borrow, rename = "requestId", deserialize_with = "present")]
    request_id: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Parses one text frame as an envelope.
pub fn parse(text: &str) -> Result<Envelope<'_>, BadEnvelope<'_>> {
    let bad = |code, message, request_id| BadEnvelope {
        code,
        message,
        request_id,
    };
    let raw: Raw = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(e) if e.is_data() => {
            return Err(bad(
                ErrorCode::InvalidFormat,
                "message must be a JSON object",
                None,
            ))
        }
        Err(_) => {
            return Err(bad(
                ErrorCode::InvalidJson,
                "message is not valid JSON",
                None,
            ))
        }
    };
    // serde also reads a struct from a JSON array; the envelope is an object only.
    if !text.trim_start().starts_with('{') {
        return Err(bad(
            ErrorCode::InvalidFormat,
            "message must be a JSON object",
            None,
        ));
    }
    let request_id = match raw.request_id {
        Some(id) if id.get().len() > MAX_REQUEST_ID_BYTES => {
            return Err(bad(
                ErrorCode::InvalidFormat,
                "`requestId` must be at most 128 bytes of JSON; message dropped",
                None,
            ))
        }
        Some(id) if matches!(id.get().as_bytes().first(), Some(b'"' | b'-' | b'0'..=b'9')) => {
            Some(id)
        }
        Some(_) => {
            return Err(bad(
                ErrorCode::InvalidFormat,
                "`requestId` must be a string or a number",
                None,
            ))
        }
        None => None,
    };
    let Some(event) = raw.event else {
        return Err(bad(
            ErrorCode::MissingEvent,
            "message has no `event` field",
            request_id,
        ));
    };
    let Some(event) = raw_str(event) else {
        return Err(bad(
            ErrorCode::InvalidFormat,
            "`event` must be a string",
            request_id,
        ));
    };
    let data = raw.data.filter(|d| d.get() != "null");
    Ok(Envelope {
        event,
        data,
        request_id,
    })
}

/// A raw JSON string value, borrowed when it has no escapes.
pub fn raw_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    if let Ok(s) = serde_json::from_str::<&str>(raw.get()) {
        return Some(Cow::Borrowed(s));
    }
    serde_json::from_str::<String>(raw.get())
        .ok()
        .map(Cow::Owned)
}

/// Writes JSON text into a reusable buffer. Strings are escaped by serde_json;
/// raw values (already valid JSON) are copied as they are.
pub struct JsonWriter<'b> {
    buf: &'b mut Vec<u8>,
    first: bool,
}

impl<'b> JsonWriter<'b> {
    /// Starts an object.
    pub fn object(buf: &'b mut Vec<u8>) -> JsonWriter<'b> {
        buf.push(b'{');
        JsonWriter { buf, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        write_str(self.buf, key);
        self.buf.push(b':');
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        write_str(self.buf, value);
        self
    }

    pub fn raw(&mut self, key: &str, json: &str) -> &mut Self {
        self.key(key);
        self.buf.extend_from_slice(json.as_bytes());
        self
    }

    /// Writes the value of `key` with `write` (which must append valid JSON).
    pub fn with_raw(&mut self, key: &str, write: impl FnOnce(&mut Vec<u8>)) -> &mut Self {
        self.key(key);
        write(self.buf);
        self
    }

    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        self.buf.extend_from_slice(itoa(value, &mut [0u8; 20]));
        self
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.raw(key, if value { "true" } else { "false" })
    }

    pub fn opt_u64(&mut self, key: &str, value: Option<u64>) -> &mut Self {
        match value {
            Some(v) => self.u64(key, v),
            None => self.raw(key, "null"),
        }
    }

    pub fn str_array<S: AsRef<str>>(&mut self, key: &str, items: &[S]) -> &mut Self {
        self.key(key);
        self.buf.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            write_str(self.buf, item.as_ref());
        }
        self.buf.push(b']');
        self
    }

    /// Opens a nested object under `key`; close it with `end`.
    pub fn begin(&mut self, key: &str) -> JsonWriter<'_> {
        self.key(key);
        JsonWriter::object(self.buf)
    }

    pub fn end(&mut self) {
        self.buf.push(b'}');
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_str(buf: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, s);
    }
}

fn itoa(mut n: u64, scratch: &mut [u8; 20]) -> &[u8] {
    let mut i = scratch.len();
    loop {
        i -= 1;
        scratch[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &scratch[i..]
}

/// Appends one message `{"event": EVENT, "data": DATA, "requestId": ID}`:
/// `data` appends the data value (valid JSON); `requestId` only when given.
pub fn write_message(
    buf: &mut Vec<u8>,
    event: &str,
    request_id: Option<&RawValue>,
    data: impl FnOnce(&mut Vec<u8>),
) {
    let mut msg = JsonWriter::object(buf);
    msg.str("event", event).with_raw("data", data);
    if let Some(id) = request_id {
        msg.raw("requestId", id.get());
    }
    msg.end();
}

/// Appends one error message; `code` is one of [`ErrorCode`] or a host's own.
pub fn write_error(
    buf: &mut Vec<u8>,
    code: &str,
    message: &str,
    now_unix: u64,
    request_id: Option<&RawValue>,
) {
    write_message(buf, "error", request_id, |buf| {
        let mut data = JsonWriter::object(buf);
        data.str("code", code)
            .str("message", message)
            .u64("timestamp", now_unix);
        data.end();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> ErrorCode {
        parse(text)
            .err()
            .map(|e| e.code)
            .expect("should be refused")
    }

    #[test]
    fn well_formed() {
        let e = parse(r#"{"event":"ping","data":{"a":1},"requestId":7,"extra":true}"#).unwrap();
        assert_eq!(e.event, "ping");
        assert_eq!(e.data.unwrap().get(), r#"{"a":1}"#);
        assert_eq!(e.request_id.unwrap().get(), "7");
        let e = parse(r#"{"event":"p\u0069ng","data":null,"requestId":"x"}"#).unwrap();
        assert_eq!(e.event, "ping");
        assert!(e.data.is_none());
    }

    #[test]
    fn error_codes() {
        assert_eq!(code_of("not json"), ErrorCode::InvalidJson);
        assert_eq!(code_of(""), ErrorCode::InvalidJson);
        assert_eq!(code_of(r#"{"event":"a"} x"#), ErrorCode::InvalidJson);
        assert_eq!(code_of(r#"{"event":"a""#), ErrorCode::InvalidJson);
        assert_eq!(code_of("[1,2]"), ErrorCode::InvalidFormat);
        assert_eq!(code_of(r#"["ping"]"#), ErrorCode::InvalidFormat);
        assert_eq!(code_of("42"), ErrorCode::InvalidFormat);
        assert_eq!(code_of(r#""ping""#), ErrorCode::InvalidFormat);
        assert_eq!(code_of("null"), ErrorCode::InvalidFormat);
        assert_eq!(code_of(r#"{"event":5}"#), ErrorCode::InvalidFormat);
        assert_eq!(code_of(r#"{"event":null}"#), ErrorCode::InvalidFormat);
        assert_eq!(
            code_of(r#"{"event":"a","event":"b"}"#),
            ErrorCode::InvalidFormat
        );
        assert_eq!(
            code_of(r#"{"event":"a","requestId":{}}"#),
            ErrorCode::InvalidFormat
        );
        assert_eq!(code_of(r#"{"data":1}"#), ErrorCode::MissingEvent);
        assert_eq!(code_of("{}"), ErrorCode::MissingEvent);
        let bad = parse(r#"{"requestId":"r1"}"#).unwrap_err();
        assert_eq!(bad.request_id.unwrap().get(), r#""r1""#);
    }

    #[test]
    fn request_ids_are_capped_by_a_named_limit() {
        // The longest accepted: 126 characters and two quotes.
        let longest = format!(r#"{{"event":"a","requestId":"{}"}}"#, "r".repeat(126));
        assert_eq!(
            parse(&longest).unwrap().request_id.unwrap().get().len(),
            128
        );
        let long = format!(r#"{{"event":"a","requestId":"{}"}}"#, "r".repeat(127));
        let bad = parse(&long).unwrap_err();
        assert_eq!(bad.code, ErrorCode::InvalidFormat);
        assert!(bad.message.contains(&MAX_REQUEST_ID_BYTES.to_string()));
        // Not echoed: the client is told, its id is not held nor sent back.
        assert!(bad.request_id.is_none());
        let number = format!(r#"{{"event":"a","requestId":{}}}"#, "9".repeat(129));
        assert_eq!(code_of(&number), ErrorCode::InvalidFormat);
    }

    #[test]
    fn writer_output_is_json() {
        let mut buf = Vec::new();
        let mut w = JsonWriter::object(&mut buf);
        w.str("event", "x\"y\n")
            .u64("n", 0)
            .u64("big", u64::MAX)
            .bool("b", true);
        w.str_array("list", &["a", "é\\"]).opt_u64("none", None);
        let mut inner = w.begin("data");
        inner.raw("raw", r#"{"k":[1]}"#);
        inner.end();
        w.end();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["event"], "x\"y\n");
        assert_eq!(v["big"], u64::MAX);
        assert_eq!(v["list"][1], "é\\");
        assert_eq!(v["data"]["raw"]["k"][0], 1);
        assert!(v["none"].is_null());
    }

    #[test]
    fn error_message_shape() {
        let mut buf = Vec::new();
        let id = parse(r#"{"event":"a","requestId":"q"}"#)
            .unwrap()
            .request_id;
        write_error(&mut buf, ErrorCode::RoomNotAllowed.as_str(), "no", 12, id);
        assert_eq!(
            std::str::from_utf8(&buf).unwrap(),
            r#"{"event":"error","data":{"code":"room_not_allowed","message":"no","timestamp":12},"requestId":"q"}"#
        );
    }
}
