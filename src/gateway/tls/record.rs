//! The TLS 1.3 record layer of a session past its handshake (RFC 8446 §5),
//! sans-IO: records in, plaintext out, and the reverse. rustls does the
//! handshake, then hands the session over as its traffic keys, with the
//! traffic secrets our key logger caught (`traffic`) to derive the next
//! keys on a KeyUpdate; the sealing and opening are rustls' own AEAD objects, built from the stored
//! key bytes only while records are in flight. Here is only the framing:
//! the 5-byte header, the length bounds, sequence numbers, the inner
//! content type, and what alerts and post-handshake messages mean.
//!
//! An idle session so holds two keys, two secrets and two sequence
//! numbers, not rustls' whole connection and two expanded AEAD keys.

use super::traffic::{Captured, TrafficSecret};
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, Iv, MessageDecrypter, MessageEncrypter, OutboundChunks,
    OutboundPlainMessage,
};
use rustls::{
    AlertDescription, ConnectionTrafficSecrets, ContentType, ExtractedSecrets, ProtocolVersion,
    SupportedCipherSuite, Tls13CipherSuite,
};
use zeroize::Zeroize;

/// Plaintext in one record (RFC 8446 §5.1).
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// Ciphertext in one record (RFC 8446 §5.2).
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// Record header: type, legacy version, length.
pub const HEADER: usize = 5;
/// The only key length whose bytes rustls takes back (`AeadKey` is built
/// from 32 bytes): AES-256-GCM and ChaCha20-Poly1305. AES-128-GCM sessions
/// stay with rustls.
const KEY_LEN: usize = 32;
const KEY_UPDATE: u8 = 24;
const ALERT_WARNING: u8 = 1;
const ALERT_FATAL: u8 = 2;

/// Why a session ends: the alert to send (if any) and the reason to log.
#[derive(Debug, PartialEq, Eq)]
pub struct Fatal {
    pub alert: Option<AlertDescription>,
    pub reason: String,
}

impl Fatal {
    fn new(alert: AlertDescription, reason: impl Into<String>) -> Fatal {
        Fatal {
            alert: Some(alert),
            reason: reason.into(),
        }
    }
}

/// The length of the whole record at the front of `input`, once all of it
/// is there (`None`: read more). Checks the header (RFC 8446 §5.1, §5.2):
/// after the handshake every record is application_data on the outside.
pub fn record_len(input: &[u8]) -> Result<Option<usize>, Fatal> {
    let Some(header) = input.get(..HEADER) else {
        return Ok(None);
    };
    if header[0] != u8::from(ContentType::ApplicationData) {
        return Err(Fatal::new(
            AlertDescription::UnexpectedMessage,
            format!(
                "unencrypted record of type {} after the handshake",
                header[0]
            ),
        ));
    }
    if header[1] != 3 {
        return Err(Fatal::new(
            AlertDescription::DecodeError,
            "record with an unknown protocol version",
        ));
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len > MAX_CIPHERTEXT {
        return Err(Fatal::new(
            AlertDescription::RecordOverflow,
            format!("record of {len} bytes (limit {MAX_CIPHERTEXT})"),
        ));
    }
    Ok((input.len() >= HEADER + len).then_some(HEADER + len))
}

/// What one opened record holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    Data(&'a [u8]),
    /// close_notify.
    Closed,
    /// The peer's keys changed; reply with ours if it asked.
    KeyUpdated {
        reply: bool,
    },
    /// A warning to ignore (user_canceled).
    Nothing,
}

/// One direction's key, IV, the secret they came from, and the next
/// sequence number.
struct Keys {
    key: [u8; KEY_LEN],
    iv: [u8; 12],
    secret: TrafficSecret,
    seq: u64,
}

