//! `host.clients` across nodes (SPEC §9): the question goes to every live
//! node; the answer waits for all of them, or for `host.request_timeout_ms`,
//! and lists every answered node's clients. Bounded in count and bytes.

use std::collections::{BTreeMap, VecDeque};

use serde_json::value::RawValue;

use super::directed::take_due;
use crate::proto::rooms::ConnKey;

/// Gathers in progress at most (each holds up to `max_reply_bytes`); beyond,
/// `host.clients` answers with this node's clients only.
pub const MAX_GATHERS: usize = 16;

/// One `host.clients` being gathered.
#[derive(Debug)]
pub struct Gather {
    pub host: ConnKey,
    pub host_id: u64,
    pub rid: Option<Box<RawValue>>,
    pub deadline_ms: u64,
    waiting: Vec<String>,
    /// The entries so far, comma-separated, without the brackets.
    pub entries: Vec<u8>,
    max_bytes: usize,
}

impl Gather {
    /// Adds a JSON array of entries, as far as `max_bytes` allows.
    pub fn add(&mut self, list: &[u8]) {
        let inner = list
            .strip_prefix(b"[")
            .and_then(|l| l.strip_suffix(b"]"))
            .unwrap_or(b"");
        if inner.is_empty() || self.entries.len() + inner.len() + 1 > self.max_bytes {
            return;
        }
        if !self.entries.is_empty() {
            self.entries.push(b',');
        }
        self.entries.extend_from_slice(inner);
    }
}

#[derive(Debug, Default)]
pub struct Gathers {
    pending: BTreeMap<u64, Gather>,
    /// Questions to send: (node, request).
    out: VecDeque<(String, u64)>,
    next_request: u64,
}

impl Gathers {
    /// Starts gathering from `nodes`, this node's `local` list in hand;
    /// `None` when too many are pending.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        host: ConnKey,
        host_id: u64,
        rid: Option<Box<RawValue>>,
        deadline_ms: u64,
        nodes: &[String],
        local: &[u8],
        max_bytes: usize,
    ) -> Option<u64> {
        if self.pending.len() >= MAX_GATHERS {
            return None;
        }
        self.next_request += 1;
        let request = self.next_request;
        let mut gather = Gather {
            host,
            host_id,
            rid,
            deadline_ms,
            waiting: nodes.to_vec(),
            entries: Vec::new(),
            max_bytes,
        };
        gather.add(local);
        for node in nodes {
            self.out.push_back((node.clone(), request));
        }
        self.pending.insert(request, gather);
        Some(request)
    }

    pub fn take_question(&mut self) -> Option<(String, u64)> {
        self.out.pop_front()
    }

    pub fn has_questions(&self) -> bool {
        !self.out.is_empty()
    }

    /// `node` answered `request` with `list`; the gather when it is complete.
    pub fn answer(&mut self, request: u64, node: &str, list: &[u8]) -> Option<Gather> {
        let gather = self.pending.get_mut(&request)?;
        let before = gather.waiting.len();
        gather.waiting.retain(|n| n != node);
        if gather.waiting.len() < before {
            gather.add(list);
        }
        if gather.waiting.is_empty() {
            return self.pending.remove(&request);
        }
        None
    }

    pub fn expired(&mut self, now_ms: u64) -> Vec<Gather> {
        take_due(&mut self.pending, now_ms, |g| g.deadline_ms)
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.pending.values().map(|g| g.deadline_ms).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_every_node_or_times_out() {
        let mut g = Gathers::default();
        let nodes = vec!["b".to_string(), "c".to_string()];
        let r = g
            .start(1, 2, None, 100, &nodes, b"[{\"id\":1}]", 1000)
            .unwrap();
        assert_eq!(g.take_question(), Some(("b".into(), r)));
        assert!(g.answer(r, "b", b"[{\"id\":2}]").is_none());
        assert!(g.answer(r, "b", b"[{\"id\":9}]").is_none(), "answered once");
        let done = g.answer(r, "c", b"[]").unwrap();
        assert_eq!(done.entries, b"{\"id\":1},{\"id\":2}");
        let r = g.start(1, 2, None, 100, &nodes, b"[]", 1000).unwrap();
        assert_eq!(g.next_deadline(), Some(100));
        let late = g.expired(100);
        assert_eq!(late.len(), 1);
        assert!(g.answer(r, "b", b"[]").is_none());
    }
}
