//! Running a script of tests/browser/ (Python Playwright driving Debian's
//! chromium headless, see tests/browser/harness.py), with one-line failures
//! when a prerequisite is missing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where screenshots go (kept as CI artefacts): target/browser.
pub fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("../browser")
}

/// Panics with one line naming the install command when chromium or
/// Python playwright is missing.
pub fn require_browser() {
    let chromium = ["chromium", "chromium-browser"]
        .iter()
        .any(|name| super::succeeds(name, &["--version"]));
    assert!(
        chromium,
        "no chromium: the browser tests need `apt-get install chromium`"
    );
    assert!(
        super::succeeds("python3", &["-c", "import playwright.sync_api"]),
        "no Python playwright: the browser tests need `pip install playwright`"
    );
}

/// Runs `tests/browser/NAME` with `envs` (and TETHER_ARTIFACTS) for at most
/// `limit`; returns the `ok CHECK` names it printed, or panics with its
/// last stderr line when it fails.
pub fn run_script(name: &str, envs: &[(&str, String)], limit: Duration) -> Vec<String> {
    require_browser();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(name);
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .env("TETHER_ARTIFACTS", artifacts_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = super::KillOnDrop(cmd.spawn().expect("run python3"));
    let stdout = child.0.stdout.take().expect("piped stdout");
    let stderr = child.0.stderr.take().expect("piped stderr");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let errors = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let deadline = Instant::now() + limit;
    let mut passed = Vec::new();
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        eprintln!("{name}: {line}");
        if let Some(check) = line.strip_prefix("ok ") {
            passed.push(check.to_string());
        }
    }
    if Instant::now() >= deadline {
        panic!("{name} did not finish within {limit:?}; passed {passed:?}");
    }
    let status = child.0.wait().expect("wait for python3");
    let errors = errors.join().unwrap_or_default();
    for line in &errors {
        eprintln!("{name} (stderr): {line}");
    }
    let last = errors
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .cloned()
        .unwrap_or_default();
    assert!(status.success(), "{name}: {last} (passed {passed:?})");
    passed
}
