//! Refusals a client can read, and the descriptor limit (issue 12 items 4
//! and 5): a refused client sees its status (and `Retry-After`) rather than
//! a reset, and a gateway out of file descriptors answers 503, uses no
//! more CPU than idle, says so once, and serves again once sockets close.

mod common;

use common::*;
use serde_json::json;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Everything the server sends until it closes; `reset` when it ended in a
/// reset rather than EOF.
struct Received {
    text: String,
    reset: bool,
}

fn read_until_closed(stream: &mut TcpStream) -> Received {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let reset = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break false,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(e) => panic!("reading the answer: {e}"),
        }
    };
    Received {
        text: String::from_utf8_lossy(&raw).into_owned(),
        reset,
    }
}

fn assert_503_with_retry_after(received: &Received, what: &str) {
    assert!(
        received.text.starts_with("HTTP/1.1 503 "),
        "{what}: {:?}",
        received.text
    );
    assert!(
        received.text.contains("\r\nRetry-After: "),
        "{what}: {:?}",
        received.text
    );
    assert!(!received.reset, "{what}: the answer ended in a reset");
}

#[test]
fn a_client_that_sends_its_request_then_reads_gets_the_503() {
    let server = Server::start(json!({"limits": {"max_connections": 1}}));
    let port = server.port();
    let (_held, _) = open(port);
    let request = upgrade_request(port, "/", &[]);

    // The whole request at once, then read.
    let mut prompt = tcp(port);
    prompt.write_all(request.as_bytes()).unwrap();
    assert_503_with_retry_after(&read_until_closed(&mut prompt), "request sent at once");

    // The request after the answer was written and the write side shut,
    // with more bytes behind it: they are drained, not answered with a reset.
    let mut late = tcp(port);
    std::thread::sleep(Duration::from_millis(300));
    late.write_all(request.as_bytes()).unwrap();
    late.write_all(&vec![b'x'; 16 * 1024]).unwrap();
    assert_503_with_retry_after(&read_until_closed(&mut late), "request sent late");
}

/// What the Python `websockets` client reports connecting to `port`
/// (with `origin`, if any): `STATUS RETRY-AFTER` from its `InvalidStatus`
/// (`-` without the header), or `accepted`.
fn python_connect(port: u16, origin: Option<&str>) -> String {
    let script = r#"
import asyncio, sys, websockets
from websockets.exceptions import InvalidStatus

async def main(url, origin):
    try:
        ws = await websockets.connect(url, open_timeout=5, origin=origin or None)
    except InvalidStatus as e:
        r = e.response
        print(r.status_code, r.headers.get("Retry-After", "-"))
        return
    await ws.close()
    print("accepted")

asyncio.run(main(*sys.argv[1:]))
"#;
    let url = format!("ws://127.0.0.1:{port}/");
    let output = python3()
        .args(["-c", script, &url, origin.unwrap_or("")])
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "python failed: {stderr}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The Python `websockets` client, refused, reports the status and the
/// response's headers: 403 for a refused origin (after the request is
/// read) and 503 with `Retry-After` for a full server (before it is read).
#[test]
fn python_websockets_sees_the_refusal_status_and_retry_after() {
    let server = Server::start(json!({
        "server": {"websocket": {"auth": {"allowed_origins": ["https://ok.example"]}}},
        "limits": {"max_connections": 2}
    }));
    let port = server.port();
    assert_eq!(python_connect(port, Some("https://evil.example")), "403 -");
    assert_eq!(python_connect(port, Some("https://ok.example")), "accepted");
    let (_first, _) = open(port);
    let (_second, _) = open(port);
    for _ in 0..3 {
        assert_eq!(python_connect(port, None), "503 5");
    }
}

/// CPU time (user + system) of process `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat(5); here 12 and 13 (0-based, from field 3).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn cpu_ticks_over(pid: u32, span: Duration) -> u64 {
    let before = cpu_ticks(pid);
    std::thread::sleep(span);
    cpu_ticks(pid) - before
}

fn open_descriptors(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64
}

