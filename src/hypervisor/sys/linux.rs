//! Linux-only process plumbing for driver children.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the child get SIGKILL when the thread that spawned it dies, so a supervisor killed
/// with SIGKILL never leaves a guest running behind it (and the TAP device, whose last fd the
/// guest holds, disappears with it). Spawn from a thread that lives as long as the machine.
pub fn kill_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls prctl(2) and getppid(2),
    // both async-signal-safe; it allocates nothing and touches no locks.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() == 1 {
                return Err(std::io::Error::other(
                    "parent exited before the child started",
                ));
            }
            Ok(())
        });
    }
}
