//! `host.send` / `host.kick` for a client of another node (SPEC §9): the
//! request queued for that node, and the host's acknowledgement held until
//! the node answers or `host.request_timeout_ms` passes. Bounded in count
//! and bytes.

use std::collections::{BTreeMap, VecDeque};

use serde_json::value::RawValue;

use crate::proto::rooms::ConnKey;

/// Acknowledgements held at most; beyond, a remote send is answered
/// `delivered: 0` at once.
pub const MAX_PENDING: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectedOp {
    /// The client gets `{"event","data"}` (data is raw JSON).
    Send { event: String, data: String },
    /// The client gets `kicked` and close 4010.
    Kick { reason: String },
}

/// A request for another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directed {
    pub node: String,
    pub request: u64,
    pub client: String,
    pub op: DirectedOp,
}

impl Directed {
    fn cost(&self) -> usize {
        self.node.len()
            + self.client.len()
            + match &self.op {
                DirectedOp::Send { event, data } => event.len() + data.len(),
                DirectedOp::Kick { reason } => reason.len(),
            }
    }
}

/// Who waits for the answer.
#[derive(Debug)]
pub struct PendingAck {
    pub host: ConnKey,
    pub host_id: u64,
    pub rid: Option<Box<RawValue>>,
    pub deadline_ms: u64,
}

#[derive(Debug, Default)]
pub struct DirectedQueue {
    out: VecDeque<Directed>,
    out_bytes: usize,
    pending: BTreeMap<u64, PendingAck>,
    next_request: u64,
}

impl DirectedQueue {
    /// Queues `op` for `node` within `max_bytes`; false when full (the
    /// caller answers `delivered: 0`).
    pub fn push(
        &mut self,
        node: &str,
        client: &str,
        op: DirectedOp,
        ack: PendingAck,
        max_bytes: usize,
    ) -> bool {
        self.next_request += 1;
        let directed = Directed {
            node: node.to_string(),
            request: self.next_request,
            client: client.to_string(),
            op,
        };
        let cost = directed.cost();
        if self.pending.len() >= MAX_PENDING || self.out_bytes + cost > max_bytes {
            return false;
        }
        self.out_bytes += cost;
        self.pending.insert(directed.request, ack);
        self.out.push_back(directed);
        true
    }

    pub fn take(&mut self) -> Option<Directed> {
        let directed = self.out.pop_front()?;
        self.out_bytes -= directed.cost();
        Some(directed)
    }

    pub fn has_out(&self) -> bool {
        !self.out.is_empty()
    }

    /// The answer came: who waits for it.
    pub fn complete(&mut self, request: u64) -> Option<PendingAck> {
        self.pending.remove(&request)
    }

    /// Every acknowledgement due by `now_ms`.
    pub fn expired(&mut self, now_ms: u64) -> Vec<PendingAck> {
        take_due(&mut self.pending, now_ms, |p| p.deadline_ms)
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.pending.values().map(|p| p.deadline_ms).min()
    }
}

/// Removes and returns the entries of `pending` whose deadline is due.
pub(super) fn take_due<T>(
    pending: &mut BTreeMap<u64, T>,
    now_ms: u64,
    deadline: impl Fn(&T) -> u64,
) -> Vec<T> {
    let due: Vec<u64> = pending
        .iter()
        .filter(|(_, entry)| deadline(entry) <= now_ms)
        .map(|(&request, _)| request)
        .collect();
    due.iter().filter_map(|r| pending.remove(r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(deadline_ms: u64) -> PendingAck {
        PendingAck {
            host: 1,
            host_id: 7,
            rid: None,
            deadline_ms,
        }
    }

    #[test]
    fn queued_answered_expired_and_bounded() {
        let mut q = DirectedQueue::default();
        let kick = || DirectedOp::Kick { reason: "r".into() };
        assert!(q.push("b", "b.1", kick(), ack(100), 64));
        assert!(q.push("b", "b.2", kick(), ack(50), 64));
        assert!(!q.push("b", &"x".repeat(80), kick(), ack(50), 64));
        assert_eq!(q.next_deadline(), Some(50));
        let first = q.take().unwrap();
        assert_eq!((first.request, first.client.as_str()), (1, "b.1"));
        assert!(q.complete(first.request).is_some());
        assert!(q.complete(first.request).is_none());
        assert_eq!(q.expired(60).len(), 1);
        assert_eq!(q.next_deadline(), None);
    }
}
