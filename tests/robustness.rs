//! SPEC §4 and §8: bad input never kills the server nor disturbs another
//! client; framing errors close with the right code; pings, idle timeout and
//! SIGTERM.

mod common;

use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

/// A server with a small message limit and a well-behaved bystander client.
fn setup() -> (Server, Ws) {
    let server = Server::start(json!({"limits": {
        "max_message_bytes": 1024,
        "max_outbound_bytes": 4096
    }}));
    let (ws, _) = open(server.port());
    (server, ws)
}

/// The bystander and a fresh client both still get `pong`.
fn assert_undisturbed(server: &mut Server, bystander: &mut Ws) {
    assert!(server.is_running(), "the server process died");
    assert_pong(bystander);
    assert_serving(server.port());
}

#[test]
fn garbage_instead_of_a_handshake() {
    // Input that never completes a request head is dropped after the
    // handshake timeout (auth_timeout_ms), so keep it short.
    let mut server =
        Server::start(json!({"server": {"websocket": {"auth": {"auth_timeout_ms": 500}}}}));
    let token = mint_valid("bystander", &[], &[], 600);
    let (mut bystander, _) = open_authed(server.port(), &token);
    let port = server.port();
    for garbage in [
        &b"\x00\x01\x02\x03\xff\xfe\xfd"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a TLS ClientHello start
        b"HELLO WORLD\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"\r\n\r\n\r\n\r\n",
    ] {
        let mut stream = tcp(port);
        let _ = stream.write_all(garbage);
        let line = read_status_line(&mut stream);
        if !line.is_empty() {
            let status = status_of(&line).unwrap_or_else(|| panic!("not HTTP: {line:?}"));
            assert!((400..500).contains(&status), "{garbage:?} -> {line}");
        }
    }
    assert_undisturbed(&mut server, &mut bystander);
}

#[test]
fn malformed_upgrade_requests_are_refused() {
    let (mut server, mut bystander) = setup();
    let port = server.port();
    let cases: [(&str, u16); 4] = [
        // Missing key.
        (
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
            400,
        ),
        // Wrong key length.
        (
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: abc\r\nSec-WebSocket-Version: 13\r\n\r\n",
            400,
        ),
        // Unsupported version: 426 naming version 13.
        (
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            426,
        ),
        // POST upgrade.
        (
            "POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            400,
        ),
    ];
    for (request, expected) in cases {
        let line = http_exchange(port, request.as_bytes());
        assert_eq!(status_of(&line), Some(expected), "{request:?} -> {line:?}");
    }
    assert_undisturbed(&mut server, &mut bystander);
}

#[test]
fn truncated_handshake_then_disconnect() {
    let (mut server, mut bystander) = setup();
    let port = server.port();
    let full = upgrade_request(port, "/", &[]);
    for cut in [1, 10, full.len() / 2, full.len() - 2] {
        let mut stream = tcp(port);
        stream.write_all(&full.as_bytes()[..cut]).unwrap();
        drop(stream);
    }
    // A half-sent request that just sits there does not block anyone either.
    let mut stalled = tcp(port);
    stalled.write_all(&full.as_bytes()[..20]).unwrap();
    assert_undisturbed(&mut server, &mut bystander);
    drop(stalled);
    assert_undisturbed(&mut server, &mut bystander);
}

#[test]
fn stalled_handshake_is_dropped_after_the_auth_timeout() {
    let server =
        Server::start(json!({"server": {"websocket": {"auth": {"auth_timeout_ms": 300}}}}));
    let full = upgrade_request(server.port(), "/", &[]);
    let mut stalled = tcp(server.port());
    stalled.write_all(&full.as_bytes()[..20]).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = match stalled.read(&mut buf) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
        Err(e) => panic!("the stalled connection was not dropped: {e}"),
    };
    assert_eq!(n, 0, "expected the connection to be dropped");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn oversized_handshake_is_refused() {
    let (mut server, mut bystander) = setup();
    let port = server.port();
    let filler = "a".repeat(200);
    let mut head = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    // 40 headers of ~215 bytes: over 8 KiB, under the header count limit.
    for i in 0..40 {
        head.push_str(&format!("X-Filler-{i}: {filler}\r\n"));
    }
    head.push_str("\r\n");
    assert!(head.len() > 8192);
    let mut stream = tcp(port);
    let _ = stream.write_all(head.as_bytes());
    let line = read_status_line(&mut stream);
    assert!(
        line.is_empty() || status_of(&line) == Some(431),
        "expected 431 or a dropped connection, got {line:?}"
    );
    // Too many small headers, and a single endless header line.
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-{i}: y\r\n"));
    }
    many.push_str("\r\n");
    let line = http_exchange(port, many.as_bytes());
    assert!(
        line.is_empty() || matches!(status_of(&line), Some(400 | 431)),
        "{line:?}"
    );
    let mut endless = tcp(port);
    let _ = endless.write_all(b"GET / HTTP/1.1\r\nX-Long: ");
    let chunk = vec![b'z'; 4096];
    for _ in 0..8 {
        if endless.write_all(&chunk).is_err() {
            break;
        }
    }
    let line = read_status_line(&mut endless);
    assert!(line.is_empty() || status_of(&line) == Some(431), "{line:?}");
    assert_undisturbed(&mut server, &mut bystander);
}

