//! Fuzzing the broker link's decoder path (src/proto/redis/).

use crate::proto::redis::resp::{decode, Limits};
use crate::proto::redis::{Link, LinkConfig, LinkEvent, Role};

const LIMITS: Limits = Limits {
    max_bulk: 256,
    max_elements: 8,
    max_depth: 3,
};
const MAX_REPLY: usize = 1024;

fn link(role: Role) -> Link {
    let config = LinkConfig {
        role,
        user: None,
        password: Some("pw".into()),
        db: 1,
        max_out_bytes: 4096,
        limits: LIMITS,
        max_reply_bytes: MAX_REPLY,
        connect_timeout_ms: 1000,
        reply_timeout_ms: 1000,
        probe_after_ms: 1000,
    };
    let mut link = Link::new(config, 1);
    link.subscribe(b"c");
    link.on_connecting(0);
    link.on_connected(0);
    for tag in 0..4 {
        let _ = link.command(&[b"GET", b"k"], Some(tag));
    }
    link
}

/// The events with the reason of a `Down` left out.
fn without_reason(events: &[LinkEvent]) -> Vec<String> {
    events
        .iter()
        .map(|event| match event {
            LinkEvent::Down(_) => "Down".to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// What a link made of a byte stream fed in `chunks`.
fn feed(role: Role, stream: &[u8], chunks: &mut dyn FnMut() -> usize) -> Vec<LinkEvent> {
    let mut link = link(role);
    let mut events = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() && !link.is_down() {
        let n = chunks().clamp(1, rest.len());
        link.on_bytes(&rest[..n], 1);
        rest = &rest[n..];
        events.extend(std::iter::from_fn(|| link.poll_event()));
        assert!(link.output().len() <= 4096 + 256, "output bounded");
    }
    events
}

/// Input: byte 0 picks the role (bit 0) and seeds the chunk sizes; the rest
/// is what the broker sends after the connection opened.
///
/// Invariants: no panic; decoding whole and in chunks gives the same events;
/// a decoded value never claims more bytes than given; messages stay within
/// the bulk limit.
pub fn resp(data: &[u8]) {
    let Some((&config, stream)) = data.split_first() else {
        return;
    };
    let role = if config & 1 == 0 {
        Role::Command
    } else {
        Role::Subscriber
    };
    if let Ok(Some((_, used))) = decode(stream, &LIMITS) {
        assert!(used <= stream.len());
    }
    let whole = feed(role, stream, &mut || usize::MAX);
    let mut seed = u32::from(config) | 1;
    let chunked = feed(role, stream, &mut || {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (seed >> 16) as usize % 17 + 1
    });
    // Where the stream is both over a bound and malformed, which is seen
    // first depends on how much of it has arrived: the link goes down at the
    // same point either way, for either reason.
    assert_eq!(
        without_reason(&whole),
        without_reason(&chunked),
        "chunking changed the result"
    );
    for event in &whole {
        if let LinkEvent::Message { channel, payload } = event {
            assert!(channel.len() <= LIMITS.max_bulk && payload.len() <= LIMITS.max_bulk);
        }
    }
}
