//! Fuzzing harness of the TLS 1.3 record layer (`record`, `records_io`):
//! the body of the `records` cargo-fuzz target in `tests/fuzz/`, replayed
//! under `cargo test` from `tests/fuzz/corpus/records/`.
//!
//! A rustls client does the handshake through memory and hands its keys
//! over, so the input can be both raw bytes and records sealed with the
//! client's real key (any inner content type, any length): the opening,
//! the alerts, KeyUpdate and the bounds are reached, not only the MAC check.
//! Invariants: no panic, every pooled buffer comes back, nothing is read
//! after the session failed or closed.

use super::io::{feed, flush, Input, TlsRead};
use super::session::{Stage, TlsSession};
use super::TlsState;
use crate::gateway::outqueue::OutQueue;
use crate::gateway::pool::BufPool;
use rustls::crypto::cipher::{MessageEncrypter, OutboundChunks, OutboundPlainMessage};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ConnectionTrafficSecrets, ContentType};
use rustls::{ProtocolVersion, RootCertStore, SupportedCipherSuite};
use std::sync::{Arc, OnceLock};

struct Fixture {
    server: TlsState,
    client: Arc<ClientConfig>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = rcgen::KeyPair::generate().expect("generate a key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .and_then(|params| params.self_signed(&key))
            .expect("self-sign a certificate");
        let dir = std::env::temp_dir().join(format!("tether-fuzz-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let (cert_path, key_path) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write the certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
        let server = TlsState::load(&cert_path, &key_path).expect("load the pair");
        let _ = std::fs::remove_dir_all(&dir);
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(cert.der().to_vec()))
            .expect("a root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.enable_secret_extraction = true;
        Fixture {
            server,
            client: Arc::new(client),
        }
    })
}

/// The read pass: held bytes first, then feed until the input is used up.
/// False once the session is over.
fn deliver(server: &mut TlsSession, wire: &[u8], pool: &mut BufPool) -> bool {
    let held = server.held_len();
    let mut records = vec![0u8; held + wire.len()];
    server.unhold(&mut records[..held], pool);
    records[held..].copy_from_slice(wire);
    let mut input = Input::new(&mut records);
    let mut scratch = vec![0u8; 32 * 1024];
    loop {
        match feed(server, &mut input, &mut scratch, pool) {
            TlsRead::Plain(n) => assert!(n <= scratch.len()),
            TlsRead::WouldBlock => return server.hold(input.rest(), pool).is_ok(),
            TlsRead::Closed | TlsRead::Failed(_) => return false,
        }
    }
}

/// A session past its handshake, and the client's sealing key.
fn established(pool: &mut BufPool) -> Option<(TlsSession, Box<dyn MessageEncrypter>, u64)> {
    let fixture = fixture();
    let mut server = fixture.server.session().ok()?;
    let name = ServerName::try_from("localhost").ok()?;
    let mut client = ClientConnection::new(Arc::clone(&fixture.client), name).ok()?;
    let mut out = OutQueue::default();
    for _ in 0..8 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).ok()?;
        }
        deliver(&mut server, &wire, pool);
        let mut back = Vec::new();
        flush(&mut server, &mut back, &mut out, pool, &mut [0; 65536]).ok()?;
        let mut src = &back[..];
        while !src.is_empty() {
            client.read_tls(&mut src).ok()?;
            client.process_new_packets().ok()?;
        }
    }
    let Some(SupportedCipherSuite::Tls13(suite)) = client.negotiated_cipher_suite() else {
        return None;
    };
    if !matches!(server.stage, Stage::Records(_)) {
        return None;
    }
    #[allow(deprecated)]
    let secrets = client.dangerous_extract_secrets().ok()?;
    let (seq, secrets) = secrets.tx;
    let sealer = match secrets {
        ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            suite.aead_alg.encrypter(key, iv)
        }
        _ => return None,
    };
    Some((server, sealer, seq))
}

/// Input: a sequence of steps. `0 n bytes…`: n raw bytes onto the wire;
/// `1 type hi lo bytes…`: a record of that inner type sealed with the
/// client's key; `2 at`: what is on the wire so far is read, cut at `at`.
pub fn records(data: &[u8]) {
    let mut pool = BufPool::new(4);
    let Some((mut server, mut sealer, mut seq)) = established(&mut pool) else {
        panic!("no TLS 1.3 session to fuzz");
    };
    let mut wire = Vec::new();
    let mut rest = data;
    let mut open = true;
    while let [step, tail @ ..] = rest {
        rest = tail;
        match step % 3 {
            0 => {
                let (&n, tail) = rest.split_first().unwrap_or((&0, &[]));
                let n = usize::from(n).min(tail.len());
                wire.extend_from_slice(&tail[..n]);
                rest = &tail[n..];
            }
            1 => {
                let &[typ, hi, lo, ref tail @ ..] = rest else {
                    break;
                };
                let n = usize::from(u16::from_be_bytes([hi, lo])).min(tail.len() * 64);
                let payload: Vec<u8> = tail.iter().copied().cycle().take(n).collect();
                rest = &tail[tail.len().min(n)..];
                let message = OutboundPlainMessage {
                    typ: ContentType::from(typ),
                    version: ProtocolVersion::TLSv1_2,
                    payload: OutboundChunks::Single(&payload),
                };
                if let Ok(record) = sealer.encrypt(message, seq) {
                    wire.extend_from_slice(&record.encode());
                    seq += 1;
                }
            }
            _ => {
                let (&at, tail) = rest.split_first().unwrap_or((&0, &[]));
                rest = tail;
                let at = usize::from(at).min(wire.len());
                for part in [&wire[..at], &wire[at..]] {
                    open = open && deliver(&mut server, part, &mut pool);
                }
                wire.clear();
            }
        }
    }
    if open {
        deliver(&mut server, &wire, &mut pool);
    }
    server.release(&mut pool);
    assert_eq!(pool.lent, 0, "every pooled buffer comes back");
}

#[cfg(test)]
mod tests {
    #[test]
    fn record_inputs() {
        crate::proto::fuzzing::regressions::replay("records", super::records);
    }
}
