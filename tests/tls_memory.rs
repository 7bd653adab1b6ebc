//! What an idle wss session costs: live heap bytes counted by a global
//! allocator around a few hundred TLS 1.3 handshakes done through memory,
//! once the clients are gone. Its own binary, so the counting allocator
//! sees only this.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use tether::gateway::outqueue::OutQueue;
use tether::gateway::pool::BufPool;
use tether::gateway::tls::{self, Input, TlsRead, TlsSession, TlsState};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Sessions made: more than the server's session cache holds (256), so
/// the cache's share per session is small.
const SESSIONS: usize = 600;

fn client_config(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    Arc::new(config)
}

/// Records both ways until the handshake is done and one message has gone
/// each way, as the read and write passes move them.
fn converse(client: &mut ClientConnection, server: &mut TlsSession, pool: &mut BufPool) {
    let mut out = OutQueue::default();
    let mut scratch = vec![0u8; 64 * 1024];
    client.writer().write_all(b"hello").unwrap();
    out.push_copy(pool, &[b"world"]);
    for _ in 0..10 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let mut input = Input::new(&mut wire);
        while let TlsRead::Plain(_) = tls::feed(server, &mut input, &mut scratch, pool) {}
        server.hold(input.rest(), pool).unwrap();
        let mut back = Vec::new();
        tls::flush(server, &mut back, &mut out, pool, &mut scratch).unwrap();
        let mut src = &back[..];
        while !src.is_empty() {
            client.read_tls(&mut src).unwrap();
            client.process_new_packets().unwrap();
        }
    }
    let mut got = [0u8; 8];
    assert_eq!(client.reader().read(&mut got).unwrap(), 5);
    out.release(pool);
}

#[test]
fn an_idle_session_holds_no_buffer() {
    let dir = std::env::temp_dir().join(format!("tether-tls-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let state = TlsState::load(&c, &k).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let config = client_config(&cert.pem());
    let mut pool = BufPool::new(0);
    let mut sessions = Vec::with_capacity(SESSIONS);
    let before = live();
    for _ in 0..SESSIONS {
        let mut server = Box::new(state.session().unwrap());
        let mut client = ClientConnection::new(
            Arc::clone(&config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        converse(&mut client, &mut server, &mut pool);
        assert_eq!(server.held_len(), 0);
        assert!(!server.wants_write());
        sessions.push(server);
    }
    let per_session = (live() - before) as usize / SESSIONS;
    let fixed = std::mem::size_of::<TlsSession>();
    println!(
        "idle TLS 1.3 session: {per_session} bytes ({fixed} in the session itself, {} on the heap: keys, state, the session cache's share)",
        per_session - fixed
    );
    assert_eq!(pool.lent, 0, "no buffer lent");
    // Past the handshake a TLS 1.3 session keeps only its two keys and
    // traffic secrets (for KeyUpdate), not rustls' connection state (3.4
    // KiB), its key schedule or expanded AEAD keys: about 0.4 KiB with the
    // cache's share.
    assert!(per_session < 512, "{per_session} bytes per idle session");
    drop(sessions);
}
