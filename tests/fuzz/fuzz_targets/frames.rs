//! Fuzzes the WebSocket frame decoder (src/proto/frame.rs).
//! The harness lives in the library (`tether::proto::fuzzing::frames`) so that
//! `proto::fuzzing::regressions` replays saved inputs through the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tether::proto::fuzzing::frames(data);
});
