//! The shipped deployment: `systemd/tether.service` and the packaged
//! `systemd/settings.json` (the .deb's /etc/tether/settings.json), run the way
//! systemd runs them: the unit's environment, working directory `/`, a
//! `STATE_DIRECTORY`, `ExecStartPre` then `ExecStart`, READY=1 on a
//! `NOTIFY_SOCKET` this test listens on, `ExecReload`'s SIGHUP, SIGTERM.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const UNIT: &str = include_str!("../systemd/tether.service");
const PACKAGED_SETTINGS: &str = include_str!("../systemd/settings.json");

/// `[Service]` keys of the unit, each with every value it is given.
fn service_section() -> HashMap<String, Vec<String>> {
    let mut keys: HashMap<String, Vec<String>> = HashMap::new();
    let mut in_service = false;
    for line in UNIT.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (key, value) = line.split_once('=').expect("KEY=VALUE line in the unit");
        keys.entry(key.to_string())
            .or_default()
            .push(value.to_string());
    }
    keys
}

fn one<'a>(keys: &'a HashMap<String, Vec<String>>, key: &str) -> &'a str {
    match keys.get(key).map(Vec::as_slice) {
        Some([value]) => value,
        other => panic!("the unit sets {key} {other:?}; expected exactly once"),
    }
}

/// A `1.5G` / `256M` / `64K` / plain-bytes size as systemd reads it.
fn bytes(size: &str) -> u64 {
    let (digits, unit) = size.split_at(size.trim_end_matches(char::is_alphabetic).len());
    let n: u64 = digits.parse().expect("a size in bytes");
    n * match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        other => panic!("unit {other} in {size}"),
    }
}

/// `30s` / `2min` / `500ms` as systemd reads it, in microseconds.
fn usec(span: &str) -> u64 {
    let (digits, unit) = span.split_at(span.trim_end_matches(char::is_alphabetic).len());
    let n: u64 = digits.parse().expect("a time span");
    n * match unit {
        "" | "s" => 1_000_000,
        "ms" => 1_000,
        "min" => 60_000_000,
        other => panic!("unit {other} in {span}"),
    }
}

/// The unit's `Environment=` assignments.
fn unit_environment(keys: &HashMap<String, Vec<String>>) -> Vec<(String, String)> {
    keys.get("Environment")
        .into_iter()
        .flatten()
        .flat_map(|line| line.split_whitespace())
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("NAME=VALUE in Environment=");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The arguments of an `Exec*=` line whose program is /usr/bin/tether.
fn tether_args(line: &str) -> Vec<String> {
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("/usr/bin/tether"), "{line}");
    words.map(String::from).collect()
}

#[test]
fn the_unit_declares_what_the_deployment_relies_on() {
    let keys = service_section();
    assert_eq!(one(&keys, "Type"), "notify");
    assert_eq!(
        tether_args(one(&keys, "ExecStartPre")),
        ["check-config"],
        "the settings are checked before every start"
    );
    assert_eq!(tether_args(one(&keys, "ExecStart")), ["serve"]);
    assert_eq!(one(&keys, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one(&keys, "Restart"), "on-failure");
    assert!(usec(one(&keys, "WatchdogSec")) >= 10_000_000);
    assert_eq!(one(&keys, "DynamicUser"), "yes");
    assert_eq!(one(&keys, "StateDirectory"), "tether");
    assert_eq!(one(&keys, "ConfigurationDirectory"), "tether");
    assert_eq!(one(&keys, "EnvironmentFile"), "-/etc/tether/env");
    // tether looks in ./settings.json only (SPEC §1): the unit names the file.
    assert!(unit_environment(&keys)
        .contains(&("TETHER_CONFIG".into(), "/etc/tether/settings.json".into())));
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(one(&keys, key), value, "{key}");
    }
    // sd_notify needs AF_UNIX; the listeners need AF_INET/AF_INET6.
    let families: Vec<&str> = one(&keys, "RestrictAddressFamilies")
        .split_whitespace()
        .collect();
    for family in ["AF_UNIX", "AF_INET", "AF_INET6"] {
        assert!(families.contains(&family), "{family} in {families:?}");
    }

    // The packaged settings fit the unit: no capability, so no port below
    // 1024; a descriptor for every connection.
    let settings: Value = serde_json::from_str(PACKAGED_SETTINGS).unwrap();
    let port = settings["server"]["websocket"]["port"].as_u64().unwrap();
    assert!(port >= 1024, "port {port} needs CAP_NET_BIND_SERVICE");
    let max_connections = settings["limits"]["max_connections"].as_u64().unwrap();
    let nofile: u64 = one(&keys, "LimitNOFILE").parse().unwrap();
    assert!(nofile >= max_connections + 64, "LimitNOFILE {nofile}");
    assert!(bytes(one(&keys, "MemoryMax")) >= 32 << 20);
}

