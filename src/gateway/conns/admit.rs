//! The accept-time bounds of the connection set: handshakes and HTTP
//! connections counted per address from accept on, the oldest incomplete
//! one evicted when they fill their slots (slowloris), and each kind of
//! trouble logged once per episode rather than once per connection.

use super::Conns;
use crate::gateway::accept::{handshakes_per_ip, Counts};
use crate::gateway::config::{MAX_HTTP_CONNS, MAX_HTTP_CONNS_PER_IP};
use crate::gateway::held::{Episode, Held};
use log::{debug, warn};
use std::net::IpAddr;

/// The kinds of trouble logged once per episode (see `held::Episode`).
#[derive(Debug, Default)]
pub struct Troubles {
    /// Evictions, by `Held::index`.
    evicted: [Episode; 2],
    /// An address over its bound, by `Held::index`.
    address_busy: [Episode; 2],
    /// Every HTTP slot busy with answered requests.
    http_busy: Episode,
}

impl Conns {
    /// What `accept::admission` needs to know about a client from `ip`.
    pub(super) fn counts_for(&self, ip: IpAddr) -> Counts {
        Counts {
            admitted: self.admitted,
            http_conns: self.http_conns,
            handshakes: self.held.incomplete(Held::Handshake),
            handshakes_from_ip: self.held.from_ip(ip, Held::Handshake),
            http_incomplete: self.held.incomplete(Held::Http),
            http_from_ip: self.held.from_ip(ip, Held::Http),
        }
    }

    /// Counts the new connection `key` as `kind`, incomplete.
    pub(super) fn hold(&mut self, key: usize, kind: Held) {
        let conn = &mut self.slab[key];
        conn.held = Some(kind);
        self.held.add(kind, conn.ip, conn.id, key);
    }

    /// `key`'s request is complete (answered or upgraded): a handshake is no
    /// longer counted; an HTTP connection still counts for its address
    /// until it is gone, but is no longer evicted.
    pub(super) fn request_done(&mut self, key: usize) {
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        match conn.held {
            Some(Held::Handshake) => {
                conn.held = None;
                self.held.remove(Held::Handshake, conn.ip, conn.id);
            }
            Some(Held::Http) => self.held.settle(Held::Http, conn.id),
            None => {}
        }
    }

    /// Drops the oldest incomplete connection of `kind` to make room for a
    /// new client. It is still reading its request, so the core knows
    /// nothing of it.
    pub(super) fn evict_oldest(&mut self, kind: Held, now_ms: u64) {
        let Some(key) = self.held.oldest(kind) else {
            return;
        };
        if let Some(conn) = self.slab.get(key) {
            debug!("evicted {}: the oldest incomplete request", conn.ip);
        }
        self.metrics.evicted(kind);
        if self.troubles.evicted[kind.index()].hit(now_ms) {
            match kind {
                Held::Handshake => warn!(
                    "handshakes in progress fill limits.max_connections ({}): dropping the oldest incomplete one for each new client",
                    self.cfg.max_connections
                ),
                Held::Http => warn!(
                    "the HTTP endpoints' {MAX_HTTP_CONNS} connections are busy: dropping the oldest incomplete request for each new one"
                ),
            }
        }
        self.forget(key);
    }

    /// Logs (once per episode) a client dropped or refused because its
    /// address holds as many connections of `kind` as it may.
    pub(super) fn note_address_busy(&mut self, ip: IpAddr, kind: Held, now_ms: u64) {
        if !self.troubles.address_busy[kind.index()].hit(now_ms) {
            return;
        }
        match kind {
            Held::Handshake => warn!(
                "refused {ip}: 429 {} handshakes in progress from this address (more such refusals are not logged for a while)",
                handshakes_per_ip(&self.cfg)
            ),
            Held::Http => warn!(
                "refused {ip}: {MAX_HTTP_CONNS_PER_IP} HTTP requests from this address in progress (more such refusals are not logged for a while)"
            ),
        }
    }

    /// Logs (once per episode) a client of the HTTP endpoints dropped
    /// because every slot holds an answered request.
    pub(super) fn note_http_busy(&mut self, ip: IpAddr, now_ms: u64) {
        if self.troubles.http_busy.hit(now_ms) {
            warn!("refused {ip}: {MAX_HTTP_CONNS} HTTP requests already in progress");
        }
    }
}
