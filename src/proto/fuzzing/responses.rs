//! Fuzzing the backend response parser (SPEC §11 `url` hosts).

use crate::proto::http_response::{Parsed, ResponseParser};

/// The first byte picks the body bound; the rest is the response.
///
/// Invariants: a body never passes its bound; the answer does not depend on
/// how the bytes arrive (fed whole, or in two pieces with a parse between);
/// a prefix is never `Bad` when the whole is `Done` without end of file;
/// taking responses one after another (pipelining) starts with that same
/// answer, and every later one keeps the bound.
pub fn responses(data: &[u8]) {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let max = usize::from(first) * 4;
    for eof in [false, true] {
        let mut whole = ResponseParser::new(max);
        whole.feed(bytes);
        let answer = whole.parse(eof);
        if let Parsed::Done(response) = &answer {
            assert!(response.body.len() <= max, "body over its bound");
        }
        let cut = usize::from(first) % (bytes.len() + 1);
        let mut pieces = ResponseParser::new(max);
        pieces.feed(&bytes[..cut]);
        let early = pieces.parse(false);
        pieces.feed(&bytes[cut..]);
        assert_eq!(pieces.parse(eof), answer, "depends on the pieces");
        if matches!(answer, Parsed::Done(_)) && !eof {
            assert!(!matches!(early, Parsed::Bad(_)), "a prefix was bad");
        }
        let mut pipelined = ResponseParser::pipelined(max, 1);
        pipelined.feed(bytes);
        assert_eq!(
            pipelined.next(eof),
            answer,
            "the first of a pipeline differs"
        );
        for _ in 0..bytes.len() {
            match pipelined.next(eof) {
                Parsed::Done(response) => {
                    assert!(response.body.len() <= max, "body over its bound")
                }
                _ => break,
            }
        }
    }
}
