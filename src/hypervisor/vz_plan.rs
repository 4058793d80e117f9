//! The vz driver's machine, as plain data: what Virtualization.framework is asked for, built
//! from a [`BootConfig`] and checked here, so that the rules behind it are tested on any host.
//! `vz/` (macOS only) translates a [`VzPlan`] into VZ objects one to one, and turns the
//! framework's `NSError`s into [`VzError`]s through [`classify`].
//!
//! Rules, each from a failure others hit (research/vmm.md §5):
//! - the kernel must be a raw arm64 `Image` on Apple silicon: `VZLinuxBootLoader` hangs
//!   silently on a compressed one (vfkit refuses those too), so it is checked before boot;
//! - both disks use `VZDiskImageCachingMode.cached` and `VZDiskImageSynchronizationMode.fsync`:
//!   the default (`automatic`) caching mode has corrupted ext4 (lima#1957, UTM #4840);
//! - disks are found by the guest through their virtio-blk serial (`/sys/block/vd*/serial`),
//!   which VZ sets from `blockDeviceIdentifier` (macOS 12.3+): at most 20 ASCII bytes;
//! - the console is the virtio console, so the guest writes to `hvc0`, not `ttyS0`;
//! - the NIC is on VZ's NAT (vmnet shared mode, `bridge100`), whose DHCP server picks the
//!   guest's address; the guest reports it over vsock ([`super::guest_report`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::BootConfig;
use super::guest_report;
// The kernel format rule is the image's; VZ's boot loader is why it exists.
pub use crate::image::kernel_format::{KERNEL_HEAD_LEN, KernelProblem, check_kernel};

/// Virtio-blk serial of the read-only config drive (the guest init looks for it).
pub const CONFIG_DISK_ID: &str = "devbox-config";
/// Virtio-blk serial of the data disk.
pub const DATA_DISK_ID: &str = "devbox-data";
/// Longest virtio-blk identifier VZ accepts (`validateBlockDeviceIdentifier:error:`).
const MAX_DISK_ID: usize = 20;
/// The entitlement every process that runs a VZ machine must be signed with.
pub const ENTITLEMENT: &str = "com.apple.security.virtualization";
/// `VZErrorDomain`, and its code for an invalid configuration, which is also what a process
/// without the entitlement gets (`VZErrorInvalidVirtualMachineConfiguration`).
pub const VZ_ERROR_DOMAIN: &str = "VZErrorDomain";
pub const VZ_INVALID_CONFIGURATION: isize = 2;

/// Everything the vz driver configures, in VZ's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VzPlan {
    pub cpus: usize,
    pub memory_bytes: u64,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    /// Virtio-blk disks in bus order; all cached with fsync synchronization.
    pub disks: Vec<VzDisk>,
    /// The NIC's MAC, attached to VZ's NAT.
    pub mac: String,
    /// The virtio console's output, through the size-capped `console_log` (rotated at 4 MiB).
    pub console_log: PathBuf,
    /// The vsock port the guest reports its address and readiness to.
    pub report_port: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VzDisk {
    pub path: PathBuf,
    pub read_only: bool,
    /// Becomes the guest's `/sys/block/vd*/serial`.
    pub identifier: &'static str,
}

/// The guest kernel command line under vz. Nothing secret ever goes here.
pub fn kernel_cmdline() -> String {
    "console=hvc0 panic=-1 loglevel=4".to_owned()
}

