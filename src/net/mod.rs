//! Host-side networking for a machine: its host-only /24, the TAP device the guest's NIC
//! sits on, and the host routing table that allocation must not collide with.
//!
//! The pure part lives here: the subnet pool (`192.168.64.0/24` … `192.168.127.0/24`, host
//! `.1`, guest `.2`), allocation against the machines' indexes and the host's routes, conflict
//! reports, TAP names and which links are devbox's ([`devbox_link`]); `vmnet.rs` reads a vz
//! machine's link (a vmnet bridge) from `ifconfig`, `netstat.rs` the macOS routing table.
//! The system calls (TAP via `/dev/net/tun`, addresses, links and routes via rtnetlink, the
//! `CapEff` check) live in `sys/linux.rs`; `sys/macos.rs` runs `netstat` and `ifconfig` and
//! has no TAP devices (the vz driver uses VZ's NAT).
//!
//! Threads: none are kept. Each netlink operation runs a current-thread tokio runtime on a
//! short-lived thread of its own, so callers may be plain threads or inside a tokio runtime
//! alike; that thread inherits the caller's network namespace.
//!
//! CIDRs are [`ipnet::Ipv4Net`] (re-exported here) with [`overlaps`]; `crate::routes` uses
//! the same type.

pub mod lease;
pub mod netstat;
mod sys;
pub mod vmnet;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

pub use ipnet::Ipv4Net;

use crate::hint::Hint;

#[cfg(target_os = "linux")]
pub use sys::linux::{Tap, add_route, delete_route, have_net_admin, host_routes, vmnet_bridges};
#[cfg(target_os = "macos")]
pub use sys::macos::{Tap, have_net_admin, host_routes, vmnet_bridges};

/// First /24 of the host-only pool.
const POOL_FIRST: Ipv4Addr = Ipv4Addr::new(192, 168, 64, 0);
/// Number of /24s in the pool: 192.168.64.0/24 through 192.168.127.0/24 (= 192.168.64.0/18).
pub const POOL_SIZE: u8 = 64;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "no free host-only subnet: all of 192.168.64.0/24 … 192.168.127.0/24 are used by \
         machines or overlap host routes"
    )]
    PoolExhausted,
    #[error("host-only subnet index {index} is outside the pool (0..{POOL_SIZE})")]
    BadIndex { index: u8 },
    #[error("host-only subnet {subnet} overlaps the host route {route} on {interface}")]
    Conflict {
        subnet: Ipv4Net,
        route: Ipv4Net,
        interface: String,
    },
    #[error("{what} needs CAP_NET_ADMIN")]
    NoPrivilege { what: String },
    #[error("invalid interface name {name:?}: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("cannot create TAP device {name}: macOS has no TAP devices")]
    NoTap { name: String },
    #[error("network interface {name} already exists")]
    InterfaceExists { name: String },
    #[error("cannot {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {what}: netlink request failed")]
    Netlink {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Hint for NetError {
    fn hint(&self) -> Option<String> {
        match self {
            NetError::NoPrivilege { .. } => Some(
                "set devbox up once with `sudo devbox system install`, then run \
                 /usr/local/bin/devbox as yourself"
                    .into(),
            ),
            NetError::Conflict { interface, .. } => Some(format!(
                "another network on {interface} (a VPN or LAN) uses these addresses: \
                 disconnect it, or recreate the machine so it gets a free subnet"
            )),
            NetError::PoolExhausted => Some(
                "remove machines you no longer need (`devbox rm NAME`) or free a /24 of \
                 192.168.64.0/18 on the host"
                    .into(),
            ),
            NetError::InterfaceExists { name } => Some(format!(
                "another program or a running machine owns {name}; see `ip link show {name}`"
            )),
            _ => None,
        }
    }
}

/// A machine's host-only network: a /24 from the pool, with the host's address on the TAP
/// (`.1`) and the guest's (`.2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostOnlyNet {
    pub index: u8,
    pub subnet: Ipv4Net,
    pub host_ip: Ipv4Addr,
    pub guest_ip: Ipv4Addr,
}

impl HostOnlyNet {
    /// The pool's `index`-th /24: 0 → 192.168.64.0/24, 63 → 192.168.127.0/24.
    pub fn from_index(index: u8) -> Result<HostOnlyNet, NetError> {
        if index >= POOL_SIZE {
            return Err(NetError::BadIndex { index });
        }
        let [a, b, c, _] = POOL_FIRST.octets();
        let base = Ipv4Addr::new(a, b, c + index, 0);
        Ok(HostOnlyNet {
            index,
            subnet: Ipv4Net::new(base, 24).expect("24 is a valid IPv4 prefix"),
            host_ip: Ipv4Addr::new(a, b, c + index, 1),
            guest_ip: Ipv4Addr::new(a, b, c + index, 2),
        })
    }

    /// Name of the TAP device carrying this network.
    pub fn tap_name(&self) -> String {
        tap_name(self.index)
    }

