//! The sans-IO part of a program bridged in as a host (SPEC §11): JSON lines
//! cut from its output with a bounded length, and the restart pauses.

/// Cuts a byte stream into lines of at most `max` bytes (without the `\n`).
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
}

/// What a pass over the buffered bytes found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Complete(&'a [u8]),
    /// A line longer than `max`: the stream cannot be trusted any more.
    Overlong,
}

impl LineSplitter {
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter {
            buf: Vec::new(),
            max,
        }
    }

    /// Bytes read; call `lines` after each push.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Hands each complete line to `each` (a trailing `\r` removed), keeps
    /// the unfinished rest; `Err(Overlong)` when a line passes `max`.
    pub fn lines(&mut self, mut each: impl FnMut(&[u8])) -> Result<(), Line<'static>> {
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let mut line = &self.buf[start..start + pos];
            if line.len() > self.max {
                self.buf.clear();
                return Err(Line::Overlong);
            }
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                each(line);
            }
            start += pos + 1;
        }
        self.buf.drain(..start);
        if self.buf.len() > self.max {
            self.buf.clear();
            return Err(Line::Overlong);
        }
        Ok(())
    }

    /// Forgets a partial line (the program was restarted).
    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

/// First pause before a restart.
pub const FIRST_PAUSE_MS: u64 = 1_000;
/// Longest pause.
pub const MAX_PAUSE_MS: u64 = 30_000;
/// A program that ran at least this long starts again after the first pause.
pub const STABLE_MS: u64 = 10_000;

/// The restart pause: 1 s, doubling up to 30 s while the program keeps
/// dying within 10 s of starting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next_ms: FIRST_PAUSE_MS,
        }
    }
}

impl Backoff {
    /// The program ran for `ran_ms`: how long to wait before starting it again.
    pub fn pause_after(&mut self, ran_ms: u64) -> u64 {
        if ran_ms >= STABLE_MS {
            self.next_ms = FIRST_PAUSE_MS;
        }
        let pause = self.next_ms;
        self.next_ms = (self.next_ms * 2).min(MAX_PAUSE_MS);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(s: &mut LineSplitter, bytes: &[u8]) -> Result<Vec<String>, Line<'static>> {
        s.push(bytes);
        let mut out = Vec::new();
        s.lines(|l| out.push(String::from_utf8_lossy(l).into_owned()))?;
        Ok(out)
    }

    #[test]
    fn lines_are_cut_and_bounded() {
        let mut s = LineSplitter::new(8);
        assert_eq!(cut(&mut s, b"{\"a\":1}\n{\"b\"").unwrap(), ["{\"a\":1}"]);
        assert_eq!(cut(&mut s, b":2}\r\n\n  \n").unwrap(), ["{\"b\":2}"]);
        assert_eq!(cut(&mut s, b"12345678\n").unwrap(), ["12345678"]);
        assert_eq!(cut(&mut s, b"123456789\n"), Err(Line::Overlong));
        assert_eq!(cut(&mut s, b"ok\n").unwrap(), ["ok"]);
        assert_eq!(cut(&mut s, b"123456789"), Err(Line::Overlong));
    }

    #[test]
    fn pauses_double_while_it_dies_young() {
        let mut b = Backoff::default();
        let pauses: Vec<u64> = (0..7).map(|_| b.pause_after(100)).collect();
        assert_eq!(pauses, [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(b.pause_after(STABLE_MS), 1000);
        assert_eq!(b.pause_after(5), 2000);
    }
}
