//! Hypervisor drivers behind one lifecycle-level seam: boot a machine, ask it to stop, kill
//! it, wait for it. vCPUs, memory and interrupts stay inside each driver, because
//! Virtualization.framework exposes none of them (Lima's driver interface draws the same line).
//!
//! - `kvm` (Linux hosts): the in-process VMM on the rust-vmm crates.
//! - `qemu` (Linux hosts): an external `qemu-system-x86_64` child, KVM-accelerated where the
//!   probe says KVM can boot a stock kernel, TCG otherwise.
//! - `vz` (macOS hosts): Virtualization.framework inside the supervisor process; its plan
//!   (`vz_plan`) is pure and tested everywhere.
//! - `fake` (devbox's own test builds only, cargo feature `fake-hypervisor`): no guest at all;
//!   it reports itself ready, so the tier-2 tests run the supervisor's whole lifecycle.
//! - `probe`: decides whether this host's KVM can run a stock guest kernel.
//! - `guest_report`: the line a guest sends over vsock to report its address.
//! - `console_log`: the guest's console log, size-capped and rotated; every driver (kvm, qemu,
//!   vz, fake) writes the console through it.
//!
//! Which drivers exist on which host, and the default one, is in `sys/`. How drivers differ
//! for everything around them (TAP or not, how the guest is addressed and reached, shares) is
//! [`Hypervisor::capabilities`], the table in `machine::driver`.
//!
//! The driver does not own the disks' contents: the supervisor creates the config drive and
//! hands it over in [`BootConfig`]. For a driver whose link is [`Link::Tap`] it also creates
//! the TAP device ([`BootConfig::tap`] is `Some`); the vz driver puts the NIC on VZ's NAT
//! itself (`None`), and the guest reports its address over vsock.

pub mod console_log;
#[cfg(feature = "fake-hypervisor")]
pub mod fake;
pub mod guest_report;
#[cfg(target_os = "linux")]
pub mod kvm;
pub mod probe;
#[cfg(target_os = "linux")]
pub mod qemu;
mod sys;
#[cfg(target_os = "macos")]
pub mod vz;
pub mod vz_plan;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::mpsc::Receiver;

use crate::hint::Hint;
pub use crate::machine::driver::{Addressing, Capabilities, Driver, GuestAccess, Link};
use guest_report::{GuestReport, ReportError};

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
    #[error("the {driver} driver needs the machine's TAP device, and the supervisor gave none")]
    NoTap { driver: Driver },
    #[error(transparent)]
    Vz(#[from] vz_plan::VzError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Hint for HypervisorError {
    fn hint(&self) -> Option<String> {
        match self {
            HypervisorError::Unavailable { driver, .. } if *driver != sys::FALLBACK_DRIVER => {
                Some(sys::FALLBACK_HINT.into())
            }
            HypervisorError::MissingProgram { package, .. } => {
                Some(format!("install it: sudo apt-get install {package}"))
            }
            HypervisorError::Vz(e) => e.hint(),
            HypervisorError::NoTap { .. } => Some(
                "this is a devbox bug (the machine's driver and its network setup disagree); \
                 please report it with `devbox inspect NAME`"
                    .into(),
            ),
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
    /// The image's root filesystem (`image::ROOT_IMAGE`), attached read-only with the serial
    /// `image::ROOT_DISK_SERIAL`; `None` for images of the earlier layout, whose initramfs is
    /// the whole system.
    pub root_image: Option<PathBuf>,
    pub data_disk: PathBuf,
    pub config_drive: PathBuf,
    /// An open TAP device (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) the guest's NIC uses, with
    /// close-on-exec cleared so a driver's child process (QEMU) inherits it. Given to the
    /// drivers whose link is [`Link::Tap`] (qemu, kvm); `None` for the others.
    pub tap: Option<OwnedFd>,
    pub mac: String,
    /// A second NIC for the guest's NFS client alone, on the machine's share link
    /// (`net::ShareLink`), handed over like `tap`; `None` when the machine has no shares.
    /// The guest finds it by its MAC address.
    pub share_nic: Option<GuestNic>,
    /// Where the guest's serial console goes, through [`console_log::ConsoleLog`] (capped).
    pub serial_log: PathBuf,
    /// Driver-private control endpoint (QEMU's QMP socket).
    pub monitor_socket: PathBuf,
}

/// A NIC on a TAP device of its own.
#[derive(Debug)]
pub struct GuestNic {
    /// The TAP device's descriptor, inheritable as [`BootConfig::tap`] is.
    pub tap: OwnedFd,
    pub mac: String,
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
    /// The guest's reports ([`guest_report`]), for drivers whose guest address the host does
    /// not choose (vz); `None` for the others, whose guest has the machine spec's address.
    /// The receiver is handed out once.
    fn take_guest_reports(&mut self) -> Option<Receiver<Result<GuestReport, ReportError>>> {
        None
    }
    /// The guest's readiness, for drivers whose guest the supervisor does not reach
    /// ([`GuestAccess::DriverReport`]): one message, the Docker version on success or why
    /// the guest will not be ready. `None` for the others, whose readiness the supervisor
    /// reads over SSH. Handed out once.
    fn take_ready_report(&mut self) -> Option<Receiver<Result<String, String>>> {
        None
    }
}

/// A hypervisor driver.
pub trait Hypervisor {
    fn driver(&self) -> Driver;
    /// What the driver needs from the host and how its guest is reached.
    fn capabilities(&self) -> Capabilities {
        self.driver().capabilities()
    }
    fn accel(&self) -> &Accel;
    /// Checks that the driver can run here (programs present, device usable), before any
    /// resource is created.
    fn preflight(&self) -> Result<(), HypervisorError>;
    fn boot(&self, cfg: BootConfig) -> Result<Box<dyn RunningVm>, HypervisorError>;
}

/// The driver for `driver` on this host.
pub fn for_driver(driver: Driver) -> Result<Box<dyn Hypervisor>, HypervisorError> {
    match driver {
        Driver::Fake => fake_driver(),
        Driver::Ssh => Err(HypervisorError::Unavailable {
            driver,
            reason: "the ssh driver adopts an existing host and boots no virtual machine".into(),
        }),
        _ => sys::for_driver(driver),
    }
}

/// The fake driver exists in devbox's own test builds only: `cargo test` turns the
/// `fake-hypervisor` feature on through the package's dev-dependency on itself, so a
/// release binary (or any plain `cargo build`) refuses `--driver fake` and a machine.yaml
/// that names it.
#[cfg(feature = "fake-hypervisor")]
fn fake_driver() -> Result<Box<dyn Hypervisor>, HypervisorError> {
    Ok(Box::new(fake::Fake::new()))
}

#[cfg(not(feature = "fake-hypervisor"))]
fn fake_driver() -> Result<Box<dyn Hypervisor>, HypervisorError> {
    Err(HypervisorError::Unavailable {
        driver: Driver::Fake,
        reason: "the fake driver is built only into devbox's own test binaries (cargo feature \
                 `fake-hypervisor`)"
            .into(),
    })
}

/// The driver a new machine gets when `--driver` is not given, and why.
pub fn default_driver() -> (Driver, String) {
    sys::default_driver()
}
