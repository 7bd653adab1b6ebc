//! Cluster helpers (SPEC §9): a redis-server of the test's own on a free
//! loopback port (stopped by PID, never the system service) and tether nodes
//! joined to it.

use super::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const HEARTBEAT_MS: u64 = 200;
pub const REQUEST_TIMEOUT_MS: u64 = 800;
pub const REDIS_PASSWORD: &str = "redis-pw-never-logged-7f3a";

/// A redis-server of this test's own.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    /// Listen on this unix socket instead of TCP.
    unix: bool,
    pub password: Option<&'static str>,
    tmp: TempDir,
}

impl Redis {
    pub fn start(password: Option<&'static str>) -> Redis {
        let tmp = TempDir::new("redis");
        let mut redis = Redis {
            child: None,
            port: free_port(),
            unix: false,
            password,
            tmp,
        };
        redis.spawn();
        redis
    }

    pub fn start_unix() -> Redis {
        let mut redis = Redis {
            child: None,
            port: 0,
            unix: true,
            password: None,
            tmp: TempDir::new("redis-unix"),
        };
        redis.spawn();
        redis
    }

    pub fn socket(&self) -> std::path::PathBuf {
        self.tmp.path().join("redis.sock")
    }

    pub fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(pw) = self.password {
            cmd.args(["--requirepass", pw]);
        }
        if self.unix {
            cmd.arg("--unixsocket").arg(self.socket());
        }
        self.child = Some(
            cmd.spawn()
                .expect("redis-server (apt-get install redis-server)"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let up = |r: &Redis| match r.unix {
            true => std::os::unix::net::UnixStream::connect(r.socket()).is_ok(),
            false => TcpStream::connect(("127.0.0.1", r.port)).is_ok(),
        };
        while !up(self) {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        if self.unix {
            return format!("unix://{}", self.socket().display());
        }
        match self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn node(redis: &Redis, name: &str) -> Server {
    node_with(redis, name, &[("JWT_SECRET", SECRET)])
}

pub fn node_with(redis: &Redis, name: &str, envs: &[(&str, &str)]) -> Server {
    node_beating(redis, name, envs, HEARTBEAT_MS)
}

pub fn node_beating(redis: &Redis, name: &str, envs: &[(&str, &str)], heartbeat_ms: u64) -> Server {
    node_from(
        name,
        node_settings(redis, name, heartbeat_ms, REQUEST_TIMEOUT_MS),
        envs,
    )
}

/// The settings of a test node: its heartbeat and host request timeout.
fn node_settings(redis: &Redis, name: &str, heartbeat_ms: u64, request_timeout_ms: u64) -> Value {
    json!({
        "cluster": {"redis": redis.url(), "node": name, "heartbeat_ms": heartbeat_ms},
        "limits": {"max_messages_per_minute": 10000},
        "host": {"request_timeout_ms": request_timeout_ms}
    })
}

/// A node started with `settings` in a directory of its own (kept).
pub fn node_from(name: &str, settings: Value, envs: &[(&str, &str)]) -> Server {
    let tmp = TempDir::new(name);
    let dir = tmp.path().to_path_buf();
    std::mem::forget(tmp);
    Server::start_in(&dir, settings, envs)
}

/// A Redis and two joined nodes, `a` and `b`.
pub fn two_nodes() -> (Redis, Server, Server) {
    let redis = Redis::start(None);
    let (a, b) = joined_nodes(&redis);
    (redis, a, b)
}

/// Nodes `a` and `b` on `redis`, once both have joined.
pub fn joined_nodes(redis: &Redis) -> (Server, Server) {
    let a = node(redis, "a");
    let b = node(redis, "b");
    joined(&a, "a");
    joined(&b, "b");
    (a, b)
}

/// [`two_nodes`] with another heartbeat (timing assertions in heartbeats
/// keep their margin on a loaded machine with a slower one), and a host
/// request timeout of 8 heartbeats, so that a node's loss (3 heartbeats) is
/// what ends a pending request.
pub fn two_nodes_beating(heartbeat_ms: u64) -> (Redis, Server, Server) {
    let redis = Redis::start(None);
    let envs = [("JWT_SECRET", SECRET)];
    let timeout_ms = 8 * heartbeat_ms;
    let a = node_from(
        "a",
        node_settings(&redis, "a", heartbeat_ms, timeout_ms),
        &envs,
    );
    let b = node_from(
        "b",
        node_settings(&redis, "b", heartbeat_ms, timeout_ms),
        &envs,
    );
    joined(&a, "a");
    joined(&b, "b");
    (redis, a, b)
}

pub fn joined(server: &Server, name: &str) {
    assert!(
        server.wait_log(
            &format!("cluster: node {name} joined"),
            Duration::from_secs(10)
        ),
        "{name} did not join: {:#?}",
        server.logs()
    );
}

/// GET on the health listener: status and JSON body.
pub fn get(server: &Server, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", health_port(server))).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status_of(head).unwrap_or(0), body.to_string())
}

pub fn get_json(server: &Server, path: &str) -> (u16, Value) {
    let (status, body) = get(server, path);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Waits until `check` holds for `/health`.
pub fn wait_health(server: &Server, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, health) = get_json(server, "/health");
        if check(&health) {
            return health;
        }
        assert!(Instant::now() < deadline, "{what}: {health}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn member(server: &Server, sub: &str, room: &str) -> Ws {
    let token = server.token(sub, &["publish"], &[room], None, "1h");
    let (mut ws, _) = open_authed(server.port(), &token);
    let reply = request(
        &mut ws,
        &json!({"event":"subscribe","data":{"room":room},"requestId":1}),
    );
    assert_eq!(reply["event"], "subscribed", "{reply}");
    ws
}

pub fn publish(ws: &mut Ws, room: &str, seq: u64) -> Value {
    request(
        ws,
        &json!({"event":"publish","data":{"room":room,"event":"n","data":seq},"requestId":seq}),
    )
}

/// The next `count` room messages' `data`, then a ping answered first: no
/// message came twice.
pub fn received(ws: &mut Ws, count: usize) -> Vec<u64> {
    let got: Vec<u64> = (0..count)
        .map(|_| {
            let m = recv_json(ws);
            assert_eq!(m["event"], "n", "{m}");
            m["data"].as_u64().unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let pong = request(ws, &json!({"event":"ping"}));
    assert_eq!(pong["event"], "pong", "a message arrived twice: {pong}");
    got
}

/// `subscribe` to `room`, recovering from `since` (offset, epoch) if given;
/// the `subscribed` data (presence and host notices before it passed over).
pub fn subscribe_since(ws: &mut Ws, room: &str, since: Option<(u64, &str)>) -> Value {
    let mut data = json!({"room": room});
    if let Some((offset, epoch)) = since {
        data["since"] = json!({"offset": offset, "epoch": epoch});
    }
    send_json(ws, &json!({"event":"subscribe","data":data}));
    let reply = next_but_notices(ws);
    assert_eq!(reply["event"], "subscribed", "{reply}");
    reply["data"].clone()
}

/// The next message that is no presence or host notice.
pub fn next_but_notices(ws: &mut Ws) -> Value {
    loop {
        let m = recv_json(ws);
        let event = m["event"].as_str().unwrap_or_default();
        if !event.starts_with("presence.") && !event.starts_with("host.client_") {
            return m;
        }
    }
}

/// A node of `redis` with `rooms.history` of `size` messages kept `ttl_s`.
pub fn history_node(redis: &Redis, name: &str, size: usize, ttl_s: u64) -> Server {
    let server = node_from(
        name,
        json!({
            "cluster": {"redis": redis.url(), "node": name, "heartbeat_ms": HEARTBEAT_MS},
            "limits": {"max_messages_per_minute": 100000},
            "host": {"request_timeout_ms": REQUEST_TIMEOUT_MS},
            "rooms": {
                "history": {"size": size, "ttl_s": ttl_s},
                "presence": {"enabled": true}
            }
        }),
        &[("JWT_SECRET", SECRET)],
    );
    joined(&server, name);
    server
}
