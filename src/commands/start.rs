//! `devbox start NAME`: spawn the machine's supervisor detached and wait until it reports the
//! machine ready (SSH answers and `docker info` works), showing its progress.

use std::time::Duration;

use anyhow::Result;

use crate::cli::StartArgs;
use crate::machine::lock::{LockError, lock_machine};
use crate::machine::state::observe;
use crate::machine::{MachineDir, MachineState, Store};
use crate::output;
use crate::supervisor::client;

pub fn run(store: &Store, a: &StartArgs) -> Result<i32> {
    let dir = store.existing(&a.name)?;
    let spec = dir.load_spec()?;
    let _lock = lock_machine(&dir)?;

    match observe(&dir)?.state {
        MachineState::Running => {
            output::info(format!("Machine {} is already running.", a.name));
            return Ok(0);
        }
        MachineState::Starting | MachineState::Stopping => {
            return Err(LockError::Busy {
                name: a.name.clone(),
            }
            .into());
        }
        MachineState::Crashed => {
            output::warn(format!(
                "machine {} was left running by a supervisor that died; cleaning up",
                a.name
            ));
            client::cleanup_stale(&dir);
        }
        MachineState::Stopped | MachineState::Failed => {}
    }

    client::preflight(store, &dir, &spec)?;
    client::spawn(store, &dir, a.timeout)?;
    let mut progress = output::Progress::new(&format!("Starting {}", dir.name));
    let limit = Duration::from_secs(a.timeout + 10);
    match client::wait_ready(&dir, limit, &mut |step| {
        progress.set(&format!("Starting {}: {step}", dir.name))
    }) {
        Ok(ready) => {
            progress.finish(&format!(
                "Machine {} is running ({}, {:.1} s). Try: devbox ssh {} -- docker info",
                dir.name,
                ready.accel,
                ready.elapsed.as_secs_f64(),
                dir.name
            ));
            Ok(0)
        }
        Err(e) => {
            progress.abandon();
            show_logs(&dir);
            Err(e)
        }
    }
}

/// The ends of the console and supervisor logs, before the error that says why.
fn show_logs(dir: &MachineDir) {
    let tail = client::console_tail(dir, 25);
    if !tail.is_empty() {
        output::info(format!(
            "Last lines of the console ({}):",
            dir.serial_log_path().display()
        ));
        output::info(&tail);
    }
    let sup = client::supervisor_log_tail(dir, 5);
    if !sup.is_empty() {
        output::info(format!(
            "Last lines of {}:",
            dir.supervisor_log_path().display()
        ));
        output::info(&sup);
    }
}
