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
fn resp_inputs() {
    replay("resp", fuzzing::resp);
}
