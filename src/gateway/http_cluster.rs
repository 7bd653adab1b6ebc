//! The HTTP endpoints whose answer needs other cluster nodes (SPEC §9):
//! `GET /api/connections` lists every node's clients, `POST /api/publish`
//! with `client` reaches another node's client, and `POST /api/kick` (SPEC
//! §14) kicks another node's client. Everything else (and a
//! single node, or one alone) is answered at once by `http_api`.

use super::http_api::{authorize, may_publish, HttpRequest, KICK_REASON};
use crate::proto::auth::Identity;
use crate::proto::cluster::DirectedOp;
use crate::proto::hub::{Hub, KickData, PublishData};
use crate::proto::Now;

/// Starts the request when its answer must wait for other nodes; true
/// then (the hub answers `waiter`, the shell's connection key and id, with
/// [`Hub::take_http_replies`]). False: answer it now.
pub fn answer_later(
    req: &HttpRequest<'_>,
    hub: &mut Hub,
    (key, conn_id): (usize, u64),
    now: Now,
) -> bool {
    if !hub.is_clustered() {
        return false;
    }
    match (req.method, req.path) {
        ("GET", "/api/connections") => {
            authorize(req, hub, now, Identity::is_admin, "").is_ok()
                && hub.gather_connections(key, conn_id, now)
        }
        ("POST", "/api/publish") => {
            let Ok(body) = serde_json::from_slice::<PublishData>(req.body) else {
                return false;
            };
            let (Some(client), None) = (&body.client, &body.room) else {
                return false;
            };
            let data = body.data.map_or("null", |d| d.get());
            !body.event.is_empty()
                && authorize(req, hub, now, may_publish, "").is_ok()
                && hub.publish_to_remote_client(key, conn_id, client, (&body.event, data), now)
        }
        ("POST", "/api/kick") => {
            let Ok(body) = serde_json::from_slice::<KickData>(req.body) else {
                return false;
            };
            let reason = body.reason.as_deref().unwrap_or(KICK_REASON);
            let kick = || DirectedOp::Kick {
                reason: reason.to_string(),
            };
            authorize(req, hub, now, Identity::is_admin, "").is_ok()
                && hub.direct_for_http((key, conn_id), &body.client, kick, now)
        }
        _ => false,
    }
}
