//! Pure rendering of the host resolver configuration that points the machine's domains, and
//! only those, at its DNS server. The applier (run with privileges) lives in `host/`; nothing
//! here touches the system.
//!
//! - macOS: one `/etc/resolver/<domain>` file per owned domain (resolver(5)).
//! - Linux with systemd-resolved: per-link `resolvectl` commands on the machine's TAP, with
//!   routing-only (`~`) domains so no other query is sent to devbox.
//! - Linux without resolved: a text telling the user what to configure by hand.
//!
//! Never the bare TLD: `.dev` is a real TLD (research/anchors-features.md §4).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Directory of macOS per-domain resolver files.
pub const MACOS_RESOLVER_DIR: &str = "/etc/resolver";

/// The domains to route to the machine's server: `<machine>.<tld>` and the routed domains of
/// the aliases it serves ([`super::zone::Zone::routed_domains`]: each alias's parent domain
/// when that stays within what the alias was allowed in, else the alias itself). Sorted,
/// without duplicates, and without domains already covered by another one in the list; never
/// the bare TLD, never a domain outside it.
pub fn owned_domains(machine: &str, tld: &str, routed: &[String]) -> Vec<String> {
    let norm = |s: &str| s.trim().trim_end_matches('.').to_ascii_lowercase();
    let tld = norm(tld);
    let mut domains = vec![format!("{}.{tld}", norm(machine))];
    for domain in routed {
        let domain = norm(domain);
        if domain != tld && domain.ends_with(&format!(".{tld}")) {
            domains.push(domain);
        }
    }
    domains.sort();
    domains.dedup();
    let covered = |d: &String, all: &[String]| {
        all.iter()
            .any(|other| other != d && d.ends_with(&format!(".{other}")))
    };
    let keep: Vec<String> = domains
        .iter()
        .filter(|d| !covered(d, &domains))
        .cloned()
        .collect();
    keep
}

/// macOS resolver files: `(path, contents)` for each domain, sorted by path.
pub fn macos_files(
    machine: &str,
    domains: &[String],
    server: SocketAddr,
) -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = domains
        .iter()
        .map(|domain| {
            let text = format!(
                "# Managed by devbox for machine `{machine}`; do not edit.\n\
                 nameserver {}\nport {}\n",
                server.ip(),
                server.port()
            );
            (PathBuf::from(MACOS_RESOLVER_DIR).join(domain), text)
        })
        .collect();
    files.sort();
    files
}

/// `resolvectl` commands (argv) that route `domains` to `server` on `link` (the machine's
/// TAP). These settings live as long as the link and resolved's state do, so they are
/// re-applied at every machine start.
pub fn resolved_commands(link: &str, domains: &[String], server: SocketAddr) -> Vec<Vec<String>> {
    let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    // Plain IP for port 53 so that systemd versions without `ip:port` support still work.
    let dns = if server.port() == 53 {
        server.ip().to_string()
    } else {
        server.to_string()
    };
    let mut domain = argv(&["resolvectl", "domain", link]);
    domain.extend(domains.iter().map(|d| format!("~{d}")));
    vec![
        argv(&["resolvectl", "dns", link, &dns]),
        domain,
        // Keep every other query off this link.
        argv(&["resolvectl", "default-route", link, "false"]),
    ]
}

/// `resolvectl` command that undoes [`resolved_commands`] on `link`.
pub fn resolved_revert(link: &str) -> Vec<String> {
    ["resolvectl", "revert", link]
        .iter()
        .map(|w| w.to_string())
        .collect()
}

/// What to tell the user on Linux when systemd-resolved is not running.
pub fn manual_instructions(domains: &[String], server: SocketAddr) -> String {
    let (ip, port) = (server.ip(), server.port());
    let mut out = format!(
        "systemd-resolved is not running, so devbox cannot route the machine's names to its DNS \
         server ({server}).\nTo resolve them, configure your local resolver yourself:\n\n\
         - dnsmasq (or NetworkManager with dns=dnsmasq, in /etc/NetworkManager/dnsmasq.d/devbox.conf):\n"
    );
    for d in domains {
        out.push_str(&format!("    server=/{d}/{ip}#{port}\n"));
    }
    out.push_str("\n- unbound:\n");
    for d in domains {
        out.push_str(&format!(
            "    forward-zone:\n        name: \"{d}\"\n        forward-addr: {ip}@{port}\n"
        ));
    }
    let first = domains.first().map_or("", String::as_str);
    out.push_str(&format!(
        "\nThen check with: dig @{ip} -p {port} {first}\n\
         Do not add {ip} as a global nameserver: only these domains belong to the machine.\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn domains_never_the_bare_tld() {
        let routed = s(&[
            "synbioz.dev",
            "b.example.dev",
            "v1.dev.dev",
            "solo.dev",
            "dev",
            "evil.com",
        ]);
        assert_eq!(
            owned_domains("dev", "dev", &routed),
            s(&["b.example.dev", "dev.dev", "solo.dev", "synbioz.dev"])
        );
    }

    #[test]
    fn covered_domains_are_dropped() {
        let routed = s(&["a.b.synbioz.dev", "synbioz.dev"]);
        assert_eq!(owned_domains("box", "test", &routed), s(&["box.test"]));
        assert_eq!(
            owned_domains("box", "dev", &routed),
            s(&["box.dev", "synbioz.dev"])
        );
    }

    #[test]
    fn resolvectl_plain_ip_on_port_53() {
        let cmds = resolved_commands(
            "devbox0",
            &s(&["dev.dev"]),
            "192.168.64.1:53".parse().unwrap(),
        );
        assert_eq!(
            cmds[0],
            s(&["resolvectl", "dns", "devbox0", "192.168.64.1"])
        );
        let v6 = resolved_commands(
            "devbox0",
            &s(&["dev.dev"]),
            "[fd00::1]:5353".parse().unwrap(),
        );
        assert_eq!(
            v6[0],
            s(&["resolvectl", "dns", "devbox0", "[fd00::1]:5353"])
        );
    }
}
