//! The applier: checks a [`HostPlan`] against the allowlist and the host's routing table,
//! then carries it out step by step, skipping what is already in place.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::HostError;
use super::argv::{
    join_argv, resolved_argvs, resolved_revert, step_lines, unit_load_argvs, unit_reload_argv,
    unit_unload_argvs,
};
use super::leases;
use super::plan::{HostOs, HostPlan, Step};
use super::privileged::output_with_net_admin;
use super::sys;
use crate::atomic_file::write_atomic;
use crate::net::lease::Registry;
use crate::net::{HostRoute, first_overlap};
use crate::routes::{PlannedRoute, RouteError};

/// Where the applier acts. Routes always change in the caller's network namespace (tests
/// run it inside one of their own); files land under `root`, and service managers and
/// systemd-resolved are only called when `manage_services` is set. What a plan does on a
/// `dbxN` link is checked against the lease `registry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyTarget {
    pub root: PathBuf,
    pub manage_services: bool,
    pub registry: Registry,
}

impl ApplyTarget {
    /// The real host: files under `/`, units through systemctl or launchctl, this host's
    /// lease registry.
    pub fn system() -> ApplyTarget {
        ApplyTarget {
            root: PathBuf::from("/"),
            manage_services: true,
            registry: Registry::system(),
        }
    }

    /// A scratch tree (tests): `/etc/resolver/x` is written to `<root>/etc/resolver/x`, the
    /// registry is `<root>/var/lib/devbox`, and service managers and systemd-resolved are left
    /// alone.
    pub fn under(root: impl Into<PathBuf>) -> ApplyTarget {
        let root = root.into();
        ApplyTarget {
            registry: Registry::at(root.join("var/lib/devbox")),
            root,
            manage_services: false,
        }
    }

