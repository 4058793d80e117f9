//! Linux: the drivers this host has (kvm and qemu), and process plumbing for driver
//! children.

use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::hypervisor::{Hypervisor, HypervisorError, probe, qemu};
use crate::machine::Driver;

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

/// The driver to suggest when another is unavailable, and how.
pub const FALLBACK_DRIVER: Driver = Driver::Qemu;
pub const FALLBACK_HINT: &str =
    "create the machine with `--driver qemu` (it uses KVM acceleration where KVM works)";

/// The driver for `driver` on a Linux host.
pub fn for_driver(driver: Driver) -> Result<Box<dyn Hypervisor>, HypervisorError> {
    let kvm = probe::kvm();
    match driver {
        Driver::Qemu => Ok(Box::new(qemu::Qemu::new(&kvm))),
        Driver::Kvm if kvm.usable => Ok(Box::new(super::super::kvm::Kvm::new(&kvm))),
        Driver::Kvm => Err(HypervisorError::Unavailable {
            driver,
            reason: kvm.reason,
        }),
        Driver::Vz => Err(HypervisorError::Unavailable {
            driver,
            reason: "Virtualization.framework exists only on macOS".into(),
        }),
        // Handled by `hypervisor::for_driver`, the same on every host.
        Driver::Ssh | Driver::Fake => super::super::for_driver(driver),
    }
}

/// The driver a new machine gets on a Linux host when `--driver` is not given, and why:
/// the in-process KVM driver where KVM can boot a stock kernel, QEMU with TCG otherwise.
pub fn default_driver() -> (Driver, String) {
    let kvm = probe::kvm();
    if kvm.usable {
        return (Driver::Kvm, format!("kvm: {}", kvm.reason));
    }
    (Driver::Qemu, format!("qemu with TCG: {}", kvm.reason))
}
