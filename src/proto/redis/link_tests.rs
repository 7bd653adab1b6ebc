//! The link driven at explicit times over scripted broker bytes.

use super::*;

fn config(role: Role, password: Option<&str>) -> LinkConfig {
    LinkConfig {
        role,
        user: password.map(|_| "tether".to_string()),
        password: password.map(str::to_string),
        db: 2,
        max_out_bytes: 200,
        limits: Limits {
            max_bulk: 1024,
            max_elements: 8,
            max_depth: 2,
        },
        max_reply_bytes: 1200,
        connect_timeout_ms: 1000,
        reply_timeout_ms: 500,
        probe_after_ms: 2000,
    }
}

fn take_out(link: &mut Link) -> Vec<u8> {
    let out = link.output().to_vec();
    link.consume(out.len());
    out
}

fn events(link: &mut Link) -> Vec<LinkEvent> {
    std::iter::from_fn(|| link.poll_event()).collect()
}

fn connect(link: &mut Link, now: u64) {
    assert!(link.wants_connect(now));
    link.on_connecting(now);
    link.on_connected(now);
}

#[test]
fn command_link_authenticates_selects_then_pipelines() {
    let mut link = Link::new(config(Role::Command, Some("pw-1")), 1);
    // Given before the connection: held until the handshake is done.
    link.command(&[b"SET", b"k", b"v", b"NX", b"PX", b"900"], Some(7))
        .unwrap();
    connect(&mut link, 0);
    assert_eq!(
        take_out(&mut link),
        b"*3\r\n$4\r\nAUTH\r\n$6\r\ntether\r\n$4\r\npw-1\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n"
    );
    assert!(!link.is_up());
    link.on_bytes(b"+OK\r\n+O", 10);
    assert!(!link.is_up());
    link.on_bytes(b"K\r\n", 11);
    assert!(link.is_up());
    assert_eq!(events(&mut link), vec![LinkEvent::Up]);
    let out = take_out(&mut link);
    assert!(out.starts_with(b"*6\r\n$3\r\nSET\r\n"), "{out:?}");
    link.command(&[b"PUBLISH", b"c", b"x"], None).unwrap();
    link.command(&[b"GET", b"k"], Some(8)).unwrap();
    link.on_bytes(b"$-1\r\n:1\r\n$1\r\nv\r\n", 20);
    assert_eq!(
        events(&mut link),
        vec![
            LinkEvent::Reply {
                tag: 7,
                value: Value::Bulk(None)
            },
            LinkEvent::Reply {
                tag: 8,
                value: Value::Bulk(Some(b"v".to_vec()))
            },
        ]
    );
}

#[test]
fn refused_auth_goes_down_and_backs_off() {
    let mut link = Link::new(config(Role::Command, Some("wrong")), 1);
    connect(&mut link, 0);
    take_out(&mut link);
    link.on_bytes(b"-WRONGPASS invalid username-password pair\r\n", 5);
    let got = events(&mut link);
    assert!(matches!(&got[0], LinkEvent::Refused(t) if t.starts_with("WRONGPASS")));
    assert_eq!(got[1], LinkEvent::Down("handshake refused"));
    assert!(link.is_down());
    // First retry after exactly 100 ms (the first ceiling), then growing.
    assert!(!link.wants_connect(104));
    assert!(link.wants_connect(105));
}

#[test]
fn subscriber_resubscribes_after_a_reconnect_and_reports_messages() {
    let mut link = Link::new(config(Role::Subscriber, None), 3);
    link.subscribe(b"t:room:a");
    connect(&mut link, 0);
    assert!(link.is_up());
    assert_eq!(
        take_out(&mut link),
        b"*2\r\n$9\r\nSUBSCRIBE\r\n$8\r\nt:room:a\r\n"
    );
    link.subscribe(b"t:node:n1");
    assert_eq!(
        take_out(&mut link),
        b"*2\r\n$9\r\nSUBSCRIBE\r\n$9\r\nt:node:n1\r\n"
    );
    link.on_bytes(
        b"*3\r\n$9\r\nsubscribe\r\n$8\r\nt:room:a\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$8\r\nt:room:a\r\n$2\r\nhi\r\n",
        5,
    );
    let got = events(&mut link);
    assert_eq!(
        got[1..],
        [LinkEvent::Message {
            channel: b"t:room:a".to_vec(),
            payload: b"hi".to_vec()
        }]
    );
    link.unsubscribe(b"t:room:a");
    take_out(&mut link);
    link.on_closed(10, "reset");
    assert_eq!(events(&mut link), vec![LinkEvent::Down("reset")]);
    connect(&mut link, 200);
    assert_eq!(
        take_out(&mut link),
        b"*2\r\n$9\r\nSUBSCRIBE\r\n$9\r\nt:node:n1\r\n"
    );
    assert_eq!(link.reconnects(), 1);
}

