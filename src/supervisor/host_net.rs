//! What a machine's network needs from its supervisor, from its driver's capabilities
//! ([`Link`]). Pure, so every kind of link is tested on any host; the supervisor applies it.
//!
//! - [`Link::Tap`] (qemu, kvm): the supervisor creates the machine's TAP device with the
//!   host-only /24's `.1`, routes the Docker subnets over it before boot, and serves DNS on
//!   `.1`:53, which the guest and its containers use; systemd-resolved's settings for the
//!   machine's domains go on the TAP.
//! - [`Link::DriverNat`] (vz): there is no TAP; vmnet (Virtualization.framework's NAT) owns
//!   the link, `bridgeN` on the host (`net::vmnet`). The guest uses the lease's DNS server
//!   (vmnet's proxy of the host's resolver, which `/etc/resolver/*` points at devbox), and
//!   devbox's DNS server listens on loopback, one port per machine. Routes wait for the
//!   guest's report.
//! - [`Link::None`]: no TAP, no routes. A host adopted over SSH gets its DNS server on
//!   loopback, one port per machine as under vz (the names of its containers, answered with
//!   their addresses on that host); the fake driver's is on a loopback port the system picks.
//!
//! Every address comes from the machine's host-only index, never from the addresses stored
//! in `machine.yaml` (which the spec's validation also holds to the index).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::machine::{Capabilities, GuestAccess, Link, MachineSpec};
use crate::net::{HostOnlyNet, NetError};

/// Loopback port of the first machine's DNS server under vz or adopted over SSH (machine
/// index 0); machine `i`
/// gets `NAT_DNS_PORT_BASE + i`. Fixed per machine, so `/etc/resolver/*` stays valid across
/// restarts; not 53, which only one machine could hold.
pub const NAT_DNS_PORT_BASE: u16 = 10053;

/// The TAP device a machine's NIC uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSetup {
    pub name: String,
    pub host_ip: Ipv4Addr,
    pub prefix: u8,
}

/// The host side of a machine's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNet {
    /// The machine's host-only network, from its index.
    pub hostonly: HostOnlyNet,
    /// Created before boot ([`Link::Tap`]).
    pub tap: Option<TapSetup>,
    /// Where the machine's DNS server listens.
    pub dns_bind: SocketAddr,
    /// Nameservers written on the config drive; empty means the guest's DHCP lease's.
    pub guest_dns: Vec<IpAddr>,
    /// The link systemd-resolved's settings go on, when there is one (the TAP).
    pub resolved_link: Option<String>,
}

pub fn host_net(spec: &MachineSpec, caps: Capabilities) -> Result<HostNet, NetError> {
    let hostonly = HostOnlyNet::from_index(spec.network.index)?;
    let loopback = |port| SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
    Ok(match caps.link {
        Link::Tap => HostNet {
            hostonly,
            tap: Some(TapSetup {
                name: hostonly.tap_name(),
                host_ip: hostonly.host_ip,
                prefix: hostonly.subnet.prefix_len(),
            }),
            dns_bind: SocketAddr::new(hostonly.host_ip.into(), 53),
            guest_dns: vec![IpAddr::V4(hostonly.host_ip)],
            resolved_link: Some(hostonly.tap_name()),
        },
        Link::DriverNat => HostNet {
            hostonly,
            tap: None,
            dns_bind: loopback(NAT_DNS_PORT_BASE + u16::from(hostonly.index)),
            guest_dns: Vec::new(),
            resolved_link: None,
        },
        Link::None => HostNet {
            hostonly,
            tap: None,
            dns_bind: loopback(match caps.guest {
                GuestAccess::Remote => NAT_DNS_PORT_BASE + u16::from(hostonly.index),
                _ => 0,
            }),
            guest_dns: Vec::new(),
            resolved_link: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Driver;
    use crate::machine::guest_net::tests::spec;

    fn net(driver: Driver) -> HostNet {
        host_net(&spec(driver), driver.capabilities()).unwrap()
    }

    #[test]
    fn static_machines_get_a_tap_and_dns_on_its_host_side() {
        let n = net(Driver::Qemu);
        assert_eq!(
            n.tap,
            Some(TapSetup {
                name: "dbx0".into(),
                host_ip: "192.168.64.1".parse().unwrap(),
                prefix: 24,
            })
        );
        assert_eq!(n.dns_bind.to_string(), "192.168.64.1:53");
        assert_eq!(n.guest_dns, ["192.168.64.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(n.resolved_link.as_deref(), Some("dbx0"));
        assert_eq!(net(Driver::Kvm), n);
    }

    #[test]
    fn vz_machines_get_no_tap_and_dns_on_loopback_per_machine() {
        let mut vz = spec(Driver::Vz);
        let n = net(Driver::Vz);
        assert_eq!(n.tap, None);
        assert_eq!(n.dns_bind.to_string(), "127.0.0.1:10053");
        assert!(n.guest_dns.is_empty(), "the guest uses its lease's DNS");
        vz.network.index = 3;
        let n = host_net(&vz, Driver::Vz.capabilities()).unwrap();
        assert_eq!(n.dns_bind.to_string(), "127.0.0.1:10056");
    }

    #[test]
    fn the_addresses_come_from_the_index_not_the_stored_ones() {
        let mut s = spec(Driver::Qemu);
        s.network.subnet = "192.0.0.0/2".parse().unwrap();
        s.network.host_ip = "200.66.0.1".parse().unwrap();
        let n = host_net(&s, Driver::Qemu.capabilities()).unwrap();
        let tap = n.tap.unwrap();
        assert_eq!(
            (tap.host_ip.to_string(), tap.prefix),
            ("192.168.64.1".into(), 24)
        );
        s.network.index = 64;
        assert!(host_net(&s, Driver::Qemu.capabilities()).is_err());
    }

    #[test]
    fn the_fake_driver_needs_no_tap_and_no_privileged_port() {
        let n = net(Driver::Fake);
        assert_eq!(n.tap, None);
        assert_eq!(n.dns_bind.to_string(), "127.0.0.1:0");
        assert_eq!(n.resolved_link, None);
    }

    #[test]
    fn an_adopted_host_gets_dns_on_its_own_loopback_port() {
        let n = net(Driver::Ssh);
        assert_eq!(n.tap, None);
        assert_eq!(n.dns_bind.to_string(), "127.0.0.1:10053");
        assert_eq!(n.resolved_link, None);
    }
}
