//! The applier's second check, after the allowlist: what a plan does on a machine's link must
//! be the caller's to do. Its root of trust is the host-wide lease registry
//! (`crate::net::lease`): a `dbxN` link, its /24 and the Docker subnets routed over it are
//! the caller's only while the caller's real uid owns lease `N`. Nothing the user can edit
//! (`machine.yaml`, `routes.json`, `dns.json`, the environment) can widen that: another
//! lease's subnets are excluded, whatever its owner wrote in it.
//!
//! Also here, the door's two TAP calls, [`open_tap`] and [`open_share_tap`]: the TAPs of an
//! index leased to the caller (`dbxN` and its share link `dbxNs`), with the addresses derived
//! from the index. No other TAP name can be asked for.

use super::HostError;
use super::plan::HostPlan;
use super::privileged::with_net_admin;
use crate::net::lease::{Lease, Registry, real_uid};
use crate::net::ula::MachineIpv6;
use crate::net::{self, HostOnlyNet, Ipv4Net, ShareLink, Tap, devbox_link, overlaps};

/// Checks every item of `plan` that acts on a `dbxN` link against `leases` (the registry's
/// listing) for the caller `uid`: routes added or removed over it, resolved settings on it,
/// its outbound NAT.
/// A route added must be to one of the Docker subnets of the link's lease, and overlap no
/// other lease's.
pub fn check_plan(plan: &HostPlan, leases: &[Lease], uid: u32) -> Result<(), HostError> {
    let refused = |item: String, why: String| HostError::Refused { item, why };
    let own = |link: &str, item: &dyn Fn() -> String| -> Result<Option<&Lease>, HostError> {
        let Some(net) = devbox_link(link) else {
            return Ok(None);
        };
        match leases.iter().find(|l| l.index == net.index) {
            Some(l) if l.owner == uid => Ok(Some(l)),
            Some(l) => Err(refused(
                item(),
                format!(
                    "{link} is leased to uid {}, not to you (uid {uid})",
                    l.owner
                ),
            )),
            None => Err(refused(item(), format!("{link} is not leased to anyone"))),
        }
    };
    // A route's destination must be one of `lease`'s Docker subnets, and overlap no other
    // lease's.
    let carries = |lease: &Lease, dest: Ipv4Net, item: &dyn Fn() -> String| {
        let dest = dest.trunc();
        if !lease.docker().iter().any(|d| d.trunc() == dest) {
            return Err(refused(
                item(),
                format!(
                    "{dest} is not one of the Docker subnets leased with dbx{} ({})",
                    lease.index,
                    list(lease.docker())
                ),
            ));
        }
        for other in leases.iter().filter(|l| l.index != lease.index) {
            if let Some(d) = other.docker().iter().find(|d| overlaps(d, &dest)) {
                return Err(refused(
                    item(),
                    format!("{dest} overlaps {d}, leased with dbx{}", other.index),
                ));
            }
        }
        Ok(())
    };
    for r in &plan.routes.add {
        let item = || format!("route {r}");
        if let Some(lease) = own(&r.interface, &item)? {
            carries(lease, r.dest, &item)?;
        }
    }
    for r in &plan.routes.remove {
        own(&r.interface, &|| format!("remove route {r}"))?;
    }
    for r in &plan.resolved {
        own(&r.link, &|| format!("configure resolved on {}", r.link))?;
    }
    for link in &plan.resolved_revert {
        own(link, &|| format!("revert resolved on {link}"))?;
    }
    // NAT acts on the link and the /24 its index gives (`crate::nat::NatLink`), so the lease
    // of that index is all it needs; any other name (a share link `dbxNs`, a host interface)
    // is refused here too, not only by the allowlist.
    for (verb, link) in plan
        .nat_add
        .iter()
        .map(|l| ("add", l))
        .chain(plan.nat_remove.iter().map(|l| ("remove", l)))
    {
        let item = || format!("{verb} the outbound NAT of {link}");
        if own(link, &item)?.is_none() {
            return Err(refused(
                item(),
                "only a machine's own link (dbxN) gets outbound NAT".into(),
            ));
        }
    }
    // An adopted host's routes carry its lease's Docker subnets, and nothing another lease
    // holds, whatever interface they go out of.
    for (verb, r) in plan
        .remote_routes_add
        .iter()
        .map(|r| ("add", r))
        .chain(plan.remote_routes_remove.iter().map(|r| ("remove", r)))
    {
        let item = || format!("{verb} route {r}");
        let link = net::tap_name(r.lease);
        let Some(lease) = own(&link, &item)? else {
            return Err(refused(
                item(),
                format!("lease {} is outside the pool", r.lease),
            ));
        };
        carries(lease, r.dest, &item)?;
    }
    // Swarm ports only between two machines of the caller's: a user's swarm never reaches
    // another user's machine.
    for p in &plan.swarm_add {
        for link in p.links() {
            let item = || format!("open the swarm ports between {p}");
            if own(link, &item)?.is_none() {
                return Err(refused(
                    item(),
                    "only between machines' own links (dbxN)".into(),
                ));
            }
        }
    }
    for link in &plan.swarm_remove {
        let item = || format!("close the swarm ports of {link}");
        if own(link, &item)?.is_none() {
            return Err(refused(item(), "only a machine's own link (dbxN)".into()));
        }
    }
    Ok(())
}

