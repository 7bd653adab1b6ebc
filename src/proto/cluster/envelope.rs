//! The message between nodes: `[origin length u8][origin][kind u8]
//! [room length u16 BE][room][payload]`. The payload (a room message's JSON
//! as its origin's members got it) is passed through untouched; the room
//! rides in the envelope so the receiver needs no channel parsing.

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
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Publish => b'p',
            Kind::Broadcast => b'b',
            Kind::Heartbeat => b'h',
            Kind::Bye => b'x',
        }
    }

    fn of(byte: u8) -> Option<Kind> {
        Some(match byte {
            b'p' => Kind::Publish,
            b'b' => Kind::Broadcast,
            b'h' => Kind::Heartbeat,
            b'x' => Kind::Bye,
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

#[cfg(test)]
mod tests {
    use super::*;

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
