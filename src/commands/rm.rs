//! `devbox rm NAME`: remove a stopped machine (or stop it first with `--force`).

use anyhow::Result;

use crate::cli::RmArgs;
use crate::machine::Store;
use crate::machine::lock::lock_machine;
use crate::machine::state::observe;
use crate::output;
use crate::supervisor::client::ClientError;

pub fn run(store: &Store, a: &RmArgs) -> Result<i32> {
    let dir = store.machine(&a.name)?;
    if !dir.path.is_dir() {
        return Err(crate::machine::store::StoreError::NotFound {
            name: a.name.clone(),
        }
        .into());
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
    // Rename first so a half-finished removal never looks like a machine.
    let trash = store
        .machines_dir()
        .join(format!(".removing-{}-{}", a.name, std::process::id()));
    fs_err::rename(&dir.path, &trash)?;
    drop(lock);
    fs_err::remove_dir_all(&trash)?;
    output::info(format!("Removed machine {}.", a.name));
    Ok(0)
}
