//! A Python HTTP backend for the `url` host tests (SPEC §11): a script in
//! the test's directory that prints its port first; killed on drop.

use super::SECRET;
use serde_json::Value;
use std::path::Path;

/// The backend process, killed on drop.
pub struct Backend {
    pub child: std::process::Child,
    pub port: u16,
}

impl Backend {
    /// Runs `script` (in `dir`, with `SECRET` in its environment), which
    /// prints its port first.
    pub fn start_script_with(dir: &Path, script: &str, envs: &[(&str, &str)]) -> Backend {
        use std::io::BufRead;
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .envs(envs.iter().copied())
            .current_dir(dir)
            .env("SECRET", SECRET)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the backend");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the backend's port");
        Backend { child, port }
    }

    /// The JSON lines a script logged to `dir/log`.
    pub fn logged(dir: &Path, log: &str) -> Vec<Value> {
        std::fs::read_to_string(dir.join(log))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn posts(dir: &Path) -> Vec<Value> {
        Backend::logged(dir, "posts.log")
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