/// Upgrades a raw client, sends `bytes`, and returns the close code.
fn abuse(port: u16, bytes: &[u8]) -> u16 {
    let mut raw = RawWs::open(port);
    raw.send(bytes);
    raw.expect_close()
}

#[test]
fn invalid_utf8_text_is_1007() {
    let (mut server, mut bystander) = setup();
    let port = server.port();
    assert_eq!(
        abuse(port, &frame(true, 0x1, b"{\"event\":\"\xff\xfe\"}")),
        1007
    );
    // Split across fragments: the bad byte is in the second one.
    let mut bytes = frame(false, 0x1, b"{\"event\":\"");
    bytes.extend(frame(true, 0x0, b"\xc3\x28\"}"));
    assert_eq!(abuse(port, &bytes), 1007);
    // A multi-byte character split across fragments is fine.
    let mut raw = RawWs::open(port);
    let text = "{\"event\":\"ping\",\"data\":\"é\"}".as_bytes();
    let split = text.iter().position(|&b| b == 0xc3).unwrap() + 1;
    raw.send(&frame(false, 0x1, &text[..split]));
    raw.send(&frame(true, 0x0, &text[split..]));
    assert_eq!(raw.recv_json()["event"], "pong");
    assert_undisturbed(&mut server, &mut bystander);
}

