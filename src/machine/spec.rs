//! `MachineSpec`: the desired, validated description of a machine, stored as
//! `machines/<name>/machine.yaml`. Everything here is pure: parsing and validation only.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub use super::driver::Driver;
use super::engine::{EngineError, EngineSpec};
pub use super::share::{
    DefaultShares, DirId, ShareError, ShareSpec, StateDirs, check_shares, default_shares,
    parse_share, share_at, share_link_mac,
};
use crate::hint::Hint;
use crate::net::HostOnlyNet;
use crate::routes::{Claim, DockerSubnets, RouteError, validate_docker_subnet};

/// Smallest memory a machine may have: the initramfs OS alone pins ~250 MiB.
pub const MIN_MEMORY_MIB: u64 = 256;
/// Smallest data disk: room for an ext4 journal and a few images.
pub const MIN_DISK_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("{why}")]
    Remote { why: String },
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
    #[error(
        "invalid --memory {text:?}: a size with a unit (4G, 4096M) or a bare number of MiB, in whole MiB"
    )]
    MemorySize { text: String },
    #[error("invalid --docker-subnet {text:?}: {why}")]
    DockerSubnet { text: String, why: String },
    #[error(transparent)]
    Share(#[from] ShareError),
    #[error("invalid --tld {text:?}: {why}")]
    Tld { text: String, why: &'static str },
    #[error("cannot allow DNS domain {text:?} for this machine")]
    DnsDomain {
        text: String,
        // Boxed: the rules' error carries strings, and would make every SpecError (and
        // StoreError) larger for a rare case.
        #[source]
        source: Box<crate::dns::policy::AllowanceError>,
    },
    #[error("{bytes} bytes is too small for the data disk: at least 1G")]
    DiskBytes { bytes: u64 },
    #[error("{version:?} is not an image version (16 lowercase hex digits)")]
    ImageVersion { version: String },
    #[error("host-only index {index} is outside the pool (0 to 63)")]
    Index { index: u8 },
    #[error(
        "{value} does not match network.index {index}: devbox derives it from the index, \
         and it must be {expected}"
    )]
    NotDerived {
        value: String,
        index: u8,
        expected: String,
    },
    #[error(
        "invalid MAC address {text:?}: expected six hex bytes such as 52:54:00:12:34:56, \
         of a unicast address"
    )]
    Mac { text: String },
    #[error(transparent)]
    Docker(RouteError),
    #[error("Docker's pool size /{size} does not fit the pool {pool}: between /{} and /30", pool.prefix_len())]
    PoolSize { size: u8, pool: Ipv4Net },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// A value of `machine.yaml` that failed validation: which field, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {field}")]
pub struct InvalidField {
    /// The field's path in the file: `cpus`, `network.subnet`, `shares[1].guest_path`.
    pub field: String,
    #[source]
    pub source: SpecError,
}

/// `Err(InvalidField)` for `field` when `check` fails.
fn field<T>(name: impl Into<String>, check: Result<T, SpecError>) -> Result<T, InvalidField> {
    check.map_err(|source| InvalidField {
        field: name.into(),
        source,
    })
}

impl Hint for SpecError {
    fn hint(&self) -> Option<String> {
        match self {
            SpecError::Share(e) => e.hint(),
            SpecError::DockerSubnet { .. } => Some("example: --docker-subnet 172.24.0.1/16".into()),
            SpecError::DnsDomain { source, .. } => source.hint(),
            SpecError::Engine(e) => e.hint(),
            _ => None,
        }
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
    /// IPv6 for the machine's containers (`create --ipv6`): a /56 of the host's unique local
    /// prefix, derived from `index` ([`crate::net::ula`]), routed like the Docker subnets.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6: bool,
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
    /// Docker's bridge and address pool in the guest, routed from the host.
    pub docker: DockerSubnets,
    /// Host directories exported into the guest.
    #[serde(default)]
    pub shares: Vec<ShareSpec>,
    /// Top-level domain of the machine's names (`<machine>.<tld>`).
    #[serde(default = "default_tld")]
    pub tld: String,
    /// Docker engine settings: `daemon.json` keys and dockerd's environment
    /// (`create --engine-*`; `super::engine`).
    #[serde(default, skip_serializing_if = "EngineSpec::is_empty")]
    pub engine: EngineSpec,
    /// Domains outside `<name>.<tld>` in which the machine's containers may claim names, and
    /// which are then routed to its DNS server (`devbox dns allow`, `create --dns-domain`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_domains: Vec<String>,
    /// For a host adopted over SSH ([`Driver::Ssh`]): where and as whom it is reached. Such
    /// a machine keeps its lease (network index and Docker subnets) like any other, and has no
    /// CPUs, memory, disk or image of devbox's (zero and empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteSpec>,
    /// RFC 3339 creation time.
    pub created: String,
}

/// `--ssh-host`: a host name or an address, one word of printable ASCII.
pub fn validate_remote_host(host: &str) -> Result<(), SpecError> {
    if host.is_empty()
        || host.len() > 253
        || !host.bytes().all(|b| b.is_ascii_graphic())
        || host.starts_with('-')
    {
        return Err(SpecError::Remote {
            why: format!("--ssh-host {host:?} is not a host name or an address"),
        });
    }
    Ok(())
}

/// `--ssh-user`: a POSIX user name (letters, digits, `_`, `-`, `.`; not starting with `-`).
pub fn validate_remote_user(user: &str) -> Result<(), SpecError> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && !user.starts_with('-')
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SpecError::Remote {
            why: format!("--ssh-user {user:?} is not a user name"),
        })
    }
}

