//! TLS for the WebSocket listener (`server.websocket.tls`).
//!
//! rustls runs as a sans-IO state machine inside each mio connection: the
//! event loop hands it the socket to `read_tls`/`write_tls`, it never blocks
//! and no thread is started. Certificates come from PEM files (PKCS#8, SEC1
//! or PKCS#1 keys; ECDSA, Ed25519 or RSA) or are generated self-signed into
//! the state directory; [`TlsState::reload`] swaps them for new handshakes
//! (SIGHUP) while open sessions keep the configuration they started with.
//!
//! The crypto provider is `ring`: it cross-compiles to ARM with a plain cross
//! gcc, where `aws-lc-rs` also needs cmake (and more) for its C build.

use super::outqueue::OutQueue;
use super::pool::BufPool;
use crate::settings::TlsSettings;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{InconsistentKeys, ServerConfig, ServerConnection};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The generated self-signed certificate, in the state directory.
pub const SELF_SIGNED_CERT: &str = "tls-cert.pem";
/// The generated self-signed certificate's private key (mode 0600).
pub const SELF_SIGNED_KEY: &str = "tls-key.pem";

/// Bound of each of rustls's two outgoing buffers (plaintext waiting for the
/// handshake to finish, and encrypted records waiting for the socket).
pub const BUFFER_LIMIT: usize = 32 * 1024;
/// rustls's own bounds, for the memory ceiling: a handshake message may take
/// 64 KiB to reassemble, and at most 16 KiB of decrypted plaintext waits to
/// be read (`read_tls` refuses more).
const HANDSHAKE_BUFFER: usize = 0xffff;
const RECEIVED_PLAINTEXT: usize = 16 * 1024;
/// Per-record overhead of a sealed record (header, tag, padding).
const RECORD_OVERHEAD: usize = 5 + 256;

/// Worst-case bytes that TLS adds to one connection: the session state,
/// the handshake reassembly buffer, unread plaintext and both send buffers.
pub fn per_connection_ceiling() -> usize {
    std::mem::size_of::<ServerConnection>()
        + HANDSHAKE_BUFFER
        + RECEIVED_PLAINTEXT
        + 2 * (BUFFER_LIMIT + RECORD_OVERHEAD)
}

/// The certificate and key in use, and where they came from.
pub struct TlsState {
    config: Arc<ServerConfig>,
    cert: PathBuf,
    key: PathBuf,
    fingerprint: String,
}

impl TlsState {
    /// The TLS state the settings ask for (`None`: plain ws). A self-signed
    /// pair is generated into `state_dir` on first use for `names` (subject
    /// alternative names) and reused afterwards.
    pub fn from_settings(
        tls: &TlsSettings,
        state_dir: &Path,
        names: &[String],
    ) -> Result<Option<TlsState>, String> {
        let (cert, key) = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ if tls.self_signed => {
                let (cert, key, generated) = ensure_self_signed(state_dir, names)?;
                if generated {
                    log::info!(
                        "tls: generated a self-signed certificate {} for {}",
                        cert.display(),
                        names.join(", ")
                    );
                }
                (cert, key)
            }
            _ => return Ok(None),
        };
        TlsState::load(&cert, &key).map(Some)
    }

    /// Reads and checks the pair; the error names the file or the mismatch.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsState, String> {
        let (config, fingerprint) = load_config(cert, key)?;
        Ok(TlsState {
            config,
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            fingerprint,
        })
    }

    /// Reads the same files again. New handshakes use the new pair; open
    /// sessions keep theirs. A pair that does not load leaves the old one in
    /// place and the error says why.
    pub fn reload(&mut self) -> Result<(), String> {
        let (config, fingerprint) = load_config(&self.cert, &self.key)?;
        self.config = config;
        self.fingerprint = fingerprint;
        Ok(())
    }

    /// Takes over another state's pair (e.g. after the settings changed).
    pub fn replace(&mut self, other: TlsState) {
        *self = other;
    }

    /// SHA-256 of the leaf certificate, as `AB:CD:...` (what clients pin).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// A server session for one new connection, its buffers bounded.
    pub fn session(&self) -> Result<ServerConnection, rustls::Error> {
        let mut session = ServerConnection::new(Arc::clone(&self.config))?;
        session.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(session)
    }
}