fn list(nets: &[Ipv4Net]) -> String {
    if nets.is_empty() {
        return "none".into();
    }
    nets.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `plan` acts on any `dbxN` link (and so needs the registry). Any NAT item does:
/// one on another name is refused by [`check_plan`].
pub fn touches_links(plan: &HostPlan) -> bool {
    let link = |l: &str| devbox_link(l).is_some();
    plan.routes
        .add
        .iter()
        .chain(&plan.routes.remove)
        .any(|r| link(&r.interface))
        || plan.resolved.iter().any(|r| link(&r.link))
        || plan.resolved_revert.iter().any(|l| link(l))
        || !plan.nat_add.is_empty()
        || !plan.nat_remove.is_empty()
        || !plan.swarm_add.is_empty()
        || !plan.swarm_remove.is_empty()
        || !plan.remote_routes_add.is_empty()
        || !plan.remote_routes_remove.is_empty()
}

/// [`check_plan`] against `registry`, for the caller's real uid.
pub fn check_plan_in(plan: &HostPlan, registry: &Registry) -> Result<(), HostError> {
    if !touches_links(plan) {
        return Ok(());
    }
    registry.check()?;
    check_plan(plan, &registry.list()?, real_uid())
}

/// The lease of host-only `index`, if the caller's real uid owns it (the door's check before
/// acting on the index's link, /24 or NAT rules).
pub fn require_lease(index: u8) -> Result<Lease, HostError> {
    Ok(Registry::system().owned(index)?)
}

/// Creates and configures the TAP of host-only `index`, `dbx<index>` with `.1/24` of the
/// index's /24, after checking that the caller owns the index's lease and that the /24 is
/// still free on the host (a VPN may have claimed it since `create`). With `ipv6`, the TAP
/// also gets the host's end of the index's IPv6 link and the route to the index's /56 via
/// the guest ([`MachineIpv6`]: derived from the index and the host's machine ID, nothing the
/// caller chooses), after the same check against the host's IPv6 routes. CAP_NET_ADMIN is
/// raised for the creation and configuration only.
pub fn open_tap(
    index: u8,
    vnet_hdr: bool,
    ipv6: bool,
) -> Result<(Tap, HostOnlyNet, Option<MachineIpv6>), HostError> {
    require_lease(index)?;
    let hostonly = HostOnlyNet::from_index(index)?;
    net::check_conflicts(&hostonly, &net::host_routes()?)?;
    let v6 = if ipv6 {
        let v6 = MachineIpv6::for_index(index).map_err(net::NetError::from)?;
        net::check_conflicts_v6(&v6, &net::host_routes_v6()?, &hostonly.tap_name())?;
        Some(v6)
    } else {
        None
    };
    let tap = with_net_admin(|| -> Result<Tap, net::NetError> {
        let tap = Tap::create(&hostonly.tap_name(), vnet_hdr)?;
        tap.configure(hostonly.host_ip, hostonly.subnet.prefix_len())?;
        if let Some(v6) = v6 {
            tap.configure_v6(v6.host_ip, v6.link.prefix_len(), v6.prefix, v6.guest_ip)?;
        }
        Ok(tap)
    })?;
    Ok((tap, hostonly, v6))
}

/// The link of host-only `index` (`dbxN`, with the index's host address) for a host adopted
/// over SSH, which boots nothing on it: [`open_tap`]'s TAP, lease-checked the same way, with
/// its carrier on although no guest reads it, so that its DNS server has a link that is up
/// for systemd-resolved's per-link settings. It goes when the TAP is closed. CAP_NET_ADMIN is
/// raised for the creation and the carrier only.
#[cfg(target_os = "linux")]
pub fn open_dns_link(index: u8) -> Result<(Tap, HostOnlyNet), HostError> {
    let (tap, hostonly, _) = open_tap(index, false, false)?;
    with_net_admin(|| tap.set_carrier(true))?;
    Ok((tap, hostonly))
}

/// Creates and configures the share link of host-only `index` (`dbx<index>s`, the top /30 of
/// the index's /24, see [`ShareLink`]), after the same lease check as [`open_tap`]: the link
/// is part of the lease, and nobody else's. CAP_NET_ADMIN is raised for the creation and
/// configuration only. `registry` is [`Registry::system`] but in tests.
pub fn open_share_tap(
    registry: &Registry,
    index: u8,
    vnet_hdr: bool,
) -> Result<(Tap, ShareLink), HostError> {
    registry.owned(index)?;
    let link = HostOnlyNet::from_index(index)?.share_link();
    let tap = with_net_admin(|| -> Result<Tap, net::NetError> {
        let tap = Tap::create(&link.tap, vnet_hdr)?;
        tap.configure(link.host_ip, link.prefix)?;
        Ok(tap)
    })?;
    Ok((tap, link))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::ResolvedLink;
    use crate::net::lease::LeaseInfo;
    use crate::routes::{PlannedRoute, RoutePlan};

    fn lease(index: u8, owner: u32, docker: &[&str]) -> Lease {
        Lease {
            index,
            owner,
            info: Some(LeaseInfo {
                uid: owner,
                user: format!("u{owner}"),
                machine: format!("m{index}"),
                dir: format!("/home/u{owner}/.devbox/machines/m{index}").into(),
                docker: docker.iter().map(|d| d.parse().unwrap()).collect(),
            }),
        }
    }

    fn route(dest: &str, index: u8) -> PlannedRoute {
        let net = HostOnlyNet::from_index(index).unwrap();
        PlannedRoute {
            dest: dest.parse().unwrap(),
            gateway: net.guest_ip,
            interface: net.tap_name(),
            machine: "m".into(),
        }
    }

    fn adding(r: PlannedRoute) -> HostPlan {
        HostPlan::routes(
            "t",
            RoutePlan {
                add: vec![r],
                remove: vec![],
            },
        )
    }

    fn leases() -> Vec<Lease> {
        vec![
            lease(0, 1000, &["172.18.0.0/16", "172.19.0.0/16"]),
            lease(1, 1001, &["172.20.0.0/16", "172.21.0.0/16"]),
        ]
    }

    #[test]
    fn own_link_and_own_subnets_pass() {
        let p = adding(route("172.18.0.0/16", 0));
        check_plan(&p, &leases(), 1000).unwrap();
    }

    #[test]
    fn another_users_link_or_subnet_is_refused() {
        for (r, uid, why) in [
            (
                route("172.20.0.0/16", 1),
                1000,
                "dbx1 is leased to uid 1001, not to you (uid 1000)",
            ),
            (
                route("172.20.0.0/16", 2),
                1000,
                "dbx2 is not leased to anyone",
            ),
            (
                route("172.20.0.0/16", 0),
                1000,
                "172.20.0.0/16 is not one of the Docker subnets leased with dbx0",
            ),
        ] {
            let err = check_plan(&adding(r), &leases(), uid).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
        // The owner of dbx0 wrote another user's subnet into its own lease: excluded anyway.
        let mut ls = leases();
        ls[0] = lease(0, 1000, &["172.20.0.0/16"]);
        let err = check_plan(&adding(route("172.20.0.0/16", 0)), &ls, 1000).unwrap_err();
        assert!(
            err.to_string()
                .contains("overlaps 172.20.0.0/16, leased with dbx1"),
            "{err}"
        );
    }

    #[test]
    fn removals_and_resolved_need_the_lease_too() {
        let mut p = HostPlan::routes(
            "t",
            RoutePlan {
                add: vec![],
                remove: vec![route("172.20.0.0/16", 1)],
            },
        );
        assert!(check_plan(&p, &leases(), 1000).is_err());
        check_plan(&p, &leases(), 1001).unwrap();
        p.routes.remove.clear();
        p.resolved.push(ResolvedLink {
            link: "dbx1".into(),
            server: "192.168.65.1:53".parse().unwrap(),
            tld: "dev".into(),
            domains: vec!["m1.dev".into()],
        });
        assert!(check_plan(&p, &leases(), 1000).is_err());
        check_plan(&p, &leases(), 1001).unwrap();
        p.resolved.clear();
        p.resolved_revert.push("dbx0".into());
        assert!(check_plan(&p, &leases(), 1001).is_err());
        assert!(touches_links(&p));
        assert!(!touches_links(&HostPlan::default()));
    }

    #[test]
    fn swarm_ports_open_only_between_two_machines_of_the_caller() {
        let mut mine = leases();
        mine.push(lease(2, 1000, &["172.22.0.0/16"]));
        let pair = |x, y| HostPlan {
            swarm_add: vec![crate::nat::SwarmPair::new(x, y).unwrap()],
            ..HostPlan::default()
        };
        assert!(touches_links(&pair("dbx0", "dbx2")));
        check_plan(&pair("dbx0", "dbx2"), &mine, 1000).unwrap();
        let err = check_plan(&pair("dbx0", "dbx1"), &mine, 1000).unwrap_err();
        assert_eq!(
            err.to_string(),
            "refused to open the swarm ports between dbx0 and dbx1: dbx1 is leased to uid 1001, \
             not to you (uid 1000)"
        );
        assert!(
            check_plan(&pair("dbx0", "dbx3"), &mine, 1000).is_err(),
            "unleased"
        );
        let close = |l: &str| HostPlan {
            swarm_remove: vec![l.to_owned()],
            ..HostPlan::default()
        };
        check_plan(&close("dbx2"), &mine, 1000).unwrap();
        assert!(check_plan(&close("dbx1"), &mine, 1000).is_err());
    }

    #[test]
    fn an_adopted_hosts_routes_carry_its_own_leases_subnets_only() {
        let plan = |dest: &str, lease: u8| HostPlan {
            remote_routes_add: vec![crate::host::RemoteRoute {
                dest: dest.parse().unwrap(),
                gateway: "192.168.1.50".parse().unwrap(),
                interface: "eth0".into(),
                lease,
                machine: "far".into(),
            }],
            ..HostPlan::default()
        };
        assert!(touches_links(&plan("172.18.0.0/16", 0)));
        check_plan(&plan("172.18.0.0/16", 0), &leases(), 1000).unwrap();
        let err = check_plan(&plan("172.20.0.0/16", 1), &leases(), 1000).unwrap_err();
        assert!(
            err.to_string()
                .contains("dbx1 is leased to uid 1001, not to you"),
            "{err}"
        );
        let err = check_plan(&plan("172.20.0.0/16", 0), &leases(), 1000).unwrap_err();
        assert!(
            err.to_string()
                .contains("not one of the Docker subnets leased with dbx0"),
            "{err}"
        );
        assert!(
            check_plan(&plan("172.18.0.0/16", 5), &leases(), 1000).is_err(),
            "no lease"
        );
    }

    fn nat(add: &[&str], remove: &[&str]) -> HostPlan {
        HostPlan {
            nat_add: add.iter().map(|l| l.to_string()).collect(),
            nat_remove: remove.iter().map(|l| l.to_string()).collect(),
            ..HostPlan::default()
        }
    }

    #[test]
    fn nat_on_the_callers_own_link_passes_both_ways() {
        let p = nat(&["dbx0"], &["dbx0"]);
        assert!(touches_links(&p));
        check_plan(&p, &leases(), 1000).unwrap();
    }

    #[test]
    fn nat_on_another_users_or_an_unleased_link_is_refused() {
        for (add, remove, why) in [
            (
                "dbx1",
                "dbx0",
                "refused to add the outbound NAT of dbx1: dbx1 is leased to uid 1001, not to you (uid 1000)",
            ),
            (
                "dbx0",
                "dbx1",
                "refused to remove the outbound NAT of dbx1: dbx1 is leased to uid 1001, not to you (uid 1000)",
            ),
            (
                "dbx5",
                "dbx0",
                "refused to add the outbound NAT of dbx5: dbx5 is not leased to anyone",
            ),
        ] {
            let err = check_plan(&nat(&[add], &[remove]), &leases(), 1000).unwrap_err();
            assert!(err.to_string().contains(why), "{add}/{remove}: {err}");
        }
        // Root holds no lease either: uid 0 gets no NAT on a user's link.
        assert!(check_plan(&nat(&["dbx0"], &[]), &leases(), 0).is_err());
    }

    #[test]
    fn nat_on_a_share_link_or_a_host_interface_is_refused_even_with_its_lease() {
        let share = HostOnlyNet::from_index(0).unwrap().share_link().tap;
        for link in [share.as_str(), "eth0", "dbx", "dbx00", "dbx64", ""] {
            let p = nat(&[link], &[]);
            assert!(touches_links(&p), "{link}");
            let err = check_plan(&p, &leases(), 1000).unwrap_err();
            assert!(
                err.to_string().contains("only a machine's own link (dbxN)"),
                "{link}: {err}"
            );
            assert!(
                check_plan(&nat(&[], &[link]), &leases(), 1000).is_err(),
                "{link}"
            );
        }
    }
}
