//! The dashboard's live feed (SPEC §14): a WebSocket upgrade to `/api/feed`
//! on the health listener, for an admin token only, at
//! most `tail::MAX_VIEWERS` at once. The page's Content-Security-Policy
//! (`default-src 'self'`) lets it open WebSockets to its own origin only,
//! so the feed lives here; the session is an ordinary one (tether.js
//! connects to it as to the gateway) that the hub marks as a viewer.

use super::Conns;
use crate::gateway::app::App;
use crate::gateway::conn::Serves;
use crate::proto::handshake::{Refusal, Upgrade};
use crate::proto::tail::MAX_VIEWERS;
use crate::proto::Now;

/// The feed's path.
pub const FEED_PATH: &str = "/api/feed";

/// Whether an upgrade from a `serves` connection is the feed's to judge:
/// every upgrade on the health listener is (it has no other WebSocket).
pub fn is_feed(serves: Serves) -> bool {
    serves == Serves::Http
}

impl Conns {
    /// Upgrades to a viewer session, or refuses: 400 for another path (as
    /// before the feed existed), 401 without a valid token, 403 without `admin`, 503
    /// when enough dashboards watch already.
    pub(super) fn upgrade_viewer(
        &mut self,
        key: usize,
        upgrade: &mut Upgrade,
        app: &mut App,
        now: Now,
    ) {
        let refusal = match &*app {
            App::Echo => Some((Refusal::BadRequest, "no dashboard in this mode".to_string())),
            App::Gateway(_) if upgrade.path != FEED_PATH => Some((
                Refusal::BadRequest,
                format!(
                    "this is the health listener: WebSockets are on server.websocket; the dashboard's feed is {FEED_PATH}"
                ),
            )),
            App::Gateway(hub) => match upgrade.token.as_deref() {
                None => Some((
                    Refusal::Unauthorized,
                    "the feed needs a token with admin (the tether.bearer. subprotocol)".into(),
                )),
                Some(token) => match hub.config().auth.verify(token, now.unix) {
                    Err(reason) => Some((Refusal::Unauthorized, format!("invalid token: {reason}"))),
                    Ok(identity) if !identity.is_admin() => Some((
                        Refusal::Forbidden,
                        "the feed needs a token with admin".into(),
                    )),
                    Ok(_) if !hub.viewer_has_room() => Some((
                        Refusal::Unavailable,
                        format!("at most {MAX_VIEWERS} dashboards may watch the feed at once"),
                    )),
                    Ok(identity) => {
                        return self.upgrade(key, upgrade, Some(identity), true, app, now);
                    }
                },
            },
        };
        if let Some((refusal, reason)) = refusal {
            self.refuse(key, refusal, &reason, app, now);
        }
    }
}
