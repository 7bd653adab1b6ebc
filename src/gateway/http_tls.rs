//! `https://` for outgoing requests (SPEC §11): a rustls client on the ring
//! provider (as the server side), verifying against an explicit `ca` file or
//! the system's CA bundle, and its record I/O on a non-blocking socket.

use super::nonblocking::retry;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

/// Where Linux distributions keep the system CA bundle (`SSL_CERT_FILE` first).
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// A client configuration and the name the certificate must carry.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsTarget {
    /// Verifies `host` against `ca` (a PEM file), else the system's CAs.
    pub fn new(host: &str, ca: Option<&Path>) -> Result<TlsTarget, String> {
        let bundle = match ca {
            Some(path) => path.to_path_buf(),
            None => std::env::var_os("SSL_CERT_FILE")
                .map(Into::into)
                .or_else(|| {
                    SYSTEM_BUNDLES
                        .iter()
                        .map(Path::new)
                        .find(|p| p.exists())
                        .map(Path::to_path_buf)
                })
                .ok_or("no system CA bundle found; set `ca`")?,
        };
        let pem = std::fs::read(&bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(format!("{}: no certificate in it", bundle.display()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
        Ok(TlsTarget {
            config: Arc::new(config),
            name,
        })
    }

    pub fn connect(&self) -> Result<ClientConnection, String> {
        ClientConnection::new(self.config.clone(), self.name.clone()).map_err(|e| e.to_string())
    }
}

/// Encrypts `plain` and writes what the socket takes; true when all is out.
pub fn write(
    tls: &mut ClientConnection,
    sock: &mut impl Write,
    plain: &mut Vec<u8>,
) -> io::Result<bool> {
    if !plain.is_empty() {
        tls.writer().write_all(plain)?;
        plain.clear();
    }
    while tls.wants_write() {
        if retry(|| tls.write_tls(sock))?.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reads records until the socket would block; plaintext goes to `each`
/// (through `chunk`). True at the peer's end of stream.
pub fn read(
    tls: &mut ClientConnection,
    sock: &mut (impl Read + Write),
    chunk: &mut [u8],
    mut each: impl FnMut(&[u8]),
) -> io::Result<bool> {
    let mut eof = false;
    loop {
        let got = retry(|| tls.read_tls(sock))?;
        if got == Some(0) {
            eof = true;
        }
        let state = tls.process_new_packets().map_err(io::Error::other)?;
        let mut left = state.plaintext_bytes_to_read();
        while left > 0 {
            let n = tls.reader().read(chunk)?;
            if n == 0 {
                break;
            }
            each(&chunk[..n]);
            left = left.saturating_sub(n);
        }
        if state.peer_has_closed() {
            eof = true;
        }
        // Handshake messages and alerts to send back.
        write(tls, sock, &mut Vec::new())?;
        if eof || got.is_none() {
            return Ok(eof);
        }
    }
}
