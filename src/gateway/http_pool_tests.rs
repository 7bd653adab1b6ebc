//! The pool against a real loopback backend (std, blocking), and URLs.

use super::*;
use std::io::{Read, Write};
use std::net::TcpListener;

/// A pool of `depth`-deep connections to a listener of its own.
fn pool(max_in_flight: usize, depth: usize) -> (Poll, TcpListener, HttpPool<u32>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/t", listener.local_addr().unwrap());
    let target = HttpTarget::from_url(&url, None).unwrap();
    let poll = Poll::new().unwrap();
    let pool = HttpPool::new(
        target,
        (max_in_flight, depth),
        (1024, 5_000),
        poll.registry(),
        Token(0),
    )
    .unwrap();
    (poll, listener, pool)
}

/// Pumps until `count` requests are done (or 5 s pass).
fn settled(pool: &mut HttpPool<u32>, count: usize) -> Vec<(u32, Outcome)> {
    let mut done = Vec::new();
    for _ in 0..500 {
        pool.pump("t", 0, &mut done);
        if done.len() >= count {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done
}

/// Reads from `sock` until `count` request heads arrived.
fn read_requests(sock: &mut std::net::TcpStream, count: usize) {
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    while got.windows(5).filter(|w| w == b"POST ").count() < count || !got.ends_with(b"}") {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "the pool closed the connection");
        got.extend_from_slice(&buf[..n]);
    }
}

fn answer(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn pipelined_answers_go_to_their_requests_in_order() {
    let (_poll, listener, mut pool) = pool(3, 3);
    for tag in 1..=3 {
        pool.submit(tag, format!("{{\"n\":{tag}}}").into_bytes());
    }
    let mut none = Vec::new();
    pool.send_waiting("t", 0, &mut none);
    assert!(none.is_empty() && !pool.has_free_slot());
    let (mut sock, _) = listener.accept().unwrap();
    read_requests(&mut sock, 3);
    // All three answers in one write: each goes to its own request.
    let all = [answer("\"a\""), answer("\"b\""), answer("\"c\"")].concat();
    sock.write_all(all.as_bytes()).unwrap();
    let done = settled(&mut pool, 3);
    let got: Vec<(u32, Vec<u8>)> = done
        .into_iter()
        .map(|(tag, outcome)| match outcome {
            Outcome::Answer(r) => (tag, r.body),
            other => panic!("request {tag}: {other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, b"\"a\"".to_vec()),
            (2, b"\"b\"".to_vec()),
            (3, b"\"c\"".to_vec())
        ]
    );
    assert!(pool.is_idle());
}

#[test]
fn a_close_mid_pipeline_fails_the_rest_once() {
    let (_poll, listener, mut pool) = pool(3, 3);
    for tag in 1..=3 {
        pool.submit(tag, b"{}".to_vec());
    }
    pool.send_waiting("t", 0, &mut Vec::new());
    let (mut sock, _) = listener.accept().unwrap();
    read_requests(&mut sock, 3);
    sock.write_all(answer("1").as_bytes()).unwrap();
    drop(sock);
    let done = settled(&mut pool, 3);
    assert!(matches!(done[0], (1, Outcome::Answer(_))), "{done:?}");
    assert!(matches!(done[1], (2, Outcome::Failed(_))), "{done:?}");
    assert!(matches!(done[2], (3, Outcome::Failed(_))), "{done:?}");
    assert_eq!(done.len(), 3, "{done:?}");
    // Nothing was queued again.
    assert!(pool.is_idle());
}

#[test]
fn urls_split() {
    assert_eq!(
        split_url("http://127.0.0.1:8000/tether/"),
        Some((
            "127.0.0.1:8000".into(),
            "127.0.0.1".into(),
            8000,
            "/tether/".into()
        ))
    );
    assert_eq!(
        split_url("http://example.com"),
        Some(("example.com".into(), "example.com".into(), 80, "/".into()))
    );
    assert_eq!(
        split_url("http://[::1]:81/x?y"),
        Some(("[::1]:81".into(), "::1".into(), 81, "/x?y".into()))
    );
    assert_eq!(
        split_url("https://x/"),
        Some(("x".into(), "x".into(), 443, "/".into()))
    );
    assert_eq!(split_url("ftp://x/"), None);
    assert_eq!(split_url("http:///x"), None);
}
