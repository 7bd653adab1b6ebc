//! TLS (wss) end to end, over real sockets: a test CA made here with rcgen,
//! a rustls client under a blocking tungstenite client, every key format, TLS
//! 1.2 and 1.3, self-signed generation and pinning, SIGHUP reload, bad files,
//! and junk where a ClientHello should be.

mod common;

use common::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ProtocolVersion, RootCertStore,
    SignatureScheme, StreamOwned, SupportedProtocolVersion,
};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::{HeaderName, HeaderValue};
use tungstenite::{Message, WebSocket};

type Wss = WebSocket<StreamOwned<ClientConnection, TcpStream>>;

// ---------------------------------------------------------------------------
// A test CA and keys in every format
// ---------------------------------------------------------------------------

struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        Ca {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `localhost` and 127.0.0.1 with `key`'s public key, in PEM,
    /// followed by the CA certificate (a chain).
    fn issue(&self, key: &rcgen::KeyPair) -> String {
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        let leaf = params.signed_by(key, &self.issuer).unwrap();
        format!("{}{}", leaf.pem(), self.pem())
    }
}

#[derive(Debug, Clone, Copy)]
enum KeyFormat {
    EcdsaPkcs8,
    EcdsaSec1,
    RsaPkcs1,
    Ed25519Pkcs8,
}

impl KeyFormat {
    fn pem_label(self) -> &'static str {
        match self {
            KeyFormat::EcdsaPkcs8 | KeyFormat::Ed25519Pkcs8 => "-----BEGIN PRIVATE KEY-----",
            KeyFormat::EcdsaSec1 => "-----BEGIN EC PRIVATE KEY-----",
            KeyFormat::RsaPkcs1 => "-----BEGIN RSA PRIVATE KEY-----",
        }
    }
}

/// Fixed SEC1 and PKCS#1 keys (ring writes only PKCS#8), each beside the same
/// key in PKCS#8 for rcgen; made once with openssl (tests/fixtures/README.md).
const EC_P384_SEC1: &str = include_str!("fixtures/ec-p384-sec1.pem");
const EC_P384_PKCS8: &str = include_str!("fixtures/ec-p384-pkcs8.pem");
const RSA_2048_PKCS1: &str = include_str!("fixtures/rsa-2048-pkcs1.pem");
const RSA_2048_PKCS8: &str = include_str!("fixtures/rsa-2048-pkcs8.pem");

/// A key in `format`: the PEM the server reads, and the same key for rcgen.
fn make_key(format: KeyFormat) -> (String, rcgen::KeyPair) {
    let (file_pem, key) = match format {
        KeyFormat::EcdsaPkcs8 => {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            (key.serialize_pem(), key)
        }
        KeyFormat::Ed25519Pkcs8 => {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
            (key.serialize_pem(), key)
        }
        KeyFormat::EcdsaSec1 => {
            let key = rcgen::KeyPair::from_pem_and_sign_algo(
                EC_P384_PKCS8,
                &rcgen::PKCS_ECDSA_P384_SHA384,
            )
            .unwrap();
            (EC_P384_SEC1.to_string(), key)
        }
        KeyFormat::RsaPkcs1 => {
            let key =
                rcgen::KeyPair::from_pem_and_sign_algo(RSA_2048_PKCS8, &rcgen::PKCS_RSA_SHA256)
                    .unwrap();
            (RSA_2048_PKCS1.to_string(), key)
        }
    };
    assert!(
        file_pem.starts_with(format.pem_label()),
        "{format:?}: {file_pem}"
    );
    (file_pem, key)
}

/// Writes a certificate chain and key as `name.crt` / `name.key` in `dir`.
fn write_pair(dir: &Path, name: &str, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    (cert_path, key_path)
}

fn tls_settings(cert: &Path, key: &Path) -> Value {
    json!({"server": {"websocket": {"tls": {"cert": cert, "key": key}}}})
}

