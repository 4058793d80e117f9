//! The route changes for one machine: its Docker subnets via its guest address on its link,
//! checked against the host's routing table (pure; no system calls).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::{DockerSubnets, RouteError};
use crate::net::vmnet::is_vmnet_bridge;
use crate::net::{HostRoute, Ipv4Net, devbox_link, first_overlap};

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
        if let Some(r) = first_overlap(&w.dest, host_routes, |r| w.matches(r)) {
            return Err(RouteError::conflict(w.dest, r));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hint::Hint;
    use crate::routes::allocate_docker_subnets;

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

    /// A laptop: default route, LAN, the host's own docker0.
    fn laptop() -> Vec<HostRoute> {
        vec![
            route("0.0.0.0/0", Some("192.168.1.1"), "wlan0"),
            route("192.168.1.0/24", None, "wlan0"),
            route("172.17.0.0/16", None, "docker0"),
        ]
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
}
