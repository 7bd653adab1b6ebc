//! TLS 1.3 application traffic secrets, which a session on our record
//! layer keeps to derive its next keys on a KeyUpdate (RFC 8446 §7.2).
//!
//! rustls hands them out only through `ServerConfig::key_log`, called
//! synchronously while it processes a handshake on this thread: the
//! [`CaptureSecrets`] logger puts them in a thread-local slot, which the
//! caller empties with [`begin`] before each call into rustls and moves
//! into that session with [`collect`] right after. The derivations are the
//! suite's own HKDF (rustls' provider); only the HkdfLabel encoding is here.

use rustls::{KeyLog, Tls13CipherSuite};
use std::cell::RefCell;
use zeroize::Zeroize;

/// The longest traffic secret of the suites offered (SHA-384).
const MAX_SECRET: usize = 48;
const CLIENT_LABEL: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER_LABEL: &str = "SERVER_TRAFFIC_SECRET_0";

/// One direction's traffic secret (zeroed on drop, never logged).
pub struct TrafficSecret {
    bytes: [u8; MAX_SECRET],
    len: u8,
}

impl TrafficSecret {
    fn new(secret: &[u8]) -> Option<TrafficSecret> {
        let mut bytes = [0; MAX_SECRET];
        bytes.get_mut(..secret.len())?.copy_from_slice(secret);
        Some(TrafficSecret {
            bytes,
            len: u8::try_from(secret.len()).ok()?,
        })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// application_traffic_secret_N+1 (RFC 8446 §7.2).
    pub fn next(&self, suite: &Tls13CipherSuite) -> Option<TrafficSecret> {
        let mut next = [0u8; MAX_SECRET];
        let next = next.get_mut(..usize::from(self.len))?;
        expand_label(suite, self.as_bytes(), b"traffic upd", next)?;
        let secret = TrafficSecret::new(next);
        next.zeroize();
        secret
    }

    /// The record key and IV this secret makes (RFC 8446 §7.3).
    pub fn key_iv<const KEY: usize>(
        &self,
        suite: &Tls13CipherSuite,
    ) -> Option<([u8; KEY], [u8; 12])> {
        let mut key = [0u8; KEY];
        let mut iv = [0u8; 12];
        expand_label(suite, self.as_bytes(), b"key", &mut key)?;
        expand_label(suite, self.as_bytes(), b"iv", &mut iv)?;
        Some((key, iv))
    }
}

impl Drop for TrafficSecret {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

/// HKDF-Expand-Label(secret, label, "", out.len()) (RFC 8446 §7.1), with
/// the suite's HKDF.
fn expand_label(
    suite: &Tls13CipherSuite,
    secret: &[u8],
    label: &[u8],
    out: &mut [u8],
) -> Option<()> {
    const PREFIX: &[u8] = b"tls13 ";
    let length = u16::try_from(out.len()).ok()?.to_be_bytes();
    let label_len = [u8::try_from(PREFIX.len() + label.len()).ok()?];
    let context_len = [0u8];
    let info: [&[u8]; 5] = [&length, &label_len, PREFIX, label, &context_len];
    let okm = rustls::crypto::tls13::OkmBlock::new(secret);
    let expander = suite.hkdf_provider.expander_for_okm(&okm);
    expander.expand_slice(&info, out).ok()
}

/// A handshake's two application traffic secrets, as logged.
#[derive(Default)]
pub struct Captured {
    pub client: Option<TrafficSecret>,
    pub server: Option<TrafficSecret>,
}

thread_local! {
    /// What the logger caught during the current call into rustls.
    static SLOT: RefCell<Captured> = RefCell::new(Captured::default());
}

/// Empties the slot before a call into rustls for one connection.
pub fn begin() {
    SLOT.with(|slot| *slot.borrow_mut() = Captured::default());
}

/// Moves what the call just made caught into that connection's `into`.
pub fn collect(into: &mut Option<Box<Captured>>) {
    let caught = SLOT.with(|slot| std::mem::take(&mut *slot.borrow_mut()));
    if caught.client.is_none() && caught.server.is_none() {
        return;
    }
    let into = into.get_or_insert_with(Box::default);
    if caught.client.is_some() {
        into.client = caught.client;
    }
    if caught.server.is_some() {
        into.server = caught.server;
    }
}

/// The `key_log` of our server configuration: keeps only the application
/// traffic secrets, in the slot, and writes nothing anywhere.
#[derive(Debug)]
pub struct CaptureSecrets;

impl KeyLog for CaptureSecrets {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        let Some(secret) = TrafficSecret::new(secret) else {
            return;
        };
        SLOT.with(|slot| {
            let mut slot = slot.borrow_mut();
            match label {
                CLIENT_LABEL => slot.client = Some(secret),
                SERVER_LABEL => slot.server = Some(secret),
                _ => {}
            }
        });
    }

    fn will_log(&self, label: &str) -> bool {
        label == CLIENT_LABEL || label == SERVER_LABEL
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::ring::cipher_suite;
    use rustls::SupportedCipherSuite;

    fn suite(s: SupportedCipherSuite) -> &'static Tls13CipherSuite {
        match s {
            SupportedCipherSuite::Tls13(s) => s,
            _ => unreachable!(),
        }
    }

    #[test]
    fn hkdf_expand_label_matches_rfc_8448() {
        // RFC 8448 §3 (simple 1-RTT handshake), server application traffic
        // secret and its key and IV (TLS_AES_128_GCM_SHA256).
        let secret = hex("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643");
        let secret = TrafficSecret::new(&secret).unwrap();
        let s = suite(cipher_suite::TLS13_AES_128_GCM_SHA256);
        let (key, iv) = secret.key_iv::<16>(s).unwrap();
        assert_eq!(key.to_vec(), hex("9f02283b6c9c07efc26bb9f2ac92e356"));
        assert_eq!(iv.to_vec(), hex("cf782b88dd83549aadf1e984"));
        assert_eq!(secret.next(s).unwrap().len, 32);
    }

    #[test]
    fn only_the_application_traffic_secrets_are_kept() {
        assert!(CaptureSecrets.will_log(CLIENT_LABEL));
        assert!(!CaptureSecrets.will_log("CLIENT_HANDSHAKE_TRAFFIC_SECRET"));
        begin();
        CaptureSecrets.log(SERVER_LABEL, &[0; 32], &[7; 48]);
        CaptureSecrets.log("EXPORTER_SECRET", &[0; 32], &[8; 48]);
        let mut into = None;
        collect(&mut into);
        let into = into.unwrap();
        assert!(into.client.is_none());
        assert_eq!(into.server.as_ref().unwrap().as_bytes(), &[7; 48]);
        let mut again = None;
        collect(&mut again);
        assert!(again.is_none(), "the slot was emptied");
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
