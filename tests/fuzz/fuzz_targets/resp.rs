//! Fuzzes the Redis link's RESP decoder path (src/proto/redis/).
//! The harness lives in the library (`tether::proto::fuzzing::resp`) so that
//! `proto::fuzzing::regressions` replays saved inputs through the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tether::proto::fuzzing::resp(data);
});
