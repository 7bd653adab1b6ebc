//! Moving bytes through one TLS session with rustls' unbuffered API:
//! records in from a read, plaintext out to the handlers, queued plaintext
//! sealed into records and written. rustls decrypts in place in the read
//! buffer the caller lends it; a session keeps only the bytes that are not
//! yet a whole record, and the sealed records the socket has not taken.

use super::input::plain_or;
pub use super::input::{Input, TlsRead};
use super::records_io;
#[cfg(test)]
use super::seal::BUFFER_LIMIT;
use super::seal::{seal_and_send, seal_handshake, seal_with, Sealer};
#[cfg(test)]
use super::session::HELD_LIMIT;
use super::session::{Stage, TlsSession};
use super::traffic;
use crate::gateway::outqueue::OutQueue;
use crate::gateway::pool::BufPool;
use rustls::unbuffered::ConnectionState;
use std::io::{self, Write};

/// What a step of the state machine leaves the read loop to do.
enum Step {
    Again,
    ScratchFull,
    NeedInput,
    /// The handshake is done: hand the session to our record layer.
    Compact,
    Closed,
    Failed(String),
}

/// Feeds `input` to the session until plaintext comes out (copied into
/// `scratch`, several records at once while they fit) or the input is used
/// up. Handshake records it answers with are sealed for the next write.
pub fn feed(
    session: &mut TlsSession,
    input: &mut Input<'_>,
    scratch: &mut [u8],
    pool: &mut BufPool,
) -> TlsRead {
    let mut filled = 0;
    loop {
        if session.peer_closed {
            return plain_or(filled, TlsRead::Closed);
        }
        let compactable = session.compactable();
        let conn = match &mut session.stage {
            Stage::Rustls(conn) => conn,
            Stage::Records(layer) => {
                let (sealed, closed) = (&mut session.sealed, &mut session.peer_closed);
                return records_io::feed(layer, sealed, closed, input, scratch, pool, filled);
            }
            Stage::Gone => return TlsRead::Failed("TLS session gone".into()),
        };
        traffic::begin();
        let status = conn.process_tls_records(input.unprocessed());
        traffic::collect(&mut session.captured);
        let discard = status.discard;
        let step = match status.state {
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                let mut step = Step::Again;
                while let Some(len) = traffic.peek_len() {
                    if len.get() > scratch.len() - filled {
                        step = Step::ScratchFull;
                        break;
                    }
                    match traffic.next_record() {
                        Some(Ok(record)) => {
                            let end = filled + record.payload.len();
                            scratch[filled..end].copy_from_slice(record.payload);
                            filled = end;
                        }
                        Some(Err(e)) => {
                            step = Step::Failed(e.to_string());
                            break;
                        }
                        None => break,
                    }
                }
                step
            }
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                match seal_handshake(&mut session.sealed, &mut encode, pool) {
                    Ok(()) => Step::Again,
                    Err(e) => Step::Failed(e),
                }
            }
            // The records are in `sealed`, which the next write pass sends.
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                transmit.done();
                Step::Again
            }
            Ok(ConnectionState::WriteTraffic(_)) if compactable => Step::Compact,
            Ok(ConnectionState::WriteTraffic(_) | ConnectionState::BlockedHandshake) => {
                Step::NeedInput
            }
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => Step::Closed,
            // Early data is not enabled, so no other state comes.
            Ok(other) => Step::Failed(format!("unexpected TLS state {other:?}")),
            Err(e) => Step::Failed(e.to_string()),
        };
        input.discard(discard);
        match step {
            Step::Again => {}
            Step::ScratchFull => return TlsRead::Plain(filled),
            Step::NeedInput => return plain_or(filled, TlsRead::WouldBlock),
            Step::Compact => {
                if let Err(reason) = session.compact() {
                    return TlsRead::Failed(reason);
                }
            }
            Step::Closed => session.peer_closed = true,
            Step::Failed(reason) => {
                seal_alert(session, input, pool);
                return TlsRead::Failed(reason);
            }
        }
    }
}

/// After an error rustls has queued its alert, which the next step hands
/// out before it reads any input: seal it. Only that one step is taken, as
/// stepping on would read the bad input again (best effort).
fn seal_alert(session: &mut TlsSession, input: &mut Input<'_>, pool: &mut BufPool) {
    let Stage::Rustls(conn) = &mut session.stage else {
        return;
    };
    traffic::begin();
    let status = conn.process_tls_records(input.unprocessed());
    traffic::collect(&mut session.captured);
    let discard = status.discard;
    if let Ok(ConnectionState::EncodeTlsData(mut encode)) = status.state {
        let _ = seal_handshake(&mut session.sealed, &mut encode, pool);
    }
    input.discard(discard);
}

