//! Fuzzes hosts cluster-wide: other nodes' envelopes about hosts decoded
//! and handled beside cross-node requests (src/proto/cluster/hosts.rs).
//! The harness lives in the library (`tether::proto::fuzzing::cluster`) so
//! that `proto::fuzzing::regressions` replays saved inputs through the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tether::proto::fuzzing::cluster(data);
});
