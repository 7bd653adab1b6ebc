//! What can go wrong with the certificate and key; each message names the
//! file or the mismatch (and never holds key material).

use std::fmt;
use std::io;
use std::path::PathBuf;

#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read.
    Read { path: PathBuf, error: io::Error },
    /// The certificate file is not PEM.
    NotPemCertificate {
        path: PathBuf,
        error: rustls::pki_types::pem::Error,
    },
    /// The certificate file is PEM but holds no certificate.
    NoCertificate { path: PathBuf },
    /// The key file holds no private key in a supported format.
    NoPrivateKey { path: PathBuf },
    /// The key file is not PEM.
    NotPemKey {
        path: PathBuf,
        error: rustls::pki_types::pem::Error,
    },
    /// The key belongs to another certificate.
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// rustls refuses the pair for another reason.
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        error: rustls::Error,
    },
    /// The protocol versions or the provider do not fit together.
    Config(rustls::Error),
    /// The self-signed pair could not be generated.
    Generate(rcgen::Error),
    /// The self-signed pair could not be written.
    Write { path: PathBuf, error: io::Error },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            TlsError::NotPemCertificate { path, error } => {
                write!(f, "{}: not a PEM certificate file: {error}", path.display())
            }
            TlsError::NoCertificate { path } => {
                write!(f, "{}: holds no PEM CERTIFICATE block", path.display())
            }
            TlsError::NoPrivateKey { path } => write!(
                f,
                "{}: holds no PEM private key (PKCS#8, SEC1 \"EC PRIVATE KEY\" or PKCS#1 \"RSA PRIVATE KEY\")",
                path.display()
            ),
            TlsError::NotPemKey { path, error } => {
                write!(f, "{}: not a PEM private key: {error}", path.display())
            }
            TlsError::KeyMismatch { cert, key } => write!(
                f,
                "the key in {} does not match the certificate in {}",
                key.display(),
                cert.display()
            ),
            TlsError::Unusable { cert, key, error } => write!(
                f,
                "cannot use the key in {} with the certificate in {}: {error}",
                key.display(),
                cert.display()
            ),
            TlsError::Config(error) => write!(f, "tls: {error}"),
            TlsError::Generate(error) => {
                write!(f, "cannot generate a self-signed certificate: {error}")
            }
            TlsError::Write { path, error } => write!(
                f,
                "cannot write {}: {error}; set STATE_DIRECTORY to a writable directory \
                 or configure server.websocket.tls.cert and key",
                path.display()
            ),
        }
    }
}

impl std::error::Error for TlsError {}
