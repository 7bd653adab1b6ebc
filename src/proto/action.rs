//! The flat `"action"` dialect of seed 004's clients (SPEC §13), beside the
//! `{"event", "data"}` envelope of SPEC §4.
//!
//! In: `{"action": NAME, ...fields}` is read as `{"event": NAME, "data":
//! {fields}}` (`requestId` stays apart; `authenticate` is `auth`). Out:
//! `{"event": E, "data": {...}}` is written `{"action": E, ...fields of
//! data}`, and data that is not an object (or whose keys would collide with
//! the message's own) goes under `"data"`. Errors carry `error_code` and
//! `error_message`.

use crate::proto::envelope::{raw_str, write_str, BadEnvelope, Envelope, ErrorCode, JsonWriter};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Which dialect a connection speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dialect {
    /// `{"event", "data", "requestId"}` (SPEC §4).
    #[default]
    Event,
    /// `{"action", ...fields}` (SPEC §13).
    Action,
}

/// An action-dialect message, translated: the data object is rebuilt from the
/// message's other fields.
#[derive(Debug)]
pub struct ActionMessage<'a> {
    event: Cow<'a, str>,
    data: Option<Box<RawValue>>,
    request_id: Option<&'a RawValue>,
}

impl ActionMessage<'_> {
    /// The message as the core reads every message.
    pub fn envelope(&self) -> Envelope<'_> {
        Envelope {
            event: Cow::Borrowed(&self.event),
            data: self.data.as_deref(),
            request_id: self.request_id,
        }
    }
}

/// What an incoming text is in an action listener.
#[derive(Debug)]
pub enum Incoming<'a> {
    Action(ActionMessage<'a>),
    /// No `action` but an `event`: a section-4 message (hosts always speak it).
    Event,
    Bad(BadEnvelope<'a>),
}

/// The top-level members of a JSON object, in order, values unparsed.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// A key borrowed from the text unless it has escapes (serde's own `Cow`
/// impl always copies, and this runs for every field of every message).
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                // Room for a typical message's fields without growing.
                let mut members = Vec::with_capacity(8);
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(MembersVisitor)
    }
}

fn bad<'a>(
    code: ErrorCode,
    message: &'static str,
    request_id: Option<&'a RawValue>,
) -> Incoming<'a> {
    Incoming::Bad(BadEnvelope {
        code,
        message,
        request_id,
    })
}

/// Reads one text frame of an action listener.
pub fn parse(text: &str) -> Incoming<'_> {
    let members = match serde_json::from_str::<Members>(text) {
        Ok(members) => members.0,
        Err(e) if e.is_data() => {
            return bad(
                ErrorCode::InvalidFormat,
                "message must be a JSON object",
                None,
            )
        }
        Err(_) => return bad(ErrorCode::InvalidJson, "message is not valid JSON", None),
    };
    let mut action = None;
    let mut request_id = None;
    let mut has_event = false;
    let mut fields = 0;
    for (key, value) in &members {
        match &**key {
            "action" if action.is_some() => {
                return bad(ErrorCode::InvalidFormat, "`action` given twice", None)
            }
            "action" => action = Some(*value),
            "requestId" if request_id.is_some() => {
                return bad(ErrorCode::InvalidFormat, "`requestId` given twice", None)
            }
            "requestId" => request_id = Some(*value),
            other => {
                has_event |= other == "event";
                fields += 1;
            }
        }
    }
    let request_id = match request_id {
        Some(id) if is_request_id(id) => Some(id),
        Some(_) => {
            return bad(
                ErrorCode::InvalidFormat,
                "`requestId` must be a string or a number",
                None,
            )
        }
        None => None,
    };
    let Some(action) = action else {
        if has_event {
            return Incoming::Event;
        }
        return bad(
            ErrorCode::MissingEvent,
            "message has no `action` field",
            request_id,
        );
    };
    let Some(name) = raw_str(action) else {
        return bad(
            ErrorCode::InvalidFormat,
            "`action` must be a string",
            request_id,
        );
    };
    let event = if name == "authenticate" {
        Cow::Borrowed("auth")
    } else {
        name
    };
    let data = (fields > 0).then(|| {
        let mut buf = Vec::with_capacity(text.len());
        let mut data = JsonWriter::object(&mut buf);
        for (key, value) in &members {
            if key != "action" && key != "requestId" {
                data.raw(key, value.get());
            }
        }
        data.end();
        // Keys were escaped and values are JSON as parsed: this is valid JSON.
        String::from_utf8(buf)
            .ok()
            .and_then(|text| RawValue::from_string(text).ok())
    });
    Incoming::Action(ActionMessage {
        event,
        data: data.flatten(),
        request_id,
    })
}

