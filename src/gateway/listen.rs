//! Turning `host` + `port` settings into bound listeners.

use mio::net::TcpListener;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// Addresses a `host` setting stands for. `localhost` is both loopbacks.
pub fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        ]);
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve `{host}`: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("`{host}` resolves to no address"),
        ));
    }
    Ok(addrs)
}

/// Binds every address of `host`. With port 0 the first bind picks a free
/// port and the others reuse it. An IPv6 loopback that the machine lacks is
/// skipped when an IPv4 one is bound.
pub fn bind_all(host: &str, port: u16) -> io::Result<Vec<TcpListener>> {
    let addrs = resolve(host, port)?;
    let mut listeners: Vec<TcpListener> = Vec::new();
    let mut chosen = port;
    for mut addr in addrs {
        if chosen != 0 {
            addr.set_port(chosen);
        }
        match TcpListener::bind(addr) {
            Ok(listener) => {
                chosen = listener.local_addr()?.port();
                listeners.push(listener);
            }
            Err(e) if addr.ip().is_loopback() && addr.is_ipv6() && !listeners.is_empty() => {
                log::debug!("skipping {addr}: {e}");
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot listen on {addr}: {e}"),
                ))
            }
        }
    }
    Ok(listeners)
}

/// The addresses the listeners are bound to (with the ports port 0 picked).
pub fn local_addrs(listeners: &[TcpListener]) -> Vec<SocketAddr> {
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect()
}
