//! The machine's embedded DNS server. It answers authoritatively for the names the machine
//! owns (`<machine>.<tld>`, `<container>.<machine>.<tld>`, the aliases containers may claim,
//! and PTR records for their IPs) and forwards every other query to the host's upstream
//! resolvers, relaying their answer unchanged. It answers only the guest, its containers and
//! the host ([`clients`]). The host resolver is pointed at it only for the owned domains
//! (`crate::resolver`); `.dev` is a real TLD and must keep working.
//!
//! - [`policy`]: pure: which aliases a container may claim (the machine's own domain, allowed
//!   domains, private TLDs), and which domains a user may allow.
//! - [`zone`]: pure: containers + policy → record map.
//! - [`PolicySource`] (`neighbours.rs`): the policy read afresh at each zone build (other
//!   machines, allowed domains) and the host-wide claims on routed domains.
//! - [`DnsServer`] (`server.rs`): UDP + TCP listeners on one address, and a refresh task that
//!   re-reads the policy; owns their tasks.
//! - [`clients`]: who may query the server; the rest is dropped, counted, logged.
//! - [`RecordsHandle`] (`records.rs`): shared handle to replace the served containers.
//! - [`watch_containers`] (`watch.rs`): Docker events on the forwarded socket → records; runs
//!   as one task (the caller's) until dropped.
//! - `handler.rs` / `forward.rs`: the request handler and the upstream client (private).
//! - `wire.rs`: pre-encoded answers for the common UDP query, the fast path (private).

pub mod clients;
mod forward;
mod handler;
mod neighbours;
pub mod policy;
mod records;
mod server;
mod sys;
mod watch;
mod wire;
pub mod zone;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub use clients::machine_clients;
pub use neighbours::{Claims, PolicySource, StoreNeighbours};
pub use records::{RecordsHandle, RefusedName};
pub use server::{DnsServer, MAX_FORWARDS};
pub use watch::{container_from_inspect, event_container_id, services_from, watch_containers};

/// Where systemd-resolved lists the real upstream servers when `/etc/resolv.conf` points at
/// its stub (see [`host_upstreams`]).
pub const RESOLVED_UPSTREAMS: &str = "/run/systemd/resolve/resolv.conf";

/// What the DNS server needs from the machine's spec and the host.
#[derive(Debug)]
pub struct DnsConfig {
    /// The machine's name: the guest is `<machine>.<tld>`.
    pub machine: String,
    /// Top-level domain of every name served (default `dev`).
    pub tld: String,
    /// The guest's IP on the host-only network.
    pub guest_ip: IpAddr,
    /// Address to listen on (UDP and TCP): the machine's host-side IP and a port.
    pub bind: SocketAddr,
    /// Resolvers for everything not owned, tried in order (see [`host_upstreams`]).
    pub upstreams: Vec<SocketAddr>,
    /// Sources allowed to query ([`machine_clients`]); every other one is dropped.
    pub clients: Vec<ipnet::IpNet>,
    /// Where the alias policy comes from at each zone build: [`StoreNeighbours`] for a
    /// machine, a fixed [`policy::Policy`] otherwise.
    pub policy: Box<dyn PolicySource>,
}

/// Everything that can go wrong starting the DNS server or watching containers.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The machine name or TLD is not usable as a DNS label.
    #[error("`{name}` is not a valid DNS label (letters, digits and `-`, at most 63)")]
    InvalidName { name: String },

    /// The listening socket could not be bound.
    #[error("cannot listen for DNS ({protocol}) on {addr}")]
    Bind {
        addr: SocketAddr,
        protocol: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// A resolv.conf file could not be read.
    #[error("cannot read {}", path.display())]
    ReadResolvConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The Docker socket path cannot be used by the Docker client.
    #[error("cannot use Docker socket {}: {reason}", socket.display())]
    DockerSocket { socket: PathBuf, reason: String },
}

