//! A machine's IPv6 (`create --ipv6`): a /56 of a unique local prefix (RFC 4193), routed from
//! the host over the machine's TAP like its IPv4 Docker subnets.
//!
//! The host's /48 is `fd` + a 40-bit global ID, and machine `index` (its host-only index)
//! takes the /56 whose 4th group is `index << 8`: `fdGG:GGGG:GGGG:II00::/56`. Inside it,
//! numbered by the last byte of the 4th group:
//! - `…:II00::/64` is the link: the host `::1` on `dbxN`, the guest `::2` on `eth0`;
//! - `…:II01::/64` is Docker's default bridge (`fixed-cidr-v6`);
//! - `…:II80::/57` is the pool Docker carves user networks from, one /64 each (128 of them).
//!
//! The global ID is derived from the host's `/etc/machine-id` (a random, root-owned value,
//! fixed for the host's life), hashed so the ID itself is not disclosed: RFC 4193's
//! "pseudo-random" with no state of devbox's own to store, the same for every user and every
//! command, and never something a user or a guest chooses. So the privileged door derives the
//! address and route from the leased index alone, as it does for IPv4.
//!
//! Pure but for [`host_global_id`], which reads the file.

use std::fmt;
use std::net::Ipv6Addr;

pub use ipnet::Ipv6Net;
use sha2::{Digest, Sha256};

/// Where the host's ID is read, first that exists wins (systemd's, then D-Bus's on hosts
/// without systemd).
const MACHINE_ID_FILES: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];

/// Length of a machine's prefix.
pub const MACHINE_PREFIX_LEN: u8 = 56;
/// Prefix length of each network Docker takes from the pool.
pub const POOL_NETWORK_PREFIX_V6: u8 = 64;

/// The 40-bit global ID of the host's unique local /48.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalId([u8; 5]);

impl GlobalId {
    /// The ID for a host whose machine ID is `machine_id` (surrounding whitespace ignored).
    pub fn from_machine_id(machine_id: &str) -> GlobalId {
        let mut h = Sha256::new();
        h.update(b"devbox unique local prefix\n");
        h.update(machine_id.trim().as_bytes());
        let d = h.finalize();
        GlobalId([d[0], d[1], d[2], d[3], d[4]])
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot derive the machine's IPv6 prefix: the host has no machine ID \
     ({} or {})",
    MACHINE_ID_FILES[0],
    MACHINE_ID_FILES[1]
)]
pub struct NoMachineId;

impl crate::hint::Hint for NoMachineId {
    fn hint(&self) -> Option<String> {
        Some(
            "create one with `sudo systemd-machine-id-setup` (or `dbus-uuidgen \
             --ensure=/etc/machine-id`), or recreate the machine without --ipv6"
                .into(),
        )
    }
}

/// The host's global ID, from its machine ID.
pub fn host_global_id() -> Result<GlobalId, NoMachineId> {
    MACHINE_ID_FILES
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .map(|s| GlobalId::from_machine_id(&s))
        .ok_or(NoMachineId)
}

/// The IPv6 networks of the machine with host-only index `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineIpv6 {
    /// The whole /56, routed from the host to the guest.
    pub prefix: Ipv6Net,
    /// The link's /64 and the two ends of it.
    pub link: Ipv6Net,
    pub host_ip: Ipv6Addr,
    pub guest_ip: Ipv6Addr,
    /// Docker's default bridge (`fixed-cidr-v6`).
    pub bridge: Ipv6Net,
    /// Docker's pool for user networks (`default-address-pools`, /64 each).
    pub pool: Ipv6Net,
}

