//! `devbox rm NAME… | --all`: remove stopped machines (or stop them first with `--force`),
//! give each network's lease back to the host-wide registry, and remove each Docker context.
//! On a terminal it asks first (`-y` skips); without a terminal it needs `-y`, so a script
//! never deletes a disk by accident.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;

use crate::cli::RmArgs;
use crate::hint::Hint;
use crate::machine::Store;
use crate::machine::lock::lock_machine;
use crate::machine::state::observe;
use crate::net::lease::{Registry, real_uid};
use crate::output;
use crate::supervisor::client::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum RmError {
    #[error("not removing {names} without confirmation: stdin is not a terminal to ask on")]
    NoTerminal { names: String },
}

impl Hint for RmError {
    fn hint(&self) -> Option<String> {
        match self {
            RmError::NoTerminal { names } => {
                Some(format!("confirm with -y: `devbox rm -y {names}`"))
            }
        }
    }
}

pub fn run(store: &Store, a: &RmArgs) -> Result<i32> {
    let names = super::resolve(store, &a.machines)?;
    if names.is_empty() {
        output::info("No machines.");
        return Ok(0);
    }
    // Refused anyway: say so before asking.
    if !a.force {
        for name in &names {
            let dir = store.machine(name)?;
            if dir.path.is_dir() && observe(&dir)?.state.is_live() {
                return Err(ClientError::Running { name: name.clone() }.into());
            }
        }
    }
    if !a.yes && !confirm(&names)? {
        output::info("Nothing removed.");
        return Ok(1);
    }
    super::each_name(&names, |name| remove(store, name, a.force, a.purge))
}

/// Asks on the terminal whether to remove `names` (yes only for `y` or `yes`).
fn confirm(names: &[String]) -> Result<bool> {
    let list = names.join(" ");
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(RmError::NoTerminal { names: list }.into());
    }
    let what = match names {
        [one] => format!("machine {one}"),
        _ => format!("machines {list}"),
    };
    eprint!("Remove {what} and its disk and keys? This cannot be undone. [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

fn remove(store: &Store, name: &str, force: bool, purge: bool) -> Result<i32> {
    let dir = store.machine(name)?;
    match fs_err::metadata(&dir.path) {
        Ok(m) if m.is_dir() => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err(e.into()),
        _ => {
            return Err(crate::machine::store::StoreError::NotFound {
                name: name.to_owned(),
            }
            .into());
        }
    }
    let lock = lock_machine(&dir)?;
    // A broken machine.yaml must not prevent removal: state does not need the spec.
    let obs = observe(&dir)?;
    if obs.state.is_live() && !force {
        return Err(ClientError::Running {
            name: name.to_owned(),
        }
        .into());
    }
    // A swarm member leaves (while its engine still runs) and is struck off the node list.
    super::swarm::forget_member(store, &dir);
    if obs.state.is_live() {
        if !force {
            return Err(ClientError::Running {
                name: name.to_owned(),
            }
            .into());
        }
        super::stop::stop_locked(&dir, false)?;
    }
    if purge {
        // First: a host that cannot be reached keeps the machine, to try again.
        purge_host(&dir)?;
    }
    let canonical = fs_err::canonicalize(&dir.path)?;
    // Rename first so a half-finished removal never looks like a machine.
    let trash = store
        .machines_dir()
        .join(format!(".removing-{name}-{}", std::process::id()));
    fs_err::rename(&dir.path, &trash)?;
    drop(lock);
    fs_err::remove_dir_all(&trash)?;
    release_leases(&canonical)?;
    super::use_context::forget(name);
    output::info(format!("Removed machine {name}."));
    Ok(0)
}

/// Releases the caller's leases recorded for the machine directory `dir` (found by what the
/// lease says, so a broken `machine.yaml` does not keep a lease forever). No registry: nothing
/// to release.
fn release_leases(dir: &std::path::Path) -> Result<()> {
    let registry = Registry::system();
    if registry.check().is_err() {
        return Ok(());
    }
    let uid = real_uid();
    for l in registry.list()? {
        if l.owner == uid && l.info.as_ref().is_some_and(|i| i.dir == dir) {
            registry.release(l.index)?;
        }
    }
    Ok(())
}

/// `rm --purge` of a host adopted over SSH: its own daemon.json back, its engine restarted.
fn purge_host(dir: &crate::machine::MachineDir) -> Result<()> {
    let spec = dir.load_spec()?;
    let Some(r) = &spec.remote else {
        anyhow::bail!(
            "--purge: {} is a machine devbox boots, whose files are all here; `devbox rm` \
             removes them without it",
            spec.name
        );
    };
    let target = crate::supervisor::client::remote_target(dir, r)?;
    let conn = crate::ssh::Connection::connect(&target, std::time::Duration::from_secs(10))?;
    let facts = crate::remote::gather(&conn, std::time::Duration::from_secs(30))?;
    let settings = crate::remote::settings::HostSettings {
        conn: &conn,
        facts: &facts,
        host: &r.host,
        etc_docker: crate::remote::settings::ETC_DOCKER,
        timeout: std::time::Duration::from_secs(120),
    };
    if settings.restore()? {
        output::info(format!(
            "Put back {}'s own Docker settings and restarted its engine",
            r.host
        ));
    } else {
        output::info(format!("No settings of devbox's on {}", r.host));
    }
    Ok(())
}
