//! The ring store with synthetic time: offsets, epochs, eviction by size,
//! TTL and the global budget, and recovery.

use super::*;

fn store(size: usize, ttl_ms: u64, max_bytes: usize) -> History {
    History::new(HistoryConfig {
        size,
        ttl_ms,
        max_bytes,
        epoch_tag: 7,
    })
}

fn members(_: &str) -> bool {
    true
}

fn nobody(_: &str) -> bool {
    false
}

/// Appends a message whose body is its offset, as text.
fn add(h: &mut History, room: &str, at_ms: u64) -> Rc<[u8]> {
    h.append(room, at_ms, members, |offset| {
        format!("{room}#{}", offset.unwrap_or(0))
            .into_bytes()
            .into()
    })
}

fn texts(messages: &[Rc<[u8]>]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect()
}

#[test]
fn offsets_count_from_one_and_rings_share_the_sent_bodies() {
    let mut h = store(10, 60_000, 1 << 20);
    let first = add(&mut h, "a", 0);
    add(&mut h, "a", 1);
    add(&mut h, "b", 2);
    let (position, messages) = h.recent("a", 10, 3).unwrap();
    assert_eq!(position.offset, 2);
    assert_eq!(texts(&messages), ["a#1", "a#2"]);
    assert!(Rc::ptr_eq(&first, &messages[0]), "no second copy");
    assert_eq!(h.position("b", 3).unwrap().offset, 1);
    assert_ne!(position.epoch, h.position("b", 3).unwrap().epoch);
    assert_eq!(texts(&h.recent("a", 1, 3).unwrap().1), ["a#2"]);
}

#[test]
fn history_off_numbers_nothing_and_keeps_nothing() {
    let mut h = store(0, 60_000, 1 << 20);
    assert!(!h.is_on());
    assert_eq!(texts(&[add(&mut h, "a", 0)]), ["a#0"]);
    assert!(h.position("a", 0).is_none() && h.since("a", 0, "", 0).is_none());
    assert_eq!(h.bytes(), 0);
}

#[test]
fn epochs_differ_between_processes_and_after_a_ring_is_lost() {
    let mut h = store(10, 60_000, 1 << 20);
    let mut other = History::new(HistoryConfig {
        size: 10,
        ttl_ms: 60_000,
        max_bytes: 1 << 20,
        epoch_tag: 8,
    });
    let epoch = h.position("a", 0).unwrap().epoch;
    assert_eq!(h.position("a", 1).unwrap().epoch, epoch, "stable");
    assert_ne!(other.position("a", 0).unwrap().epoch, epoch);
    // Empty and without members: the ring and its epoch go.
    h.vacate("a");
    assert_ne!(h.position("a", 2).unwrap().epoch, epoch);
    // A ring with messages outlives its members.
    let epoch = h.position("a", 2).unwrap().epoch;
    add(&mut h, "a", 3);
    h.vacate("a");
    assert_eq!(h.position("a", 4).unwrap(), Position { offset: 1, epoch });
}

#[test]
fn size_evicts_the_oldest_of_a_room() {
    let mut h = store(3, 60_000, 1 << 20);
    for t in 0..5 {
        add(&mut h, "a", t);
    }
    let epoch = h.position("a", 5).unwrap().epoch;
    assert_eq!(
        texts(&h.recent("a", 10, 5).unwrap().1),
        ["a#3", "a#4", "a#5"]
    );
    let lost = h.since("a", 1, &epoch, 5).unwrap();
    assert!(!lost.recovered, "a#2 was evicted");
    assert_eq!(texts(&lost.messages), ["a#3", "a#4", "a#5"]);
    let whole = h.since("a", 2, &epoch, 5).unwrap();
    assert!(whole.recovered);
    assert_eq!(texts(&whole.messages), ["a#3", "a#4", "a#5"]);
    assert_eq!(whole.position.offset, 5);
    let current = h.since("a", 5, &epoch, 5).unwrap();
    assert!(current.recovered && current.messages.is_empty());
}

#[test]
fn ttl_evicts_old_messages_across_rooms() {
    let mut h = store(10, 1_000, 1 << 20);
    add(&mut h, "a", 0);
    add(&mut h, "b", 500);
    add(&mut h, "a", 900);
    add(&mut h, "b", 1_000);
    assert_eq!(texts(&h.recent("a", 10, 1_000).unwrap().1), ["a#2"]);
    assert_eq!(texts(&h.recent("b", 10, 1_500).unwrap().1), ["b#2"]);
    assert!(h.recent("a", 10, 5_000).unwrap().1.is_empty());
    assert_eq!(
        h.bytes(),
        ROOM_OVERHEAD + 1 + 3 + ENTRY_OVERHEAD,
        "b's expire later"
    );
    assert!(h.recent("b", 10, 5_000).unwrap().1.is_empty());
    // Members keep their room's offsets through an empty ring.
    assert_eq!(h.position("a", 5_000).unwrap().offset, 2);
    assert_eq!(h.bytes(), 0);
}

#[test]
fn the_global_budget_evicts_the_oldest_of_every_room() {
    let one = ROOM_OVERHEAD + 1 + 3 + ENTRY_OVERHEAD; // a room with one "x#N" message
    let mut h = store(100, 60_000, 2 * one + 2 * (3 + ENTRY_OVERHEAD));
    add(&mut h, "a", 0);
    add(&mut h, "b", 1);
    add(&mut h, "a", 2);
    add(&mut h, "b", 3);
    assert_eq!(h.bytes(), 2 * one + 2 * (3 + ENTRY_OVERHEAD));
    add(&mut h, "c", 4);
    // Room c's ring costs a room and a message: a#1, b#1 and then a#2
    // (the oldest left, freeing room a's ring too) make room.
    assert!(h.recent("a", 10, 4).unwrap().1.is_empty());
    assert_eq!(texts(&h.recent("b", 10, 4).unwrap().1), ["b#2"]);
    assert_eq!(texts(&h.recent("c", 10, 4).unwrap().1), ["c#1"]);
    assert!(h.bytes() <= 2 * one + 2 * (3 + ENTRY_OVERHEAD));
}

#[test]
fn rings_without_members_go_when_evicted() {
    let mut h = store(1, 1_000, 1 << 20);
    h.append("x", 0, nobody, |_| b"1".to_vec().into());
    let epoch = h.position("x", 0).unwrap().epoch;
    h.append("y", 2_000, nobody, |_| b"2".to_vec().into());
    // x's only message expired and x has no member: its history is lost.
    let after = h.since("x", 1, &epoch, 2_000).unwrap();
    assert!(!after.recovered);
    assert_ne!(after.position.epoch, epoch);
    assert_eq!(after.position.offset, 0);
}

#[test]
fn recovery_refuses_other_epochs_and_caps_the_replay() {
    let mut h = store(1_000, 60_000, 1 << 24);
    for t in 0..400 {
        add(&mut h, "a", t);
    }
    let epoch = h.position("a", 400).unwrap().epoch;
    let wrong = h.since("a", 10, "other", 400).unwrap();
    assert!(!wrong.recovered && wrong.messages.is_empty());
    let future = h.since("a", 401, &epoch, 400).unwrap();
    assert!(!future.recovered);
    let capped = h.since("a", 0, &epoch, 400).unwrap();
    assert!(!capped.recovered);
    assert_eq!(capped.messages.len(), MAX_REPLAY);
    assert_eq!(texts(&capped.messages[..1]), ["a#101"], "the newest 300");
    let exact = h.since("a", 100, &epoch, 400).unwrap();
    assert!(exact.recovered);
    assert_eq!(exact.messages.len(), MAX_REPLAY);
}
