//! The descriptor limit (`RLIMIT_NOFILE`) at start: the soft limit raised to
//! the hard one, and checked against the sockets the settings may hold.

use super::config::ShellConfig;
use libc::rlim_t;
use std::io;

/// Descriptors the process holds besides client sockets: stdio, the poll,
/// the signal pipe, the listeners, the spare, the systemd socket, and the
/// files a reload reads.
pub const PROCESS_DESCRIPTORS: rlim_t = 16;
/// What the soft limit is raised to when the hard one is unlimited.
const UNLIMITED_CAP: rlim_t = 1 << 20;

/// A soft and a hard `RLIMIT_NOFILE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    pub soft: rlim_t,
    pub hard: rlim_t,
}

/// The limits in force now.
pub fn current() -> io::Result<NofileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(NofileLimit {
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// The soft limit a process may raise itself to: the hard one, capped
/// where that is unlimited.
pub fn reachable(limit: NofileLimit) -> rlim_t {
    if limit.hard == libc::RLIM_INFINITY {
        UNLIMITED_CAP.max(limit.soft)
    } else {
        limit.hard
    }
}

/// Raises the soft limit as far as it goes; returns the limits then in force.
pub fn raise() -> io::Result<NofileLimit> {
    let before = current()?;
    let target = reachable(before);
    if target <= before.soft {
        return Ok(before);
    }
    let limit = libc::rlimit {
        rlim_cur: target,
        rlim_max: before.hard,
    };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    current()
}

/// Descriptors the settings may need at once: every socket the shell holds
/// at most (`ShellConfig::socket_capacity`) and the process's own.
pub fn descriptors_needed(cfg: &ShellConfig) -> rlim_t {
    cfg.socket_capacity() as rlim_t + PROCESS_DESCRIPTORS
}

/// A warning when `limit` descriptors cannot hold what the settings allow:
/// the process still starts, and clients beyond the limit get 503.
pub fn fit_warning(cfg: &ShellConfig, limit: rlim_t) -> Option<String> {
    let needed = descriptors_needed(cfg);
    if needed <= limit {
        return None;
    }
    let reserved = needed - cfg.max_connections as rlim_t;
    let fits = limit.saturating_sub(reserved);
    let lower = if fits > 0 {
        format!(" or set limits.max_connections to at most {fits}")
    } else {
        String::new()
    };
    Some(format!(
        "limits.max_connections: {} connections need up to {needed} file descriptors \
         ({reserved} more for refusals, HTTP and the process), but RLIMIT_NOFILE is {limit}: \
         beyond it new clients get 503; raise the limit (systemd LimitNOFILE=, ulimit -n){lower}",
        cfg.max_connections
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_connections: usize) -> ShellConfig {
        ShellConfig {
            max_connections,
            ..ShellConfig::for_tests()
        }
    }

    #[test]
    fn settings_that_fit_the_limit_say_nothing() {
        let c = cfg(100);
        let needed = descriptors_needed(&c);
        assert_eq!(needed, c.socket_capacity() as rlim_t + PROCESS_DESCRIPTORS);
        assert_eq!(fit_warning(&c, needed), None);
        assert_eq!(fit_warning(&c, 1 << 20), None);
    }

    #[test]
    fn settings_beyond_the_limit_name_the_key_the_figures_and_what_fits() {
        let c = cfg(1024);
        let reserved = descriptors_needed(&c) - 1024;
        let warning = fit_warning(&c, 1024).expect("1024 connections do not fit 1024 fds");
        assert!(warning.starts_with("limits.max_connections: 1024 connections"));
        assert!(warning.contains("RLIMIT_NOFILE is 1024"), "{warning}");
        let fits = format!("at most {}", 1024 - reserved);
        assert!(warning.contains(&fits), "{warning}");
        // A limit below the reserves alone: only raising it helps.
        let warning = fit_warning(&c, 64).expect("does not fit");
        assert!(!warning.contains("at most"), "{warning}");
        assert!(warning.contains("LimitNOFILE"), "{warning}");
    }

    #[test]
    fn the_soft_limit_goes_up_to_the_hard_one_capped_when_unlimited() {
        let limited = NofileLimit {
            soft: 1024,
            hard: 4096,
        };
        assert_eq!(reachable(limited), 4096);
        let unlimited = NofileLimit {
            soft: 1024,
            hard: libc::RLIM_INFINITY,
        };
        assert_eq!(reachable(unlimited), UNLIMITED_CAP);
        let now = current().expect("getrlimit");
        assert!(now.soft <= now.hard);
    }
}