/// Seals queued plaintext into records and writes them, until both are
/// written or the socket would block. True when everything, the handshake
/// included, has been written. Plaintext queued during the handshake
/// waits in `out` until the handshake is done. Records are sealed into
/// `staging` (shared, at least [`BUFFER_LIMIT`] long) and written from
/// there: only what the socket does not take is copied into the session.
pub fn flush(
    session: &mut TlsSession,
    sock: &mut impl Write,
    out: &mut OutQueue,
    pool: &mut BufPool,
    staging: &mut [u8],
) -> io::Result<bool> {
    loop {
        if !session.sealed.write_to(sock, pool)? {
            return Ok(false);
        }
        let compactable = session.compactable();
        let conn = match &mut session.stage {
            Stage::Rustls(conn) => conn,
            Stage::Records(layer) => {
                let sealed = &mut session.sealed;
                if records_io::seal_queued(layer, sealed, sock, out, pool, staging)? {
                    return Ok(true);
                }
                continue;
            }
            Stage::Gone => return Err(io::Error::other("TLS session gone")),
        };
        let held = session.held.as_deref_mut().unwrap_or(&mut []);
        traffic::begin();
        let status = conn.process_tls_records(held);
        traffic::collect(&mut session.captured);
        let discard = status.discard;
        let mut hand_over = false;
        let done = match status.state {
            Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                seal_handshake(&mut session.sealed, &mut encode, pool).map_err(io::Error::other)?;
                None
            }
            Ok(ConnectionState::TransmitTlsData(transmit)) => {
                transmit.done();
                None
            }
            // The records pass goes on once the session is handed over.
            Ok(ConnectionState::WriteTraffic(_)) if compactable => {
                hand_over = true;
                None
            }
            Ok(ConnectionState::WriteTraffic(traffic)) => {
                if out.is_empty() {
                    Some(true)
                } else {
                    let sealer = Sealer::Rustls(traffic);
                    seal_and_send(sealer, sock, out, pool, staging, &mut session.sealed)?;
                    None
                }
            }
            Ok(ConnectionState::PeerClosed) => {
                session.peer_closed = true;
                None
            }
            Ok(ConnectionState::Closed) => Some(true),
            // The handshake is not done (plaintext waits), or records wait
            // to be read, which the read pass does.
            Ok(_) => Some(false),
            Err(e) => return Err(io::Error::other(e)),
        };
        session.discard_held(discard, pool);
        if let Some(done) = done {
            return Ok(done);
        }
        if hand_over {
            session.compact().map_err(io::Error::other)?;
        }
    }
}

/// Writes sealed records; false if the socket would block first.
pub fn write_records(
    session: &mut TlsSession,
    sock: &mut impl Write,
    pool: &mut BufPool,
) -> io::Result<bool> {
    session.sealed.write_to(sock, pool)
}

