//! Hypervisor drivers behind one lifecycle-level seam: boot a machine, ask it to stop, kill
//! it, wait for it. vCPUs, memory and interrupts stay inside each driver, because
//! Virtualization.framework exposes none of them (Lima's driver interface draws the same line).
//!
//! - `qemu`: an external `qemu-system-x86_64` child, KVM-accelerated where the probe says KVM
//!   can boot a stock kernel, TCG otherwise.
//! - `probe`: decides whether this host's KVM can run a stock guest kernel.
//!
//! The driver does not own the network device or the disks' contents: the supervisor creates
//! the TAP device and the config drive and hands them over in [`BootConfig`].

#[cfg(target_os = "linux")]
pub mod kvm;
pub mod probe;
pub mod qemu;
mod sys;

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crate::machine::Driver;

#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error("driver {driver} cannot run on this host: {reason}")]
    Unavailable { driver: Driver, reason: String },
    #[error("{program} was not found on PATH")]
    MissingProgram { program: String, package: String },
    #[error("starting {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to QEMU's monitor at {path}")]
    Monitor {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl HypervisorError {
    pub fn hint(&self) -> Option<String> {
        match self {
            HypervisorError::Unavailable { driver, .. } if *driver != Driver::Qemu => Some(
                "create the machine with `--driver qemu` (it uses KVM acceleration where KVM works)"
                    .into(),
            ),
            HypervisorError::MissingProgram { package, .. } => {
                Some(format!("install it: sudo apt-get install {package}"))
            }
            _ => None,
        }
    }
}

/// CPU acceleration a driver uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accel {
    /// `kvm`, `tcg` or `vz`.
    pub name: &'static str,
    /// Why, in words, e.g. "/dev/kvm is kvm_pvm (software-nested): stock kernels fail under it".
    pub reason: String,
}

/// Everything a driver needs to boot a machine.
#[derive(Debug)]
pub struct BootConfig {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub data_disk: PathBuf,
    pub config_drive: PathBuf,
    /// An open TAP device (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) the guest's NIC uses, with
    /// close-on-exec cleared so a driver's child process (QEMU) inherits it.
    pub tap: OwnedFd,
    pub mac: String,
    /// Where the guest's serial console goes.
    pub serial_log: PathBuf,
    /// Driver-private control endpoint (QEMU's QMP socket).
    pub monitor_socket: PathBuf,
}

/// How a machine's guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmExit {
    pub description: String,
}

/// A booted machine.
pub trait RunningVm: Send {
    /// The process running the guest, when it is a separate process.
    fn pid(&self) -> Option<u32>;
    /// Asks the guest to power off (ACPI power button). Returns at once.
    fn request_stop(&mut self) -> Result<(), HypervisorError>;
    /// Ends the machine now.
    fn kill(&mut self) -> Result<(), HypervisorError>;
    /// `Some` once the machine has ended.
    fn try_wait(&mut self) -> Result<Option<VmExit>, HypervisorError>;
}

/// A hypervisor driver.
pub trait Hypervisor {
    fn driver(&self) -> Driver;
    fn accel(&self) -> &Accel;
    /// Checks that the driver can run here (programs present, device usable), before any
    /// resource is created.
    fn preflight(&self) -> Result<(), HypervisorError>;
    fn boot(&self, cfg: BootConfig) -> Result<Box<dyn RunningVm>, HypervisorError>;
}

/// The driver for `driver` on this host.
pub fn for_driver(driver: Driver) -> Result<Box<dyn Hypervisor>, HypervisorError> {
    let kvm = probe::kvm();
    match driver {
        Driver::Qemu => Ok(Box::new(qemu::Qemu::new(&kvm))),
        #[cfg(target_os = "linux")]
        Driver::Kvm if kvm.usable => Ok(Box::new(kvm::Kvm::new(&kvm))),
        Driver::Kvm => Err(HypervisorError::Unavailable {
            driver,
            reason: if kvm.usable {
                "the in-process KVM driver exists only on Linux".into()
            } else {
                kvm.reason
            },
        }),
        Driver::Vz => Err(HypervisorError::Unavailable {
            driver,
            reason: "Virtualization.framework exists only on macOS".into(),
        }),
    }
}

/// The driver a new machine gets when `--driver` is not given, and why.
pub fn default_driver() -> (Driver, String) {
    let kvm = probe::kvm();
    if cfg!(target_os = "linux") && kvm.usable {
        return (Driver::Kvm, format!("kvm: {}", kvm.reason));
    }
    let why = if kvm.usable {
        "qemu with KVM acceleration (the in-process kvm driver runs only on Linux)".to_owned()
    } else {
        format!("qemu with TCG: {}", kvm.reason)
    };
    (Driver::Qemu, why)
}