fn load_config(cert: &Path, key: &Path) -> Result<(Arc<ServerConfig>, String), String> {
    let (chain, key_der) = read_pair(cert, key)?;
    let fingerprint = sha256_fingerprint(&chain[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth();
    let mut config = builder
        .with_single_cert(chain, key_der)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => format!(
                "the key in {} does not match the certificate in {}",
                key.display(),
                cert.display()
            ),
            other => format!(
                "cannot use the key in {} with the certificate in {}: {other}",
                key.display(),
                cert.display()
            ),
        })?;
    // WebSocket runs over HTTP/1.1 (RFC 6455); clients that offer ALPN get it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), fingerprint))
}

/// Reads a PEM certificate chain and a PEM private key (PKCS#8, SEC1 or
/// PKCS#1). Errors name the file.
pub fn read_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let cert_pem = read_file(cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: holds no PEM CERTIFICATE block",
            cert.display()
        ));
    }
    let key_pem = read_file(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{}: holds no PEM private key (PKCS#8, SEC1 \"EC PRIVATE KEY\" or PKCS#1 \"RSA PRIVATE KEY\")",
            key.display()
        ),
        other => format!("{}: not a PEM private key: {other}", key.display()),
    })?;
    Ok((chain, key_der))
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// `AB:CD:...`: the SHA-256 of a DER certificate, as `openssl x509 -fingerprint -sha256` shows it.
pub fn sha256_fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// What `check-config` says about the TLS block: problems, each naming a file.
/// Nothing is generated: a self-signed pair that does not exist yet is fine.
pub fn check(tls: &TlsSettings, state_dir: &Path) -> Result<Option<String>, String> {
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => TlsState::load(cert, key).map(|state| {
            Some(format!(
                "certificate sha256 fingerprint {}",
                state.fingerprint
            ))
        }),
        _ if tls.self_signed => {
            let (cert, key) = self_signed_paths(state_dir);
            if cert.exists() {
                TlsState::load(&cert, &key).map(|state| {
                    Some(format!(
                        "self-signed certificate {} sha256 fingerprint {}",
                        cert.display(),
                        state.fingerprint
                    ))
                })
            } else {
                Ok(Some(format!(
                    "a self-signed certificate will be generated into {}",
                    cert.display()
                )))
            }
        }
        _ => Ok(None),
    }
}

pub fn self_signed_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    (
        state_dir.join(SELF_SIGNED_CERT),
        state_dir.join(SELF_SIGNED_KEY),
    )
}

/// The names a self-signed certificate is made for: `localhost`, this
/// machine's host name, the listen address (unless it is a wildcard) and
/// the loopback addresses.
pub fn self_signed_names(listen_host: &str) -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    if let Some(host) = host_name() {
        names.push(host);
    }
    let bare = listen_host.trim_start_matches('[').trim_end_matches(']');
    let wildcard = bare
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    if !bare.is_empty() && !wildcard {
        names.push(bare.to_string());
    }
    names.push("127.0.0.1".to_string());
    names.push("::1".to_string());
    let mut seen = Vec::new();
    names.retain(|n| {
        let fresh = !seen.contains(&n.to_ascii_lowercase());
        seen.push(n.to_ascii_lowercase());
        fresh && n.is_ascii()
    });
    names
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim().to_string();
    (!name.is_empty()).then_some(name)
}

/// Reuses `STATE/tls-cert.pem` + `tls-key.pem`, or generates them when the
/// certificate does not exist. Returns the paths and whether it generated.
pub fn ensure_self_signed(
    state_dir: &Path,
    names: &[String],
) -> Result<(PathBuf, PathBuf, bool), String> {
    let (cert, key) = self_signed_paths(state_dir);
    if cert.exists() {
        return Ok((cert, key, false));
    }
    let generated = rcgen::CertificateParams::new(names.to_vec())
        .and_then(|mut params| {
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "tether self-signed");
            let key_pair = rcgen::KeyPair::generate()?;
            let cert = params.self_signed(&key_pair)?;
            Ok((cert.pem(), key_pair.serialize_pem()))
        })
        .map_err(|e| format!("cannot generate a self-signed certificate: {e}"))?;
    let (cert_pem, key_pem) = generated;
    let fail = |path: &Path, e: io::Error| {
        format!(
            "cannot write {}: {e}; set STATE_DIRECTORY to a writable directory \
             or configure server.websocket.tls.cert and key",
            path.display()
        )
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|e| fail(state_dir, e))?;
    // Key first, certificate last: a certificate on disk means a whole pair.
    write_new(&key, key_pem.as_bytes(), 0o600).map_err(|e| fail(&key, e))?;
    write_new(&cert, cert_pem.as_bytes(), 0o644).map_err(|e| fail(&cert, e))?;
    Ok((cert, key, true))
}