    fn host_path(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn is_system(&self) -> bool {
        self.root == Path::new("/")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The host already looked like this; nothing was changed.
    AlreadyDone,
    /// `--dry-run`: nothing was attempted.
    Planned,
    /// Not done, and not needed: the reason says why.
    Skipped(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedStep {
    /// The step as the plan text shows it.
    pub action: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedReport {
    pub steps: Vec<AppliedStep>,
    /// What in the host's own firewall may still drop a machine's outbound traffic (found
    /// while adding its NAT), with the fix for each.
    pub warnings: Vec<crate::nat::Blocker>,
}

impl AppliedReport {
    /// Whether any step changed the host.
    pub fn changed(&self) -> bool {
        self.steps.iter().any(|s| s.outcome == Outcome::Done)
    }
}

impl fmt::Display for AppliedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.steps {
            let outcome = match &s.outcome {
                Outcome::Done => "done".to_owned(),
                Outcome::AlreadyDone => "already done".to_owned(),
                Outcome::Planned => "planned".to_owned(),
                Outcome::Skipped(why) => format!("skipped: {why}"),
            };
            writeln!(f, "{} ({outcome})", s.action)?;
        }
        Ok(())
    }
}

/// Carries out `plan` on this host ([`ApplyTarget::system`]).
pub fn apply(plan: &HostPlan, dry_run: bool) -> Result<AppliedReport, HostError> {
    apply_to(plan, dry_run, &ApplyTarget::system())
}

/// Carries out `plan` on `target`. Before changing anything it checks the allowlist, the
/// privileges, the leases of the `dbxN` links it touches (`leases.rs`), and every route to
/// add against the current routing table (a route that overlaps one devbox does not own is a
/// [`RouteError::Conflict`], and so is one that would swallow a default route's gateway). A
/// route add that fails takes back the routes this call added. With `dry_run` it only checks
/// the allowlist.
pub fn apply_to(
    plan: &HostPlan,
    dry_run: bool,
    target: &ApplyTarget,
) -> Result<AppliedReport, HostError> {
    plan.check_allowed()?;
    let os = HostOs::current();
    let steps = plan.steps();
    let action = |step: &Step| step_lines(step, os).join("; ");
    if dry_run {
        let steps = steps
            .iter()
            .map(|s| AppliedStep {
                action: action(s),
                outcome: Outcome::Planned,
            })
            .collect();
        return Ok(AppliedReport {
            steps,
            warnings: Vec::new(),
        });
    }
    check_privileges(plan, target)?;
    leases::check_plan_in(plan, &target.registry)?;

    let touches_routes = !plan.routes.add.is_empty()
        || !plan.routes.remove.is_empty()
        || !plan.remote_routes_add.is_empty()
        || !plan.remote_routes_remove.is_empty();
    let table = if touches_routes {
        sys::routes()?
    } else {
        Vec::new()
    };
    let present = |r: &PlannedRoute| table.iter().any(|t| r.matches(t));
    for r in plan.routes.add.iter().filter(|r| !present(r)) {
        let leaving = |t: &HostRoute| plan.routes.remove.iter().any(|x| x.matches(t));
        if let Some(t) = first_overlap(&r.dest, &table, |t| r.matches(t) || leaving(t)) {
            return Err(RouteError::conflict(r.dest, t).into());
        }
        if let Some(t) = covered_default_route(r, &table) {
            return Err(RouteError::conflict(r.dest, t).into());
        }
    }
    for remote in &plan.remote_routes_add {
        let r = remote.route();
        if !connected(&r, &table) {
            return Err(HostError::Refused {
                item: format!("route {r}"),
                why: format!(
                    "{} is not on a network this host reaches directly through {}",
                    r.gateway, r.interface
                ),
            });
        }
        if present(&r) {
            continue;
        }
        let leaving = |t: &HostRoute| {
            plan.remote_routes_remove
                .iter()
                .any(|x| x.route().matches(t))
        };
        if let Some(t) = first_overlap(&r.dest, &table, |t| r.matches(t) || leaving(t)) {
            return Err(RouteError::conflict(r.dest, t).into());
        }
        if let Some(t) = covered_default_route(&r, &table) {
            return Err(RouteError::conflict(r.dest, t).into());
        }
    }

    let mut report = AppliedReport::default();
    let mut added: Vec<PlannedRoute> = Vec::new();
    for step in &steps {
        let outcome = match run_step(step, os, target, &present, &mut report.warnings) {
            Ok(o) => o,
            Err(e) => {
                // Take back this call's routes so a failed apply leaves none half-made.
                for r in added.iter().rev() {
                    let _ = sys::delete_route(r);
                }
                return Err(e);
            }
        };
        match (step, &outcome) {
            (Step::AddRoute(r), Outcome::Done) => added.push((*r).clone()),
            (Step::AddRemoteRoute(r), Outcome::Done) => added.push(r.route()),
            _ => {}
        }
        report.steps.push(AppliedStep {
            action: action(step),
            outcome,
        });
    }
    Ok(report)
}

/// Whether `r`'s gateway lies in a network the routing table reaches directly (no gateway)
/// through `r`'s interface.
fn connected(r: &PlannedRoute, table: &[HostRoute]) -> bool {
    table.iter().any(|t| {
        t.gateway.is_none()
            && t.interface == r.interface
            && t.dest.prefix_len() > 0
            && t.dest.trunc().contains(&r.gateway)
    })
}

/// The default route whose gateway `r` would capture: routing that address into a machine
/// would take the host's way out with it.
fn covered_default_route<'t>(r: &PlannedRoute, table: &'t [HostRoute]) -> Option<&'t HostRoute> {
    table.iter().find(|t| {
        t.dest.prefix_len() == 0
            && matches!(t.gateway, Some(std::net::IpAddr::V4(gw)) if r.dest.trunc().contains(&gw))
    })
}

fn check_privileges(plan: &HostPlan, target: &ApplyTarget) -> Result<(), HostError> {
    let routes = !plan.routes.add.is_empty()
        || !plan.routes.remove.is_empty()
        || !plan.remote_routes_add.is_empty()
        || !plan.remote_routes_remove.is_empty();
    let nat = !plan.nat_add.is_empty()
        || !plan.nat_remove.is_empty()
        || !plan.swarm_add.is_empty()
        || !plan.swarm_remove.is_empty();
    if nat && !sys::can_change_routes() {
        return Err(HostError::NoPrivilege {
            what: "changing the host's NAT and forwarding".into(),
            privilege: sys::ROUTE_PRIVILEGE,
            command: plan.command.clone(),
        });
    }
    if (routes || !plan.hostfilters.is_empty()) && !sys::can_change_routes() {
        return Err(HostError::NoPrivilege {
            what: "changing the host's routes".into(),
            privilege: sys::ROUTE_PRIVILEGE,
            command: plan.command.clone(),
        });
    }
    let first_file = plan
        .write_files
        .iter()
        .map(|f| f.path.as_path())
        .chain(plan.remove_files.iter().map(PathBuf::as_path))
        .chain(plan.install_binary.iter().map(|b| b.path.as_path()))
        .chain(plan.remove_binary.iter().map(PathBuf::as_path))
        .chain(plan.create_dirs.iter().map(|d| d.path.as_path()))
        .chain(plan.remove_dirs.iter().map(PathBuf::as_path))
        .chain(plan.load_units.iter().map(|u| u.path.as_path()))
        .chain(plan.unload_units.iter().map(|u| u.path.as_path()))
        .next();
    if let Some(path) = first_file
        && target.is_system()
        && !nix::unistd::geteuid().is_root()
    {
        return Err(HostError::NoPrivilege {
            what: format!("changing {}", path.display()),
            privilege: "root",
            command: plan.command.clone(),
        });
    }
    Ok(())
}

fn run_step(
    step: &Step,
    os: HostOs,
    target: &ApplyTarget,
    present: &dyn Fn(&PlannedRoute) -> bool,
    warnings: &mut Vec<crate::nat::Blocker>,
) -> Result<Outcome, HostError> {
    let not_managed = || Outcome::Skipped("service managers are not used for a test root".into());
    match step {
        Step::AddRoute(r) if present(r) => Ok(Outcome::AlreadyDone),
        Step::AddRoute(r) => sys::add_route(r).map(|()| Outcome::Done),
        Step::RemoveRoute(r) if !present(r) => Ok(Outcome::AlreadyDone),
        Step::RemoveRoute(r) => sys::delete_route(r).map(|()| Outcome::Done),
        Step::AddRemoteRoute(r) if present(&r.route()) => Ok(Outcome::AlreadyDone),
        Step::AddRemoteRoute(r) => sys::add_route(&r.route()).map(|()| Outcome::Done),
        Step::RemoveRemoteRoute(r) if !present(&r.route()) => Ok(Outcome::AlreadyDone),
        Step::RemoveRemoteRoute(r) => sys::delete_route(&r.route()).map(|()| Outcome::Done),
        Step::HostFilter(h) => sys::hostfilter(h).map(|()| Outcome::Done),
        // Every user's machines share devbox's table, DOCKER-USER and `ip_forward`: each
        // change reads and writes them under the registry's host-wide lock.
        Step::AddNat(link) => {
            let _host = target.registry.lock()?;
            let (outcome, found) = sys::add_nat(link)?;
            warnings.extend(found);
            Ok(outcome)
        }
        Step::RemoveNat(link) => {
            let _host = target.registry.lock()?;
            sys::remove_nat(link)
        }
        Step::AddSwarm(pair) => {
            let _host = target.registry.lock()?;
            sys::add_swarm(pair)
        }
        Step::RemoveSwarm(link) => {
            let _host = target.registry.lock()?;
            sys::remove_swarm(link)
        }
        Step::SetResolved(_) | Step::RevertResolved(_) if !target.manage_services => Ok(
            Outcome::Skipped("systemd-resolved is not used for a test root".into()),
        ),
        Step::SetResolved(r) => {
            resolved_supported(os, &r.link)?;
            for argv in resolved_argvs(r) {
                run(&argv)?;
            }
            Ok(Outcome::Done)
        }
        Step::RevertResolved(link) => {
            resolved_supported(os, link)?;
            run(&resolved_revert(link)).map(|()| Outcome::Done)
        }
        Step::WriteFile(f) => {
            let path = target.host_path(&f.path);
            if file_is(&path, f.contents.as_bytes(), f.mode) {
                return Ok(Outcome::AlreadyDone);
            }
            let io = |what, source| HostError::Io {
                what,
                path: path.clone(),
                source,
            };
            if let Some(dir) = path.parent() {
                fs_err::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
            }
            write_atomic(&path, f.contents.as_bytes(), f.mode).map_err(|e| io("write", e))?;
            Ok(Outcome::Done)
        }
        Step::CreateDir(d) => super::install::create_dir(&target.host_path(&d.path), d.mode),
        Step::RemoveDir(p) => super::install::remove_dir(&target.host_path(p)),
        Step::InstallBinary(b) => {
            super::install::install_binary(&b.source, &target.host_path(&b.path), b.caps)
        }
        Step::RemoveBinary(p) => super::install::remove_file(&target.host_path(p)),
        Step::RemoveFile(p) => {
            let path = target.host_path(p);
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(Outcome::Done),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Outcome::AlreadyDone),
                Err(source) => Err(HostError::Io {
                    what: "remove",
                    path,
                    source,
                }),
            }
        }
        Step::ReloadUnits | Step::LoadUnit(_) | Step::UnloadUnit(_)
            if target.manage_services && !service_manager_runs(os) =>
        {
            Ok(Outcome::Skipped(
                "systemd is not running on this host: the unit files are in place, \
                 enable them where systemd runs"
                    .into(),
            ))
        }
        Step::ReloadUnits if !target.manage_services => Ok(not_managed()),
        Step::ReloadUnits => match unit_reload_argv(os) {
            Some(argv) => run(&argv).map(|()| Outcome::Done),
            None => Ok(Outcome::Skipped("launchd reads plists at bootstrap".into())),
        },
        Step::LoadUnit(_) | Step::UnloadUnit(_) if !target.manage_services => Ok(not_managed()),
        Step::LoadUnit(u) => {
            if os == HostOs::Macos {
                // bootstrap refuses a loaded job: boot out the old one (absent is fine).
                for argv in unit_unload_argvs(os, u) {
                    let _ = run(&argv);
                }
            }
            for argv in unit_load_argvs(os, u) {
                run(&argv)?;
            }
            Ok(Outcome::Done)
        }
        Step::UnloadUnit(u) => {
            // Stopping a unit that is not loaded fails, and leaves the state asked for.
            for argv in unit_unload_argvs(os, u) {
                if let Err(e) = run(&argv) {
                    return Ok(Outcome::Skipped(e.to_string()));
                }
            }
            Ok(Outcome::Done)
        }
    }
}

