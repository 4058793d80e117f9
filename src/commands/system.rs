//! `devbox system install|uninstall|status`: the one-time host set-up (`host::install`
//! computes the plans, the host applier carries them out), and the checks whose fixes devbox
//! cannot make itself. `--dry-run` prints the plan and the checks, and works as any user.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::cli::{SystemArgs, SystemCommand};
use crate::host::install::{self, Check, InstallInputs, InstallRecord, JobUser, RECORD_PATH};
use crate::host::privileged::{self, Invoker};
use crate::host::{self, HostOs, INSTALLED_BINARY, REGISTRY_DIRS};
use crate::machine::Store;
use crate::net::lease::{REGISTRY_DIR, Registry};
use crate::{hypervisor, output, resolver};

pub fn run(store: &Store, c: SystemCommand) -> Result<i32> {
    match c {
        SystemCommand::Install(a) => install(store, &a),
        SystemCommand::Uninstall(a) => uninstall(&a),
        SystemCommand::Status => status(store),
    }
}

/// The user the set-up is for: the one who ran sudo, or the caller.
struct ForUser {
    job: JobUser,
    name: String,
    groups: Vec<u32>,
}

fn for_user(store: &Store) -> Result<ForUser> {
    let (uid, gid, name, devbox_home) = match Invoker::detect()? {
        Invoker::Sudo(u) => (u.uid, u.gid, u.name, u.home.join(".devbox")),
        Invoker::Root | Invoker::User => {
            let uid = nix::unistd::getuid();
            let name = nix::unistd::User::from_uid(uid)
                .ok()
                .flatten()
                .map_or_else(|| uid.to_string(), |u| u.name);
            (
                uid.as_raw(),
                nix::unistd::getgid().as_raw(),
                name,
                store.home.clone(),
            )
        }
    };
    let groups = privileged::groups_of(&name, gid);
    Ok(ForUser {
        job: JobUser {
            uid,
            gid,
            devbox_home,
        },
        name,
        groups,
    })
}

fn sha256_of(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| hex::encode(Sha256::digest(&b)))
}

/// The install record, `None` when there is none; an unreadable one is an error (it decides
/// what uninstall removes).
fn read_record() -> Result<Option<InstallRecord>> {
    match std::fs::read_to_string(RECORD_PATH) {
        Ok(t) => Ok(Some(
            serde_json::from_str(&t).with_context(|| format!("reading {RECORD_PATH}"))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {RECORD_PATH}"))),
    }
}

fn install(store: &Store, a: &SystemArgs) -> Result<i32> {
    let exe = std::env::current_exe().context("finding the devbox executable")?;
    let exe_sha256 = sha256_of(&exe).with_context(|| format!("reading {}", exe.display()))?;
    let installed = Path::new(INSTALLED_BINARY);
    let user = for_user(store)?;
    let existing = REGISTRY_DIRS
        .iter()
        .map(|(p, _)| PathBuf::from(p))
        .chain([Registry::at(REGISTRY_DIR).host_lock_path()])
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .collect();
    let inputs = InstallInputs {
        os: HostOs::current(),
        exe,
        exe_sha256,
        installed_sha256: sha256_of(installed),
        installed_caps: privileged::has_installed_caps(installed).unwrap_or(false),
        record: read_record()?,
        existing,
        user: user.job.clone(),
        force: a.force,
    };
    let plan = install::install_plan(&inputs)?;
    if a.dry_run {
        output::data(plan.to_string());
        print_checks(&user);
        return Ok(0);
    }
    let report = host::apply(&plan, false)?;
    for step in &report.steps {
        output::info(format!("{:?}: {}", step.outcome, step.action));
    }
    output::info(format!(
        "devbox is installed as {INSTALLED_BINARY}: every user runs machines with it, \
         without sudo."
    ));
    print_checks(&user);
    Ok(0)
}

fn uninstall(a: &SystemArgs) -> Result<i32> {
    let Some(record) = read_record()? else {
        output::info(format!(
            "Nothing to uninstall: {RECORD_PATH} does not exist (devbox was not set up with \
             `system install`)."
        ));
        return Ok(0);
    };
    let registry = Registry::at(REGISTRY_DIR);
    let leases: Vec<u8> = if registry.leases_dir().is_dir() {
        registry.list()?.iter().map(|l| l.index).collect()
    } else {
        Vec::new()
    };
    let installed = sha256_of(Path::new(INSTALLED_BINARY));
    let (plan, kept) = install::uninstall_plan(&record, installed.as_deref(), &leases, a.force)?;
    if a.dry_run {
        output::data(plan.to_string());
        for n in &kept.notes {
            output::info(format!("note: {n}"));
        }
        return Ok(0);
    }
    let report = host::apply(&plan, false)?;
    for step in &report.steps {
        output::info(format!("{:?}: {}", step.outcome, step.action));
    }
    for n in &kept.notes {
        output::info(format!("note: {n}"));
    }
    Ok(0)
}

fn status(store: &Store) -> Result<i32> {
    let installed = Path::new(INSTALLED_BINARY);
    let record = read_record().ok().flatten();
    let binary = match sha256_of(installed) {
        None => "not installed".to_owned(),
        Some(sha) => {
            let ours = record
                .as_ref()
                .and_then(|r| r.binary_sha256.as_deref())
                .is_some_and(|r| r == sha);
            let caps = privileged::has_installed_caps(installed).unwrap_or(false);
            format!(
                "{}{}",
                if ours {
                    "installed by `system install`"
                } else {
                    "present, not installed by `system install`"
                },
                match (HostOs::current(), caps) {
                    (HostOs::Linux, true) => ", with cap_net_admin,cap_net_bind_service+ep",
                    (HostOs::Linux, false) => ", WITHOUT its capabilities",
                    (HostOs::Macos, _) => "",
                }
            )
        }
    };
    output::data(format!("binary:   {INSTALLED_BINARY}: {binary}"));
    let registry = Registry::system();
    let reg = match registry.check() {
        Ok(()) => {
            let leases = registry.list()?;
            let uid = crate::net::lease::real_uid();
            format!(
                "ok ({} lease(s), {} yours)",
                leases.len(),
                leases.iter().filter(|l| l.owner == uid).count()
            )
        }
        Err(e) => e.to_string(),
    };
    output::data(format!("registry: {}: {reg}", registry.dir().display()));
    if let Some(r) = &record {
        for u in &r.units {
            let there = u.path.exists();
            output::data(format!(
                "boot job: {} ({})",
                u.path.display(),
                if there { "present" } else { "missing" }
            ));
        }
    }
    print_checks(&for_user(store)?);
    Ok(0)
}

/// The checks for what `system install` cannot change itself, each with its fix.
fn checks(user: &ForUser) -> Vec<Check> {
    let mode_of = |p: &str| std::fs::metadata(p).ok().map(|m| m.permissions().mode());
    let mut out = Vec::new();
    if HostOs::current() == HostOs::Linux {
        out.push(install::tun_check(mode_of("/dev/net/tun")));
        let kvm = std::fs::metadata("/dev/kvm")
            .ok()
            .map(|m| (m.gid(), m.permissions().mode()));
        out.push(install::kvm_check(
            hypervisor::probe::kvm().usable,
            kvm,
            &user.name,
            user.job.uid,
            &user.groups,
        ));
    }
    out.push(install::resolver_check(
        HostOs::current(),
        resolver::resolved_active(),
    ));
    out
}

fn print_checks(user: &ForUser) {
    for c in checks(user) {
        match &c {
            Check::Fix { .. } => output::warn(c.to_string()),
            _ => output::info(c.to_string()),
        }
    }
}