impl Keys {
    /// The keys rustls extracted, with the secret the logger caught for
    /// them: one that does not make the same key belongs to another
    /// connection (or was not caught), and the session is refused.
    fn new(
        (seq, secrets): (u64, ConnectionTrafficSecrets),
        secret: Option<TrafficSecret>,
        suite: &Tls13CipherSuite,
    ) -> Result<Keys, String> {
        let (key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes256Gcm { key, iv }
            | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key, iv),
            _ => return Err("TLS session with a suite the record layer does not take".into()),
        };
        let secret = secret.ok_or("TLS traffic secret not caught during the handshake")?;
        let keys =
            Keys::derive(secret, seq, suite).ok_or("TLS traffic secret of the wrong length")?;
        if keys.key[..] != *key.as_ref() || keys.iv[..] != *iv.as_ref() {
            return Err("TLS traffic secret caught for another session".into());
        }
        Ok(keys)
    }

    fn derive(secret: TrafficSecret, seq: u64, suite: &Tls13CipherSuite) -> Option<Keys> {
        let (key, iv) = secret.key_iv::<KEY_LEN>(suite)?;
        Some(Keys {
            key,
            iv,
            secret,
            seq,
        })
    }

    /// The next generation (RFC 8446 §7.2), its sequence numbers from 0.
    fn next(&self, suite: &Tls13CipherSuite) -> Result<Keys, Fatal> {
        self.secret
            .next(suite)
            .and_then(|secret| Keys::derive(secret, 0, suite))
            .ok_or_else(|| Fatal::new(AlertDescription::InternalError, "key update failed"))
    }

    fn parts(&self) -> (AeadKey, Iv) {
        (AeadKey::from(self.key), Iv::from(self.iv))
    }

    /// The sequence number for the next record, counted.
    fn next_seq(&mut self) -> Result<u64, Fatal> {
        let seq = self.seq;
        self.seq = seq.checked_add(1).ok_or_else(|| Fatal {
            alert: None,
            reason: "TLS sequence numbers used up".into(),
        })?;
        Ok(seq)
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        // Best effort: key bytes do not outlive the session in the heap.
        self.key.zeroize();
    }
}

/// A TLS 1.3 session's record layer.
pub struct RecordLayer {
    suite: &'static Tls13CipherSuite,
    tx: Keys,
    rx: Keys,
    /// A close_notify or a fatal alert went out: nothing more is sealed.
    tx_closed: bool,
}

/// Whether a session can move to [`RecordLayer`]: TLS 1.3 with a 32-byte key.
pub fn fits(suite: Option<SupportedCipherSuite>) -> bool {
    matches!(suite, Some(SupportedCipherSuite::Tls13(s)) if s.aead_alg.key_len() == KEY_LEN)
}

impl RecordLayer {
    /// The session with rustls' extracted keys and the secrets caught for
    /// it; the error says why it cannot move (a suite [`fits`] does not
    /// take, or secrets missing or not this session's).
    pub fn new(
        secrets: ExtractedSecrets,
        suite: SupportedCipherSuite,
        captured: Captured,
    ) -> Result<RecordLayer, String> {
        let SupportedCipherSuite::Tls13(suite) = suite else {
            return Err("TLS session with a suite the record layer does not take".into());
        };
        Ok(RecordLayer {
            tx: Keys::new(secrets.tx, captured.server, suite)?,
            rx: Keys::new(secrets.rx, captured.client, suite)?,
            suite,
            tx_closed: false,
        })
    }

    /// A close_notify or fatal alert went out.
    pub fn tx_closed(&self) -> bool {
        self.tx_closed
    }

    /// Moves the send sequence number (to reach the key update limit).
    #[cfg(test)]
    pub fn set_tx_seq(&mut self, seq: u64) {
        self.tx.seq = seq;
    }

    /// Moves both directions to their next keys and returns them (send
    /// key and IV, then receive), as a KeyUpdate each way would.
    #[cfg(test)]
    pub fn step_keys(&mut self) -> [([u8; KEY_LEN], [u8; 12]); 2] {
        self.tx = self.tx.next(self.suite).unwrap();
        self.rx = self.rx.next(self.suite).unwrap();
        [(self.tx.key, self.tx.iv), (self.rx.key, self.rx.iv)]
    }

    /// The AEAD for the records read now (build once per batch of reads;
    /// again after [`Inbound::KeyUpdated`]).
    pub fn opener(&self) -> Box<dyn MessageDecrypter> {
        let (key, iv) = self.rx.parts();
        self.suite.aead_alg.decrypter(key, iv)
    }

