//! permessage-deflate (RFC 7692, SPEC §12) from outside: negotiation, the
//! RSV1 rules, a decompression bomb, `min_bytes`, a broadcast compressed
//! once, and the Python `websockets` and Node `ws` clients with compression on.

mod common;

use common::node::node_ws;
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

const OFFER: &str = "permessage-deflate; client_max_window_bits";
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
const RSV1: u8 = 0x40;

fn compression(enabled: bool, min_bytes: usize) -> Value {
    json!({"server": {"websocket": {"compression": {"enabled": enabled, "min_bytes": min_bytes}}}})
}

/// A raw client that reads frames with RSV1 (common's `RawWs` refuses them).
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One server frame: its first header byte (FIN, RSV1, opcode) and payload.
struct Frame {
    first: u8,
    payload: Vec<u8>,
}

impl Frame {
    fn compressed(&self) -> bool {
        self.first & RSV1 != 0
    }

    /// The message's JSON, inflated when compressed.
    fn json(&self) -> Value {
        let bytes = if self.compressed() {
            inflate(&self.payload)
        } else {
            self.payload.clone()
        };
        serde_json::from_slice(&bytes).expect("a JSON message")
    }
}

/// Upgrades with `extensions` offered; returns the client and the answer's
/// `Sec-WebSocket-Extensions` value.
fn upgrade(port: u16, path: &str, extensions: Option<&str>) -> (Client, Option<String>) {
    let extra: Vec<(&str, &str)> = extensions
        .map(|e| ("Sec-WebSocket-Extensions", e))
        .into_iter()
        .collect();
    let mut stream = tcp(port);
    stream
        .write_all(upgrade_request(port, path, &extra).as_bytes())
        .unwrap();
    let mut client = Client {
        stream,
        buf: Vec::new(),
    };
    let head = loop {
        if let Some(at) = client.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = client.buf.drain(..at + 4).collect();
            break String::from_utf8(head).unwrap();
        }
        assert!(client.fill(), "closed during the handshake");
    };
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let answer = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("Sec-WebSocket-Extensions")
            .then(|| value.trim().to_string())
    });
    (client, answer)
}

impl Client {
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next frame other than a ping, or `None` once the server closed.
    fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                if frame.first & 0x0f != 0x9 {
                    return Some(frame);
                }
                continue;
            }
            if !self.fill() {
                return None;
            }
        }
    }

    fn send_frame(&mut self, first: u8, payload: &[u8]) {
        let mut bytes = frame(true, first & 0x0f, payload);
        bytes[0] = first;
        self.stream.write_all(&bytes).unwrap();
    }

    /// Sends a JSON message, compressed (RSV1) or not.
    fn send_json(&mut self, value: &Value, compressed: bool) {
        let text = value.to_string();
        if compressed {
            self.send_frame(0x81 | RSV1, &deflate(text.as_bytes()));
        } else {
            self.send_frame(0x81, text.as_bytes());
        }
    }

    /// The code of the close frame that ends the stream.
    fn close_code(&mut self) -> u16 {
        loop {
            let frame = self.next().expect("a close frame before the end");
            if frame.first & 0x0f == 0x8 {
                return u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
            }
        }
    }
}

fn parse(buf: &[u8]) -> Option<(Frame, usize)> {
    let (len, header) = match *buf.get(1)? & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(header..header + len)?.to_vec();
    Some((
        Frame {
            first: buf[0],
            payload,
        },
        header + len,
    ))
}

/// A message compressed as one deflate stream ending in a final block
/// (RFC 7692 §7.2.3.4: a valid way to end a message).
fn deflate(raw: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec(raw, 6)
}

/// RFC 7692 §7.2.2: the message with the sync-flush tail put back, then an
/// empty final block so that a one-shot inflate sees the stream end.
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut stream = payload.to_vec();
    stream.extend_from_slice(&[0x00, 0x00, 0xff, 0xff, 0x03, 0x00]);
    miniz_oxide::inflate::decompress_to_vec(&stream).expect("a deflate stream")
}

