//! The state of the host link (SPEC §6), apart from the sessions: which host
//! serves which event, the requests forwarded to hosts and waiting for an
//! answer (each with its deadline), the role of every registered host, and
//! the queue of waiting requests of every client. Keyed by connection; the
//! hub's handlers (`hub::host_events`) drive it and report what it returns.

use crate::proto::envelope::MAX_REQUEST_ID_BYTES;
use crate::proto::rooms::{ConnKey, MAX_ROOM_NAME};
use serde_json::value::RawValue;
use std::collections::{HashMap, VecDeque};

/// Requests one host may have unanswered; past it clients get `host_unavailable`.
pub const MAX_PENDING_PER_HOST: usize = 4096;
/// Requests one client may have waiting for hosts at once.
pub const MAX_PENDING_PER_CLIENT: usize = 64;
/// Events one host may serve.
pub const MAX_EVENTS_PER_HOST: usize = 256;
/// Hosts registered at once: a host's role is large (up to
/// [`host_role_bytes_bound`]), so it is bounded once for the gateway rather
/// than for every connection.
pub const MAX_HOSTS: usize = 32;

/// Longest permission a host may require for one of its events (as long as
/// an event name): bounds what a host's role holds.
pub const MAX_PERMISSION_BYTES: usize = 256;

/// What the allocator may add to one heap block (header, rounding).
pub(crate) const ALLOC_SLACK: usize = 32;
/// Slots a hash table may hold per entry: its load factor, and doubling.
const TABLE_SLOTS_PER_ENTRY: usize = 3;

/// Bytes one table entry of type `T` may cost in a hash table.
pub(crate) const fn table_entry_bytes<T>() -> usize {
    TABLE_SLOTS_PER_ENTRY * (std::mem::size_of::<T>() + 1)
}

/// Worst-case bytes the requests of one client hold while they wait for
/// hosts: `MAX_PENDING_PER_CLIENT` entries, each with a `requestId` of at most
/// `MAX_REQUEST_ID_BYTES` (the request's data goes to the host's outbound
/// queue, which `max_outbound_bytes` bounds), and the client's queue of ids.
pub const fn pending_bytes_bound() -> usize {
    let per_request = table_entry_bytes::<(u64, Pending)>()
        + 2 * std::mem::size_of::<u64>()
        + MAX_REQUEST_ID_BYTES
        + ALLOC_SLACK;
    MAX_PENDING_PER_CLIENT * per_request
        + table_entry_bytes::<(ConnKey, VecDeque<u64>)>()
        + ALLOC_SLACK
}

/// Worst-case bytes the role of one host holds: `MAX_EVENTS_PER_HOST` events,
/// each named (up to `MAX_ROOM_NAME` bytes) in the role and in the routing
/// table, with a permission of up to `MAX_PERMISSION_BYTES`.
pub const fn host_role_bytes_bound() -> usize {
    let per_event = 2 * std::mem::size_of::<Box<str>>()
        + 2 * (MAX_ROOM_NAME + ALLOC_SLACK)
        + table_entry_bytes::<(Box<str>, HostEvent)>()
        + MAX_PERMISSION_BYTES
        + ALLOC_SLACK;
    MAX_EVENTS_PER_HOST * per_event
        + table_entry_bytes::<(ConnKey, HostRole)>()
        + 2 * std::mem::size_of::<ConnKey>()
}

/// What a registered host serves.
#[derive(Debug, Default)]
pub struct HostRole {
    pub events: Vec<Box<str>>,
    pub in_flight: usize,
    /// A bridged host whose input is unread beyond its bound: no requests.
    pub congested: bool,
}

/// The host and the permission of one served event.
#[derive(Debug)]
pub struct HostEvent {
    pub host: ConnKey,
    pub permission: Option<Box<str>>,
}

/// A request forwarded to a host, waiting for its `host.reply`.
#[derive(Debug)]
pub struct Pending {
    pub client: ConnKey,
    pub host: ConnKey,
    pub request_id: Option<Box<RawValue>>,
    pub deadline_ms: u64,
}

