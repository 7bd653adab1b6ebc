//! TLS for the WebSocket listener (`server.websocket.tls`).
//!
//! rustls runs as a sans-IO state machine inside each mio connection,
//! through its unbuffered API: the event loop lends it the bytes read and
//! the room to seal records into, from the shared read buffer and the
//! buffer pool, so an idle session holds no buffer. It never blocks and no
//! thread is started. Certificates come from PEM files (PKCS#8, SEC1
//! or PKCS#1 keys; ECDSA, Ed25519 or RSA) or are generated self-signed into
//! the state directory; [`TlsState::reload`] swaps them for new handshakes
//! (SIGHUP) while open sessions keep the configuration they started with.
//!
//! The crypto provider is `ring`: it cross-compiles to ARM with a plain cross
//! gcc, where `aws-lc-rs` also needs cmake (and more) for its C build.

mod config;
mod error;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
mod input;
mod io;
mod record;
mod records_io;
#[cfg(test)]
mod records_tests;
mod seal;
mod session;
mod suites;
mod traffic;

pub use config::{
    check, ensure_self_signed, per_connection_ceiling, read_pair, self_signed_names,
    self_signed_paths, sha256_fingerprint, shared_bytes, TlsState, SELF_SIGNED_CERT,
    SELF_SIGNED_KEY,
};
pub use error::TlsError;
pub use io::{close_notify, feed, flush, write_records, Input, TlsRead};
pub use seal::{BUFFER_LIMIT, SEALED_LIMIT};
pub use session::{keep_freed_heap, TlsSession, HELD_LIMIT};

/// Certificates for the tests of both halves, written to a fresh directory.
#[cfg(test)]
mod testing {
    use std::fs;
    use std::path::{Path, PathBuf};

    pub fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tether-tls-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A leaf for `localhost` signed by a fresh CA; returns (ca pem, cert pem, key pem).
    pub fn issue(alg: &'static rcgen::SignatureAlgorithm) -> (String, String, String) {
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

    pub fn write_pair(dir: &Path, name: &str, cert: &str, key: &str) -> (PathBuf, PathBuf) {
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        fs::write(&c, cert).unwrap();
        fs::write(&k, key).unwrap();
        (c, k)
    }
}