/// Writes `path` through a temporary file and a rename, so that a reader
/// never sees half a file.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

// ---------------------------------------------------------------------------
// Moving bytes through one session
// ---------------------------------------------------------------------------

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
        match session.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore};

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tether-tls-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A leaf for `localhost` signed by a fresh CA; returns (ca pem, cert pem, key pem).
    fn issue(alg: &'static rcgen::SignatureAlgorithm) -> (String, String, String) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (ca.pem(), cert.pem(), key.serialize_pem())
    }

    fn write_pair(dir: &Path, name: &str, cert: &str, key: &str) -> (PathBuf, PathBuf) {
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        fs::write(&c, cert).unwrap();
        fs::write(&k, key).unwrap();
        (c, k)
    }

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

    #[test]
    fn errors_name_the_file_and_the_mismatch() {
        let dir = temp_dir("errors");
        let (_, cert_a, key_a) = issue(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, cert_b, _) = issue(&rcgen::PKCS_ECDSA_P256_SHA256);
        let missing = dir.join("missing.pem");
        let (c, k) = write_pair(&dir, "a", &cert_a, &key_a);
        let e = TlsState::load(&missing, &k).err().unwrap();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        let e = TlsState::load(&c, &missing).err().unwrap();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        let (c2, _) = write_pair(&dir, "b", &cert_b, "");
        let e = TlsState::load(&c2, &k).err().unwrap();
        assert!(e.contains("does not match"), "{e}");
        let (junk_c, junk_k) = write_pair(&dir, "junk", "not pem", "not pem either");
        let e = TlsState::load(&junk_c, &k).err().unwrap();
        assert!(e.contains("junk.crt"), "{e}");
        let e = TlsState::load(&c, &junk_k).err().unwrap();
        assert!(e.contains("junk.key"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reload_swaps_a_good_pair_and_keeps_the_old_on_a_bad_one() {
        let dir = temp_dir("reload");
        let (_, cert_a, key_a) = issue(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, cert_b, key_b) = issue(&rcgen::PKCS_ED25519);
        let (c, k) = write_pair(&dir, "live", &cert_a, &key_a);
        let mut state = TlsState::load(&c, &k).unwrap();
        let first = state.fingerprint().to_string();
        write_pair(&dir, "live", &cert_b, &key_b);
        state.reload().unwrap();
        let second = state.fingerprint().to_string();
        assert_ne!(first, second);
        // A certificate with the other pair's key: refused, the old one stays.
        write_pair(&dir, "live", &cert_a, &key_b);
        let e = state.reload().err().unwrap();
        assert!(e.contains("does not match"), "{e}");
        assert_eq!(state.fingerprint(), second);
        fs::remove_file(&k).unwrap();
        assert!(state.reload().is_err());
        assert_eq!(state.fingerprint(), second);
        assert!(state.session().is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn self_signed_is_generated_once_then_reused() {
        let dir = temp_dir("selfsigned").join("state");
        let names = self_signed_names("127.0.0.1");
        let (c, k, generated) = ensure_self_signed(&dir, &names).unwrap();
        assert!(generated);
        let first = TlsState::load(&c, &k).unwrap().fingerprint().to_string();
        let (c2, k2, generated) = ensure_self_signed(&dir, &names).unwrap();
        assert!(!generated);
        assert_eq!(TlsState::load(&c2, &k2).unwrap().fingerprint(), first);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&k).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn self_signed_names_cover_the_loopbacks_and_skip_wildcards() {
        let names = self_signed_names("0.0.0.0");
        assert!(names.contains(&"localhost".to_string()));
        assert!(names.contains(&"127.0.0.1".to_string()));
        assert!(!names.contains(&"0.0.0.0".to_string()));
        let names = self_signed_names("192.0.2.7");
        assert!(names.contains(&"192.0.2.7".to_string()));
        assert_eq!(
            names.iter().filter(|n| n.as_str() == "localhost").count(),
            1
        );
    }

    #[test]
    fn fingerprint_format() {
        let fp = sha256_fingerprint(b"abc");
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.starts_with("BA:78:16:BF"), "{fp}");
    }
}
