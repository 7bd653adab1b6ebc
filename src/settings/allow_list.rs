//! The IP allow-list (`server.websocket.auth.allowed_ip`): parsing and matching.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::errors::SettingError;
use super::schema::Settings;

/// The parsed `allowed_ip`: networks as (address, prefix length) pairs, kept
/// masked so matching is a mask and a compare. The default allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpAllowList {
    all: bool,
    entries: Vec<(IpAddr, u8)>,
}

impl IpAllowList {
    /// Whether a client at `ip` may connect. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`, as a dual-stack socket reports IPv4 peers) match IPv4 entries.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.all {
            return true;
        }
        let ip = canonical(ip);
        self.entries
            .iter()
            .any(|&(network, prefix)| in_network(ip, network, prefix))
    }

    /// True when `*` is in the list.
    pub fn allows_all(&self) -> bool {
        self.all
    }

    /// Why clients reaching a listener bound to `bound` would all or partly be
    /// refused, or `None`. A loopback client's address is the loopback it
    /// connects to, so that one must be allowed; other clients come from
    /// elsewhere, so the list must hold at least one entry of the address's
    /// family (`::` also takes IPv4 clients, but its IPv6 ones need an entry).
    pub fn refuses_clients_at(&self, bound: SocketAddr) -> Option<String> {
        let ip = canonical(bound.ip());
        if self.all {
            return None;
        }
        if ip.is_loopback() {
            return (!self.allows(ip)).then(|| {
                format!(
                    "clients connecting to {bound} come from {ip}, which {KEY_ALLOWED_IP} does \
                     not allow: they are refused (add {ip} to it, or listen on an address it \
                     allows)"
                )
            });
        }
        let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
        let has_family = self
            .entries
            .iter()
            .any(|(net, _)| net.is_ipv4() == ip.is_ipv4());
        (!has_family).then(|| {
            format!(
                "clients connecting to {bound} over {family} are refused: {KEY_ALLOWED_IP} \
                 allows no {family} address (add their addresses or blocks to it, or *)"
            )
        })
    }
}

/// The settings key of the allow-list, for messages.
pub const KEY_ALLOWED_IP: &str = "server.websocket.auth.allowed_ip";

/// Parses a comma-separated list of IPv4/IPv6 addresses, CIDR blocks
/// (`192.168.1.0/24`, `fd00::/8`) and `*`. Whitespace around entries and empty
/// entries (a stray comma) are ignored; a list with no entry at all is an error,
/// since no client could connect.
pub fn parse_allowed_ips(s: &str) -> Result<IpAllowList, String> {
    let mut list = IpAllowList {
        all: false,
        entries: Vec::new(),
    };
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry == "*" {
            list.all = true;
            continue;
        }
        let network = parse_network(entry).ok_or_else(|| {
            format!(
                "invalid entry {entry:?}; expected IPv4/IPv6 addresses or CIDR blocks such as \
                 192.168.1.0/24, separated by commas, or * to allow all"
            )
        })?;
        list.entries.push(network);
    }
    if !list.all && list.entries.is_empty() {
        return Err("is empty, so no client could connect; use * to allow all".to_string());
    }
    Ok(list)
}

/// A list of addresses and CIDR blocks, one an entry (`trusted_proxies`); the
/// error names the index of the first bad entry. `*` is not an address here.
pub(super) fn parse_network_list(entries: &[String]) -> Result<IpAllowList, (usize, String)> {
    let mut list = IpAllowList {
        all: false,
        entries: Vec::with_capacity(entries.len()),
    };
    for (i, entry) in entries.iter().enumerate() {
        let network = parse_network(entry.trim()).ok_or_else(|| {
            (
                i,
                format!(
                    "invalid entry {entry:?}; expected an IPv4/IPv6 address or a CIDR block                      such as 10.0.0.0/8"
                ),
            )
        })?;
        list.entries.push(network);
    }
    Ok(list)
}

/// `ADDR` or `ADDR/PREFIX` -> masked (network, prefix); IPv4-mapped IPv6 blocks
/// become IPv4 ones so they match the way clients are matched.
fn parse_network(entry: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = match entry.split_once('/') {
        Some((address, prefix)) => (address.trim(), Some(prefix.trim())),
        None => (entry, None),
    };
    // Tolerate the URL-style "[::1]".
    let address = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    let address: IpAddr = address.parse().ok()?;
    let max = match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let prefix = match prefix {
        // Digits only: u8's parser would accept "+8".
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u8>().ok()?
        }
        Some(_) => return None,
        None => max,
    };
    if prefix > max {
        return None;
    }
    let (address, prefix) = match address {
        IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), prefix - 96),
            None => (address, prefix),
        },
        _ => (address, prefix),
    };
    Some((mask(address, prefix), prefix))
}

