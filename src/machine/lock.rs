//! Per-machine locks (flock(2), released by the kernel when the holder dies).
//!
//! - `machine.lock`: held by a CLI command while it changes a machine (create excepted,
//!   which is protected by its atomic rename), so two `start`s cannot race.
//! - `supervisor.lock`: held exclusively by the machine's supervisor for its whole life. A free
//!   lock with a state file that says "running" means the supervisor crashed.

use std::path::Path;

use fs_err as fs;
use nix::fcntl::{Flock, FlockArg};

use super::store::MachineDir;
use crate::hint::Hint;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another devbox command is working on machine {name:?} right now")]
    Busy { name: String },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Hint for LockError {
    fn hint(&self) -> Option<String> {
        match self {
            LockError::Busy { .. } => Some("wait for it to finish, then try again".into()),
            LockError::Io(_) => None,
        }
    }
}

/// An exclusive lock on a machine, held until dropped.
pub struct MachineLock {
    _lock: Flock<std::fs::File>,
}

fn open_lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    Ok(f.into_parts().0)
}

fn try_lock(path: &Path, arg: FlockArg) -> std::io::Result<Option<Flock<std::fs::File>>> {
    let file = open_lock_file(path)?;
    match Flock::lock(file, arg) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(std::io::Error::new(
            std::io::Error::from(e).kind(),
            format!("locking {}: {e}", path.display()),
        )),
    }
}

/// Takes the machine's command lock without waiting.
pub fn lock_machine(dir: &MachineDir) -> Result<MachineLock, LockError> {
    match try_lock(&dir.lock_path(), FlockArg::LockExclusiveNonblock)? {
        Some(l) => Ok(MachineLock { _lock: l }),
        None => Err(LockError::Busy {
            name: dir.name.clone(),
        }),
    }
}

/// Held by a live supervisor.
pub struct SupervisorLock {
    _lock: Flock<std::fs::File>,
}

/// Takes the supervisor lock, retrying for a moment (a CLI may be probing it right now).
pub fn lock_supervisor(dir: &MachineDir) -> Result<SupervisorLock, LockError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        if let Some(l) = try_lock(&dir.supervisor_lock_path(), FlockArg::LockExclusiveNonblock)? {
            return Ok(SupervisorLock { _lock: l });
        }
        if std::time::Instant::now() > deadline {
            return Err(LockError::Busy {
                name: dir.name.clone(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Whether a supervisor process holds the machine's supervisor lock.
pub fn supervisor_alive(dir: &MachineDir) -> std::io::Result<bool> {
    if !dir.supervisor_lock_path().exists() {
        return Ok(false);
    }
    // A shared probe: it fails only while the supervisor holds its exclusive lock.
    Ok(try_lock(&dir.supervisor_lock_path(), FlockArg::LockSharedNonblock)?.is_none())
}
