//! systemd's notification protocol (`sd_notify`): `READY=1` once listening,
//! `STOPPING=1` on shutdown, `WATCHDOG=1` at half of `WATCHDOG_USEC`.
//! Without `NOTIFY_SOCKET` every call is a no-op.

use log::{debug, warn};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

enum Target {
    Path(PathBuf),
    /// A Linux abstract socket (`@name` in `NOTIFY_SOCKET`).
    Abstract(Vec<u8>),
}

pub struct Notifier {
    socket: Option<(UnixDatagram, Target)>,
    watchdog_interval_ms: Option<u64>,
}

/// The watchdog period to ping at (half of `WATCHDOG_USEC`), when the
/// watchdog is meant for this process (`WATCHDOG_PID` unset or ours).
fn watchdog_interval_ms(usec: Option<&str>, pid: Option<&str>) -> Option<u64> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    Some((usec / 2_000).max(1))
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let socket = env("NOTIFY_SOCKET").and_then(|addr| {
            let target = match addr.strip_prefix('@') {
                Some(name) => Target::Abstract(name.as_bytes().to_vec()),
                None => Target::Path(PathBuf::from(addr)),
            };
            match UnixDatagram::unbound() {
                Ok(sock) => Some((sock, target)),
                Err(e) => {
                    warn!("NOTIFY_SOCKET is set but no socket can be made: {e}");
                    None
                }
            }
        });
        let watchdog = watchdog_interval_ms(
            env("WATCHDOG_USEC").as_deref(),
            env("WATCHDOG_PID").as_deref(),
        );
        Notifier {
            watchdog_interval_ms: socket.as_ref().and(watchdog),
            socket,
        }
    }

    /// How often to send `WATCHDOG=1`, if systemd asked for it.
    pub fn watchdog_interval_ms(&self) -> Option<u64> {
        self.watchdog_interval_ms
    }

    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=listening");
    }

    pub fn reloading(&self, monotonic_usec: u64) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}"));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    fn send(&self, state: &str) {
        let Some((sock, target)) = &self.socket else {
            return;
        };
        let sent = match target {
            Target::Path(path) => sock.send_to(state.as_bytes(), path),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
            }
        };
        match sent {
            Ok(_) => debug!("sd_notify: {}", state.replace('\n', " ")),
            Err(e) => warn!("sd_notify to NOTIFY_SOCKET failed: {e}"),
        }
    }
}

/// `CLOCK_MONOTONIC` in microseconds, as systemd wants with `RELOADING=1`.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into the timespec we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_is_half_the_period_and_only_for_this_process() {
        assert_eq!(watchdog_interval_ms(Some("10000000"), None), Some(5_000));
        let me = std::process::id().to_string();
        assert_eq!(watchdog_interval_ms(Some("4000"), Some(&me)), Some(2));
        assert_eq!(watchdog_interval_ms(Some("10000000"), Some("1")), None);
        assert_eq!(watchdog_interval_ms(Some("0"), None), None);
        assert_eq!(watchdog_interval_ms(Some("x"), None), None);
        assert_eq!(watchdog_interval_ms(None, None), None);
    }

    #[test]
    fn sends_datagrams_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("tether-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: Some((UnixDatagram::unbound().unwrap(), Target::Path(path.clone()))),
            watchdog_interval_ms: None,
        };
        notifier.ready();
        notifier.watchdog();
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=listening");
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
