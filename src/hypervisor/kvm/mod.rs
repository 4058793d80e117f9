//! The in-process KVM driver (Linux): a small VMM on the rust-vmm crates.
//!
//! Shape (Firecracker / vmm-reference): [`vm::MachineConfig`] → [`vm::launch`] →
//! [`vm::KvmMachine`]. Threads per machine:
//! - one per vCPU (`devbox-vcpuN`): `KVM_RUN` and its exits (port I/O: serial, i8042, ACPI
//!   sleep/reset registers; MMIO: virtio-mmio registers);
//! - one event loop (`devbox-events`, `event-manager`): virtio queue ioeventfds, the TAP
//!   descriptor, the i8042 reset line and ACPI power events.
//!
//! The guest finds its devices through ACPI (RSDP/XSDT/FADT/MADT/DSDT, [`acpi`]): Debian's
//! `virtio_mmio` module knows no other way (research/vmm.md §0.4). A guest `poweroff`
//! (ACPI S5) or reboot (i8042 or ACPI reset) ends the machine; `request_stop` presses the
//! ACPI power button; `kill` stops the threads and frees RAM, the TAP and the disk files.
//!
//! Unsafe code is confined to this module; every block names its invariant.

pub mod acpi;
pub mod boot;
pub mod cpu;
pub mod devices;
mod event_loop;
pub mod layout;
mod run_state;
pub mod vm;

use super::console_log::ConsoleLog;
use super::probe::KvmProbe;
use super::{Accel, BootConfig, Hypervisor, HypervisorError, RunningVm};
use crate::machine::Driver;
use devices::virtio::block::BlockError;
use devices::virtio::net::parse_mac;

pub use vm::{DiskConfig, KvmMachine, MachineConfig, Payload, launch};

