//! Docker subnets of a machine and the host routes that reach them (pure; no system calls).
//!
//! Each machine owns two Docker subnets inside its guest: the default bridge (`bip`, e.g.
//! `172.18.0.1/16`) and an address pool that `docker network create` carves user-defined
//! networks from (e.g. `172.19.0.0/16` split into /24s). The host reaches both through one
//! route each, via the machine's guest IP on its TAP device `dbxN`.
//!
//! Allocation walks the /16s 172.18 … 172.31 (the private 172.16.0.0/12 block minus Docker's
//! own defaults 172.16/16 (unused by Docker, but often by VPNs) and 172.17/16, the host's own
//! `docker0`): the bridge takes the first free one and the pool the next, so the first machine
//! gets 172.18 + 172.19, the second 172.20 + 172.21, up to seven machines. More machines, or a
//! network whose VPN covers that block, pass `--docker-subnet` with a subnet of their choice.
//!
//! Threads: none. Everything here is a pure function of its arguments.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{HostOnlyNet, HostRoute, Ipv4Net, POOL_SIZE, overlaps};

/// The CLI flag that picks a machine's Docker bridge subnet, named in conflict errors.
pub const DOCKER_SUBNET_FLAG: &str = "--docker-subnet";

/// The longest prefix accepted for a Docker subnet. A /24 holds 253 containers; anything
/// smaller makes a bridge that runs out of addresses in ordinary use and would let a user
/// carve the routed space into more host routes than there are machines.
pub const MIN_SUBNET_PREFIX: u8 = 24;
/// The shortest prefix accepted: a /12 is the whole 172.16.0.0/12 block. A wider route would
/// swallow most of a private range (and the VPN and LAN routes inside it).
pub const MAX_SUBNET_PREFIX: u8 = 12;
/// Size of the networks Docker carves out of the pool (`default-address-pools[].size`).
pub const POOL_NETWORK_PREFIX: u8 = 24;

/// Docker Engine major version from which `allow-direct-routing` exists; older engines
/// (Debian bookworm's docker.io 20.10) refuse a `daemon.json` with a key they do not know.
pub const ALLOW_DIRECT_ROUTING_SINCE: u32 = 28;

/// The candidate /16s for automatic allocation: 172.18.0.0/16 … 172.31.0.0/16.
const AUTO_FIRST_OCTET: u8 = 18;
const AUTO_LAST_OCTET: u8 = 31;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error(
        "Docker subnet {subnet} overlaps the host route {route} on {interface}; \
         pick another subnet with {flag}"
    )]
    Conflict {
        subnet: Ipv4Net,
        route: Ipv4Net,
        interface: String,
        flag: &'static str,
    },
    #[error("invalid Docker subnet {text:?}: {why}")]
    Invalid { text: String, why: String },
    #[error(
        "Docker subnet {subnet} is too small: the longest prefix devbox routes is \
         /{MIN_SUBNET_PREFIX} (253 containers)"
    )]
    TooSmall { subnet: Ipv4Net },
    #[error(
        "Docker subnet {subnet} is too large: the shortest prefix devbox routes is \
         /{MAX_SUBNET_PREFIX}"
    )]
    TooLarge { subnet: Ipv4Net },
    #[error(
        "Docker subnet {subnet} is not private: devbox only routes RFC 1918 addresses \
         (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16) to a machine"
    )]
    NotPrivate { subnet: Ipv4Net },
    #[error("Docker subnet {subnet} overlaps devbox's host-only networks {host_only}")]
    OverlapsHostOnly { subnet: Ipv4Net, host_only: Ipv4Net },
    #[error("Docker subnet {subnet} overlaps {other}, which machine {machine} already uses")]
    Duplicate {
        subnet: Ipv4Net,
        other: Ipv4Net,
        machine: String,
    },
    #[error(
        "no free Docker subnet: 172.18.0.0/16 … 172.31.0.0/16 are all used by machines or \
         overlap host routes"
    )]
    Exhausted,
    #[error(
        "machine {machine}: {interface} is neither a devbox TAP device (dbxN) nor a vmnet \
         bridge (bridgeN)"
    )]
    NotDevboxLink { machine: String, interface: String },
}

