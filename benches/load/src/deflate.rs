//! permessage-deflate for the load tool's clients (`--deflate`, RFC 7692):
//! the offer they make, the check that the server agreed, and a message
//! compressed once at start. A client may always compress each message on
//! its own (no context takeover on its side), so every copy of a message
//! compresses to the same bytes and one pre-built frame serves every send.

use miniz_oxide::deflate::core::{
    compress as deflate, create_comp_flags_from_zip_params, CompressorOxide, TDEFLFlush,
    TDEFLStatus,
};

/// The request header line of the offer, as browsers make it.
pub const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
/// The first header byte's RSV1 bit: the message is compressed.
pub const RSV1: u8 = 0x40;
/// zlib's default level, which browsers use.
const LEVEL: i32 = 6;

/// The payload of one compressed message: a raw deflate stream ended with a
/// sync flush, without the flush's last four bytes (RFC 7692 §7.2.1).
pub fn compress(raw: &[u8]) -> Vec<u8> {
    let mut state = CompressorOxide::new(create_comp_flags_from_zip_params(LEVEL, -15, 0));
    let mut out = vec![0u8; raw.len() + 64];
    let (mut read, mut written) = (0, 0);
    loop {
        let (status, used, produced) = deflate(
            &mut state,
            &raw[read..],
            &mut out[written..],
            TDEFLFlush::Sync,
        );
        read += used;
        written += produced;
        if status == TDEFLStatus::Okay && read == raw.len() && written < out.len() {
            break;
        }
        out.resize(out.len() * 2, 0);
    }
    out.truncate(written);
    if out.ends_with(&[0x00, 0x00, 0xff, 0xff]) {
        out.truncate(written - 4);
    }
    out
}

/// Whether the server's response head agreed to permessage-deflate.
pub fn agreed(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-extensions")
                && value.trim_start().starts_with("permessage-deflate")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_messages_inflate_back() {
        let json = br#"{"id":1,"name":"sensor","value":21.5}"#.repeat(50);
        let mut stream = compress(&json);
        assert!(stream.len() * 5 < json.len(), "{}", stream.len());
        // The tail a receiver puts back, then an empty final block to end the stream.
        stream.extend_from_slice(&[0x00, 0x00, 0xff, 0xff, 0x03, 0x00]);
        let back = miniz_oxide::inflate::decompress_to_vec(&stream);
        assert_eq!(back.ok().as_deref(), Some(&json[..]));
    }

    #[test]
    fn the_answer_is_read_from_the_head() {
        let yes = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                    sec-websocket-extensions: permessage-deflate; server_no_context_takeover\r\n\r\n";
        assert!(agreed(yes));
        assert!(!agreed(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        ));
    }
}