/// A host adopted over SSH (`create --driver ssh`). Its host key, pinned at create, is the
/// machine's `ssh_host_ed25519_key.pub` file, whatever its algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSpec {
    /// As given to `--ssh-host`: a name or an address.
    pub host: String,
    /// Its IPv4 address, resolved at create.
    pub address: Ipv4Addr,
    pub port: u16,
    pub user: String,
    /// The user's own private key devbox authenticates with.
    pub identity: PathBuf,
}

fn default_tld() -> String {
    "dev".to_owned()
}

impl MachineSpec {
    /// Checks every value of `machine.yaml`, which the user (and, through a share holding it,
    /// a guest) can edit by hand, at every read: nothing in the file is trusted by the code
    /// that acts with privileges (the TAP, the routes, the NFS exports, QEMU's arguments).
    /// The network's addresses must be the ones its index gives (they are a cache of it).
    pub fn validate(&self, limits: &HostLimits) -> Result<(), InvalidField> {
        field("name", validate_name(&self.name))?;
        let remote = |why: &str| {
            Err(SpecError::Remote {
                why: why.to_owned(),
            })
        };
        match (self.driver, &self.remote) {
            (Driver::Ssh, Some(r)) => {
                field("remote.host", validate_remote_host(&r.host))?;
                field("remote.user", validate_remote_user(&r.user))?;
                if r.port == 0 {
                    field("remote.port", remote("port 0 is no SSH port"))?;
                }
                if !r.identity.is_absolute() {
                    field(
                        "remote.identity",
                        remote("the key file's path must be absolute"),
                    )?;
                }
            }
            (Driver::Ssh, None) => field(
                "remote",
                remote("the ssh driver needs the host it adopted (`remote:`)"),
            )?,
            (_, Some(_)) => field(
                "remote",
                remote("only a machine of the ssh driver adopts a host (`remote:`)"),
            )?,
            (_, None) => {
                field("cpus", validate_cpus(self.cpus, limits))?;
                field("memory_mib", validate_memory(self.memory_mib, limits))?;
                if self.disk_bytes < MIN_DISK_BYTES {
                    field(
                        "disk_bytes",
                        Err(SpecError::DiskBytes {
                            bytes: self.disk_bytes,
                        }),
                    )?;
                }
                field("image", validate_image_version(&self.image))?;
            }
        }
        self.network.validate()?;
        self.validate_docker()?;
        for (i, share) in self.shares.iter().enumerate() {
            field(
                format!("shares[{i}].host_path"),
                super::share::validate_host_path(&share.host_path).map_err(SpecError::from),
            )?;
            field(
                format!("shares[{i}].guest_path"),
                super::share::check_guest_path(share).map_err(SpecError::from),
            )?;
        }
        // No two with one guest path, none inside another (the state directories are
        // checked where they are known: at create and at start).
        field(
            "shares",
            check_shares(&self.shares, None).map_err(SpecError::from),
        )?;
        field("tld", validate_tld(&self.tld))?;
        super::engine::validate(&self.engine).map_err(|(name, e)| InvalidField {
            field: name,
            source: SpecError::Engine(e),
        })?;
        for (i, d) in self.dns_domains.iter().enumerate() {
            field(
                format!("dns_domains[{i}]"),
                check_dns_domain(d, &self.name, &self.tld),
            )?;
        }
        Ok(())
    }