/// The IPv4 address behind an IPv4-mapped IPv6 one (`::ffff:a.b.c.d`); others unchanged.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4) & v4_mask(prefix);
            IpAddr::V4(Ipv4Addr::from(bits))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & v6_mask(prefix);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

fn in_network(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => u32::from(ip) & v4_mask(prefix) == u32::from(net),
        (IpAddr::V6(ip), IpAddr::V6(net)) => u128::from(ip) & v6_mask(prefix) == u128::from(net),
        _ => false,
    }
}

fn v4_mask(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn v6_mask(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

impl Settings {
    /// The parsed `allowed_ip` list. Cannot fail once [`Settings::validate`] passed.
    pub fn allowed_ips(&self) -> Result<IpAllowList, SettingError> {
        parse_allowed_ips(&self.server.websocket.auth.allowed_ip)
            .map_err(|reason| SettingError::new(KEY_ALLOWED_IP, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matching() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();

        let list = parse_allowed_ips("127.0.0.1,::1").unwrap();
        assert!(list.allows(ip("127.0.0.1")));
        assert!(list.allows(ip("::1")));
        assert!(list.allows(ip("::ffff:127.0.0.1")));
        assert!(!list.allows(ip("127.0.0.2")));
        assert!(!list.allows(ip("10.0.0.1")));
        assert!(!list.allows_all());

        let list = parse_allowed_ips(" 192.168.1.0/24 , fd00::/8,10.1.2.3/0 ").unwrap();
        assert!(list.allows(ip("192.168.1.200")));
        assert!(list.allows(ip("::ffff:192.168.1.7")));
        assert!(list.allows(ip("fd12:3456::1")));
        assert!(list.allows(ip("8.8.8.8")), "/0 matches every IPv4 address");
        assert!(!list.allows(ip("fe80::1")));

        let list = parse_allowed_ips("192.168.1.77/24").unwrap();
        assert!(
            list.allows(ip("192.168.1.1")),
            "host bits of the entry are ignored"
        );

        let list = parse_allowed_ips("::ffff:10.0.0.0/104,[::1]").unwrap();
        assert!(list.allows(ip("10.9.9.9")));
        assert!(list.allows(ip("::1")));

        let list = parse_allowed_ips("*").unwrap();
        assert!(list.allows_all());
        assert!(list.allows(ip("203.0.113.9")));
        assert!(list.allows(ip("2001:db8::1")));

        for bad in [
            "",
            " , ",
            "localhost",
            "10.0.0.0/33",
            "::/129",
            "1.2.3.4/",
            "1.2.3.4/+8",
            "1.2.3",
        ] {
            assert!(
                parse_allowed_ips(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        assert!(parse_allowed_ips("")
            .unwrap_err()
            .contains("use * to allow all"));
    }

    #[test]
    fn listen_addresses_whose_clients_are_refused() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        // Seed 000: localhost binds ::1 too, which 127.0.0.1 does not allow.
        let list = parse_allowed_ips("127.0.0.1").unwrap();
        assert_eq!(list.refuses_clients_at(at("127.0.0.1:8080")), None);
        let warning = list.refuses_clients_at(at("[::1]:8080")).unwrap();
        assert!(warning.contains("[::1]:8080"), "{warning}");
        assert!(warning.contains(KEY_ALLOWED_IP), "{warning}");
        assert!(list
            .refuses_clients_at(at("[::]:8080"))
            .unwrap()
            .contains("IPv6"));
        assert_eq!(list.refuses_clients_at(at("0.0.0.0:8080")), None);

        let list = parse_allowed_ips("::1").unwrap();
        assert!(list.refuses_clients_at(at("127.0.0.1:1")).is_some());
        assert!(list
            .refuses_clients_at(at("192.168.1.5:1"))
            .unwrap()
            .contains("IPv4"));
        assert_eq!(list.refuses_clients_at(at("[fd00::5]:1")), None);

        let list = parse_allowed_ips("127.0.0.1,::1").unwrap();
        assert_eq!(list.refuses_clients_at(at("[::1]:1")), None);
        let list = parse_allowed_ips("*").unwrap();
        assert_eq!(list.refuses_clients_at(at("[::1]:1")), None);
        assert_eq!(list.refuses_clients_at(at("[::]:1")), None);
    }

    #[test]
    fn canonical_unmaps_ipv4_mapped_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(canonical(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(canonical(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(canonical(ip("::1")), ip("::1"));
        assert_eq!(canonical(ip("2001:db8::1")), ip("2001:db8::1"));
    }
}