#[test]
fn unmasked_frame_is_1002() {
    let (mut server, mut bystander) = setup();
    let bytes = frame_with(true, 0x1, br#"{"event":"ping"}"#, None);
    assert_eq!(abuse(server.port(), &bytes), 1002);
    assert_undisturbed(&mut server, &mut bystander);
}

#[test]
fn reserved_opcodes_and_bits_are_1002() {
    let (mut server, mut bystander) = setup();
    let port = server.port();
    for opcode in [0x3, 0x7, 0xB, 0xF] {
        assert_eq!(
            abuse(port, &frame(true, opcode, b"x")),
            1002,
            "opcode {opcode:#x}"
        );
    }
    // RSV1 set without an extension.
    let mut bytes = frame(true, 0x1, br#"{"event":"ping"}"#);
    bytes[0] |= 0x40;
    assert_eq!(abuse(port, &bytes), 1002);
    // A continuation with nothing to continue; a fragmented ping; a long ping.
    assert_eq!(abuse(port, &frame(true, 0x0, b"x")), 1002);
    assert_eq!(abuse(port, &frame(false, 0x9, b"x")), 1002);
    assert_eq!(abuse(port, &frame(true, 0x9, &[0u8; 126])), 1002);
    // A new message inside a fragmented one.
    let mut bytes = frame(false, 0x1, b"{");
    bytes.extend(frame(true, 0x1, b"{}"));
    assert_eq!(abuse(port, &bytes), 1002);
    // A close frame with a one-byte body, and with a reserved code.
    assert_eq!(abuse(port, &frame(true, 0x8, &[3])), 1002);
    assert_eq!(abuse(port, &frame(true, 0x8, &1005u16.to_be_bytes())), 1002);
    assert_undisturbed(&mut server, &mut bystander);
}

#[test]
fn oversized_messages_are_1009() {
    let (mut server, mut bystander) = setup();
    let port = server.port();
    // One frame over max_message_bytes (1024).
    let big = format!(r#"{{"event":"ping","data":"{}"}}"#, "x".repeat(1100));
    assert_eq!(abuse(port, &frame(true, 0x1, big.as_bytes())), 1009);
    // Only the header announcing a huge length: refused before the payload.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&MASK);
    assert_eq!(abuse(port, &header), 1009);
    // Fragments that add up past the limit.
    let mut raw = RawWs::open(port);
    let chunk = vec![b'a'; 400];
    raw.send(&frame(false, 0x1, b"{\"event\":\"ping\",\"data\":\""));
    raw.send(&frame(false, 0x0, &chunk));
    raw.send(&frame(false, 0x0, &chunk));
    raw.send(&frame(false, 0x0, &chunk));
    assert_eq!(raw.expect_close(), 1009);
    // Binary too.
    assert_eq!(abuse(port, &frame(true, 0x2, &[7u8; 2000])), 1009);
    // Exactly at the limit is fine.
    let pad = 1024 - r#"{"event":"ping","data":""}"#.len();
    let exact = format!(r#"{{"event":"ping","data":"{}"}}"#, "y".repeat(pad));
    assert_eq!(exact.len(), 1024);
    let mut raw = RawWs::open(port);
    raw.send(&frame(true, 0x1, exact.as_bytes()));
    assert_eq!(raw.recv_json()["event"], "pong");
    assert_undisturbed(&mut server, &mut bystander);
}

/// Sends `bytes` from another thread (the server may stop reading) and
/// returns the close code the server sends, or `None` when the connection
/// ended without a close frame.
fn close_code_after_sending(raw: &mut RawWs, bytes: Vec<u8>) -> Option<u16> {
    let mut writer = raw.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&bytes);
    });
    let mut code = None;
    while let Some(got) = raw.read_frame() {
        if got.opcode == 0x8 {
            code = Some(got.close_code().unwrap_or(1005));
            break;
        }
    }
    sender.join().unwrap();
    code
}

#[test]
fn oversized_message_is_1009_even_when_more_bytes_follow() {
    let (mut server, mut bystander) = setup();
    let port = server.port();
    // A single frame larger than one server read (64 KiB): 1009, not a dropped socket.
    for size in [70_000, 300_000] {
        let mut raw = RawWs::open(port);
        let code = close_code_after_sending(&mut raw, frame(true, 0x1, &vec![b'x'; size]));
        assert_eq!(code, Some(1009), "{size}-byte frame (limit 1024)");
    }
    // Fragments past the limit, with the final fragment already on its way.
    let mut raw = RawWs::open(port);
    let mut bytes = frame(false, 0x1, b"{\"event\":\"ping\",\"data\":\"");
    for _ in 0..3 {
        bytes.extend(frame(false, 0x0, &[b'a'; 400]));
    }
    bytes.extend(frame(true, 0x0, b"\"}"));
    assert_eq!(close_code_after_sending(&mut raw, bytes), Some(1009));
    assert_undisturbed(&mut server, &mut bystander);
}

#[test]
fn fragmented_message_with_a_ping_in_between() {
    let (mut server, mut bystander) = setup();
    let mut raw = RawWs::open(server.port());
    raw.send(&frame(false, 0x1, b"{\"event\""));
    raw.send(&frame(true, 0x9, b"are you there"));
    raw.send(&frame(false, 0x0, b":\"pi"));
    raw.send(&frame(true, 0x0, b"ng\",\"requestId\":\"frag\"}"));
    // The pong for our ping frame comes first, then the reply to the message.
    let pong_frame = loop {
        let f = raw.read_frame().expect("a frame");
        if f.opcode != 0x9 {
            break f;
        }
    };
    assert_eq!(pong_frame.opcode, 0xA, "{pong_frame:?}");
    assert_eq!(pong_frame.payload, b"are you there");
    let reply = raw.recv_json();
    assert_eq!(reply["event"], "pong", "{reply}");
    assert_eq!(reply["requestId"], "frag");
    // All of it sent byte by byte works too.
    let mut bytes = frame(false, 0x1, b"{\"event\":");
    bytes.extend(frame(true, 0x0, b"\"ping\"}"));
    for b in bytes {
        raw.send(&[b]);
    }
    assert_eq!(raw.recv_json()["event"], "pong");
    assert_undisturbed(&mut server, &mut bystander);
}

#[test]
fn many_messages_in_one_write() {
    let (mut server, mut bystander) = setup();
    let mut raw = RawWs::open(server.port());
    let mut bytes = Vec::new();
    for i in 0..10 {
        bytes.extend(frame(
            true,
            0x1,
            format!(r#"{{"event":"ping","requestId":{i}}}"#).as_bytes(),
        ));
    }
    raw.send(&bytes);
    for i in 0..10 {
        let reply = raw.recv_json();
        assert_eq!(reply["requestId"], i, "{reply}");
    }
    assert_undisturbed(&mut server, &mut bystander);
}

#[test]
fn client_disconnecting_mid_frame() {
    let (mut server, mut bystander) = setup();
    let port = server.port();
    // Header announcing 100 bytes, then 10 of them, then gone.
    let whole = frame(true, 0x1, &[b'x'; 100]);
    let mut raw = RawWs::open(port);
    raw.send(&whole[..16]);
    drop(raw);
    // Half a header.
    let mut raw = RawWs::open(port);
    raw.send(&[0x81]);
    drop(raw);
    // Mid fragmented message, with a half-closed socket.
    let mut raw = RawWs::open(port);
    raw.send(&frame(false, 0x1, b"{\"ev"));
    raw.stream.shutdown(Shutdown::Write).unwrap();
    assert!(raw.closed_within(Duration::from_secs(3)));
    assert_undisturbed(&mut server, &mut bystander);
}

#[test]
fn close_handshake_echoes_the_code() {
    let (mut server, mut bystander) = setup();
    let mut raw = RawWs::open(server.port());
    let mut payload = 4321u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"done");
    raw.send(&frame(true, 0x8, &payload));
    assert_eq!(raw.expect_close(), 4321);
    assert!(raw.closed_within(Duration::from_secs(3)));
    let mut ws = connect(server.port(), "/", &[]).unwrap();
    recv_json(&mut ws);
    assert_eq!(close_normally(&mut ws), Some(1000));
    assert_undisturbed(&mut server, &mut bystander);
}

#[test]
fn server_drops_the_connection_if_the_peer_never_answers_its_close() {
    let server =
        Server::start(json!({"server": {"websocket": {"auth": {"auth_timeout_ms": 200}}}}));
    let mut raw = RawWs::open(server.port());
    // auth_timeout -> error then close 4002; we never answer the close.
    let error = raw.recv_json();
    assert_eq!(error["data"]["code"], "auth_timeout");
    assert_eq!(raw.expect_close(), 4002);
    let started = Instant::now();
    assert!(raw.closed_within(Duration::from_secs(4)));
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "TCP dropped {:?} after the close frame; SPEC says at most 2 s",
        started.elapsed()
    );
}