/// Lowers the running server's RLIMIT_NOFILE (soft and hard) to `limit`.
fn set_nofile(pid: u32, limit: u64) {
    let new = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit reads `new` and writes nothing (no old-limit pointer).
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// `tether_NAME VALUE` from a `/metrics` answer.
fn metric_value(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

fn get_metrics(port: u16) -> String {
    let mut stream = tcp(port);
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let received = read_until_closed(&mut stream);
    assert!(
        received.text.starts_with("HTTP/1.1 200 "),
        "{}",
        received.text
    );
    received.text
}

#[test]
fn at_the_descriptor_limit_the_gateway_answers_503_without_spinning() {
    const LIMIT: u64 = 64;
    const BEYOND: usize = 12;
    let port = free_port();
    let mut server = Server::start(json!({
        "server": {
            "websocket": {"port": port},
            "health": {"host": "127.0.0.1", "port": port}
        },
        "limits": {"max_connections_per_ip": 1000, "max_connects_per_ip_per_hour": 10000},
        "log": {"level": "info"}
    }));
    let pid = server.pid();
    let idle = cpu_ticks_over(pid, Duration::from_secs(2));

    set_nofile(pid, LIMIT);
    let fit = (LIMIT - open_descriptors(pid)) as usize;
    let mut clients = Vec::new();
    let mut refused = 0;
    for _ in 0..fit + BEYOND {
        match connect(port, "/", &[]) {
            Ok(ws) => clients.push(ws),
            Err(e) => {
                assert_eq!(http_status(&e), Some(503), "{e}");
                refused += 1;
            }
        }
    }
    // Give or take a descriptor the process opens or closes meanwhile.
    assert!(
        refused + 2 >= BEYOND,
        "{refused} of {} refused",
        fit + BEYOND
    );
    assert!(
        clients.len() + 2 >= fit,
        "{} of {fit} served",
        clients.len()
    );

    let at_limit = cpu_ticks_over(pid, Duration::from_secs(2));
    // A spinning loop burns ~2 s of CPU here; idle uses next to none.
    assert!(
        at_limit <= idle + 20,
        "{at_limit} ticks of CPU in 2 s at the limit, {idle} idle"
    );
    // More clients at the limit, still the same episode; the Python client
    // reads its 503 though the descriptor is freed at once.
    assert_eq!(
        http_status(&connect(port, "/", &[]).unwrap_err()),
        Some(503)
    );
    assert_eq!(python_connect(port, None), "503 5");
    let warned = |logs: &[String]| {
        logs.iter()
            .filter(|l| l.contains("[WARN] out of file descriptors"))
            .count()
    };
    assert_eq!(warned(&server.logs()), 1, "{:#?}", server.logs());

    drop(clients);
    let mut ws = connect_eventually(port, Duration::from_secs(3));
    assert_eq!(recv_json(&mut ws)["event"], "connected");
    assert!(server.wait_log("file descriptors to spare again", Duration::from_secs(3)));
    let metrics = get_metrics(port);
    assert!(metric_value(&metrics, "tether_accept_errors_total{reason=\"fd_limit\"}") >= 1);
    let answered = metric_value(&metrics, "tether_refusals_total{reason=\"fd_limit\"}");
    assert!(
        answered >= refused as u64,
        "{answered} answered 503\n{metrics}"
    );
    assert_eq!(warned(&server.logs()), 1);
    let started = Instant::now();
    assert!(server.stop().success());
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A `tether ARGS` command (in `dir`) that starts with RLIMIT_NOFILE at
/// `limit`, soft and hard.
fn tether_with_nofile(dir: &std::path::Path, limit: u64, args: &[&str]) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = command(dir, &[("JWT_SECRET", SECRET)]);
    cmd.args(args);
    // SAFETY: the hook only calls setrlimit, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd
}

/// `check-config` and the start-up log warn, the same way, when the
/// settings hold more sockets than RLIMIT_NOFILE allows.
#[test]
fn settings_beyond_the_descriptor_limit_are_warned_about() {
    let dir = TempDir::new("nofile");
    let config = dir.write_json(
        "settings.json",
        &json!({
            "server": {"websocket": {"host": "127.0.0.1", "port": 0}, "health": {"port": 0}},
            "limits": {"max_connections": 5000}
        }),
    );
    let config = config.to_str().unwrap();
    let expected = "limits.max_connections: 5000 connections need up to";

    let out = tether_with_nofile(dir.path(), 4096, &["check-config", "--config", config])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("tether: warning: {expected}")),
        "{stderr}"
    );
    assert!(stderr.contains("RLIMIT_NOFILE is 4096"), "{stderr}");
    assert!(stderr.contains("at most 3984"), "{stderr}");
    let fits = tether_with_nofile(dir.path(), 8192, &["check-config", "--config", config])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&fits.stderr);
    assert!(!stderr.contains("RLIMIT_NOFILE"), "{stderr}");

    let mut serve = tether_with_nofile(dir.path(), 4096, &["serve", "--config", config])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(serve.stderr.take().unwrap());
    let mut logs = Vec::new();
    for line in std::io::BufRead::lines(stderr) {
        let line = line.unwrap();
        let listening = line.contains("listening on ws://");
        logs.push(line);
        if listening {
            break;
        }
    }
    let _ = serve.kill();
    let _ = serve.wait();
    let logs = logs.join("\n");
    assert!(logs.contains(&format!("[WARN] {expected}")), "{logs}");
    assert!(logs.contains("RLIMIT_NOFILE is 4096"), "{logs}");
    assert!(
        logs.contains("file descriptors: up to 4096 (RLIMIT_NOFILE, hard limit 4096)"),
        "{logs}"
    );
}
