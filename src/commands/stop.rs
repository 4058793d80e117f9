//! `devbox stop NAME`: ask the supervisor to power the guest off (or kill it with `--force`)
//! and wait until the supervisor has torn everything down.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::CommandError;
use crate::cli::StopArgs;
use crate::machine::lock::{lock_machine, supervisor_alive};
use crate::machine::state::observe;
use crate::machine::{MachineDir, MachineState, Store};
use crate::output;
use crate::supervisor::control::{Request, request};

/// Longer than the supervisor's own graceful-stop limit, so it normally finishes first.
const STOP_LIMIT: Duration = Duration::from_secs(90);

pub fn run(store: &Store, a: &StopArgs) -> Result<i32> {
    let dir = store.existing(&a.name)?;
    let _lock = lock_machine(&dir)?;
    stop_locked(&dir, a.force)
}

/// Stops a machine whose command lock the caller holds.
pub fn stop_locked(dir: &MachineDir, force: bool) -> Result<i32> {
    let obs = observe(dir)?;
    match obs.state {
        MachineState::Stopped | MachineState::Failed => {
            output::info(format!("Machine {} is already stopped.", dir.name));
            return Ok(0);
        }
        MachineState::Crashed => {
            super::start::cleanup_stale(dir);
            output::info(format!(
                "Machine {} had crashed (its supervisor died); cleaned up what it left.",
                dir.name
            ));
            return Ok(0);
        }
        _ => {}
    }
    let progress = output::Progress::new(&format!("Stopping {}", dir.name));
    if let Err(e) = request(&dir.control_socket_path(), &Request::Stop { force }) {
        output::warn(format!("the supervisor did not answer ({e}); killing it"));
        kill_supervisor(dir);
    }
    let started = Instant::now();
    while supervisor_alive(dir)? {
        if started.elapsed() > STOP_LIMIT {
            kill_supervisor(dir);
            progress.abandon();
            return Err(CommandError::StopTimeout {
                name: dir.name.clone(),
                seconds: STOP_LIMIT.as_secs(),
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    progress.finish(&format!("Machine {} stopped.", dir.name));
    Ok(0)
}

/// SIGKILL to the supervisor; its guest process dies with it (parent-death signal).
fn kill_supervisor(dir: &MachineDir) {
    let Some(pid) = observe(dir)
        .ok()
        .and_then(|o| o.file)
        .map(|f| f.supervisor_pid)
    else {
        return;
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while supervisor_alive(dir).unwrap_or(false) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    super::start::cleanup_stale(dir);
}