    /// Refuses `devbox {verb}` for a host adopted over SSH: its CPUs, memory, disk, image,
    /// console and engine log are the host's, not devbox's.
    pub fn require_booted(&self, verb: &str) -> Result<(), SpecError> {
        match &self.remote {
            None => Ok(()),
            Some(r) => Err(SpecError::Remote {
                why: format!(
                    "{} is the host {} adopted over SSH (driver ssh): `devbox {verb}` acts on \
                     machines devbox boots; use the host's own tools (`devbox ssh {}`)",
                    self.name, r.host, self.name
                ),
            }),
        }
    }

    /// The Docker subnets with the rules `create` allocates them by.
    fn validate_docker(&self) -> Result<(), InvalidField> {
        let d = &self.docker;
        let bridge = d.bridge.trunc();
        field(
            "docker.bridge",
            validate_docker_subnet(d.bridge, &[]).map_err(SpecError::Docker),
        )?;
        if d.bridge.addr() == bridge.network() || d.bridge.addr() == bridge.broadcast() {
            field(
                "docker.bridge",
                Err(SpecError::DockerSubnet {
                    text: d.bridge.to_string(),
                    why: "Docker's bip is a host address of the bridge's subnet".into(),
                }),
            )?;
        }
        let own_bridge = Claim {
            machine: self.name.clone(),
            subnet: bridge,
        };
        field(
            "docker.pool",
            validate_docker_subnet(d.pool, &[own_bridge]).map_err(SpecError::Docker),
        )?;
        if d.pool_size < d.pool.prefix_len() || d.pool_size > 30 {
            field(
                "docker.pool_size",
                Err(SpecError::PoolSize {
                    size: d.pool_size,
                    pool: d.pool,
                }),
            )?;
        }
        Ok(())
    }
}

impl NetworkSpec {
    /// The machine's host-only network, derived from its index.
    pub fn host_only(&self) -> Result<HostOnlyNet, SpecError> {
        HostOnlyNet::from_index(self.index).map_err(|_| SpecError::Index { index: self.index })
    }

    /// The stored addresses are those the index gives, and the MAC is a unicast one.
    fn validate(&self) -> Result<(), InvalidField> {
        let net = field("network.index", self.host_only())?;
        let derived = |name: &str, value: String, expected: String| {
            if value == expected {
                Ok(())
            } else {
                field(
                    format!("network.{name}"),
                    Err(SpecError::NotDerived {
                        value,
                        index: self.index,
                        expected,
                    }),
                )
            }
        };
        derived("subnet", self.subnet.to_string(), net.subnet.to_string())?;
        derived("host_ip", self.host_ip.to_string(), net.host_ip.to_string())?;
        derived(
            "guest_ip",
            self.guest_ip.to_string(),
            net.guest_ip.to_string(),
        )?;
        field("network.mac", validate_mac(&self.mac))
    }
}

