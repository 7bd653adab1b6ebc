//! The certificate and key of the WebSocket listener: loading, checking,
//! reloading (SIGHUP) and the self-signed pair in the state directory.

use super::error::TlsError;
use super::seal::SEALED_LIMIT;
use super::session::{TlsSession, HELD_LIMIT};
use super::suites::tls13_order_here;
use super::traffic::CaptureSecrets;
use crate::gateway::pool::{LARGE_BUF_SIZE, MAX_FREE_LARGE};
use crate::settings::TlsSettings;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::UnbufferedServerConnection;
use rustls::{InconsistentKeys, ServerConfig};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The generated self-signed certificate, in the state directory.
pub const SELF_SIGNED_CERT: &str = "tls-cert.pem";
/// The generated self-signed certificate's private key (mode 0600).
pub const SELF_SIGNED_KEY: &str = "tls-key.pem";

/// Plaintext of one record, decrypted by rustls and waiting to be copied
/// out (the read pass copies it before it reads more).
const RECEIVED_PLAINTEXT: usize = 16 * 1024;

/// Worst-case bytes that TLS adds to one connection: the session state
/// (its fixed part; rustls keeps about 2.3 KiB more on the heap: keys,
/// traffic secrets, its queues), the received bytes held between reads (a
/// handshake message and a partial record), one decrypted record, and the
/// sealed records waiting for the socket.
pub fn per_connection_ceiling() -> usize {
    std::mem::size_of::<TlsSession>() + HELD_LIMIT + RECEIVED_PLAINTEXT + SEALED_LIMIT
}

/// Bytes TLS adds once, whatever the number of connections: the read
/// buffer's room for held bytes, the large pooled buffers kept free, and
/// the freed heap glibc keeps (`keep_freed_heap`).
pub fn shared_bytes() -> usize {
    HELD_LIMIT + MAX_FREE_LARGE * LARGE_BUF_SIZE + (1 << 20)
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
    ) -> Result<Option<TlsState>, TlsError> {
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
    pub fn load(cert: &Path, key: &Path) -> Result<TlsState, TlsError> {
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
    pub fn reload(&mut self) -> Result<(), TlsError> {
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

    /// A server session for one new connection (it holds no buffer yet).
    pub fn session(&self) -> Result<TlsSession, rustls::Error> {
        UnbufferedServerConnection::new(Arc::clone(&self.config)).map(TlsSession::new)
    }
}

fn load_config(cert: &Path, key: &Path) -> Result<(Arc<ServerConfig>, String), TlsError> {
    let (chain, key_der) = read_pair(cert, key)?;
    let fingerprint = sha256_fingerprint(&chain[0]);
    let builder = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth();
    let mut config = builder
        .with_single_cert(chain, key_der)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert: cert.to_path_buf(),
                    key: key.to_path_buf(),
                }
            }
            error => TlsError::Unusable {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                error,
            },
        })?;
    // WebSocket runs over HTTP/1.1 (RFC 6455); clients that offer ALPN get it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Past the handshake, TLS 1.3 sessions move to our record layer
    // (`record`), which takes the traffic keys out of rustls.
    config.enable_secret_extraction = true;
    // ... and the traffic secrets, for their key updates (kept in memory only).
    config.key_log = Arc::new(CaptureSecrets);
    // The server's order (`provider`), so that browsers, which list
    // AES-128 first, get a suite whose sessions move to the record layer,
    // and boards without AES instructions get ChaCha20.
    config.ignore_client_order = true;
    Ok((Arc::new(config), fingerprint))
}

/// ring, with the TLS 1.3 suites in the order the server picks them
/// (`suites`): those with 32-byte keys first, which the record layer takes
/// over from rustls (AES-128 sessions stay with rustls for life).
fn provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    let tls13_first = tls13_order_here();
    provider.cipher_suites.retain(|s| !tls13_first.contains(s));
    provider.cipher_suites.splice(0..0, tls13_first);
    provider
}

/// Reads a PEM certificate chain and a PEM private key (PKCS#8, SEC1 or
/// PKCS#1). Errors name the file.
pub fn read_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let cert_pem = read_file(cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::NotPemCertificate {
            path: cert.to_path_buf(),
            error,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key_pem = read_file(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: key.to_path_buf(),
        },
        error => TlsError::NotPemKey {
            path: key.to_path_buf(),
            error,
        },
    })?;
    Ok((chain, key_der))
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// `AB:CD:...`: the SHA-256 of a DER certificate, as `openssl x509 -fingerprint -sha256` shows it.
pub fn sha256_fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// What `check-config` says about the TLS block: problems, each naming a file.
/// Nothing is generated: a self-signed pair that does not exist yet is fine.
pub fn check(tls: &TlsSettings, state_dir: &Path) -> Result<Option<String>, TlsError> {
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
) -> Result<(PathBuf, PathBuf, bool), TlsError> {
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
        .map_err(TlsError::Generate)?;
    let (cert_pem, key_pem) = generated;
    let fail = |path: &Path, error: io::Error| TlsError::Write {
        path: path.to_path_buf(),
        error,
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

#[cfg(test)]
mod tests {
    use super::super::testing::{issue, temp_dir, write_pair};
    use super::*;

    #[test]
    fn errors_name_the_file_and_the_mismatch() {
        let dir = temp_dir("errors");
        let (_, cert_a, key_a) = issue(&rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, cert_b, _) = issue(&rcgen::PKCS_ECDSA_P256_SHA256);
        let missing = dir.join("missing.pem");
        let (c, k) = write_pair(&dir, "a", &cert_a, &key_a);
        let e = TlsState::load(&missing, &k).err().unwrap().to_string();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        let e = TlsState::load(&c, &missing).err().unwrap().to_string();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        let (c2, _) = write_pair(&dir, "b", &cert_b, "");
        let e = TlsState::load(&c2, &k).err().unwrap().to_string();
        assert!(e.contains("does not match"), "{e}");
        let (junk_c, junk_k) = write_pair(&dir, "junk", "not pem", "not pem either");
        let e = TlsState::load(&junk_c, &k).err().unwrap().to_string();
        assert!(e.contains("junk.crt"), "{e}");
        let e = TlsState::load(&c, &junk_k).err().unwrap().to_string();
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
        let e = state.reload().err().unwrap().to_string();
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
