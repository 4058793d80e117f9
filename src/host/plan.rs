//! [`HostPlan`]: a serialisable list of host changes and its allowlist. Its dry-run text
//! (the commands it amounts to) is in `argv.rs`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::HostError;
use crate::nat::SwarmPair;
use crate::net::vmnet::is_vmnet_bridge;
use crate::net::{Ipv4Net, devbox_link, overlaps};
use crate::routes::{PlannedRoute, RoutePlan, is_private, validate_docker_subnet};

/// Directories devbox may write files into, with the file-name prefix each requires.
const ALLOWED_FILES: [(&str, &str); 3] = [
    ("/etc/resolver", ""),
    ("/etc/systemd/system", "devbox-"),
    ("/Library/LaunchDaemons", "dev.devbox."),
];

/// `system install`'s own files, allowed by exact path only: the registry's lock and the
/// record of what the install added.
pub const REGISTRY_FILES: [&str; 2] = ["/var/lib/devbox/host.lock", "/var/lib/devbox/install.json"];

/// The directories `system install` creates, with their modes (exact paths only): the lease
/// registry and its sticky, world-writable leases directory.
pub const REGISTRY_DIRS: [(&str, u32); 2] = [
    ("/var/lib/devbox", 0o755),
    ("/var/lib/devbox/leases", 0o1777),
];

/// Where `system install` puts the binary, the only path it may.
pub const INSTALLED_BINARY: &str = "/usr/local/bin/devbox";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostOs {
    Linux,
    Macos,
}

impl HostOs {
    /// The OS this binary runs on.
    pub fn current() -> HostOs {
        super::sys::HOST_OS
    }
}

impl fmt::Display for HostOs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostOs::Linux => "linux",
            HostOs::Macos => "macos",
        })
    }
}

/// A file devbox owns on the host, written atomically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileSpec {
    pub path: PathBuf,
    pub mode: u32,
    pub contents: String,
}

/// A service job: a systemd unit (`name` = unit file name) or a launchd job (`name` = label);
/// `path` is its file, which the same plan writes or removes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceUnit {
    pub name: String,
    pub path: PathBuf,
}

/// A route to the Docker subnet of a host adopted over SSH (driver `ssh`), via that host's
/// address on a network this host is directly connected to. Unlike a machine's routes it is
/// not on a link of devbox's: what makes it the caller's is `lease`, the machine's lease,
/// whose Docker subnets `dest` must be one of (`leases.rs`); the applier also checks, against
/// the routing table, that `gateway` is on a network directly connected through `interface`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RemoteRoute {
    pub dest: Ipv4Net,
    /// The adopted host's address.
    pub gateway: std::net::Ipv4Addr,
    /// The host interface on that host's network.
    pub interface: String,
    /// The adopted machine's lease index.
    pub lease: u8,
    pub machine: String,
}

impl RemoteRoute {
    /// The route itself, for the routing table.
    pub fn route(&self) -> PlannedRoute {
        PlannedRoute {
            dest: self.dest,
            gateway: self.gateway,
            interface: self.interface.clone(),
            machine: self.machine.clone(),
        }
    }
}

impl fmt::Display for RemoteRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.route())
    }
}

/// macOS vmnet: let a bridge member carry packets from addresses vmnet did not assign (the
/// containers'), `ifconfig <bridge> -hostfilter <member>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostFilter {
    pub bridge: String,
    pub member: String,
}

/// systemd-resolved's settings for a machine's TAP link: its DNS server for `domains` only
/// (routing-only `~domain`s, never the bare TLD) and no default DNS route on the link.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResolvedLink {
    /// The machine's TAP, `dbxN`.
    pub link: String,
    pub server: SocketAddr,
    /// The machine's TLD: every domain must lie under it.
    pub tld: String,
    pub domains: Vec<String>,
}

/// `system install`: a copy of the running binary at [`INSTALLED_BINARY`] (root, 0755), with
/// the two file capabilities `cap_net_admin,cap_net_bind_service+ep` (Linux).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BinaryInstall {
    pub source: PathBuf,
    pub path: PathBuf,
    /// Whether to set the file capabilities (Linux).
    pub caps: bool,
}

