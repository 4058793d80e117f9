//! A vz machine's host-side link: the vmnet bridge (`bridgeN`) its guest is on, and its
//! member of that bridge, found in macOS `ifconfig` output before boot and after the guest
//! reported its address. Pure, so it is tested on any host; `sys/macos.rs` runs `ifconfig`.
//!
//! vmnet (Virtualization.framework's NAT) owns the link: the guest gets its address from
//! vmnet's DHCP server, and routes to its containers go via that address on the bridge, with
//! vmnet's host filter lifted for the machine's member, so replies from container addresses,
//! which vmnet did not assign, reach the host.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::Ipv4Net;
use crate::hint::Hint;

/// Whether `interface` is a vmnet bridge (`bridge100`, …): where macOS puts the host side of
/// Virtualization.framework's NAT, and so the link to a vz machine, whose address vmnet's DHCP
/// server chose (the applier's allowlist checks the gateway apart).
pub fn is_vmnet_bridge(interface: &str) -> bool {
    interface
        .strip_prefix("bridge")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A vmnet bridge as `ifconfig` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bridge {
    /// Its IPv4 networks (`inet A netmask 0xM`).
    pub nets: Vec<Ipv4Net>,
    /// The host's own address on each of `nets` (`A`), in the same order.
    pub addrs: Vec<Ipv4Addr>,
    /// Its member interfaces (`member: vmenet0 …`): one per running VM on that NAT.
    pub members: BTreeSet<String>,
}

/// The vmnet bridges (`bridgeN`) in macOS `ifconfig` output, by name.
pub fn parse_ifconfig_bridges(text: &str) -> BTreeMap<String, Bridge> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with([' ', '\t']) {
            current = line
                .split_once(':')
                .map(|(name, _)| name.to_owned())
                .filter(|name| is_vmnet_bridge(name));
            if let Some(name) = &current {
                out.insert(name.clone(), Bridge::default());
            }
            continue;
        }
        let Some(bridge) = current.as_ref().and_then(|n| out.get_mut(n)) else {
            continue;
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["member:", member, ..] => {
                bridge.members.insert((*member).to_owned());
            }
            ["inet", addr, "netmask", mask, ..] => {
                let addr = addr.parse::<Ipv4Addr>().ok();
                let mask = mask
                    .strip_prefix("0x")
                    .and_then(|m| u32::from_str_radix(m, 16).ok())
                    .filter(|m| m.leading_ones() + m.trailing_zeros() == 32);
                if let (Some(addr), Some(mask)) = (addr, mask) {
                    let net = Ipv4Net::new(addr, mask.leading_ones() as u8)
                        .expect("a prefix of at most 32");
                    bridge.nets.push(net.trunc());
                    bridge.addrs.push(addr);
                }
            }
            _ => {}
        }
    }
    out
}

/// A vz machine's link: the bridge its guest is on, and its member(s) of that bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatLink {
    pub bridge: String,
    /// The host's address on the bridge's subnet that holds the guest's: where the guest
    /// reaches the host (its default router on vmnet's NAT).
    pub host_ip: Ipv4Addr,
    /// Members that appeared while the machine booted. Normally one; two machines started at
    /// the same moment cannot be told apart, and both get the host filter lifted.
    pub members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatLinkError {
    #[error("no vmnet bridge (bridgeN) holds the guest's reported address {ip}")]
    NoBridge { ip: Ipv4Addr },
    #[error(
        "no member of {bridge} appeared while machine {machine} booted, so its link is unknown"
    )]
    NoMember { bridge: String, machine: String },
}

impl Hint for NatLinkError {
    fn hint(&self) -> Option<String> {
        match self {
            NatLinkError::NoBridge { .. } => Some(
                "`ifconfig` lists the bridges and their addresses; the machine's console \
                 (`devbox logs NAME`) shows the lease the guest got"
                    .into(),
            ),
            NatLinkError::NoMember { bridge, .. } => Some(format!(
                "find the machine's vmenetN in `ifconfig {bridge}` and lift its filter by \
                 hand: sudo ifconfig {bridge} -hostfilter vmenetN"
            )),
        }
    }
}