/// Checks a domain to allow for machine `name` under `tld` ([`crate::dns::policy`]'s rules),
/// returning it normalized.
pub fn check_dns_domain(text: &str, name: &str, tld: &str) -> Result<String, SpecError> {
    crate::dns::policy::check_allowance(text, name, tld).map_err(|source| SpecError::DnsDomain {
        text: text.to_owned(),
        source: Box::new(source),
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

/// Parses `--memory` into MiB: a bare number is MiB (as it always was), a number with a
/// unit is a size (`4G`, `4096M`, `1.5G`) that must come to whole MiB.
pub fn parse_memory(text: &str) -> Result<u64, SpecError> {
    let err = || SpecError::MemorySize {
        text: text.to_owned(),
    };
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| err());
    }
    let bytes = parse_size(t).map_err(|_| err())?;
    if !bytes.is_multiple_of(1 << 20) {
        return Err(err());
    }
    Ok(bytes >> 20)
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
    // Sizes and ranges are checked against the host's routes by `crate::routes`.
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

/// An image version as `devbox image build` and `pull` name them: 16 lowercase hex digits
/// (never a path: the version names a directory of the image cache).
pub fn validate_image_version(version: &str) -> Result<(), SpecError> {
    if version.len() == 16
        && version
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(SpecError::ImageVersion {
            version: version.to_owned(),
        })
    }
}

/// Six colon-separated hex bytes of a unicast address: it goes into QEMU's `-device` option
/// and the kvm driver's virtio-net config as it is.
pub fn validate_mac(text: &str) -> Result<(), SpecError> {
    let bytes: Vec<Option<u8>> = text
        .split(':')
        .map(|b| {
            (b.len() == 2)
                .then(|| u8::from_str_radix(b, 16).ok())
                .flatten()
        })
        .collect();
    match bytes.as_slice() {
        [Some(first), rest @ ..] if rest.len() == 5 && rest.iter().all(Option::is_some) => {
            if first & 1 == 0 {
                Ok(())
            } else {
                Err(SpecError::Mac {
                    text: text.to_owned(),
                })
            }
        }
        _ => Err(SpecError::Mac {
            text: text.to_owned(),
        }),
    }
}

/// A stable locally administered MAC from the machine name (QEMU's 52:54:00 prefix).
pub fn mac_for(name: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(name.as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
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
    #[test]
    fn memory_takes_units_and_a_bare_number_is_mib() {
        use super::parse_memory;
        assert_eq!(parse_memory("4G").unwrap(), 4096);
        assert_eq!(parse_memory("4096M").unwrap(), 4096);
        assert_eq!(parse_memory("4096").unwrap(), 4096);
        assert_eq!(parse_memory("1.5G").unwrap(), 1536);
        assert_eq!(parse_memory("4GiB").unwrap(), 4096);
        for bad in ["", "4X", "G", "-1", "1000K", "0.3M", "4 G B"] {
            let e = parse_memory(bad).unwrap_err();
            assert!(
                matches!(e, super::SpecError::MemorySize { .. }),
                "{bad:?}: {e}"
            );
        }
    }

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
    fn tlds_are_dns_labels() {
        for ok in ["dev", "test", "internal", "my.lan"] {
            assert!(validate_tld(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".dev", "dev.", "DEV", "d_v"] {
            assert!(validate_tld(bad).is_err(), "{bad:?}");
        }
    }

    /// The golden machine, valid on a host with 2 CPUs and 4 GiB.
    fn valid() -> (MachineSpec, HostLimits) {
        let mut s = crate::machine::guest_net::tests::spec(Driver::Qemu);
        s.network.mac = mac_for("dev");
        (
            s,
            HostLimits {
                cpus: 2,
                memory_mib: 4096,
            },
        )
    }

    #[test]
    fn an_adopted_host_has_a_remote_and_only_it_does() {
        let remote = || RemoteSpec {
            host: "box.example".into(),
            address: Ipv4Addr::new(192, 0, 2, 7),
            port: 22,
            user: "dev".into(),
            identity: "/home/dev/.ssh/id_ed25519".into(),
        };
        let (mut s, limits) = valid();
        s.driver = Driver::Ssh;
        s.remote = Some(remote());
        // No CPUs, memory, disk or image of devbox's.
        (s.cpus, s.memory_mib, s.disk_bytes, s.image) = (0, 0, 0, String::new());
        s.validate(&limits).unwrap();
        assert!(
            s.require_booted("upgrade")
                .unwrap_err()
                .to_string()
                .contains("devbox upgrade")
        );
        let (field, _) = refused(|s| s.remote = Some(remote()));
        assert_eq!(field, "remote");
        let (field, _) = refused(|s| s.driver = Driver::Ssh);
        assert_eq!(field, "remote");
        for (edit, want) in [
            (
                Box::new(|r: &mut RemoteSpec| r.user = "-oProxyCommand=x".into())
                    as Box<dyn Fn(&mut RemoteSpec)>,
                "remote.user",
            ),
            (
                Box::new(|r: &mut RemoteSpec| r.host = "two words".into()),
                "remote.host",
            ),
            (Box::new(|r: &mut RemoteSpec| r.port = 0), "remote.port"),
            (
                Box::new(|r: &mut RemoteSpec| r.identity = "key".into()),
                "remote.identity",
            ),
        ] {
            let (field, _) = refused(|s| {
                s.driver = Driver::Ssh;
                let mut r = remote();
                edit(&mut r);
                s.remote = Some(r);
            });
            assert_eq!(field, want);
        }
    }

    /// The field a crafted spec is refused for, and the message.
    fn refused(edit: impl FnOnce(&mut MachineSpec)) -> (String, String) {
        let (mut s, limits) = valid();
        edit(&mut s);
        let e = s.validate(&limits).expect_err("a crafted spec is refused");
        (e.field.clone(), e.source.to_string())
    }

    #[test]
    fn a_valid_spec_passes() {
        let (s, limits) = valid();
        s.validate(&limits).unwrap();
    }

    #[test]
    fn network_addresses_must_be_the_ones_the_index_gives() {
        let (f, why) = refused(|s| s.network.subnet = "192.0.0.0/2".parse().unwrap());
        assert_eq!(f, "network.subnet");
        assert_eq!(
            why,
            "192.0.0.0/2 does not match network.index 0: devbox derives it from the index, \
             and it must be 192.168.64.0/24"
        );
        // A foreign subnet of the right size.
        let (f, _) = refused(|s| s.network.subnet = "10.1.2.0/24".parse().unwrap());
        assert_eq!(f, "network.subnet");
        let (f, _) = refused(|s| s.network.host_ip = "200.66.0.1".parse().unwrap());
        assert_eq!(f, "network.host_ip");
        let (f, _) = refused(|s| s.network.guest_ip = "192.168.65.2".parse().unwrap());
        assert_eq!(f, "network.guest_ip");
        // An index outside the pool would name a link devbox does not own (dbx64 and up).
        let (f, why) = refused(|s| s.network.index = 200);
        assert_eq!(f, "network.index");
        assert!(why.contains("outside the pool"), "{why}");
    }

    #[test]
    fn docker_subnets_follow_the_routing_rules() {
        // One covering the host's default route.
        let (f, why) = refused(|s| s.docker.pool = "0.0.0.0/1".parse().unwrap());
        assert_eq!(f, "docker.pool");
        assert!(why.contains("0.0.0.0/1 is too large"), "{why}");
        let (f, _) = refused(|s| s.docker.bridge = "8.8.8.1/24".parse().unwrap());
        assert_eq!(f, "docker.bridge");
        let (f, _) = refused(|s| s.docker.bridge = "192.168.64.1/24".parse().unwrap());
        assert_eq!(f, "docker.bridge");
        let (f, _) = refused(|s| s.docker.pool = "172.18.0.0/16".parse().unwrap());
        assert_eq!(f, "docker.pool", "the pool may not overlap the bridge");
        let (f, _) = refused(|s| s.docker.bridge = "172.18.0.0/16".parse().unwrap());
        assert_eq!(f, "docker.bridge", "the bip is a host address");
        let (f, _) = refused(|s| s.docker.pool_size = 8);
        assert_eq!(f, "docker.pool_size");
    }

    #[test]
    fn the_rest_of_the_file_is_checked_too() {
        for (edit, want) in [
            (
                Box::new(|s: &mut MachineSpec| s.image = "../../../etc".into())
                    as Box<dyn FnOnce(&mut MachineSpec)>,
                "image",
            ),
            (
                Box::new(|s: &mut MachineSpec| {
                    s.network.mac = "52:54:00:00:00:01,romfile=/etc/shadow".into()
                }),
                "network.mac",
            ),
            (
                Box::new(|s: &mut MachineSpec| s.network.mac = "01:00:5e:00:00:01".into()),
                "network.mac",
            ),
            (Box::new(|s: &mut MachineSpec| s.cpus = 64), "cpus"),
            (
                Box::new(|s: &mut MachineSpec| s.memory_mib = 1),
                "memory_mib",
            ),
            (
                Box::new(|s: &mut MachineSpec| s.disk_bytes = 4096),
                "disk_bytes",
            ),
            (
                Box::new(|s: &mut MachineSpec| s.tld = "dev com".into()),
                "tld",
            ),
            (
                Box::new(|s: &mut MachineSpec| s.name = "../x".into()),
                "name",
            ),
            (
                Box::new(|s: &mut MachineSpec| {
                    s.shares = vec![ShareSpec {
                        host_path: "/home/me/../../etc".into(),
                        guest_path: "/src".into(),
                        read_only: false,
                        id: None,
                        allow_root: false,
                    }]
                }),
                "shares[0].host_path",
            ),
            (
                Box::new(|s: &mut MachineSpec| {
                    s.shares = vec![ShareSpec {
                        host_path: "/home/me".into(),
                        guest_path: "/var/lib/docker".into(),
                        read_only: false,
                        id: None,
                        allow_root: false,
                    }]
                }),
                "shares[0].guest_path",
            ),
            (
                Box::new(|s: &mut MachineSpec| {
                    let share = ShareSpec {
                        host_path: "/home/me".into(),
                        guest_path: "/src".into(),
                        read_only: false,
                        id: None,
                        allow_root: false,
                    };
                    s.shares = vec![share.clone(), share];
                }),
                "shares",
            ),
        ] {
            assert_eq!(refused(edit).0, want);
        }
    }

    #[test]
    fn macs_are_six_unicast_hex_bytes() {
        validate_mac(&mac_for("dev")).unwrap();
        validate_mac("52:54:00:AB:cd:01").unwrap();
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:01:02",
            "5254.00ab.cd01",
            "52:54:00:ab:cd:0g",
        ] {
            assert!(validate_mac(bad).is_err(), "{bad:?}");
        }
        validate_image_version("0123456789abcdef").unwrap();
        for bad in [
            "0123456789ABCDEF",
            "0123456789abcde",
            "../0123456789abc",
            "",
        ] {
            assert!(validate_image_version(bad).is_err(), "{bad:?}");
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
