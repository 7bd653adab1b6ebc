//! Fuzzes the HTTP backend response parser (src/proto/http_response.rs).
//! The harness lives in the library (`tether::proto::fuzzing::responses`) so that
//! `proto::fuzzing::regressions` replays saved inputs through the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tether::proto::fuzzing::responses(data);
});
