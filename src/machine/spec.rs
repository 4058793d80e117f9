//! `MachineSpec`: the desired, validated description of a machine, stored as
//! `machines/<name>/machine.yaml`. Everything here is pure: parsing and validation only.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::net::routes::DockerSubnets;

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
    #[error("invalid --share {text:?}: {why}")]
    Share { text: String, why: String },
    #[error("invalid --tld {text:?}: {why}")]
    Tld { text: String, why: &'static str },
    #[error("cannot allow DNS domain {text:?} for this machine")]
    DnsDomain {
        text: String,
        #[source]
        source: crate::dns::policy::AllowanceError,
    },
}

impl SpecError {
    pub fn hint(&self) -> Option<String> {
        match self {
            SpecError::Share { .. } => {
                Some("example: --share /home/me/src:/src (add :ro for read-only)".into())
            }
            SpecError::DockerSubnet { .. } => Some("example: --docker-subnet 172.24.0.1/16".into()),
            SpecError::DnsDomain { source, .. } => source.hint(),
            _ => None,
        }
    }
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

/// A host directory exported into the machine over NFS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareSpec {
    /// Absolute, canonical host directory.
    pub host_path: PathBuf,
    /// Absolute path where the guest mounts it.
    pub guest_path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// Guest paths a share may not cover: the guest's own system and Docker's data.
const RESERVED_GUEST_PATHS: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib64",
    "/mnt/data",
    "/proc",
    "/root/.ssh",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/var/lib",
    "/var/lib/docker",
    "/var/log",
    "/var/run",
];

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
    /// Docker's bridge and address pool in the guest, routed from the host.
    pub docker: DockerSubnets,
    /// Host directories exported into the guest.
    #[serde(default)]
    pub shares: Vec<ShareSpec>,
    /// Top-level domain of the machine's names (`<machine>.<tld>`).
    #[serde(default = "default_tld")]
    pub tld: String,
    /// Domains outside `<name>.<tld>` in which the machine's containers may claim names, and
    /// which are then routed to its DNS server (`devbox dns allow`, `create --dns-domain`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_domains: Vec<String>,
    /// RFC 3339 creation time.
    pub created: String,
}

fn default_tld() -> String {
    "dev".to_owned()
}

impl MachineSpec {
    /// Checks the values a user can edit in `machine.yaml` by hand.
    pub fn validate(&self, limits: &HostLimits) -> Result<(), SpecError> {
        validate_name(&self.name)?;
        validate_cpus(self.cpus, limits)?;
        validate_memory(self.memory_mib, limits)?;
        for d in &self.dns_domains {
            check_dns_domain(d, &self.name, &self.tld)?;
        }
        Ok(())
    }
}

