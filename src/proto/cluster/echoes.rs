//! This node's publish scripts whose echo (the numbered message on the
//! room's channel, which is how local members get it) has not come yet.
//! When the command link is lost before a script's reply and its echo has
//! not come, the message goes to local members unnumbered; should the echo
//! come after all, it is passed over (no double delivery).
//!
//! Echoes of one node's scripts come in the order the scripts ran, which is
//! the order they were sent: an echo matches the oldest entry of its room
//! with the same message; older entries of the room never echo (their
//! script failed or never ran) and are dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;

/// Entries kept at most; beyond, a publish is not tracked (and a lost
/// link loses it for local members, as without this).
const MAX_TRACKED: usize = 65_536;

/// A script's tag and its message as sent (without its offset).
type Sent = (u64, Rc<[u8]>);

#[derive(Default)]
pub struct Echoes {
    /// (tag, the message as sent, without its offset) per room, in send order.
    by_room: HashMap<Rc<str>, VecDeque<Sent>>,
    len: usize,
    /// Sent, not echoed.
    unechoed: HashSet<u64>,
    /// Delivered unnumbered when the link was lost: their echo is passed over.
    orphaned: HashSet<u64>,
}

impl Echoes {
    /// The publish script for `body` went out under `tag`.
    pub fn sent(&mut self, tag: u64, room: &Rc<str>, body: &Rc<[u8]>) {
        if self.len >= MAX_TRACKED {
            return;
        }
        let queue = self.by_room.entry(room.clone()).or_default();
        queue.push_back((tag, body.clone()));
        self.len += 1;
        self.unechoed.insert(tag);
    }

    /// The script went out again (NOSCRIPT) under `new`: it now runs after
    /// what was sent meanwhile.
    pub fn resent(&mut self, old: u64, new: u64, room: &str) {
        if !self.unechoed.remove(&old) {
            return;
        }
        let Some(queue) = self.by_room.get_mut(room) else {
            return;
        };
        if let Some(entry) = queue
            .iter()
            .position(|(tag, _)| *tag == old)
            .and_then(|at| queue.remove(at))
        {
            queue.push_back((new, entry.1));
            self.unechoed.insert(new);
        }
    }

    /// The script's reply is lost (or an error): true when its echo has not
    /// come, so local members get the message now.
    pub fn lost(&mut self, tag: u64) -> bool {
        let unechoed = self.unechoed.remove(&tag);
        if unechoed {
            self.orphaned.insert(tag);
        }
        unechoed
    }

    /// This node's echo of `echo` in `room` came: true when the message was
    /// delivered already (when the link was lost).
    pub fn echoed(&mut self, room: &str, echo: &[u8]) -> bool {
        let Some(queue) = self.by_room.get_mut(room) else {
            return false;
        };
        let Some(at) = queue.iter().position(|(_, sent)| is_echo_of(echo, sent)) else {
            return false;
        };
        let mut delivered = false;
        for (tag, _) in queue.drain(..=at) {
            self.len -= 1;
            self.unechoed.remove(&tag);
            delivered = self.orphaned.remove(&tag);
        }
        if queue.is_empty() {
            self.by_room.remove(room);
        }
        delivered
    }

    /// The subscriber link was lost: the echoes of scripts that already ran
    /// will not come.
    pub fn on_sub_down(&mut self) {
        let orphaned = std::mem::take(&mut self.orphaned);
        let mut len = 0;
        self.by_room.retain(|_, queue| {
            queue.retain(|(tag, _)| !orphaned.contains(tag));
            len += queue.len();
            !queue.is_empty()
        });
        self.len = len;
    }
}

/// The script's message is `sent` with `,"offset":N` before its last `}`.
fn is_echo_of(echo: &[u8], sent: &[u8]) -> bool {
    let Some(head) = sent.len().checked_sub(1).map(|n| &sent[..n]) else {
        return false;
    };
    echo.len() > sent.len()
        && echo.starts_with(head)
        && echo[head.len()..].starts_with(b",\"offset\":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: u64) -> Rc<[u8]> {
        format!("{{\"event\":\"x\",\"data\":{n}}}")
            .as_bytes()
            .into()
    }

    fn echo(n: u64, offset: u64) -> Vec<u8> {
        format!("{{\"event\":\"x\",\"data\":{n},\"offset\":{offset}}}").into_bytes()
    }

    #[test]
    fn a_lost_script_is_delivered_once_whether_or_not_its_echo_comes() {
        let room: Rc<str> = "r".into();
        let mut echoes = Echoes::default();
        for n in 1..=3 {
            echoes.sent(n, &room, &body(n));
        }
        assert!(!echoes.echoed("r", &echo(9, 1)), "no such message");
        assert!(!echoes.echoed("r", &echo(1, 1)), "1 echoed before the loss");
        assert!(!echoes.lost(1), "1 was delivered by its echo");
        assert!(echoes.lost(2) && echoes.lost(3), "2 and 3 go out now");
        assert!(
            echoes.echoed("r", &echo(3, 2)),
            "3 ran (2 did not): passed over"
        );
        assert_eq!(echoes.len, 0, "2 is dropped with it");
        echoes.sent(4, &room, &body(4));
        echoes.resent(4, 5, "r");
        assert!(echoes.lost(5));
        echoes.on_sub_down();
        assert_eq!((echoes.len, echoes.orphaned.len()), (0, 0));
        assert!(!echoes.echoed("r", &echo(4, 3)));
    }
}
