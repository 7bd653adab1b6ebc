//! Fuzzing the WebSocket frame decoder.

use crate::proto::deflate::{InflateError, Inflater};
use crate::proto::frame::{is_valid_close_code, Decoder, FrameError, WsEvent, MAX_HEADER};

/// Message limits the frame target picks from (first input byte, low 3 bits).
const FRAME_LIMITS: [usize; 8] = [1, 16, 125, 126, 256, 1000, 4096, 65536];

/// One decoded event, owned.
#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Option<(u16, String)>),
    Fragment,
    /// A compressed message that inflating refused: the close code.
    Refused(u16),
}

/// What a connection's decoder made of a byte stream.
#[derive(Debug, PartialEq, Eq, Default)]
struct Trace {
    events: Vec<Ev>,
    error: Option<FrameError>,
    /// Bytes of an incomplete frame held when the stream ended (not counted
    /// after a close or an error: the shell stops reading there).
    leftover: usize,
}

/// The frame decoder, as a server (client frames must be masked).
///
/// Input: byte 0 picks the message limit (bits 0–2), whether
/// permessage-deflate was negotiated (bit 6: RSV1 messages are then
/// inflated, bounded by the limit) and the mode (bit 7:
/// the rest is records that the harness frames and masks, so the fuzzer
/// controls the unmasked payload; otherwise the rest is the raw stream);
/// byte 1 seeds the chunk sizes. The stream is decoded whole and in chunks
/// the way the shell does it (append, decode until incomplete, keep the rest).
///
/// Invariants: no panic; both feedings give the same events and error;
/// messages within the limit, control payloads within 125 bytes, close codes
/// valid; the held bytes and the reassembly buffer stay bounded; errors are
/// only 1002, 1007 and 1009; an inflated message never exceeds the limit.
pub fn frames(data: &[u8]) {
    let [config, seed, rest @ ..] = data else {
        return;
    };
    let max = FRAME_LIMITS[usize::from(config & 7)];
    let deflate = config & 0x40 != 0;
    let stream = if config & 0x80 != 0 {
        frame_records(rest)
    } else {
        rest.to_vec()
    };
    let whole = decode_stream(&stream, max, deflate, std::iter::once(stream.len().max(1)));
    let mut state = u32::from(*seed) | 0x100;
    let limit = usize::from(*seed).max(1) * 2;
    let chunks = std::iter::from_fn(move || {
        // xorshift: chunk sizes of 1 to 2 × seed bytes.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        Some(1 + state as usize % limit)
    });
    let chunked = decode_stream(&stream, max, deflate, chunks);
    assert_eq!(whole, chunked, "decoding depends on how the bytes arrive");
}

/// Builds masked client frames from records `[b0, ctl, payload...]`: `b0` is
/// the first header byte (FIN, RSV, opcode); `ctl` bits 0–5 are the payload
/// length (times 40 with bit 6, which also forces a 16-bit length); bit 7
/// sends the frame unmasked. A record cut short by the end of the input
/// declares its full length (an incomplete frame).
fn frame_records(mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 2);
    while let [b0, ctl, rest @ ..] = input {
        let long = ctl & 0x40 != 0;
        let len = usize::from(ctl & 0x3f) * if long { 40 } else { 1 };
        let masked = ctl & 0x80 == 0;
        let take = len.min(rest.len());
        let (payload, tail) = rest.split_at(take);
        input = tail;
        out.push(*b0);
        let mask_bit = if masked { 0x80 } else { 0 };
        if long || len > 125 {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(mask_bit | len as u8);
        }
        let mask = [b0 ^ 0x5a, *ctl, 0x3c, 0xa7];
        if masked {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
    }
    out
}

/// Feeds `stream` in pieces of the given sizes, as the shell's read loop does.
fn decode_stream(
    stream: &[u8],
    max: usize,
    deflate: bool,
    chunks: impl Iterator<Item = usize>,
) -> Trace {
    let mut decoder = if deflate {
        Decoder::with_compression()
    } else {
        Decoder::default()
    };
    let mut inflater = Inflater::default();
    let mut held: Vec<u8> = Vec::new();
    let mut trace = Trace::default();
    let mut pos = 0;
    for size in chunks {
        if pos >= stream.len() {
            break;
        }
        let end = pos.saturating_add(size).min(stream.len());
        held.extend_from_slice(&stream[pos..end]);
        pos = end;
        let mut consumed = 0;
        loop {
            let available = held.len() - consumed;
            match decoder.decode(&mut held[consumed..], max) {
                Ok(None) => break,
                Ok(Some((event, used))) => {
                    assert!(
                        used > 0 && used <= available,
                        "consumed {used} of {available}"
                    );
                    let event = owned_event(event, max, &mut inflater);
                    let closed = matches!(event, Ev::Close(_));
                    trace.events.push(event);
                    consumed += used;
                    // A message never needs more than twice its bound.
                    assert!(
                        decoder.buffered() <= 2 * max.max(256),
                        "reassembly buffer of {} bytes for a limit of {max}",
                        decoder.buffered()
                    );
                    if closed {
                        // The shell reads nothing after the peer's close.
                        return trace;
                    }
                }
                Err(error) => {
                    assert!(matches!(error.close_code(), 1002 | 1007 | 1009));
                    trace.error = Some(error);
                    return trace;
                }
            }
        }
        held.drain(..consumed);
        // What is held is one incomplete frame: a header and at most a message.
        assert!(
            held.len() < MAX_HEADER + max.max(125),
            "holding {} bytes for a limit of {max}",
            held.len()
        );
    }
    trace.leftover = held.len();
    trace
}

fn owned_event(event: WsEvent<'_>, max: usize, inflater: &mut Inflater) -> Ev {
    match event {
        WsEvent::Compressed { text, payload } => match inflater.inflate(payload, max) {
            Ok(raw) => {
                assert!(raw.len() <= max, "inflated {} bytes over {max}", raw.len());
                match std::str::from_utf8(raw) {
                    Ok(raw) if text => Ev::Text(raw.to_string()),
                    Err(_) if text => Ev::Refused(FrameError::InvalidUtf8.close_code()),
                    _ => Ev::Binary(raw.to_vec()),
                }
            }
            Err(InflateError::TooBig) => Ev::Refused(FrameError::TooBig.close_code()),
            Err(InflateError::Corrupt) => Ev::Refused(FrameError::BadCompression.close_code()),
        },
        WsEvent::Text(text) => {
            assert!(text.len() <= max, "text of {} bytes over {max}", text.len());
            Ev::Text(text.to_string())
        }
        WsEvent::Binary(bytes) => {
            assert!(
                bytes.len() <= max,
                "binary of {} bytes over {max}",
                bytes.len()
            );
            Ev::Binary(bytes.to_vec())
        }
        WsEvent::Ping(payload) => {
            assert!(payload.len() <= 125, "ping of {} bytes", payload.len());
            Ev::Ping(payload.to_vec())
        }
        WsEvent::Pong => Ev::Pong,
        WsEvent::Close(status) => {
            if let Some((code, reason)) = status {
                assert!(is_valid_close_code(code), "close code {code}");
                assert!(
                    reason.len() <= 123,
                    "close reason of {} bytes",
                    reason.len()
                );
            }
            Ev::Close(status.map(|(code, reason)| (code, reason.to_string())))
        }
        WsEvent::Fragment => Ev::Fragment,
    }
}
