//! Fuzzes the TLS 1.3 record layer a session moves to past its handshake
//! (src/gateway/tls/record.rs). The harness lives in the library
//! (`tether::gateway::tls::fuzzing::records`) so that `cargo test` replays
//! saved inputs through the same code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tether::gateway::tls::fuzzing::records(data);
});
