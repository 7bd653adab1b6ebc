//! The session handed from rustls to our record layer, against a real
//! rustls client through memory: which sessions move, data both ways,
//! KeyUpdate, close_notify and a tampered record.

use super::io::tests::{
    client_config_with, client_from, client_to_server, established, fails_with_alert, pump,
    server_to_client, session_for,
};
use super::session::{Stage, TlsSession};
use super::*;
use crate::gateway::outqueue::OutQueue;
use crate::gateway::pool::BufPool;
use rustls::crypto::ring::{cipher_suite, default_provider};
use rustls::{ClientConnection, SupportedCipherSuite};
use std::io::{Read, Write};

fn on_records(session: &TlsSession) -> bool {
    matches!(session.stage, Stage::Records(_))
}

/// A session established with a client that offers only `suites`.
fn established_with(
    suites: &[SupportedCipherSuite],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (TlsSession, ClientConnection, OutQueue, BufPool) {
    let (mut server, ca) = session_for(&rcgen::PKCS_ECDSA_P256_SHA256, "suite");
    let mut provider = default_provider();
    provider.cipher_suites = suites.to_vec();
    let mut client = client_from(client_config_with(&ca, versions, provider));
    let mut out = OutQueue::default();
    let mut pool = BufPool::new(4);
    pump(&mut client, &mut server, &mut out, &mut pool, usize::MAX);
    (server, client, out, pool)
}

/// Sends `text` each way and checks it arrives.
fn echo(
    server: &mut TlsSession,
    client: &mut ClientConnection,
    out: &mut OutQueue,
    pool: &mut BufPool,
    text: &[u8],
) {
    client.writer().write_all(text).unwrap();
    assert_eq!(client_to_server(client, server, pool, 11), text);
    out.push_copy(pool, &[text]);
    let mut wire = Vec::new();
    assert!(flush(server, &mut wire, out, pool, &mut [0; 65536]).unwrap());
    server_to_client(client, &wire);
    let mut got = vec![0u8; text.len() + 10];
    assert_eq!(client.reader().read(&mut got).unwrap(), text.len());
    assert_eq!(&got[..text.len()], text);
}

#[test]
fn tls13_sessions_with_a_32_byte_key_move_to_the_record_layer() {
    let tls13 = &[&rustls::version::TLS13][..];
    let tls12 = &[&rustls::version::TLS12][..];
    for (suite, versions, moved) in [
        (cipher_suite::TLS13_AES_256_GCM_SHA384, tls13, true),
        (cipher_suite::TLS13_CHACHA20_POLY1305_SHA256, tls13, true),
        // rustls takes no 16-byte key back: AES-128 stays with rustls.
        (cipher_suite::TLS13_AES_128_GCM_SHA256, tls13, false),
        (
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            tls12,
            false,
        ),
    ] {
        let (mut server, mut client, mut out, mut pool) = established_with(&[suite], versions);
        assert_eq!(on_records(&server), moved, "{suite:?}");
        for text in [&b"hello"[..], &[7u8; 15_000][..]] {
            echo(&mut server, &mut client, &mut out, &mut pool, text);
        }
        server.release(&mut pool);
        out.release(&mut pool);
        assert_eq!(pool.lent, 0);
    }
}

#[test]
fn a_browser_listing_aes_128_first_gets_a_suite_that_moves() {
    let suites = [
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    let (server, client, _, _) = established_with(&suites, &[&rustls::version::TLS13]);
    // The server's first choice for this CPU: AES-256-GCM with AES
    // instructions, ChaCha20 without (a Pi 4); never AES-128, which stays on
    // rustls.
    let first = super::suites::tls13_order_here()[0];
    assert_eq!(client.negotiated_cipher_suite(), Some(first));
    assert_ne!(first, cipher_suite::TLS13_AES_128_GCM_SHA256);
    assert!(on_records(&server));
}

#[test]
fn a_key_update_from_the_client_is_answered() {
    let (mut server, mut client, mut out, mut pool) =
        established(&rcgen::PKCS_ED25519, "keyupdate");
    assert!(on_records(&server));
    for round in 0..3 {
        // rustls asks for the server's update too (update_requested).
        client.refresh_traffic_keys().unwrap();
        echo(
            &mut server,
            &mut client,
            &mut out,
            &mut pool,
            format!("after {round}").as_bytes(),
        );
    }
}

#[test]
fn keys_are_updated_before_the_confidentiality_limit() {
    let (mut server, _, mut out, mut pool) = established(&rcgen::PKCS_ED25519, "limit");
    let Stage::Records(layer) = &mut server.stage else {
        panic!("not on the record layer");
    };
    // AES-256-GCM: 2^24 records per key. (The client's count is not moved,
    // so only the records' shapes are checked here; the KeyUpdate itself is
    // what `a_key_update_from_the_client_is_answered` has the client open.)
    layer.set_tx_seq(1 << 24);
    out.push_copy(&mut pool, &[b"after the limit"]);
    let mut wire = Vec::new();
    assert!(flush(&mut server, &mut wire, &mut out, &mut pool, &mut [0; 65536]).unwrap());
    // A KeyUpdate record (5 bytes, the content type, the tag), then the data.
    assert_eq!(wire[..5], [23, 3, 3, 0, 5 + 1 + 16]);
    assert_eq!(wire.len(), 27 + 5 + 15 + 1 + 16);
}

#[test]
fn a_tampered_record_fails_with_bad_record_mac() {
    let (mut server, mut client, _, mut pool) = established(&rcgen::PKCS_ED25519, "tamper");
    client.writer().write_all(b"payload").unwrap();
    let mut wire = Vec::new();
    client.write_tls(&mut wire).unwrap();
    let last = wire.len() - 1;
    wire[last] ^= 1;
    let alert = fails_with_alert(&mut server, &wire, &mut pool);
    let mut src = &alert[..];
    client.read_tls(&mut src).unwrap();
    let error = client.process_new_packets().unwrap_err();
    assert_eq!(
        error,
        rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac)
    );
    server.release(&mut pool);
    assert_eq!(pool.lent, 0);
}

#[test]
fn an_unencrypted_record_after_the_handshake_fails() {
    let (mut server, _, _, mut pool) = established(&rcgen::PKCS_ED25519, "plainrec");
    let alert = fails_with_alert(&mut server, &[22, 3, 3, 0, 1, 0], &mut pool);
    assert_eq!(alert.first(), Some(&23), "an encrypted alert");
    server.release(&mut pool);
}

#[test]
fn close_notify_reaches_the_peer() {
    let (mut server, mut client, _, mut pool) =
        established(&rcgen::PKCS_ECDSA_P256_SHA256, "close");
    close_notify(&mut server, &mut pool).unwrap();
    close_notify(&mut server, &mut pool).unwrap();
    let mut wire = Vec::new();
    assert!(write_records(&mut server, &mut wire, &mut pool).unwrap());
    server_to_client(&mut client, &wire);
    let mut got = [0u8; 8];
    assert_eq!(client.reader().read(&mut got).unwrap(), 0, "clean close");
    // The client's close_notify: the read pass sees the end.
    client.send_close_notify();
    let mut wire = Vec::new();
    client.write_tls(&mut wire).unwrap();
    let mut input_bytes = wire.clone();
    let mut input = Input::new(&mut input_bytes);
    let mut scratch = [0u8; 64];
    assert_eq!(
        feed(&mut server, &mut input, &mut scratch, &mut pool),
        TlsRead::Closed
    );
}

/// Our key updates against rustls' own (its kernel connection, kept by
/// the hand-over in tests), several generations, both directions.
fn keys_match_rustls(mut server: TlsSession) {
    let mut kernel = super::session::KEPT_KERNEL
        .with(|kept| kept.borrow_mut().take())
        .expect("the hand-over kept the kernel connection");
    let Stage::Records(layer) = &mut server.stage else {
        panic!("not on the record layer");
    };
    let parts = |next: Result<(u64, rustls::ConnectionTrafficSecrets), rustls::Error>| match next
        .unwrap()
    {
        (0, rustls::ConnectionTrafficSecrets::Aes256Gcm { key, iv })
        | (0, rustls::ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv }) => {
            (key.as_ref().to_vec(), iv.as_ref().to_vec())
        }
        _ => panic!("unexpected secrets"),
    };
    for _ in 0..3 {
        let [(tx_key, tx_iv), (rx_key, rx_iv)] = layer.step_keys();
        assert_eq!(
            parts(kernel.update_tx_secret()),
            (tx_key.to_vec(), tx_iv.to_vec())
        );
        assert_eq!(
            parts(kernel.update_rx_secret()),
            (rx_key.to_vec(), rx_iv.to_vec())
        );
    }
}

