//! Docker subnets of a machine (pure; no system calls).
//!
//! Each machine owns two Docker subnets inside its guest: the default bridge (`bip`, e.g.
//! `172.18.0.1/16`) and an address pool that `docker network create` carves user-defined
//! networks from (e.g. `172.19.0.0/16` split into /24s). The host reaches both through one
//! route each (`plan.rs`).
//!
//! Allocation walks the /16s 172.18 … 172.31 (the private 172.16.0.0/12 block minus Docker's
//! own defaults 172.16/16 (unused by Docker, but often by VPNs) and 172.17/16, the host's own
//! `docker0`): the bridge takes the first free one and the pool the next, so the first machine
//! gets 172.18 + 172.19, the second 172.20 + 172.21, up to seven machines. More machines, or a
//! network whose VPN covers that block, pass `--docker-subnet` with a subnet of their choice.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::RouteError;
use crate::net::{HostOnlyNet, HostRoute, Ipv4Net, first_overlap, overlaps};

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
            if let Some(r) = first_overlap(&bip.trunc(), routes, |_| false) {
                return Err(RouteError::conflict(bip.trunc(), r));
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
            validate_docker_subnet(*n, taken).is_ok()
                && first_overlap(n, routes, |_| false).is_none()
        })
        .ok_or(RouteError::Exhausted)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hint::Hint;

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