#[test]
fn negotiation_variants() {
    let server = Server::start(compression(true, 256));
    let port = server.port();
    let answer_with_bits = |bits: u8| Some(format!("{ANSWER}; server_max_window_bits={bits}"));
    let cases: Vec<(Option<&str>, Option<String>)> = vec![
        (None, None),
        (Some("permessage-deflate"), Some(ANSWER.to_string())),
        (Some(OFFER), Some(ANSWER.to_string())),
        (
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=10; client_max_window_bits=12",
            ),
            answer_with_bits(10),
        ),
        // Several offers: the first acceptable one wins.
        (
            Some(
                "x-webkit-deflate-frame, permessage-deflate; x-unknown, \
                 permessage-deflate; server_max_window_bits=\"12\", permessage-deflate",
            ),
            answer_with_bits(12),
        ),
        // Malformed offers are declined; the upgrade still succeeds.
        (Some("permessage-deflate; server_max_window_bits=99"), None),
        (Some("permessage-deflate; server_max_window_bits"), None),
        (Some("permessage-deflate;;=;\"; ,,"), None),
        (Some("x-webkit-deflate-frame"), None),
    ];
    for (offer, expected) in cases {
        let (mut client, answer) = upgrade(port, "/", offer);
        assert_eq!(answer, expected, "offer {offer:?}");
        assert_eq!(client.next().unwrap().json()["event"], "connected");
    }
    // Off (the default): an offer is ignored.
    let off = Server::start(json!({}));
    let (_, answer) = upgrade(off.port(), "/", Some(OFFER));
    assert_eq!(answer, None);
}

#[test]
fn rsv1_is_a_protocol_error_where_not_negotiated_and_on_continuations() {
    let server = Server::start(compression(true, 256));
    // No offer: RSV1 on a text frame closes 1002.
    let (mut client, _) = upgrade(server.port(), "/", None);
    client.next().unwrap();
    client.send_frame(0x81 | RSV1, &deflate(b"{\"event\":\"ping\"}"));
    assert_eq!(client.close_code(), 1002);
    // Negotiated: RSV1 on a continuation frame, and on a ping, close 1002.
    for (first, second) in [(0x01u8, 0x80 | RSV1), (0x89 | RSV1, 0x80)] {
        let (mut client, answer) = upgrade(server.port(), "/", Some(OFFER));
        assert!(answer.is_some());
        client.next().unwrap();
        client.send_frame(first, b"{");
        client.send_frame(second, b"}");
        assert_eq!(client.close_code(), 1002, "{first:#x} then {second:#x}");
    }
}

