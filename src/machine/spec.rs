//! `MachineSpec`: the desired, validated description of a machine, stored as
//! `machines/<name>/machine.yaml`. Everything here is pure: parsing and validation only.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Smallest memory a machine may have: the initramfs OS alone pins ~250 MiB.
pub const MIN_MEMORY_MIB: u64 = 256;
/// Smallest data disk: room for an ext4 journal and a few images.
pub const MIN_DISK_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error(
        "invalid machine name {name:?}: {why} (a name is a DNS label: a-z, 0-9 and '-', 1 to 63 characters, not starting or ending with '-')"
    )]
    Name { name: String, why: &'static str },
    #[error("--cpus {cpus} is out of range: this host allows 1 to {max}")]
    Cpus { cpus: u32, max: u32 },
    #[error(
        "--memory {mib} MiB is out of range: at least {MIN_MEMORY_MIB} MiB, at most {max} MiB (this host's RAM)"
    )]
    Memory { mib: u64, max: u64 },
    #[error(
        "invalid size {text:?}: expected a number with an optional unit K, M, G or T (powers of 1024), e.g. 20G"
    )]
    Size { text: String },
    #[error("--disk-size {text} is too small: at least 1G")]
    DiskTooSmall { text: String },
    #[error("invalid --docker-subnet {text:?}: {why}")]
    DockerSubnet { text: String, why: String },
}

/// Which hypervisor runs the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Qemu,
    Kvm,
    Vz,
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Driver::Qemu => "qemu",
            Driver::Kvm => "kvm",
            Driver::Vz => "vz",
        })
    }
}

/// The machine's host-only network: its own /24, host side `.1`, guest `.2`, on TAP `dbx<index>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Position in the host-only pool (192.168.64.0/24 + index).
    pub index: u8,
    pub subnet: Ipv4Net,
    pub host_ip: Ipv4Addr,
    pub guest_ip: Ipv4Addr,
    /// Guest MAC address (stable, derived from the name).
    pub mac: String,
}

/// Docker settings inside the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerSpec {
    /// Docker's `bip`: the bridge's gateway address with its prefix, e.g. `172.18.0.1/16`.
    pub bip: Ipv4Net,
}

/// Desired state of one machine, as written at `create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSpec {
    pub name: String,
    pub driver: Driver,
    pub cpus: u32,
    pub memory_mib: u64,
    /// Apparent size of the sparse data disk, in bytes.
    pub disk_bytes: u64,
    /// Version of the guest image the machine boots.
    pub image: String,
    pub network: NetworkSpec,
    pub docker: DockerSpec,
    /// RFC 3339 creation time.
    pub created: String,
}

impl MachineSpec {
    /// Checks the values a user can edit in `machine.yaml` by hand.
    pub fn validate(&self, limits: &HostLimits) -> Result<(), SpecError> {
        validate_name(&self.name)?;
        validate_cpus(self.cpus, limits)?;
        validate_memory(self.memory_mib, limits)?;
        Ok(())
    }
}

/// What this host can give a machine.
#[derive(Debug, Clone, Copy)]
pub struct HostLimits {
    pub cpus: u32,
    pub memory_mib: u64,
}

impl HostLimits {
    pub fn of_this_host() -> HostLimits {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        HostLimits {
            cpus,
            memory_mib: host_memory_mib().unwrap_or(u64::MAX / 2),
        }
    }
}