/// Builds and checks the plan. `kernel_head` is the start of the kernel file (at least
/// [`KERNEL_HEAD_LEN`] bytes when the file has them), `arch` the host's (VZ runs guests of the
/// host's architecture only).
pub fn plan(cfg: &BootConfig, arch: &str, kernel_head: &[u8]) -> Result<VzPlan, VzError> {
    check_kernel(arch, kernel_head).map_err(|problem| VzError::Kernel {
        path: cfg.kernel.clone(),
        problem,
    })?;
    parse_mac(&cfg.mac)?;
    let mut disks = vec![
        VzDisk {
            path: cfg.config_drive.clone(),
            read_only: true,
            identifier: CONFIG_DISK_ID,
        },
        VzDisk {
            path: cfg.data_disk.clone(),
            read_only: false,
            identifier: DATA_DISK_ID,
        },
    ];
    if let Some(root) = &cfg.root_image {
        disks.push(VzDisk {
            path: root.clone(),
            read_only: true,
            identifier: crate::image::ROOT_DISK_SERIAL,
        });
    }
    for d in &disks {
        check_disk_id(d.identifier)?;
    }
    Ok(VzPlan {
        cpus: cfg.cpus as usize,
        memory_bytes: cfg.memory_mib * 1024 * 1024,
        kernel: cfg.kernel.clone(),
        initrd: cfg.initrd.clone(),
        cmdline: kernel_cmdline(),
        disks,
        mac: cfg.mac.clone(),
        console_log: cfg.serial_log.clone(),
        report_port: guest_report::PORT,
    })
}

