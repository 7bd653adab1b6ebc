//! `GET /api/connections` and `POST /api/publish` with `client` across
//! nodes (SPEC §9): the answer waits for the other nodes, as `host.clients`
//! and `host.send` do, and is taken by the shell with
//! [`Hub::take_http_replies`]. The waiter is the shell's connection (its key
//! and id), told from a session by [`HTTP_WAITER`] in the waiter's id.

use super::Hub;
use crate::proto::cluster::{DirectedOp, HttpReply, PendingAck};
use crate::proto::envelope::JsonWriter;
use crate::proto::rooms::ConnKey;
use crate::proto::Now;

/// Set in the waiter id of a gather or a directed request that an HTTP
/// request waits for (the rest is the shell's connection id).
pub const HTTP_WAITER: u64 = 1 << 63;

/// The connection id of an HTTP waiter, when `waiter` is one.
pub(super) fn http_waiter(waiter: u64) -> Option<u64> {
    (waiter & HTTP_WAITER != 0).then_some(waiter & !HTTP_WAITER)
}

impl Hub {
    /// `GET /api/connections` (already authorized) of connection `key`
    /// (id `conn_id`) in a cluster with other nodes up: this node's list
    /// now, the others' when they answer or `host.request_timeout_ms` passed.
    /// False when there is no other node to ask (answer now).
    pub fn gather_connections(&mut self, key: ConnKey, conn_id: u64, now: Now) -> bool {
        let Some(tap) = self.cluster.as_ref().filter(|t| !t.status.peers.is_empty()) else {
            return false;
        };
        let peers = tap.status.peers.clone();
        let mut local = Vec::with_capacity(256);
        self.write_client_list(&mut local);
        let deadline_ms = now.ms.saturating_add(self.cfg.request_timeout_ms);
        let max = self.cfg.max_reply_bytes;
        let waiter = HTTP_WAITER | conn_id;
        self.cluster.as_mut().is_some_and(|tap| {
            tap.gathers
                .start(key, waiter, None, deadline_ms, &peers, &local, max)
                .is_some()
        })
    }

    /// `POST /api/publish` (already authorized) to `client` of another
    /// node: `{"delivered"}` once that node answered or after
    /// `host.request_timeout_ms`. False when `client` is no other node's or
    /// the queue is full (answer now).
    pub fn publish_to_remote_client(
        &mut self,
        key: ConnKey,
        conn_id: u64,
        client: &str,
        (event, data): (&str, &str),
        now: Now,
    ) -> bool {
        let op = || DirectedOp::Send {
            event: event.to_string(),
            data: data.to_string(),
        };
        self.direct_for_http((key, conn_id), client, op, now)
    }

    /// Queues `op` for `client`'s node, answered to HTTP connection
    /// `waiter` (its key and id) with `{"delivered"}` once that node acted
    /// or after `host.request_timeout_ms`; false when `client` is no other
    /// node's or the queue is full. `POST /api/kick` (already authorized)
    /// uses it as is.
    pub fn direct_for_http(
        &mut self,
        (key, conn_id): (ConnKey, u64),
        client: &str,
        op: impl FnOnce() -> DirectedOp,
        now: Now,
    ) -> bool {
        let Some(node) = self.ids.remote_node(client) else {
            return false;
        };
        let ack = PendingAck {
            host: key,
            host_id: HTTP_WAITER | conn_id,
            rid: None,
            deadline_ms: now.ms.saturating_add(self.cfg.request_timeout_ms),
        };
        self.cluster.as_mut().is_some_and(|tap| {
            let max = tap.max_forward_bytes();
            tap.directed.push(node, client, op(), ack, max)
        })
    }

    /// The HTTP answers that are ready, for the shell to write.
    pub fn take_http_replies(&mut self) -> Vec<HttpReply> {
        self.cluster
            .as_mut()
            .map(|t| std::mem::take(&mut t.http_replies))
            .unwrap_or_default()
    }

    pub(super) fn http_gathered(&mut self, key: ConnKey, conn_id: u64, entries: &[u8]) {
        let mut body = Vec::with_capacity(entries.len() + 20);
        JsonWriter::object(&mut body)
            .with_raw("connections", |buf| {
                buf.push(b'[');
                buf.extend_from_slice(entries);
                buf.push(b']');
            })
            .end();
        self.push_http_reply(key, conn_id, body);
    }

    pub(super) fn http_delivered(&mut self, key: ConnKey, conn_id: u64, delivered: bool) {
        let mut body = Vec::with_capacity(16);
        JsonWriter::object(&mut body)
            .u64("delivered", u64::from(delivered))
            .end();
        self.push_http_reply(key, conn_id, body);
    }

    fn push_http_reply(&mut self, key: ConnKey, conn_id: u64, body: Vec<u8>) {
        if let Some(tap) = self.cluster.as_mut() {
            tap.http_replies.push(HttpReply { key, conn_id, body });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::cluster::ClusterTap;
    use crate::proto::hub::testing::{hub_for_hosts, join, T0};
    use serde_json::{json, Value};

    fn clustered() -> Hub {
        let mut hub = hub_for_hosts();
        let mut tap = ClusterTap::new("a", 1 << 20);
        tap.status.peers = vec!["b".into()];
        hub.enable_cluster(tap);
        join(&mut hub, 0, "alice", &[], &[]);
        hub.out.clear();
        hub
    }

    fn replies(hub: &mut Hub) -> Vec<(ConnKey, u64, Value)> {
        let replies = hub.take_http_replies();
        replies
            .into_iter()
            .map(|r| (r.key, r.conn_id, serde_json::from_slice(&r.body).unwrap()))
            .collect()
    }

    #[test]
    fn connections_wait_for_the_other_nodes_or_their_timeout() {
        let mut hub = clustered();
        assert!(hub.gather_connections(5, 77, T0));
        let (node, request) = hub
            .cluster_mut()
            .and_then(|t| t.gathers.take_question())
            .unwrap();
        assert_eq!(node, "b");
        assert!(replies(&mut hub).is_empty());
        hub.gathered(request, "b", br#"[{"id":"b.1","node":"b"}]"#);
        let got = replies(&mut hub);
        assert_eq!((got[0].0, got[0].1), (5, 77));
        let nodes: Vec<&Value> = got[0].2["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["node"])
            .collect();
        assert_eq!(nodes, [&json!("a"), &json!("b")]);
        assert!(hub.out.actions.is_empty(), "no session hears of it");
        // b does not answer: a's list alone at the timeout.
        assert!(hub.gather_connections(5, 78, T0));
        let due = hub.directed_deadline().unwrap();
        hub.expire_directed(Now { ms: due, ..T0 });
        assert_eq!(replies(&mut hub)[0].2["connections"][0]["node"], "a");
    }

    #[test]
    fn publish_to_another_nodes_client_waits_for_its_answer() {
        let mut hub = clustered();
        assert!(!hub.publish_to_remote_client(5, 1, "a.1000000", ("e", "1"), T0));
        assert!(hub.publish_to_remote_client(5, 1, "b.1000000", ("e", "1"), T0));
        let sent = hub.cluster_mut().and_then(|t| t.directed.take()).unwrap();
        hub.complete_directed(sent.request, true);
        assert_eq!(replies(&mut hub), vec![(5, 1, json!({"delivered": 1}))]);
        assert!(hub.publish_to_remote_client(5, 2, "zz.1000000", ("e", "1"), T0));
        hub.expire_directed(Now { ms: 1_000, ..T0 });
        assert_eq!(replies(&mut hub), vec![(5, 2, json!({"delivered": 0}))]);
    }
}
