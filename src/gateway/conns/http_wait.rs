//! HTTP requests whose answer waits for other cluster nodes (SPEC §9:
//! `/api/connections`, `/api/publish` to another node's client): the
//! connection is held, reading nothing more, until the hub's answer comes
//! (within `host.request_timeout_ms`) or its deadline drops it.

use super::Conns;
use crate::gateway::app::App;
use crate::gateway::conn::Stage;
use crate::gateway::http_api::HttpAnswer;
use crate::proto::Now;

/// How long past `host.request_timeout_ms` a held request may wait for
/// the hub's answer before it is dropped.
const AWAIT_SLACK_MS: u64 = 1000;

impl Conns {
    /// Holds connection `key` for the hub's answer.
    pub(super) fn await_http(&mut self, key: usize, app: &mut App, now: Now) {
        let App::Gateway(hub) = &*app else {
            return;
        };
        let wait_ms = hub.config().request_timeout_ms + AWAIT_SLACK_MS;
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        conn.stage = Stage::Awaiting {
            deadline_ms: now.ms.saturating_add(wait_ms),
        };
        self.schedule(key, app);
    }

    /// Writes the answers the hub has ready to the connections still
    /// waiting for them (a connection that went is skipped, also when its
    /// key was reused: the id tells).
    pub(super) fn apply_http_replies(&mut self, app: &mut App, now: Now) {
        let App::Gateway(hub) = &mut *app else {
            return;
        };
        let replies = hub.take_http_replies();
        for reply in replies {
            let waiting = self.slab.get(reply.key).is_some_and(|c| {
                matches!(c.stage, Stage::Awaiting { .. }) && c.id == reply.conn_id
            });
            if waiting {
                let answer = HttpAnswer::json(200, reply.body);
                self.answer_http(reply.key, &answer, app, now);
            }
        }
    }
}
