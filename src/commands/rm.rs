//! `devbox rm NAME`: remove a stopped machine (or stop it first with `--force`), and give its
//! network's lease back to the host-wide registry.

use anyhow::Result;

use crate::cli::RmArgs;
use crate::machine::Store;
use crate::machine::lock::lock_machine;
use crate::machine::state::observe;
use crate::net::lease::{Registry, real_uid};
use crate::output;
use crate::supervisor::client::ClientError;

pub fn run(store: &Store, a: &RmArgs) -> Result<i32> {
    let dir = store.machine(&a.name)?;
    match fs_err::metadata(&dir.path) {
        Ok(m) if m.is_dir() => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Err(e.into()),
        _ => {
            return Err(crate::machine::store::StoreError::NotFound {
                name: a.name.clone(),
            }
            .into());
        }
    }
    let lock = lock_machine(&dir)?;
    // A broken machine.yaml must not prevent removal: state does not need the spec.
    let obs = observe(&dir)?;
    if obs.state.is_live() {
        if !a.force {
            return Err(ClientError::Running {
                name: a.name.clone(),
            }
            .into());
        }
        super::stop::stop_locked(&dir, false)?;
    }
    let canonical = fs_err::canonicalize(&dir.path)?;
    // Rename first so a half-finished removal never looks like a machine.
    let trash = store
        .machines_dir()
        .join(format!(".removing-{}-{}", a.name, std::process::id()));
    fs_err::rename(&dir.path, &trash)?;
    drop(lock);
    fs_err::remove_dir_all(&trash)?;
    release_leases(&canonical)?;
    output::info(format!("Removed machine {}.", a.name));
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