fn check_disk_id(id: &'static str) -> Result<(), VzError> {
    if id.len() > MAX_DISK_ID || !id.is_ascii() {
        return Err(VzError::DiskIdentifier { identifier: id });
    }
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff`, unicast (VZ rejects others).
pub fn parse_mac(mac: &str) -> Result<[u8; 6], VzError> {
    let bad = || VzError::BadMac { mac: mac.into() };
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for b in &mut out {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() || out[0] & 1 == 1 {
        return Err(bad());
    }
    Ok(out)
}

/// The parts of an `NSError` that decide what went wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsErrorParts {
    pub domain: String,
    pub code: isize,
    /// `localizedDescription`.
    pub description: String,
    /// `localizedFailureReason`, when the error has one.
    pub failure_reason: Option<String>,
}

/// Turns a framework error into the typed error a user can act on. `binary` is this
/// process's executable (named in the codesign hint).
pub fn classify(operation: &'static str, err: NsErrorParts, binary: &Path) -> VzError {
    let text = format!(
        "{} {}",
        err.description,
        err.failure_reason.as_deref().unwrap_or("")
    );
    if err.domain == VZ_ERROR_DOMAIN && err.code == VZ_INVALID_CONFIGURATION {
        if text.contains(ENTITLEMENT) {
            return VzError::MissingEntitlement {
                binary: binary.to_owned(),
            };
        }
        if text.contains("not available on this hardware") {
            return VzError::NotSupported {
                reason: err.failure_reason.unwrap_or(err.description),
            };
        }
        return VzError::InvalidConfig {
            reason: err.failure_reason.unwrap_or(err.description),
        };
    }
    VzError::Framework {
        operation,
        domain: err.domain,
        code: err.code,
        description: err.description,
    }
}

/// The command that gives `binary` the entitlement (ad-hoc signature, enough for local use).
pub fn codesign_command(binary: &Path) -> String {
    format!(
        "codesign --force --sign - --entitlements assets/macos/devbox.entitlements '{}'",
        binary.display()
    )
}

#[derive(Debug, thiserror::Error)]
pub enum VzError {
    #[error(
        "{binary} is not signed with the {ENTITLEMENT} entitlement, without which macOS runs no virtual machine"
    )]
    MissingEntitlement { binary: PathBuf },
    #[error("Virtualization.framework cannot run virtual machines on this Mac: {reason}")]
    NotSupported { reason: String },
    #[error("the kernel {path} cannot boot under Virtualization.framework: it is {problem}")]
    Kernel {
        path: PathBuf,
        problem: KernelProblem,
    },
    #[error("reading the kernel {path}")]
    KernelRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("disk image {path}: {reason}")]
    DiskImage { path: PathBuf, reason: String },
    #[error("{path} cannot be given to Virtualization.framework as a file URL")]
    BadPath { path: PathBuf },
    #[error("invalid MAC address {mac:?} (want aa:bb:cc:dd:ee:ff, unicast)")]
    BadMac { mac: String },
    #[error("virtio-blk identifier {identifier:?} is longer than {MAX_DISK_ID} ASCII bytes")]
    DiskIdentifier { identifier: &'static str },
    #[error("Virtualization.framework rejected the machine's configuration: {reason}")]
    InvalidConfig { reason: String },
    #[error("{operation} failed: {description} ({domain} code {code})")]
    Framework {
        operation: &'static str,
        domain: String,
        code: isize,
        description: String,
    },
    #[error("{operation} did not finish within {}", humantime::format_duration(*.timeout))]
    Timeout {
        operation: &'static str,
        timeout: Duration,
    },
    #[error("the machine has no virtio socket device, so the guest cannot report its address")]
    NoSocketDevice,
}

impl VzError {
    pub fn hint(&self) -> Option<String> {
        match self {
            VzError::MissingEntitlement { binary } => Some(format!(
                "sign the binary with the entitlement (from devbox's source tree): {}",
                codesign_command(binary)
            )),
            VzError::Kernel {
                problem: KernelProblem::Gzip | KernelProblem::EfiZboot,
                ..
            } => Some(
                "use an image built for arm64 (`devbox image build --arch arm64`), whose \
                 kernel is the uncompressed Image"
                    .into(),
            ),
            VzError::NotSupported { .. } => Some(
                "Virtualization.framework needs a Mac with hardware virtualization; inside \
                 another virtual machine it is usually unavailable"
                    .into(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot_config() -> BootConfig {
        BootConfig {
            name: "dev".into(),
            cpus: 2,
            memory_mib: 4096,
            kernel: "/c/kernel".into(),
            initrd: "/c/initrd".into(),
            root_image: Some("/c/root.img".into()),
            data_disk: "/m/disk.raw".into(),
            config_drive: "/m/config.img".into(),
            tap: None,
            mac: "52:54:00:12:34:56".into(),
            share_nic: None,
            serial_log: "/m/serial.log".into(),
            monitor_socket: "/m/qmp.sock".into(),
        }
    }

    fn arm64_image() -> Vec<u8> {
        let mut k = vec![0u8; KERNEL_HEAD_LEN];
        k[0x38..0x3c].copy_from_slice(b"ARM\x64");
        k
    }

    #[test]
    fn plan_maps_the_boot_config() {
        let p = plan(&boot_config(), "aarch64", &arm64_image()).unwrap();
        assert_eq!(p.cpus, 2);
        assert_eq!(p.memory_bytes, 4096 << 20);
        assert_eq!(p.cmdline, "console=hvc0 panic=-1 loglevel=4");
        assert_eq!(p.mac, "52:54:00:12:34:56");
        assert_eq!(p.console_log, Path::new("/m/serial.log"));
        assert_eq!(p.report_port, guest_report::PORT);
        assert_eq!(
            p.disks,
            vec![
                VzDisk {
                    path: "/m/config.img".into(),
                    read_only: true,
                    identifier: "devbox-config",
                },
                VzDisk {
                    path: "/m/disk.raw".into(),
                    read_only: false,
                    identifier: "devbox-data",
                },
                VzDisk {
                    path: "/c/root.img".into(),
                    read_only: true,
                    identifier: "devbox-root",
                },
            ]
        );
    }

    #[test]
    fn arm64_needs_the_uncompressed_image() {
        assert_eq!(check_kernel("aarch64", &arm64_image()), Ok(()));
        let mut gz = arm64_image();
        gz[..2].copy_from_slice(&[0x1f, 0x8b]);
        assert_eq!(check_kernel("aarch64", &gz), Err(KernelProblem::Gzip));
        let mut zboot = vec![0u8; KERNEL_HEAD_LEN];
        zboot[..2].copy_from_slice(b"MZ");
        zboot[4..8].copy_from_slice(b"zimg");
        assert_eq!(
            check_kernel("aarch64", &zboot),
            Err(KernelProblem::EfiZboot)
        );
        assert_eq!(
            check_kernel("aarch64", &[0u8; 16]),
            Err(KernelProblem::NotArm64Image)
        );
        let err = plan(&boot_config(), "aarch64", &gz).unwrap_err();
        assert!(err.to_string().contains("/c/kernel"), "{err}");
        assert!(err.hint().unwrap().contains("--arch arm64"));
    }

    #[test]
    fn x86_64_needs_a_bzimage() {
        let mut bz = vec![0u8; KERNEL_HEAD_LEN];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(check_kernel("x86_64", &bz), Ok(()));
        assert_eq!(
            check_kernel("x86_64", &arm64_image()),
            Err(KernelProblem::NotBzImage)
        );
        assert!(matches!(
            check_kernel("riscv64", &bz),
            Err(KernelProblem::UnsupportedArch { .. })
        ));
    }

    #[test]
    fn disk_identifiers_fit_virtio_blk() {
        for id in [CONFIG_DISK_ID, DATA_DISK_ID] {
            check_disk_id(id).unwrap();
        }
        assert!(matches!(
            check_disk_id("devbox-a-very-long-disk"),
            Err(VzError::DiskIdentifier { .. })
        ));
    }

    #[test]
    fn macs_must_be_well_formed_unicast() {
        assert_eq!(
            parse_mac("52:54:00:0a:Bc:ff").unwrap(),
            [0x52, 0x54, 0, 0x0a, 0xbc, 0xff]
        );
        for bad in [
            "52:54:00:0a:bc",
            "52:54:00:0a:bc:ff:00",
            "52:54:0:0a:bc:ff",
            "52-54-00-0a-bc-ff",
            "zz:54:00:0a:bc:ff",
            "01:00:5e:00:00:01",
        ] {
            assert!(
                matches!(parse_mac(bad), Err(VzError::BadMac { .. })),
                "{bad}"
            );
        }
    }

    /// The error a process without the entitlement gets, as vfkit users reported it
    /// (https://github.com/crc-org/vfkit/issues/91).
    #[test]
    fn missing_entitlement_becomes_a_codesign_hint() {
        let err = classify(
            "validating the machine configuration",
            NsErrorParts {
                domain: "VZErrorDomain".into(),
                code: 2,
                description: "Invalid virtual machine configuration. The process doesn\u{2019}t \
                              have the \u{201c}com.apple.security.virtualization\u{201d} \
                              entitlement."
                    .into(),
                failure_reason: Some(
                    "The process doesn\u{2019}t have the \u{201c}com.apple.security.\
                     virtualization\u{201d} entitlement."
                        .into(),
                ),
            },
            Path::new("/Users/me/.cargo/bin/devbox"),
        );
        assert!(matches!(err, VzError::MissingEntitlement { .. }), "{err:?}");
        assert_eq!(
            err.hint().unwrap(),
            "sign the binary with the entitlement (from devbox's source tree): codesign --force \
             --sign - --entitlements assets/macos/devbox.entitlements \
             '/Users/me/.cargo/bin/devbox'"
        );
    }

    #[test]
    fn other_framework_errors_keep_their_details() {
        let no_hw = classify(
            "validating the machine configuration",
            NsErrorParts {
                domain: "VZErrorDomain".into(),
                code: 2,
                description: "Invalid virtual machine configuration.".into(),
                failure_reason: Some("Virtualization is not available on this hardware.".into()),
            },
            Path::new("/d"),
        );
        assert!(matches!(no_hw, VzError::NotSupported { .. }), "{no_hw:?}");
        let cpus = classify(
            "validating the machine configuration",
            NsErrorParts {
                domain: "VZErrorDomain".into(),
                code: 2,
                description: "Invalid virtual machine configuration.".into(),
                failure_reason: Some("The number of CPUs exceeds the maximum.".into()),
            },
            Path::new("/d"),
        );
        assert_eq!(
            cpus.to_string(),
            "Virtualization.framework rejected the machine's configuration: The number of CPUs \
             exceeds the maximum."
        );
        let start = classify(
            "starting the machine",
            NsErrorParts {
                domain: "VZErrorDomain".into(),
                code: 1,
                description: "The virtual machine failed to start.".into(),
                failure_reason: None,
            },
            Path::new("/d"),
        );
        assert_eq!(
            start.to_string(),
            "starting the machine failed: The virtual machine failed to start. (VZErrorDomain \
             code 1)"
        );
        assert!(start.hint().is_none());
    }
}
