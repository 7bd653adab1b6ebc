//! The message between nodes: `[origin length u8][origin][kind u8]
//! [room length u16 BE][room][payload]`. The payload (a room message's JSON
//! as its origin's members got it) is passed through untouched; the room
//! rides in the envelope so the receiver needs no channel parsing.

use super::directed::{Directed, DirectedOp};

/// What an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A client's `publish` to the room.
    Publish,
    /// `host.broadcast` / `POST /api/publish` to the room.
    Broadcast,
    /// A node is alive (control channel; the payload is its heartbeat_ms).
    Heartbeat,
    /// A node is stopping (control channel).
    Bye,
    /// `host.send` to the client named in `room`: request id (8 bytes BE),
    /// event length (2 bytes BE), event, data (node channel).
    Send,
    /// `host.kick` of the client named in `room`: request id, reason.
    Kick,
    /// The answer to a Send or Kick: request id, delivered (1 byte).
    Result,
    /// `host.clients` of another node: request id.
    Clients,
    /// The answer to Clients: request id, the node's client list (JSON).
    ClientList,
    /// The events the host named in `room` serves: a JSON object (control).
    HostAnnounce,
    /// The host named in `room` is gone (control).
    HostGone,
    /// A client's request for the host named in `room`: request id, the
    /// `host.request` fields but `id` (JSON object; node channel).
    HostRequest,
    /// The answer to a HostRequest: request id, `{"event","data"}` or
    /// `{"error"}` (node channel).
    HostAnswer,
    /// `host.client_joined` / `host.client_left` as hosts get it (control).
    HostNotice,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Publish => b'p',
            Kind::Broadcast => b'b',
            Kind::Heartbeat => b'h',
            Kind::Bye => b'x',
            Kind::Send => b's',
            Kind::Kick => b'k',
            Kind::Result => b'r',
            Kind::Clients => b'c',
            Kind::ClientList => b'l',
            Kind::HostAnnounce => b'H',
            Kind::HostGone => b'G',
            Kind::HostRequest => b'Q',
            Kind::HostAnswer => b'A',
            Kind::HostNotice => b'n',
        }
    }

    fn of(byte: u8) -> Option<Kind> {
        Some(match byte {
            b'p' => Kind::Publish,
            b'b' => Kind::Broadcast,
            b'h' => Kind::Heartbeat,
            b'x' => Kind::Bye,
            b's' => Kind::Send,
            b'k' => Kind::Kick,
            b'r' => Kind::Result,
            b'c' => Kind::Clients,
            b'l' => Kind::ClientList,
            b'H' => Kind::HostAnnounce,
            b'G' => Kind::HostGone,
            b'Q' => Kind::HostRequest,
            b'A' => Kind::HostAnswer,
            b'n' => Kind::HostNotice,
            _ => return None,
        })
    }
}

/// A decoded envelope, borrowing the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub origin: &'a str,
    pub kind: Kind,
    pub room: &'a str,
    pub payload: &'a [u8],
}

/// Appends an envelope to `out`. `origin` is at most 255 bytes (node names
/// are at most 32) and `room` at most 65535 (room names at most 256).
pub fn encode(out: &mut Vec<u8>, origin: &str, kind: Kind, room: &str, payload: &[u8]) {
    let origin = &origin.as_bytes()[..origin.len().min(255)];
    let room = &room.as_bytes()[..room.len().min(usize::from(u16::MAX))];
    out.reserve(4 + origin.len() + room.len() + payload.len());
    out.push(origin.len() as u8);
    out.extend_from_slice(origin);
    out.push(kind.byte());
    out.extend_from_slice(&(room.len() as u16).to_be_bytes());
    out.extend_from_slice(room);
    out.extend_from_slice(payload);
}

/// Reads an envelope; `None` for anything malformed (it is then ignored).
pub fn decode(bytes: &[u8]) -> Option<Envelope<'_>> {
    let (&origin_len, rest) = bytes.split_first()?;
    let (origin, rest) = rest.split_at_checked(usize::from(origin_len))?;
    let (&kind, rest) = rest.split_first()?;
    let (len, rest) = rest.split_at_checked(2)?;
    let room_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let (room, payload) = rest.split_at_checked(room_len)?;
    Some(Envelope {
        origin: std::str::from_utf8(origin).ok()?,
        kind: Kind::of(kind)?,
        room: std::str::from_utf8(room).ok()?,
        payload,
    })
}

