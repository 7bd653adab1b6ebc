//! Compressing and inflating whole messages (RFC 7692 §7.2) with
//! `miniz_oxide`, each message on its own (no context takeover).

use miniz_oxide::deflate::core::{
    compress, create_comp_flags_from_zip_params, CompressorOxide, TDEFLFlush, TDEFLStatus,
};
use miniz_oxide::inflate::core::inflate_flags::{
    TINFL_FLAG_HAS_MORE_INPUT, TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
};
use miniz_oxide::inflate::core::{decompress, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

/// The first header byte's RSV1 bit: set on the first frame of a compressed message.
pub const RSV1: u8 = 0x40;
/// What a sync flush ends with; RFC 7692 §7.2.1 strips it, §7.2.2 puts it back.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// zlib's default level: browsers and uWebSockets use it too.
const LEVEL: i32 = 6;

/// The process's one compressor (its tables are about 300 KiB, allocated once).
pub struct Deflater {
    state: Box<CompressorOxide>,
}

impl Default for Deflater {
    fn default() -> Self {
        // Negative window bits: a raw deflate stream, no zlib wrapper.
        let flags = create_comp_flags_from_zip_params(LEVEL, -15, 0);
        Deflater {
            state: Box::new(CompressorOxide::new(flags)),
        }
    }
}

impl Deflater {
    /// The compressed payload of one message, or `None` when compressing
    /// would not make it smaller (it is then sent as it is).
    pub fn compress(&mut self, raw: &[u8]) -> Option<Vec<u8>> {
        self.state.reset();
        let mut out = vec![0u8; raw.len() / 2 + 64];
        let (mut read, mut written) = (0, 0);
        loop {
            let (status, used, produced) = compress(
                &mut self.state,
                &raw[read..],
                &mut out[written..],
                TDEFLFlush::Sync,
            );
            read += used;
            written += produced;
            match status {
                TDEFLStatus::Okay if read == raw.len() && written < out.len() => break,
                TDEFLStatus::Okay => {
                    if written >= raw.len() + SYNC_TAIL.len() {
                        return None;
                    }
                    out.resize(out.len() * 2, 0);
                }
                _ => return None,
            }
        }
        out.truncate(written);
        if !out.ends_with(&SYNC_TAIL) {
            return None;
        }
        out.truncate(written - SYNC_TAIL.len());
        (out.len() < raw.len()).then_some(out)
    }
}

/// Why a compressed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the message limit: 1009, and inflating stopped there.
    TooBig,
    /// Not a deflate stream: 1007 (invalid payload data).
    Corrupt,
}

/// The process's one inflater and its output buffer, reused by every
/// connection in turn: no connection holds inflate state between messages.
#[derive(Default)]
pub struct Inflater {
    state: Box<DecompressorOxide>,
    out: Vec<u8>,
}

impl Inflater {
    /// Inflates one message. The output never grows past `max` bytes (plus
    /// one to see that it would): a decompression bomb stops there.
    pub fn inflate(&mut self, compressed: &[u8], max: usize) -> Result<&[u8], InflateError> {
        self.state.init();
        self.out.clear();
        let limit = max.saturating_add(1);
        let start = compressed.len().saturating_mul(4).max(1024).min(limit);
        self.out.resize(start, 0);
        let flags = TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF | TINFL_FLAG_HAS_MORE_INPUT;
        let mut produced = 0;
        for input in [compressed, &SYNC_TAIL[..]] {
            let mut read = 0;
            loop {
                let (status, used, wrote) = decompress(
                    &mut self.state,
                    &input[read..],
                    &mut self.out,
                    produced,
                    flags,
                );
                read += used;
                produced += wrote;
                if produced > max {
                    return Err(InflateError::TooBig);
                }
                match status {
                    // The tail ends the message's last block without a final one.
                    TINFLStatus::NeedsMoreInput if read >= input.len() => break,
                    // A client may end a message with a final block (§7.2.3.4).
                    TINFLStatus::Done => return Ok(self.finish(produced)),
                    TINFLStatus::HasMoreOutput if self.out.len() < limit => {
                        let grown = self.out.len().saturating_mul(2).min(limit);
                        self.out.resize(grown, 0);
                    }
                    TINFLStatus::HasMoreOutput => return Err(InflateError::TooBig),
                    _ => return Err(InflateError::Corrupt),
                }
            }
        }
        Ok(self.finish(produced))
    }

    fn finish(&mut self, produced: usize) -> &[u8] {
        &self.out[..produced]
    }

    /// Lets go of the output buffer after a large message, so that the
    /// process does not keep its peak.
    pub fn release_large(&mut self, keep: usize) {
        if self.out.capacity() > keep {
            self.out = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(raw: &[u8]) -> Vec<u8> {
        let compressed = Deflater::default().compress(raw).expect("compressible");
        Inflater::default()
            .inflate(&compressed, raw.len())
            .expect("inflates")
            .to_vec()
    }

    #[test]
    fn round_trips_and_shrinks_json() {
        let json = r#"{"event":"tick","data":{"price":101.5,"symbol":"ACME"}}"#.repeat(40);
        assert_eq!(round_trip(json.as_bytes()), json.as_bytes());
        let compressed = Deflater::default().compress(json.as_bytes()).unwrap();
        assert!(compressed.len() * 5 < json.len(), "{}", compressed.len());
        let big: Vec<u8> = (0..200_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 7) as u8)
            .collect();
        assert_eq!(round_trip(&big), big);
    }

    #[test]
    fn incompressible_goes_plain() {
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert_eq!(Deflater::default().compress(&noise), None);
    }

    #[test]
    fn rfc_7692_examples() {
        // §7.2.3.1: "Hello" compressed, and the same with a final block (§7.2.3.4).
        let mut inflater = Inflater::default();
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflater.inflate(&hello, 5), Ok(&b"Hello"[..]));
        let final_block = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(inflater.inflate(&final_block, 5), Ok(&b"Hello"[..]));
        // §7.2.3.3: an uncompressed (stored) block.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflater.inflate(&stored, 5), Ok(&b"Hello"[..]));
        assert_eq!(inflater.inflate(&hello, 4), Err(InflateError::TooBig));
        assert_eq!(
            inflater.inflate(&[0xff, 0xff, 0xff], 100),
            Err(InflateError::Corrupt)
        );
        assert_eq!(inflater.inflate(&[], 100), Ok(&b""[..]));
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 50 << 20];
        let bomb = Deflater::default().compress(&zeros).unwrap();
        assert!(bomb.len() < 100 << 10);
        let mut inflater = Inflater::default();
        assert_eq!(inflater.inflate(&bomb, 65536), Err(InflateError::TooBig));
        assert!(inflater.out.capacity() <= 2 * 65537);
    }
}
