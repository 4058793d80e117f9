//! Pure rendering of the host resolver configuration that points the machine's domains, and
//! only those, at its DNS server. The applier (run with privileges) lives in `host/`; nothing
//! here touches the system.
//!
//! - macOS: one `/etc/resolver/<domain>` file per owned domain (resolver(5)).
//! - Linux with systemd-resolved: per-link settings on the machine's TAP, with routing-only
//!   (`~`) domains so no other query is sent to devbox ([`crate::host::ResolvedLink`]; the
//!   applier renders and runs the `resolvectl` commands).
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

/// What to tell the user on Linux when systemd-resolved is not running, or cannot reach the
/// machine's server (`resolved`: it runs).
pub fn manual_instructions(domains: &[String], server: SocketAddr, resolved: bool) -> String {
    let (ip, port) = (server.ip(), server.port());
    let why = if resolved {
        // systemd-resolved takes a server per link, and a server on loopback (a host adopted
        // over SSH) has no link of its own on this host.
        format!(
            "systemd-resolved routes names to a DNS server per network link, and this \
             machine's server ({server}) has none on this host"
        )
    } else {
        format!(
            "systemd-resolved is not running, so devbox cannot route the machine's names to \
             its DNS server ({server})"
        )
    };
    let mut out = format!(
        "{why}.\nTo resolve them, configure your local resolver yourself:\n\n\
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
}
