//! The accept-time bounds of the connection set: handshakes and HTTP
//! connections counted per address from accept on, the oldest incomplete
//! one evicted when they fill their slots (slowloris), and each kind of
//! trouble logged once per episode rather than once per connection.

use super::Conns;
use crate::gateway::accept::{handshakes_per_ip, Counts, Scope};
use crate::gateway::config::{MAX_HTTP_CONNS, MAX_HTTP_CONNS_PER_IP};
use crate::gateway::held::{Episode, Held};
use log::{debug, warn};
use std::net::IpAddr;

/// The kinds of trouble logged once per episode (see `held::Episode`).
#[derive(Debug, Default)]
pub struct Troubles {
    /// Evictions, by `Held::index`: for an address at its bound, and for
    /// a full server.
    evicted_for_address: [Episode; 2],
    evicted_for_all: [Episode; 2],
    /// An address at its bound of HTTP requests, all of them answered.
    http_address_busy: Episode,
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
            http_incomplete_from_ip: self.held.incomplete_from_ip(ip, Held::Http),
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
            Some(Held::Http) => self.held.settle(Held::Http, conn.ip, conn.id),
            None => {}
        }
    }

    /// Drops the oldest incomplete connection of `kind` (from `ip`, or from
    /// any address) to make room for a new client from `ip`. It is still
    /// reading its request, so the core knows nothing of it.
    pub(super) fn evict_oldest(&mut self, kind: Held, scope: Scope, ip: IpAddr, now_ms: u64) {
        let from = (scope == Scope::Address).then_some(ip);
        let Some(key) = self.held.oldest(kind, from) else {
            return;
        };
        if let Some(conn) = self.slab.get(key) {
            debug!("evicted {}: the oldest incomplete request", conn.ip);
        }
        self.metrics.evicted(kind);
        let episode = match scope {
            Scope::Address => &mut self.troubles.evicted_for_address[kind.index()],
            Scope::All => &mut self.troubles.evicted_for_all[kind.index()],
        };
        if episode.hit(now_ms) {
            let max = self.cfg.max_connections;
            let per_ip = handshakes_per_ip(&self.cfg);
            match (kind, scope) {
                (Held::Handshake, Scope::All) => warn!(
                    "handshakes in progress fill limits.max_connections ({max}): dropping the oldest incomplete one for each new client"
                ),
                (Held::Handshake, Scope::Address) => warn!(
                    "{ip} has {per_ip} handshakes in progress: dropping its oldest incomplete one for each new one"
                ),
                (Held::Http, Scope::All) => warn!(
                    "the HTTP endpoints' {MAX_HTTP_CONNS} connections are busy: dropping the oldest incomplete request for each new one"
                ),
                (Held::Http, Scope::Address) => warn!(
                    "{ip} has {MAX_HTTP_CONNS_PER_IP} HTTP requests in progress: dropping its oldest incomplete one for each new one"
                ),
            }
        }
        self.forget(key);
    }

    /// Logs (once per episode) a client of the HTTP endpoints dropped
    /// because its address holds as many answered requests as it may.
    pub(super) fn note_http_address_busy(&mut self, ip: IpAddr, now_ms: u64) {
        if self.troubles.http_address_busy.hit(now_ms) {
            warn!(
                "refused {ip}: {MAX_HTTP_CONNS_PER_IP} HTTP requests from this address in progress"
            );
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
