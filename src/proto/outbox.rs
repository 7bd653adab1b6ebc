//! What the core asks the shell to do: the actions out of [`Hub`](crate::proto::hub::Hub).
//!
//! The drain contract: every call into the hub (`open`, `on_text`,
//! `on_binary`, `on_timer`, `disconnect`, `publish`) may queue actions; the
//! shell must then apply every action in order, and `clear` the outbox,
//! before the next call. A `Body::Arena` is a range of this outbox's arena
//! and is only valid until that `clear`; a `Close` means the session is
//! already gone from the hub, so nothing more goes to that key.

use crate::proto::action::{self, Dialect};
use crate::proto::envelope::{write_error, write_message, JsonWriter};
use crate::proto::rooms::ConnKey;
use serde_json::value::RawValue;
use std::rc::Rc;

/// Bytes to send: a slice of the outbox arena (one recipient), or shared by many.
#[derive(Debug, Clone)]
pub enum Body {
    Arena { start: usize, end: usize },
    Shared(Rc<[u8]>),
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Send one text message (the body is its JSON).
    Send { to: ConnKey, body: Body },
    /// Close the connection with this WebSocket status code. The session is already gone.
    Close {
        to: ConnKey,
        code: u16,
        reason: &'static str,
    },
}

/// What the core asks the shell to do, in order. Unicast messages are written
/// into one reused arena, so a reply costs no allocation.
#[derive(Debug, Default)]
pub struct Outbox {
    pub actions: Vec<Action>,
    pub arena: Vec<u8>,
    /// The connections written in the action dialect, by key (SPEC §13).
    action_keys: Vec<bool>,
}

/// A message for many recipients, serialised once per dialect: the action
/// form is made from the section-4 form the first time a recipient needs it.
pub(crate) struct Broadcast {
    event_form: Rc<[u8]>,
    action_form: Option<Rc<[u8]>>,
}

impl Broadcast {
    /// The section-4 form of a message for many recipients (a room's
    /// history may keep the same bytes).
    pub(crate) fn shared(event_form: Rc<[u8]>) -> Broadcast {
        Broadcast {
            event_form,
            action_form: None,
        }
    }

    /// The section-4 form, as other cluster nodes get it.
    pub(crate) fn event_form(&self) -> &Rc<[u8]> {
        &self.event_form
    }
}

impl Outbox {
    pub fn body<'a>(&'a self, body: &'a Body) -> &'a [u8] {
        match body {
            Body::Arena { start, end } => &self.arena[*start..*end],
            Body::Shared(bytes) => bytes,
        }
    }

    pub fn clear(&mut self) {
        self.actions.clear();
        self.arena.clear();
    }

    /// How messages to `key` are written from now on.
    pub(crate) fn set_dialect(&mut self, key: ConnKey, dialect: Dialect) {
        let action = dialect == Dialect::Action;
        if self.action_keys.len() <= key {
            if !action {
                return;
            }
            self.action_keys.resize(key + 1, false);
        }
        self.action_keys[key] = action;
    }

    pub fn dialect(&self, key: ConnKey) -> Dialect {
        if self.action_keys.get(key).copied().unwrap_or(false) {
            Dialect::Action
        } else {
            Dialect::Event
        }
    }

    /// Queues `message` for `to`, in `to`'s dialect.
    pub(crate) fn send_shared(&mut self, to: ConnKey, message: &mut Broadcast) {
        let bytes = match self.dialect(to) {
            Dialect::Event => message.event_form.clone(),
            Dialect::Action => {
                let event_form = &message.event_form;
                message
                    .action_form
                    .get_or_insert_with(|| match action::convert(event_form) {
                        Some(converted) => converted.into(),
                        // The core wrote the section-4 form: unreachable, but
                        // sending it as is beats dropping it.
                        None => event_form.clone(),
                    })
                    .clone()
            }
        };
        self.actions.push(Action::Send {
            to,
            body: Body::Shared(bytes),
        });
    }

    /// Queues for `to` one message `{"event", "data": {FIELDS}, "requestId"?}`;
    /// `fields` writes the fields of the data object.
    pub(crate) fn reply(
        &mut self,
        to: ConnKey,
        event: &str,
        rid: Option<&RawValue>,
        fields: impl FnOnce(&mut JsonWriter<'_>),
    ) {
        if self.dialect(to) == Dialect::Action {
            // The core's own fields never collide with `action`/`requestId`.
            let start = self.arena.len();
            let mut msg = JsonWriter::object(&mut self.arena);
            msg.str("action", event);
            fields(&mut msg);
            msg.request_id(rid).end();
            return self.send_from(to, start);
        }
        self.reply_with(to, event, rid, |buf| {
            let mut data = JsonWriter::object(buf);
            fields(&mut data);
            data.end();
        });
    }

    /// Queues for `to` one message whose `data` is JSON text passed through as is.
    pub(crate) fn reply_raw(
        &mut self,
        to: ConnKey,
        event: &str,
        rid: Option<&RawValue>,
        data: &str,
    ) {
        if self.dialect(to) == Dialect::Action {
            let start = self.arena.len();
            action::write_message(&mut self.arena, event, data, &[], rid);
            return self.send_from(to, start);
        }
        self.reply_with(to, event, rid, |buf| buf.extend_from_slice(data.as_bytes()));
    }

    /// `ok` `{FIELDS}`, sent only when the message it answers carried a `requestId`.
    pub(crate) fn ack(
        &mut self,
        to: ConnKey,
        rid: Option<&RawValue>,
        fields: impl FnOnce(&mut JsonWriter<'_>),
    ) {
        if rid.is_some() {
            self.reply(to, "ok", rid, fields);
        }
    }

    /// Queues for `to` an error with any code: one of [`ErrorCode`], or a host's own.
    pub(crate) fn error(
        &mut self,
        to: ConnKey,
        code: &str,
        message: &str,
        now_unix: u64,
        rid: Option<&RawValue>,
    ) {
        let start = self.arena.len();
        match self.dialect(to) {
            Dialect::Event => write_error(&mut self.arena, code, message, now_unix, rid),
            Dialect::Action => {
                let error = action::ActionError {
                    code,
                    message,
                    timestamp: now_unix,
                };
                error.write(&mut self.arena, rid);
            }
        }
        self.send_from(to, start);
    }

    /// Writes one message into the arena and queues it for `to`: every
    /// unicast message goes through here.
    fn reply_with(
        &mut self,
        to: ConnKey,
        event: &str,
        rid: Option<&RawValue>,
        data: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.arena.len();
        write_message(&mut self.arena, event, rid, data);
        self.send_from(to, start);
    }

    fn send_from(&mut self, to: ConnKey, start: usize) {
        let end = self.arena.len();
        self.actions.push(Action::Send {
            to,
            body: Body::Arena { start, end },
        });
    }
}
