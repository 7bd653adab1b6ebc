//! WebSocket frame codec (RFC 6455 §5), sans-IO.
//!
//! Header parsing and formatting come from `tungstenite`'s frame-level API; this
//! module adds what a server needs on top of it without holding any buffer of
//! its own while a connection is idle: unmasking in place, reassembly of
//! fragmented messages (bounded by the message limit), UTF-8 validation, and the
//! close-frame rules, and RSV1 for permessage-deflate (RFC 7692 §6).

mod out;

pub use out::{close_payload, OutHeader, OutKind};

use std::io::Cursor;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Largest header a client can send: 2 + 8 (length) + 4 (mask).
pub const MAX_HEADER: usize = 14;

/// Why a connection must be failed, as the close code it is failed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// 1002: broken framing, unmasked client frame, bad control frame, bad fragment order.
    Protocol,
    /// 1007: a text message or close reason that is not UTF-8.
    InvalidUtf8,
    /// 1009: a frame or message over the configured limit.
    TooBig,
    /// 1007: a compressed message that is not a deflate stream.
    BadCompression,
}

impl FrameError {
    pub fn close_code(self) -> u16 {
        match self {
            FrameError::Protocol => 1002,
            FrameError::InvalidUtf8 | FrameError::BadCompression => 1007,
            FrameError::TooBig => 1009,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            FrameError::Protocol => "protocol error",
            FrameError::InvalidUtf8 => "invalid utf-8",
            FrameError::TooBig => "message too big",
            FrameError::BadCompression => "invalid compressed data",
        }
    }
}

