//! Which hypervisor driver runs a machine, and what that means for everything around it: the
//! [`Capabilities`] of each [`Driver`]. This is the one place that says how drivers differ
//! (how the guest is addressed, whether a TAP is needed, whether shares work, how the guest is
//! reached), so the supervisor, the config drive and the commands ask the capabilities and
//! never match on the driver. Pure: the table holds on every host, for every driver, also for
//! machines whose driver cannot run on this host (`devbox ls` shows them all).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which hypervisor runs the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Qemu,
    Kvm,
    Vz,
    /// No virtual machine: a Debian or Ubuntu host devbox adopted over SSH
    /// (`create --driver ssh`), whose own Docker engine devbox drives.
    Ssh,
    /// A driver without a guest, built only into devbox's own test binaries (cargo feature
    /// `fake-hypervisor`); any other build refuses it (`hypervisor::for_driver`).
    Fake,
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Qemu => "qemu",
            Driver::Kvm => "kvm",
            Driver::Vz => "vz",
            Driver::Ssh => "ssh",
            Driver::Fake => "fake",
        })
    }
}

/// Where a machine's guest address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// The spec's address: the host chose it when the machine was created (its host-only /24)
    /// and tells the guest on the config drive.
    Static,
    /// The driver's NAT picks it by DHCP at each boot; the guest reports it over vsock
    /// ([`crate::hypervisor::guest_report`]) and the supervisor records it in `state.json`.
    Dhcp,
}

/// The host side of a machine's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// A TAP device `dbxN` the supervisor creates (`CAP_NET_ADMIN`) with the host-only /24's
    /// `.1`; the DNS server listens on `.1`:53 and the Docker subnets are routed over it before
    /// boot.
    Tap,
    /// The driver's own NAT (vmnet, host side `bridgeN`): no TAP; the DNS server listens on
    /// loopback, one port per machine; the routes wait for the guest's reported address.
    DriverNat,
    /// No link at all (the fake driver): no TAP and no routes; the DNS server listens on a
    /// loopback port the system picks.
    None,
}

/// How the supervisor learns that the guest is ready, and reaches it afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestAccess {
    /// Over SSH at the guest's address: readiness (the guest's `/run/devbox/ready`), poweroff,
    /// the docker socket and the disk figures.
    Ssh,
    /// Not at all: the running machine reports readiness itself
    /// ([`crate::hypervisor::RunningVm::take_ready_report`]) and a stop is its power button.
    DriverReport,
    /// A host devbox did not create ([`Driver::Ssh`]): reached over SSH at its own address with
    /// the user's key and the host key pinned at create, ready when its engine answers, never
    /// powered off (a stop only disconnects).
    Remote,
}

/// What a driver needs from the host and how its guest is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub addressing: Addressing,
    pub link: Link,
    /// Whether devbox can serve shares to the guest (its NFS server: on the share link of a
    /// TAP machine, or on vmnet's NAT bridge once a vz guest reported its address).
    pub shares: bool,
    pub guest: GuestAccess,
}

impl Driver {
    pub fn capabilities(self) -> Capabilities {
        match self {
            Driver::Qemu | Driver::Kvm => Capabilities {
                addressing: Addressing::Static,
                link: Link::Tap,
                shares: true,
                guest: GuestAccess::Ssh,
            },
            Driver::Vz => Capabilities {
                addressing: Addressing::Dhcp,
                link: Link::DriverNat,
                shares: true,
                guest: GuestAccess::Ssh,
            },
            Driver::Ssh => Capabilities {
                addressing: Addressing::Static,
                link: Link::None,
                shares: false,
                guest: GuestAccess::Remote,
            },
            Driver::Fake => Capabilities {
                addressing: Addressing::Static,
                link: Link::None,
                shares: false,
                guest: GuestAccess::DriverReport,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_that_own_a_tap_use_static_addresses() {
        for d in [Driver::Qemu, Driver::Kvm] {
            let c = d.capabilities();
            assert_eq!(
                (c.addressing, c.link),
                (Addressing::Static, Link::Tap),
                "{d}"
            );
            assert!(c.shares);
        }
        let vz = Driver::Vz.capabilities();
        assert_eq!(
            (vz.addressing, vz.link),
            (Addressing::Dhcp, Link::DriverNat)
        );
        assert!(
            vz.shares,
            "served on the NAT bridge after the address report"
        );
    }

    #[test]
    fn the_fake_driver_needs_nothing_from_the_host() {
        let c = Driver::Fake.capabilities();
        assert_eq!(c.link, Link::None);
        assert_eq!(c.guest, GuestAccess::DriverReport);
        assert!(!c.shares);
    }
}
