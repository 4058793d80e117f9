//! Who may query the machine's DNS server: the guest, its containers and the host itself.
//! Every other source is dropped without an answer (no reflection, no amplification, no
//! open resolver for the LAN), counted, and logged at most once a minute.
//!
//! The check is on the source address, for UDP and TCP alike. Linux follows the weak host
//! model: a datagram for the host-only address that arrives on the LAN interface is delivered
//! to the server, so the bind address alone does not keep LAN peers out (security review,
//! finding 7). The allowed sources ([`machine_clients`]):
//! - the guest's address: the guest, and every container whose traffic Docker masquerades;
//! - the machine's routed container subnets: containers reached without NAT
//!   (`allow-direct-routing`);
//! - the host's host-side address and loopback: the host's own resolver and tools.
//!
//! A peer that forges an allowed source gets nothing back: the answer goes to the forged
//! address (the guest, a container, the host), never to a third party.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::log_warning;

/// Shortest time between two log lines about dropped queries.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The sources a machine's DNS server answers: `guest`, `host` (the host-side address),
/// loopback, and the container subnets the host routes to the guest.
pub fn machine_clients(host: IpAddr, guest: IpAddr, container_subnets: &[IpNet]) -> Vec<IpNet> {
    let mut nets = vec![
        IpNet::from(guest),
        IpNet::from(host),
        "127.0.0.0/8".parse().expect("literal"),
        "::1/128".parse().expect("literal"),
    ];
    nets.extend(container_subnets.iter().map(IpNet::trunc));
    nets.dedup();
    nets
}

/// The allowlist and the count of what it dropped.
#[derive(Debug)]
pub(crate) struct ClientFilter {
    nets: Vec<IpNet>,
    dropped: AtomicU64,
    log: Mutex<DropLog>,
}

#[derive(Debug, Default)]
struct DropLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl ClientFilter {
    pub(crate) fn new(nets: Vec<IpNet>) -> Self {
        ClientFilter {
            nets,
            dropped: AtomicU64::new(0),
            log: Mutex::new(DropLog::default()),
        }
    }

    /// Whether `ip` may query the server. An IPv4-mapped IPv6 source counts as its IPv4.
    #[inline]
    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Counts a query dropped from `src`, and logs it unless a line went out less than a
    /// minute ago (that line's successor says how many were dropped in between).
    pub(crate) fn dropped_from(&self, src: SocketAddr) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.unlogged += 1;
        let now = Instant::now();
        if log.last.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
            log_warning(&format!(
                "dropped {} quer{} from sources not allowed to use this server (latest: {src}); \
                 it answers only the guest, its containers and this host",
                log.unlogged,
                if log.unlogged == 1 { "y" } else { "ies" }
            ));
            log.last = Some(now);
            log.unlogged = 0;
        }
    }

    /// Queries dropped since the server started.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_sources_only() {
        let nets = machine_clients(
            "192.168.64.1".parse().unwrap(),
            "192.168.64.2".parse().unwrap(),
            &[
                "172.18.0.1/16".parse().unwrap(),
                "172.19.0.0/16".parse().unwrap(),
            ],
        );
        let f = ClientFilter::new(nets);
        for ok in [
            "192.168.64.2",
            "192.168.64.1",
            "127.0.0.1",
            "127.0.0.53",
            "::1",
            "172.18.0.3",
            "172.19.4.2",
            "::ffff:192.168.64.2",
        ] {
            assert!(f.allows(ok.parse().unwrap()), "{ok}");
        }
        for bad in [
            "192.168.64.3",
            "10.77.0.2",
            "172.20.0.1",
            "192.168.65.2",
            "fd00::2",
        ] {
            assert!(!f.allows(bad.parse().unwrap()), "{bad}");
        }
        f.dropped_from("10.77.0.2:5353".parse().unwrap());
        f.dropped_from("10.77.0.2:5353".parse().unwrap());
        assert_eq!(f.dropped(), 2);
        assert_eq!(
            f.log.lock().unwrap().unlogged,
            1,
            "the second waits a minute"
        );
    }
}
