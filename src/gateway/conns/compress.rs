//! permessage-deflate in the shell: compressing outgoing messages once
//! however many clients receive them, and inflating what clients send with
//! one inflater for the whole process.

use super::Conns;
use crate::gateway::app::App;
use crate::gateway::metrics::ShellMetrics;
use crate::proto::deflate::{Deflater, InflateError, Inflater};
use crate::proto::frame::{FrameError, WsEvent};
use crate::proto::Now;
use std::rc::Rc;

/// An inflate output buffer larger than this is let go after its message.
const KEEP_INFLATE_BUFFER: usize = 64 * 1024;

/// A shared message body and its compressed form (`None`: it goes plain).
type SharedCompressed = (Rc<[u8]>, Option<Rc<[u8]>>);

/// The process's compression state, created on first use: no connection
/// holds any (both ways negotiate no context takeover).
#[derive(Default)]
pub(super) struct Compression {
    deflater: Option<Box<Deflater>>,
    inflater: Option<Box<Inflater>>,
    /// The shared body compressed last and what it gave (`None`: sent plain),
    /// so that a broadcast's recipients share one compressed body.
    last_shared: Option<SharedCompressed>,
}

impl Compression {
    /// The compressed form of a message (`None`: it goes plain), computed
    /// once per shared body.
    pub(super) fn compress(
        &mut self,
        payload: &[u8],
        shared: Option<&Rc<[u8]>>,
        metrics: &mut ShellMetrics,
    ) -> Option<Rc<[u8]>> {
        if let (Some(body), Some((last, result))) = (shared, &self.last_shared) {
            if Rc::ptr_eq(body, last) {
                return result.clone();
            }
        }
        let deflater = self.deflater.get_or_insert_with(Box::default);
        let result: Option<Rc<[u8]>> = deflater.compress(payload).map(Rc::from);
        if result.is_some() {
            metrics.compressed_messages += 1;
        }
        if let Some(body) = shared {
            self.last_shared = Some((body.clone(), result.clone()));
        }
        result
    }

    /// Called when a batch of actions is done: the cached broadcast is not
    /// kept past it.
    pub(super) fn forget_shared(&mut self) {
        self.last_shared = None;
    }
}

impl Conns {
    /// Inflates one compressed message (bounded by `max_message_bytes`) and
    /// handles it as the text or binary message it holds.
    pub(super) fn on_compressed(
        &mut self,
        key: usize,
        text: bool,
        payload: &[u8],
        app: &mut App,
        now: Now,
    ) -> Result<bool, FrameError> {
        let mut inflater = self.compression.inflater.take().unwrap_or_default();
        let handled = match inflater.inflate(payload, self.cfg.max_message_bytes) {
            Ok(raw) if text => match std::str::from_utf8(raw) {
                Ok(raw) => self.on_ws_event(key, WsEvent::Text(raw), app, now),
                Err(_) => Err(FrameError::InvalidUtf8),
            },
            Ok(raw) => self.on_ws_event(key, WsEvent::Binary(raw), app, now),
            Err(InflateError::TooBig) => Err(FrameError::TooBig),
            Err(InflateError::Corrupt) => Err(FrameError::BadCompression),
        };
        inflater.release_large(KEEP_INFLATE_BUFFER);
        self.compression.inflater = Some(inflater);
        handled
    }
}
