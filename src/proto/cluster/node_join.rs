//! How a node joins (SPEC §9): it claims its name in the broker (a live
//! namesake is fatal) and checks the cluster's JWT-secret fingerprint; once
//! both hold it joins and starts its heartbeats.

use log::{error, info, warn};

use super::{Node, TAG_CLAIM, TAG_FINGERPRINT, TAG_OWNER};
use crate::proto::cluster::keys::{fingerprint_key, node_key};
use crate::proto::redis::Value;
use crate::proto::Now;

impl Node {
    pub(super) fn claim_name(&mut self) {
        let key = node_key(&self.cfg.prefix, &self.cfg.name);
        let ttl = self.ttl_ms().to_string();
        let args: [&[u8]; 6] = [
            b"SET",
            key.as_bytes(),
            self.cfg.instance.as_bytes(),
            b"NX",
            b"PX",
            ttl.as_bytes(),
        ];
        let _ = self.cmd.command(&args, Some(TAG_CLAIM));
    }

    pub(super) fn check_fingerprint(&mut self) {
        let key = fingerprint_key(&self.cfg.prefix);
        let ttl = self.ttl_ms().to_string();
        let set: [&[u8]; 6] = [
            b"SET",
            key.as_bytes(),
            self.cfg.fingerprint.as_bytes(),
            b"NX",
            b"PX",
            ttl.as_bytes(),
        ];
        let _ = self.cmd.command(&set, None);
        let _ = self
            .cmd
            .command(&[b"GET", key.as_bytes()], Some(TAG_FINGERPRINT));
    }

    pub(super) fn on_reply(&mut self, tag: u64, value: Value, now: Now) {
        if let Value::Error(text) = &value {
            warn!("cluster: broker error: {}", String::from_utf8_lossy(text));
            return;
        }
        match tag {
            TAG_CLAIM if value.as_bytes().is_some() => self.name_ok = true,
            TAG_CLAIM => {
                let key = node_key(&self.cfg.prefix, &self.cfg.name);
                let _ = self.cmd.command(&[b"GET", key.as_bytes()], Some(TAG_OWNER));
            }
            TAG_OWNER => match value.as_bytes() {
                Some(owner) if owner == self.cfg.instance.as_bytes() => self.name_ok = true,
                Some(_) => {
                    let why = format!(
                        "cluster.node: a live node already uses the name {:?}; give this node another name",
                        self.cfg.name
                    );
                    error!("{why}");
                    self.fatal = Some(why);
                }
                // Expired in between: claim again.
                None => self.claim_name(),
            },
            TAG_FINGERPRINT => match value.as_bytes() {
                Some(fp) if fp == self.cfg.fingerprint.as_bytes() => {
                    self.fingerprint_ok = true;
                    self.refused = None;
                }
                Some(_) => {
                    if self.refused.is_none() {
                        error!(
                            "cluster: this node's JWT secret differs from the cluster's (compared by keyed fingerprint); not joining"
                        );
                    }
                    self.refused = Some("the JWT secret differs from the cluster's".into());
                }
                None => self.check_fingerprint(),
            },
            _ => {}
        }
        if self.name_ok && self.fingerprint_ok && !self.joined && self.fatal.is_none() {
            self.joined = true;
            info!("cluster: node {} joined", self.cfg.name);
            self.next_heartbeat_ms = now.ms;
            self.heartbeat(now);
        }
    }
}
