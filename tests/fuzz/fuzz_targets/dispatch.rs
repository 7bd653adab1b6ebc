//! Fuzzes the hub's message dispatcher and host link (src/proto/hub/, host_link.rs).
//! The harness lives in the library (`tether::proto::fuzzing::dispatch`) so that
//! `proto::fuzzing::regressions` replays saved inputs through the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tether::proto::fuzzing::dispatch(data);
});