/// Finds a vz machine's link from `ifconfig` before boot and after the guest reported `ip`:
/// the bridge whose subnet holds `ip`, and the members it gained meanwhile (vmnet adds one per
/// VM when the VM starts; there is no API that names the VM's own).
pub fn nat_link(
    machine: &str,
    ip: Ipv4Addr,
    before: &BTreeMap<String, Bridge>,
    after: &BTreeMap<String, Bridge>,
) -> Result<NatLink, NatLinkError> {
    let (name, bridge) = after
        .iter()
        .filter(|(_, b)| b.nets.iter().any(|n| n.contains(&ip)))
        // The most specific subnet wins, should two overlap.
        .max_by_key(|(_, b)| b.nets.iter().map(|n| n.prefix_len()).max())
        .ok_or(NatLinkError::NoBridge { ip })?;
    let old = before.get(name).map(|b| &b.members);
    let members: Vec<String> = bridge
        .members
        .iter()
        .filter(|m| !old.is_some_and(|o| o.contains(*m)))
        .cloned()
        .collect();
    if members.is_empty() {
        return Err(NatLinkError::NoMember {
            bridge: name.clone(),
            machine: machine.to_owned(),
        });
    }
    let host_ip = bridge
        .nets
        .iter()
        .zip(&bridge.addrs)
        .filter(|(n, _)| n.contains(&ip))
        .max_by_key(|(n, _)| n.prefix_len())
        .map(|(_, a)| *a)
        .ok_or(NatLinkError::NoBridge { ip })?;
    Ok(NatLink {
        bridge: name.clone(),
        host_ip,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ifconfig` on macOS 14 with one VZ machine on the NAT (trimmed).
    const IFCONFIG: &str = "\
lo0: flags=8049<UP,LOOPBACK,RUNNING,MULTICAST> mtu 16384
\tinet 127.0.0.1 netmask 0xff000000
en0: flags=8863<UP,BROADCAST,SMART,RUNNING,SIMPLEX,MULTICAST> mtu 1500
\tether a4:83:e7:00:00:01
\tinet 192.168.1.20 netmask 0xffffff00 broadcast 192.168.1.255
bridge100: flags=8a63<UP,BROADCAST,SMART,RUNNING,ALLMULTI,SIMPLEX,MULTICAST> mtu 1500
\toptions=3<RXCSUM,TXCSUM>
\tether 16:7d:da:9e:2f:64
\tinet 192.168.64.1 netmask 0xffffff00 broadcast 192.168.64.255
\tinet6 fe80::147d:daff:fe9e:2f64%bridge100 prefixlen 64 scopeid 0x15
\tConfiguration:
\t\tid 0:0:0:0:0:0 priority 0 hellotime 0 fwddelay 0
\t\tipfilter disabled flags 0x0
\tmember: vmenet0 flags=3<LEARNING,DISCOVER>
\t        ifmaxaddr 0 port 20 priority 0 path cost 0
\tmedia: autoselect
\tstatus: active
vmenet0: flags=8963<UP,BROADCAST,SMART,RUNNING,PROMISC,SIMPLEX,MULTICAST> mtu 1500
\tether 9e:27:5c:00:00:01
";

    fn with_member(mut bridges: BTreeMap<String, Bridge>, m: &str) -> BTreeMap<String, Bridge> {
        bridges
            .get_mut("bridge100")
            .unwrap()
            .members
            .insert(m.into());
        bridges
    }

    #[test]
    fn ifconfig_gives_the_bridges_their_subnets_and_members() {
        let b = parse_ifconfig_bridges(IFCONFIG);
        assert_eq!(b.keys().collect::<Vec<_>>(), ["bridge100"]);
        let b = &b["bridge100"];
        assert_eq!(b.nets, ["192.168.64.0/24".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(b.addrs, [Ipv4Addr::new(192, 168, 64, 1)]);
        assert_eq!(b.members.iter().collect::<Vec<_>>(), ["vmenet0"]);
    }

    #[test]
    fn the_machines_link_is_the_member_that_came_with_it() {
        let before = parse_ifconfig_bridges(IFCONFIG);
        let after = with_member(before.clone(), "vmenet1");
        let ip = "192.168.64.3".parse().unwrap();
        assert_eq!(
            nat_link("dev", ip, &before, &after),
            Ok(NatLink {
                bridge: "bridge100".into(),
                host_ip: Ipv4Addr::new(192, 168, 64, 1),
                members: vec!["vmenet1".into()],
            })
        );
        // The first VM on the NAT: vmnet created the bridge with it.
        let none = BTreeMap::new();
        assert_eq!(
            nat_link("dev", ip, &none, &before).unwrap().members,
            ["vmenet0"]
        );
        // Two machines booting at once cannot be told apart: both members.
        let two = with_member(after.clone(), "vmenet2");
        assert_eq!(
            nat_link("dev", ip, &before, &two).unwrap().members,
            ["vmenet1", "vmenet2"]
        );
    }

    #[test]
    fn an_unknown_link_is_an_error_naming_the_fix() {
        let b = parse_ifconfig_bridges(IFCONFIG);
        let err = nat_link("dev", "192.168.64.3".parse().unwrap(), &b, &b).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no member of bridge100 appeared while machine dev booted, so its link is unknown"
        );
        assert!(
            err.hint()
                .unwrap()
                .contains("sudo ifconfig bridge100 -hostfilter vmenetN")
        );
        let err = nat_link("dev", "192.168.65.3".parse().unwrap(), &b, &b).unwrap_err();
        assert_eq!(
            err,
            NatLinkError::NoBridge {
                ip: "192.168.65.3".parse().unwrap()
            }
        );
    }
}
