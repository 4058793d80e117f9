//! The vz driver (macOS): Virtualization.framework runs the machine inside the supervisor
//! process. What is configured, and why, is decided by pure code in
//! [`crate::hypervisor::vz_plan`]; this module only turns that plan into VZ objects
//! (`config`), runs the machine (`machine`) and listens for the guest's report (`vsock`).
//!
//! Threads: each machine has a private serial dispatch queue that owns the
//! `VZVirtualMachine`; every call on it and every delegate callback runs there. Each guest
//! report connection is read on a short-lived thread of its own. The console is a pipe read
//! by a `devbox-console` thread into the size-capped `serial.log` (`console_log`).
//!
//! Network: the NIC is attached to VZ's NAT (`VZNATNetworkDeviceAttachment`, vmnet shared
//! mode, host side `bridge100`). The supervisor gives it no [`BootConfig::tap`] (macOS has no
//! TAP devices), and it does not use [`BootConfig::monitor_socket`]; the guest's address comes
//! from its report ([`RunningVm::take_guest_reports`]).
//!
//! The process must be signed with the `com.apple.security.virtualization` entitlement
//! (assets/macos/README.md); without it validation fails with a typed error whose hint is the
//! `codesign` command.

mod config;
mod machine;
mod nserror;
mod vsock;

use std::io::Read;
use std::path::{Path, PathBuf};

use objc2_virtualization::VZVirtualMachine;

use super::console_log::{self, ConsoleLog};
use super::vz_plan::{self, KERNEL_HEAD_LEN, VzError};
use super::{Accel, BootConfig, Hypervisor, HypervisorError, RunningVm};
use crate::machine::Driver;

pub struct Vz {
    accel: Accel,
}

impl Vz {
    pub fn new() -> Vz {
        Vz {
            accel: Accel {
                name: "vz",
                reason: "Virtualization.framework (hardware virtualization through macOS)".into(),
            },
        }
    }
}

impl Default for Vz {
    fn default() -> Vz {
        Vz::new()
    }
}

impl Hypervisor for Vz {
    fn driver(&self) -> Driver {
        Driver::Vz
    }

    fn accel(&self) -> &Accel {
        &self.accel
    }

    fn preflight(&self) -> Result<(), HypervisorError> {
        // SAFETY: a class property without preconditions.
        if !unsafe { VZVirtualMachine::isSupported() } {
            return Err(VzError::NotSupported {
                reason: "VZVirtualMachine.isSupported is false".into(),
            }
            .into());
        }
        Ok(())
    }

    fn boot(&self, cfg: BootConfig) -> Result<Box<dyn RunningVm>, HypervisorError> {
        self.preflight()?;
        let head = kernel_head(&cfg.kernel)?;
        let plan = vz_plan::plan(&cfg, std::env::consts::ARCH, &head)?;
        // The guest's console goes to a pipe whose other end is copied into the capped log
        // (`console_log`): VZ's own file attachment appends without bound. The pump ends when
        // VZ releases the write end, with the machine.
        let log = ConsoleLog::open(&plan.console_log)?;
        let on_error = console_log::report_to_supervisor(plan.console_log.clone());
        let (console, _pump) = console_log::pipe(log, on_error)?;
        let binary = current_binary();
        let config = config::build(&plan, console)?;
        // SAFETY: validation only reads the configuration, which is fully set up.
        unsafe { config.validateWithError() }.map_err(|e| {
            vz_plan::classify(
                "validating the machine configuration",
                nserror::parts(&e),
                &binary,
            )
        })?;
        let vm = machine::start(&cfg.name, config, plan.report_port, &binary)?;
        Ok(Box::new(vm))
    }
}

/// The first bytes of the kernel, for the format check.
fn kernel_head(path: &Path) -> Result<Vec<u8>, VzError> {
    let read = || -> std::io::Result<Vec<u8>> {
        let mut head = Vec::with_capacity(KERNEL_HEAD_LEN);
        std::fs::File::open(path)?
            .take(KERNEL_HEAD_LEN as u64)
            .read_to_end(&mut head)?;
        Ok(head)
    };
    read().map_err(|source| VzError::KernelRead {
        path: path.to_owned(),
        source,
    })
}

/// This executable, as the codesign hint should name it.
fn current_binary() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("devbox"))
}
