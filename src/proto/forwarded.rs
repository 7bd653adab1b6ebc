//! The client's address behind a trusted reverse proxy (SPEC §13,
//! `server.websocket.trusted_proxies`): the rightmost `X-Forwarded-For`
//! address that is not itself a trusted proxy, else `X-Real-IP`. A header
//! from any other peer changes nothing.

use std::net::{IpAddr, SocketAddr};

/// The address a connection from `peer` stands for.
pub fn client_ip(
    peer: IpAddr,
    trusted: impl Fn(IpAddr) -> bool,
    forwarded_for: Option<&str>,
    real_ip: Option<&str>,
) -> IpAddr {
    if !trusted(peer) {
        return peer;
    }
    if let Some(chain) = forwarded_for {
        // Right to left: each hop appended the address it saw. Past an entry
        // that is not an address nothing further left can be trusted.
        for entry in chain.rsplit(',') {
            match parse_address(entry) {
                Some(ip) if trusted(ip) => continue,
                Some(ip) => return ip,
                None => break,
            }
        }
    }
    real_ip.and_then(parse_address).unwrap_or(peer)
}

/// `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`, or either with a `:port`.
fn parse_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(canonical(addr.ip()));
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse().ok())
        .map(canonical)
}

/// IPv4-mapped IPv6 addresses count as their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxy(candidate: IpAddr) -> bool {
        candidate == ip("10.0.0.2") || candidate == ip("10.0.0.3")
    }

    #[test]
    fn rightmost_untrusted_forwarded_address() {
        let peer = ip("10.0.0.2");
        let got = |xff: Option<&str>, real: Option<&str>| client_ip(peer, proxy, xff, real);
        assert_eq!(got(Some("203.0.113.7"), None), ip("203.0.113.7"));
        // A client may prepend anything; only what the proxies appended counts.
        assert_eq!(
            got(Some("1.1.1.1, 192.168.1.20, 10.0.0.3"), None),
            ip("192.168.1.20")
        );
        assert_eq!(got(Some("[2001:db8::5]:4711"), None), ip("2001:db8::5"));
        assert_eq!(got(Some("192.168.1.9:5000"), None), ip("192.168.1.9"));
        assert_eq!(
            got(Some("10.0.0.3"), Some("192.168.1.4")),
            ip("192.168.1.4")
        );
        assert_eq!(got(Some("junk"), Some("192.168.1.4")), ip("192.168.1.4"));
        assert_eq!(got(Some("1.2.3.4, junk"), None), peer);
        assert_eq!(got(None, Some("::ffff:192.168.1.8")), ip("192.168.1.8"));
        assert_eq!(got(None, Some("nope")), peer);
        assert_eq!(got(None, None), peer);
    }

    #[test]
    fn headers_from_an_untrusted_peer_change_nothing() {
        let peer = ip("192.168.1.50");
        assert_eq!(
            client_ip(peer, proxy, Some("203.0.113.7"), Some("203.0.113.8")),
            peer
        );
    }
}