#[test]
fn server_sends_pings_and_closes_idle_clients_1001() {
    let server = Server::start(json!({"limits": {"idle_timeout_s": 2, "ping_interval_s": 1}}));
    let port = server.port();
    // A tungstenite client that keeps reading (and so answers pings) stays open.
    let (mut live, _) = open(port);
    let keeper = std::thread::spawn(move || {
        live.get_mut()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut pings = 0;
        let until = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < until {
            match live.read() {
                Ok(tungstenite::Message::Ping(_)) => pings += 1,
                Ok(other) => panic!("live client got {other:?}"),
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("live client failed: {e}"),
            }
        }
        live.get_mut().set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        assert_pong(&mut live);
        pings
    });
    // A raw client never answers pings: closed 1001 after idle_timeout_s.
    let started = Instant::now();
    let mut raw = RawWs::open(port);
    assert_eq!(raw.expect_close(), 1001);
    let elapsed = started.elapsed();
    assert!(raw.pings >= 1, "no Ping frame before the idle close");
    assert!(
        elapsed >= Duration::from_millis(1800) && elapsed < Duration::from_millis(3500),
        "idle close after {elapsed:?}"
    );
    let pings = keeper.join().expect("the live client was disturbed");
    assert!(pings >= 2, "the live client got {pings} pings in 2.5 s");
}

