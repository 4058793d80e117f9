//! macOS: the host's routing table through `netstat(1)` and the vmnet bridges through
//! `ifconfig(8)` (neither needs a privilege). There are no TAP devices on macOS (its `utun`
//! interfaces carry IP, not Ethernet), so [`Tap`] cannot be created: the vz driver attaches
//! the guest's NIC to Virtualization.framework's NAT instead (`hypervisor::vz`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::{OwnedFd, RawFd};
use std::process::Command;

use crate::net::vmnet::{Bridge, parse_ifconfig_bridges};
use crate::net::{HostRoute, NetError, netstat};

/// A TAP device, which macOS does not have: the type has no values, and [`Tap::create`]
/// always fails with [`NetError::NoTap`].
#[derive(Debug)]
pub enum Tap {}

impl Tap {
    pub fn create(name: &str, _vnet_hdr: bool) -> Result<Tap, NetError> {
        Err(NetError::NoTap { name: name.into() })
    }

    pub fn configure(&self, _host_ip: Ipv4Addr, _prefix: u8) -> Result<(), NetError> {
        match *self {}
    }

    pub fn configure_v6(
        &self,
        _addr: std::net::Ipv6Addr,
        _prefix: u8,
        _routed: crate::net::ula::Ipv6Net,
        _gateway: std::net::Ipv6Addr,
    ) -> Result<(), NetError> {
        match *self {}
    }

    pub fn name(&self) -> &str {
        match *self {}
    }

    pub fn as_raw_fd(&self) -> RawFd {
        match *self {}
    }

    pub fn into_inheritable_fd(self) -> Result<OwnedFd, NetError> {
        match self {}
    }
}

/// Whether `devbox start` may create a machine's network. On macOS there is nothing to
/// create: the vz driver's NIC is on Virtualization.framework's NAT, which needs no
/// privilege, so nothing is missing.
pub fn have_net_admin() -> bool {
    true
}

/// The host's IPv6 routes. A macOS host has no TAP link, and so no IPv6 prefix of devbox's
/// to check (`create --ipv6` needs the qemu or kvm driver, which are Linux's): nothing here
/// ever overlaps.
pub fn host_routes_v6() -> Result<Vec<(crate::net::ula::Ipv6Net, String)>, NetError> {
    Ok(Vec::new())
}

/// The IPv4 routes of the host's routing table.
pub fn host_routes() -> Result<Vec<HostRoute>, NetError> {
    let what = || "read the routing table with `netstat -rn -f inet`".to_owned();
    let out = Command::new("netstat")
        .args(["-rn", "-f", "inet"])
        .output()
        .map_err(|source| NetError::Io {
            what: what(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetError::Io {
            what: what(),
            source: std::io::Error::other(format!(
                "netstat exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        });
    }
    Ok(netstat::parse_netstat_routes(&String::from_utf8_lossy(
        &out.stdout,
    )))
}

/// The vmnet bridges and their members now, from `ifconfig`.
pub fn vmnet_bridges() -> Result<BTreeMap<String, Bridge>, NetError> {
    let what = || "list the vmnet bridges with `ifconfig`".to_owned();
    let out = Command::new("ifconfig")
        .output()
        .map_err(|source| NetError::Io {
            what: what(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetError::Io {
            what: what(),
            source: std::io::Error::other(format!(
                "ifconfig exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        });
    }
    Ok(parse_ifconfig_bridges(&String::from_utf8_lossy(
        &out.stdout,
    )))
}