    /// The AEAD for the records sealed now (again after a key update).
    pub fn sealer(&self) -> Box<dyn MessageEncrypter> {
        let (key, iv) = self.tx.parts();
        self.suite.aead_alg.encrypter(key, iv)
    }

    /// Opens the whole record `record` (as long as [`record_len`] said), in
    /// place.
    pub fn open<'a>(
        &mut self,
        opener: &mut dyn MessageDecrypter,
        record: &'a mut [u8],
    ) -> Result<Inbound<'a>, Fatal> {
        let (header, payload) = record.split_at_mut(HEADER.min(record.len()));
        if header.len() < HEADER {
            return Err(Fatal::new(
                AlertDescription::DecodeError,
                "truncated record",
            ));
        }
        let seq = self.rx.next_seq()?;
        let version = ProtocolVersion::from(u16::from_be_bytes([header[1], header[2]]));
        let message = InboundOpaqueMessage::new(ContentType::ApplicationData, version, payload);
        let plain = opener
            .decrypt(message, seq)
            .map_err(|e| Fatal::new(AlertDescription::BadRecordMac, e.to_string()))?;
        if plain.payload.len() > MAX_PLAINTEXT {
            return Err(Fatal::new(
                AlertDescription::RecordOverflow,
                "record plaintext over 2^14 bytes",
            ));
        }
        match plain.typ {
            ContentType::ApplicationData => Ok(Inbound::Data(plain.payload)),
            ContentType::Alert => alert(plain.payload),
            ContentType::Handshake => self.handshake(plain.payload),
            other => Err(Fatal::new(
                AlertDescription::UnexpectedMessage,
                format!("{other:?} record after the handshake"),
            )),
        }
    }

    /// After the handshake a client may send only KeyUpdate (RFC 8446 §4.6),
    /// alone in its record as it changes the keys.
    fn handshake(&mut self, message: &[u8]) -> Result<Inbound<'static>, Fatal> {
        let reply = match message {
            [KEY_UPDATE, 0, 0, 1, request @ (0 | 1)] => *request == 1,
            [KEY_UPDATE, ..] => {
                return Err(Fatal::new(
                    AlertDescription::DecodeError,
                    "malformed or fragmented KeyUpdate",
                ))
            }
            _ => {
                return Err(Fatal::new(
                    AlertDescription::UnexpectedMessage,
                    format!(
                        "handshake message {:?} after the handshake",
                        message.first()
                    ),
                ))
            }
        };
        self.rx = self.rx.next(self.suite)?;
        Ok(Inbound::KeyUpdated { reply })
    }

    /// Room a record of `plain_len` plaintext bytes needs (header included),
    /// and one more for a key update put before it.
    pub fn sealed_len(&self, sealer: &dyn MessageEncrypter, plain_len: usize) -> usize {
        let record = HEADER + sealer.encrypted_payload_len(plain_len);
        let key_update = HEADER + sealer.encrypted_payload_len(5);
        record + key_update
    }

    /// Seals `plain` (at most [`MAX_PLAINTEXT`]) as one record of type `typ`
    /// into `out`, which has room for [`RecordLayer::sealed_len`]. When the
    /// suite's confidentiality limit is near, a KeyUpdate goes first and
    /// `sealer` is replaced. Returns the bytes used.
    pub fn seal(
        &mut self,
        sealer: &mut Box<dyn MessageEncrypter>,
        typ: ContentType,
        plain: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Fatal> {
        if self.tx_closed {
            return Ok(0);
        }
        let mut used = 0;
        if self.tx.seq >= self.suite.common.confidentiality_limit {
            used = self.key_update(sealer, false, out)?;
        }
        Ok(used + self.seal_one(sealer.as_mut(), typ, plain, &mut out[used..])?)
    }

    /// Seals our KeyUpdate (asking the peer for one too if `request`), and
    /// moves on to the next key. Returns the bytes used in `out`.
    pub fn key_update(
        &mut self,
        sealer: &mut Box<dyn MessageEncrypter>,
        request: bool,
        out: &mut [u8],
    ) -> Result<usize, Fatal> {
        let message = [KEY_UPDATE, 0, 0, 1, u8::from(request)];
        let used = self.seal_one(sealer.as_mut(), ContentType::Handshake, &message, out)?;
        self.tx = self.tx.next(self.suite)?;
        *sealer = self.sealer();
        Ok(used)
    }

    /// Seals an alert: close_notify (a warning) or a fatal one; nothing is
    /// sealed after it.
    pub fn seal_alert(
        &mut self,
        description: AlertDescription,
        out: &mut [u8],
    ) -> Result<usize, Fatal> {
        if self.tx_closed {
            return Ok(0);
        }
        let level = match description {
            AlertDescription::CloseNotify => ALERT_WARNING,
            _ => ALERT_FATAL,
        };
        let mut sealer = self.sealer();
        let used = self.seal_one(
            sealer.as_mut(),
            ContentType::Alert,
            &[level, u8::from(description)],
            out,
        )?;
        self.tx_closed = true;
        Ok(used)
    }

    fn seal_one(
        &mut self,
        sealer: &mut dyn MessageEncrypter,
        typ: ContentType,
        plain: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Fatal> {
        let len = HEADER + sealer.encrypted_payload_len(plain.len());
        if plain.len() > MAX_PLAINTEXT || out.len() < len {
            return Err(Fatal {
                alert: None,
                reason: format!("no room to seal {} bytes", plain.len()),
            });
        }
        let seq = self.tx.next_seq()?;
        let message = OutboundPlainMessage {
            typ,
            version: ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(plain),
        };
        let record = sealer
            .encrypt(message, seq)
            .map_err(|e| Fatal::new(AlertDescription::InternalError, e.to_string()))?
            .encode();
        let used = record.len();
        out.get_mut(..used)
            .ok_or_else(|| Fatal {
                alert: None,
                reason: "sealed record longer than announced".into(),
            })?
            .copy_from_slice(&record);
        Ok(used)
    }
}

/// An alert record's meaning: close_notify ends the session cleanly,
/// user_canceled is ignored (rustls does the same), any other ends it.
fn alert(payload: &[u8]) -> Result<Inbound<'static>, Fatal> {
    let &[_level, description] = payload else {
        return Err(Fatal::new(AlertDescription::DecodeError, "malformed alert"));
    };
    match AlertDescription::from(description) {
        AlertDescription::CloseNotify => Ok(Inbound::Closed),
        AlertDescription::UserCanceled => Ok(Inbound::Nothing),
        other => Err(Fatal {
            alert: None,
            reason: rustls::Error::AlertReceived(other).to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_checked_before_the_record_is_whole() {
        assert_eq!(record_len(&[23, 3]), Ok(None));
        assert_eq!(record_len(&[23, 3, 3, 0, 20, 1, 2]), Ok(None));
        assert_eq!(record_len(&[23, 3, 3, 0, 2, 1, 2, 9]), Ok(Some(7)));
        let bad = |input: &[u8]| record_len(input).unwrap_err().alert;
        assert_eq!(
            bad(&[22, 3, 3, 0, 1]),
            Some(AlertDescription::UnexpectedMessage)
        );
        assert_eq!(bad(&[23, 9, 3, 0, 1]), Some(AlertDescription::DecodeError));
        let over = (MAX_CIPHERTEXT as u16 + 1).to_be_bytes();
        assert_eq!(
            bad(&[23, 3, 3, over[0], over[1]]),
            Some(AlertDescription::RecordOverflow)
        );
    }

    #[test]
    fn alerts_mean_what_rustls_says() {
        assert_eq!(alert(&[1, 0]), Ok(Inbound::Closed));
        assert_eq!(alert(&[1, 90]), Ok(Inbound::Nothing));
        assert_eq!(alert(&[2, 40]).unwrap_err().alert, None);
        assert_eq!(
            alert(&[2]).unwrap_err().alert,
            Some(AlertDescription::DecodeError)
        );
    }
}
