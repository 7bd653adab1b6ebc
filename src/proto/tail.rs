//! The dashboard's live tail of room messages (SPEC §14): a few viewers, a
//! sampled rate, truncated text. With no viewer it does nothing at all, so
//! the hub asks [`Tail::is_watched`] before touching a message.

use crate::proto::envelope::JsonWriter;
use crate::proto::rooms::ConnKey;
use std::rc::Rc;

/// Dashboards that may watch the tail at once.
pub const MAX_VIEWERS: usize = 4;
/// Room messages a viewer gets per second at most; the rest are skipped (and counted).
pub const MAX_SAMPLES_PER_SECOND: u32 = 10;
/// Longest text of one sampled message, in bytes.
pub const MAX_SAMPLE_BYTES: usize = 256;

#[derive(Debug, Default)]
pub struct Tail {
    viewers: Vec<ConnKey>,
    /// The second (of monotonic time) the samples below were taken in.
    second: u64,
    sent_this_second: u32,
    /// Messages skipped since the last sample went out.
    skipped: u64,
}

impl Tail {
    /// Whether anyone watches: the only work done per room message without viewers.
    #[inline]
    pub fn is_watched(&self) -> bool {
        !self.viewers.is_empty()
    }

    pub fn has_room(&self) -> bool {
        self.viewers.len() < MAX_VIEWERS
    }

    pub fn viewers(&self) -> &[ConnKey] {
        &self.viewers
    }

    pub fn is_viewer(&self, key: ConnKey) -> bool {
        self.viewers.contains(&key)
    }

    /// Adds a viewer; false when [`MAX_VIEWERS`] already watch.
    pub fn add(&mut self, key: ConnKey) -> bool {
        if self.is_viewer(key) {
            return true;
        }
        if !self.has_room() {
            return false;
        }
        self.viewers.push(key);
        true
    }

    pub fn remove(&mut self, key: ConnKey) {
        self.viewers.retain(|&k| k != key);
    }

    /// The `dashboard.tail` message for one room message at `now_ms`, or
    /// `None` when this second's samples are spent (then it is counted as
    /// skipped, and the next sample says how many were).
    pub fn sample(&mut self, room: &str, message: &[u8], now_ms: u64) -> Option<Rc<[u8]>> {
        let second = now_ms / 1000;
        if second != self.second {
            self.second = second;
            self.sent_this_second = 0;
        }
        if self.sent_this_second >= MAX_SAMPLES_PER_SECOND {
            self.skipped += 1;
            return None;
        }
        self.sent_this_second += 1;
        let text = String::from_utf8_lossy(message);
        let shown = truncate(&text, MAX_SAMPLE_BYTES);
        let mut out = Vec::with_capacity(96 + room.len() + shown.len());
        let mut msg = JsonWriter::object(&mut out);
        let mut data = msg.str("event", "dashboard.tail").begin("data");
        data.str("room", room)
            .str("text", shown)
            .u64("bytes", message.len() as u64)
            .bool("truncated", shown.len() < text.len())
            .u64("skipped", std::mem::take(&mut self.skipped));
        data.end();
        msg.end();
        Some(out.into())
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parsed(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn at_most_max_viewers_watch() {
        let mut tail = Tail::default();
        assert!(!tail.is_watched());
        for key in 0..MAX_VIEWERS {
            assert!(tail.add(key));
        }
        assert!(tail.add(0), "a viewer already watching stays");
        assert!(!tail.add(99));
        tail.remove(2);
        assert!(tail.add(99));
        assert!(tail.is_viewer(99) && !tail.is_viewer(2));
    }

    #[test]
    fn samples_are_rate_bounded_and_count_the_skipped() {
        let mut tail = Tail::default();
        tail.add(1);
        let sent = (0..25)
            .filter(|_| tail.sample("r", b"{}", 5_000).is_some())
            .count();
        assert_eq!(sent, MAX_SAMPLES_PER_SECOND as usize);
        let next = tail.sample("r", b"{\"a\":1}", 6_000).unwrap();
        let next = parsed(&next);
        assert_eq!(next["event"], "dashboard.tail");
        assert_eq!(next["data"]["skipped"], 15);
        assert_eq!(next["data"]["text"], "{\"a\":1}");
        assert_eq!(next["data"]["truncated"], false);
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let mut tail = Tail::default();
        tail.add(1);
        let long = format!("{{\"data\":\"{}\"}}", "é".repeat(400));
        let sample = parsed(&tail.sample("r", long.as_bytes(), 0).unwrap());
        let text = sample["data"]["text"].as_str().unwrap();
        assert!(text.len() <= MAX_SAMPLE_BYTES && text.len() >= MAX_SAMPLE_BYTES - 3);
        assert_eq!(sample["data"]["truncated"], true);
        assert_eq!(sample["data"]["bytes"], long.len());
        // Bytes that are not UTF-8 (never from the core, but) do not panic.
        assert!(tail.sample("r", &[0xff; 300], 0).is_some());
    }
}
