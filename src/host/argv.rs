//! Every external command the applier runs (or shows in `--dry-run`), as argv lists, and the
//! parse of macOS's `netstat -rn -f inet`. Pure, so both platforms' commands are tested on
//! either.

use std::net::{IpAddr, Ipv4Addr};

use super::plan::{HostFilter, HostOs, ServiceUnit};
use crate::net::routes::PlannedRoute;
use crate::net::{HostRoute, Ipv4Net};

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// macOS: `route -n add -net <dest> <guest-ip>`.
pub fn route_add_argv(r: &PlannedRoute) -> Vec<String> {
    argv(&[
        "route",
        "-n",
        "add",
        "-net",
        &r.dest.to_string(),
        &r.gateway.to_string(),
    ])
}

/// macOS: `route -n delete -net <dest> <guest-ip>`.
pub fn route_delete_argv(r: &PlannedRoute) -> Vec<String> {
    argv(&[
        "route",
        "-n",
        "delete",
        "-net",
        &r.dest.to_string(),
        &r.gateway.to_string(),
    ])
}

/// Linux: the `ip route` command equivalent to what the applier does through rtnetlink
/// (shown by `--dry-run`; `verb` is `add` or `del`).
pub fn ip_route_argv(verb: &str, r: &PlannedRoute) -> Vec<String> {
    argv(&[
        "ip",
        "route",
        verb,
        &r.dest.to_string(),
        "via",
        &r.gateway.to_string(),
        "dev",
        &r.interface,
    ])
}

/// macOS: `ifconfig <bridge> -hostfilter <member>`.
pub fn hostfilter_argv(h: &HostFilter) -> Vec<String> {
    argv(&["ifconfig", &h.bridge, "-hostfilter", &h.member])
}

/// macOS: `launchctl bootstrap system <plist>`.
pub fn launchctl_bootstrap_argv(plist: &std::path::Path) -> Vec<String> {
    argv(&["launchctl", "bootstrap", "system", &plist.to_string_lossy()])
}

/// macOS: `launchctl bootout system/<label>`.
pub fn launchctl_bootout_argv(label: &str) -> Vec<String> {
    argv(&["launchctl", "bootout", &format!("system/{label}")])
}

/// Linux: `systemctl <args…>`.
pub fn systemctl_argv(args: &[&str]) -> Vec<String> {
    let mut v = argv(&["systemctl"]);
    v.extend(argv(args));
    v
}

/// Commands that start a unit now and at every boot. launchd refuses to bootstrap a job
/// that is loaded already, so the applier boots it out first and ignores that failure.
pub(super) fn unit_load_argvs(os: HostOs, u: &ServiceUnit) -> Vec<Vec<String>> {
    match os {
        HostOs::Linux => vec![systemctl_argv(&["enable", "--now", &u.name])],
        HostOs::Macos => vec![launchctl_bootstrap_argv(&u.path)],
    }
}

/// Commands that stop a unit and keep it from starting at boot.
pub(super) fn unit_unload_argvs(os: HostOs, u: &ServiceUnit) -> Vec<Vec<String>> {
    match os {
        HostOs::Linux => vec![systemctl_argv(&["disable", "--now", &u.name])],
        HostOs::Macos => vec![launchctl_bootout_argv(&u.name)],
    }
}

/// systemd rereads unit files only when told; launchd reads the plist at bootstrap.
pub(super) fn unit_reload_argv(os: HostOs) -> Option<Vec<String>> {
    match os {
        HostOs::Linux => Some(systemctl_argv(&["daemon-reload"])),
        HostOs::Macos => None,
    }
}

/// An argv as one shell-readable line (for messages and the dry-run text).
pub(super) fn join_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

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

    #[test]
    fn argv_lines_quote_only_what_needs_it() {
        assert_eq!(
            join_argv(&argv(&["launchctl", "bootstrap", "system", "/a b/c's"])),
            r"launchctl bootstrap system '/a b/c'\''s'"
        );
    }
}