fn host_memory_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// A machine name is a DNS label: it becomes a host name and a DNS name under the TLD.
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let err = |why| {
        Err(SpecError::Name {
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() {
        return err("it is empty");
    }
    if name.len() > 63 {
        return err("it is longer than 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return err("it has a character other than a-z, 0-9 and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return err("it starts or ends with '-'");
    }
    Ok(())
}

pub fn validate_cpus(cpus: u32, limits: &HostLimits) -> Result<(), SpecError> {
    if cpus == 0 || cpus > limits.cpus {
        return Err(SpecError::Cpus {
            cpus,
            max: limits.cpus,
        });
    }
    Ok(())
}

pub fn validate_memory(mib: u64, limits: &HostLimits) -> Result<(), SpecError> {
    if mib < MIN_MEMORY_MIB || mib > limits.memory_mib {
        return Err(SpecError::Memory {
            mib,
            max: limits.memory_mib,
        });
    }
    Ok(())
}

/// Parses `20G`, `512M`, `1.5G`, `1073741824` into bytes (binary units, as qemu-img does).
///
/// Hand-written because the size crates disagree on whether `G` means 10^9 or 2^30; disk
/// sizes in this space (qemu-img, docker-machine, Lima) use powers of 1024.
pub fn parse_size(text: &str) -> Result<u64, SpecError> {
    let err = || SpecError::Size {
        text: text.to_owned(),
    };
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let mult: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(err()),
            };
            (&t[..t.len() - 1], mult)
        }
        _ => (t, 1),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(err());
    }
    let value: f64 = num.parse().map_err(|_| err())?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

/// Formats bytes the way `parse_size` reads them back, e.g. `20G`, `1.5G`, `512M`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (unit, suffix) in UNITS {
        if bytes >= unit {
            let v = bytes as f64 / unit as f64;
            return if bytes.is_multiple_of(unit) {
                format!("{}{suffix}", bytes / unit)
            } else {
                format!("{v:.1}{suffix}")
            };
        }
    }
    format!("{bytes}B")
}

pub fn parse_disk_size(text: &str) -> Result<u64, SpecError> {
    let bytes = parse_size(text)?;
    if bytes < MIN_DISK_BYTES {
        return Err(SpecError::DiskTooSmall {
            text: text.to_owned(),
        });
    }
    Ok(bytes)
}

/// Parses Docker's `bip`: a gateway address with its prefix, such as `172.18.0.1/16`.
/// A bare network (`172.18.0.0/16`) is accepted and means its first address.
pub fn parse_docker_bip(text: &str) -> Result<Ipv4Net, SpecError> {
    let err = |why: String| SpecError::DockerSubnet {
        text: text.to_owned(),
        why,
    };
    let net = Ipv4Net::from_str(text.trim())
        .map_err(|_| err("expected an IPv4 address with a prefix, e.g. 172.18.0.1/16".into()))?;
    if net.prefix_len() < 8 || net.prefix_len() > 28 {
        return Err(err(format!(
            "the prefix /{} is out of range: use /8 to /28",
            net.prefix_len()
        )));
    }
    let addr = if net.addr() == net.network() {
        // A network was given: Docker wants the gateway, which is the first host address.
        Ipv4Addr::from(u32::from(net.network()) + 1)
    } else {
        net.addr()
    };
    if addr == net.broadcast() {
        return Err(err("the address is the subnet's broadcast address".into()));
    }
    if addr.is_loopback() || addr.is_multicast() || addr.is_unspecified() {
        return Err(err("the address is not a unicast address".into()));
    }
    Ipv4Net::new(addr, net.prefix_len()).map_err(|e| err(e.to_string()))
}

/// A stable locally administered MAC from the machine name (QEMU's 52:54:00 prefix).
pub fn mac_for(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(name.as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for ok in ["a", "dev", "my-box-2", &"a".repeat(63)] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Dev",
            "a_b",
            "a.b",
            "é",
            &"a".repeat(64),
            "../x",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("20G").unwrap(), 20 << 30);
        assert_eq!(parse_size("20GiB").unwrap(), 20 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["", "G", "20X", "-1G", "abc", "1e9", "0"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            parse_disk_size("100M"),
            Err(SpecError::DiskTooSmall { .. })
        ));
        assert_eq!(format_size(20 << 30), "20G");
        assert_eq!(format_size(3 << 29), "1.5G");
    }

    #[test]
    fn docker_bip_accepts_gateway_or_network() {
        assert_eq!(
            parse_docker_bip("172.18.0.1/16").unwrap().to_string(),
            "172.18.0.1/16"
        );
        assert_eq!(
            parse_docker_bip("172.18.0.0/16").unwrap().to_string(),
            "172.18.0.1/16"
        );
        for bad in [
            "172.18.0.1",
            "172.18.0.1/4",
            "172.18.0.1/30",
            "x/16",
            "10.0.0.255/24",
        ] {
            assert!(parse_docker_bip(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let l = HostLimits {
            cpus: 2,
            memory_mib: 4096,
        };
        assert!(validate_cpus(0, &l).is_err());
        assert!(validate_cpus(3, &l).is_err());
        assert!(validate_cpus(2, &l).is_ok());
        assert!(validate_memory(255, &l).is_err());
        assert!(validate_memory(4097, &l).is_err());
        assert!(validate_memory(2048, &l).is_ok());
    }
}
