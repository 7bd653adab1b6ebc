//! SPEC §14's dashboard from outside: the page and its headers on the
//! health listener, `/api/rooms`, and the live feed (`/api/feed`): admin
//! only, at most four viewers, a sampled and truncated tail of room messages.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::Message;

const MAX_VIEWERS: usize = 4;
const SAMPLES_PER_SECOND: usize = 10;
const SAMPLE_BYTES: usize = 256;

/// `GET path` on `port`: the head and the body.
fn get(port: u16, path: &str, bearer: Option<&str>) -> (String, String) {
    exchange(port, "GET", path, bearer, "")
}

/// `METHOD path` with `body` on `port`: the head and the body.
fn exchange(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let length = body.len();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {length}\r\n\r\n{body}"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_string(), body.to_string())
}

fn server() -> (Server, u16) {
    let server = Server::start(json!({"limits": {"max_messages_per_minute": 10000}}));
    let hp = health_port(&server);
    (server, hp)
}

/// A dashboard's feed: the upgrade with the token as a browser sends it.
fn viewer(hp: u16, token: &str) -> Result<Ws, tungstenite::Error> {
    let protocols = format!("tether.v1, tether.bearer.{token}");
    let mut ws = connect(hp, "/api/feed", &[("Sec-WebSocket-Protocol", &protocols)])?;
    assert_eq!(recv_json(&mut ws)["event"], "connected");
    assert_eq!(recv_json(&mut ws)["event"], "authenticated");
    Ok(ws)
}