#[derive(Debug, Default)]
pub struct HostLink {
    events: HashMap<Box<str>, HostEvent>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
    /// Connections that registered as hosts, in that order (notices go to them).
    host_keys: Vec<ConnKey>,
    roles: HashMap<ConnKey, HostRole>,
    /// Gateway ids of each client's requests waiting for a host, oldest first
    /// (their deadlines are in the same order, the timeout being constant).
    /// A client without waiting requests has no entry.
    waiting: HashMap<ConnKey, VecDeque<u64>>,
    pub requests_forwarded: u64,
    pub requests_timed_out: u64,
}

impl HostLink {
    /// Deadline of the oldest live request of client `key`.
    pub fn first_deadline(&self, key: ConnKey) -> Option<u64> {
        self.waiting
            .get(&key)
            .and_then(VecDeque::front)
            .and_then(|id| self.pending.get(id))
            .map(|p| p.deadline_ms)
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn host_count(&self) -> usize {
        self.host_keys.len()
    }

    /// How many requests of client `key` wait for a host.
    pub fn waiting_len(&self, key: ConnKey) -> usize {
        self.waiting.get(&key).map_or(0, VecDeque::len)
    }

    /// Whether connection `key` registered as a host.
    pub fn is_host(&self, key: ConnKey) -> bool {
        self.roles.contains_key(&key)
    }

    pub fn role(&self, key: ConnKey) -> Option<&HostRole> {
        self.roles.get(&key)
    }

    pub fn host_keys(&self) -> &[ConnKey] {
        &self.host_keys
    }

    /// Who serves `event`, and with which permission.
    pub fn route(&self, event: &str) -> Option<&HostEvent> {
        self.events.get(event)
    }

    /// Marks host `key` congested or not (a bridged host's unread input).
    pub fn set_congested(&mut self, key: ConnKey, congested: bool) {
        if let Some(role) = self.roles.get_mut(&key) {
            role.congested = congested;
        }
    }

    /// Whether host `key` takes requests now.
    pub fn is_congested(&self, key: ConnKey) -> bool {
        self.roles.get(&key).is_some_and(|r| r.congested)
    }

    /// Makes `key` a host if it is not one yet; true when it was not.
    pub fn add_host(&mut self, key: ConnKey) -> bool {
        if self.roles.contains_key(&key) {
            return false;
        }
        self.roles.insert(key, HostRole::default());
        self.host_keys.push(key);
        true
    }

    /// Host `key` (added before) serves `event` with `permission`.
    pub fn serve(&mut self, key: ConnKey, event: Box<str>, permission: Option<Box<str>>) {
        if let Some(role) = self.roles.get_mut(&key) {
            if !role.events.contains(&event) {
                role.events.push(event.clone());
            }
        }
        self.events.insert(
            event,
            HostEvent {
                host: key,
                permission,
            },
        );
    }

    /// Host `key` no longer serves `event` (another node's host holds it).
    pub fn unserve(&mut self, key: ConnKey, event: &str) {
        if let Some(role) = self.roles.get_mut(&key) {
            role.events.retain(|e| &**e != event);
        }
        if self.events.get(event).is_some_and(|e| e.host == key) {
            self.events.remove(event);
        }
    }

    /// A new request id, for a request another node forwards (ids are
    /// shared with local requests: a host answers by id alone).
    pub fn next_request_id(&mut self) -> u64 {
        self.next_id += 1;
        self.requests_forwarded += 1;
        self.next_id
    }

    /// Whether a request from `client` to `host` may be forwarded now.
    pub fn has_room(&self, client: ConnKey, host: ConnKey) -> bool {
        let host_free = self
            .roles
            .get(&host)
            .is_some_and(|role| role.in_flight < MAX_PENDING_PER_HOST);
        host_free && self.waiting_len(client) < MAX_PENDING_PER_CLIENT
    }

    /// Records a request forwarded from `client` to `host`; returns its id.
    pub fn forward(
        &mut self,
        client: ConnKey,
        host: ConnKey,
        request_id: Option<Box<RawValue>>,
        deadline_ms: u64,
    ) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.pending.insert(
            id,
            Pending {
                client,
                host,
                request_id,
                deadline_ms,
            },
        );
        self.requests_forwarded += 1;
        self.waiting.entry(client).or_default().push_back(id);
        if let Some(role) = self.roles.get_mut(&host) {
            role.in_flight += 1;
        }
        id
    }

