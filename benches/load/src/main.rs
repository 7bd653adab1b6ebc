//! tether-load: a one-thread WebSocket load generator for benches/run.sh.
//!
//! It sends raw, pre-masked frames (built once at start), parses the server's
//! frames in place, and does no allocation per message: a connection's
//! outgoing data is "so many bytes of a repeated frame" plus a small reusable
//! buffer for the odd pong or host reply. Every scenario prints one JSON line
//! with its figures, the server's CPU time per message (from /proc/PID/stat)
//! and the load tool's own CPU use, so a saturated load tool is visible.
//!
//! Scenarios:
//!   echo       N connections, D messages in flight each, count echoes
//!   idle       N connections held open for a while, then each verified alive
//!   broadcast  one publisher (or a tether host) and N subscribers; per round,
//!              the latency of every delivery and the time until the last one
//!   rpc        tether only: clients send requests a host (this tool) answers;
//!              with `--bridged` a host of the gateway's `hosts` settings (a
//!              program or an HTTP backend, SPEC §11) answers instead
//!   handshakes N connection attempts in parallel, each closed (and replaced)
//!              as soon as its WebSocket upgrade is answered: new connections
//!              per second, each with a full TLS handshake over wss://
//!   throughput one publisher sending at rising rates to N subscribers (on
//!              `--addr2` when given: cross-node); the highest rate at which
//!              every subscriber got every message and kept up
//!
//! Clusters (benches/cluster.sh): `--addr2` is a second node; broadcast
//! splits its subscribers over both nodes (the publisher stays on `--addr`),
//! and `--pid2`/`--redis-pid` add the second node's and Redis's CPU to the
//! JSON line. `--room` (tether) and `--socketio` make subscribers join a room
//! first (see `Join`) and count only that room's messages as deliveries.
//!
//! `--deflate`: clients (not the publisher or host) offer permessage-deflate,
//! fail unless the server agrees, and send their messages compressed (one
//! frame compressed at start, see `deflate`); the JSON line then says how
//! many WebSocket bytes (frame headers and payloads, before TLS) each
//! message took each way and how many arrived compressed.
//!
//! Only loopback targets are accepted. With `--addr wss://127.0.0.1:PORT` every
//! connection runs a rustls `ClientConnection` (ring provider, no session
//! resumption) on its non-blocking socket: one socket read of up to 256 KiB is
//! fed to rustls record by record and the plaintext parsed in place; outgoing
//! frames are handed to rustls in large slices of the repeated frame and its
//! sealed records written with one (vectored) `write_tls` call at a time.
//! rustls itself still allocates per TLS record (a sealed record, a received
//! plaintext chunk), never per WebSocket message of this tool.

mod deflate;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, IpAddr as PkiIp, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: tether-load SCENARIO --addr [ws://|wss://]127.0.0.1:PORT [options]
scenarios: echo | idle | broadcast | rpc | handshakes | throughput
  --ca FILE          wss: trust the PEM certificate(s) in FILE (a CA or the server's own)
  --insecure         wss: accept any server certificate (loopback benchmarking only)
  --conns N          connections (echo, idle, rpc), subscribers (broadcast) or
                     connection attempts in parallel (handshakes) [100]
  --pid PID          server process to measure (CPU, RSS)
  --inflight D       messages in flight per connection (echo, rpc) [8]
  --size B           payload bytes of generated messages [32]
  --text S           use S as the message payload instead of B bytes of 'x'
  --text-file F      use the contents of F as the message payload
  --json-data        tether: the payload is JSON, put in host.broadcast's data as it is
  --deflate          clients offer permessage-deflate (required) and send compressed
  --warmup S         seconds before measuring (echo, rpc, handshakes) [1]
  --secs S           seconds measured (echo, rpc, handshakes) or held (idle) [5]
  --rounds R         broadcast rounds [50]
  --gap-ms MS        pause between broadcast rounds [20]
  --path P           request path for clients and subscribers [/]
  --pub-path P       request path of the publisher or host [/pub]
  --tether           broadcast/rpc through tether's host link (--pub-path carries the host token)
  --bridged          rpc: no host link from this tool; a bridged host serves --event
  --event NAME       rpc: the event the clients request [rpc]
  --envelope E       event | action: the dialect of the clients' own rpc requests, for a
                     tether listener with that server.websocket.envelope [event]
  --src-ips K        spread connections over source addresses 127.0.0.2..(2+K) [8]
  --max-pending N    connection attempts in progress at once [256]
  --addr2 ADDR       a second node (broadcast: half the subscribers; throughput: all)
  --pid2 PID         the second node's process (CPU)
  --redis-pid PID    the Redis process (CPU)
  --room R           tether: subscribers subscribe to R, host.broadcast goes to R
  --socketio         Socket.IO v4 over Engine.IO v4 (the paths need
                     /socket.io/?EIO=4&transport=websocket); the publisher emits 'pub'
  --rate R0          throughput: first rate, messages per second [1000]
  --rate-max R       throughput: highest rate tried [400000]
  --step-secs S      throughput: seconds sent at each rate [2]
  --drain-ms MS      throughput: time after a step for the last deliveries [250]
";

// ------------------------------------------------------------------ options

struct Opts {
    scenario: String,
    addr: SocketAddrV4,
    pid: Option<u32>,
    conns: usize,
    inflight: usize,
    size: usize,
    text: Option<String>,
    /// tether: the payload is a JSON value, not a string's contents.
    json_data: bool,
    /// Clients negotiate permessage-deflate and compress what they send.
    deflate: bool,
    warmup: f64,
    secs: f64,
    rounds: usize,
    gap_ms: u64,
    path: String,
    pub_path: String,
    tether: bool,
    /// rpc: the gateway's own bridged host answers (this tool is no host).
    bridged: bool,
    /// rpc: the event requested.
    event: String,
    /// The clients' dialect: `{"event",...}` or the flat `{"action",...}`.
    action_envelope: bool,
    src_ips: u32,
    max_pending: usize,
    tls: bool,
    ca: Option<String>,
    insecure: bool,
    addr2: Option<SocketAddrV4>,
    pid2: Option<u32>,
    redis_pid: Option<u32>,
    room: Option<String>,
    socketio: bool,
    rate: f64,
    rate_max: f64,
    step_secs: f64,
    drain_ms: u64,
}

fn parse_opts(mut args: impl Iterator<Item = String>) -> Result<Opts, String> {
    let scenario = args.next().ok_or(USAGE)?;
    if !matches!(
        scenario.as_str(),
        "echo" | "idle" | "broadcast" | "rpc" | "handshakes" | "throughput"
    ) {
        return Err(USAGE.into());
    }
    let mut o = Opts {
        scenario,
        addr: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        pid: None,
        conns: 100,
        inflight: 8,
        size: 32,
        text: None,
        json_data: false,
        deflate: false,
        warmup: 1.0,
        secs: 5.0,
        rounds: 50,
        gap_ms: 20,
        path: "/".into(),
        pub_path: "/pub".into(),
        tether: false,
        bridged: false,
        event: "rpc".into(),
        action_envelope: false,
        src_ips: 8,
        max_pending: 256,
        tls: false,
        ca: None,
        insecure: false,
        addr2: None,
        pid2: None,
        redis_pid: None,
        room: None,
        socketio: false,
        rate: 1000.0,
        rate_max: 400_000.0,
        step_secs: 2.0,
        drain_ms: 250,
    };
    fn num<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
        v.as_deref()
            .and_then(|s| s.parse().ok())
            .ok_or(format!("{flag}: expected a number"))
    }
    fn loopback(flag: &str, v: Option<String>) -> Result<SocketAddrV4, String> {
        let v = v.unwrap_or_default();
        let rest = v.strip_prefix("ws://").unwrap_or(&v);
        let a: SocketAddrV4 = num(flag, Some(rest.trim_end_matches('/').to_string()))?;
        if !a.ip().is_loopback() {
            return Err(format!("{flag}: only loopback targets are allowed"));
        }
        Ok(a)
    }
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--addr2" => o.addr2 = Some(loopback("--addr2", args.next())?),
            "--pid2" => o.pid2 = Some(num("--pid2", args.next())?),
            "--redis-pid" => o.redis_pid = Some(num("--redis-pid", args.next())?),
            "--room" => o.room = Some(args.next().ok_or("--room: missing")?),
            "--socketio" => o.socketio = true,
            "--rate" => o.rate = num("--rate", args.next())?,
            "--rate-max" => o.rate_max = num("--rate-max", args.next())?,
            "--step-secs" => o.step_secs = num("--step-secs", args.next())?,
            "--drain-ms" => o.drain_ms = num("--drain-ms", args.next())?,
            "--addr" => {
                let v = args.next().unwrap_or_default();
                let rest = if let Some(r) = v.strip_prefix("wss://") {
                    o.tls = true;
                    r
                } else {
                    o.tls = false;
                    v.strip_prefix("ws://").unwrap_or(&v)
                };
                let a: SocketAddrV4 = num("--addr", Some(rest.trim_end_matches('/').to_string()))?;
                if !a.ip().is_loopback() {
                    return Err("--addr: only loopback targets are allowed".into());
                }
                o.addr = a;
            }
            "--pid" => o.pid = Some(num("--pid", args.next())?),
            "--conns" => o.conns = num("--conns", args.next())?,
            "--inflight" => o.inflight = num("--inflight", args.next())?,
            "--size" => o.size = num("--size", args.next())?,
            "--text" => o.text = args.next(),
            "--text-file" => {
                let path = args.next().ok_or("--text-file: missing")?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("--text-file {path}: {e}"))?;
                o.text = Some(text.trim_end().to_string());
            }
            "--json-data" => o.json_data = true,
            "--deflate" => o.deflate = true,
            "--warmup" => o.warmup = num("--warmup", args.next())?,
            "--secs" => o.secs = num("--secs", args.next())?,
            "--rounds" => o.rounds = num("--rounds", args.next())?,
            "--gap-ms" => o.gap_ms = num("--gap-ms", args.next())?,
            "--path" => o.path = args.next().ok_or("--path: missing")?,
            "--pub-path" => o.pub_path = args.next().ok_or("--pub-path: missing")?,
            "--tether" => o.tether = true,
            "--bridged" => o.bridged = true,
            "--event" => o.event = args.next().ok_or("--event: missing")?,
            "--envelope" => {
                o.action_envelope = match args.next().as_deref() {
                    Some("event") => false,
                    Some("action") => true,
                    _ => return Err("--envelope: expected event or action".into()),
                }
            }
            "--src-ips" => o.src_ips = num("--src-ips", args.next())?,
            "--max-pending" => o.max_pending = num("--max-pending", args.next())?,
            "--ca" => o.ca = Some(args.next().ok_or("--ca: missing")?),
            "--insecure" => o.insecure = true,
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    if o.addr.port() == 0 {
        return Err(format!("--addr is required\n{USAGE}"));
    }
    if o.tls && o.ca.is_none() && !o.insecure {
        return Err("wss:// needs --ca FILE or --insecure".into());
    }
    if !o.tls && (o.ca.is_some() || o.insecure) {
        return Err("--ca and --insecure are for wss:// addresses".into());
    }
    if o.inflight == 0 || o.conns == 0 || o.src_ips > 250 {
        return Err("--conns and --inflight must be at least 1, --src-ips at most 250".into());
    }
    if o.tls && o.addr2.is_some() {
        return Err("--addr2 is for ws:// clusters".into());
    }
    if !o
        .event
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err("--event: letters, digits, '.', '_' and '-' only".into());
    }
    if o.socketio && (o.tether || o.room.is_some()) {
        return Err("--socketio excludes --tether and --room".into());
    }
    if o.room.as_deref().is_some_and(|r| {
        !r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }) {
        return Err("--room: letters, digits, '_' and '-' only".into());
    }
    if !(o.rate >= 1.0 && o.rate_max >= o.rate && o.step_secs > 0.0) {
        return Err(
            "--rate must be at least 1, --rate-max at least --rate, --step-secs above 0".into(),
        );
    }
    Ok(o)
}

