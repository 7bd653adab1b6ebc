//! Node for the tests that run JavaScript (tests/compression.rs,
//! tests/js_client.rs): the `ws` package, installed once with npm into
//! target/tmp/node-ws.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Panics with one line naming the install command when node is missing.
pub fn require_node() {
    assert!(
        super::succeeds("node", &["--version"]),
        "node not found: this test needs node and npm (`apt-get install nodejs npm`)"
    );
}

/// A directory whose `node_modules/ws` is the ws package, installed once
/// with npm (across test processes through an atomic rename).
pub fn node_ws() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.join("node-ws");
    if dir.join("node_modules/ws/package.json").is_file() {
        return dir;
    }
    let staging = tmp.join(format!("node-ws.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).expect("create the npm staging dir");
    let status = Command::new("npm")
        .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(&staging)
        .arg("ws@8")
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "npm not found ({e}): this test needs node and npm (`apt-get install nodejs npm`)"
            )
        });
    assert!(status.success(), "`npm install ws@8` failed");
    // Another test process may have won the race: either copy works.
    if std::fs::rename(&staging, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    dir
}