#[test]
fn a_bomb_closes_1009_at_once_and_memory_stays_flat() {
    let server = Server::start(compression(true, 256));
    // 48 MiB of zeros deflate to about 48 KiB: within the 64 KiB frame limit.
    let bomb = deflate(&vec![0u8; 48 << 20]);
    assert!(bomb.len() < 65_536, "{}", bomb.len());
    let warm = |n: usize| {
        for _ in 0..n {
            let (mut client, _) = upgrade(server.port(), "/", Some(OFFER));
            client.next().unwrap();
            let started = Instant::now();
            client.send_frame(0x82 | RSV1, &bomb);
            assert_eq!(client.close_code(), 1009);
            assert!(started.elapsed() < Duration::from_secs(2), "not prompt");
        }
    };
    warm(2);
    let before = rss_kib(server.pid());
    warm(20);
    let after = rss_kib(server.pid());
    assert!(
        after < before + 4 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert_serving(server.port());
}

fn metric(port: u16, name: &str) -> u64 {
    let mut stream = tcp(port);
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {answer}"))
}

fn health_port(server: &Server) -> u16 {
    let marker = "health endpoints on http://127.0.0.1:";
    assert!(server.wait_log(marker, Duration::from_secs(5)));
    let logs = server.logs();
    logs.iter().find_map(|l| port_after(l, marker)).unwrap()
}

fn authed(port: u16, token: &str) -> Client {
    let (mut client, answer) = upgrade(port, &format!("/?token={token}"), Some(OFFER));
    assert_eq!(answer.as_deref(), Some(ANSWER));
    for event in ["connected", "authenticated"] {
        let frame = client.next().unwrap();
        assert_eq!(frame.json()["event"], event);
        if event == "connected" {
            assert!(!frame.compressed(), "under min_bytes: sent plain");
        }
    }
    client
}

#[test]
fn min_bytes_and_a_broadcast_compressed_once() {
    let mut settings = compression(true, 256);
    merge(
        &mut settings,
        json!({"limits": {"max_connections_per_ip": 10}}),
    );
    let server = Server::start(settings);
    let (port, hp) = (server.port(), health_port(&server));
    let mut listeners: Vec<Client> = (0..5)
        .map(|i| authed(port, &mint_valid(&format!("l{i}"), &[], &["lobby"], 600)))
        .collect();
    let mut publisher = authed(port, &mint_valid("pub", &["publish"], &["lobby"], 600));
    assert_eq!(metric(hp, "tether_compressed_messages_total"), 0);

    let rows: Vec<Value> = (0..40)
        .map(|i| json!({"id": i, "name": format!("player-{i}"), "score": i * 37}))
        .collect();
    let big =
        json!({"event": "publish", "data": {"room": "lobby", "event": "scores", "data": rows}});
    // Sent compressed: the gateway inflates it.
    publisher.send_json(&big, true);
    let reply = publisher.next().unwrap();
    assert!(!reply.compressed(), "a short reply goes plain");
    assert_eq!(reply.json()["data"]["delivered"], 5);
    let mut bodies = Vec::new();
    for listener in &mut listeners {
        let frame = listener.next().unwrap();
        assert!(frame.compressed(), "over min_bytes: compressed");
        assert_eq!(frame.json()["data"], json!(rows));
        bodies.push(frame.payload);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert!(bodies[0].len() * 3 < json!(rows).to_string().len());
    assert_eq!(metric(hp, "tether_compressed_messages_total"), 1);

    // Under min_bytes: plain for everyone, nothing compressed.
    let small = json!({"event": "publish", "data": {"room": "lobby", "event": "hi"}});
    publisher.send_json(&small, false);
    publisher.next().unwrap();
    for listener in &mut listeners {
        let frame = listener.next().unwrap();
        assert!(!frame.compressed());
        assert_eq!(frame.json()["event"], "hi");
    }
    assert_eq!(metric(hp, "tether_compressed_messages_total"), 1);
}

const BIG_DATA_LEN: usize = 60;

#[test]
fn python_websockets_client_with_compression() {
    let server = Server::start(compression(true, 64));
    let script = r#"
import asyncio, json, sys
from websockets.asyncio.client import connect
async def main(port, t1, t2, n):
    url = "ws://127.0.0.1:%s/?token=" % port
    async with connect(url + t1) as a, connect(url + t2) as b:
        for ws in (a, b):
            names = [e.name for e in ws.protocol.extensions]
            assert names == ["permessage-deflate"], names
            for _ in range(2):
                await ws.recv()
        rows = [{"id": i, "text": "row %d" % i} for i in range(n)]
        await a.send(json.dumps({"event": "publish", "data": {"room": "lobby", "event": "rows", "data": rows}}))
        got = json.loads(await b.recv())
        assert got["data"] == rows, got
        print("python ok")
asyncio.run(main(*sys.argv[1:4], int(sys.argv[4])))
"#;
    let mut python = python3();
    python.args(["-c", script]);
    run_client(python, server.port(), "python ok");
}

/// Runs a client script with the port, a publisher's and a listener's
/// tokens and the row count; it must succeed and print `ok_line`.
fn run_client(mut cmd: Command, port: u16, ok_line: &str) {
    let t1 = mint_valid("a", &["publish"], &["lobby"], 600);
    let t2 = mint_valid("b", &[], &["lobby"], 600);
    let out = cmd
        .args([&port.to_string(), &t1, &t2])
        .arg(BIG_DATA_LEN.to_string())
        .output()
        .expect("run a client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(ok_line),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn node_ws_client_with_compression() {
    let server = Server::start(compression(true, 64));
    let script = r#"
const WebSocket = require("ws");
const [port, t1, t2, n] = process.argv.slice(1);
const url = `ws://127.0.0.1:${port}/?token=`;
const open = (t) => new Promise((ok, fail) => {
  const ws = new WebSocket(url + t, { perMessageDeflate: { threshold: 0 } });
  const queue = [];
  ws.on("message", (m) => queue.push(JSON.parse(m.toString())));
  ws.on("open", () => ok({ ws, queue }));
  ws.on("error", fail);
});
const next = async (c) => { while (!c.queue.length) await new Promise((r) => setTimeout(r, 5)); return c.queue.shift(); };
(async () => {
  const a = await open(t1), b = await open(t2);
  for (const c of [a, b]) {
    if (!c.ws.extensions.includes("permessage-deflate")) throw new Error("not negotiated: " + c.ws.extensions);
    await next(c); await next(c);
  }
  const rows = Array.from({ length: Number(n) }, (_, i) => ({ id: i, text: `row ${i}` }));
  a.ws.send(JSON.stringify({ event: "publish", data: { room: "lobby", event: "rows", data: rows } }));
  const got = await next(b);
  if (JSON.stringify(got.data) !== JSON.stringify(rows)) throw new Error("wrong rows");
  console.log("node ok");
  process.exit(0);
})().catch((e) => { console.error(e); process.exit(1); });
"#;
    let mut node = Command::new("node");
    node.args(["-e", script, "--"])
        .env("NODE_PATH", node_ws().join("node_modules"));
    run_client(node, server.port(), "node ok");
}