impl RouteError {
    pub fn hint(&self) -> Option<String> {
        match self {
            RouteError::Conflict {
                interface, flag, ..
            } => Some(format!(
                "another network on {interface} (a VPN, the LAN, a container engine or \
                 another machine) uses these addresses: pick a free private subnet with \
                 `{flag} 10.200.0.1/16`, or disconnect that network"
            )),
            RouteError::Duplicate { machine, .. } => Some(format!(
                "each machine needs its own Docker subnets: pick another with \
                 `{DOCKER_SUBNET_FLAG}`, or remove machine {machine}"
            )),
            RouteError::Exhausted => Some(format!(
                "pass `{DOCKER_SUBNET_FLAG}` with a free private subnet, e.g. 10.200.0.1/16"
            )),
            _ => None,
        }
    }
}

/// A subnet some machine already uses (its Docker bridge or pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub machine: String,
    pub subnet: Ipv4Net,
}

/// The Docker subnets of one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerSubnets {
    /// Docker's `bip`: the bridge's gateway address with its prefix (`172.18.0.1/16`).
    pub bridge: Ipv4Net,
    /// Base of `default-address-pools` (`172.19.0.0/16`).
    pub pool: Ipv4Net,
    /// Prefix length of each network Docker takes from the pool (24).
    pub pool_size: u8,
}

impl DockerSubnets {
    /// The networks the host routes to the machine: the bridge, then the pool.
    pub fn routed(&self) -> [Ipv4Net; 2] {
        [self.bridge.trunc(), self.pool.trunc()]
    }

    /// The `bip` and `default-address-pools` keys of the guest's `daemon.json`, for a guest
    /// Docker Engine of major version `engine_major`.
    ///
    /// `allow-direct-routing` is only written for engines ≥ 28: those drop routed traffic to
    /// unpublished container ports unless it is set (moby/moby#49832), while older ones fail
    /// to start on a key they do not know. On the 20.10 engine of the Debian bookworm guest,
    /// containers are reachable once the FORWARD chain accepts the traffic, which the guest
    /// init does with a `DOCKER-USER` rule accepting packets that enter on `eth0`.
    pub fn daemon_json_fragment(&self, engine_major: u32) -> serde_json::Value {
        let mut v = json!({
            "bip": self.bridge.to_string(),
            "default-address-pools": [
                { "base": self.pool.trunc().to_string(), "size": self.pool_size }
            ],
        });
        if engine_major >= ALLOW_DIRECT_ROUTING_SINCE {
            v["allow-direct-routing"] = json!(true);
        }
        v
    }
}

/// Checks one Docker subnet a user asked for (or a stored one): size, private, clear of
/// devbox's host-only pool and of other machines.
pub fn validate_docker_subnet(subnet: Ipv4Net, taken: &[Claim]) -> Result<(), RouteError> {
    let net = subnet.trunc();
    if net.prefix_len() > MIN_SUBNET_PREFIX {
        return Err(RouteError::TooSmall { subnet });
    }
    if net.prefix_len() < MAX_SUBNET_PREFIX {
        return Err(RouteError::TooLarge { subnet });
    }
    if !is_private(&net) {
        return Err(RouteError::NotPrivate { subnet });
    }
    let host_only = host_only_pool();
    if overlaps(&net, &host_only) {
        return Err(RouteError::OverlapsHostOnly { subnet, host_only });
    }
    if let Some(c) = taken.iter().find(|c| overlaps(&net, &c.subnet)) {
        return Err(RouteError::Duplicate {
            subnet,
            other: c.subnet,
            machine: c.machine.clone(),
        });
    }
    Ok(())
}

/// Picks a new machine's Docker subnets. `taken` holds every other machine's subnets,
/// `routes` the host's routing table. With `requested_bip` (from `--docker-subnet`) the
/// bridge is that subnet, validated and conflict-checked; the pool is always the first free
/// candidate /16 (see the module header).
pub fn allocate_docker_subnets(
    taken: &[Claim],
    routes: &[HostRoute],
    requested_bip: Option<Ipv4Net>,
) -> Result<DockerSubnets, RouteError> {
    let bridge = match requested_bip {
        Some(bip) => {
            validate_docker_subnet(bip, taken)?;
            if let Some(r) = first_conflict(&bip.trunc(), routes, None) {
                return Err(conflict(bip.trunc(), r));
            }
            bip
        }
        None => {
            let net = free_candidate(taken, routes, None)?;
            Ipv4Net::new(first_host(&net), net.prefix_len()).expect("prefix is 16")
        }
    };
    let pool = free_candidate(taken, routes, Some(bridge.trunc()))?;
    Ok(DockerSubnets {
        bridge,
        pool,
        pool_size: POOL_NETWORK_PREFIX,
    })
}