/// A `host.send` / `host.kick` for another node's client.
pub fn encode_directed(out: &mut Vec<u8>, origin: &str, directed: &Directed) {
    let mut payload = directed.request.to_be_bytes().to_vec();
    let kind = match &directed.op {
        DirectedOp::Send { event, data } => {
            let event = &event.as_bytes()[..event.len().min(usize::from(u16::MAX))];
            payload.extend_from_slice(&(event.len() as u16).to_be_bytes());
            payload.extend_from_slice(event);
            payload.extend_from_slice(data.as_bytes());
            Kind::Send
        }
        DirectedOp::Kick { reason } => {
            payload.extend_from_slice(reason.as_bytes());
            Kind::Kick
        }
    };
    encode(out, origin, kind, &directed.client, &payload);
}

/// The request id and operation of a Send or Kick envelope.
pub fn decode_directed(env: &Envelope<'_>) -> Option<(u64, DirectedOp)> {
    let (request, rest) = request_of(env.payload)?;
    let op = match env.kind {
        Kind::Send => {
            let (len, rest) = rest.split_at_checked(2)?;
            let (event, data) =
                rest.split_at_checked(usize::from(u16::from_be_bytes([len[0], len[1]])))?;
            DirectedOp::Send {
                event: std::str::from_utf8(event).ok()?.to_string(),
                data: std::str::from_utf8(data).ok()?.to_string(),
            }
        }
        Kind::Kick => DirectedOp::Kick {
            reason: std::str::from_utf8(rest).ok()?.to_string(),
        },
        _ => return None,
    };
    Some((request, op))
}

/// The answer to request `request`.
pub fn encode_result(out: &mut Vec<u8>, origin: &str, request: u64, delivered: bool) {
    encode_request(out, origin, Kind::Result, request, &[u8::from(delivered)]);
}

pub fn decode_result(env: &Envelope<'_>) -> Option<(u64, bool)> {
    let (request, rest) = request_of(env.payload)?;
    Some((request, *rest.first()? == 1))
}

/// An envelope whose payload is a request id and then `rest`.
pub fn encode_request(out: &mut Vec<u8>, origin: &str, kind: Kind, request: u64, rest: &[u8]) {
    let mut payload = request.to_be_bytes().to_vec();
    payload.extend_from_slice(rest);
    encode(out, origin, kind, "", &payload);
}

pub fn request_of(payload: &[u8]) -> Option<(u64, &[u8])> {
    let (id, rest) = payload.split_at_checked(8)?;
    Some((u64::from_be_bytes(id.try_into().ok()?), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directed_round_trips() {
        let send = Directed {
            node: "b".into(),
            request: 9,
            client: "b.1000000".into(),
            op: DirectedOp::Send {
                event: "hi".into(),
                data: "[1]".into(),
            },
        };
        let mut out = Vec::new();
        encode_directed(&mut out, "a", &send);
        let env = decode(&out).unwrap();
        assert_eq!(
            (env.origin, env.kind, env.room),
            ("a", Kind::Send, "b.1000000")
        );
        assert_eq!(decode_directed(&env), Some((9, send.op)));
        out.clear();
        encode_result(&mut out, "b", 9, true);
        assert_eq!(decode_result(&decode(&out).unwrap()), Some((9, true)));
    }

    #[test]
    fn round_trip_and_malformed_input() {
        let mut out = Vec::new();
        encode(
            &mut out,
            "pi-1",
            Kind::Publish,
            "lobby",
            br#"{"event":"e"}"#,
        );
        let env = decode(&out).unwrap();
        assert_eq!(
            env,
            Envelope {
                origin: "pi-1",
                kind: Kind::Publish,
                room: "lobby",
                payload: br#"{"event":"e"}"#
            }
        );
        for cut in 0..9 {
            assert_eq!(decode(&out[..cut]), None, "cut {cut}");
        }
        assert_eq!(decode(b"\x01aq\x00\x00"), None);
        assert_eq!(decode(b"\x01\xffh\x00\x00"), None);
    }
}
