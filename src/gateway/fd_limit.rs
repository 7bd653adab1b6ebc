//! Running out of file descriptors while accepting (EMFILE, ENFILE): a
//! spare descriptor to answer waiting clients 503 with, the episodes logged
//! once each, and the pause that keeps the loop from spinning on `accept`.
//!
//! Linux's `accept` takes a descriptor before it looks at the queue, so at
//! the limit it fails even when no client waits: retried at once, the loop
//! spins. Instead the shell frees the spare, accepts one waiting client on
//! it, answers 503 and takes the spare back, until the queue is empty; when
//! that cannot finish (no spare, or a pass's worth of clients), listening
//! pauses until a socket closes or `ACCEPT_PAUSE_MS` passes.

use std::fs::File;
use std::io;

/// The longest a listener waits at the descriptor limit before trying again.
pub const ACCEPT_PAUSE_MS: u64 = 100;

/// Whether `accept` failed for want of a descriptor (per process or system).
pub fn is_fd_limit(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// One descriptor held in reserve (`/dev/null`, opened at start).
pub struct Spare {
    file: Option<File>,
}

impl Spare {
    /// Opens the spare; without one (no `/dev/null`) the limit is still met
    /// by pausing, only without the 503.
    pub fn open() -> Spare {
        let file = File::open("/dev/null")
            .map_err(|e| log::warn!("no spare file descriptor (/dev/null: {e})"))
            .ok();
        Spare { file }
    }

    /// Runs `use_it` with the spare descriptor closed, then opens it again;
    /// `None` when no spare is held (it is tried again first).
    pub fn lend<T>(&mut self, use_it: impl FnOnce() -> T) -> Option<T> {
        if self.file.is_none() {
            self.file = File::open("/dev/null").ok();
        }
        self.file.take()?;
        let value = use_it();
        self.file = File::open("/dev/null").ok();
        Some(value)
    }
}

/// What to log about the descriptor limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// The first failure of an episode (warn).
    Started,
    /// A client accepted again after `after_ms`, `refused` clients having
    /// been answered 503 meanwhile (info).
    Ended { after_ms: u64, refused: u64 },
}

/// Episodes at the descriptor limit: from the first failed `accept` to the
/// next pass over a listener that ends without one (at the limit Linux's
/// `accept` fails even when no client waits, so that pass proves a
/// descriptor free). Pure: time is passed in.
#[derive(Debug, Default)]
pub struct Episodes {
    since_ms: Option<u64>,
    refused: u64,
}

impl Episodes {
    /// `accept` failed for want of a descriptor.
    pub fn exhausted(&mut self, now_ms: u64) -> Option<Note> {
        if self.since_ms.is_some() {
            return None;
        }
        self.since_ms = Some(now_ms);
        self.refused = 0;
        Some(Note::Started)
    }

    /// A client was answered 503 on the spare descriptor.
    pub fn refused(&mut self) {
        self.refused += 1;
    }

    /// A pass over a listener ended without running out of descriptors.
    pub fn below_limit(&mut self, now_ms: u64) -> Option<Note> {
        let since = self.since_ms.take()?;
        Some(Note::Ended {
            after_ms: now_ms.saturating_sub(since),
            refused: self.refused,
        })
    }
}

/// Listening paused: until a socket closes or `resume_at_ms`. Pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    pub resume_at_ms: u64,
    /// The count of closed sockets when the pause began.
    closed: u64,
}

impl Pause {
    pub fn new(now_ms: u64, closed: u64) -> Pause {
        Pause {
            resume_at_ms: now_ms + ACCEPT_PAUSE_MS,
            closed,
        }
    }

    /// Whether to try `accept` again: a descriptor was freed, or time is up.
    pub fn over(&self, now_ms: u64, closed: u64) -> bool {
        closed != self.closed || now_ms >= self.resume_at_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_is_noted_once_at_its_start_and_once_at_its_end() {
        let mut episodes = Episodes::default();
        assert_eq!(episodes.below_limit(5), None, "no episode, nothing to say");
        assert_eq!(episodes.exhausted(1_000), Some(Note::Started));
        assert_eq!(episodes.exhausted(1_100), None);
        episodes.refused();
        episodes.refused();
        assert_eq!(episodes.exhausted(1_900), None);
        assert_eq!(
            episodes.below_limit(3_500),
            Some(Note::Ended {
                after_ms: 2_500,
                refused: 2
            })
        );
        assert_eq!(episodes.below_limit(3_600), None);
        // The next episode counts from zero.
        assert_eq!(episodes.exhausted(9_000), Some(Note::Started));
        assert_eq!(
            episodes.below_limit(9_000),
            Some(Note::Ended {
                after_ms: 0,
                refused: 0
            })
        );
    }

    #[test]
    fn a_pause_ends_when_a_socket_closes_or_its_time_is_up() {
        let pause = Pause::new(1_000, 7);
        assert_eq!(pause.resume_at_ms, 1_000 + ACCEPT_PAUSE_MS);
        assert!(!pause.over(1_000, 7));
        assert!(!pause.over(1_000 + ACCEPT_PAUSE_MS - 1, 7));
        assert!(pause.over(1_001, 8), "a freed descriptor resumes at once");
        assert!(pause.over(1_000 + ACCEPT_PAUSE_MS, 7));
    }

    #[test]
    fn only_emfile_and_enfile_are_the_descriptor_limit() {
        assert!(is_fd_limit(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(is_fd_limit(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!is_fd_limit(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
        assert!(!is_fd_limit(&io::ErrorKind::Other.into()));
    }

    #[test]
    fn the_spare_is_lent_and_held_again_after() {
        let mut spare = Spare::open();
        assert!(spare.file.is_some());
        assert_eq!(spare.lend(|| 7), Some(7));
        assert!(spare.file.is_some(), "opened again after use");
        spare.file = None;
        assert_eq!(spare.lend(|| 8), Some(8), "a lost spare is opened again");
    }
}