#[test]
fn key_updates_derive_the_keys_rustls_derives() {
    let (server, _, _, _) = established(&rcgen::PKCS_ED25519, "derive");
    keys_match_rustls(server);
    let chacha = [cipher_suite::TLS13_CHACHA20_POLY1305_SHA256];
    let (server, client, _, _) = established_with(&chacha, &[&rustls::version::TLS13]);
    assert_eq!(client.negotiated_cipher_suite(), Some(chacha[0]));
    keys_match_rustls(server);
}

#[test]
fn key_updates_started_by_either_side_keep_the_session() {
    let (mut server, mut client, mut out, mut pool) = established(&rcgen::PKCS_ED25519, "updates");
    for round in 0..3 {
        client.refresh_traffic_keys().unwrap();
        echo(
            &mut server,
            &mut client,
            &mut out,
            &mut pool,
            b"client updated",
        );
        let Stage::Records(layer) = &mut server.stage else {
            panic!("not on the record layer");
        };
        // The server's own update, unrequested (as at the confidentiality
        // limit), which the client must open and follow.
        let mut sealer = layer.sealer();
        let mut record = [0u8; 64];
        let used = layer.key_update(&mut sealer, false, &mut record).unwrap();
        server_to_client(&mut client, &record[..used]);
        let text = format!("server updated {round}");
        echo(
            &mut server,
            &mut client,
            &mut out,
            &mut pool,
            text.as_bytes(),
        );
    }
}