/// The JSON messages `ws` receives within `window`.
fn read_for(ws: &mut Ws, window: Duration) -> Vec<Value> {
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let end = Instant::now() + window;
    let mut got = Vec::new();
    while Instant::now() < end {
        match ws.read() {
            Ok(Message::Text(text)) => got.push(serde_json::from_str(text.as_str()).unwrap()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("feed read failed: {e}"),
        }
    }
    ws.get_mut().set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    got
}

#[test]
fn the_page_and_its_files_carry_the_strict_policy() {
    let (_server, hp) = server();
    for path in ["/", "/dashboard.js", "/charts.js", "/dashboard.css"] {
        let (head, body) = get(hp, path, None);
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{path}: {head}");
        for header in [
            "Content-Security-Policy: default-src 'self'",
            "X-Frame-Options: DENY",
            "X-Content-Type-Options: nosniff",
            "Cache-Control: no-store",
            "Referrer-Policy: no-referrer",
        ] {
            assert!(
                head.lines().any(|l| l == header),
                "{path} lacks {header}: {head}"
            );
        }
        assert!(!body.is_empty());
    }
    let (head, body) = get(hp, "/", None);
    assert!(head.contains("Content-Type: text/html"), "{head}");
    assert!(body.contains(r#"<script type="module" src="/dashboard.js">"#));
}

#[test]
fn rooms_are_listed_for_admin_tokens_only() {
    let (server, hp) = server();
    let (_a, _) = client(server.port(), "a", &[], &["red", "blue"]);
    let (_b, _) = client(server.port(), "b", &[], &["red"]);
    assert!(get(hp, "/api/rooms", None).0.starts_with("HTTP/1.1 401"));
    let user = server.token("u", &["publish"], &[], None, "1h");
    assert!(get(hp, "/api/rooms", Some(&user))
        .0
        .starts_with("HTTP/1.1 401"));
    let admin = server.token("ops", &["admin"], &[], None, "1h");
    let (head, body) = get(hp, "/api/rooms", Some(&admin));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        json!({"rooms": [{"room": "red", "members": 2}, {"room": "blue", "members": 1}],
               "total": 2, "presence": false})
    );
}

#[test]
fn the_feed_takes_four_admin_viewers_and_refuses_the_rest() {
    let (server, hp) = server();
    let admin = server.token("ops", &["admin"], &[], None, "1h");
    let user = server.token("u", &["publish", "host"], &[], None, "1h");
    assert_eq!(refused(hp, "/api/feed", &[]), 401);
    let bearer = format!("tether.v1, tether.bearer.{user}");
    assert_eq!(
        refused(hp, "/api/feed", &[("Sec-WebSocket-Protocol", &bearer)]),
        403
    );
    let bearer = "tether.v1, tether.bearer.x.y.z";
    assert_eq!(
        refused(hp, "/api/feed", &[("Sec-WebSocket-Protocol", bearer)]),
        401
    );
    let mut viewers: Vec<Ws> = (0..MAX_VIEWERS)
        .map(|_| viewer(hp, &admin).expect("a viewer"))
        .collect();
    let error = viewer(hp, &admin).expect_err("a fifth viewer");
    assert_eq!(http_status(&error), Some(503), "{error}");
    assert!(server.wait_log(
        "at most 4 dashboards may watch the feed at once",
        Duration::from_secs(2)
    ));
    // Viewers are not clients: the connection list does not show them.
    let (head, body) = get(hp, "/api/connections", Some(&admin));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["connections"],
        json!([])
    );
    // One leaves: another may come.
    close_normally(&mut viewers.pop().unwrap());
    let deadline = Instant::now() + Duration::from_secs(3);
    let replacement = loop {
        match viewer(hp, &admin) {
            Ok(ws) => break ws,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("no room after a viewer left: {e}"),
        }
    };
    drop(replacement);
    server.assert_not_logged(&admin);
}

#[test]
fn the_tail_is_sampled_truncated_and_counts_what_it_skipped() {
    let (server, hp) = server();
    let admin = server.token("ops", &["admin"], &[], None, "1h");
    let mut feed = viewer(hp, &admin).unwrap();
    let (mut publisher, _) = client(server.port(), "pub", &["publish"], &["red"]);
    let (mut member, _) = client(server.port(), "m", &[], &["red"]);
    let burst = 200;
    let big = "x".repeat(1000);
    let started = Instant::now();
    for n in 0..burst {
        let data = if n % 2 == 0 { json!(n) } else { json!(big) };
        send_json(
            &mut publisher,
            &json!({"event": "publish", "data": {"room": "red", "event": "e", "data": data}}),
        );
    }
    for _ in 0..burst {
        assert_eq!(recv_json(&mut publisher)["event"], "published");
        assert_eq!(recv_json(&mut member)["room"], "red");
    }
    // The burst spans this many one-second windows at most.
    let windows = started.elapsed().as_secs() as usize + 2;
    let sampled = read_for(&mut feed, Duration::from_millis(1500));
    assert!(!sampled.is_empty());
    assert!(
        sampled.len() <= windows * SAMPLES_PER_SECOND,
        "{}",
        sampled.len()
    );
    assert!(sampled.len() < burst as usize, "nothing was skipped");
    for sample in &sampled {
        assert_eq!(sample["event"], "dashboard.tail", "{sample}");
        assert_eq!(sample["data"]["room"], "red");
        let text = sample["data"]["text"].as_str().unwrap();
        assert!(text.len() <= SAMPLE_BYTES, "{}", text.len());
        let long = sample["data"]["bytes"].as_u64().unwrap() > SAMPLE_BYTES as u64;
        assert_eq!(sample["data"]["truncated"], long);
    }
    assert!(sampled.iter().any(|s| s["data"]["truncated"] == true));
    // A later message says how many were skipped: nothing is lost unseen.
    std::thread::sleep(Duration::from_millis(1100));
    send_json(
        &mut publisher,
        &json!({"event": "publish", "data": {"room": "red", "event": "e", "data": "last"}}),
    );
    let later = read_for(&mut feed, Duration::from_millis(800));
    assert_eq!(later.len(), 1, "{later:?}");
    let skipped: u64 = sampled
        .iter()
        .chain(&later)
        .map(|s| s["data"]["skipped"].as_u64().unwrap())
        .sum();
    assert_eq!(sampled.len() as u64 + 1 + skipped, burst + 1);
}

#[test]
fn the_feed_lists_and_kicks_clients_as_a_host_would() {
    let (server, hp) = server();
    let admin = server.token("ops", &["admin"], &[], None, "1h");
    let mut feed = viewer(hp, &admin).unwrap();
    let (mut target, id) = client(server.port(), "target", &[], &["red"]);
    let listed = request(&mut feed, &json!({"event": "host.clients", "requestId": 1}));
    assert_eq!(listed["data"]["clients"][0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed["data"]["total"], 1, "{listed}");
    let kicked = request(
        &mut feed,
        &json!({"event": "host.kick", "data": {"client": id, "reason": "bye"}, "requestId": 2}),
    );
    assert_eq!(kicked["data"]["delivered"], 1, "{kicked}");
    assert_eq!(recv_json(&mut target)["event"], "kicked");
    assert_eq!(expect_close(&mut target), 4010);
    // The same over HTTP, for an operator with curl.
    let (mut other, other_id) = client(server.port(), "other", &[], &[]);
    let body = json!({"client": other_id}).to_string();
    let (head, answer) = exchange(hp, "POST", "/api/kick", Some(&admin), &body);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap(),
        json!({"delivered": 1})
    );
    assert_eq!(
        recv_json(&mut other)["data"]["reason"],
        "kicked by an operator"
    );
    assert_eq!(expect_close(&mut other), 4010);
}

#[test]
fn in_a_cluster_the_feed_lists_kicks_and_tails_across_nodes() {
    let (_redis, a, b) = common::cluster::two_nodes();
    let admin = a.token("ops", &["admin"], &[], None, "1h");
    let mut feed = viewer(health_port(&a), &admin).unwrap();
    let mut on_b = common::cluster::member(&b, "bob", "red");
    let mut publisher = common::cluster::member(&b, "pub", "red");
    let deadline = Instant::now() + Duration::from_secs(10);
    let bob = loop {
        let listed = request(&mut feed, &json!({"event": "host.clients", "requestId": 1}));
        let clients = listed["data"]["clients"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(bob) = clients.iter().find(|c| c["sub"] == "bob") {
            break bob.clone();
        }
        assert!(Instant::now() < deadline, "bob is not listed: {listed}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(bob["node"], "b", "{bob}");
    // A message published on b reaches a's tail once a has a member of
    // the room (a node hears only the rooms its own clients are in).
    let mut on_a = common::cluster::member(&a, "alice", "red");
    let deadline = Instant::now() + Duration::from_secs(10);
    for seq in 1.. {
        common::cluster::publish(&mut publisher, "red", seq);
        assert_eq!(recv_json(&mut on_b)["room"], "red");
        if !read_for(&mut on_a, Duration::from_millis(300)).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "b's messages do not reach a");
    }
    let tail = read_for(&mut feed, Duration::from_millis(1500));
    assert!(
        tail.iter()
            .any(|t| t["event"] == "dashboard.tail" && t["data"]["room"] == "red"),
        "{tail:?}"
    );
    let kicked = request(
        &mut feed,
        &json!({"event": "host.kick", "data": {"client": bob["id"], "reason": "bye"}, "requestId": 2}),
    );
    assert_eq!(kicked["data"]["delivered"], 1, "{kicked}");
    assert_eq!(recv_json(&mut on_b)["event"], "kicked");
    assert_eq!(expect_close(&mut on_b), 4010);
    // POST /api/kick on a kicks b's client, answered once b has.
    let (mut carol, carol_id) = client(b.port(), "carol", &[], &[]);
    let body = json!({"client": carol_id, "reason": "maintenance"}).to_string();
    let (head, answer) = exchange(health_port(&a), "POST", "/api/kick", Some(&admin), &body);
    assert!(head.starts_with("HTTP/1.1 200"), "{head} {answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap(),
        json!({"delivered": 1})
    );
    let notice = recv_json(&mut carol);
    assert_eq!(notice["data"]["reason"], "maintenance", "{notice}");
    assert_eq!(expect_close(&mut carol), 4010);
}
