//! Tier 3 (real KVM only): boots the real devbox guest image (kernel + initramfs from
//! `devbox image build`, as tests/e2e gets it) under the in-process KVM driver and checks
//! that the guest kernel finds every device through ACPI (both virtio disks by serial, the NIC
//! and the entropy device) and reaches userspace.
//!
//! Runs only where `probe::kvm()` says KVM can boot a stock kernel; elsewhere (e.g. under
//! kvm_pvm, CI's host) it is reported as not run with the probe's reason, under `CI=true`
//! too: it never reports a boot it did not see.
#![cfg(target_os = "linux")]

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devbox::hypervisor::RunningVm;
use devbox::hypervisor::kvm::{DiskConfig, MachineConfig, Payload, boot, launch};
use devbox::hypervisor::probe;

use crate::support::trials::{Missing, Trial, check};

#[derive(Clone, Default)]
struct Console(Arc<Mutex<Vec<u8>>>);
impl Write for Console {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn trials() -> Vec<Trial> {
    vec![check(
        "real_guest_boots_and_finds_its_devices",
        kvm_boots_stock_kernels,
        real_guest_boots_and_finds_its_devices,
    )]
}

/// What the KVM driver itself asks before booting a stock kernel.
fn kvm_boots_stock_kernels() -> Result<(), Missing> {
    let kvm = probe::kvm();
    if kvm.usable {
        Ok(())
    } else {
        Err(Missing::Unsupported(format!(
            "the KVM full boot needs a KVM that boots stock kernels: {}",
            kvm.reason
        )))
    }
}

fn real_guest_boots_and_finds_its_devices() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = Command::new(env!("CARGO_BIN_EXE_devbox"))
        .args(["image", "build"])
        .env("DEVBOX_HOME", dir.path().join("home"))
        .env("DEVBOX_CACHE", &cache)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "devbox image build failed");
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let img = devbox::image::find(&cache, Some(&version)).expect("the built image");

    let config = dir.path().join("config.img");
    std::fs::File::create(&config)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let data = dir.path().join("data.raw");
    std::fs::File::create(&data)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let console = Console::default();
    let t0 = Instant::now();
    let mut m = launch(MachineConfig {
        cpus: 2,
        memory_bytes: memory_mib_bytes(),
        payload: Payload::Linux {
            kernel: img.kernel(),
            initrd: img.initrd(),
            // Verbose, so the device probes are on the console.
            cmdline: Some(format!("{} loglevel=7", boot::kernel_cmdline(3))),
        },
        disks: vec![
            DiskConfig {
                path: config,
                read_only: true,
                serial: "devbox-config".into(),
            },
            DiskConfig {
                path: data,
                read_only: false,
                serial: "devbox-data".into(),
            },
        ]
        .into_iter()
        .chain(img.root_image().map(|path| DiskConfig {
            path,
            read_only: true,
            serial: devbox::image::ROOT_DISK_SERIAL.into(),
        }))
        .collect(),
        nets: Vec::new(),
        rng: true,
        balloon: true,
        serial_out: Box::new(console.clone()),
    })
    .expect("launch");
    let text = || String::from_utf8_lossy(&console.0.lock().unwrap()).into_owned();
    let want = ["[vda]", "[vdb]", "virtio_rng", "Run /init as init process"];
    let deadline = Instant::now() + Duration::from_secs(120);
    while !want.iter().all(|w| text().contains(w)) {
        if let Some(exit) = m.try_wait().unwrap() {
            panic!("guest ended early: {}\n{}", exit.description, text());
        }
        assert!(
            Instant::now() < deadline,
            "boot incomplete after 120 s:\n{}",
            text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "[kvm-boot] devices found and userspace reached after {:?}; guest RAM resident {} MiB",
        t0.elapsed(),
        m.guest_resident_bytes() >> 20
    );
    m.kill().unwrap();
}

const fn memory_mib_bytes() -> u64 {
    1024 << 20
}