#[test]
fn ping_frames_arrive_every_interval() {
    let server = Server::start(json!({"limits": {"idle_timeout_s": 10, "ping_interval_s": 1}}));
    let mut raw = RawWs::open(server.port());
    let started = Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let got = raw.read_frame().expect("connection open");
        if got.opcode == 0x9 {
            seen.push(started.elapsed());
            // Answer, as a live client does.
            raw.send(&frame(true, 0xA, &got.payload));
        }
    }
    assert!(
        seen[0] < Duration::from_millis(1500),
        "first ping at {:?}",
        seen[0]
    );
    let gap = seen[1] - seen[0];
    assert!(
        gap >= Duration::from_millis(800) && gap < Duration::from_millis(1500),
        "pings {gap:?} apart"
    );
}

#[test]
fn pong_frames_keep_a_client_alive() {
    let server = Server::start(json!({"limits": {"idle_timeout_s": 1, "ping_interval_s": 1}}));
    let mut raw = RawWs::open(server.port());
    // Unsolicited pongs (any frame counts) every 150 ms for twice the idle
    // timeout: never closed.
    raw.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let until = Instant::now() + Duration::from_millis(2000);
    let mut received = Vec::new();
    let mut chunk = [0u8; 256];
    while Instant::now() < until {
        raw.send(&frame(true, 0xA, b""));
        match raw.stream.read(&mut chunk) {
            Ok(0) => panic!("closed although the client kept sending"),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
        let mut used = 0;
        while let Some((got, n)) = parse_server_frame(&received[used..]) {
            assert_ne!(got.opcode, 0x8, "closed: {:?}", got.close_code());
            used += n;
        }
        received.drain(..used);
        std::thread::sleep(Duration::from_millis(150));
    }
    raw.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    raw.send_text(r#"{"event":"ping"}"#);
    assert_eq!(raw.recv_json()["event"], "pong");
}

#[test]
fn sigterm_closes_clients_1001_and_exits_0() {
    let mut server = Server::start(json!({}));
    let token = mint_valid("t", &[], &[], 600);
    let (mut a, _) = open_authed(server.port(), &token);
    let (mut b, _) = open(server.port());
    let mut raw = RawWs::open(server.port());
    server.sigterm();
    assert_eq!(expect_close(&mut a), 1001);
    assert_eq!(expect_close(&mut b), 1001);
    assert_eq!(raw.expect_close(), 1001);
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("tether did not exit after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(status.code(), Some(0));
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(("127.0.0.1", server.port())).is_err());
}

#[test]
fn sigterm_with_no_clients_exits_0_quickly() {
    let mut server = Server::start(json!({}));
    // Served once, so the event loop (and its signal handling) is running.
    assert_serving(server.port());
    let started = Instant::now();
    let status = server.stop();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn slow_reader_does_not_slow_others() {
    // A client that publishes into a room whose other member never reads:
    // the member is cut off (4009) and the publisher keeps being served.
    let server = Server::start(json!({"limits": {
        "max_message_bytes": 16384,
        "max_outbound_bytes": 32768,
        "max_messages_per_minute": 1000
    }}));
    let port = server.port();
    let (mut publisher, _) = open_authed(port, &mint_valid("pub", &["publish"], &["r"], 600));
    let mut sleeper = RawWs::connect(
        port,
        &[(
            "Authorization",
            &format!("Bearer {}", mint_valid("zz", &[], &["r"], 600)),
        )],
    );
    // The sleeper never reads.
    let payload = "p".repeat(15000);
    let mut delivered_zero = false;
    let started = Instant::now();
    for _ in 0..400 {
        let reply = request(
            &mut publisher,
            &json!({"event": "publish", "data": {"room": "r", "event": "e", "data": payload}}),
        );
        assert_eq!(reply["event"], "published", "{reply}");
        if reply["data"]["delivered"] == 0 {
            delivered_zero = true;
            break;
        }
    }
    assert!(delivered_zero, "the slow reader was never cut off");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(sleeper.expect_close(), 4009);
    assert_pong(&mut publisher);
}

#[test]
fn first_frame_pipelined_with_the_upgrade_request() {
    let (mut server, mut bystander) = setup();
    let port = server.port();
    let mut bytes = upgrade_request(port, "/", &[]).into_bytes();
    bytes.extend(frame(true, 0x1, br#"{"event":"ping","requestId":"early"}"#));
    let mut stream = tcp(port);
    stream.write_all(&bytes).unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    let (head_end, frames) = loop {
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
        if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = &answer[at + 4..];
            let mut frames = Vec::new();
            let mut used = 0;
            while let Some((f, n)) = parse_server_frame(&rest[used..]) {
                frames.push(f);
                used += n;
            }
            if frames.len() >= 2 {
                break (at, frames);
            }
        }
    };
    assert!(answer[..head_end].starts_with(b"HTTP/1.1 101"));
    let first: serde_json::Value = serde_json::from_slice(&frames[0].payload).unwrap();
    let second: serde_json::Value = serde_json::from_slice(&frames[1].payload).unwrap();
    assert_eq!(first["event"], "connected");
    assert_eq!(second["event"], "pong");
    assert_eq!(second["requestId"], "early");
    assert_undisturbed(&mut server, &mut bystander);
}

#[test]
fn handshake_sent_byte_by_byte() {
    let (mut server, mut bystander) = setup();
    let port = server.port();
    let request = upgrade_request(port, "/slow", &[]);
    let mut stream = tcp(port);
    for b in request.as_bytes() {
        stream.write_all(&[*b]).unwrap();
    }
    let line = read_status_line(&mut stream);
    assert_eq!(status_of(&line), Some(101), "{line:?}");
    assert_undisturbed(&mut server, &mut bystander);
}

#[test]
fn sigint_also_stops_cleanly() {
    let mut server = Server::start(json!({}));
    let (mut ws, _) = open(server.port());
    server.signal(libc::SIGINT);
    assert_eq!(expect_close(&mut ws), 1001);
    let status = server.wait_exit(Duration::from_secs(5)).expect("exit");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigterm_right_after_listening_exits_0() {
    for _ in 0..10 {
        let mut server = Server::start(json!({}));
        let status = server.stop();
        assert_eq!(status.code(), Some(0), "{status:?}");
    }
}

/// One round of every kind of abuse, from many connections at once. Writes
/// ignore errors: the server may cut a connection off mid-way, as it should.
fn abuse_round(port: u16) {
    let mut held = Vec::new();
    for i in 0..40 {
        let upgrade = upgrade_request(port, "/", &[]).into_bytes();
        let bytes: Vec<u8> = match i % 5 {
            // Garbage instead of a request.
            0 => vec![0xff; 3000],
            // A request head that never ends.
            1 => format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(6000)).into_bytes(),
            // A frame header announcing 1 GiB, then a little of it.
            2 => {
                let mut b = upgrade;
                b.extend_from_slice(&[0x82, 0xff]);
                b.extend_from_slice(&(1u64 << 30).to_be_bytes());
                b.extend_from_slice(&MASK);
                b.extend_from_slice(&[0u8; 900]);
                b
            }
            // Fragments that add up to more than the message limit.
            3 => {
                let mut b = upgrade;
                b.extend(frame(false, 0x1, &[b'a'; 500]));
                for _ in 0..4 {
                    b.extend(frame(false, 0x0, &[b'a'; 500]));
                }
                b
            }
            // A half-sent frame, left hanging until the round ends.
            _ => {
                let mut b = upgrade;
                b.extend_from_slice(&frame(true, 0x1, &[b'x'; 800])[..400]);
                b
            }
        };
        let mut s = tcp(port);
        let _ = s.write_all(&bytes);
        if i % 5 == 4 {
            held.push(s);
        } else {
            let _ = s.shutdown(Shutdown::Write);
            let mut sink = [0u8; 512];
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = s.read(&mut sink);
        }
    }
    drop(held);
}

#[test]
fn memory_stays_flat_under_repeated_abuse() {
    // Per-address limits would refuse most of it from 127.0.0.1 before any
    // frame is parsed: lift them so every kind of abuse reaches the decoder.
    let mut server = Server::start(json!({"limits": {
        "max_message_bytes": 1024,
        "max_outbound_bytes": 4096,
        "max_connections_per_ip": 1000,
        "max_connects_per_ip_per_hour": 100000
    }}));
    let port = server.port();
    let (mut bystander, _) = open(port);
    // Warm up: pools and the allocator reach their working size.
    for _ in 0..3 {
        abuse_round(port);
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(server.pid());
    for _ in 0..15 {
        abuse_round(port);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kib(server.pid());
    eprintln!("server RSS: {before} KiB before, {after} KiB after 600 abusive connections");
    // 600 abusive connections more must not cost more than a little noise.
    assert!(
        after <= before + 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert_undisturbed(&mut server, &mut bystander);
}
