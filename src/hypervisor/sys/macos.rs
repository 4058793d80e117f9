//! macOS: the vz driver is the only one. The qemu driver is Linux-only as it stands
//! (`qemu-system-x86_64` with KVM or TCG, and `PR_SET_PDEATHSIG` to tie QEMU's life to the
//! supervisor's, which macOS lacks).

use crate::hypervisor::vz::Vz;
use crate::hypervisor::{Hypervisor, HypervisorError};
use crate::machine::Driver;

/// The driver to suggest when another is unavailable, and how.
pub const FALLBACK_DRIVER: Driver = Driver::Vz;
pub const FALLBACK_HINT: &str = "create the machine with `--driver vz`";

/// The driver for `driver` on a macOS host.
pub fn for_driver(driver: Driver) -> Result<Box<dyn Hypervisor>, HypervisorError> {
    match driver {
        Driver::Vz => Ok(Box::new(Vz::new())),
        Driver::Qemu => Err(HypervisorError::Unavailable {
            driver,
            reason: "the qemu driver runs on Linux hosts only; use the vz driver".into(),
        }),
        Driver::Kvm => Err(HypervisorError::Unavailable {
            driver,
            reason: "KVM exists only on Linux; use the vz driver".into(),
        }),
        // Handled by `hypervisor::for_driver`, the same on every host.
        Driver::Ssh | Driver::Fake => super::super::for_driver(driver),
    }
}

/// The driver a new machine gets on a macOS host when `--driver` is not given, and why.
pub fn default_driver() -> (Driver, String) {
    (
        Driver::Vz,
        "vz: Virtualization.framework is the native hypervisor on macOS".to_owned(),
    )
}