/// Whether the service manager the units are for runs (a container or WSL may have no
/// systemd: the files are still written).
fn service_manager_runs(os: HostOs) -> bool {
    match os {
        HostOs::Linux => Path::new("/run/systemd/system").is_dir(),
        HostOs::Macos => true,
    }
}

/// systemd-resolved is a Linux service; a macOS host names its resolvers in files.
fn resolved_supported(os: HostOs, link: &str) -> Result<(), HostError> {
    match os {
        HostOs::Linux => Ok(()),
        HostOs::Macos => Err(HostError::Unsupported {
            what: format!("systemd-resolved settings on {link}"),
            os,
        }),
    }
}

fn file_is(path: &Path, contents: &[u8], mode: u32) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let same_mode = std::fs::metadata(path)
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o7777 == mode);
    same_mode && std::fs::read(path).is_ok_and(|c| c == contents)
}

/// Runs `argv` with no input; a non-zero exit is an error carrying its stderr.
pub(super) fn run(argv: &[String]) -> Result<(), HostError> {
    output(argv).map(drop)
}

/// Runs `argv` with no input and returns its stdout. The child gets CAP_NET_ADMIN when this
/// process holds it (`resolvectl` is authorised by it), through the door.
pub(super) fn output(argv: &[String]) -> Result<String, HostError> {
    let (program, args) = argv.split_first().expect("an argv has a program");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = output_with_net_admin(&mut cmd).map_err(|source| HostError::Spawn {
        argv: join_argv(argv),
        source,
    })?;
    if !out.status.success() {
        return Err(HostError::Command {
            argv: join_argv(argv),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