/// Seals a close_notify alert (once the handshake is done; sending it
/// twice sends it once). Write it with [`write_records`].
pub fn close_notify(session: &mut TlsSession, pool: &mut BufPool) -> io::Result<()> {
    let conn = match &mut session.stage {
        Stage::Rustls(conn) => conn,
        Stage::Records(layer) => return records_io::close_notify(layer, &mut session.sealed, pool),
        Stage::Gone => return Ok(()),
    };
    let held = session.held.as_deref_mut().unwrap_or(&mut []);
    traffic::begin();
    let status = conn.process_tls_records(held);
    traffic::collect(&mut session.captured);
    let discard = status.discard;
    let sealed = match status.state {
        Ok(ConnectionState::WriteTraffic(mut traffic)) => {
            session.sealed.lend(pool);
            let sealed = seal_with(&mut session.sealed, 64, |room| {
                traffic.queue_close_notify(room)
            });
            session.sealed.settle(pool);
            sealed
        }
        _ => Ok(()),
    };
    session.discard_held(discard, pool);
    sealed
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::testing::{issue, temp_dir, write_pair};
    use super::super::TlsState;
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore};
    use std::fs;
    use std::io::Read;
    use std::sync::Arc;

    fn client(
        ca_pem: &str,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> ClientConnection {
        client_from(client_config(ca_pem, versions))
    }

    pub(in crate::gateway::tls) fn client_from(config: Arc<ClientConfig>) -> ClientConnection {
        ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap()
    }

    fn client_config(
        ca_pem: &str,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        client_config_with(ca_pem, versions, rustls::crypto::ring::default_provider())
    }

    pub(in crate::gateway::tls) fn client_config_with(
        ca_pem: &str,
        versions: &[&'static rustls::SupportedProtocolVersion],
        provider: rustls::crypto::CryptoProvider,
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// What the read pass does with one read: the held bytes first, then
    /// feed until the input is used up, holding the rest. Returns the
    /// plaintext.
    pub(in crate::gateway::tls) fn deliver(
        server: &mut TlsSession,
        wire: &[u8],
        pool: &mut BufPool,
    ) -> Vec<u8> {
        let held = server.held_len();
        let mut records = vec![0u8; held + wire.len()];
        server.unhold(&mut records[..held], pool);
        records[held..].copy_from_slice(wire);
        let mut input = Input::new(&mut records);
        let mut scratch = vec![0u8; 65536];
        let mut plain = Vec::new();
        loop {
            match feed(server, &mut input, &mut scratch, pool) {
                TlsRead::Plain(n) => plain.extend_from_slice(&scratch[..n]),
                TlsRead::WouldBlock => break,
                other => panic!("server read: {other:?}"),
            }
        }
        server.hold(input.rest(), pool).unwrap();
        plain
    }

    /// Moves the client's records to the server `step` bytes at a time.
    pub(in crate::gateway::tls) fn client_to_server(
        client: &mut ClientConnection,
        server: &mut TlsSession,
        pool: &mut BufPool,
        step: usize,
    ) -> Vec<u8> {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let mut plain = Vec::new();
        for part in wire.chunks(step.max(1)) {
            plain.extend(deliver(server, part, pool));
        }
        plain
    }

    pub(in crate::gateway::tls) fn server_to_client(client: &mut ClientConnection, wire: &[u8]) {
        let mut src = wire;
        while !src.is_empty() {
            client.read_tls(&mut src).unwrap();
            client.process_new_packets().unwrap();
        }
    }

    /// Pumps records between a client and a server session through memory.
    pub(in crate::gateway::tls) fn pump(
        client: &mut ClientConnection,
        server: &mut TlsSession,
        out: &mut OutQueue,
        pool: &mut BufPool,
        step: usize,
    ) {
        for _ in 0..20 {
            client_to_server(client, server, pool, step);
            let mut back = Vec::new();
            flush(server, &mut back, out, pool, &mut [0; 65536]).unwrap();
            server_to_client(client, &back);
        }
    }

    pub(in crate::gateway::tls) fn session_for(
        alg: &'static rcgen::SignatureAlgorithm,
        tag: &str,
    ) -> (TlsSession, String) {
        let dir = temp_dir(tag);
        let (ca, cert, key) = issue(alg);
        let (c, k) = write_pair(&dir, "a", &cert, &key);
        let state = TlsState::load(&c, &k).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        (state.session().unwrap(), ca)
    }

    /// A TLS 1.3 session with its handshake done, and its client.
    pub(in crate::gateway::tls) fn established(
        alg: &'static rcgen::SignatureAlgorithm,
        tag: &str,
    ) -> (TlsSession, ClientConnection, OutQueue, BufPool) {
        let (mut server, ca) = session_for(alg, tag);
        let mut client = client(&ca, &[&rustls::version::TLS13]);
        let mut out = OutQueue::default();
        let mut pool = BufPool::new(4);
        pump(&mut client, &mut server, &mut out, &mut pool, usize::MAX);
        (server, client, out, pool)
    }

    #[test]
    fn handshake_and_plaintext_through_the_state_machine() {
        for (versions, step) in [
            (&[&rustls::version::TLS13][..], usize::MAX),
            (&[&rustls::version::TLS12][..], usize::MAX),
            // Records cut anywhere: partial ones are held between reads.
            (&[&rustls::version::TLS13][..], 7),
            (&[&rustls::version::TLS12][..], 100),
        ] {
            let (mut server, ca) = session_for(&rcgen::PKCS_ECDSA_P256_SHA256, "pump");
            let mut client = client(&ca, versions);
            let mut out = OutQueue::default();
            let mut pool = BufPool::new(4);
            // Queued before the handshake ends: held, then sent once it has.
            out.push_copy(&mut pool, &[b"hello over tls"]);
            pump(&mut client, &mut server, &mut out, &mut pool, step);
            assert!(!client.is_handshaking());
            assert!(out.is_empty());
            let mut got = [0u8; 64];
            let n = client.reader().read(&mut got).unwrap();
            assert_eq!(&got[..n], b"hello over tls");
            // And the other way, cut into small reads.
            client.writer().write_all(b"and back again").unwrap();
            let plain = client_to_server(&mut client, &mut server, &mut pool, step);
            assert_eq!(plain, b"and back again");
            // Idle: nothing lent, nothing held.
            assert_eq!(server.held_len(), 0);
            assert!(!server.wants_write());
            out.release(&mut pool);
            assert_eq!(pool.lent, 0, "{versions:?}");
        }
    }

    #[test]
    fn a_second_handshake_resumes_over_tls12_and_tls13() {
        let dir = temp_dir("resume");
        let (ca, cert, key) = issue(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (c, k) = write_pair(&dir, "a", &cert, &key);
        let state = TlsState::load(&c, &k).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        for versions in [
            &[&rustls::version::TLS13][..],
            &[&rustls::version::TLS12][..],
        ] {
            let config = client_config(&ca, versions);
            let mut kinds = Vec::new();
            for _ in 0..2 {
                let mut client = client_from(Arc::clone(&config));
                let mut server = state.session().unwrap();
                let mut pool = BufPool::new(4);
                let mut out = OutQueue::default();
                pump(&mut client, &mut server, &mut out, &mut pool, usize::MAX);
                kinds.push(client.handshake_kind());
            }
            assert_eq!(
                kinds,
                [Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)],
                "{versions:?}"
            );
        }
    }

    #[test]
    fn a_large_message_goes_through_the_bounded_buffers() {
        let (mut server, mut client, mut out, mut pool) =
            established(&rcgen::PKCS_ED25519, "large");
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        out.push_copy(&mut pool, &[&big]);
        let mut received = Vec::new();
        let mut got = vec![0u8; 65536];
        for _ in 0..1000 {
            // A socket that takes 8 KiB per pass: the sealed records stay bounded.
            let mut wire = Vec::new();
            let mut sock = Limited(&mut wire, 8192);
            let done = flush(&mut server, &mut sock, &mut out, &mut pool, &mut [0; 65536]).unwrap();
            assert!(server.sealed.pending() <= BUFFER_LIMIT);
            server_to_client(&mut client, &wire);
            while let Ok(n) = client.reader().read(&mut got) {
                received.extend_from_slice(&got[..n]);
            }
            if done {
                break;
            }
        }
        assert_eq!(received, big);
        // A large message in: records of 16 KiB, read in odd pieces.
        let mut plain = Vec::new();
        for part in big.chunks(50_000) {
            client.writer().write_all(part).unwrap();
            plain.extend(client_to_server(
                &mut client,
                &mut server,
                &mut pool,
                10_000,
            ));
        }
        assert_eq!(plain, big);
        out.release(&mut pool);
        assert_eq!(pool.lent, 0);
    }

    #[test]
    fn small_queued_frames_share_a_record() {
        let (mut server, mut client, mut out, mut pool) =
            established(&rcgen::PKCS_ECDSA_P256_SHA256, "coalesce");
        let shared: std::rc::Rc<[u8]> = vec![b'x'; 100].into();
        for _ in 0..10 {
            out.push_frame(&mut pool, b"", &shared, Some(&shared));
        }
        let mut wire = Vec::new();
        assert!(flush(&mut server, &mut wire, &mut out, &mut pool, &mut [0; 65536]).unwrap());
        // One record: a 5-byte header, 1,000 bytes, the content type and the tag.
        assert_eq!(wire.len(), 5 + 1000 + 1 + 16);
        server_to_client(&mut client, &wire);
        let mut got = vec![0u8; 2000];
        assert_eq!(client.reader().read(&mut got).unwrap(), 1000);
    }

    /// A sink that accepts `left` bytes, then would block.
    struct Limited<'a>(&'a mut Vec<u8>, usize);

    impl Write for Limited<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.1 == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.1);
            self.0.extend_from_slice(&buf[..n]);
            self.1 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Feeds `bytes`, which must fail the session; returns the alert sealed.
    pub(in crate::gateway::tls) fn fails_with_alert(
        server: &mut TlsSession,
        bytes: &[u8],
        pool: &mut BufPool,
    ) -> Vec<u8> {
        let mut bytes = bytes.to_vec();
        let mut input = Input::new(&mut bytes);
        let mut scratch = [0u8; 1024];
        assert!(matches!(
            feed(server, &mut input, &mut scratch, pool),
            TlsRead::Failed(_)
        ));
        let mut alert = Vec::new();
        assert!(write_records(server, &mut alert, pool).unwrap());
        alert
    }

    #[test]
    fn junk_instead_of_a_client_hello_fails_with_an_alert() {
        let (mut server, _) = session_for(&rcgen::PKCS_ECDSA_P256_SHA256, "junk");
        let mut pool = BufPool::new(4);
        let alert = fails_with_alert(&mut server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut pool);
        assert_eq!(alert.first(), Some(&21), "a TLS alert record");
        assert_eq!(pool.lent, 0);
    }

    #[test]
    fn an_oversized_partial_record_is_refused() {
        let (mut server, _) = session_for(&rcgen::PKCS_ECDSA_P256_SHA256, "held");
        let mut pool = BufPool::new(4);
        assert!(server.hold(&vec![0x16; HELD_LIMIT + 1], &mut pool).is_err());
        assert_eq!(server.held_len(), 0);
        server.hold(&[0x16, 3, 3], &mut pool).unwrap();
        assert_eq!(server.held_len(), 3);
        server.release(&mut pool);
        assert_eq!(pool.lent, 0);
    }
}