/// Only a string or a number, as in SPEC §4.
pub fn is_request_id(id: &RawValue) -> bool {
    matches!(id.get().as_bytes().first(), Some(b'"' | b'-' | b'0'..=b'9'))
}

/// The code an action client knows an error by.
pub fn error_code(code: &str) -> &str {
    match code {
        "missing_event" => "missing_action",
        "unknown_event" => "unknown_action",
        other => other,
    }
}

/// An error for an action client: `{"action":"error","error_code",
/// "error_message","timestamp","requestId"?}`.
pub struct ActionError<'a> {
    pub code: &'a str,
    pub message: &'a str,
    pub timestamp: u64,
}

impl ActionError<'_> {
    pub fn write(&self, buf: &mut Vec<u8>, request_id: Option<&RawValue>) {
        JsonWriter::object(buf)
            .str("action", "error")
            .str("error_code", error_code(self.code))
            .str("error_message", self.message)
            .u64("timestamp", self.timestamp)
            .request_id(request_id)
            .end();
    }
}

/// Appends `{"action": EVENT, ...data, ...extra, "requestId"?}`: `data` is
/// JSON text, spread when it is an object whose keys collide with nothing
/// else in the message, else put under `"data"`.
pub fn write_message(
    buf: &mut Vec<u8>,
    event: &str,
    data: &str,
    extra: &[(&str, &RawValue)],
    request_id: Option<&RawValue>,
) {
    buf.extend_from_slice(b"{\"action\":");
    write_str(buf, event);
    let data = data.trim();
    match object_inner(data) {
        Some(inner) if !collides(data, extra) => {
            if !inner.trim().is_empty() {
                buf.push(b',');
                buf.extend_from_slice(inner.as_bytes());
            }
        }
        _ if data == "null" => {}
        _ => {
            buf.extend_from_slice(b",\"data\":");
            buf.extend_from_slice(data.as_bytes());
        }
    }
    for (key, value) in extra {
        buf.push(b',');
        write_str(buf, key);
        buf.push(b':');
        buf.extend_from_slice(value.get().as_bytes());
    }
    if let Some(id) = request_id {
        buf.extend_from_slice(b",\"requestId\":");
        buf.extend_from_slice(id.get().as_bytes());
    }
    buf.push(b'}');
}

/// The text between the braces of a JSON object.
fn object_inner(json: &str) -> Option<&str> {
    json.strip_prefix('{')?.strip_suffix('}')
}

/// Whether the object `data` has a key the message itself uses.
fn collides(data: &str, extra: &[(&str, &RawValue)]) -> bool {
    let reserved =
        |key: &str| key == "action" || key == "requestId" || extra.iter().any(|(k, _)| *k == key);
    // Most data objects do not even mention a reserved name: no parse then.
    let mentions = ["action", "requestId"]
        .iter()
        .chain(extra.iter().map(|(k, _)| k))
        .any(|key| data.contains(key));
    if !mentions {
        return false;
    }
    match serde_json::from_str::<Members>(data) {
        Ok(members) => members.0.iter().any(|(key, _)| reserved(key)),
        Err(_) => true,
    }
}

