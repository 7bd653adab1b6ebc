//! Server frames out: headers (with RSV1 for a compressed message) and close payloads.

use std::io::Cursor;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Opcodes the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutKind {
    Text,
    Binary,
    Ping,
    Pong,
    Close,
}

/// A server frame header (unmasked, final): up to 10 bytes, kept inline.
#[derive(Debug, Clone, Copy)]
pub struct OutHeader {
    bytes: [u8; 10],
    len: u8,
}

impl OutHeader {
    pub fn new(kind: OutKind, payload_len: usize) -> OutHeader {
        OutHeader::with_rsv1(kind, payload_len, false)
    }

    /// The header of a message whose payload is compressed (RFC 7692 §6: RSV1 set).
    pub fn compressed(kind: OutKind, payload_len: usize) -> OutHeader {
        OutHeader::with_rsv1(kind, payload_len, true)
    }

    fn with_rsv1(kind: OutKind, payload_len: usize, rsv1: bool) -> OutHeader {
        let opcode = match kind {
            OutKind::Text => OpCode::Data(Data::Text),
            OutKind::Binary => OpCode::Data(Data::Binary),
            OutKind::Ping => OpCode::Control(Control::Ping),
            OutKind::Pong => OpCode::Control(Control::Pong),
            OutKind::Close => OpCode::Control(Control::Close),
        };
        let header = FrameHeader {
            is_final: true,
            rsv1,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: None,
        };
        let mut bytes = [0u8; 10];
        let mut cursor = Cursor::new(&mut bytes[..]);
        // Ten bytes always hold an unmasked header, so formatting cannot fail.
        let len = match header.format(payload_len as u64, &mut cursor) {
            Ok(()) => cursor.position() as u8,
            Err(_) => 0,
        };
        OutHeader { bytes, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// A close frame's payload: status code and a reason cut to fit a control frame.
pub fn close_payload(code: u16, reason: &str) -> ([u8; 125], usize) {
    let mut out = [0u8; 125];
    out[..2].copy_from_slice(&code.to_be_bytes());
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    out[2..2 + cut].copy_from_slice(&reason.as_bytes()[..cut]);
    (out, 2 + cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_headers() {
        assert_eq!(OutHeader::new(OutKind::Text, 5).as_bytes(), [0x81, 5]);
        assert_eq!(
            OutHeader::new(OutKind::Binary, 300).as_bytes(),
            [0x82, 126, 1, 44]
        );
        assert_eq!(OutHeader::new(OutKind::Close, 2).as_bytes(), [0x88, 2]);
        assert_eq!(
            OutHeader::compressed(OutKind::Text, 5).as_bytes(),
            [0xc1, 5]
        );
        assert_eq!(OutHeader::new(OutKind::Text, 70000).as_bytes().len(), 10);
        let (p, n) = close_payload(1001, "going away");
        assert_eq!(&p[..n], b"\x03\xe9going away");
        let long = "é".repeat(100);
        let (_, n) = close_payload(1000, &long);
        assert!(n <= 125);
    }
}
