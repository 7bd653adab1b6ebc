//! What hosts hear of clients (SPEC §6): `host.client_joined` and
//! `host.client_left`, on every node of a cluster (SPEC §9), and the end of
//! a host's role, which fails its pending requests.

use super::Hub;
use crate::proto::envelope::ErrorCode;
use crate::proto::envelope::JsonWriter;
use crate::proto::host_link::Pending;
use crate::proto::outbox::{Action, Body};
use crate::proto::rooms::ConnKey;
use crate::proto::Now;
use log::info;
use std::net::IpAddr;
use std::rc::Rc;

impl Hub {
    /// A host re-authenticated without the `host` permission: it is a host
    /// no more, as if it had left (its events unregistered, its pending
    /// requests failed), but it stays connected as a client, which the
    /// remaining hosts now hear of.
    pub(super) fn end_host_role(&mut self, key: ConnKey, now: Now) {
        let Some(id) = self.session(key).map(|s| s.id) else {
            return;
        };
        info!(
            "client {} lost the `host` permission: no longer a host",
            self.ids.str(id)
        );
        self.unregister_host(key, id, now);
        let Some(s) = self.sessions.get_mut(key).and_then(Option::as_mut) else {
            return;
        };
        if !s.announced {
            s.announced = true;
            let (id, ip) = (s.id, s.ip);
            self.notify_hosts_joined(key, id, ip);
        }
    }

    /// The requests of a host that left fail: their clients hear so.
    pub(super) fn report_orphans(&mut self, orphans: Vec<Pending>, now: Now) {
        for pending in orphans {
            let msg = "the host that serves this event is gone";
            let rid = pending.request_id.as_deref();
            self.error(pending.client, ErrorCode::HostUnavailable, msg, now, rid);
        }
    }

    pub(super) fn notify_hosts_joined(&mut self, key: ConnKey, id: u64, ip: IpAddr) {
        if !self.hosts_anywhere() {
            return;
        }
        let Some(identity) = self.session(key).and_then(|s| s.identity.as_ref()) else {
            return;
        };
        let mut message = Vec::with_capacity(96);
        let mut msg = JsonWriter::object(&mut message);
        msg.str("event", "host.client_joined");
        msg.begin("data")
            .str("client", &self.ids.str(id))
            .str("sub", &identity.sub)
            .str("ip", &ip.to_string())
            .end();
        msg.end();
        self.send_to_hosts(message.into());
    }

    pub(super) fn notify_hosts_left(&mut self, id: u64, sub: &str, code: u16) {
        if !self.hosts_anywhere() {
            return;
        }
        let mut message = Vec::with_capacity(96);
        let mut msg = JsonWriter::object(&mut message);
        msg.str("event", "host.client_left");
        msg.begin("data")
            .str("client", &self.ids.str(id))
            .str("sub", sub)
            .u64("code", u64::from(code))
            .end();
        msg.end();
        self.send_to_hosts(message.into());
    }

    /// Whether a host here or on another node may want a notice.
    fn hosts_anywhere(&self) -> bool {
        !self.hosts.host_keys().is_empty()
            || self
                .cluster
                .as_ref()
                .is_some_and(|t| t.hosts.has_remote_hosts())
    }

    /// To this node's hosts and, in a cluster, every other node's.
    fn send_to_hosts(&mut self, message: Rc<[u8]>) {
        self.forward_notice(&message);
        self.send_to_local_hosts(message);
    }

    pub(super) fn send_to_local_hosts(&mut self, message: Rc<[u8]>) {
        for &host in self.hosts.host_keys() {
            self.out.actions.push(Action::Send {
                to: host,
                body: Body::Shared(message.clone()),
            });
        }
    }
}
