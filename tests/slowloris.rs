//! Issue 12 items 1-2: connections that trickle their request head (slowloris),
//! from one address or from many, never keep a client from another address
//! from being served, on the WebSocket port and on the health port. The
//! attackers use 127.0.0.2 and 127.0.1.x, the legitimate client 127.0.0.3
//! (all loopback), by binding each client socket before it connects.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The legitimate client's address.
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// How long the legitimate client may wait to be served: well under the
/// 10 s `auth_timeout_ms` the attack's connections would otherwise hold
/// their slots for, with room for a loaded 2-core machine.
const SERVED_WITHIN: Duration = Duration::from_secs(3);
/// How many times it is served while the attack goes on.
const ROUNDS: usize = 8;

/// One attacking connection.
struct Slot {
    ip: Ipv4Addr,
    stream: Option<TcpStream>,
    sent: usize,
    /// When to connect again after the server closed it.
    retry_at: Instant,
}

/// Connections from `sources` (`per_source` each) that send `head` one byte
/// every 100 ms and never finish it; a connection the server closes is
/// opened again a second later, as a staggered attacker does. Runs until
/// stopped or dropped.
struct Attack {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl Attack {
    fn start(port: u16, sources: Vec<Ipv4Addr>, per_source: usize, head: &'static [u8]) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let now = Instant::now();
            let mut slots: Vec<Slot> = sources
                .iter()
                .flat_map(|&ip| std::iter::repeat_n(ip, per_source))
                .map(|ip| Slot {
                    ip,
                    stream: None,
                    sent: 0,
                    retry_at: now,
                })
                .collect();
            let mut opened = 0;
            while !stopping.load(Ordering::Relaxed) {
                let now = Instant::now();
                for slot in &mut slots {
                    if slot.stream.is_none() && now >= slot.retry_at {
                        slot.stream = tcp_from(slot.ip, port).ok();
                        slot.sent = 0;
                        opened += 1;
                    }
                    let Some(stream) = slot.stream.as_mut() else {
                        continue;
                    };
                    // The head, then one header value that never ends.
                    let byte = head.get(slot.sent).copied().unwrap_or(b'a');
                    if stream.write_all(&[byte]).is_err() || peer_closed(stream) {
                        slot.stream = None;
                        slot.retry_at = now + Duration::from_secs(1);
                    }
                    slot.sent += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            opened
        });
        Attack {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the attack; how many connections it opened.
    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whether the server answered or closed (without waiting).
fn peer_closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    let _ = stream.set_nonblocking(true);
    let closed = match stream.read(&mut buf) {
        Ok(_) => true,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    let _ = stream.set_nonblocking(false);
    closed
}

/// `tether_NAME` of the health port's `/metrics`.
fn metric(health: u16, name: &str) -> u64 {
    let (status, text) = get_from(CLIENT, health, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .expect("a number")
}

/// `GET path` from `source`; the status and the body.
fn get_from(source: Ipv4Addr, port: u16, path: &str) -> io::Result<(u16, String)> {
    let mut stream = tcp_from(source, port)?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = status_of(head.lines().next().unwrap_or("")).unwrap_or(0);
    Ok((status, body.to_string()))
}

/// A WebSocket from `source`: the time until `connected` arrived, or why not.
fn served_from(source: Ipv4Addr, port: u16) -> Result<Duration, String> {
    use tungstenite::client::IntoClientRequest;
    let started = Instant::now();
    let stream = tcp_from(source, port).map_err(|e| format!("connect: {e}"))?;
    let request = format!("ws://127.0.0.1:{port}/")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let (mut ws, _) =
        tungstenite::client::client(request, stream).map_err(|e| format!("handshake: {e}"))?;
    let connected = match ws.read() {
        Ok(tungstenite::Message::Text(text)) => text.to_string(),
        other => return Err(format!("no `connected`: {other:?}")),
    };
    let took = started.elapsed();
    let value: Value = serde_json::from_str(&connected).map_err(|e| e.to_string())?;
    if value["event"] != "connected" {
        return Err(format!("not `connected`: {value}"));
    }
    let _ = ws.close(None);
    let _ = ws.flush();
    Ok(took)
}

/// `/health` from `source`: the time until the 200 answer, or why not.
fn health_from(source: Ipv4Addr, port: u16) -> Result<Duration, String> {
    let started = Instant::now();
    match get_from(source, port, "/health") {
        Ok((200, body)) if body.contains("\"healthy\"") => Ok(started.elapsed()),
        Ok((status, body)) => Err(format!("{status} {body}")),
        Err(e) => Err(e.to_string()),
    }
}

/// The legitimate client is served within `SERVED_WITHIN`, `ROUNDS` times
/// in a row while the attack goes on.
fn assert_served_throughout(what: &str, serve: impl Fn() -> Result<Duration, String>) {
    for round in 0..ROUNDS {
        match serve() {
            Ok(took) => assert!(
                took < SERVED_WITHIN,
                "{what}: round {round}: served after {took:?}"
            ),
            Err(e) => panic!("{what}: round {round}: not served: {e}"),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `n` attacking addresses 127.0.1.1 ... 127.0.1.n.
fn many_addresses(n: u8) -> Vec<Ipv4Addr> {
    (1..=n).map(|i| Ipv4Addr::new(127, 0, 1, i)).collect()
}

/// A server whose `max_connections` 300 slow handshakes would fill many
/// times over, and which holds a handshake for 10 s (the default
/// `auth_timeout_ms`); with its health port.
fn small_server() -> (Server, u16) {
    let server = Server::start(json!({
        "server": { "websocket": { "auth": { "allowed_ip": "127.0.0.0/8" } } },
        "limits": { "max_connections": 20 },
        "log": { "level": "info" }
    }));
    let health = health_port(&server);
    (server, health)
}

const WS_HEAD: &[u8] = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nX-Slow: ";
const HTTP_HEAD: &[u8] = b"GET /health HTTP/1.1\r\nX-Slow: ";

/// Waits until the attack holds what it can (its first connections are open).
fn let_it_settle() {
    std::thread::sleep(Duration::from_millis(700));
}

/// How many log lines contain `needle`.
fn logged(server: &Server, needle: &str) -> usize {
    server.logs().iter().filter(|l| l.contains(needle)).count()
}

/// The port attacked and served.
#[derive(Clone, Copy)]
enum Target {
    WebSocket,
    Health,
}

/// Attacks `target` from `sources` (`per_source` connections each) while
/// the legitimate client is served; then checks that the server counted
/// evictions and logged `once` exactly once.
fn attack_while_serving(target: Target, sources: Vec<Ipv4Addr>, per_source: usize, once: &str) {
    let (mut server, health) = small_server();
    let (port, head, kind) = match target {
        Target::WebSocket => (server.port(), WS_HEAD, "handshake"),
        Target::Health => (health, HTTP_HEAD, "http"),
    };
    let expected = sources.len() * per_source;
    let attack = Attack::start(port, sources, per_source, head);
    let_it_settle();
    match target {
        Target::WebSocket => assert_served_throughout("ws", || served_from(CLIENT, port)),
        Target::Health => assert_served_throughout("health", || health_from(CLIENT, port)),
    }
    let opened = attack.stop();
    assert!(opened >= expected, "the attack opened {opened} connections");
    assert!(server.is_running());
    let evicted = format!("tether_evictions_total{{kind=\"{kind}\"}}");
    assert!(metric(health, &evicted) > 0, "{evicted}");
    assert_eq!(logged(&server, once), 1, "logged once per episode: {once}");
}

#[test]
fn slow_handshakes_from_one_address_do_not_keep_others_out() {
    // The address's own oldest handshakes make room for its new ones.
    attack_while_serving(
        Target::WebSocket,
        vec![Ipv4Addr::new(127, 0, 0, 2)],
        320,
        "127.0.0.2 has 8 handshakes in progress: dropping its oldest",
    );
}

#[test]
fn slow_handshakes_from_many_addresses_are_evicted_oldest_first() {
    // 40 addresses x 8: within each address's bound, 16 times max_connections.
    attack_while_serving(
        Target::WebSocket,
        many_addresses(40),
        8,
        "handshakes in progress fill limits.max_connections (20)",
    );
}

#[test]
fn health_answers_while_one_address_trickles_requests() {
    attack_while_serving(
        Target::Health,
        vec![Ipv4Addr::new(127, 0, 0, 2)],
        320,
        "127.0.0.2 has 8 HTTP requests in progress: dropping its oldest",
    );
}

#[test]
fn health_answers_while_many_addresses_trickle_requests() {
    // 40 addresses x 8: within each address's bound, 10 times the 32 slots.
    attack_while_serving(
        Target::Health,
        many_addresses(40),
        8,
        "the HTTP endpoints' 32 connections are busy",
    );
}
