//! Fuzzing the upgrade request parser.

use super::{authenticator, T0_UNIX};
use crate::proto::handshake::{self, Parsed, Request, MAX_REQUEST_BYTES};

/// The upgrade request parser (and the token check the shell runs on it).
///
/// Invariants: a complete head fits the buffer and the size limit, and reads
/// the same from a buffer cut right after it; every shorter prefix of it is
/// `Partial` (so arrival in pieces gives the same answer); the 101 and refusal
/// answers are well-formed HTTP.
pub fn handshake(data: &[u8]) {
    let whole = handshake::parse(data);
    match &whole {
        Parsed::Partial => assert!(data.len() < MAX_REQUEST_BYTES, "partial past the limit"),
        Parsed::Complete(request, n) => {
            let n = *n;
            assert!(n <= data.len() && n <= MAX_REQUEST_BYTES, "head length {n}");
            assert_eq!(
                handshake::parse(&data[..n]),
                whole,
                "head depends on what follows"
            );
            for cut in [n - 1, n / 2, usize::from(data[0]) % n] {
                assert_eq!(
                    handshake::parse(&data[..cut]),
                    Parsed::Partial,
                    "prefix of {cut} bytes"
                );
            }
            if let Request::Upgrade(upgrade) = request {
                assert_eq!(upgrade.accept.len(), 28, "accept key");
                assert!(!upgrade.path.contains('?'), "query left in the path");
                assert_ne!(upgrade.token.as_deref(), Some(""), "empty token");
                if let Some(token) = &upgrade.token {
                    // The shell checks a handshake token before upgrading.
                    let _ = authenticator().verify(token, T0_UNIX);
                }
                let answer = handshake::switching_protocols(upgrade);
                check_response(answer.as_bytes(), 101);
            }
        }
        Parsed::Invalid(refusal) => {
            let answer = handshake::refusal_response(*refusal, "malformed request");
            check_response(answer.as_bytes(), refusal.status());
        }
    }
    // A prefix that is already complete must agree with the whole.
    let cut = usize::from(data.first().copied().unwrap_or(0)) * 31 % (data.len() + 1);
    if let complete @ Parsed::Complete(..) = handshake::parse(&data[..cut]) {
        assert_eq!(
            complete, whole,
            "a complete prefix disagrees with the whole"
        );
    }
}

/// An HTTP answer: complete head with `status`, and a body of its Content-Length.
fn check_response(bytes: &[u8], status: u16) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("answer is not a complete HTTP head: {other:?}"),
    };
    assert_eq!(response.code, Some(status));
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Content-Length"))
        .map(|h| {
            std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(usize::MAX)
        })
        .unwrap_or(0);
    assert_eq!(head + length, bytes.len(), "body length");
}
