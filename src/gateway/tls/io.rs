//! Moving bytes through one TLS session: records in from the socket,
//! plaintext out to the handlers, queued plaintext back as records. The one
//! place a later caller-owned-buffers (unbuffered rustls) change touches.

use crate::gateway::nonblocking::retry;
use crate::gateway::outqueue::OutQueue;
use crate::gateway::pool::BufPool;
use rustls::ServerConnection;
use std::io::{self, Read, Write};

/// What one step of feeding a TLS connection gave.
#[derive(Debug, PartialEq, Eq)]
pub enum TlsRead {
    /// This many plaintext bytes are at the front of the scratch buffer.
    Plain(usize),
    /// The input is used up and no plaintext is held: read the socket again.
    WouldBlock,
    /// The peer closed (close_notify or EOF).
    Closed,
    /// A TLS protocol error (junk, a bad handshake): any alert rustls queued
    /// should be flushed before the socket is dropped.
    Failed(String),
}

/// Returns decrypted plaintext the session holds, else feeds it `input`
/// (bytes read from the socket, consumed from the front) until plaintext
/// comes out or the input is used up. One socket read of up to 64 KiB thus
/// serves many records: rustls itself reads at most 4 KiB at a time.
pub fn feed(session: &mut ServerConnection, input: &mut &[u8], scratch: &mut [u8]) -> TlsRead {
    loop {
        if let Some(done) = take_plain(session, scratch) {
            return done;
        }
        if input.is_empty() {
            return TlsRead::WouldBlock;
        }
        match session.read_tls(input) {
            // After the peer's close_notify rustls takes nothing more.
            Ok(0) => return TlsRead::Closed,
            Ok(_) => {
                if let Err(e) = session.process_new_packets() {
                    return TlsRead::Failed(e.to_string());
                }
            }
            // "message buffer full": a handshake message over 64 KiB.
            Err(e) => return TlsRead::Failed(e.to_string()),
        }
    }
}

fn take_plain(session: &mut ServerConnection, scratch: &mut [u8]) -> Option<TlsRead> {
    match session.reader().read(scratch) {
        Ok(0) => Some(TlsRead::Closed),
        Ok(n) => Some(TlsRead::Plain(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(_) => Some(TlsRead::Closed),
    }
}

/// The plaintext side of a session as a `Write`; a full buffer is `WouldBlock`.
struct Plaintext<'a>(&'a mut ServerConnection);

impl Write for Plaintext<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.writer().write(buf)? {
            0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        match self.0.writer().write_vectored(bufs)? {
            0 if len > 0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Moves queued plaintext into the session and its records onto the socket,
/// until both are empty or the socket would block. True when everything,
/// the handshake included, has been written.
pub fn flush(
    session: &mut ServerConnection,
    sock: &mut impl Write,
    out: &mut OutQueue,
    pool: &mut BufPool,
) -> io::Result<bool> {
    loop {
        if !write_records(session, sock)? {
            return Ok(false);
        }
        if out.is_empty() {
            return Ok(!session.is_handshaking());
        }
        let before = out.queued();
        out.write_to(&mut Plaintext(session), pool)?;
        if out.queued() == before && !session.wants_write() {
            // Held until the handshake ends, or the session's buffer is full.
            return Ok(false);
        }
    }
}

/// Writes pending records; false if the socket would block first.
pub fn write_records(session: &mut ServerConnection, sock: &mut impl Write) -> io::Result<bool> {
    while session.wants_write() {
        match retry(|| session.write_tls(sock))? {
            Some(0) => return Err(io::ErrorKind::WriteZero.into()),
            Some(_) => {}
            None => return Ok(false),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{issue, temp_dir, write_pair};
    use super::super::TlsState;
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore};
    use std::fs;
    use std::sync::Arc;

    fn client(ca_pem: &str) -> ClientConnection {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap()
    }

    /// Pumps records between a client and a server session through memory.
    fn pump(client: &mut ClientConnection, server: &mut ServerConnection, out: &mut OutQueue) {
        let mut pool = BufPool::new(4);
        let mut scratch = vec![0u8; 4096];
        for _ in 0..20 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            let mut src = &wire[..];
            loop {
                match feed(server, &mut src, &mut scratch) {
                    TlsRead::Plain(_) => {}
                    TlsRead::WouldBlock => break,
                    other => panic!("server read: {other:?}"),
                }
            }
            let mut back = Vec::new();
            flush(server, &mut back, out, &mut pool).unwrap();
            let mut src = &back[..];
            while !src.is_empty() {
                client.read_tls(&mut src).unwrap();
                client.process_new_packets().unwrap();
            }
        }
    }
    #[test]
    fn handshake_and_plaintext_through_the_state_machine() {
        let dir = temp_dir("pump");
        let (ca, cert, key) = issue(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (c, k) = write_pair(&dir, "a", &cert, &key);
        let state = TlsState::load(&c, &k).unwrap();
        let mut server = state.session().unwrap();
        let mut client = client(&ca);
        let mut out = OutQueue::default();
        let mut pool = BufPool::new(4);
        // Queued before the handshake ends: held, then sent once it has.
        out.push_copy(&mut pool, &[b"hello over tls"]);
        pump(&mut client, &mut server, &mut out);
        assert!(!server.is_handshaking());
        assert!(out.is_empty());
        let mut got = [0u8; 64];
        let n = client.reader().read(&mut got).unwrap();
        assert_eq!(&got[..n], b"hello over tls");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_large_message_goes_through_the_bounded_buffers() {
        let dir = temp_dir("large");
        let (ca, cert, key) = issue(&rcgen::PKCS_ED25519);
        let (c, k) = write_pair(&dir, "a", &cert, &key);
        let state = TlsState::load(&c, &k).unwrap();
        let mut server = state.session().unwrap();
        let mut client = client(&ca);
        let mut out = OutQueue::default();
        pump(&mut client, &mut server, &mut out);
        let mut pool = BufPool::new(4);
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        out.push_copy(&mut pool, &[&big]);
        let mut received = Vec::new();
        let mut got = vec![0u8; 65536];
        for _ in 0..1000 {
            // A socket that takes 8 KiB per pass: rustls never holds more than its limit.
            let mut wire = Vec::new();
            let mut sock = Limited(&mut wire, 8192);
            let done = flush(&mut server, &mut sock, &mut out, &mut pool).unwrap();
            let mut src = &wire[..];
            while !src.is_empty() {
                client.read_tls(&mut src).unwrap();
                client.process_new_packets().unwrap();
            }
            while let Ok(n) = client.reader().read(&mut got) {
                received.extend_from_slice(&got[..n]);
            }
            if done {
                break;
            }
        }
        assert_eq!(received, big);
        fs::remove_dir_all(&dir).unwrap();
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

    #[test]
    fn junk_instead_of_a_client_hello_fails_with_an_alert() {
        let dir = temp_dir("junk");
        let (_, cert, key) = issue(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (c, k) = write_pair(&dir, "a", &cert, &key);
        let state = TlsState::load(&c, &k).unwrap();
        let mut server = state.session().unwrap();
        let mut src: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut scratch = [0u8; 1024];
        assert!(matches!(
            feed(&mut server, &mut src, &mut scratch),
            TlsRead::Failed(_)
        ));
        let mut alert = Vec::new();
        assert!(write_records(&mut server, &mut alert).unwrap());
        assert_eq!(alert.first(), Some(&21), "a TLS alert record");
        fs::remove_dir_all(&dir).unwrap();
    }
}