/// Checks a domain to allow for machine `name` under `tld` ([`crate::dns::policy`]'s rules),
/// returning it normalized.
pub fn check_dns_domain(text: &str, name: &str, tld: &str) -> Result<String, SpecError> {
    crate::dns::policy::check_allowance(text, name, tld).map_err(|source| SpecError::DnsDomain {
        text: text.to_owned(),
        source,
    })
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
    // Sizes and ranges are checked against the host's routes by `net::routes`.
    if net.prefix_len() > 30 {
        return Err(err(format!(
            "the prefix /{} leaves no room for containers",
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

/// Parses `HOST_PATH[:GUEST_PATH][:ro]`. The host path must be an existing directory; the
/// guest path defaults to the same path and must not cover the guest's system directories.
pub fn parse_share(text: &str) -> Result<ShareSpec, SpecError> {
    let err = |why: String| SpecError::Share {
        text: text.to_owned(),
        why,
    };
    let mut parts: Vec<&str> = text.split(':').collect();
    let mut read_only = false;
    if parts.len() > 1 && matches!(*parts.last().expect("non-empty"), "ro" | "rw") {
        read_only = parts.pop() == Some("ro");
    }
    let (host, guest) = match parts.as_slice() {
        [h] => (*h, None),
        [h, g] => (*h, Some(*g)),
        _ => return Err(err("expected HOST_PATH[:GUEST_PATH][:ro]".into())),
    };
    if !host.starts_with('/') {
        return Err(err("the host path must be absolute".into()));
    }
    let host_path = std::fs::canonicalize(host)
        .map_err(|e| err(format!("cannot use host path {host}: {e}")))?;
    if !host_path.is_dir() {
        return Err(err(format!("{} is not a directory", host_path.display())));
    }
    let guest_path = match guest {
        Some(g) => g.to_owned(),
        None => host_path.to_string_lossy().into_owned(),
    };
    validate_guest_path(&guest_path).map_err(err)?;
    Ok(ShareSpec {
        host_path,
        guest_path,
        read_only,
    })
}

fn validate_guest_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err("the guest path must be absolute".into());
    }
    if p.contains("/../")
        || p.ends_with("/..")
        || p.contains("//")
        || p.contains('\t')
        || p.contains('\n')
    {
        return Err("the guest path must be a plain absolute path".into());
    }
    let norm = p.trim_end_matches('/');
    let norm = if norm.is_empty() { "/" } else { norm };
    if RESERVED_GUEST_PATHS.contains(&norm) {
        return Err(format!(
            "{norm} is a system directory of the guest; mount the share elsewhere"
        ));
    }
    Ok(())
}

/// Shares must not repeat a guest path.
pub fn check_shares(shares: &[ShareSpec]) -> Result<(), SpecError> {
    for (i, a) in shares.iter().enumerate() {
        if shares[..i].iter().any(|b| b.guest_path == a.guest_path) {
            return Err(SpecError::Share {
                text: a.guest_path.clone(),
                why: "two shares use the same guest path".into(),
            });
        }
    }
    Ok(())
}

/// The default share: the user's home directory at the same path, as docker-machine-nfs did
/// with /Users. Under sudo that is the invoking user's home, not root's. None on hosts where
/// devbox cannot serve shares yet (its NFS server is Linux-only), so that a default machine
/// starts there.
pub fn default_shares() -> Vec<ShareSpec> {
    if !cfg!(target_os = "linux") {
        return Vec::new();
    }
    let home = sudo_user_home().or_else(|| std::env::var_os("HOME").map(PathBuf::from));
    match home.and_then(|h| std::fs::canonicalize(h).ok()) {
        Some(h) if h.is_dir() && validate_guest_path(&h.to_string_lossy()).is_ok() => {
            vec![ShareSpec {
                guest_path: h.to_string_lossy().into_owned(),
                host_path: h,
                read_only: false,
            }]
        }
        _ => Vec::new(),
    }
}

fn sudo_user_home() -> Option<PathBuf> {
    let user = std::env::var("SUDO_USER").ok()?;
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[0] == user)
        .map(|f| PathBuf::from(f[5]))
}

/// Owner of a share's host directory: files the guest creates belong to this user.
pub fn share_owner(path: &Path) -> std::io::Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs_err::metadata(path)?;
    Ok((m.uid(), m.gid()))
}

/// A TLD is one or more DNS labels, e.g. `dev`, `test`, `internal`.
pub fn validate_tld(text: &str) -> Result<(), SpecError> {
    let err = |why| {
        Err(SpecError::Tld {
            text: text.to_owned(),
            why,
        })
    };
    if text.is_empty() || text.len() > 63 {
        return err("expected 1 to 63 characters");
    }
    for label in text.split('.') {
        if validate_name(label).is_err() {
            return err("each label must be a-z, 0-9 and '-', not starting or ending with '-'");
        }
    }
    Ok(())
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
        for bad in ["172.18.0.1", "172.18.0.1/31", "x/16", "10.0.0.255/24"] {
            assert!(parse_docker_bip(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn shares_parse_and_refuse_system_paths() {
        let d = tempfile::tempdir().unwrap();
        let host = d.path().canonicalize().unwrap();
        let h = host.to_str().unwrap();
        let s = parse_share(h).unwrap();
        assert_eq!(s.guest_path, h);
        assert!(!s.read_only);
        let s = parse_share(&format!("{h}:/src:ro")).unwrap();
        assert_eq!((s.guest_path.as_str(), s.read_only), ("/src", true));
        let s = parse_share(&format!("{h}:ro")).unwrap();
        assert!(s.read_only && s.guest_path == h);
        for bad in [
            "relative/dir".to_owned(),
            format!("{h}/missing"),
            format!("{h}:/var/lib/docker"),
            format!("{h}:/"),
            format!("{h}:relative"),
            format!("{h}:/a:/b:ro"),
        ] {
            assert!(parse_share(&bad).is_err(), "{bad} accepted");
        }
        let a = parse_share(&format!("{h}:/x")).unwrap();
        assert!(check_shares(&[a.clone(), a]).is_err());
    }

    #[test]
    fn tlds_are_dns_labels() {
        for ok in ["dev", "test", "internal", "my.lan"] {
            assert!(validate_tld(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".dev", "dev.", "DEV", "d_v"] {
            assert!(validate_tld(bad).is_err(), "{bad:?}");
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