impl MachineIpv6 {
    pub fn new(id: GlobalId, index: u8) -> MachineIpv6 {
        let g = id.0;
        let net = |subnet: u8, host: u16| {
            Ipv6Addr::new(
                0xfd00 | u16::from(g[0]),
                u16::from_be_bytes([g[1], g[2]]),
                u16::from_be_bytes([g[3], g[4]]),
                u16::from_be_bytes([index, subnet]),
                0,
                0,
                0,
                host,
            )
        };
        let cidr = |a, len| Ipv6Net::new(a, len).expect("prefix lengths are at most 128");
        MachineIpv6 {
            prefix: cidr(net(0, 0), MACHINE_PREFIX_LEN),
            link: cidr(net(0, 0), 64),
            host_ip: net(0, 1),
            guest_ip: net(0, 2),
            bridge: cidr(net(1, 0), 64),
            pool: cidr(net(0x80, 0), 57),
        }
    }

    /// The pool's /64s, each one Docker network's.
    pub fn pool_networks(&self) -> impl Iterator<Item = Ipv6Net> + use<> {
        self.pool
            .subnets(POOL_NETWORK_PREFIX_V6)
            .expect("the pool is a /57, shorter than /64")
    }

    /// The machine's networks on this host.
    pub fn for_index(index: u8) -> Result<MachineIpv6, NoMachineId> {
        Ok(MachineIpv6::new(host_global_id()?, index))
    }
}

impl fmt::Display for MachineIpv6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.prefix)
    }
}

/// Whether two IPv6 CIDRs share at least one address.
pub fn overlaps_v6(a: &Ipv6Net, b: &Ipv6Net) -> bool {
    let (a, b) = (a.trunc(), b.trunc());
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_takes_the_slash_56_of_its_index() {
        let id = GlobalId([0x12, 0x34, 0x56, 0x78, 0x9a]);
        let m = MachineIpv6::new(id, 0);
        assert_eq!(m.prefix.to_string(), "fd12:3456:789a::/56");
        assert_eq!(m.link.to_string(), "fd12:3456:789a::/64");
        assert_eq!(m.host_ip.to_string(), "fd12:3456:789a::1");
        assert_eq!(m.guest_ip.to_string(), "fd12:3456:789a::2");
        assert_eq!(m.bridge.to_string(), "fd12:3456:789a:1::/64");
        assert_eq!(m.pool.to_string(), "fd12:3456:789a:80::/57");
        let nets: Vec<String> = m.pool_networks().map(|n| n.to_string()).collect();
        assert_eq!(nets.len(), 128);
        assert_eq!(nets[0], "fd12:3456:789a:80::/64");
        assert_eq!(nets[127], "fd12:3456:789a:ff::/64");
        let last = MachineIpv6::new(id, 63);
        assert_eq!(last.prefix.to_string(), "fd12:3456:789a:3f00::/56");
        assert_eq!(last.bridge.to_string(), "fd12:3456:789a:3f01::/64");
        for n in [m.link, m.bridge, m.pool] {
            assert!(m.prefix.contains(&n), "{n} inside {}", m.prefix);
            assert!(!last.prefix.contains(&n));
        }
        assert!(!overlaps_v6(&m.link, &m.bridge));
        assert!(!overlaps_v6(&m.bridge, &m.pool));
        assert!(!overlaps_v6(&m.prefix, &last.prefix));
        assert!(overlaps_v6(&m.prefix, &"fd12::/16".parse().unwrap()));
    }

    #[test]
    fn the_global_id_is_a_hash_of_the_machine_id() {
        let a = GlobalId::from_machine_id("0123456789abcdef0123456789abcdef\n");
        assert_eq!(
            a,
            GlobalId::from_machine_id("0123456789abcdef0123456789abcdef")
        );
        assert_ne!(
            a,
            GlobalId::from_machine_id("fedcba9876543210fedcba9876543210")
        );
        // Not the machine ID's own bytes.
        assert_ne!(a.0, [0x01, 0x23, 0x45, 0x67, 0x89]);
        let p = MachineIpv6::new(a, 0).prefix;
        assert_eq!(
            p.addr().segments()[0] >> 8,
            0xfd,
            "{p} is a unique local address"
        );
    }
}