/// `tether` started as systemd would: only the unit's environment plus
/// `extra`, in `/`, with stderr collected.
struct Unit {
    child: Option<Child>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Unit {
    fn command(env: &[(String, String)], args: &[String]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir("/")
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn start(env: &[(String, String)], args: &[String]) -> Unit {
        let mut child = Unit::command(env, args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tether serve");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Unit {
            child: Some(child),
            logs,
        }
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The first log line containing `needle`, waiting briefly: the reader
    /// thread may not have copied a line the process already wrote.
    fn logged(&self, needle: &str) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let found = {
                let lines = self.logs.lock().unwrap();
                lines.iter().find(|l| l.contains(needle)).cloned()
            };
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("running").id();
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }

    fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("tether did not exit in {timeout:?}; logs:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Receives notifications until one has the line `want`; returns all seen.
fn expect_notification(socket: &UnixDatagram, want: &str, unit: &Unit) -> Vec<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = text.lines().any(|l| l == want);
                seen.push(text);
                if found {
                    return seen;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    panic!(
        "no {want} on NOTIFY_SOCKET; got {seen:?}; logs:\n{}",
        unit.logs()
    );
}

#[test]
fn the_packaged_unit_and_settings_run_under_a_notify_socket() {
    let keys = service_section();
    let tmp = TempDir::new("unit");
    let etc = tmp.path().join("etc-tether");
    let state = tmp.path().join("state");
    for dir in [&etc, &state] {
        std::fs::create_dir(dir).unwrap();
    }
    // systemd creates StateDirectory= with StateDirectoryMode=.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();

    // The packaged settings, kept on loopback with ports chosen by the kernel.
    let mut settings: Value = serde_json::from_str(PACKAGED_SETTINGS).unwrap();
    merge(
        &mut settings,
        json!({"server": {"websocket": {"host": "127.0.0.1", "port": 0},
                          "health": {"host": "127.0.0.1", "port": 0}}}),
    );
    let config = etc.join("settings.json");
    std::fs::write(&config, serde_json::to_string_pretty(&settings).unwrap()).unwrap();

    let notify_path = tmp.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    // What systemd puts in the environment: the unit's Environment= (with the
    // config path moved into the temp dir), the directories, the notify
    // socket and a short watchdog. No JWT_SECRET: /etc/tether/env is optional.
    let mut env: Vec<(String, String)> = unit_environment(&keys)
        .into_iter()
        .map(|(k, v)| match k.as_str() {
            "TETHER_CONFIG" => (k, config.display().to_string()),
            _ => (k, v),
        })
        .collect();
    for (k, v) in [
        ("STATE_DIRECTORY", state.as_path()),
        ("CONFIGURATION_DIRECTORY", etc.as_path()),
        ("NOTIFY_SOCKET", notify_path.as_path()),
    ] {
        env.push((k.into(), v.display().to_string()));
    }
    env.push(("WATCHDOG_USEC".into(), "400000".into()));

    // ExecStartPre
    let pre = Unit::command(&env, &tether_args(one(&keys, "ExecStartPre")))
        .output()
        .unwrap();
    assert!(
        pre.status.success(),
        "ExecStartPre failed: {}",
        String::from_utf8_lossy(&pre.stderr)
    );
    // ExecStart
    let mut unit = Unit::start(&env, &tether_args(one(&keys, "ExecStart")));
    expect_notification(&notify, "READY=1", &unit);

    // Listening by READY=1; the generated key is in the state directory.
    let marker = "listening on ws://127.0.0.1:";
    let line = unit
        .logged(marker)
        .unwrap_or_else(|| panic!("READY=1 before listening; logs:\n{}", unit.logs()));
    let port = port_after(&line, marker).expect("a port in the listening line");
    let key = state.join("jwt.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The worst case tether logs fits under the unit's MemoryMax.
    let ceiling = unit
        .logged("MiB worst case")
        .expect("the memory ceiling line");
    let mib: u64 = ceiling
        .split(" = ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("N MiB in the memory line");
    let memory_max = bytes(one(&keys, "MemoryMax")) >> 20;
    assert!(
        mib < memory_max,
        "worst case {mib} MiB >= MemoryMax {memory_max} MiB"
    );

    // A token minted by `tether token` in the same environment (an operator
    // on the Pi) opens a session.
    let out = Unit::command(
        &env,
        &[
            "token",
            "--sub",
            "ops",
            "--permissions",
            "publish",
            "--rooms",
            "lobby",
        ]
        .map(String::from),
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (mut ws, authed) = open_authed(port, &token);
    assert_eq!(authed["data"]["sub"], "ops");
    assert_pong(&mut ws);

    expect_notification(&notify, "WATCHDOG=1", &unit);

    // ExecReload: SIGHUP, then RELOADING=1 and READY=1 again.
    assert!(one(&keys, "ExecReload").contains("-HUP"));
    unit.signal(libc::SIGHUP);
    expect_notification(&notify, "RELOADING=1", &unit);
    expect_notification(&notify, "READY=1", &unit);
    assert_pong(&mut ws);

    // systemctl stop: SIGTERM, STOPPING=1, exit 0 (not a failure to restart).
    unit.signal(libc::SIGTERM);
    expect_notification(&notify, "STOPPING=1", &unit);
    assert_eq!(expect_close(&mut ws), 1001);
    let status = unit.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "logs:\n{}", unit.logs());
    assert!(!unit.logs().contains(&token), "the token was logged");
    assert!(Path::new(&key).exists());
}