/// A directory of the lease registry, created root-owned with `mode` (one of
/// [`REGISTRY_DIRS`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DirSpec {
    pub path: PathBuf,
    pub mode: u32,
}

/// Everything one privileged run changes on the host. The applier runs the steps in the
/// order [`HostPlan::steps`] lists them: stop units, remove routes, remove NAT, revert
/// resolved links, remove files, write files, add routes, add NAT, set resolved links, host
/// filters, reload and start units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPlan {
    /// The devbox verb that computed the plan (`routes apply`), named in privilege errors.
    pub command: String,
    pub routes: RoutePlan,
    #[serde(default)]
    pub hostfilters: Vec<HostFilter>,
    #[serde(default)]
    pub write_files: Vec<FileSpec>,
    #[serde(default)]
    pub remove_files: Vec<PathBuf>,
    #[serde(default)]
    pub load_units: Vec<ServiceUnit>,
    #[serde(default)]
    pub unload_units: Vec<ServiceUnit>,
    /// systemd-resolved links to point at a machine's DNS server (Linux).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved: Vec<ResolvedLink>,
    /// systemd-resolved links whose devbox settings to drop (`resolvectl revert`; Linux).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved_revert: Vec<String>,
    /// Machine links (`dbxN`) whose host-only /24 to forward and masquerade out of the host's
    /// other interfaces (Linux: devbox's nftables table, `crate::nat`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nat_add: Vec<String>,
    /// Machine links whose NAT to take away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nat_remove: Vec<String>,
    /// Routes to adopted hosts' Docker subnets, via their addresses (see [`RemoteRoute`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_routes_add: Vec<RemoteRoute>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_routes_remove: Vec<RemoteRoute>,
    /// Pairs of machine links between which to open Docker swarm mode's ports (Linux:
    /// `crate::nat::add_pair`); both machines must be running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub swarm_add: Vec<SwarmPair>,
    /// Machine links whose swarm pairs to close, every pair that names one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub swarm_remove: Vec<String>,
    /// The installed binary to put in place (`system install`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_binary: Option<BinaryInstall>,
    /// The installed binary to remove (`system uninstall`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_binary: Option<PathBuf>,
    /// Registry directories to create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub create_dirs: Vec<DirSpec>,
    /// Registry directories to remove, each only when empty (deepest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_dirs: Vec<PathBuf>,
}

