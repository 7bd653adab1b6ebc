//! Fuzzes the HTTP upgrade request parser (src/proto/handshake.rs).
//! The harness lives in the library (`tether::proto::fuzzing::handshake`) so that
//! `proto::fuzzing::regressions` replays saved inputs through the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tether::proto::fuzzing::handshake(data);
});
