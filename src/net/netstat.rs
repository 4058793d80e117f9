//! The IPv4 routing table as macOS `netstat -rn -f inet` prints it (pure, so it is tested on
//! any host; `sys/macos.rs` runs the command).

use std::net::{IpAddr, Ipv4Addr};

use super::{HostRoute, Ipv4Net};

/// Parses the IPv4 table printed by macOS `netstat -rn -f inet`. Destinations come
/// abbreviated (`172.18/16`, `192.168.64` for a /24, `127` for a /8, a full address for a
/// host route) and `default`; gateways are addresses, `link#N` or MAC addresses (shown as no
/// gateway). Lines that are not routes are skipped.
pub fn parse_netstat_routes(text: &str) -> Vec<HostRoute> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 4 {
                return None;
            }
            let dest = parse_netstat_dest(cols[0])?;
            let gateway = cols[1].parse::<Ipv4Addr>().ok().map(IpAddr::V4);
            Some(HostRoute {
                dest,
                gateway,
                interface: cols[3].to_owned(),
            })
        })
        .collect()
}

fn parse_netstat_dest(s: &str) -> Option<Ipv4Net> {
    if s == "default" {
        return Some(Ipv4Net::default());
    }
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
        None => (s, None),
    };
    // A `%scope` suffix belongs to link-local entries; the address is before it.
    let addr = addr.split('%').next()?;
    let octets: Vec<u8> = addr
        .split('.')
        .map(|o| o.parse::<u8>().ok())
        .collect::<Option<_>>()?;
    if octets.is_empty() || octets.len() > 4 {
        return None;
    }
    let prefix = prefix.unwrap_or(8 * octets.len() as u8);
    let mut full = [0u8; 4];
    full[..octets.len()].copy_from_slice(&octets);
    Ipv4Net::new(Ipv4Addr::from(full), prefix)
        .ok()
        .map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstat_destinations_are_expanded() {
        let text = "\
Routing tables

Internet:
Destination        Gateway            Flags               Netif Expire
default            192.168.1.1        UGScg                 en0
127                127.0.0.1          UCS                   lo0
127.0.0.1          127.0.0.1          UH                    lo0
169.254            link#6             UCS                   en0      !
172.18/16          192.168.64.2       UGSc            bridge100
192.168.1          link#6             UCS                   en0      !
192.168.1.1/32     link#6             UCS                   en0      !
192.168.1.1        a4:91:b1:0:0:1     UHLWIir               en0   1185
224.0.0/4          link#6             UmCS                  en0      !
";
        let got: Vec<String> = parse_netstat_routes(text)
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "0.0.0.0/0 via 192.168.1.1 dev en0",
                "127.0.0.0/8 via 127.0.0.1 dev lo0",
                "127.0.0.1/32 via 127.0.0.1 dev lo0",
                "169.254.0.0/16 dev en0",
                "172.18.0.0/16 via 192.168.64.2 dev bridge100",
                "192.168.1.0/24 dev en0",
                "192.168.1.1/32 dev en0",
                "192.168.1.1/32 dev en0",
                "224.0.0.0/4 dev en0",
            ]
        );
    }
}