    /// The machine's share link (see [`ShareLink`]).
    pub fn share_link(&self) -> ShareLink {
        let [a, b, c, _] = self.subnet.network().octets();
        ShareLink {
            tap: format!("dbx{}s", self.index),
            host_ip: Ipv4Addr::new(a, b, c, 253),
            guest_ip: Ipv4Addr::new(a, b, c, 254),
            prefix: 30,
        }
    }
}

/// The link a machine's shares travel on: a second TAP device (`dbxNs`) and NIC, used by the
/// guest's NFS client alone, which the guest moves into a network namespace of its own at
/// boot. Its /30 is the top of the machine's host-only /24 (host `.253`, guest `.254`), so
/// it needs no allocation of its own. The file server listens there, bound to the device:
/// nothing in the guest's main network namespace (no process, no container, not even raw
/// frames on `eth0`) can reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareLink {
    pub tap: String,
    pub host_ip: Ipv4Addr,
    pub guest_ip: Ipv4Addr,
    pub prefix: u8,
}

/// One IPv4 route of the host's main routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    pub dest: Ipv4Net,
    pub gateway: Option<IpAddr>,
    /// Output interface name; empty for routes without one (blackhole, unreachable).
    pub interface: String,
}

impl fmt::Display for HostRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dest)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if !self.interface.is_empty() {
            write!(f, " dev {}", self.interface)?;
        }
        Ok(())
    }
}

/// Whether two CIDRs share at least one address.
pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    let (a, b) = (a.trunc(), b.trunc());
    a.contains(&b.network()) || b.contains(&a.network())
}

/// TAP device name for the machine with host-only index `index`.
pub fn tap_name(index: u8) -> String {
    format!("dbx{index}")
}

/// The host-only network whose TAP is `interface`, if it is a devbox TAP (`dbx0` … `dbx63`).
pub fn devbox_link(interface: &str) -> Option<HostOnlyNet> {
    let n = interface.strip_prefix("dbx")?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    let index: u8 = n.parse().ok()?;
    (index < POOL_SIZE).then(|| HostOnlyNet::from_index(index).expect("index is in the pool"))
}

/// The first host route that overlaps `net`, leaving out default routes (everything overlaps
/// them) and the routes `own` claims as the caller's.
pub fn first_overlap<'r>(
    net: &Ipv4Net,
    routes: &'r [HostRoute],
    own: impl Fn(&HostRoute) -> bool,
) -> Option<&'r HostRoute> {
    routes
        .iter()
        .filter(|r| r.dest.prefix_len() > 0 && !own(r))
        .find(|r| overlaps(net, &r.dest))
}

/// The first pool index not in `taken` whose /24 overlaps no host route. Unlike
/// [`check_conflicts`], a route on the candidate's own TAP name counts here: it means that
/// network is in use even if `taken` missed it.
pub fn allocate_host_only(taken: &[u8], routes: &[HostRoute]) -> Result<HostOnlyNet, NetError> {
    (0..POOL_SIZE)
        .filter(|i| !taken.contains(i))
        .map(|i| HostOnlyNet::from_index(i).expect("index is inside the pool"))
        .find(|net| first_conflict(net, routes, None).is_none())
        .ok_or(NetError::PoolExhausted)
}

/// Fails with the first host route that overlaps `net`'s subnet. Default routes do not
/// count (everything overlaps them), nor do routes on the machine's own TAP device, so a
/// running machine's network checks clean.
pub fn check_conflicts(net: &HostOnlyNet, routes: &[HostRoute]) -> Result<(), NetError> {
    match first_conflict(net, routes, Some(&net.tap_name())) {
        Some(r) => Err(NetError::Conflict {
            subnet: net.subnet,
            route: r.dest,
            interface: if r.interface.is_empty() {
                "no interface".into()
            } else {
                r.interface.clone()
            },
        }),
        None => Ok(()),
    }
}