fn free_candidate(
    taken: &[Claim],
    routes: &[HostRoute],
    also_taken: Option<Ipv4Net>,
) -> Result<Ipv4Net, RouteError> {
    (AUTO_FIRST_OCTET..=AUTO_LAST_OCTET)
        .map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).expect("16 is valid"))
        .filter(|n| also_taken.is_none_or(|t| !overlaps(n, &t)))
        .find(|n| {
            validate_docker_subnet(*n, taken).is_ok() && first_conflict(n, routes, None).is_none()
        })
        .ok_or(RouteError::Exhausted)
}

/// One route to a machine's Docker subnet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PlannedRoute {
    pub dest: Ipv4Net,
    /// The machine's guest IP.
    pub gateway: Ipv4Addr,
    /// The machine's TAP device (`dbxN`).
    pub interface: String,
    pub machine: String,
}

impl PlannedRoute {
    /// Whether `r` (from the host's table) is this very route.
    pub fn matches(&self, r: &HostRoute) -> bool {
        r.dest == self.dest
            && r.gateway == Some(IpAddr::V4(self.gateway))
            && r.interface == self.interface
    }
}

impl fmt::Display for PlannedRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} via {} dev {}",
            self.dest, self.gateway, self.interface
        )
    }
}

/// The route changes for one machine: sorted, so two plans compare equal when they mean the
/// same change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutePlan {
    /// Every route the machine needs; ones already present are kept as they are.
    pub add: Vec<PlannedRoute>,
    /// Routes devbox added earlier for this machine that it no longer needs (its Docker
    /// subnet changed).
    pub remove: Vec<PlannedRoute>,
}

impl RoutePlan {
    /// Merges another machine's plan into this one, keeping both lists sorted.
    pub fn extend(&mut self, other: RoutePlan) {
        self.add.extend(other.add);
        self.remove.extend(other.remove);
        self.normalize();
    }

    /// Sorts both lists and drops duplicates.
    pub fn normalize(&mut self) {
        self.add.sort();
        self.add.dedup();
        self.remove.sort();
        self.remove.dedup();
    }
}

/// Computes the routes for `machine`'s Docker subnets via `guest_ip` on `tap`, after checking
/// every one against the host's routing table. A host route that overlaps one of them is a
/// [`RouteError::Conflict`], except the very route (same destination, gateway and device)
/// that devbox added for this machine before, so applying twice is harmless. Default routes
/// never conflict. Routes via the machine's guest IP on its TAP that lead elsewhere are
/// devbox's own leftovers and are planned for removal; no other route is ever removed.
pub fn route_plan_for(
    machine: &str,
    subnets: &DockerSubnets,
    guest_ip: Ipv4Addr,
    tap: &str,
    host_routes: &[HostRoute],
) -> Result<RoutePlan, RouteError> {
    check_devbox_link(machine, tap)?;
    let wanted = machine_routes(machine, subnets.routed(), guest_ip, tap);
    for w in &wanted {
        if let Some(r) = first_conflict(&w.dest, host_routes, Some(w)) {
            return Err(conflict(w.dest, r));
        }
    }
    let remove = host_routes
        .iter()
        .filter(|r| r.interface == tap && r.gateway == Some(IpAddr::V4(guest_ip)))
        .filter(|r| r.dest.prefix_len() > 0 && !wanted.iter().any(|w| w.matches(r)))
        .map(|r| r.dest)
        .collect::<Vec<_>>();
    let mut remove = machine_routes(machine, remove, guest_ip, tap);
    remove.sort();
    let mut add = wanted;
    add.sort();
    Ok(RoutePlan { add, remove })
}

/// Routes to `dests` via `machine`'s guest IP on its TAP.
fn machine_routes(
    machine: &str,
    dests: impl IntoIterator<Item = Ipv4Net>,
    guest_ip: Ipv4Addr,
    tap: &str,
) -> Vec<PlannedRoute> {
    dests
        .into_iter()
        .map(|dest| PlannedRoute {
            dest,
            gateway: guest_ip,
            interface: tap.to_owned(),
            machine: machine.to_owned(),
        })
        .collect()
}