/// One step of a plan, in execution order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step<'p> {
    UnloadUnit(&'p ServiceUnit),
    RemoveRoute(&'p PlannedRoute),
    RemoveRemoteRoute(&'p RemoteRoute),
    RemoveSwarm(&'p str),
    RemoveNat(&'p str),
    RevertResolved(&'p str),
    RemoveFile(&'p Path),
    RemoveBinary(&'p Path),
    RemoveDir(&'p Path),
    CreateDir(&'p DirSpec),
    InstallBinary(&'p BinaryInstall),
    WriteFile(&'p FileSpec),
    AddRoute(&'p PlannedRoute),
    AddRemoteRoute(&'p RemoteRoute),
    AddNat(&'p str),
    AddSwarm(&'p SwarmPair),
    SetResolved(&'p ResolvedLink),
    HostFilter(&'p HostFilter),
    ReloadUnits,
    LoadUnit(&'p ServiceUnit),
}

impl HostPlan {
    /// A plan that changes routes only.
    pub fn routes(command: impl Into<String>, routes: RoutePlan) -> HostPlan {
        HostPlan {
            command: command.into(),
            routes,
            ..HostPlan::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.steps().is_empty()
    }

    /// Sorts every list, so that plans meaning the same change compare equal.
    pub fn normalize(&mut self) {
        self.routes.normalize();
        self.hostfilters.sort();
        self.hostfilters.dedup();
        self.write_files.sort();
        self.remove_files.sort();
        self.remove_files.dedup();
        self.load_units.sort();
        self.unload_units.sort();
        self.resolved.sort();
        self.resolved_revert.sort();
        self.resolved_revert.dedup();
        self.nat_add.sort();
        self.nat_add.dedup();
        self.nat_remove.sort();
        self.nat_remove.dedup();
        self.remote_routes_add.sort();
        self.remote_routes_add.dedup();
        self.remote_routes_remove.sort();
        self.remote_routes_remove.dedup();
        self.swarm_add.sort();
        self.swarm_add.dedup();
        self.swarm_remove.sort();
        self.swarm_remove.dedup();
        // Parents first to create, children first to remove.
        self.create_dirs.sort();
        self.remove_dirs.sort();
        self.remove_dirs.dedup();
        self.remove_dirs.reverse();
    }

    pub(super) fn steps(&self) -> Vec<Step<'_>> {
        let mut steps: Vec<Step> = self.unload_units.iter().map(Step::UnloadUnit).collect();
        steps.extend(self.routes.remove.iter().map(Step::RemoveRoute));
        steps.extend(
            self.remote_routes_remove
                .iter()
                .map(Step::RemoveRemoteRoute),
        );
        steps.extend(self.swarm_remove.iter().map(|l| Step::RemoveSwarm(l)));
        steps.extend(self.nat_remove.iter().map(|l| Step::RemoveNat(l)));
        steps.extend(self.resolved_revert.iter().map(|l| Step::RevertResolved(l)));
        steps.extend(self.remove_files.iter().map(|p| Step::RemoveFile(p)));
        steps.extend(self.remove_binary.iter().map(|p| Step::RemoveBinary(p)));
        steps.extend(self.remove_dirs.iter().map(|p| Step::RemoveDir(p)));
        steps.extend(self.create_dirs.iter().map(Step::CreateDir));
        steps.extend(self.install_binary.iter().map(Step::InstallBinary));
        steps.extend(self.write_files.iter().map(Step::WriteFile));
        steps.extend(self.routes.add.iter().map(Step::AddRoute));
        steps.extend(self.remote_routes_add.iter().map(Step::AddRemoteRoute));
        steps.extend(self.nat_add.iter().map(|l| Step::AddNat(l)));
        steps.extend(self.swarm_add.iter().map(Step::AddSwarm));
        steps.extend(self.resolved.iter().map(Step::SetResolved));
        steps.extend(self.hostfilters.iter().map(Step::HostFilter));
        let units_changed = !self.load_units.is_empty() || !self.unload_units.is_empty();
        if units_changed {
            steps.push(Step::ReloadUnits);
        }
        steps.extend(self.load_units.iter().map(Step::LoadUnit));
        steps
    }

    /// The allowlist: routes only to private Docker subnets via a machine's guest IP on its
    /// own `dbxN` TAP, or via a private address on a vmnet bridge (`bridgeN`, vz machines);
    /// NAT only for `dbxN` links (each for the /24 its index gives, nothing else);
    /// files only directly inside `/etc/resolver/`, as `/etc/systemd/system/devbox-*` or
    /// `/Library/LaunchDaemons/dev.devbox.*`; units only those files; resolved settings only
    /// on `dbxN` links, for domains under the machine's TLD. The first item outside it fails
    /// the whole plan, before any change.
    pub fn check_allowed(&self) -> Result<(), HostError> {
        for r in self.routes.add.iter().chain(&self.routes.remove) {
            check_route(r)?;
        }
        for f in &self.write_files {
            check_file(&f.path)?;
            if f.mode & !0o644 != 0 {
                return Err(refused(
                    format!("write {}", f.path.display()),
                    format!("mode {:o} is not 0644 or narrower", f.mode),
                ));
            }
        }
        for p in &self.remove_files {
            check_file(p)?;
        }
        for u in self.load_units.iter().chain(&self.unload_units) {
            check_file(&u.path)?;
            if !(u.name.starts_with("devbox-") || u.name.starts_with("dev.devbox."))
                || u.name.contains('/')
            {
                return Err(refused(
                    format!("manage service {}", u.name),
                    "devbox only manages its own devbox-* and dev.devbox.* services".into(),
                ));
            }
        }
        for r in &self.resolved {
            check_resolved(&r.link, &r.domains, &r.tld)?;
        }
        for link in &self.resolved_revert {
            check_resolved(link, &[], "")?;
        }
        for link in self.nat_add.iter().chain(&self.nat_remove) {
            if crate::nat::NatLink::of(link).is_none() {
                return Err(refused(
                    format!("change the outbound NAT of {link}"),
                    "only devbox's own links (dbxN), for the host-only /24 their index gives"
                        .into(),
                ));
            }
        }
        for r in self
            .remote_routes_add
            .iter()
            .chain(&self.remote_routes_remove)
        {
            check_remote_route(r)?;
        }
        for p in &self.swarm_add {
            if !p.is_valid() {
                return Err(refused(
                    format!("open the swarm ports between {p}"),
                    "only between two distinct machine links (dbxN)".into(),
                ));
            }
        }
        for link in &self.swarm_remove {
            if devbox_link(link).is_none() {
                return Err(refused(
                    format!("close the swarm ports of {link}"),
                    "it is not a machine link (dbxN)".into(),
                ));
            }
        }
        for b in self
            .install_binary
            .iter()
            .map(|b| &b.path)
            .chain(&self.remove_binary)
        {
            if b != Path::new(INSTALLED_BINARY) {
                return Err(refused(
                    format!("install or remove {}", b.display()),
                    format!("devbox only installs itself as {INSTALLED_BINARY}"),
                ));
            }
        }
        if let Some(b) = &self.install_binary
            && !b.source.is_absolute()
        {
            return Err(refused(
                format!("install {}", b.source.display()),
                "the source must be an absolute path".into(),
            ));
        }
        for d in &self.create_dirs {
            if !REGISTRY_DIRS.contains(&(d.path.to_str().unwrap_or(""), d.mode)) {
                return Err(refused(
                    format!("create {} (mode {:o})", d.path.display(), d.mode),
                    "devbox only creates /var/lib/devbox (0755) and /var/lib/devbox/leases \
                     (1777)"
                        .into(),
                ));
            }
        }
        for d in &self.remove_dirs {
            if !REGISTRY_DIRS.iter().any(|(p, _)| d == Path::new(p)) {
                return Err(refused(
                    format!("remove {}", d.display()),
                    "devbox only removes its own registry directories".into(),
                ));
            }
        }
        for h in &self.hostfilters {
            let ok_bridge = h
                .bridge
                .strip_prefix("bridge")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            let ok_member =
                !h.member.is_empty() && h.member.bytes().all(|b| b.is_ascii_alphanumeric());
            if !ok_bridge || !ok_member {
                return Err(refused(
                    format!("change the host filter of {} on {}", h.member, h.bridge),
                    "only vmnet bridges (bridgeN) and their members".into(),
                ));
            }
        }
        Ok(())
    }
}

fn refused(item: String, why: String) -> HostError {
    HostError::Refused { item, why }
}

fn check_route(r: &PlannedRoute) -> Result<(), HostError> {
    let item = || format!("route {r}");
    if is_vmnet_bridge(&r.interface) {
        // A vz machine: vmnet's DHCP server chose its address, so the gateway can only be
        // held to what vmnet hands out, a private address, never one of the Docker subnets.
        let gw = Ipv4Net::new(r.gateway, 32).expect("32 is a valid prefix");
        if !is_private(&gw) || overlaps(&gw, &r.dest) {
            return Err(refused(
                item(),
                format!(
                    "the gateway on {} must be a vz machine's private address outside {}",
                    r.interface, r.dest
                ),
            ));
        }
        return validate_docker_subnet(r.dest, &[]).map_err(|e| refused(item(), e.to_string()));
    }
    let Some(link) = devbox_link(&r.interface) else {
        return Err(refused(
            item(),
            format!(
                "{} is neither a devbox TAP device (dbxN) nor a vmnet bridge (bridgeN)",
                r.interface
            ),
        ));
    };
    if link.guest_ip != r.gateway {
        return Err(refused(
            item(),
            format!(
                "the gateway must be the guest on {}, {}",
                r.interface, link.guest_ip
            ),
        ));
    }
    validate_docker_subnet(r.dest, &[]).map_err(|e| refused(item(), e.to_string()))
}

/// A route to an adopted host's Docker subnet: a private Docker subnet, via a private address
/// outside it, on a real interface name that is not loopback, a machine's share link or a
/// vmnet bridge, for a lease index of the pool. Whose subnet it is, is the lease check's; that
/// the gateway is directly connected, the applier's (it needs the routing table).
fn check_remote_route(r: &RemoteRoute) -> Result<(), HostError> {
    let item = || format!("route {r}");
    let gw = Ipv4Net::new(r.gateway, 32).expect("32 is a valid prefix");
    if !is_private(&gw) || overlaps(&gw, &r.dest) {
        return Err(refused(
            item(),
            format!(
                "the gateway must be the adopted host's private address, outside {}",
                r.dest
            ),
        ));
    }
    let name_ok = !r.interface.is_empty()
        && r.interface.len() < 16
        && r.interface
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    let share_link = r
        .interface
        .strip_suffix('s')
        .is_some_and(|l| devbox_link(l).is_some());
    if !name_ok || r.interface == "lo" || share_link || is_vmnet_bridge(&r.interface) {
        return Err(refused(
            item(),
            format!(
                "{} is not an interface an adopted host can be reached on",
                r.interface
            ),
        ));
    }
    if crate::net::HostOnlyNet::from_index(r.lease).is_err() {
        return Err(refused(
            item(),
            format!("lease {} is outside the pool", r.lease),
        ));
    }
    validate_docker_subnet(r.dest, &[]).map_err(|e| refused(item(), e.to_string()))
}

/// resolved settings only on devbox's own links, and only for domains under the TLD (never
/// the TLD itself: `.dev` is a real, HSTS-preloaded TLD).
fn check_resolved(link: &str, domains: &[String], tld: &str) -> Result<(), HostError> {
    if devbox_link(link).is_none() {
        return Err(refused(
            format!("configure resolved on {link}"),
            "it is not a devbox link (dbx0 … dbx63)".into(),
        ));
    }
    let suffix = format!(".{tld}");
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if let Some(d) = domains
        .iter()
        .find(|d| !d.ends_with(&suffix) || !d.split('.').all(label_ok))
    {
        return Err(refused(
            format!("route {d} to a machine"),
            format!("it is not a domain under .{tld}"),
        ));
    }
    Ok(())
}

fn check_file(path: &Path) -> Result<(), HostError> {
    let item = || format!("touch {}", path.display());
    // `components()` quietly drops `.` and trailing slashes; a path that does not survive
    // the round trip unchanged is not in canonical form.
    let clean = path.is_absolute()
        && path.components().collect::<PathBuf>().as_os_str() == path.as_os_str()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !clean {
        return Err(refused(
            item(),
            "not a canonical absolute path (no `.`, `..`, `//` or trailing `/`)".into(),
        ));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Err(refused(item(), "no file name".into()));
    };
    let allowed = REGISTRY_FILES.iter().any(|f| path == Path::new(f))
        || ALLOWED_FILES.iter().any(|(d, prefix)| {
            dir == Path::new(d) && name.starts_with(prefix) && name.len() > prefix.len()
        });
    if !allowed || name.starts_with('.') {
        return Err(refused(
            item(),
            "devbox only writes /etc/resolver/*, /etc/systemd/system/devbox-*, \
             /Library/LaunchDaemons/dev.devbox.* and its registry's host.lock and install.json"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dest: &str, gw: &str, dev: &str) -> PlannedRoute {
        PlannedRoute {
            dest: dest.parse().unwrap(),
            gateway: gw.parse().unwrap(),
            interface: dev.into(),
            machine: "dev".into(),
        }
    }

    fn with_route(r: PlannedRoute) -> HostPlan {
        HostPlan {
            routes: RoutePlan {
                add: vec![r],
                remove: vec![],
            },
            ..HostPlan::default()
        }
    }

    #[test]
    fn routes_outside_devbox_are_refused() {
        with_route(route("172.18.0.0/16", "192.168.64.2", "dbx0"))
            .check_allowed()
            .unwrap();
        // vz: vmnet's DHCP server picked the guest's address on bridge100.
        with_route(route("172.18.0.0/16", "192.168.64.7", "bridge100"))
            .check_allowed()
            .unwrap();
        for (r, why) in [
            (route("8.8.8.0/24", "192.168.64.2", "dbx0"), "not private"),
            (
                route("172.18.0.0/16", "192.168.64.2", "eth0"),
                "neither a devbox TAP",
            ),
            (
                route("172.18.0.0/16", "8.8.8.8", "bridge100"),
                "private address",
            ),
            (
                route("172.18.0.0/16", "172.18.0.9", "bridge100"),
                "outside 172.18.0.0/16",
            ),
            (
                route("8.8.8.0/24", "192.168.64.7", "bridge100"),
                "not private",
            ),
            (
                route("172.18.0.0/16", "192.168.64.9", "dbx0"),
                "the gateway must be",
            ),
            (
                route("172.18.0.0/16", "192.168.65.2", "dbx0"),
                "the gateway must be",
            ),
            (
                route("192.168.64.0/24", "192.168.64.2", "dbx0"),
                "host-only",
            ),
            (route("10.0.0.0/8", "192.168.64.2", "dbx0"), "too large"),
        ] {
            let err = with_route(r.clone()).check_allowed().unwrap_err();
            assert!(err.to_string().contains(why), "{r}: {err}");
        }
    }

    fn remote(dest: &str, gw: &str, dev: &str) -> HostPlan {
        HostPlan {
            remote_routes_add: vec![RemoteRoute {
                dest: dest.parse().unwrap(),
                gateway: gw.parse().unwrap(),
                interface: dev.into(),
                lease: 2,
                machine: "far".into(),
            }],
            ..HostPlan::default()
        }
    }

    #[test]
    fn an_adopted_hosts_routes_are_docker_subnets_via_a_private_neighbour() {
        remote("172.22.0.0/16", "192.168.1.50", "eth0")
            .check_allowed()
            .unwrap();
        remote("172.22.0.0/16", "192.168.64.2", "dbx0")
            .check_allowed()
            .unwrap();
        for (dest, gw, dev, why) in [
            ("172.22.0.0/16", "8.8.8.8", "eth0", "private address"),
            (
                "172.22.0.0/16",
                "172.22.0.1",
                "eth0",
                "outside 172.22.0.0/16",
            ),
            ("8.8.0.0/16", "192.168.1.50", "eth0", "8.8.0.0/16"),
            ("172.22.0.0/16", "192.168.1.50", "lo", "not an interface"),
            ("172.22.0.0/16", "192.168.1.50", "dbx0s", "not an interface"),
            (
                "172.22.0.0/16",
                "192.168.1.50",
                "bridge100",
                "not an interface",
            ),
            (
                "172.22.0.0/16",
                "192.168.1.50",
                "eth0 up",
                "not an interface",
            ),
        ] {
            let err = remote(dest, gw, dev)
                .check_allowed()
                .unwrap_err()
                .to_string();
            assert!(err.contains(why), "{dest} via {gw} dev {dev}: {err}");
        }
        let mut p = remote("172.22.0.0/16", "192.168.1.50", "eth0");
        p.remote_routes_add[0].lease = 64;
        assert!(
            p.check_allowed()
                .unwrap_err()
                .to_string()
                .contains("outside the pool")
        );
    }

    #[test]
    fn files_outside_devbox_are_refused() {
        let ok = [
            "/etc/resolver/dev.dev",
            "/var/lib/devbox/host.lock",
            "/var/lib/devbox/install.json",
            "/etc/systemd/system/devbox-routes.service",
            "/Library/LaunchDaemons/dev.devbox.routes.plist",
        ];
        for p in ok {
            check_file(Path::new(p)).unwrap();
        }
        for p in [
            "/etc/passwd",
            "/etc/resolver/../passwd",
            "/etc/resolver/",
            "/etc/resolver/a/b",
            "/etc/resolver/.hidden",
            "/etc/systemd/system/sshd.service",
            "/etc/systemd/system/devbox-",
            "/Library/LaunchDaemons/com.evil.plist",
            "/var/lib/devbox/leases/0",
            "/var/lib/devbox/other",
            "etc/resolver/dev",
            "/etc/./resolver/dev",
        ] {
            assert!(check_file(Path::new(p)).is_err(), "{p} allowed");
        }
        let mut plan = HostPlan::default();
        plan.write_files.push(FileSpec {
            path: ok[0].into(),
            mode: 0o4755,
            contents: String::new(),
        });
        assert!(
            plan.check_allowed()
                .unwrap_err()
                .to_string()
                .contains("mode")
        );
    }

    #[test]
    fn only_devbox_units_and_vmnet_bridges() {
        let mut plan = HostPlan::default();
        plan.load_units.push(ServiceUnit {
            name: "sshd.service".into(),
            path: "/etc/systemd/system/devbox-routes.service".into(),
        });
        assert!(plan.check_allowed().is_err());
        let mut plan = HostPlan::default();
        plan.hostfilters.push(HostFilter {
            bridge: "en0".into(),
            member: "vmenet0".into(),
        });
        assert!(plan.check_allowed().is_err());
        plan.hostfilters[0].bridge = "bridge100".into();
        plan.check_allowed().unwrap();
        plan.hostfilters[0].member = "vmenet0; reboot".into();
        assert!(plan.check_allowed().is_err());
    }

    #[test]
    fn nat_only_for_a_machine_main_link_never_its_share_link() {
        let nat = |add: &str, remove: &str| HostPlan {
            nat_add: vec![add.into()],
            nat_remove: vec![remove.into()],
            ..HostPlan::default()
        };
        nat("dbx0", "dbx63").check_allowed().unwrap();
        let share = crate::net::HostOnlyNet::from_index(0)
            .unwrap()
            .share_link()
            .tap;
        for bad in [
            share.as_str(),
            "eth0",
            "dbx64",
            "dbx*",
            "dbx+",
            "bridge100",
            "",
        ] {
            assert!(nat(bad, "dbx1").check_allowed().is_err(), "{bad} added");
            assert!(nat("dbx1", bad).check_allowed().is_err(), "{bad} removed");
        }
    }

    #[test]
    fn install_steps_only_for_devbox_own_paths() {
        let plan = HostPlan {
            install_binary: Some(BinaryInstall {
                source: "/tmp/devbox".into(),
                path: INSTALLED_BINARY.into(),
                caps: true,
            }),
            create_dirs: REGISTRY_DIRS
                .iter()
                .map(|(p, m)| DirSpec {
                    path: p.into(),
                    mode: *m,
                })
                .collect(),
            ..Default::default()
        };
        plan.check_allowed().unwrap();
        let mut bad = plan.clone();
        bad.install_binary.as_mut().unwrap().path = "/usr/bin/passwd".into();
        assert!(bad.check_allowed().is_err());
        let mut bad = plan.clone();
        bad.install_binary.as_mut().unwrap().source = "devbox".into();
        assert!(bad.check_allowed().is_err());
        let mut bad = plan.clone();
        bad.create_dirs[1].mode = 0o777;
        assert!(
            bad.check_allowed().is_err(),
            "the leases directory is sticky"
        );
        let mut bad = plan.clone();
        bad.create_dirs.push(DirSpec {
            path: "/etc/sudoers.d".into(),
            mode: 0o755,
        });
        assert!(bad.check_allowed().is_err());
        let mut bad = HostPlan::default();
        bad.remove_dirs.push("/var/lib".into());
        assert!(bad.check_allowed().is_err());
        bad.remove_dirs = vec!["/var/lib/devbox".into(), "/var/lib/devbox/leases".into()];
        bad.check_allowed().unwrap();
        bad.normalize();
        assert_eq!(bad.remove_dirs[0], Path::new("/var/lib/devbox/leases"));
    }

    #[test]
    fn plan_roundtrips_through_json_and_empty_says_so() {
        let plan = with_route(route("172.18.0.0/16", "192.168.64.2", "dbx0"));
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<HostPlan>(&json).unwrap(), plan);
        assert!(!plan.is_empty());
        assert!(HostPlan::default().is_empty());
        assert!(
            HostPlan::default()
                .render(HostOs::Linux)
                .contains("nothing to change")
        );
    }
}
