//! The WebSocket stage: frames in, the core's actions out, the closing
//! handshake (RFC 6455 §5.5.1, §7) and the slow-reader bound.

use super::Conns;
use crate::gateway::app::App;
use crate::gateway::config::CLOSE_LINGER_MS;
use crate::gateway::conn::Stage;
use crate::gateway::outqueue::fits;
use crate::proto::client_id::client_id_str;
use crate::proto::frame::{close_payload, FrameError, OutHeader, OutKind, WsEvent};
use crate::proto::hub::is_bridged;
use crate::proto::outbox::{Action, Body};
use crate::proto::Now;
use log::{debug, warn};
use std::rc::Rc;

impl Conns {
    pub(super) fn on_frame_bytes(&mut self, key: usize, data: &mut [u8], app: &mut App, now: Now) {
        let max = self.cfg.max_message_bytes;
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        let mut decoder = std::mem::take(&mut conn.decoder);
        let mut held = conn.inbuf.take();
        let from_held = held.is_some();
        let buf: &mut [u8] = match held.as_mut() {
            Some(held) => {
                held.extend_from_slice(data);
                held
            }
            None => data,
        };
        let mut consumed = 0;
        let mut failure = None;
        loop {
            match decoder.decode(&mut buf[consumed..], max) {
                Ok(None) => break,
                Ok(Some((event, used))) => {
                    consumed += used;
                    match self.on_ws_event(key, event, app, now) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // A partial frame left in the shared read buffer moves to a pooled one.
        let spill = (!from_held && consumed < buf.len()).then(|| {
            let mut spill = self.pool.checkout(buf.len() - consumed);
            spill.extend_from_slice(&buf[consumed..]);
            spill
        });
        let mut held = held.or(spill);
        if from_held {
            if let Some(buf) = held.as_mut() {
                buf.drain(..consumed);
            }
        }
        match self.slab.get_mut(key) {
            Some(conn) => {
                conn.decoder = decoder;
                match held {
                    Some(buf) if buf.is_empty() => self.pool.checkin(buf),
                    other => conn.inbuf = other,
                }
            }
            None => {
                if let Some(buf) = held {
                    self.pool.checkin(buf);
                }
                return;
            }
        }
        if let Some(error) = failure {
            self.fail(key, error, app, now);
        }
    }

    fn fail(&mut self, key: usize, error: FrameError, app: &mut App, now: Now) {
        if let Some(conn) = self.slab.get_mut(key) {
            debug!(
                "client {} failed: {}",
                client_id_str(conn.id),
                error.reason()
            );
            // Nothing more from this peer is read as frames.
            if let Some(buf) = conn.inbuf.take() {
                self.pool.checkin(buf);
            }
            conn.decoder = Default::default();
            if conn.stage.is_open() {
                // Failing the connection (RFC 6455 §7.1.7): send our close
                // frame, then drop TCP without waiting for the peer's.
                self.start_close(key, error.close_code(), error.reason(), app, now);
                if let Some(conn) = self.slab.get_mut(key) {
                    conn.stage = conn.stage.peer_done();
                }
            } else {
                // Garbage while waiting for the peer's close: stop reading,
                // but let our close frame go out first.
                conn.stage = conn.stage.peer_done();
            }
            self.mark_dirty(key);
        }
    }

    /// Handles one decoded frame; false to stop reading this connection's
    /// frames, an error to fail the connection.
    pub(super) fn on_ws_event(
        &mut self,
        key: usize,
        event: WsEvent<'_>,
        app: &mut App,
        now: Now,
    ) -> Result<bool, FrameError> {
        let Some(conn) = self.slab.get_mut(key) else {
            return Ok(false);
        };
        let open = conn.stage.is_open();
        if open && matches!(event, WsEvent::Text(_) | WsEvent::Binary(_)) {
            self.metrics.messages_in += 1;
        }
        match event {
            WsEvent::Text(_) | WsEvent::Binary(_) | WsEvent::Compressed { .. } if !open => {}
            WsEvent::Compressed { text, payload } => {
                return self.on_compressed(key, text, payload, app, now)
            }
            WsEvent::Text(text) => match &mut *app {
                App::Echo => {
                    self.queue_message(key, OutKind::Text, text.as_bytes(), None, app, now)
                }
                App::Gateway(hub) => {
                    hub.on_text(key, now, text);
                    self.apply_outbox(app, now);
                    self.schedule(key, app);
                }
            },
            WsEvent::Binary(bytes) => match &mut *app {
                App::Echo => self.queue_message(key, OutKind::Binary, bytes, None, app, now),
                App::Gateway(hub) => {
                    hub.on_binary(key, now);
                    self.apply_outbox(app, now);
                }
            },
            WsEvent::Ping(payload) if open => {
                self.queue_control(key, OutKind::Pong, payload, app, now)
            }
            WsEvent::Close(status) => {
                match conn.stage {
                    Stage::Open { .. } => {
                        // Echo the peer's status code (RFC 6455 §5.5.1), then close.
                        let (payload, len) = match status {
                            Some((code, _)) => close_payload(code, ""),
                            None => ([0; 125], 0),
                        };
                        self.queue_control(key, OutKind::Close, &payload[..len], app, now);
                        self.end_session(key, status.map_or(1005, |(code, _)| code), app, now);
                        let conn = &mut self.slab[key];
                        conn.stage = Stage::Closing {
                            peer_closed: true,
                            deadline_ms: now.ms + CLOSE_LINGER_MS,
                        };
                        self.schedule(key, app);
                    }
                    Stage::Closing { .. } => conn.stage = conn.stage.peer_done(),
                    _ => {}
                }
                self.mark_dirty(key);
                return Ok(false);
            }
            _ => {}
        }
        Ok(true)
    }

    /// Queues one text or binary message, compressed where the connection
    /// negotiated it and the message is long enough (and within the window
    /// the client asked for); a shared body is compressed once for all.
    fn queue_message(
        &mut self,
        key: usize,
        kind: OutKind,
        payload: &[u8],
        shared: Option<&Rc<[u8]>>,
        app: &mut App,
        now: Now,
    ) {
        let agreed = self.slab.get(key).and_then(|conn| conn.deflate);
        let compressed = match agreed {
            Some(agreed)
                if payload.len() >= self.cfg.compression_min_bytes
                    && agreed.fits_window(payload.len()) =>
            {
                self.compression
                    .compress(payload, shared, &mut self.metrics)
            }
            _ => None,
        };
        let (header, payload, shared) = match &compressed {
            // One recipient: copied into its queue like any unicast message.
            Some(body) => (
                OutHeader::compressed(kind, body.len()),
                &body[..],
                shared.map(|_| body),
            ),
            None => (OutHeader::new(kind, payload.len()), payload, shared),
        };
        self.queue_with_header(key, kind, header, payload, shared, app, now);
    }

    /// Queues one control frame (ping, pong, close).
    pub(super) fn queue_control(
        &mut self,
        key: usize,
        kind: OutKind,
        payload: &[u8],
        app: &mut App,
        now: Now,
    ) {
        let header = OutHeader::new(kind, payload.len());
        self.queue_with_header(key, kind, header, payload, None, app, now);
    }

    /// Queues one frame; a data frame that would overflow `max_outbound_bytes`
    /// marks a slow reader, which is closed 4009.
    #[allow(clippy::too_many_arguments)]
    fn queue_with_header(
        &mut self,
        key: usize,
        kind: OutKind,
        header: OutHeader,
        payload: &[u8],
        shared: Option<&Rc<[u8]>>,
        app: &mut App,
        now: Now,
    ) {
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        let is_data = matches!(
            kind,
            OutKind::Text | OutKind::Binary | OutKind::Ping | OutKind::Pong
        );
        if is_data && !conn.stage.is_open() {
            return;
        }
        let size = header.as_bytes().len() + payload.len();
        if is_data && !fits(&conn.out, size, self.cfg.max_outbound_bytes) {
            warn!(
                "client {} closed: reads too slowly (over limits.max_outbound_bytes)",
                client_id_str(conn.id)
            );
            conn.out.drop_unsent(&mut self.pool);
            self.metrics.slow_reader_closes += 1;
            self.start_close(key, 4009, "slow reader", app, now);
            return;
        }
        if matches!(kind, OutKind::Text | OutKind::Binary) {
            self.metrics.messages_out += 1;
        }
        self.metrics.bytes_out += size as u64;
        conn.out
            .push_frame(&mut self.pool, header.as_bytes(), payload, shared);
        self.mark_dirty(key);
    }

    /// Carries out the core's actions, including any its reactions add.
    pub(super) fn apply_outbox(&mut self, app: &mut App, now: Now) {
        loop {
            let mut out = match &mut *app {
                App::Gateway(hub) if !hub.out.actions.is_empty() => std::mem::take(&mut hub.out),
                _ => return,
            };
            for action in &out.actions {
                match action {
                    Action::Send { to, body } if is_bridged(*to) => {
                        self.mail.send(*to, out.body(body))
                    }
                    Action::Close { to, code, .. } if is_bridged(*to) => {
                        self.mail.close(*to, *code)
                    }
                    Action::Send { to, body } => {
                        let shared = match body {
                            Body::Shared(rc) => Some(rc),
                            Body::Arena { .. } => None,
                        };
                        self.queue_message(*to, OutKind::Text, out.body(body), shared, app, now);
                    }
                    Action::Close { to, code, reason } => {
                        self.start_close(*to, *code, reason, app, now)
                    }
                }
            }
            out.clear();
            self.compression.forget_shared();
            if let App::Gateway(hub) = &mut *app {
                // Hand the emptied outbox back to keep its capacity, unless
                // closing sessions queued new actions meanwhile (next round).
                if hub.out.actions.is_empty() {
                    hub.out = out;
                }
            }
        }
    }

    /// Sends a close frame and waits (bounded) for the peer's.
    pub(super) fn start_close(
        &mut self,
        key: usize,
        code: u16,
        reason: &str,
        app: &mut App,
        now: Now,
    ) {
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        if !conn.stage.is_open() {
            return;
        }
        let (payload, len) = close_payload(code, reason);
        self.queue_control(key, OutKind::Close, &payload[..len], app, now);
        self.end_session(key, code, app, now);
        let conn = &mut self.slab[key];
        conn.stage = Stage::Closing {
            peer_closed: false,
            deadline_ms: now.ms + CLOSE_LINGER_MS,
        };
        self.schedule(key, app);
    }

    /// The core forgets the session (rooms, hosts) as soon as a close starts.
    fn end_session(&mut self, key: usize, code: u16, app: &mut App, now: Now) {
        if let App::Gateway(hub) = &mut *app {
            hub.disconnect(key, code, now);
            self.apply_outbox(app, now);
        }
    }
}