// ------------------------------------------------------------------ tls

/// `--insecure`: any certificate is accepted, but the handshake signatures
/// are still checked (the key exchange is real, only the identity is not).
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client configuration for wss://: ring, TLS 1.3 and 1.2, no session
/// resumption (every connection does a full handshake).
fn tls_config(o: &Opts) -> Result<Arc<ClientConfig>, String> {
    // AES-128-GCM first, as browsers order it (ring's default puts AES-256
    // first); the server picks, and the JSON line of `handshakes` names it.
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let mut config = if o.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth()
    } else {
        let path =
            o.ca.as_deref()
                .ok_or("wss:// needs --ca FILE or --insecure")?;
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("--ca {path}: {e}"))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("--ca {path}: {e}"))?;
            roots.add(cert).map_err(|e| format!("--ca {path}: {e}"))?;
        }
        if roots.is_empty() {
            return Err(format!("--ca {path}: no certificate in the file"));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

// ------------------------------------------------------------------ frames

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Appends one masked client frame (FIN set) to `out`.
fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    push_frame_with(out, 0x80 | opcode, payload);
}

/// Appends one masked client frame whose first header byte is `first`.
fn push_frame_with(out: &mut Vec<u8>, first: u8, payload: &[u8]) {
    out.push(first);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i & 3]));
}

/// A frame repeated enough times that one `write` can carry a full window.
struct Repeated {
    bytes: Vec<u8>,
    frame_len: usize,
}

impl Repeated {
    /// `compressed`: the frame carries `payload` deflated, with RSV1 set.
    fn new(opcode: u8, payload: &[u8], copies: usize, compressed: bool) -> Repeated {
        let mut one = Vec::new();
        if compressed {
            push_frame_with(
                &mut one,
                0x80 | deflate::RSV1 | opcode,
                &deflate::compress(payload),
            );
        } else {
            push_frame(&mut one, opcode, payload);
        }
        let frame_len = one.len();
        let copies = copies.max(1).max(4096 / frame_len.max(1));
        Repeated {
            bytes: one.repeat(copies),
            frame_len,
        }
    }
}

// ------------------------------------------------------------------ stats

/// Log-linear histogram of microseconds: exact below 2048 µs, then 64
/// sub-buckets per power of two. Fixed size; recording never allocates.
struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Hist {
    const LINEAR: u64 = 2048;
    fn new() -> Hist {
        Hist {
            counts: vec![0; 2048 + 64 * 54],
            total: 0,
            max: 0,
        }
    }
    fn index(us: u64) -> usize {
        if us < Self::LINEAR {
            return us as usize;
        }
        let bit = 63 - us.leading_zeros() as u64; // >= 11
        let sub = (us >> (bit - 6)) & 63;
        (Self::LINEAR + (bit - 11) * 64 + sub) as usize
    }
    fn value(index: usize) -> u64 {
        let i = index as u64;
        if i < Self::LINEAR {
            return i;
        }
        let bit = (i - Self::LINEAR) / 64 + 11;
        let sub = (i - Self::LINEAR) % 64;
        (1 << bit) + (sub << (bit - 6))
    }
    fn record(&mut self, us: u64) {
        let i = Self::index(us).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.total += 1;
        self.max = self.max.max(us);
    }
    fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.total = 0;
        self.max = 0;
    }
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i);
            }
        }
        self.max
    }
}

/// CPU time (user + system) of a process in microseconds, from /proc.
fn cpu_us(pid: Option<u32>) -> u64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".into(),
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return 0;
    };
    // Fields after the command name (which may hold spaces) start at ") ".
    let Some(rest) = text.rfind(')').map(|i| &text[i + 2..]) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|s| s.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000 / hz
}

/// Resident set size of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

// ------------------------------------------------------------------ connections

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Echo client, broadcast subscriber or rpc client.
    Client,
    /// Broadcast publisher (peer) or tether host (broadcast, rpc).
    Pub,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Connecting,
    Handshake,
    Open,
    Dead,
}

struct Conn {
    sock: TcpStream,
    role: Role,
    st: St,
    /// Handshake request bytes, pongs, host replies: written before `owed`.
    out: Vec<u8>,
    out_off: usize,
    /// Bytes of the repeated frame still to write, and where in it we are.
    owed: usize,
    pos: usize,
    /// HTTP response head collected during the handshake.
    head: Vec<u8>,
    // Frame parser state.
    hdr: [u8; 14],
    hdr_len: usize,
    skip: u64,
    op: u8,
    fin: bool,
    /// Messages received (complete text/binary messages).
    recv: u64,
    /// Send times (ns since start) of messages in flight, as a ring.
    ring: Box<[u64]>,
    ring_head: usize,
    ring_len: usize,
    /// Broadcast: got this round's message.
    got: bool,
    dirty: bool,
    /// Registered for writable events (only while a write is blocked).
    wants_write: bool,
    /// wss://: the TLS session on `sock`.
    tls: Option<Box<ClientConnection>>,
    /// When the connection was started (ns since start).
    t_open: u64,
    /// The first bytes of the message being received (`Join` modes read them).
    lead: [u8; LEAD],
    lead_len: usize,
    /// Joined: the room (tether) or the namespace (Socket.IO) answered.
    ready: bool,
}

/// Bytes of a message's start kept for `classify`.
const LEAD: usize = 24;

/// How subscribers (and a Socket.IO publisher) join before a broadcast:
/// what they send once open, and how their messages read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Join {
    /// Any message counts as a delivery (the plain peers, tether to everyone).
    Nothing,
    /// tether: `subscribe` to the room; `subscribed` marks ready, and only
    /// the room's `{"event":"b",...}` messages count.
    TetherRoom,
    /// Socket.IO: "40" connects to the main namespace, whose "40{...}" answer
    /// marks ready; Engine.IO pings "2" get the pong "3"; only events
    /// ("42[...]") count.
    SocketIo,
}