/// One decoded unit. Slices borrow the connection's read buffer (or the
/// reassembly buffer for fragmented messages) and are valid until the next call.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    /// A close frame: `None` when it carried no status code.
    Close(Option<(u16, &'a str)>),
    /// A whole message sent compressed (RSV1): still to be inflated, and
    /// for text, to be checked as UTF-8 once inflated.
    Compressed {
        text: bool,
        payload: &'a [u8],
    },
    /// A non-final fragment was absorbed; nothing to deliver yet.
    Fragment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageKind {
    Text,
    Binary,
}

/// Per-connection decoding state: only the reassembly of a fragmented message.
/// Holds no allocation unless a fragmented message is in flight.
#[derive(Debug, Default)]
pub struct Decoder {
    partial: Option<Partial>,
    /// The last call delivered a reassembled message that must be released.
    delivered: bool,
    /// permessage-deflate was negotiated: RSV1 may mark a compressed message.
    compressed_allowed: bool,
}

#[derive(Debug)]
struct Partial {
    kind: MessageKind,
    payload: Vec<u8>,
    /// Bytes of `payload` already known to be valid UTF-8 (fail fast on text).
    utf8_valid: usize,
    /// The message is compressed: its UTF-8 is checked after inflating.
    compressed: bool,
}

impl Decoder {
    /// A decoder for a connection that negotiated permessage-deflate.
    pub fn with_compression() -> Decoder {
        Decoder {
            compressed_allowed: true,
            ..Decoder::default()
        }
    }

    /// True while a fragmented message is being reassembled.
    pub fn is_mid_message(&self) -> bool {
        self.partial.is_some() && !self.delivered
    }

    /// Bytes held by the reassembly buffer.
    pub fn buffered(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.payload.capacity())
    }

    /// Decodes the first complete frame in `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold a whole frame, or the
    /// event and the number of bytes it consumed. The frame's payload is
    /// unmasked in place. `max_message` bounds both a single frame and a
    /// reassembled message: an over-long frame is refused from its header,
    /// before its payload is read.
    pub fn decode<'a>(
        &'a mut self,
        buf: &'a mut [u8],
        max_message: usize,
    ) -> Result<Option<(WsEvent<'a>, usize)>, FrameError> {
        if self.delivered {
            self.partial = None;
            self.delivered = false;
        }
        let mut cursor = Cursor::new(&buf[..]);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(None),
            Err(_) => return Err(FrameError::Protocol),
        };
        let header_len = cursor.position() as usize;
        // RSV1 marks a compressed message where permessage-deflate was
        // negotiated, and only on a message's first frame (RFC 7692 §6.1);
        // no other extension exists to give RSV2 or RSV3 a meaning (§5.2).
        let starts_message = matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
        if header.rsv1 && !(self.compressed_allowed && starts_message) {
            return Err(FrameError::Protocol);
        }
        if header.rsv2 || header.rsv3 {
            return Err(FrameError::Protocol);
        }
        // A server must fail a connection whose client frames are unmasked (§5.1).
        let Some(mask) = header.mask else {
            return Err(FrameError::Protocol);
        };
        let is_control = matches!(header.opcode, OpCode::Control(_));
        if is_control && (!header.is_final || len > 125) {
            return Err(FrameError::Protocol);
        }
        if !is_control {
            let already = self.partial.as_ref().map_or(0, |p| p.payload.len());
            if len > (max_message.saturating_sub(already)) as u64 {
                return Err(FrameError::TooBig);
            }
        }
        let total = header_len + len as usize;
        if buf.len() < total {
            return Ok(None);
        }
        let payload = &mut buf[header_len..total];
        unmask(payload, mask);
        let payload: &'a [u8] = payload;

        let event = match header.opcode {
            OpCode::Control(Control::Ping) => WsEvent::Ping(payload),
            OpCode::Control(Control::Pong) => WsEvent::Pong,
            OpCode::Control(Control::Close) => WsEvent::Close(parse_close(payload)?),
            OpCode::Control(Control::Reserved(_)) | OpCode::Data(Data::Reserved(_)) => {
                return Err(FrameError::Protocol)
            }
            OpCode::Data(Data::Text) | OpCode::Data(Data::Binary) => {
                if self.partial.is_some() {
                    // A new message may not start inside a fragmented one (§5.4).
                    return Err(FrameError::Protocol);
                }
                let kind = if header.opcode == OpCode::Data(Data::Text) {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                if header.is_final && header.rsv1 {
                    WsEvent::Compressed {
                        text: kind == MessageKind::Text,
                        payload,
                    }
                } else if header.is_final {
                    match kind {
                        MessageKind::Text => WsEvent::Text(
                            std::str::from_utf8(payload).map_err(|_| FrameError::InvalidUtf8)?,
                        ),
                        MessageKind::Binary => WsEvent::Binary(payload),
                    }
                } else {
                    let mut partial = Partial {
                        kind,
                        payload: Vec::with_capacity(payload.len().max(256)),
                        utf8_valid: 0,
                        compressed: header.rsv1,
                    };
                    partial.payload.extend_from_slice(payload);
                    partial.check_utf8(false)?;
                    self.partial = Some(partial);
                    WsEvent::Fragment
                }
            }
            OpCode::Data(Data::Continue) => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(FrameError::Protocol);
                };
                partial.payload.extend_from_slice(payload);
                partial.check_utf8(header.is_final)?;
                if header.is_final {
                    self.delivered = true;
                    let partial = self.partial.as_ref().ok_or(FrameError::Protocol)?;
                    if partial.compressed {
                        return Ok(Some((
                            WsEvent::Compressed {
                                text: partial.kind == MessageKind::Text,
                                payload: &partial.payload,
                            },
                            total,
                        )));
                    }
                    match partial.kind {
                        // check_utf8(true) validated the whole payload.
                        MessageKind::Text => WsEvent::Text(
                            std::str::from_utf8(&partial.payload)
                                .map_err(|_| FrameError::InvalidUtf8)?,
                        ),
                        MessageKind::Binary => WsEvent::Binary(&partial.payload),
                    }
                } else {
                    WsEvent::Fragment
                }
            }
        };
        Ok(Some((event, total)))
    }
}

impl Partial {
    /// Validates newly appended text so that invalid UTF-8 fails the connection
    /// at the fragment that carries it, not at the end of the message.
    fn check_utf8(&mut self, is_final: bool) -> Result<(), FrameError> {
        if self.kind != MessageKind::Text || self.compressed {
            return Ok(());
        }
        match std::str::from_utf8(&self.payload[self.utf8_valid..]) {
            Ok(_) => {
                self.utf8_valid = self.payload.len();
                Ok(())
            }
            // An incomplete sequence at the very end may be finished by the next fragment.
            Err(e) if e.error_len().is_none() && !is_final => {
                self.utf8_valid += e.valid_up_to();
                Ok(())
            }
            Err(_) => Err(FrameError::InvalidUtf8),
        }
    }
}