fn first_conflict<'r>(
    net: &HostOnlyNet,
    routes: &'r [HostRoute],
    own_tap: Option<&str>,
) -> Option<&'r HostRoute> {
    first_overlap(&net.subnet, routes, |r| {
        Some(r.interface.as_str()) == own_tap
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dest: &str, interface: &str) -> HostRoute {
        HostRoute {
            dest: dest.parse().unwrap(),
            gateway: None,
            interface: interface.into(),
        }
    }

    #[test]
    fn pool_indexes_map_to_slash_24s() {
        let n = HostOnlyNet::from_index(0).unwrap();
        assert_eq!(n.subnet.to_string(), "192.168.64.0/24");
        assert_eq!(n.host_ip, Ipv4Addr::new(192, 168, 64, 1));
        assert_eq!(n.guest_ip, Ipv4Addr::new(192, 168, 64, 2));
        assert_eq!(
            HostOnlyNet::from_index(1).unwrap().subnet.to_string(),
            "192.168.65.0/24"
        );
        let last = HostOnlyNet::from_index(63).unwrap();
        assert_eq!(last.subnet.to_string(), "192.168.127.0/24");
        assert_eq!(last.guest_ip, Ipv4Addr::new(192, 168, 127, 2));
        assert!(matches!(
            HostOnlyNet::from_index(64),
            Err(NetError::BadIndex { index: 64 })
        ));
        assert_eq!(tap_name(7), "dbx7");
        let link = HostOnlyNet::from_index(7).unwrap().share_link();
        assert_eq!(
            (link.tap.as_str(), link.host_ip, link.guest_ip, link.prefix),
            (
                "dbx7s",
                Ipv4Addr::new(192, 168, 71, 253),
                Ipv4Addr::new(192, 168, 71, 254),
                30
            )
        );
        assert!(devbox_link(&link.tap).is_none(), "not a routed dbxN link");
        assert_eq!(last.tap_name(), "dbx63");
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        let p = |s: &str| s.parse::<Ipv4Net>().unwrap();
        assert!(overlaps(&p("192.168.64.0/24"), &p("192.168.0.0/16")));
        assert!(overlaps(&p("192.168.0.0/16"), &p("192.168.64.0/24")));
        assert!(overlaps(&p("192.168.64.0/24"), &p("192.168.64.77/32")));
        assert!(overlaps(&p("192.168.64.0/24"), &p("192.168.64.9/24")));
        assert!(!overlaps(&p("192.168.64.0/24"), &p("192.168.65.0/24")));
        assert!(!overlaps(&p("192.168.64.0/24"), &p("192.168.63.0/24")));
        assert!(!overlaps(&p("10.0.0.0/8"), &p("192.168.64.0/24")));
    }

    #[test]
    fn allocation_skips_taken_indexes_and_routed_subnets() {
        let routes = [
            route("0.0.0.0/0", "eth0"),
            route("10.0.0.0/8", "wg0"),
            route("192.168.65.0/24", "wlan0"),
            route("192.168.66.128/25", "tun0"),
        ];
        assert_eq!(allocate_host_only(&[], &routes).unwrap().index, 0);
        let n = allocate_host_only(&[0, 3], &routes).unwrap();
        assert_eq!(n.index, 4, "0 and 3 taken, 1 (wlan0) and 2 (tun0) routed");
        assert_eq!(n.subnet.to_string(), "192.168.68.0/24");
    }

    #[test]
    fn default_route_alone_does_not_block_anything() {
        let routes = [route("0.0.0.0/0", "eth0")];
        assert_eq!(allocate_host_only(&[], &routes).unwrap().index, 0);
    }

    #[test]
    fn a_wide_route_exhausts_the_pool() {
        let all: Vec<u8> = (1..POOL_SIZE).collect();
        assert_eq!(allocate_host_only(&all, &[]).unwrap().index, 0);
        let all: Vec<u8> = (0..POOL_SIZE).collect();
        assert!(matches!(
            allocate_host_only(&all, &[]),
            Err(NetError::PoolExhausted)
        ));
        let lan = [route("192.168.0.0/16", "eth0")];
        let err = allocate_host_only(&[], &lan).unwrap_err();
        assert!(matches!(err, NetError::PoolExhausted));
        assert!(err.hint().is_some());
    }

    #[test]
    fn conflict_names_route_and_interface() {
        let net = HostOnlyNet::from_index(0).unwrap();
        let routes = [route("0.0.0.0/0", "eth0"), route("192.168.64.0/20", "tun0")];
        let err = check_conflicts(&net, &routes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "host-only subnet 192.168.64.0/24 overlaps the host route 192.168.64.0/20 on tun0"
        );
        assert!(err.hint().unwrap().contains("tun0"));
        let blackhole = [route("192.168.64.0/24", "")];
        assert!(
            check_conflicts(&net, &blackhole)
                .unwrap_err()
                .to_string()
                .ends_with("on no interface")
        );
    }

    #[test]
    fn own_tap_route_is_not_a_conflict() {
        let net = HostOnlyNet::from_index(5).unwrap();
        let routes = [route("192.168.69.0/24", "dbx5")];
        check_conflicts(&net, &routes).unwrap();
        let routes = [route("192.168.69.0/24", "dbx4")];
        assert!(check_conflicts(&net, &routes).is_err());
        // Allocation still treats a live dbx5 as using index 5.
        let routes = [route("192.168.69.0/24", "dbx5")];
        let taken: Vec<u8> = (0..5).collect();
        assert_eq!(allocate_host_only(&taken, &routes).unwrap().index, 6);
    }

    #[test]
    fn no_privilege_hint_gives_both_commands() {
        let hint = NetError::NoPrivilege {
            what: "creating TAP device dbx0".into(),
        }
        .hint()
        .unwrap();
        assert!(hint.contains("sudo devbox system install"), "{hint}");
    }
}
