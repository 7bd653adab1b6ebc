//! [`feed`], [`flush`] and [`close_notify`] for a session our TLS 1.3
//! record layer runs, with the same buffers and results as with rustls.

use super::input::{plain_or, Input, TlsRead};
use super::record::{record_len, Fatal, Inbound, RecordLayer, HEADER};
use super::seal::{seal_and_send, Sealed, Sealer, SEALED_LIMIT};
use crate::gateway::outqueue::OutQueue;
use crate::gateway::pool::BufPool;
use rustls::AlertDescription;
use std::io::{self, Write};

/// Room for one alert or KeyUpdate record, with any suite.
const SMALL_RECORD: usize = 64;

/// Opens whole records of `input` into `scratch` after its first `filled`
/// bytes (answers and alerts go to `sealed`), until the input is used up or the next record may not fit.
pub fn feed(
    layer: &mut RecordLayer,
    sealed: &mut Sealed,
    peer_closed: &mut bool,
    input: &mut Input<'_>,
    scratch: &mut [u8],
    pool: &mut BufPool,
    mut filled: usize,
) -> TlsRead {
    let mut opener = None;
    loop {
        if *peer_closed {
            return plain_or(filled, TlsRead::Closed);
        }
        let len = match record_len(input.unprocessed()) {
            Ok(Some(len)) => len,
            Ok(None) => return plain_or(filled, TlsRead::WouldBlock),
            Err(fatal) => return fail(layer, sealed, pool, fatal),
        };
        // The plaintext is shorter than the ciphertext.
        if len - HEADER > scratch.len() - filled {
            if filled > 0 {
                return TlsRead::Plain(filled);
            }
            return TlsRead::Failed("TLS record larger than the read buffer".into());
        }
        let aead = opener.get_or_insert_with(|| layer.opener());
        let opened = layer.open(aead.as_mut(), &mut input.unprocessed()[..len]);
        let reply = match opened {
            Ok(Inbound::Data(plain)) => {
                scratch[filled..filled + plain.len()].copy_from_slice(plain);
                filled += plain.len();
                false
            }
            Ok(Inbound::Closed) => {
                *peer_closed = true;
                false
            }
            Ok(Inbound::KeyUpdated { reply }) => {
                opener = None;
                reply
            }
            Ok(Inbound::Nothing) => false,
            Err(fatal) => {
                input.discard(len);
                return fail(layer, sealed, pool, fatal);
            }
        };
        input.discard(len);
        if reply {
            let mut aead = layer.sealer();
            let answered = seal_into(sealed, pool, |room| {
                layer.key_update(&mut aead, false, room)
            });
            if let Err(fatal) = answered {
                return fail(layer, sealed, pool, fatal);
            }
        }
    }
}

/// Seals the alert `fatal` calls for (best effort) and reports it.
fn fail(layer: &mut RecordLayer, sealed: &mut Sealed, pool: &mut BufPool, fatal: Fatal) -> TlsRead {
    if let Some(alert) = fatal.alert {
        let _ = seal_into(sealed, pool, |room| layer.seal_alert(alert, room));
    }
    TlsRead::Failed(fatal.reason)
}

/// Seals one small record into `sealed`; a peer that makes the server
/// answer past [`SEALED_LIMIT`] without reading is refused.
fn seal_into(
    sealed: &mut Sealed,
    pool: &mut BufPool,
    seal: impl FnOnce(&mut [u8]) -> Result<usize, Fatal>,
) -> Result<(), Fatal> {
    if sealed.pending() + SMALL_RECORD > SEALED_LIMIT {
        return Err(Fatal {
            alert: None,
            reason: format!("more than {SEALED_LIMIT} bytes of TLS records unread by the peer"),
        });
    }
    sealed.lend(pool);
    let (room, start) = sealed.room(SMALL_RECORD);
    let used = seal(room);
    sealed.commit(start, *used.as_ref().unwrap_or(&0));
    sealed.settle(pool);
    used.map(drop)
}

/// One pass of [`super::flush`] once the sealed records are written:
/// seals queued plaintext (up to the staging buffer) and writes it. True
/// when nothing is left to seal.
pub fn seal_queued(
    layer: &mut RecordLayer,
    sealed: &mut Sealed,
    sock: &mut impl Write,
    out: &mut OutQueue,
    pool: &mut BufPool,
    staging: &mut [u8],
) -> io::Result<bool> {
    // After our close_notify nothing more goes out (as with rustls).
    if out.is_empty() || layer.tx_closed() {
        return Ok(true);
    }
    let aead = layer.sealer();
    let sealer = Sealer::Records { layer, aead };
    seal_and_send(sealer, sock, out, pool, staging, sealed)?;
    Ok(false)
}

/// Seals a close_notify (once).
pub fn close_notify(
    layer: &mut RecordLayer,
    sealed: &mut Sealed,
    pool: &mut BufPool,
) -> io::Result<()> {
    seal_into(sealed, pool, |room| {
        layer.seal_alert(AlertDescription::CloseNotify, room)
    })
    .map_err(|fatal| io::Error::other(fatal.reason))
}