/// The SHA-256 of the first certificate of a PEM chain, as `AB:CD:...`.
fn fingerprint_of_der(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

fn fingerprint_of_pem(pem: &str) -> String {
    let first = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    fingerprint_of_der(&first)
}

// ---------------------------------------------------------------------------
// A rustls client under tungstenite
// ---------------------------------------------------------------------------

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

fn trusting(ca_pem: &str, versions: &[&'static SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Accepts exactly the certificate with this SHA-256 (what a pinning client does).
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint_of_der(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "certificate does not match the pin".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn pinning(fingerprint: &str) -> Arc<ClientConfig> {
    let verifier = Pinned {
        fingerprint: fingerprint.to_string(),
        provider: provider(),
    };
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(BOTH)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
    )
}

/// `wss://NAME:PORT/` with extra headers; errors as text.
fn wss(
    port: u16,
    config: &Arc<ClientConfig>,
    name: &str,
    headers: &[(&str, &str)],
) -> Result<Wss, String> {
    let session = ClientConnection::new(
        Arc::clone(config),
        ServerName::try_from(name.to_string()).unwrap(),
    )
    .unwrap();
    let stream = StreamOwned::new(session, tcp(port));
    let mut request = format!("wss://{name}:{port}/")
        .into_client_request()
        .unwrap();
    for (header, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(header.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    match tungstenite::client::client(request, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(HandshakeError::Failure(e)) => Err(e.to_string()),
        Err(HandshakeError::Interrupted(_)) => Err("handshake interrupted".into()),
    }
}

fn wss_recv_json(ws: &mut Wss) -> Value {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => return serde_json::from_str(text.as_str()).unwrap(),
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

fn wss_request(ws: &mut Wss, value: &Value) -> Value {
    ws.send(Message::text(value.to_string())).expect("send");
    wss_recv_json(ws)
}

fn wss_pong(ws: &mut Wss) {
    let pong = wss_request(ws, &json!({"event": "ping"}));
    assert_eq!(pong["event"], "pong", "{pong}");
}

/// Connects with a token in the handshake and reads `connected` + `authenticated`.
fn wss_authed(port: u16, config: &Arc<ClientConfig>, sub: &str) -> Wss {
    let bearer = format!("Bearer {}", mint_valid(sub, &[], &[], 3600));
    let mut ws = wss(port, config, "localhost", &[("Authorization", &bearer)]).expect("wss");
    let connected = wss_recv_json(&mut ws);
    assert_eq!(connected["event"], "connected", "{connected}");
    assert_eq!(connected["data"]["authenticated"], true, "{connected}");
    let authenticated = wss_recv_json(&mut ws);
    assert_eq!(authenticated["event"], "authenticated", "{authenticated}");
    assert_eq!(authenticated["data"]["sub"], sub, "{authenticated}");
    ws
}

fn negotiated(ws: &Wss) -> Option<ProtocolVersion> {
    ws.get_ref().conn.protocol_version()
}

fn peer_fingerprint(ws: &Wss) -> String {
    let certs = ws.get_ref().conn.peer_certificates().expect("peer certs");
    fingerprint_of_der(&certs[0])
}

/// The fingerprint in the server's `sha256 fingerprint XX:..` log line(s), last one.
fn logged_fingerprint(server: &Server) -> String {
    let marker = "sha256 fingerprint ";
    server
        .logs()
        .iter()
        .filter_map(|l| l.find(marker).map(|at| l[at + marker.len()..].to_string()))
        .next_back()
        .map(|rest| rest.chars().take(95).collect())
        .expect("a fingerprint in the log")
}

fn sighup(server: &Server) {
    server.signal(libc::SIGHUP);
}

/// Reads until EOF or reset; returns what came and how long it took (`None`: still open at `timeout`).
fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < timeout {
        match stream.read(&mut buf) {
            Ok(0) => return (got, Some(start.elapsed())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut
                    || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return (got, Some(start.elapsed())),
        }
    }
    (got, None)
}

/// The first bytes a real client sends: a ClientHello record.
fn client_hello() -> Vec<u8> {
    let ca = Ca::new("unused");
    let mut session = ClientConnection::new(
        trusting(&ca.pem(), BOTH),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    while session.wants_write() {
        session.write_tls(&mut hello).unwrap();
    }
    hello
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn wss_connect_and_authenticate() {
    let tmp = TempDir::new("tls-auth");
    let ca = Ca::new("tether test CA");
    let (key_pem, key) = make_key(KeyFormat::EcdsaPkcs8);
    let chain = ca.issue(&key);
    let (cert, key_path) = write_pair(tmp.path(), "server", &chain, &key_pem);
    let mut settings = tls_settings(&cert, &key_path);
    merge(
        &mut settings,
        json!({"limits": {"max_message_bytes": 1 << 20, "max_outbound_bytes": 4 << 20}}),
    );
    let server = Server::start(settings);
    assert!(server.wait_log("listening on wss://127.0.0.1:", Duration::ZERO));
    assert!(server.wait_log("tls memory ceiling", Duration::ZERO));
    assert_eq!(logged_fingerprint(&server), fingerprint_of_pem(&chain));

    let config = trusting(&ca.pem(), BOTH);
    // A token in the handshake.
    let mut ws = wss_authed(server.port(), &config, "alice");
    assert_eq!(negotiated(&ws), Some(ProtocolVersion::TLSv1_3));
    wss_pong(&mut ws);

    // The `auth` message, by IP address this time (the certificate names 127.0.0.1).
    let mut ws2 = wss(server.port(), &config, "127.0.0.1", &[]).expect("wss by IP");
    assert_eq!(wss_recv_json(&mut ws2)["data"]["authenticated"], false);
    let token = mint_valid("bob", &[], &[], 3600);
    let authenticated = wss_request(
        &mut ws2,
        &json!({"event": "auth", "data": {"token": token}}),
    );
    assert_eq!(authenticated["event"], "authenticated", "{authenticated}");
    assert_eq!(authenticated["data"]["sub"], "bob");

    // A message much larger than a TLS record and rustls's buffers.
    let big = "x".repeat(200_000);
    let reply = wss_request(&mut ws2, &json!({"event": "ping", "data": big}));
    assert_eq!(reply["event"], "pong", "{reply}");

    // A refusal after the request head (bad token) is an HTTP answer over TLS.
    let Err(err) = wss(
        server.port(),
        &config,
        "localhost",
        &[("Authorization", "Bearer not-a-token")],
    ) else {
        panic!("a bad token was accepted")
    };
    assert!(err.contains("401"), "{err}");

    // A client that trusts another CA is refused by its own verifier.
    let other = trusting(&Ca::new("someone else").pem(), BOTH);
    let Err(err) = wss(server.port(), &other, "localhost", &[]) else {
        panic!("untrusted")
    };
    assert!(err.contains("certificate"), "{err}");

    ws.close(None).unwrap();
    server.assert_not_logged(SECRET);
    wss_pong(&mut ws2);
}

#[test]
fn every_key_format_over_tls12_and_tls13() {
    let tmp = TempDir::new("tls-formats");
    let ca = Ca::new("tether test CA");
    for format in [
        KeyFormat::EcdsaPkcs8,
        KeyFormat::EcdsaSec1,
        KeyFormat::RsaPkcs1,
        KeyFormat::Ed25519Pkcs8,
    ] {
        let (key_pem, key) = make_key(format);
        let chain = ca.issue(&key);
        let name = format!("{format:?}");
        let (cert, key_path) = write_pair(tmp.path(), &name, &chain, &key_pem);

        let out = run(
            tmp.path(),
            &[("JWT_SECRET", SECRET)],
            &[
                "check-config",
                "--config",
                tmp.write_json(&format!("{name}.json"), &tls_settings(&cert, &key_path))
                    .to_str()
                    .unwrap(),
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{format:?}: {stderr}");
        assert!(stderr.contains(&fingerprint_of_pem(&chain)), "{stderr}");

        let server = Server::start(tls_settings(&cert, &key_path));
        for (version, expected) in [
            (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
            (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
        ] {
            let config = trusting(&ca.pem(), &[version]);
            let mut ws = wss_authed(server.port(), &config, "carol");
            assert_eq!(negotiated(&ws), Some(expected), "{format:?}");
            wss_pong(&mut ws);
        }
    }
}

#[test]
fn self_signed_is_generated_pinned_and_reused() {
    let tmp = TempDir::new("tls-self");
    let state = tmp.path().join("state");
    let envs = [
        ("JWT_SECRET", SECRET),
        ("STATE_DIRECTORY", state.to_str().unwrap()),
    ];
    let settings = json!({"server": {"websocket": {"tls": {"self_signed": true}}}});
    // check-config has no side effects: it says what start-up will do.
    let config = tmp.write_json("check.json", &settings);
    let out = run(
        tmp.path(),
        &envs,
        &["check-config", "--config", config.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("will be generated"), "{stderr}");
    assert!(!state.join("tls-cert.pem").exists());

    let mut server = Server::start_in(tmp.path(), settings.clone(), &envs);
    assert!(server.wait_log("generated a self-signed certificate", Duration::ZERO));
    let fingerprint = logged_fingerprint(&server);
    let cert_pem = std::fs::read_to_string(state.join("tls-cert.pem")).unwrap();
    assert_eq!(fingerprint, fingerprint_of_pem(&cert_pem));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.join("tls-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the key is private: {mode:o}");

    // A client pinning the logged fingerprint connects; one pinning another does not.
    let mut ws = wss_authed(server.port(), &pinning(&fingerprint), "dave");
    wss_pong(&mut ws);
    let wrong = pinning(&fingerprint_of_der(b"another certificate"));
    assert!(wss(server.port(), &wrong, "localhost", &[]).is_err());
    // Trusted as its own root, the certificate names localhost and 127.0.0.1.
    let own = trusting(&cert_pem, BOTH);
    for name in ["localhost", "127.0.0.1"] {
        let mut ws = wss(server.port(), &own, name, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(wss_recv_json(&mut ws)["event"], "connected");
    }
    drop(ws);
    server.stop();

    // Restart: the same pair, nothing generated.
    let server = Server::start_in(tmp.path(), settings, &envs);
    assert!(!server.wait_log("generated a self-signed", Duration::ZERO));
    assert_eq!(logged_fingerprint(&server), fingerprint);
    let mut ws = wss_authed(server.port(), &pinning(&fingerprint), "dave");
    wss_pong(&mut ws);
}

#[test]
fn sighup_reloads_the_pair_for_new_handshakes_and_keeps_open_sessions() {
    let tmp = TempDir::new("tls-reload");
    let ca = Ca::new("tether test CA");
    let (key_a_pem, key_a) = make_key(KeyFormat::EcdsaPkcs8);
    let chain_a = ca.issue(&key_a);
    let (key_b_pem, key_b) = make_key(KeyFormat::Ed25519Pkcs8);
    let chain_b = ca.issue(&key_b);
    let (cert, key) = write_pair(tmp.path(), "live", &chain_a, &key_a_pem);
    let server = Server::start(tls_settings(&cert, &key));
    let config = trusting(&ca.pem(), BOTH);

    let mut open = wss_authed(server.port(), &config, "erin");
    assert_eq!(peer_fingerprint(&open), fingerprint_of_pem(&chain_a));

    // New files, SIGHUP: new handshakes see the new certificate.
    write_pair(tmp.path(), "live", &chain_b, &key_b_pem);
    sighup(&server);
    assert!(
        server.wait_log("tls: reloaded", Duration::from_secs(5)),
        "{:?}",
        server.logs()
    );
    let mut fresh = wss_authed(server.port(), &config, "frank");
    assert_eq!(peer_fingerprint(&fresh), fingerprint_of_pem(&chain_b));
    assert_eq!(logged_fingerprint(&server), fingerprint_of_pem(&chain_b));
    // The session opened before the reload goes on.
    wss_pong(&mut open);

    // A broken pair (B's certificate, A's key) is refused and B stays.
    write_pair(tmp.path(), "live", &chain_b, &key_a_pem);
    sighup(&server);
    assert!(server.wait_log("does not match", Duration::from_secs(5)));
    assert!(server.wait_log("keeping the current certificate", Duration::ZERO));
    let mut third = wss_authed(server.port(), &config, "grace");
    assert_eq!(peer_fingerprint(&third), fingerprint_of_pem(&chain_b));

    // A missing key file: named in the log, B stays.
    std::fs::remove_file(&key).unwrap();
    sighup(&server);
    let missing = format!("cannot read {}", key.display());
    assert!(
        server.wait_log(&missing, Duration::from_secs(5)),
        "{:?}",
        server.logs()
    );
    let mut fourth = wss_authed(server.port(), &config, "heidi");
    assert_eq!(peer_fingerprint(&fourth), fingerprint_of_pem(&chain_b));
    for ws in [&mut open, &mut fresh, &mut third, &mut fourth] {
        wss_pong(ws);
    }
}

#[test]
fn bad_files_are_named_by_check_config_and_serve() {
    let tmp = TempDir::new("tls-bad");
    let ca = Ca::new("tether test CA");
    let (key_a_pem, key_a) = make_key(KeyFormat::EcdsaPkcs8);
    let (key_b_pem, _) = make_key(KeyFormat::EcdsaPkcs8);
    let chain_a = ca.issue(&key_a);
    let (cert, key) = write_pair(tmp.path(), "good", &chain_a, &key_a_pem);
    let (_, other_key) = write_pair(tmp.path(), "other", &chain_a, &key_b_pem);
    let (junk_cert, _) = write_pair(tmp.path(), "junk", "hello, not PEM\n", "");
    let missing = tmp.path().join("no-such-file.pem");
    let unreadable = tmp.path().join("unreadable-dir.pem");
    std::fs::create_dir_all(&unreadable).unwrap();

    let cases: Vec<(&str, PathBuf, PathBuf, String)> = vec![
        (
            "missing cert",
            missing.clone(),
            key.clone(),
            missing.display().to_string(),
        ),
        (
            "missing key",
            cert.clone(),
            missing.clone(),
            missing.display().to_string(),
        ),
        (
            "unreadable key",
            cert.clone(),
            unreadable.clone(),
            unreadable.display().to_string(),
        ),
        (
            "junk cert",
            junk_cert.clone(),
            key.clone(),
            junk_cert.display().to_string(),
        ),
        (
            "mismatch",
            cert.clone(),
            other_key.clone(),
            "does not match".to_string(),
        ),
    ];
    for (what, cert, key, expected) in cases {
        let config = tmp.write_json("bad.json", &tls_settings(&cert, &key));
        let config = config.to_str().unwrap();
        for command in ["check-config", "serve"] {
            let out = run(
                tmp.path(),
                &[("JWT_SECRET", SECRET)],
                &[command, "--config", config],
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{command} {what}: {stderr}");
            assert!(stderr.contains(&expected), "{command} {what}: {stderr}");
            assert!(
                stderr.contains("server.websocket.tls"),
                "{command} {what}: {stderr}"
            );
        }
    }

    // self_signed beside cert/key is a settings error.
    let both =
        json!({"server": {"websocket": {"tls": {"cert": cert, "key": key, "self_signed": true}}}});
    let config = tmp.write_json("both.json", &both);
    let out = run(
        tmp.path(),
        &[("JWT_SECRET", SECRET)],
        &["check-config", "--config", config.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("self_signed"));
}

#[test]
fn junk_silence_and_plain_clients_cost_nothing_lasting() {
    let tmp = TempDir::new("tls-junk");
    let ca = Ca::new("tether test CA");
    let (key_pem, key) = make_key(KeyFormat::EcdsaPkcs8);
    let (cert, key_path) = write_pair(tmp.path(), "server", &ca.issue(&key), &key_pem);
    let mut settings = tls_settings(&cert, &key_path);
    merge(
        &mut settings,
        json!({"server": {"websocket": {"auth": {"auth_timeout_ms": 800}}}}),
    );
    let mut server = Server::start(settings);
    let port = server.port();

    // Junk instead of a ClientHello: an alert at most, then closed at once.
    for junk in [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        (0..2000u32).map(|i| (i * 7919 % 251) as u8).collect(),
        vec![0x16, 0x03, 0x01, 0xff, 0xff], // a record header claiming 64 KiB
    ] {
        let mut stream = tcp(port);
        stream.write_all(&junk).unwrap();
        let (got, closed) = read_until_closed(&mut stream, Duration::from_secs(3));
        let closed = closed.expect("closed");
        if junk.len() > 5 {
            assert!(closed < Duration::from_millis(500), "took {closed:?}");
        }
        assert!(
            got.is_empty() || got[0] == 21,
            "an alert record or nothing: {got:?}"
        );
    }

    // Silence, or half a ClientHello: closed at the handshake deadline.
    let hello = client_hello();
    for sent in [Vec::new(), hello[..hello.len() / 2].to_vec()] {
        let mut stream = tcp(port);
        stream.write_all(&sent).unwrap();
        let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
        let closed = closed.expect("closed by the deadline");
        assert!(
            closed >= Duration::from_millis(600),
            "{} bytes sent: closed after {closed:?}; {:#?}",
            sent.len(),
            server.logs()
        );
    }

    // Junk after a good ClientHello (instead of the rest of the handshake).
    let mut stream = tcp(port);
    stream.write_all(&hello).unwrap();
    stream.write_all(&[0x17; 300]).unwrap();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(3));
    assert!(closed.expect("closed") < Duration::from_millis(500));

    // A plain ws client on the TLS port fails cleanly and at once.
    let started = Instant::now();
    let Err(err) = connect(port, "/", &[]) else {
        panic!("plain ws on a TLS port")
    };
    assert!(started.elapsed() < Duration::from_secs(2), "{err}");

    // Many of them leave nothing behind: the server still serves.
    for _ in 0..50 {
        let mut stream = tcp(port);
        let _ = stream.write_all(b"\x00\x01\x02 not tls at all");
    }
    let mut ws = wss_authed(port, &trusting(&ca.pem(), BOTH), "ivan");
    wss_pong(&mut ws);
    assert!(server.is_running());
}

#[test]
fn a_disallowed_address_is_closed_without_a_handshake() {
    let tmp = TempDir::new("tls-allow");
    let ca = Ca::new("tether test CA");
    let (key_pem, key) = make_key(KeyFormat::EcdsaPkcs8);
    let (cert, key_path) = write_pair(tmp.path(), "server", &ca.issue(&key), &key_pem);
    let mut settings = tls_settings(&cert, &key_path);
    merge(
        &mut settings,
        json!({"server": {"websocket": {"auth": {"allowed_ip": "192.0.2.0/24"}}}}),
    );
    let server = Server::start(settings);
    let mut stream = tcp(server.port());
    let _ = stream.write_all(&client_hello());
    let (got, closed) = read_until_closed(&mut stream, Duration::from_secs(3));
    assert!(closed.is_some(), "closed");
    assert!(got.is_empty(), "no TLS bytes at all: {got:?}");
    assert!(server.wait_log("refused 127.0.0.1", Duration::from_secs(2)));
}

#[test]
fn a_full_server_answers_503_over_tls() {
    let tmp = TempDir::new("tls-full");
    let ca = Ca::new("tether test CA");
    let (key_pem, key) = make_key(KeyFormat::EcdsaPkcs8);
    let (cert, key_path) = write_pair(tmp.path(), "server", &ca.issue(&key), &key_pem);
    let mut settings = tls_settings(&cert, &key_path);
    merge(&mut settings, json!({"limits": {"max_connections": 1}}));
    let server = Server::start(settings);
    let config = trusting(&ca.pem(), BOTH);
    let mut first = wss_authed(server.port(), &config, "judy");
    let Err(err) = wss(server.port(), &config, "localhost", &[]) else {
        panic!("refused")
    };
    assert!(err.contains("503"), "{err}");
    wss_pong(&mut first);
}