impl DnsError {
    /// A known fix for this error, phrased for the user, if there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            DnsError::InvalidName { .. } => Some(
                "machine names and the TLD must be DNS labels, e.g. `dev` or `test`".to_string(),
            ),
            DnsError::Bind { addr, source, .. } => match source.kind() {
                std::io::ErrorKind::AddrInUse => Some(format!(
                    "another DNS server already listens on {addr} (systemd-resolved, dnsmasq, \
                     another devbox machine?): pick another port in the machine's DNS settings"
                )),
                std::io::ErrorKind::PermissionDenied => Some(format!(
                    "port {} needs CAP_NET_BIND_SERVICE: set devbox up once with `sudo devbox \
                     system install`, then run /usr/local/bin/devbox as yourself",
                    addr.port()
                )),
                std::io::ErrorKind::AddrNotAvailable => Some(format!(
                    "{} is not an address of this host: is the machine's network up \
                     (`devbox start`)?",
                    addr.ip()
                )),
                _ => None,
            },
            DnsError::ReadResolvConf { .. } => Some(
                "set the upstream resolvers explicitly in the machine's DNS settings".to_string(),
            ),
            DnsError::DockerSocket { .. } => {
                Some("set a shorter DEVBOX_HOME made of plain UTF-8 characters".to_string())
            }
        }
    }
}

/// Upstream resolvers listed in resolv.conf text (`nameserver` lines, port 53), in order.
///
/// systemd-resolved's stub listeners (127.0.0.53 and 127.0.0.54) are skipped: resolved
/// routes the machine's domains to devbox, so forwarding a name under an alias's domain back
/// to the stub would come straight back (a loop). [`host_upstreams`] then reads resolved's
/// own list of real servers instead.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        // A scoped IPv6 address (`fe80::1%eth0`) cannot be used without its interface index,
        // which text alone does not give; skip it.
        let Ok(ip) = addr.parse::<IpAddr>() else {
            continue;
        };
        if is_resolved_stub(ip) {
            continue;
        }
        let sa = SocketAddr::new(ip, 53);
        if !out.contains(&sa) {
            out.push(sa);
        }
    }
    out
}

fn is_resolved_stub(ip: IpAddr) -> bool {
    ip == IpAddr::from([127, 0, 0, 53]) || ip == IpAddr::from([127, 0, 0, 54])
}

/// The host's upstream resolvers: `/etc/resolv.conf`, or, when that only names
/// systemd-resolved's stub, resolved's list of real servers ([`RESOLVED_UPSTREAMS`]).
///
/// On macOS `/etc/resolv.conf` is generated from the primary resolver configuration, which
/// is what this reads; per-domain (VPN) resolvers from `scutil --dns` are not included.
pub fn host_upstreams() -> Result<Vec<SocketAddr>, DnsError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| DnsError::ReadResolvConf {
            path: path.to_path_buf(),
            source,
        })
    };
    let main = read(Path::new("/etc/resolv.conf"))?;
    let upstreams = upstreams_from_resolv_conf(&main);
    if upstreams.is_empty() && Path::new(RESOLVED_UPSTREAMS).exists() {
        return Ok(upstreams_from_resolv_conf(&read(Path::new(
            RESOLVED_UPSTREAMS,
        ))?));
    }
    Ok(upstreams)
}

/// Checks that `label` is one DNS label (RFC 1123 host name rules).
fn check_label(label: &str) -> Result<(), DnsError> {
    let ok = !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(DnsError::InvalidName {
            name: label.to_string(),
        })
    }
}

/// A warning line in the supervisor's log (its stderr), timestamped like its other lines.
fn log_warning(msg: &str) {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    eprintln!("{now} dns: warning: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_upstreams() {
        let text = "# generated\nsearch lan\nnameserver 192.0.2.1\nnameserver  2001:db8::1 # v6\n\
                    nameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver 192.0.2.1\n\
                    ;nameserver 192.0.2.9\noptions edns0\nnameserver\n";
        assert_eq!(
            upstreams_from_resolv_conf(text),
            [
                "192.0.2.1:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn resolved_stub_only_gives_nothing() {
        let stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n";
        assert!(upstreams_from_resolv_conf(stub).is_empty());
    }

    #[test]
    fn labels() {
        assert!(check_label("dev").is_ok());
        assert!(check_label("my-box2").is_ok());
        for bad in ["", "-a", "a-", "a.b", "a_b", &"x".repeat(64)] {
            assert!(check_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bind_hints() {
        let e = DnsError::Bind {
            addr: "127.0.0.1:53".parse().unwrap(),
            protocol: "UDP",
            source: std::io::ErrorKind::PermissionDenied.into(),
        };
        assert!(e.hint().unwrap().contains("CAP_NET_BIND_SERVICE"));
        assert_eq!(e.to_string(), "cannot listen for DNS (UDP) on 127.0.0.1:53");
    }
}
