//! Reading a connection until `WouldBlock` (capped per pass), plain or
//! through its TLS session, and handing the bytes to the stage they belong to.

use super::Conns;
use crate::gateway::app::App;
use crate::gateway::config::{READS_PER_PASS, READ_CHUNK};
use crate::gateway::conn::Stage;
use crate::gateway::nonblocking::retry;
use crate::gateway::tls::{self, TlsRead};
use crate::proto::client_id::client_id_str;
use crate::proto::Now;
use log::debug;
use std::io::Read;

/// What one socket read gave.
enum Got {
    Bytes(usize),
    /// EOF, a read error (the connection is gone), or nothing more now.
    Done,
}

impl Conns {
    /// Reads what the socket holds; true when the per-pass cap left some
    /// for the next pass.
    pub fn on_readable(&mut self, key: usize, app: &mut App, now: Now) -> bool {
        if self.slab.get(key).is_some_and(|c| c.tls.is_some()) {
            return self.on_readable_tls(key, app, now);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut again = true;
        for _ in 0..READS_PER_PASS {
            match self.read_socket(key, &mut scratch, app, now) {
                Got::Bytes(n) => {
                    if let Some(conn) = self.slab.get_mut(key) {
                        conn.last_rx_ms = now.ms;
                    }
                    self.metrics.bytes_in += n as u64;
                    self.on_bytes(key, &mut scratch[..n], app, now);
                }
                Got::Done => {
                    again = false;
                    break;
                }
            }
        }
        self.scratch = scratch;
        again
    }

    /// One read of `key`'s socket into `buf`; EOF and errors end the connection.
    fn read_socket(&mut self, key: usize, buf: &mut [u8], app: &mut App, now: Now) -> Got {
        let Some(conn) = self.slab.get_mut(key) else {
            return Got::Done;
        };
        match retry(|| conn.sock.read(buf)) {
            Ok(Some(0)) => {
                self.on_eof(key, app, now);
                Got::Done
            }
            Ok(Some(n)) => Got::Bytes(n),
            Ok(None) => Got::Done,
            Err(e) => {
                debug!("connection {key}: read error: {e}");
                self.remove(key, app, now);
                Got::Done
            }
        }
    }

    /// Reads a TLS connection: one socket read of up to 64 KiB, after the
    /// bytes of a partial record held since the last one, decrypted in
    /// place record by record; its plaintext goes to the same handlers as
    /// plain ws. What is left of a record is held (lent from the pool)
    /// until the next read.
    fn on_readable_tls(&mut self, key: usize, app: &mut App, now: Now) -> bool {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut records = std::mem::take(&mut self.tls_in);
        records.resize(tls::HELD_LIMIT + READ_CHUNK, 0);
        let mut again = true;
        'reads: for _ in 0..READS_PER_PASS {
            let held = self.slab.get(key).and_then(|c| c.tls.as_deref());
            let held = held.map_or(0, tls::TlsSession::held_len);
            let n = match self.read_socket(key, &mut records[held..held + READ_CHUNK], app, now) {
                Got::Bytes(n) => n,
                Got::Done => {
                    again = false;
                    break;
                }
            };
            if let Some(session) = self.slab.get_mut(key).and_then(|c| c.tls.as_deref_mut()) {
                session.unhold(&mut records[..held], &mut self.pool);
            }
            let mut input = tls::Input::new(&mut records[..held + n]);
            loop {
                let Some(conn) = self.slab.get_mut(key) else {
                    again = false;
                    break 'reads;
                };
                let Some(session) = conn.tls.as_deref_mut() else {
                    again = false;
                    break 'reads;
                };
                let fed = match tls::feed(session, &mut input, &mut scratch, &mut self.pool) {
                    TlsRead::WouldBlock => match session.hold(input.rest(), &mut self.pool) {
                        Ok(()) => break,
                        Err(reason) => TlsRead::Failed(reason),
                    },
                    fed => fed,
                };
                match fed {
                    TlsRead::Plain(n) => {
                        conn.last_rx_ms = now.ms;
                        self.on_bytes(key, &mut scratch[..n], app, now);
                    }
                    TlsRead::WouldBlock => break,
                    TlsRead::Closed => {
                        self.on_eof(key, app, now);
                        again = false;
                        break 'reads;
                    }
                    TlsRead::Failed(reason) => {
                        debug!("connection {key} from {}: TLS failed: {reason}", conn.ip);
                        // Best effort: the alert rustls made, then drop.
                        let _ = tls::write_records(session, &mut conn.sock, &mut self.pool);
                        self.remove(key, app, now);
                        again = false;
                        break 'reads;
                    }
                }
            }
            // Handshake records to answer, or plaintext the handshake held.
            self.mark_dirty(key);
        }
        self.scratch = scratch;
        self.tls_in = records;
        again
    }

    fn on_eof(&mut self, key: usize, app: &mut App, now: Now) {
        if let Some(conn) = self.slab.get(key) {
            if conn.stage.is_open() {
                debug!(
                    "client {} disconnected without a close frame",
                    client_id_str(conn.id)
                );
            }
        }
        self.remove(key, app, now);
    }

    fn on_bytes(&mut self, key: usize, data: &mut [u8], app: &mut App, now: Now) {
        let Some(conn) = self.slab.get(key) else {
            return;
        };
        match conn.stage {
            // One request per connection: what follows a waiting one is dropped.
            Stage::Awaiting { .. } => {}
            Stage::Handshake { .. } => self.on_request_bytes(key, data, app, now),
            Stage::Open { .. }
            | Stage::Closing {
                peer_closed: false, ..
            } => self.on_frame_bytes(key, data, app, now),
            // Done reading (the peer closed, or we failed the connection):
            // what follows is discarded, never parsed as frames.
            Stage::Closing {
                peer_closed: true, ..
            } => {}
            // A refused client's request is read and discarded, up to a bound.
            Stage::Refusing { .. } => match conn.stage.drained(data.len()) {
                Some(stage) => self.slab[key].stage = stage,
                None => {
                    debug!("dropped {}: sent too much after its refusal", conn.ip);
                    self.remove(key, app, now);
                }
            },
        }
    }
}