/// A message written in section 4's form (`{"event","data",...rest}`, as the
/// core writes broadcasts) rewritten in the action dialect; `None` when it is
/// not of that form.
pub fn convert(message: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(message).ok()?;
    let members = serde_json::from_str::<Members>(text).ok()?.0;
    let mut event = None;
    let mut data = None;
    let mut request_id = None;
    let mut extra = Vec::new();
    for (key, value) in &members {
        match &**key {
            "event" => event = raw_str(value),
            "data" => data = Some(value.get()),
            "requestId" => request_id = Some(*value),
            other => extra.push((other, *value)),
        }
    }
    let mut out = Vec::with_capacity(message.len() + 8);
    write_message(
        &mut out,
        &event?,
        data.unwrap_or("null"),
        &extra,
        request_id,
    );
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (String, Option<String>, Option<String>) {
        match parse(text) {
            Incoming::Action(m) => {
                let env = m.envelope();
                (
                    env.event.to_string(),
                    env.data.map(|d| d.get().to_string()),
                    env.request_id.map(|r| r.get().to_string()),
                )
            }
            other => panic!("not an action message: {other:?}"),
        }
    }

    fn code(text: &str) -> ErrorCode {
        match parse(text) {
            Incoming::Bad(bad) => bad.code,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn reads_fields_as_data_and_keeps_request_id_apart() {
        let (event, data, rid) =
            read(r#"{"action":"play","filename":"airhorn.mp3","requestId":4}"#);
        assert_eq!(event, "play");
        assert_eq!(data.as_deref(), Some(r#"{"filename":"airhorn.mp3"}"#));
        assert_eq!(rid.as_deref(), Some("4"));
        let (event, data, _) = read(r#"{"action":"authenticate","token":"t.k.n"}"#);
        assert_eq!(event, "auth");
        let data: serde_json::Value = serde_json::from_str(&data.unwrap()).unwrap();
        assert_eq!(data, serde_json::json!({"token": "t.k.n"}));
        assert_eq!(read(r#"{"action":"list"}"#), ("list".into(), None, None));
        let (_, data, _) = read(r#"{"action":"x","we\"ird":[1,{"a":null}],"n":1.5}"#);
        let data: serde_json::Value = serde_json::from_str(&data.unwrap()).unwrap();
        assert_eq!(
            data,
            serde_json::json!({"we\"ird": [1, {"a": null}], "n": 1.5})
        );
    }

    #[test]
    fn refusals_use_the_section_4_codes() {
        for (text, expected) in [
            ("nope", ErrorCode::InvalidJson),
            ("[1]", ErrorCode::InvalidFormat),
            ("7", ErrorCode::InvalidFormat),
            (r#"{"filename":"a"}"#, ErrorCode::MissingEvent),
            (r#"{"action":3}"#, ErrorCode::InvalidFormat),
            (r#"{"action":"a","action":"b"}"#, ErrorCode::InvalidFormat),
            (r#"{"action":"a","requestId":[]}"#, ErrorCode::InvalidFormat),
        ] {
            assert_eq!(code(text), expected, "{text}");
        }
        assert!(matches!(
            parse(r#"{"event":"auth","data":{}}"#),
            Incoming::Event
        ));
        assert_eq!(error_code("missing_event"), "missing_action");
        assert_eq!(error_code("unknown_event"), "unknown_action");
        assert_eq!(error_code("auth_failed"), "auth_failed");
    }

    fn written(event: &str, data: &str, rid: Option<&str>) -> String {
        let rid = rid.map(|r| RawValue::from_string(r.to_string()).unwrap());
        let mut buf = Vec::new();
        write_message(&mut buf, event, data, &[], rid.as_deref());
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn writes_data_fields_flat_or_under_data() {
        assert_eq!(
            written(
                "playing",
                r#"{"filename":"a.mp3","channel":"General"}"#,
                Some("4")
            ),
            r#"{"action":"playing","filename":"a.mp3","channel":"General","requestId":4}"#
        );
        assert_eq!(written("stopped", "{ }", None), r#"{"action":"stopped"}"#);
        assert_eq!(written("x", "null", None), r#"{"action":"x"}"#);
        assert_eq!(
            written("x", "[1,2]", None),
            r#"{"action":"x","data":[1,2]}"#
        );
        assert_eq!(written("x", "\"s\"", None), r#"{"action":"x","data":"s"}"#);
        assert_eq!(
            written("x", r#"{"action":"y"}"#, None),
            r#"{"action":"x","data":{"action":"y"}}"#
        );
        // A mention that is not a key does not move the data.
        assert_eq!(
            written("x", r#"{"k":"action"}"#, None),
            r#"{"action":"x","k":"action"}"#
        );
        let mut buf = Vec::new();
        let error = ActionError {
            code: "unknown_event",
            message: "no \"x\"",
            timestamp: 12,
        };
        error.write(&mut buf, None);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            r#"{"action":"error","error_code":"unknown_action","error_message":"no \"x\"","timestamp":12}"#
        );
    }

    #[test]
    fn converts_broadcasts() {
        let event_form = br#"{"event":"hello","data":{"text":"hi"},"room":"lobby","from":"alice"}"#;
        assert_eq!(
            String::from_utf8(convert(event_form).unwrap()).unwrap(),
            r#"{"action":"hello","text":"hi","room":"lobby","from":"alice"}"#
        );
        let clash = br#"{"event":"e","data":{"room":"mine"},"room":"lobby"}"#;
        assert_eq!(
            String::from_utf8(convert(clash).unwrap()).unwrap(),
            r#"{"action":"e","data":{"room":"mine"},"room":"lobby"}"#
        );
        assert!(convert(b"not json").is_none());
        assert!(convert(br#"{"data":1}"#).is_none());
    }
}