/// What one received message is to a `Join` mode, from its first bytes.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Delivery,
    Ready,
    Ping,
    Other,
}

fn classify(join: Join, lead: &[u8]) -> Kind {
    match join {
        Join::Nothing => Kind::Delivery,
        Join::TetherRoom if lead.starts_with(b"{\"event\":\"b\",") => Kind::Delivery,
        Join::TetherRoom if lead.starts_with(b"{\"event\":\"subscribed\"") => Kind::Ready,
        Join::TetherRoom => Kind::Other,
        Join::SocketIo if lead.starts_with(b"42") => Kind::Delivery,
        Join::SocketIo if lead.starts_with(b"40") => Kind::Ready,
        Join::SocketIo if lead == b"2" => Kind::Ping,
        Join::SocketIo => Kind::Other,
    }
}

impl Conn {
    /// Hands `bytes` to the socket, or (wss) to rustls once the records it
    /// already sealed are written: `WouldBlock` while they cannot be.
    fn write_out(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return self.sock.write(bytes);
        };
        while tls.wants_write() {
            tls.write_tls(&mut self.sock)?;
        }
        match tls.writer().write(bytes)? {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }
}

/// What a complete server frame means to the scenario.
enum Got {
    Message,
    Nothing,
}

/// Opens a non-blocking TCP connection from `src` (any port) to `dst`,
/// with SO_LINGER 0 so that closing leaves no TIME_WAIT behind.
fn connect_from(src: Option<Ipv4Addr>, dst: SocketAddrV4) -> io::Result<TcpStream> {
    // SAFETY: plain socket system calls on a descriptor we own; every
    // pointer passed points to a live local of the stated size.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let setopt = |level, name, val: *const libc::c_void, len| {
            libc::setsockopt(fd, level, name, val, len as libc::socklen_t)
        };
        setopt(
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>(),
        );
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        setopt(
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>(),
        );
        if let Some(src) = src {
            // Let connect() pick the port per destination (no bind-time port).
            setopt(
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>(),
            );
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(src).to_be(),
                },
                sin_zero: [0; 8],
            };
            if libc::bind(
                fd,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: dst.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*dst.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(TcpStream::from_std(stream))
    }
}

struct Load {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    rbuf: Vec<u8>,
    scratch: Vec<u8>,
    start: Instant,
    now_ns: u64,
    rep: Repeated,
    addr: SocketAddrV4,
    src_ips: u32,
    dirty: Vec<usize>,
    /// Connections with replies to answer this pass (echo/rpc refill).
    refill: Vec<(usize, u32)>,
    hist: Hist,
    opened: usize,
    failed: usize,
    /// Messages received by clients since the counters were reset.
    total: u64,
    /// Refill echoes/requests as they come back.
    keep_inflight: bool,
    /// Record per-message latency from the ring.
    timing: bool,
    /// Broadcast round in progress: start time and deliveries so far.
    round_t0: Option<u64>,
    delivered: usize,
    first_delivery_ns: u64,
    last_delivery_ns: u64,
    /// Tether host link: answer host.request, count host.registered.
    tether_host: bool,
    /// wss://: the client configuration and the name the server must prove.
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// wss: decrypted bytes of one read.
    pbuf: Vec<u8>,
    tls_errors: u64,
    host_ready: bool,
    host_replies: u64,
    /// rpc: error answers among the clients' messages (counted when
    /// `watch_errors`, from each message's first bytes).
    errors: u64,
    watch_errors: bool,
    /// Where subscribers connect, in turn (the publisher uses `addr`).
    client_addrs: Vec<SocketAddrV4>,
    join: Join,
    /// Sent by every subscriber once open (`Join` modes), and by a
    /// Socket.IO publisher.
    join_msg: Vec<u8>,
    /// Subscribers whose join was answered; the Socket.IO publisher's.
    ready_count: usize,
    pub_ready: bool,
    /// `--deflate`: clients offer permessage-deflate and need it agreed.
    deflate: bool,
    /// Client WebSocket bytes received (frames, after the upgrade), and the
    /// messages among them that arrived compressed (RSV1).
    rx_bytes: u64,
    rx_compressed: u64,
}

impl Load {
    fn new(o: &Opts, rep: Repeated) -> Result<Load, String> {
        let tls = if o.tls {
            let name = ServerName::IpAddress(PkiIp::from(std::net::IpAddr::V4(*o.addr.ip())));
            Some((tls_config(o)?, name))
        } else {
            None
        };
        Ok(Load {
            tls,
            pbuf: vec![0; 64 * 1024],
            tls_errors: 0,
            poll: Poll::new().map_err(|e| e.to_string())?,
            events: Events::with_capacity(4096),
            conns: Vec::new(),
            rbuf: vec![0; 256 * 1024],
            scratch: Vec::with_capacity(256),
            start: Instant::now(),
            now_ns: 0,
            rep,
            addr: o.addr,
            src_ips: o.src_ips,
            dirty: Vec::new(),
            refill: Vec::new(),
            hist: Hist::new(),
            opened: 0,
            failed: 0,
            total: 0,
            keep_inflight: false,
            timing: false,
            round_t0: None,
            delivered: 0,
            first_delivery_ns: 0,
            last_delivery_ns: 0,
            tether_host: false,
            host_ready: false,
            host_replies: 0,
            errors: 0,
            watch_errors: false,
            client_addrs: vec![o.addr],
            join: Join::Nothing,
            join_msg: Vec::new(),
            ready_count: 0,
            pub_ready: false,
            deflate: o.deflate,
            rx_bytes: 0,
            rx_compressed: 0,
        })
    }

    fn clock(&mut self) {
        self.now_ns = self.start.elapsed().as_nanos() as u64;
    }

    /// Starts one connection; it completes its handshake inside `turn`.
    fn open(&mut self, role: Role, path: &str, ring: usize) -> io::Result<()> {
        self.open_at(None, role, path, ring)
    }

    /// Starts one connection in slot `at` (replacing a retired one) or in a
    /// new slot.
    fn open_at(
        &mut self,
        at: Option<usize>,
        role: Role,
        path: &str,
        ring: usize,
    ) -> io::Result<()> {
        let i = at.unwrap_or(self.conns.len());
        let src = (self.src_ips > 0)
            .then(|| Ipv4Addr::new(127, 0, 0, 2 + (i as u32 % self.src_ips) as u8));
        let dst = match role {
            Role::Client => self.client_addrs[i % self.client_addrs.len()],
            Role::Pub => self.addr,
        };
        let mut sock = connect_from(src, dst)?;
        self.poll.registry().register(
            &mut sock,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let offer = match role {
            Role::Client if self.deflate => deflate::OFFER,
            _ => "",
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n",
            dst
        );
        let tls = match &self.tls {
            Some((config, name)) => Some(Box::new(
                ClientConnection::new(config.clone(), name.clone()).map_err(io::Error::other)?,
            )),
            None => None,
        };
        let conn = Conn {
            tls,
            t_open: self.now_ns,
            sock,
            role,
            st: St::Connecting,
            out: request.into_bytes(),
            out_off: 0,
            owed: 0,
            pos: 0,
            head: Vec::new(),
            hdr: [0; 14],
            hdr_len: 0,
            skip: 0,
            op: 0,
            fin: true,
            recv: 0,
            ring: vec![0; ring.max(1)].into_boxed_slice(),
            ring_head: 0,
            ring_len: 0,
            got: false,
            dirty: false,
            wants_write: true,
            lead: [0; LEAD],
            lead_len: 0,
            ready: false,
        };
        match self.conns.get_mut(i) {
            Some(slot) => *slot = conn,
            None => self.conns.push(conn),
        }
        Ok(())
    }

    /// Closes an open connection without counting it as failed (handshakes).
    fn retire(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.st == St::Open {
            self.opened -= 1;
        }
        c.st = St::Dead;
        c.dirty = false;
        let _ = self.poll.registry().deregister(&mut c.sock);
    }

    fn pending(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| matches!(c.st, St::Connecting | St::Handshake))
            .count()
    }

    /// Opens `n` connections, at most `max_pending` in progress at once,
    /// and waits (bounded) until every one is open or failed.
    fn open_many(
        &mut self,
        n: usize,
        role: Role,
        path: &str,
        ring: usize,
        max_pending: usize,
    ) -> Result<(), String> {
        let first = self.conns.len();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut started = 0;
        let mut in_progress = 0;
        while Instant::now() < deadline {
            while started < n && in_progress < max_pending {
                self.open(role, path, ring)
                    .map_err(|e| format!("connect: {e}"))?;
                started += 1;
                in_progress += 1;
            }
            self.turn(Some(Duration::from_millis(10)));
            in_progress = self.conns[first..]
                .iter()
                .filter(|c| matches!(c.st, St::Connecting | St::Handshake))
                .count();
            if started == n && in_progress == 0 {
                let dead = self.conns[first..]
                    .iter()
                    .filter(|c| c.st == St::Dead)
                    .count();
                if dead > 0 {
                    return Err(format!("{dead} of {n} connections failed to open"));
                }
                return Ok(());
            }
        }
        Err(format!(
            "timed out opening connections: {} still pending",
            self.pending()
        ))
    }