#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("KVM: {what}")]
    Kvm {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("/dev/kvm lacks a capability devbox needs: {0}")]
    MissingCapability(&'static str),
    #[error("{0}")]
    Config(String),
    #[error("allocating guest memory")]
    Memory(#[source] std::io::Error),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error(transparent)]
    Disk(#[from] BlockError),
    #[error("setting up the TAP device")]
    Tap(#[source] std::io::Error),
    #[error("opening the serial log {path}")]
    SerialLog {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(std::io::Error),
}

impl From<KvmError> for HypervisorError {
    fn from(e: KvmError) -> HypervisorError {
        HypervisorError::Unavailable {
            driver: Driver::Kvm,
            reason: error_chain(&e),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The KVM driver.
pub struct Kvm {
    accel: Accel,
}

impl Kvm {
    pub fn new(probe: &KvmProbe) -> Kvm {
        Kvm {
            accel: Accel {
                name: "kvm",
                reason: probe.reason.clone(),
            },
        }
    }

    /// The machine configuration for a supervisor's [`BootConfig`].
    pub fn machine_config(cfg: BootConfig) -> Result<MachineConfig, KvmError> {
        let mac_of = |text: &str| {
            parse_mac(text).ok_or_else(|| KvmError::Config(format!("bad MAC address {text:?}")))
        };
        let tap = cfg.tap.ok_or_else(|| {
            KvmError::Config(
                "the kvm driver needs the machine's TAP device, and the supervisor gave none"
                    .into(),
            )
        })?;
        let mut nets = vec![(tap, mac_of(&cfg.mac)?)];
        if let Some(nic) = cfg.share_nic {
            let mac = mac_of(&nic.mac)?;
            nets.push((nic.tap, mac));
        }
        let cpus = u8::try_from(cfg.cpus)
            .map_err(|_| KvmError::Config(format!("{} vCPUs is too many", cfg.cpus)))?;
        let log = ConsoleLog::open(&cfg.serial_log).map_err(|source| KvmError::SerialLog {
            path: cfg.serial_log.clone(),
            source,
        })?;
        let mut disks = vec![
            DiskConfig {
                path: cfg.config_drive,
                read_only: true,
                serial: "devbox-config".into(),
            },
            DiskConfig {
                path: cfg.data_disk,
                read_only: false,
                serial: "devbox-data".into(),
            },
        ];
        if let Some(root) = cfg.root_image {
            // Shared by every machine of the image: opened read-only, never written.
            disks.push(DiskConfig {
                path: root,
                read_only: true,
                serial: crate::image::ROOT_DISK_SERIAL.into(),
            });
        }
        Ok(MachineConfig {
            cpus,
            memory_bytes: cfg.memory_mib << 20,
            payload: Payload::Linux {
                kernel: cfg.kernel,
                initrd: cfg.initrd,
                cmdline: None,
            },
            disks,
            nets,
            rng: true,
            balloon: true,
            // Size-capped: the guest decides how much it prints (`console_log`).
            serial_out: Box::new(std::io::LineWriter::new(log)),
        })
    }
}

impl Hypervisor for Kvm {
    fn driver(&self) -> Driver {
        Driver::Kvm
    }
    fn accel(&self) -> &Accel {
        &self.accel
    }
    fn preflight(&self) -> Result<(), HypervisorError> {
        kvm_ioctls::Kvm::new().map_err(|source| KvmError::Kvm {
            what: "opening /dev/kvm",
            source,
        })?;
        Ok(())
    }
    fn boot(&self, cfg: BootConfig) -> Result<Box<dyn RunningVm>, HypervisorError> {
        let machine = launch(Self::machine_config(cfg)?)?;
        Ok(Box::new(machine))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::console_log::{MAX_BYTES, rotated_path};
    use std::io::Write;

    fn boot_config(dir: &std::path::Path, share_mac: Option<&str>) -> BootConfig {
        let null = || std::fs::File::open("/dev/null").unwrap().into();
        BootConfig {
            name: "dev".into(),
            cpus: 1,
            memory_mib: 256,
            kernel: "/k".into(),
            initrd: "/i".into(),
            root_image: None,
            data_disk: "/d".into(),
            config_drive: "/c".into(),
            tap: Some(null()),
            mac: "52:54:00:12:34:56".into(),
            share_nic: share_mac.map(|mac| crate::hypervisor::GuestNic {
                tap: null(),
                mac: mac.into(),
            }),
            serial_log: dir.join("serial.log"),
            monitor_socket: dir.join("qmp.sock"),
        }
    }

    #[test]
    fn the_share_link_is_a_second_nic_after_the_main_one() {
        let d = tempfile::tempdir().unwrap();
        let one = Kvm::machine_config(boot_config(d.path(), None)).unwrap();
        assert_eq!(one.nets.len(), 1);
        let two = Kvm::machine_config(boot_config(d.path(), Some("52:54:00:65:43:21"))).unwrap();
        let macs: Vec<[u8; 6]> = two.nets.iter().map(|(_, m)| *m).collect();
        assert_eq!(
            macs,
            [
                [0x52, 0x54, 0, 0x12, 0x34, 0x56],
                [0x52, 0x54, 0, 0x65, 0x43, 0x21]
            ]
        );
        assert!(Kvm::machine_config(boot_config(d.path(), Some("nope"))).is_err());
    }

    #[test]
    fn the_root_image_is_a_read_only_disk_with_its_serial() {
        let d = tempfile::tempdir().unwrap();
        let earlier = Kvm::machine_config(boot_config(d.path(), None)).unwrap();
        assert_eq!(
            earlier.disks.len(),
            2,
            "an image of the earlier layout has no root disk"
        );
        let mut cfg = boot_config(d.path(), None);
        cfg.root_image = Some("/img/root.img".into());
        let now = Kvm::machine_config(cfg).unwrap();
        let disks: Vec<(&str, bool, &str)> = now
            .disks
            .iter()
            .map(|d| (d.path.to_str().unwrap(), d.read_only, d.serial.as_str()))
            .collect();
        assert_eq!(
            disks,
            [
                ("/c", true, "devbox-config"),
                ("/d", false, "devbox-data"),
                ("/img/root.img", true, "devbox-root")
            ]
        );
    }

    /// A guest printing without end fills at most two capped files on the host.
    #[test]
    fn the_serial_log_stays_under_its_cap() {
        let d = tempfile::tempdir().unwrap();
        let serial_log = d.path().join("serial.log");
        let mut cfg = Kvm::machine_config(boot_config(d.path(), None)).unwrap();
        let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
        for _ in 0..(3 * MAX_BYTES / 1024) {
            cfg.serial_out.write_all(&line).unwrap();
        }
        cfg.serial_out.flush().unwrap();
        let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(size(&serial_log) <= MAX_BYTES, "{}", size(&serial_log));
        assert!(size(&rotated_path(&serial_log)) <= MAX_BYTES);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }
}
