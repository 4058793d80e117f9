//! [`HostPlan`]: a serialisable list of host changes, its allowlist and its dry-run text.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::HostError;
use super::commands::{
    hostfilter_argv, ip_route_argv, join_argv, route_add_argv, route_delete_argv, unit_load_argvs,
    unit_reload_argv, unit_unload_argvs,
};
use crate::net::routes::{
    PlannedRoute, RoutePlan, devbox_link, is_private, is_vmnet_bridge, validate_docker_subnet,
};
use crate::net::{Ipv4Net, overlaps};

/// Directories devbox may write files into, with the file-name prefix each requires.
const ALLOWED_FILES: [(&str, &str); 3] = [
    ("/etc/resolver", ""),
    ("/etc/systemd/system", "devbox-"),
    ("/Library/LaunchDaemons", "dev.devbox."),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostOs {
    Linux,
    Macos,
}

impl HostOs {
    pub fn current() -> HostOs {
        if cfg!(target_os = "macos") {
            HostOs::Macos
        } else {
            HostOs::Linux
        }
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

/// macOS vmnet: let a bridge member carry packets from addresses vmnet did not assign (the
/// containers'), `ifconfig <bridge> -hostfilter <member>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostFilter {
    pub bridge: String,
    pub member: String,
}

/// Everything one privileged run changes on the host. The applier runs the steps in the
/// order [`HostPlan::steps`] lists them: stop units, remove routes and files, write files,
/// add routes and host filters, reload and start units.
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
}

/// One step of a plan, in execution order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step<'p> {
    UnloadUnit(&'p ServiceUnit),
    RemoveRoute(&'p PlannedRoute),
    RemoveFile(&'p Path),
    WriteFile(&'p FileSpec),
    AddRoute(&'p PlannedRoute),
    HostFilter(&'p HostFilter),
    ReloadUnits,
    LoadUnit(&'p ServiceUnit),
}

impl HostPlan {
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
    }

    pub(super) fn steps(&self) -> Vec<Step<'_>> {
        let mut steps: Vec<Step> = self.unload_units.iter().map(Step::UnloadUnit).collect();
        steps.extend(self.routes.remove.iter().map(Step::RemoveRoute));
        steps.extend(self.remove_files.iter().map(|p| Step::RemoveFile(p)));
        steps.extend(self.write_files.iter().map(Step::WriteFile));
        steps.extend(self.routes.add.iter().map(Step::AddRoute));
        steps.extend(self.hostfilters.iter().map(Step::HostFilter));
        let units_changed = !self.load_units.is_empty() || !self.unload_units.is_empty();
        if units_changed {
            steps.push(Step::ReloadUnits);
        }
        steps.extend(self.load_units.iter().map(Step::LoadUnit));
        steps
    }

    /// The allowlist: routes only to private Docker subnets via a machine's guest IP on its
    /// own `dbxN` TAP, or via a private address on a vmnet bridge (`bridgeN`, vz machines); files only directly inside `/etc/resolver/`, as
    /// `/etc/systemd/system/devbox-*` or `/Library/LaunchDaemons/dev.devbox.*`; units only
    /// those files. The first item outside it fails the whole plan, before any change.
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

    /// The plan as the commands it amounts to on `os`, one per line (the `--dry-run` text).
    pub fn render(&self, os: HostOs) -> String {
        let mut out = format!("# devbox host plan for {os}");
        if !self.command.is_empty() {
            out.push_str(&format!(" (devbox {})", self.command));
        }
        out.push('\n');
        let steps = self.steps();
        if steps.is_empty() {
            out.push_str("# nothing to change\n");
        }
        for step in steps {
            for line in step_lines(&step, os) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }
}

impl fmt::Display for HostPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(HostOs::current()))
    }
}

/// The text lines for one step; `apply` reports with the same words.
pub(super) fn step_lines(step: &Step<'_>, os: HostOs) -> Vec<String> {
    let machine = |r: &PlannedRoute| format!("  # machine {}", r.machine);
    match step {
        Step::UnloadUnit(u) => unit_unload_argvs(os, u)
            .iter()
            .map(|a| join_argv(a))
            .collect(),
        Step::LoadUnit(u) => unit_load_argvs(os, u)
            .iter()
            .map(|a| join_argv(a))
            .collect(),
        Step::ReloadUnits => unit_reload_argv(os)
            .map(|a| join_argv(&a))
            .into_iter()
            .collect(),
        Step::RemoveRoute(r) => vec![match os {
            HostOs::Linux => join_argv(&ip_route_argv("del", r)) + &machine(r),
            HostOs::Macos => join_argv(&route_delete_argv(r)) + &machine(r),
        }],
        Step::AddRoute(r) => vec![match os {
            HostOs::Linux => join_argv(&ip_route_argv("add", r)) + &machine(r),
            HostOs::Macos => join_argv(&route_add_argv(r)) + &machine(r),
        }],
        Step::HostFilter(h) => vec![join_argv(&hostfilter_argv(h))],
        Step::RemoveFile(p) => vec![format!("rm -f {}", p.display())],
        Step::WriteFile(f) => vec![format!(
            "write {} (mode {:04o}, {} bytes)",
            f.path.display(),
            f.mode,
            f.contents.len()
        )],
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
    let allowed = ALLOWED_FILES.iter().any(|(d, prefix)| {
        dir == Path::new(d) && name.starts_with(prefix) && name.len() > prefix.len()
    });
    if !allowed || name.starts_with('.') {
        return Err(refused(
            item(),
            "devbox only writes /etc/resolver/*, /etc/systemd/system/devbox-* and \
             /Library/LaunchDaemons/dev.devbox.*"
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

    #[test]
    fn files_outside_devbox_are_refused() {
        let ok = [
            "/etc/resolver/dev.dev",
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