    /// One poll pass: read everything ready, refill, write once per dirty connection.
    fn turn(&mut self, timeout: Option<Duration>) {
        // Send what was queued since the last pass before waiting.
        self.flush_dirty();
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        if let Err(e) = self.poll.poll(&mut events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                eprintln!("poll: {e}");
            }
        }
        self.clock();
        for ev in events.iter() {
            let i = ev.token().0;
            if ev.is_writable() && self.conns[i].st == St::Connecting {
                self.conns[i].st = St::Handshake;
                self.mark(i);
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                self.read(i);
            }
            if ev.is_writable() {
                self.mark(i);
            }
        }
        self.events = events;
        let refill = std::mem::take(&mut self.refill);
        for &(i, k) in &refill {
            self.queue_repeated(i, k as usize);
        }
        self.refill = refill;
        self.refill.clear();
        self.flush_dirty();
    }

    /// One write pass over every connection with something to send.
    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            self.flush(i);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    fn mark(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(i);
        }
    }

    /// Queues `k` more copies of the repeated frame on connection `i`.
    fn queue_repeated(&mut self, i: usize, k: usize) {
        let now = self.now_ns;
        let flen = self.rep.frame_len;
        let c = &mut self.conns[i];
        if c.st != St::Open {
            return;
        }
        c.owed += k * flen;
        for _ in 0..k {
            if c.ring_len < c.ring.len() {
                let slot = (c.ring_head + c.ring_len) % c.ring.len();
                c.ring[slot] = now;
                c.ring_len += 1;
            }
        }
        self.mark(i);
    }

    fn kill(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.st != St::Dead {
            if c.st == St::Open {
                self.opened -= 1;
            }
            c.st = St::Dead;
            self.failed += 1;
            let _ = self.poll.registry().deregister(&mut c.sock);
        }
    }

    fn flush(&mut self, i: usize) {
        let flen = self.rep.frame_len;
        let c = &mut self.conns[i];
        c.dirty = false;
        if matches!(c.st, St::Connecting | St::Dead) {
            return;
        }
        loop {
            let at_boundary = c.pos.is_multiple_of(flen);
            let res = if c.out_off < c.out.len() && (at_boundary || c.owed == 0) {
                let (start, end) = (c.out_off, c.out.len());
                let bytes = std::mem::take(&mut c.out);
                let r = c.write_out(&bytes[start..end]);
                c.out = bytes;
                r.map(|n| {
                    c.out_off += n;
                    if c.out_off == c.out.len() {
                        c.out.clear();
                        c.out_off = 0;
                    }
                })
            } else if c.owed > 0 {
                let from = c.pos % flen;
                let len = c.owed.min(self.rep.bytes.len() - from);
                let r = c.write_out(&self.rep.bytes[from..from + len]);
                r.map(|n| {
                    c.owed -= n;
                    c.pos = (c.pos + n) % flen;
                })
            } else if let Some(tls) = c.tls.as_deref_mut().filter(|t| t.wants_write()) {
                // wss: sealed records (handshake, or the last plaintext) left.
                tls.write_tls(&mut c.sock).map(|_| ())
            } else {
                // All written: stop asking for writable events.
                if c.wants_write {
                    c.wants_write = false;
                    let _ =
                        self.poll
                            .registry()
                            .reregister(&mut c.sock, Token(i), Interest::READABLE);
                }
                return;
            };
            match res {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !c.wants_write {
                        c.wants_write = true;
                        let _ = self.poll.registry().reregister(
                            &mut c.sock,
                            Token(i),
                            Interest::READABLE | Interest::WRITABLE,
                        );
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.kill(i),
            }
        }
    }

    fn read(&mut self, i: usize) {
        if self.conns[i].tls.is_some() {
            return self.read_tls(i);
        }
        let mut buf = std::mem::take(&mut self.rbuf);
        loop {
            if self.conns[i].st == St::Dead {
                break;
            }
            match self.conns[i].sock.read(&mut buf) {
                Ok(0) => {
                    self.kill(i);
                    break;
                }
                Ok(n) => {
                    if self.conns[i].st == St::Open {
                        self.on_bytes(i, &buf[..n]);
                    } else {
                        self.on_head(i, &buf[..n]);
                    }
                    if n < buf.len() {
                        // A short read drained the socket; data arriving
                        // later raises a new (edge-triggered) event.
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.kill(i);
                    break;
                }
            }
        }
        self.rbuf = buf;
    }

    /// wss: one socket read at a time, fed to rustls record by record; the
    /// plaintext goes where a plain read's bytes go.
    fn read_tls(&mut self, i: usize) {
        let mut raw = std::mem::take(&mut self.rbuf);
        let mut plain = std::mem::take(&mut self.pbuf);
        'reads: loop {
            if self.conns[i].st == St::Dead {
                break;
            }
            let n = match self.conns[i].sock.read(&mut raw) {
                Ok(0) => {
                    self.kill(i);
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.kill(i);
                    break;
                }
            };
            let mut src = &raw[..n];
            while !src.is_empty() {
                let c = &mut self.conns[i];
                let Some(tls) = c.tls.as_deref_mut() else {
                    break 'reads;
                };
                let step = tls
                    .read_tls(&mut src)
                    .map_err(|e| e.to_string())
                    .and_then(|_| tls.process_new_packets().map_err(|e| e.to_string()));
                if let Err(e) = step {
                    self.tls_errors += 1;
                    if self.tls_errors == 1 {
                        eprintln!("tls: {e}");
                    }
                    self.kill(i);
                    break 'reads;
                }
                loop {
                    let c = &mut self.conns[i];
                    let Some(tls) = c.tls.as_deref_mut() else {
                        break 'reads;
                    };
                    match tls.reader().read(&mut plain) {
                        Ok(0) => {
                            // close_notify
                            self.kill(i);
                            break 'reads;
                        }
                        Ok(m) => {
                            if self.conns[i].st == St::Open {
                                self.on_bytes(i, &plain[..m]);
                            } else {
                                self.on_head(i, &plain[..m]);
                            }
                            if self.conns[i].st == St::Dead {
                                break 'reads;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            self.kill(i);
                            break 'reads;
                        }
                    }
                }
            }
            if n < raw.len() {
                break;
            }
        }
        let c = &self.conns[i];
        if c.st != St::Dead && c.tls.as_ref().is_some_and(|t| t.wants_write()) {
            self.mark(i);
        }
        self.rbuf = raw;
        self.pbuf = plain;
    }

    /// Collects the HTTP response head; bytes after it are frames.
    fn on_head(&mut self, i: usize, data: &[u8]) {
        let c = &mut self.conns[i];
        c.head.extend_from_slice(data);
        let Some(end) = c.head.windows(4).position(|w| w == b"\r\n\r\n") else {
            if c.head.len() > 16 * 1024 {
                self.kill(i);
            }
            return;
        };
        if !c.head.starts_with(b"HTTP/1.1 101") {
            let line = String::from_utf8_lossy(&c.head[..c.head.len().min(80)]).into_owned();
            eprintln!("handshake refused: {}", line.lines().next().unwrap_or(""));
            return self.kill(i);
        }
        if self.deflate && c.role == Role::Client && !deflate::agreed(&c.head[..end]) {
            eprintln!("permessage-deflate was offered and not agreed");
            return self.kill(i);
        }
        let head = std::mem::take(&mut c.head);
        c.st = St::Open;
        self.opened += 1;
        // A tether host registers by itself; everything else joins here.
        let joins = match c.role {
            Role::Client => self.join != Join::Nothing,
            Role::Pub => self.join == Join::SocketIo,
        };
        if joins {
            push_frame(&mut c.out, 0x1, &self.join_msg);
            self.mark(i);
        }
        if head.len() > end + 4 {
            self.on_bytes(i, &head[end + 4..]);
        }
    }

    /// Parses server frames (unmasked) out of `data`, counting messages.
    fn on_bytes(&mut self, i: usize, data: &[u8]) {
        let capture = self.tether_host && self.conns[i].role == Role::Pub;
        let peek = self.join != Join::Nothing || self.watch_errors;
        let client = self.conns[i].role == Role::Client;
        if client {
            self.rx_bytes += data.len() as u64;
        }
        let mut at = 0;
        let mut done_here: u32 = 0;
        while at < data.len() {
            let c = &mut self.conns[i];
            if c.skip > 0 {
                let take = (c.skip as usize).min(data.len() - at);
                if capture {
                    self.scratch.extend_from_slice(&data[at..at + take]);
                }
                if peek && c.lead_len < LEAD {
                    let n = take.min(LEAD - c.lead_len);
                    c.lead[c.lead_len..c.lead_len + n].copy_from_slice(&data[at..at + n]);
                    c.lead_len += n;
                }
                at += take;
                c.skip -= take as u64;
                if c.skip == 0 && self.frame_end(i) {
                    done_here += 1;
                }
                continue;
            }
            // Fast path: a whole small frame header.
            if c.hdr_len == 0 && data.len() - at >= 2 && data[at + 1] & 0x7f < 126 {
                let (b0, len) = (data[at], (data[at + 1] & 0x7f) as u64);
                c.op = b0 & 0x0f;
                c.fin = b0 & 0x80 != 0;
                if c.op != 0 {
                    c.lead_len = 0;
                }
                if client && b0 & deflate::RSV1 != 0 {
                    self.rx_compressed += 1;
                }
                at += 2;
                if capture {
                    self.scratch.clear();
                }
                if len == 0 {
                    if self.frame_end(i) {
                        done_here += 1;
                    }
                } else {
                    self.conns[i].skip = len;
                }
                continue;
            }
            c.hdr[c.hdr_len] = data[at];
            c.hdr_len += 1;
            at += 1;
            if c.hdr_len < 2 {
                continue;
            }
            let need = match c.hdr[1] & 0x7f {
                126 => 4,
                127 => 10,
                _ => 2,
            };
            if c.hdr_len < need {
                continue;
            }
            let len = match need {
                4 => u16::from_be_bytes([c.hdr[2], c.hdr[3]]) as u64,
                10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&c.hdr[2..10]);
                    u64::from_be_bytes(b)
                }
                _ => (c.hdr[1] & 0x7f) as u64,
            };
            c.op = c.hdr[0] & 0x0f;
            c.fin = c.hdr[0] & 0x80 != 0;
            if c.op != 0 {
                c.lead_len = 0;
            }
            if client && c.hdr[0] & deflate::RSV1 != 0 {
                self.rx_compressed += 1;
            }
            c.hdr_len = 0;
            if capture {
                self.scratch.clear();
            }
            if len == 0 {
                if self.frame_end(i) {
                    done_here += 1;
                }
            } else {
                self.conns[i].skip = len;
            }
        }
        if done_here > 0 && self.keep_inflight && self.conns[i].role == Role::Client {
            self.refill.push((i, done_here));
        }
    }

    /// A frame ended; true when it completed a data message of a client.
    fn frame_end(&mut self, i: usize) -> bool {
        let c = &mut self.conns[i];
        match c.op {
            0x9 => {
                // Ping: answer with an (empty) pong.
                push_frame(&mut c.out, 0xA, &[]);
                self.mark(i);
                false
            }
            0x8 => {
                self.kill(i);
                false
            }
            0x0..=0x2 if c.fin => match self.on_message(i) {
                Got::Message => true,
                Got::Nothing => false,
            },
            _ => false,
        }
    }

    fn on_message(&mut self, i: usize) -> Got {
        let now = self.now_ns;
        let c = &mut self.conns[i];
        let kind = classify(self.join, &c.lead[..c.lead_len]);
        if kind == Kind::Ping {
            push_frame(&mut c.out, 0x1, b"3");
            self.mark(i);
            return Got::Nothing;
        }
        if c.role == Role::Pub {
            if self.tether_host {
                self.on_host_message(i);
            } else if kind == Kind::Ready {
                self.pub_ready = true;
            }
            return Got::Nothing;
        }
        match kind {
            Kind::Delivery => {}
            Kind::Ready => {
                if !c.ready {
                    c.ready = true;
                    self.ready_count += 1;
                }
                return Got::Nothing;
            }
            Kind::Ping | Kind::Other => return Got::Nothing,
        }
        c.recv += 1;
        self.total += 1;
        if c.lead[..c.lead_len].starts_with(b"{\"event\":\"error\"") {
            self.errors += 1;
        }
        if c.ring_len > 0 {
            let sent = c.ring[c.ring_head];
            c.ring_head = (c.ring_head + 1) % c.ring.len();
            c.ring_len -= 1;
            if self.timing {
                self.hist.record(now.saturating_sub(sent) / 1000);
            }
        }
        if let Some(t0) = self.round_t0 {
            if !c.got {
                c.got = true;
                self.delivered += 1;
                if self.delivered == 1 {
                    self.first_delivery_ns = now.saturating_sub(t0);
                }
                self.hist.record(now.saturating_sub(t0) / 1000);
                self.last_delivery_ns = now.saturating_sub(t0);
            }
        }
        Got::Message
    }

    /// The tether host side: note registration, answer every host.request.
    fn on_host_message(&mut self, i: usize) {
        let msg = &self.scratch;
        if msg.starts_with(b"{\"event\":\"host.registered\"") {
            self.host_ready = true;
            return;
        }
        if !msg.starts_with(b"{\"event\":\"host.request\"") {
            return;
        }
        let Some(at) = find(msg, b"\"id\":") else {
            return;
        };
        let digits = msg[at + 5..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let mut reply = [0u8; 96];
        let head = b"{\"event\":\"host.reply\",\"data\":{\"id\":";
        let tail = b",\"event\":\"rpc\",\"data\":0}}";
        let n = head.len() + digits + tail.len();
        reply[..head.len()].copy_from_slice(head);
        reply[head.len()..head.len() + digits].copy_from_slice(&msg[at + 5..at + 5 + digits]);
        reply[head.len() + digits..n].copy_from_slice(tail);
        push_frame(&mut self.conns[i].out, 0x1, &reply[..n]);
        self.host_replies += 1;
        self.mark(i);
    }

    /// Runs poll passes for `secs`.
    fn run_for(&mut self, secs: f64) {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            self.turn(Some(left.min(Duration::from_millis(50))));
        }
    }

    /// Runs until no client message arrived for `quiet_ms` (bounded by `max_s`).
    fn settle(&mut self, quiet_ms: u64, max_s: f64) {
        let until = Instant::now() + Duration::from_secs_f64(max_s);
        let mut last_total = u64::MAX;
        let mut last_change = Instant::now();
        while Instant::now() < until {
            self.turn(Some(Duration::from_millis(20)));
            let seen = self.total + self.host_replies;
            if seen != last_total {
                last_total = seen;
                last_change = Instant::now();
            } else if last_change.elapsed() >= Duration::from_millis(quiet_ms) {
                return;
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn payload(o: &Opts) -> Vec<u8> {
    match &o.text {
        Some(t) => t.as_bytes().to_vec(),
        None => vec![b'x'; o.size],
    }
}

/// Measured window: server and self CPU before and after.
struct Window {
    t0: Instant,
    server0: u64,
    self0: u64,
}

impl Window {
    fn start(pid: Option<u32>) -> Window {
        Window {
            t0: Instant::now(),
            server0: pid.map_or(0, |p| cpu_us(Some(p))),
            self0: cpu_us(None),
        }
    }
    /// (seconds, server CPU µs, load CPU µs)
    fn end(&self, pid: Option<u32>) -> (f64, u64, u64) {
        (
            self.t0.elapsed().as_secs_f64(),
            pid.map_or(0, |p| cpu_us(Some(p)).saturating_sub(self.server0)),
            cpu_us(None).saturating_sub(self.self0),
        )
    }
}

/// Cluster runs: the second node's and Redis's CPU over a window, beside
/// the first node's (`--pid`, the `server_*` fields).
struct ClusterCpu {
    node2: Option<(u32, u64)>,
    redis: Option<(u32, u64)>,
}

impl ClusterCpu {
    fn start(o: &Opts) -> ClusterCpu {
        let at = |pid: Option<u32>| pid.map(|p| (p, cpu_us(Some(p))));
        ClusterCpu {
            node2: at(o.pid2),
            redis: at(o.redis_pid),
        }
    }
    /// `"node2_cpu_us":..,"node2_us_per_msg":..,"redis_..":..,` for the
    /// processes given, per message received by the subscribers.
    fn json(&self, msgs: u64) -> String {
        let mut out = String::new();
        for (name, at) in [("node2", self.node2), ("redis", self.redis)] {
            let Some((pid, cpu0)) = at else { continue };
            let cpu = cpu_us(Some(pid)).saturating_sub(cpu0);
            let per = cpu as f64 / msgs.max(1) as f64;
            out += &format!("\"{name}_cpu_us\":{cpu},\"{name}_us_per_msg\":{per:.4},");
        }
        out
    }
}

fn json_common(secs: f64, server_cpu: u64, self_cpu: u64, msgs: u64) -> String {
    let per = |cpu: u64| {
        if msgs == 0 {
            0.0
        } else {
            cpu as f64 / msgs as f64
        }
    };
    format!(
        "\"secs\":{secs:.3},\"server_cpu_us\":{server_cpu},\"server_us_per_msg\":{:.4},\
         \"server_util\":{:.3},\"load_us_per_msg\":{:.4},\"load_util\":{:.3},\"load_saturated\":{}",
        per(server_cpu),
        server_cpu as f64 / 1e6 / secs,
        per(self_cpu),
        self_cpu as f64 / 1e6 / secs,
        self_cpu as f64 / 1e6 / secs > 0.95
    )
}

/// echo and rpc: N clients with D messages in flight each.
fn run_echo(o: &Opts) -> Result<String, String> {
    let rpc = o.scenario == "rpc";
    let msg = if rpc && o.text.is_none() && o.action_envelope {
        format!("{{\"action\":\"{}\",\"n\":0,\"requestId\":1}}", o.event).into_bytes()
    } else if rpc && o.text.is_none() {
        format!("{{\"event\":\"{}\",\"data\":0,\"requestId\":1}}", o.event).into_bytes()
    } else {
        payload(o)
    };
    let mut l = Load::new(o, Repeated::new(0x1, &msg, 64, o.deflate))?;
    l.watch_errors = rpc;
    if rpc && !o.bridged {
        l.tether_host = true;
        l.open_many(1, Role::Pub, &o.pub_path, 1, 1)?;
        let register = format!(
            "{{\"event\":\"host.register\",\"data\":{{\"events\":{{\"{}\":null}}}}}}",
            o.event
        );
        push_frame(&mut l.conns[0].out, 0x1, register.as_bytes());
        l.mark(0);
        let until = Instant::now() + Duration::from_secs(5);
        while !l.host_ready && Instant::now() < until {
            l.turn(Some(Duration::from_millis(10)));
        }
        if !l.host_ready {
            return Err("the host was not registered".into());
        }
    }
    let first = l.conns.len();
    l.open_many(o.conns, Role::Client, &o.path, o.inflight, o.max_pending)?;
    l.settle(200, 5.0);
    l.keep_inflight = true;
    for i in first..l.conns.len() {
        l.queue_repeated(i, o.inflight);
    }
    l.run_for(o.warmup);
    l.hist.clear();
    l.timing = true;
    let before = l.total;
    let errors0 = l.errors;
    l.rx_bytes = 0;
    l.rx_compressed = 0;
    let w = Window::start(o.pid);
    l.run_for(o.secs);
    let (secs, server_cpu, self_cpu) = w.end(o.pid);
    let msgs = l.total - before;
    let errors = l.errors - errors0;
    Ok(format!(
        "{{\"scenario\":\"{}\",\"conns\":{},\"inflight\":{},\"bytes\":{},\"msgs\":{msgs},\
         \"msgs_per_s\":{:.0},\"lat_p50_us\":{},\"lat_p99_us\":{},\"lat_max_us\":{},\"failed\":{},\
         \"errors\":{errors},{},{}}}",
        o.scenario,
        o.conns,
        o.inflight,
        msg.len(),
        msgs as f64 / secs,
        l.hist.quantile(0.5),
        l.hist.quantile(0.99),
        l.hist.max,
        l.failed,
        wire_json(&l, Some(l.rep.frame_len), msgs),
        json_common(secs, server_cpu, self_cpu, msgs)
    ))
}

/// `"deflate":..,"ws_bytes_out_per_msg":..,"ws_bytes_in_per_msg":..,"compressed_in":..`:
/// what the clients sent per message (echo: the repeated frame) and received
/// per message (`msgs` of them) since the counters were reset.
fn wire_json(l: &Load, out_per_msg: Option<usize>, msgs: u64) -> String {
    let out = out_per_msg.map_or(String::new(), |n| format!("\"ws_bytes_out_per_msg\":{n},"));
    format!(
        "\"deflate\":{},{out}\"ws_bytes_in_per_msg\":{:.1},\"compressed_in\":{}",
        l.deflate,
        l.rx_bytes as f64 / msgs.max(1) as f64,
        l.rx_compressed
    )
}

/// idle: N connections held open, then each asked for one echo.
fn run_idle(o: &Opts) -> Result<String, String> {
    let pid = o.pid.ok_or("idle needs --pid")?;
    let msg = payload(o);
    let mut l = Load::new(o, Repeated::new(0x1, &msg, 1, o.deflate))?;
    let rss0 = rss_kib(pid);
    let t = Instant::now();
    l.open_many(o.conns, Role::Client, &o.path, 1, o.max_pending)?;
    let connect_s = t.elapsed().as_secs_f64();
    l.settle(300, 10.0);
    let rss1 = rss_kib(pid);
    let w = Window::start(o.pid);
    l.run_for(o.secs);
    let (held, server_cpu, _) = w.end(o.pid);
    let rss2 = rss_kib(pid);
    let base = l.total;
    for i in 0..l.conns.len() {
        l.queue_repeated(i, 1);
    }
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        l.turn(Some(Duration::from_millis(20)));
        let answered = l
            .conns
            .iter()
            .filter(|c| c.recv > 0 && c.ring_len == 0)
            .count();
        if answered == l.conns.len() || l.failed > 0 && answered + l.failed >= l.conns.len() {
            break;
        }
    }
    let alive = l
        .conns
        .iter()
        .filter(|c| c.st == St::Open && c.ring_len == 0)
        .count();
    let _ = base;
    let per_conn = (rss1.max(rss2) as f64 - rss0 as f64) / o.conns as f64;
    Ok(format!(
        "{{\"scenario\":\"idle\",\"conns\":{},\"connect_s\":{connect_s:.2},\"held_s\":{held:.1},\
         \"rss_before_kib\":{rss0},\"rss_open_kib\":{rss1},\"rss_held_kib\":{rss2},\
         \"kib_per_conn\":{per_conn:.2},\"server_cpu_held_us\":{server_cpu},\"alive\":{alive},\"failed\":{}}}",
        o.conns, l.failed
    ))
}

/// The publisher's message: the payload as is, in a tether `host.broadcast`
/// (to `--room` when given) or in a Socket.IO "pub" event.
fn publish_message(o: &Opts) -> Vec<u8> {
    let data = payload(o);
    let (head, tail): (Vec<u8>, Vec<u8>) = if o.tether {
        let room = match &o.room {
            Some(r) => format!(",\"room\":\"{r}\""),
            None => String::new(),
        };
        let quote = if o.json_data { "" } else { "\"" };
        (
            format!("{{\"event\":\"host.broadcast\",\"data\":{{\"event\":\"b\",\"data\":{quote}")
                .into_bytes(),
            format!("{quote}{room}}}}}").into_bytes(),
        )
    } else if o.socketio {
        (b"42[\"pub\",\"".to_vec(), b"\"]".to_vec())
    } else {
        (Vec::new(), Vec::new())
    };
    [head, data, tail].concat()
}

/// Waits (bounded) until `done` holds, turning the loop.
fn wait_for(l: &mut Load, secs: u64, done: impl Fn(&Load) -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(secs);
    while !done(l) && Instant::now() < until {
        l.turn(Some(Duration::from_millis(10)));
    }
    done(l)
}

/// broadcast and throughput: the publisher (a tether host, or a Socket.IO
/// client in the main namespace) on `--addr`, then `subs` subscribers on
/// `subs_on`, each joined (`Join`) before this returns.
fn open_fan_out(o: &Opts, subs_on: Vec<SocketAddrV4>, ring: usize) -> Result<Load, String> {
    // The publisher (or host) sends plain: only subscribers offer deflate.
    let mut l = Load::new(o, Repeated::new(0x1, &publish_message(o), 1, false))?;
    l.tether_host = o.tether;
    l.client_addrs = subs_on;
    (l.join, l.join_msg) = if o.socketio {
        (Join::SocketIo, b"40".to_vec())
    } else if let Some(room) = &o.room {
        let m = format!("{{\"event\":\"subscribe\",\"data\":{{\"room\":\"{room}\"}}}}");
        (Join::TetherRoom, m.into_bytes())
    } else {
        (Join::Nothing, Vec::new())
    };
    l.open_many(1, Role::Pub, &o.pub_path, ring, 1)?;
    if o.tether {
        push_frame(
            &mut l.conns[0].out,
            0x1,
            b"{\"event\":\"host.register\",\"data\":{\"events\":{}}}",
        );
        l.mark(0);
        if !wait_for(&mut l, 5, |l| l.host_ready) {
            return Err("the host was not registered".into());
        }
    }
    if o.socketio && !wait_for(&mut l, 5, |l| l.pub_ready) {
        return Err("the publisher's Socket.IO connect was not answered".into());
    }
    l.open_many(o.conns, Role::Client, &o.path, 1, o.max_pending)?;
    if l.join != Join::Nothing && !wait_for(&mut l, 30, |l| l.ready_count >= o.conns) {
        return Err(format!(
            "only {} of {} subscribers joined",
            l.ready_count, o.conns
        ));
    }
    l.settle(300, 10.0);
    Ok(l)
}

/// broadcast: one publisher (or tether host) and N subscribers, split over
/// `--addr` and `--addr2` when both are given.
fn run_broadcast(o: &Opts) -> Result<String, String> {
    let msg = publish_message(o);
    let subs_on = [Some(o.addr), o.addr2].into_iter().flatten().collect();
    let mut l = open_fan_out(o, subs_on, 1)?;
    let subs = o.conns;
    let mut lasts: Vec<u64> = Vec::with_capacity(o.rounds);
    let mut incomplete = 0;
    l.rx_bytes = 0;
    l.rx_compressed = 0;
    let w = Window::start(o.pid);
    let cluster_cpu = ClusterCpu::start(o);
    let mut deliveries = 0u64;
    // TETHER_LOAD_TRACE=1 prints every round on stderr.
    let trace = std::env::var_os("TETHER_LOAD_TRACE").is_some();
    for round in 0..o.rounds {
        for c in l.conns.iter_mut() {
            c.got = false;
        }
        l.delivered = 0;
        l.clock();
        l.round_t0 = Some(l.now_ns);
        l.queue_repeated(0, 1);
        let until = Instant::now() + Duration::from_secs(2);
        while l.delivered < subs && Instant::now() < until {
            l.turn(Some(Duration::from_millis(5)));
        }
        deliveries += l.delivered as u64;
        if trace {
            eprintln!(
                "round {round}: {} of {subs} delivered, first after {} us, last after {} us",
                l.delivered,
                l.first_delivery_ns / 1000,
                l.last_delivery_ns / 1000
            );
        }
        if l.delivered < subs {
            incomplete += 1;
            // A setup that delivers nothing whole (a cluster not linked) is
            // said in three rounds, not in `--rounds` two-second waits.
            if incomplete >= 3 && lasts.is_empty() {
                break;
            }
        } else {
            lasts.push(l.last_delivery_ns / 1000);
        }
        l.round_t0 = None;
        let gap = Instant::now() + Duration::from_millis(o.gap_ms);
        while Instant::now() < gap {
            l.turn(Some(gap.saturating_duration_since(Instant::now())));
        }
    }
    let (secs, server_cpu, self_cpu) = w.end(o.pid);
    let cluster = cluster_cpu.json(deliveries);
    lasts.sort_unstable();
    let q = |p: f64| -> u64 {
        if lasts.is_empty() {
            return 0;
        }
        let idx = ((lasts.len() as f64 * p).ceil() as usize).clamp(1, lasts.len()) - 1;
        lasts[idx]
    };
    Ok(format!(
        "{{\"scenario\":\"broadcast\",\"subs\":{subs},\"rounds\":{},\"bytes\":{},\"incomplete_rounds\":{incomplete},\
         \"deliveries\":{deliveries},\"last_p50_us\":{},\"last_p99_us\":{},\"last_max_us\":{},\
         \"delivery_p50_us\":{},\"delivery_p99_us\":{},\"failed\":{},{},{cluster}{}}}",
        o.rounds,
        msg.len(),
        q(0.5),
        q(0.99),
        lasts.last().copied().unwrap_or(0),
        l.hist.quantile(0.5),
        l.hist.quantile(0.99),
        l.failed,
        wire_json(&l, None, deliveries),
        json_common(secs, server_cpu, self_cpu, deliveries)
    ))
}

/// One throughput step: `rate` messages per second for `--step-secs`, then
/// up to `--drain-ms` for the last deliveries. Its JSON object, and whether
/// every subscriber got every message exactly once and none failed.
fn throughput_step(l: &mut Load, o: &Opts, rate: f64) -> (String, bool) {
    let base: Vec<u64> = l.conns[1..].iter().map(|c| c.recv).collect();
    let failed0 = l.failed;
    let w = Window::start(o.pid);
    let cluster_cpu = ClusterCpu::start(o);
    let t0 = Instant::now();
    let total = (rate * o.step_secs).round().max(1.0) as u64;
    let mut sent = 0u64;
    while sent < total {
        let due = ((rate * t0.elapsed().as_secs_f64()) as u64).min(total);
        if due > sent {
            l.queue_repeated(0, (due - sent) as usize);
            sent = due;
        }
        l.turn(Some(Duration::from_millis(1)));
    }
    let got = |l: &Load| -> Vec<u64> {
        l.conns[1..]
            .iter()
            .zip(&base)
            .map(|(c, b)| c.recv - b)
            .collect()
    };
    let sent_at = Instant::now();
    let drain_until = sent_at + Duration::from_millis(o.drain_ms);
    while got(l).iter().any(|&n| n < sent) && Instant::now() < drain_until {
        l.turn(Some(Duration::from_millis(1)));
    }
    let drain_ms = sent_at.elapsed().as_millis();
    let (secs, server_cpu, self_cpu) = w.end(o.pid);
    let counts = got(l);
    let deliveries: u64 = counts.iter().sum();
    let (min, max) = (
        counts.iter().copied().min().unwrap_or(0),
        counts.iter().copied().max().unwrap_or(0),
    );
    let failed = l.failed - failed0;
    let ok = min == sent && max == sent && failed == 0;
    let json = format!(
        "{{\"rate\":{rate:.0},\"sent\":{sent},\"min_got\":{min},\"max_got\":{max},\"drain_ms\":{drain_ms},\
         \"failed\":{failed},\"ok\":{ok},{}{}}}",
        cluster_cpu.json(deliveries),
        json_common(secs, server_cpu, self_cpu, deliveries)
    );
    (json, ok)
}

/// Replaces the subscribers a step lost (closed by the server, e.g. as slow
/// readers), so that the next step has them all again, joined.
fn reopen_lost(l: &mut Load, o: &Opts) -> Result<(), String> {
    let lost: Vec<usize> = (1..l.conns.len())
        .filter(|&i| l.conns[i].st == St::Dead)
        .collect();
    for &i in &lost {
        if l.conns[i].ready {
            l.ready_count -= 1;
        }
        l.clock();
        l.open_at(Some(i), Role::Client, &o.path, 1)
            .map_err(|e| format!("connect: {e}"))?;
    }
    let joined = |l: &Load| {
        l.conns[1..]
            .iter()
            .all(|c| c.st == St::Open && (l.join == Join::Nothing || c.ready))
    };
    if !lost.is_empty() && !wait_for(l, 30, joined) {
        return Err(format!("{} lost subscribers did not come back", lost.len()));
    }
    Ok(())
}

/// throughput: the publisher on `--addr` sends at rising rates (×1.5 a
/// step, then two steps between the last rate kept and the first lost) to
/// N subscribers on `--addr2` (cross-node; `--addr` without it). A rate is
/// kept when every subscriber got every message of its step exactly once
/// within `--drain-ms` after the step, and no connection failed.
fn run_throughput(o: &Opts) -> Result<String, String> {
    let subs_on = vec![o.addr2.unwrap_or(o.addr)];
    let mut l = open_fan_out(o, subs_on, 1)?;
    let trace = std::env::var_os("TETHER_LOAD_TRACE").is_some();
    let mut steps = Vec::new();
    let mut kept: Option<(f64, String)> = None;
    let mut lost: Option<f64> = None;
    let mut rate = o.rate;
    let mut refinements = 2;
    while steps.len() < 24 {
        let (json, ok) = throughput_step(&mut l, o, rate);
        if trace {
            eprintln!("step: {json}");
        }
        steps.push(json.clone());
        if ok {
            kept = Some((rate, json));
        } else {
            lost = Some(lost.map_or(rate, |r: f64| r.min(rate)));
            // Let a backlog arrive before the next step counts.
            l.settle(300, 10.0);
            if l.conns[0].st == St::Dead {
                return Err("the publisher's connection was closed".into());
            }
            reopen_lost(&mut l, o)?;
        }
        rate = match (kept.as_ref().map(|k| k.0), lost) {
            (Some(k), None) if k >= o.rate_max => break,
            (Some(k), None) => (k * 1.5).min(o.rate_max),
            (Some(k), Some(f)) if refinements > 0 && f / k > 1.05 => {
                refinements -= 1;
                (k * f).sqrt()
            }
            _ => break,
        };
    }
    let (max_rate, kept_json) = kept.unwrap_or((0.0, "null".into()));
    Ok(format!(
        "{{\"scenario\":\"throughput\",\"subs\":{},\"bytes\":{},\"step_secs\":{},\"drain_ms\":{},\
         \"max_rate\":{max_rate:.0},\"rate_max\":{:.0},\"first_lost_rate\":{},\"kept\":{kept_json},\"steps\":[{}]}}",
        o.conns,
        publish_message(o).len(),
        o.step_secs,
        o.drain_ms,
        o.rate_max,
        lost.map_or("null".into(), |r| format!("{r:.0}")),
        steps.join(",")
    ))
}

/// handshakes: `--conns` connection attempts in parallel; each is closed as
/// soon as its upgrade is answered and a new one started in its place.
fn run_handshakes(o: &Opts) -> Result<String, String> {
    let mut l = Load::new(o, Repeated::new(0x1, b"x", 1, false))?;
    let n = o.conns;
    for _ in 0..n {
        l.clock();
        l.open(Role::Client, &o.path, 1)
            .map_err(|e| format!("connect: {e}"))?;
    }
    let mut done = 0u64;
    let mut failed = 0u64;
    let mut suite = String::new();
    let mut measure = |l: &mut Load, secs: f64, done: &mut u64, failed: &mut u64| {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < until {
            l.turn(Some(Duration::from_millis(10)));
            for i in 0..n {
                let st = l.conns[i].st;
                if st == St::Open {
                    *done += 1;
                    let took = l.now_ns.saturating_sub(l.conns[i].t_open) / 1000;
                    l.hist.record(took);
                    if suite.is_empty() {
                        if let Some(t) = l.conns[i].tls.as_deref() {
                            suite = format!(
                                "{:?} {:?}",
                                t.protocol_version(),
                                t.negotiated_cipher_suite().map(|s| s.suite())
                            );
                        }
                    }
                    l.retire(i);
                } else if st == St::Dead {
                    *failed += 1;
                } else {
                    continue;
                }
                if l.open_at(Some(i), Role::Client, &o.path, 1).is_err() {
                    *failed += 1;
                    // Try again on the next pass.
                    l.conns[i].st = St::Dead;
                }
            }
            if *failed > 1000 && *done == 0 {
                return;
            }
        }
    };
    measure(&mut l, o.warmup, &mut done, &mut failed);
    l.hist.clear();
    let (done0, failed0) = (done, failed);
    let w = Window::start(o.pid);
    measure(&mut l, o.secs, &mut done, &mut failed);
    let (secs, server_cpu, self_cpu) = w.end(o.pid);
    let (done, failed) = (done - done0, failed - failed0);
    if done == 0 {
        return Err(format!(
            "no handshake completed ({} attempts failed)",
            failed + failed0
        ));
    }
    Ok(format!(
        "{{\"scenario\":\"handshakes\",\"conns\":{n},\"handshakes\":{done},\"per_s\":{:.0},\
         \"lat_p50_us\":{},\"lat_p99_us\":{},\"lat_max_us\":{},\"failed\":{failed},\"suite\":\"{suite}\",{}}}",
        done as f64 / secs,
        l.hist.quantile(0.5),
        l.hist.quantile(0.99),
        l.hist.max,
        json_common(secs, server_cpu, self_cpu, done)
    ))
}

fn main() {
    let o = match parse_opts(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let result = match o.scenario.as_str() {
        "echo" | "rpc" => run_echo(&o),
        "idle" => run_idle(&o),
        "handshakes" => run_handshakes(&o),
        "throughput" => run_throughput(&o),
        _ => run_broadcast(&o),
    };
    match result {
        Ok(line) => println!("{{\"tls\":{},{}", o.tls, &line[1..]),
        Err(e) => {
            eprintln!("tether-load {}: {e}", o.scenario);
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_round_trip() {
        for us in [0, 1, 2047, 2048, 5000, 1 << 20, 123_456_789] {
            let v = Hist::value(Hist::index(us));
            assert!(v <= us && us - v <= us / 32, "{us} -> {v}");
        }
        let mut h = Hist::new();
        for us in 1..=100 {
            h.record(us);
        }
        assert_eq!(h.quantile(0.5), 50);
        assert_eq!(h.quantile(0.99), 99);
    }

    fn opts(line: &str) -> Result<Opts, String> {
        parse_opts(line.split_whitespace().map(String::from))
    }

    #[test]
    fn wss_addresses_need_a_trust_choice() {
        let o = opts("echo --addr 127.0.0.1:9").unwrap();
        assert!(!o.tls);
        assert!(opts("echo --addr ws://127.0.0.1:9").is_ok_and(|o| !o.tls));
        assert!(opts("echo --addr wss://127.0.0.1:9").is_err());
        let o = opts("handshakes --addr wss://127.0.0.1:9 --insecure").unwrap();
        assert!(o.tls && o.insecure);
        assert!(opts("echo --addr wss://10.0.0.1:9 --insecure").is_err());
        assert!(opts("echo --addr 127.0.0.1:9 --insecure").is_err());
    }

    #[test]
    fn ca_files_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("tether-load-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let o = opts(&format!(
            "echo --addr wss://127.0.0.1:9 --ca {}",
            junk.display()
        ))
        .unwrap();
        let e = tls_config(&o).err().unwrap();
        assert!(e.contains("no certificate"), "{e}");
        let o = opts("echo --addr wss://127.0.0.1:9 --ca /nonexistent/ca.pem").unwrap();
        assert!(tls_config(&o).is_err());
        assert!(tls_config(&opts("echo --addr wss://127.0.0.1:9 --insecure").unwrap()).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn join_modes_read_messages_by_their_start() {
        use Kind::*;
        let io = |lead: &[u8]| classify(Join::SocketIo, lead);
        assert_eq!(io(br#"0{"sid":"a","upgrades":[]"#), Other);
        assert_eq!(io(br#"40{"sid":"b"}"#), Ready);
        assert_eq!(io(b"2"), Ping);
        assert_eq!(io(br#"42["b","xx"]"#), Delivery);
        let room = |lead: &[u8]| classify(Join::TetherRoom, lead);
        assert_eq!(room(br#"{"event":"connected","data":{}}"#), Other);
        assert_eq!(
            room(br#"{"event":"subscribed","data":{"room":"r"}}"#[..LEAD].as_ref()),
            Ready
        );
        assert_eq!(room(br#"{"event":"b","data":"x","room":"r"}"#), Delivery);
        assert_eq!(room(br#"{"event":"bench","data":1}"#), Other);
        assert_eq!(classify(Join::Nothing, b"anything"), Delivery);
    }

    #[test]
    fn publishers_wrap_the_payload() {
        let o = opts("broadcast --addr 127.0.0.1:9 --size 2 --tether --room bench_r").unwrap();
        assert_eq!(
            publish_message(&o),
            br#"{"event":"host.broadcast","data":{"event":"b","data":"xx","room":"bench_r"}}"#
        );
        let o = opts("broadcast --addr 127.0.0.1:9 --size 2 --tether").unwrap();
        assert_eq!(
            publish_message(&o),
            br#"{"event":"host.broadcast","data":{"event":"b","data":"xx"}}"#
        );
        let o = opts("broadcast --addr 127.0.0.1:9 --text [1] --tether --json-data").unwrap();
        assert_eq!(
            publish_message(&o),
            br#"{"event":"host.broadcast","data":{"event":"b","data":[1]}}"#
        );
        let o = opts("broadcast --addr 127.0.0.1:9 --size 2 --socketio").unwrap();
        assert_eq!(publish_message(&o), br#"42["pub","xx"]"#);
        let o = opts("broadcast --addr 127.0.0.1:9 --size 2").unwrap();
        assert_eq!(publish_message(&o), b"xx");
    }

    #[test]
    fn cluster_options_are_checked() {
        let o =
            opts("throughput --addr 127.0.0.1:9 --addr2 ws://127.0.0.1:10 --pid2 5 --redis-pid 6")
                .unwrap();
        assert_eq!(o.addr2.map(|a| a.port()), Some(10));
        assert_eq!((o.pid2, o.redis_pid), (Some(5), Some(6)));
        assert!(opts("broadcast --addr 127.0.0.1:9 --addr2 10.0.0.1:10").is_err());
        assert!(opts("broadcast --addr 127.0.0.1:9 --socketio --tether").is_err());
        assert!(opts("broadcast --addr 127.0.0.1:9 --room a\"b").is_err());
        assert!(opts("throughput --addr 127.0.0.1:9 --rate 10 --rate-max 5").is_err());
    }

    #[test]
    fn bridged_rpc_names_its_event() {
        let o = opts("rpc --addr 127.0.0.1:9 --tether --bridged --event rpc.url").unwrap();
        assert!(o.bridged);
        assert_eq!(o.event, "rpc.url");
        assert_eq!(opts("rpc --addr 127.0.0.1:9").unwrap().event, "rpc");
        assert!(opts("rpc --addr 127.0.0.1:9 --event a\"b").is_err());
    }

    #[test]
    fn frames_are_masked() {
        let mut out = Vec::new();
        push_frame(&mut out, 0x1, b"abcd");
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], 0x84);
        let unmasked: Vec<u8> = out[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i & 3])
            .collect();
        assert_eq!(unmasked, b"abcd");
    }
}