/// Close frame body (§5.5.1): empty, or a 2-byte status code and a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Option<(u16, &str)>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(FrameError::Protocol);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::InvalidUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Status codes a peer may send (§7.4.1, §7.4.2): 1004–1006 and 1015 are
/// reserved for local use, 1012+ are unassigned here, 3000–4999 are for
/// libraries and applications.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// XORs the 4-byte client mask over the payload, eight bytes at a time.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let (chunks, rest) = payload.as_chunks_mut::<8>();
    for chunk in chunks {
        *chunk = (u64::from_ne_bytes(*chunk) ^ wide).to_ne_bytes();
    }
    // `rest` starts at a multiple of 8, so the mask restarts at index 0.
    for (i, byte) in rest.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a masked client frame.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    const FIN_TEXT: u8 = 0x81;
    const FIN_BIN: u8 = 0x82;
    const TEXT: u8 = 0x01;
    const CONT: u8 = 0x00;
    const FIN_CONT: u8 = 0x80;
    const PING: u8 = 0x89;
    const CLOSE: u8 = 0x88;

    fn decode_all(bytes: &mut [u8], max: usize) -> Result<Vec<String>, FrameError> {
        let mut d = Decoder::default();
        let mut off = 0;
        let mut out = Vec::new();
        while let Some((ev, used)) = d.decode(&mut bytes[off..], max)? {
            out.push(format!("{ev:?}"));
            off += used;
        }
        Ok(out)
    }

    #[test]
    fn single_text_frame() {
        let mut f = client_frame(FIN_TEXT, b"hello");
        let mut d = Decoder::default();
        let (ev, used) = d.decode(&mut f, 100).unwrap().unwrap();
        assert_eq!(ev, WsEvent::Text("hello"));
        assert_eq!(used, 11);
    }

    #[test]
    fn incomplete_frame_waits_for_more() {
        let f = client_frame(FIN_TEXT, b"hello world");
        for cut in 0..f.len() {
            let mut part = f[..cut].to_vec();
            assert_eq!(
                Decoder::default().decode(&mut part, 100),
                Ok(None),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn fragmented_with_interleaved_ping() {
        let mut bytes = client_frame(TEXT, b"Hel");
        bytes.extend(client_frame(PING, b"p"));
        bytes.extend(client_frame(CONT, b"lo "));
        bytes.extend(client_frame(FIN_CONT, "wörld".as_bytes()));
        bytes.extend(client_frame(FIN_BIN, &[1, 2, 3]));
        let events = decode_all(&mut bytes, 100).unwrap();
        assert_eq!(
            events,
            [
                "Fragment",
                "Ping([112])",
                "Fragment",
                "Text(\"Hello wörld\")",
                "Binary([1, 2, 3])"
            ]
        );
    }

    #[test]
    fn utf8_split_across_fragments_is_fine_but_invalid_fails_fast() {
        let text = "€".as_bytes(); // 3 bytes
        let mut ok = client_frame(TEXT, &text[..1]);
        ok.extend(client_frame(FIN_CONT, &text[1..]));
        assert_eq!(decode_all(&mut ok, 100).unwrap()[1], "Text(\"€\")");

        let mut bad = client_frame(TEXT, &[0xce, 0xba, 0xff]);
        bad.extend(client_frame(FIN_CONT, b"x"));
        assert_eq!(decode_all(&mut bad, 100), Err(FrameError::InvalidUtf8));

        let mut bad_single = client_frame(FIN_TEXT, &[0xc0, 0x80]);
        assert_eq!(
            decode_all(&mut bad_single, 100),
            Err(FrameError::InvalidUtf8)
        );

        let mut truncated_end = client_frame(TEXT, &text[..2]);
        truncated_end.extend(client_frame(FIN_CONT, b""));
        assert_eq!(
            decode_all(&mut truncated_end, 100),
            Err(FrameError::InvalidUtf8)
        );
    }

    #[test]
    fn protocol_violations() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("unmasked", vec![0x81, 0x01, b'a']),
            ("rsv1", client_frame(0x81 | 0x40, b"a")),
            ("reserved opcode", client_frame(0x83, b"a")),
            ("reserved control", client_frame(0x8b, b"")),
            ("fragmented ping", client_frame(0x09, b"")),
            ("long ping", client_frame(PING, &[0u8; 126])),
            ("continuation first", client_frame(FIN_CONT, b"a")),
            ("close with 1 byte", client_frame(CLOSE, &[3])),
            ("close 1005", client_frame(CLOSE, &1005u16.to_be_bytes())),
            ("close 999", client_frame(CLOSE, &999u16.to_be_bytes())),
            ("close 5000", client_frame(CLOSE, &5000u16.to_be_bytes())),
            ("text inside fragment", {
                let mut b = client_frame(TEXT, b"a");
                b.extend(client_frame(FIN_TEXT, b"b"));
                b
            }),
        ];
        for (name, mut bytes) in cases {
            assert_eq!(
                decode_all(&mut bytes, 1000),
                Err(FrameError::Protocol),
                "{name}"
            );
        }
    }

    #[test]
    fn rsv1_marks_a_compressed_message_only_where_negotiated() {
        const RSV1: u8 = 0x40;
        let decode_compressed = |bytes: &mut Vec<u8>| {
            let mut d = Decoder::with_compression();
            let mut off = 0;
            let mut out = Vec::new();
            while let Some((ev, used)) = d.decode(&mut bytes[off..], 100)? {
                out.push(format!("{ev:?}"));
                off += used;
            }
            Ok::<_, FrameError>(out)
        };
        let mut single = client_frame(FIN_TEXT | RSV1, &[0xff, 0xfe]);
        assert_eq!(
            decode_compressed(&mut single).unwrap(),
            ["Compressed { text: true, payload: [255, 254] }"]
        );
        let mut fragmented = client_frame(0x02 | RSV1, &[1]);
        fragmented.extend(client_frame(PING, b""));
        fragmented.extend(client_frame(FIN_CONT, &[2]));
        assert_eq!(
            decode_compressed(&mut fragmented).unwrap(),
            [
                "Fragment",
                "Ping([])",
                "Compressed { text: false, payload: [1, 2] }"
            ]
        );
        let mut on_continuation = client_frame(TEXT, b"a");
        on_continuation.extend(client_frame(FIN_CONT | RSV1, b"b"));
        let mut on_control = client_frame(PING | RSV1, b"");
        let mut rsv2 = client_frame(FIN_TEXT | 0x20, b"a");
        for bad in [&mut on_continuation, &mut on_control, &mut rsv2] {
            assert_eq!(decode_compressed(bad), Err(FrameError::Protocol));
        }
        let mut not_negotiated = client_frame(FIN_TEXT | RSV1, b"a");
        assert_eq!(
            decode_all(&mut not_negotiated, 100),
            Err(FrameError::Protocol)
        );
    }

    #[test]
    fn close_frames() {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        let mut f = client_frame(CLOSE, &payload);
        assert_eq!(
            decode_all(&mut f, 10).unwrap(),
            ["Close(Some((1000, \"bye\")))"]
        );
        let mut empty = client_frame(CLOSE, b"");
        assert_eq!(decode_all(&mut empty, 10).unwrap(), ["Close(None)"]);
        let mut bad_reason = client_frame(CLOSE, &[0x03, 0xe8, 0xff]);
        assert_eq!(
            decode_all(&mut bad_reason, 10),
            Err(FrameError::InvalidUtf8)
        );
    }

    #[test]
    fn too_big_is_refused_from_the_header() {
        let f = client_frame(FIN_BIN, &[0u8; 200]);
        // Only the header has arrived: already refused.
        let mut head = f[..8].to_vec();
        assert_eq!(
            Decoder::default().decode(&mut head, 100),
            Err(FrameError::TooBig)
        );
        // A 2^63 length is refused without overflow.
        let mut huge = vec![
            0x82,
            0x80 | 127,
            0x7f,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            0xff,
            1,
            2,
            3,
            4,
        ];
        assert_eq!(
            Decoder::default().decode(&mut huge, 100),
            Err(FrameError::TooBig)
        );
        // Fragments that together pass the limit.
        let mut frags = client_frame(0x02, &[0u8; 60]);
        frags.extend(client_frame(FIN_CONT, &[0u8; 60]));
        assert_eq!(decode_all(&mut frags, 100), Err(FrameError::TooBig));
        // Exactly at the limit is fine.
        let mut exact = client_frame(FIN_BIN, &[7u8; 100]);
        assert_eq!(decode_all(&mut exact, 100).unwrap().len(), 1);
    }

    #[test]
    fn reassembly_buffer_is_released_after_delivery() {
        let mut bytes = client_frame(TEXT, b"ab");
        bytes.extend(client_frame(FIN_CONT, b"cd"));
        bytes.extend(client_frame(PING, b""));
        let mut d = Decoder::default();
        let mut off = 0;
        while let Some((_, used)) = d.decode(&mut bytes[off..], 100).unwrap() {
            off += used;
        }
        assert_eq!(d.buffered(), 0);
        assert!(!d.is_mid_message());
    }

    #[test]
    fn unmask_matches_bytewise() {
        let mask = [1, 2, 3, 250];
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut fast = data.clone();
            unmask(&mut fast, mask);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }
}
