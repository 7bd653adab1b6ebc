//! Replays the fuzzers' seed corpus and every saved crashing input through
//! the same harness functions the `cargo fuzz` targets run (see
//! `tests/fuzz/run.sh`), under `cargo test`.
//!
//! `tests/fuzz/corpus/<target>/`: seeds (valid requests, frames, sessions).
//! `tests/fuzz/regressions/<target>/`: inputs that once broke an invariant;
//! each must now pass.

use crate::proto::fuzzing;
use std::fs;
use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("read a fuzz input directory").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no saved inputs for the {target} target");
    files
}

fn replay(target: &str, harness: fn(&[u8])) {
    for path in inputs(target) {
        let data = fs::read(&path).expect("read a fuzz input");
        let result = std::panic::catch_unwind(|| harness(&data));
        assert!(result.is_ok(), "{target}: {} fails", path.display());
    }
}

#[test]
fn handshake_inputs() {
    replay("handshake", fuzzing::handshake);
}

#[test]
fn frame_inputs() {
    replay("frames", fuzzing::frames);
}

#[test]
fn dispatch_inputs() {
    replay("dispatch", fuzzing::dispatch);
}

#[test]
fn response_inputs() {
    replay("responses", fuzzing::responses);
}

/// The dispatch inputs again on an "action" listener (configuration bit 4),
/// and with their bytes shuffled a little: the SPEC §13 reader and writer
/// hold the same invariants.
#[test]
fn dispatch_inputs_on_an_action_listener() {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for path in inputs("dispatch") {
        let mut data = fs::read(&path).expect("read a fuzz input");
        if data.is_empty() {
            continue;
        }
        data[0] |= 16;
        for round in 0..64 {
            if round > 0 {
                // xorshift: a byte of the input replaced, deterministically.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = 1 + (state as usize) % data.len().max(2).saturating_sub(1);
                if let Some(byte) = data.get_mut(at) {
                    *byte = (state >> 32) as u8;
                }
            }
            let result = std::panic::catch_unwind(|| fuzzing::dispatch(&data));
            assert!(result.is_ok(), "{} (round {round}) fails", path.display());
        }
    }
}

#[test]
fn cluster_inputs() {
    replay("cluster", fuzzing::cluster);
}

#[test]
fn resp_inputs() {
    replay("resp", fuzzing::resp);
}