/// The plan that takes `machine`'s Docker routes away (machine stopped or removed).
pub fn removal_plan_for(
    machine: &str,
    subnets: &DockerSubnets,
    guest_ip: Ipv4Addr,
    tap: &str,
) -> Result<RoutePlan, RouteError> {
    check_devbox_link(machine, tap)?;
    let mut remove = machine_routes(machine, subnets.routed(), guest_ip, tap);
    remove.sort();
    Ok(RoutePlan {
        add: Vec::new(),
        remove,
    })
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

/// Whether `interface` is a vmnet bridge (`bridge100`, …): where macOS puts the host side of
/// Virtualization.framework's NAT, and so the link to a vz machine, whose address vmnet's DHCP
/// server chose (the applier's allowlist checks the gateway apart).
pub fn is_vmnet_bridge(interface: &str) -> bool {
    interface
        .strip_prefix("bridge")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Routes go to a machine over its own TAP (qemu, kvm) or over a vmnet bridge (vz).
fn check_devbox_link(machine: &str, tap: &str) -> Result<(), RouteError> {
    match devbox_link(tap) {
        Some(_) => Ok(()),
        None if is_vmnet_bridge(tap) => Ok(()),
        None => Err(RouteError::NotDevboxLink {
            machine: machine.to_owned(),
            interface: tap.to_owned(),
        }),
    }
}

/// The whole host-only pool, 192.168.64.0/18: no Docker subnet may overlap any machine's
/// host-only /24.
pub fn host_only_pool() -> Ipv4Net {
    let first = HostOnlyNet::from_index(0).expect("index 0 exists").subnet;
    Ipv4Net::new(first.network(), 18).expect("18 is valid")
}

/// Whether `net` lies inside one of the RFC 1918 private blocks.
pub fn is_private(net: &Ipv4Net) -> bool {
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        .iter()
        .map(|b| b.parse::<Ipv4Net>().expect("static CIDR"))
        .any(|block| block.contains(net))
}

fn first_host(net: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

fn first_conflict<'r>(
    net: &Ipv4Net,
    routes: &'r [HostRoute],
    own: Option<&PlannedRoute>,
) -> Option<&'r HostRoute> {
    routes
        .iter()
        .filter(|r| r.dest.prefix_len() > 0 && !own.is_some_and(|o| o.matches(r)))
        .find(|r| overlaps(net, &r.dest))
}

fn conflict(subnet: Ipv4Net, r: &HostRoute) -> RouteError {
    RouteError::Conflict {
        subnet,
        route: r.dest,
        interface: if r.interface.is_empty() {
            "no interface".into()
        } else {
            r.interface.clone()
        },
        flag: DOCKER_SUBNET_FLAG,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn route(dest: &str, gw: Option<&str>, interface: &str) -> HostRoute {
        HostRoute {
            dest: net(dest),
            gateway: gw.map(|g| g.parse().unwrap()),
            interface: interface.into(),
        }
    }

    fn claims(machine: &str, s: &DockerSubnets) -> Vec<Claim> {
        s.routed()
            .into_iter()
            .map(|subnet| Claim {
                machine: machine.into(),
                subnet,
            })
            .collect()
    }

    /// A laptop: default route, LAN, the host's own docker0.
    fn laptop() -> Vec<HostRoute> {
        vec![
            route("0.0.0.0/0", Some("192.168.1.1"), "wlan0"),
            route("192.168.1.0/24", None, "wlan0"),
            route("172.17.0.0/16", None, "docker0"),
        ]
    }

    #[test]
    fn one_two_three_machines_get_consecutive_pairs() {
        let routes = laptop();
        let mut taken = Vec::new();
        let mut got = Vec::new();
        for name in ["a", "b", "c"] {
            let s = allocate_docker_subnets(&taken, &routes, None).unwrap();
            taken.extend(claims(name, &s));
            got.push((s.bridge.to_string(), s.pool.to_string(), s.pool_size));
        }
        assert_eq!(
            got,
            [
                ("172.18.0.1/16".into(), "172.19.0.0/16".into(), 24),
                ("172.20.0.1/16".into(), "172.21.0.0/16".into(), 24),
                ("172.22.0.1/16".into(), "172.23.0.0/16".into(), 24),
            ]
        );
    }

    #[test]
    fn allocation_skips_routed_candidates_and_runs_out() {
        // docker0 on 172.17 does not block 172.18; a VPN on 172.18.0.0/15 blocks 172.18-19.
        let mut routes = laptop();
        routes.push(route("172.18.0.0/15", Some("10.8.0.1"), "tun0"));
        let s = allocate_docker_subnets(&[], &routes, None).unwrap();
        assert_eq!(s.bridge.to_string(), "172.20.0.1/16");
        assert_eq!(s.pool.to_string(), "172.21.0.0/16");

        routes.push(route("172.16.0.0/12", None, "wg0"));
        let err = allocate_docker_subnets(&[], &routes, None).unwrap_err();
        assert_eq!(err, RouteError::Exhausted);
        assert!(err.hint().unwrap().contains("--docker-subnet"));
    }

    #[test]
    fn requested_bip_is_kept_and_the_pool_avoids_it() {
        let s = allocate_docker_subnets(&[], &laptop(), Some(net("172.19.0.1/16"))).unwrap();
        assert_eq!(s.bridge.to_string(), "172.19.0.1/16");
        assert_eq!(s.pool.to_string(), "172.18.0.0/16");
        let s = allocate_docker_subnets(&[], &laptop(), Some(net("10.200.0.1/24"))).unwrap();
        assert_eq!(s.routed(), [net("10.200.0.0/24"), net("172.18.0.0/16")]);
    }

    #[test]
    fn conflicts_name_route_interface_and_flag() {
        let subnets = allocate_docker_subnets(&[], &[], None).unwrap();
        let ip: Ipv4Addr = "192.168.64.2".parse().unwrap();
        // docker0 and the default route are fine.
        route_plan_for("dev", &subnets, ip, "dbx0", &laptop()).unwrap();

        let mut vpn = laptop();
        vpn.push(route("172.18.0.0/15", Some("10.8.0.1"), "tun0"));
        let err = route_plan_for("dev", &subnets, ip, "dbx0", &vpn).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Docker subnet 172.18.0.0/16 overlaps the host route 172.18.0.0/15 on tun0; \
             pick another subnet with --docker-subnet"
        );
        assert!(err.hint().unwrap().contains("tun0"));

        let lan = [route("172.0.0.0/8", None, "eth0")];
        assert!(matches!(
            route_plan_for("dev", &subnets, ip, "dbx0", &lan),
            Err(RouteError::Conflict { interface, .. }) if interface == "eth0"
        ));
        let lan = [route("172.19.4.0/24", None, "")];
        let err = route_plan_for("dev", &subnets, ip, "dbx0", &lan).unwrap_err();
        assert!(
            err.to_string()
                .contains("172.19.0.0/16 overlaps the host route 172.19.4.0/24 on no interface")
        );

        // The requested subnet is checked the same way at allocation time.
        let err = allocate_docker_subnets(&[], &vpn, Some(net("172.19.0.1/16"))).unwrap_err();
        assert!(matches!(
            err,
            RouteError::Conflict {
                flag: "--docker-subnet",
                ..
            }
        ));
    }

    #[test]
    fn another_machine_route_is_a_conflict_but_our_own_is_not() {
        let subnets = allocate_docker_subnets(&[], &[], None).unwrap();
        let ip: Ipv4Addr = "192.168.64.2".parse().unwrap();
        let plan = route_plan_for("dev", &subnets, ip, "dbx0", &[]).unwrap();
        assert_eq!(
            plan.add.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            [
                "172.18.0.0/16 via 192.168.64.2 dev dbx0",
                "172.19.0.0/16 via 192.168.64.2 dev dbx0"
            ]
        );
        assert!(plan.remove.is_empty());

        // Applied: the same routes in the table give the same plan (idempotent).
        let applied: Vec<HostRoute> = plan
            .add
            .iter()
            .map(|r| route(&r.dest.to_string(), Some("192.168.64.2"), "dbx0"))
            .collect();
        assert_eq!(
            route_plan_for("dev", &subnets, ip, "dbx0", &applied).unwrap(),
            plan
        );
        // The same destination via another machine's TAP, or another gateway, is not ours.
        let other = [route("172.18.0.0/16", Some("192.168.65.2"), "dbx1")];
        assert!(route_plan_for("dev", &subnets, ip, "dbx0", &other).is_err());
        let other_gw = [route("172.18.0.0/16", Some("192.168.64.3"), "dbx0")];
        assert!(route_plan_for("dev", &subnets, ip, "dbx0", &other_gw).is_err());
    }

    #[test]
    fn a_changed_subnet_removes_only_our_old_route() {
        let ip: Ipv4Addr = "192.168.64.2".parse().unwrap();
        let subnets = allocate_docker_subnets(&[], &[], Some(net("10.200.0.1/16"))).unwrap();
        let table = [
            route("172.30.0.0/16", Some("192.168.64.2"), "dbx0"),
            route("192.168.64.0/24", None, "dbx0"),
            route("0.0.0.0/0", Some("192.168.64.2"), "dbx0"),
            route("10.99.0.0/16", Some("192.168.1.1"), "wlan0"),
        ];
        let plan = route_plan_for("dev", &subnets, ip, "dbx0", &table).unwrap();
        assert_eq!(plan.remove.len(), 1, "{plan:?}");
        assert_eq!(
            plan.remove[0].to_string(),
            "172.30.0.0/16 via 192.168.64.2 dev dbx0"
        );
        let gone = removal_plan_for("dev", &subnets, ip, "dbx0").unwrap();
        assert!(gone.add.is_empty());
        assert_eq!(gone.remove.len(), 2);
    }

    #[test]
    fn bad_subnets_are_refused_with_reasons() {
        let p = |s| validate_docker_subnet(net(s), &[]);
        assert!(matches!(
            p("172.18.0.0/25"),
            Err(RouteError::TooSmall { .. })
        ));
        assert!(matches!(p("10.0.0.0/8"), Err(RouteError::TooLarge { .. })));
        assert!(matches!(
            p("8.8.8.0/24"),
            Err(RouteError::NotPrivate { .. })
        ));
        assert!(matches!(
            p("172.32.0.0/16"),
            Err(RouteError::NotPrivate { .. })
        ));
        let err = p("192.168.64.0/24").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Docker subnet 192.168.64.0/24 overlaps devbox's host-only networks 192.168.64.0/18"
        );
        assert!(matches!(
            p("192.168.0.0/16"),
            Err(RouteError::OverlapsHostOnly { .. })
        ));
        p("172.18.0.0/24").unwrap();
        p("172.16.0.0/12").unwrap();
        p("192.168.200.0/24").unwrap();
    }

    #[test]
    fn two_machines_cannot_share_a_subnet() {
        let first = allocate_docker_subnets(&[], &[], None).unwrap();
        let taken = claims("web", &first);
        let err = allocate_docker_subnets(&taken, &[], Some(net("172.18.128.1/17"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Docker subnet 172.18.128.1/17 overlaps 172.18.0.0/16, which machine web already uses"
        );
        assert!(err.hint().unwrap().contains("web"));
    }

    #[test]
    fn only_dbx_links_are_devbox_links() {
        assert_eq!(
            devbox_link("dbx0").unwrap().guest_ip.to_string(),
            "192.168.64.2"
        );
        assert_eq!(devbox_link("dbx63").unwrap().index, 63);
        for bad in ["dbx", "dbx64", "dbx01", "eth0", "dbx-1", "xdbx0", "dbx0a"] {
            assert!(devbox_link(bad).is_none(), "{bad}");
        }
        let s = allocate_docker_subnets(&[], &[], None).unwrap();
        let err = route_plan_for("dev", &s, "192.168.64.2".parse().unwrap(), "eth0", &[]);
        assert!(matches!(err, Err(RouteError::NotDevboxLink { .. })));
    }

    #[test]
    fn a_vz_machine_is_routed_over_its_vmnet_bridge() {
        for ok in ["bridge100", "bridge0", "bridge101"] {
            assert!(is_vmnet_bridge(ok), "{ok}");
        }
        for bad in ["bridge", "bridge1a", "br0", "xbridge100", "bridge-1"] {
            assert!(!is_vmnet_bridge(bad), "{bad}");
        }
        let s = allocate_docker_subnets(&[], &[], None).unwrap();
        let host = [HostRoute {
            dest: "192.168.64.0/24".parse().unwrap(),
            gateway: None,
            interface: "bridge100".into(),
        }];
        let plan = route_plan_for(
            "dev",
            &s,
            "192.168.64.7".parse().unwrap(),
            "bridge100",
            &host,
        )
        .unwrap();
        let got: Vec<String> = plan.add.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            got,
            [
                "172.18.0.0/16 via 192.168.64.7 dev bridge100",
                "172.19.0.0/16 via 192.168.64.7 dev bridge100"
            ]
        );
        assert!(plan.remove.is_empty());
    }

    #[test]
    fn daemon_json_sets_allow_direct_routing_only_where_it_exists() {
        let s = allocate_docker_subnets(&[], &[], None).unwrap();
        let old = s.daemon_json_fragment(20);
        assert_eq!(old["bip"], "172.18.0.1/16");
        assert_eq!(old["default-address-pools"][0]["base"], "172.19.0.0/16");
        assert_eq!(old["default-address-pools"][0]["size"], 24);
        assert!(old.get("allow-direct-routing").is_none());
        assert_eq!(s.daemon_json_fragment(28)["allow-direct-routing"], true);
    }
}
