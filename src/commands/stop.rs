//! `devbox stop NAME…`: ask the supervisor to power the guest off (or kill it with `--force`)
//! and wait until the supervisor has torn everything down.

use anyhow::Result;

use crate::machine::lock::lock_machine;
use crate::machine::{MachineDir, Store};
use crate::output;
use crate::supervisor::client::{self, Stopped};

pub fn run(store: &Store, name: &str, force: bool) -> Result<i32> {
    let dir = store.existing(name)?;
    let _lock = lock_machine(&dir)?;
    stop_locked(&dir, force)
}

/// Stops a machine whose command lock the caller holds.
pub fn stop_locked(dir: &MachineDir, force: bool) -> Result<i32> {
    let mut progress = None;
    let stopped = client::stop(
        dir,
        force,
        &mut || progress = Some(output::Progress::new(&format!("Stopping {}", dir.name))),
        &mut |warning| output::warn(warning),
    );
    match stopped {
        Ok(Stopped::Already) => {
            output::info(format!("Machine {} is already stopped.", dir.name));
        }
        Ok(Stopped::WasCrashed) => output::info(format!(
            "Machine {} had crashed (its supervisor died); cleaned up what it left.",
            dir.name
        )),
        Ok(Stopped::Now) => {
            if let Some(p) = progress {
                p.finish(&format!("Machine {} stopped.", dir.name));
            }
        }
        Err(e) => {
            if let Some(p) = progress {
                p.abandon();
            }
            return Err(e);
        }
    }
    Ok(0)
}