    /// The host request `id` went to, while it waits.
    pub fn host_of(&self, id: u64) -> Option<ConnKey> {
        self.pending.get(&id).map(|p| p.host)
    }

    /// Removes request `id` from the tables; returns it.
    pub fn take(&mut self, id: u64) -> Option<Pending> {
        let pending = self.pending.remove(&id)?;
        if let Some(queue) = self.waiting.get_mut(&pending.client) {
            if let Some(pos) = queue.iter().position(|&w| w == id) {
                queue.remove(pos);
            }
            if queue.is_empty() {
                self.waiting.remove(&pending.client);
            }
        }
        if let Some(role) = self.roles.get_mut(&pending.host) {
            role.in_flight = role.in_flight.saturating_sub(1);
        }
        Some(pending)
    }

    /// Takes the oldest request of `client` when its deadline passed by `now_ms`.
    pub fn expire(&mut self, client: ConnKey, now_ms: u64) -> Option<Pending> {
        loop {
            let id = *self.waiting.get(&client)?.front()?;
            let due = self
                .pending
                .get(&id)
                .is_none_or(|p| p.deadline_ms <= now_ms);
            if !due {
                return None;
            }
            match self.take(id) {
                Some(pending) => {
                    self.requests_timed_out += 1;
                    return Some(pending);
                }
                // Already answered: only the stale entry goes.
                None => {
                    if let Some(queue) = self.waiting.get_mut(&client) {
                        queue.pop_front();
                    }
                }
            }
        }
    }

    /// A client leaves: its waiting requests are forgotten (late replies dropped).
    pub fn forget(&mut self, client: ConnKey) {
        for id in self.waiting.remove(&client).unwrap_or_default() {
            if let Some(pending) = self.pending.remove(&id) {
                if let Some(role) = self.roles.get_mut(&pending.host) {
                    role.in_flight = role.in_flight.saturating_sub(1);
                }
            }
        }
    }

    /// A host leaves: its events are unregistered; returns its requests, which
    /// fail, oldest first.
    pub fn host_gone(&mut self, key: ConnKey) -> Vec<Pending> {
        let Some(role) = self.roles.remove(&key) else {
            return Vec::new();
        };
        for event in &role.events {
            if self.events.get(event).is_some_and(|e| e.host == key) {
                self.events.remove(event);
            }
        }
        self.host_keys.retain(|&k| k != key);
        let mut orphans: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.host == key)
            .map(|(&id, _)| id)
            .collect();
        // Ids grow with time: clients hear of their requests in the order sent.
        orphans.sort_unstable();
        orphans.into_iter().filter_map(|id| self.take(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_time_out_in_order_and_die_with_their_host() {
        let mut link = HostLink::default();
        assert!(link.add_host(0));
        assert!(!link.add_host(0));
        link.serve(0, "play".into(), None);
        assert_eq!(link.route("play").map(|e| e.host), Some(0));
        assert!(link.has_room(1, 0));
        let a = link.forward(1, 0, None, 100);
        let b = link.forward(1, 0, None, 200);
        assert_eq!(link.first_deadline(1), Some(100));
        assert_eq!(link.role(0).map(|r| r.in_flight), Some(2));
        assert!(link.expire(1, 99).is_none());
        assert_eq!(link.expire(1, 100).map(|p| p.deadline_ms), Some(100));
        assert_eq!(link.first_deadline(1), Some(200));
        assert_eq!(link.host_of(b), Some(0));
        assert!(link.host_of(a).is_none());
        let orphans = link.host_gone(0);
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].client, 1);
        assert!(link.route("play").is_none());
        assert_eq!((link.pending_len(), link.host_count()), (0, 0));
        assert_eq!(link.first_deadline(1), None);
    }

    #[test]
    fn a_leaving_client_frees_its_hosts_slots() {
        let mut link = HostLink::default();
        link.add_host(0);
        link.forward(1, 0, None, 100);
        link.forget(1);
        assert_eq!(link.role(0).map(|r| r.in_flight), Some(0));
        assert_eq!(link.pending_len(), 0);
    }
}