#[test]
fn bound_drops_and_lost_link_fails_outstanding_tags() {
    let mut link = Link::new(config(Role::Command, None), 1);
    let big = [b'x'; 120];
    link.command(&[b"PUBLISH", b"c", &big], None).unwrap();
    assert_eq!(link.command(&[b"PUBLISH", b"c", &big], None), Err(Full));
    assert_eq!(link.dropped(), 1);
    link.command(&[b"GET", b"k"], Some(1)).unwrap();
    link.on_closed(0, "never connected");
    // Not connected yet: on_closed while down changes nothing.
    assert!(events(&mut link).is_empty());
    // Lost during the handshake: the queued commands wait for the next one.
    connect(&mut link, 0);
    take_out(&mut link);
    link.on_closed(3, "reset");
    assert_eq!(events(&mut link), vec![LinkEvent::Down("reset")]);
    connect(&mut link, 200);
    link.on_bytes(b"+OK\r\n", 201);
    assert!(String::from_utf8_lossy(&take_out(&mut link)).contains("GET"));
    // Lost with the GET in flight: its tag is answered with an error.
    link.on_closed(202, "reset");
    let got = events(&mut link);
    assert!(got.contains(&LinkEvent::Reply {
        tag: 1,
        value: Value::Error(LINK_LOST.to_vec())
    }));
}

#[test]
fn timeouts_probe_and_reset() {
    let mut no_select = config(Role::Command, None);
    no_select.db = 0;
    let mut link = Link::new(no_select, 1);
    link.on_connecting(0);
    assert_eq!(link.poll_timeout(), Some(1000));
    link.on_timer(1000);
    assert!(link.is_down());
    events(&mut link);
    link.on_connecting(1100);
    link.on_connected(1100);
    assert_eq!(link.poll_timeout(), Some(3100));
    link.on_timer(3100);
    assert_eq!(take_out(&mut link), b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(link.poll_timeout(), Some(3600));
    link.on_bytes(b"+PONG\r\n", 3200);
    assert_eq!(link.poll_timeout(), Some(5200));
    link.on_timer(5200);
    link.on_timer(5700);
    assert!(link.is_down());
    // Garbage from the broker resets the link too.
    let mut link = Link::new(config(Role::Subscriber, None), 1);
    connect(&mut link, 0);
    link.on_bytes(b"!nope\r\n", 1);
    assert!(link.is_down());
}

fn push(channel: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "*3\r\n$7\r\nmessage\r\n${}\r\n{}\r\n${}\r\n",
        channel.len(),
        String::from_utf8_lossy(channel),
        payload.len()
    )
    .into_bytes();
    m.extend_from_slice(payload);
    m.extend_from_slice(b"\r\n");
    m
}

#[test]
fn inbox_full_asks_for_no_input_until_taken() {
    let mut link = Link::new(config(Role::Subscriber, None), 3);
    link.subscribe(b"c");
    connect(&mut link, 0);
    take_out(&mut link);
    assert_eq!(events(&mut link), vec![LinkEvent::Up]);
    let payload = [b'x'; 1000];
    let mut burst = Vec::new();
    for _ in 0..2 * INBOX_BYTES / payload.len() {
        burst.extend(push(b"c", &payload));
    }
    // Read in odd-sized pieces (replies cut anywhere) while it wants input.
    let mut pieces = burst.chunks(1777);
    let mut read = 0;
    while link.wants_input() {
        let piece = pieces.next().expect("stops before the burst ends");
        link.on_bytes(piece, 1);
        read += piece.len();
        assert!(link.input.len() < 1200, "only a partial reply is held");
    }
    assert!(
        read > INBOX_BYTES / 2 && read < INBOX_BYTES + 1777,
        "{read}"
    );
    assert!(link.has_events());
    let mut taken = 0;
    while let Some(LinkEvent::Message { payload: got, .. }) = link.poll_event() {
        assert_eq!(got, payload);
        taken += 1;
        if taken == 2 {
            assert!(link.wants_input(), "under the bound again");
        }
    }
    assert!(taken > 200, "{taken}");
    assert!(!link.has_events() && link.wants_input());
}
