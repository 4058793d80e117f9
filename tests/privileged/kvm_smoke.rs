//! Tier 3 (KVM): the whole VMM — KVM VM, irqchip, long-mode vCPU setup, ACPI tables, serial,
//! i8042, ACPI sleep registers, vCPU and event-loop threads — running tiny hand-assembled
//! 64-bit guests on this host's /dev/kvm. Even the software-nested kvm_pvm can run these
//! (a stock kernel it cannot: research/vmm.md §1.9).
//!
//! Without a usable /dev/kvm the tests are reported as not run, except under `CI=true`,
//! where they fail.
#![cfg(target_os = "linux")]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devbox::hypervisor::RunningVm;
use devbox::hypervisor::kvm::{KvmMachine, MachineConfig, Payload, launch};

use crate::support::trials::{Missing, Trial, check, nothing};

pub fn trials() -> Vec<Trial> {
    vec![
        check(
            "tiny_guest_prints_and_resets_through_i8042",
            kvm,
            tiny_guest_prints_and_resets_through_i8042,
        ),
        check(
            "tiny_guest_powers_off_through_acpi_sleep_register",
            kvm,
            tiny_guest_powers_off_through_acpi_sleep_register,
        ),
        check(
            "kill_stops_a_spinning_guest_and_its_idle_vcpus",
            kvm,
            kill_stops_a_spinning_guest_and_its_idle_vcpus,
        ),
        check(
            "bad_boot_inputs_fail_before_any_vcpu_runs",
            nothing,
            bad_boot_inputs_fail_before_any_vcpu_runs,
        ),
    ]
}

/// A /dev/kvm this process can open.
fn kvm() -> Result<(), Missing> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => Ok(()),
        Err(e) => Err(Missing::Prerequisite(format!(
            "/dev/kvm cannot be opened ({e})"
        ))),
    }
}

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
impl Console {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// `mov dx, 0x3f8` then `mov al, c; out dx, al` per byte of `s`.
fn print(s: &str) -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03];
    for b in s.bytes() {
        code.extend_from_slice(&[0xb0, b, 0xee]);
    }
    code
}

const I8042_RESET: [u8; 4] = [0xb0, 0xfe, 0xe6, 0x64]; // mov al, 0xfe; out 0x64, al
const ACPI_S5: [u8; 7] = [0x66, 0xba, 0x00, 0x06, 0xb0, 0x34, 0xee]; // out 0x600, SLP_EN|S5<<2
const HALT_LOOP: [u8; 3] = [0xf4, 0xeb, 0xfd]; // hlt; jmp back to hlt
const SPIN: [u8; 2] = [0xeb, 0xfe]; // jmp $

fn machine(code: Vec<u8>, cpus: u8, console: &Console) -> KvmMachine {
    launch(MachineConfig {
        cpus,
        memory_bytes: 128 << 20,
        payload: Payload::Raw { code },
        disks: vec![],
        nets: Vec::new(),
        rng: false,
        balloon: false,
        serial_out: Box::new(console.clone()),
    })
    .expect("launch the machine")
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

fn tiny_guest_prints_and_resets_through_i8042() {
    let console = Console::default();
    let mut code = print("devbox-kvm-ok\n");
    code.extend_from_slice(&I8042_RESET);
    code.extend_from_slice(&HALT_LOOP);
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    let mut m = machine(code, 1, &console);
    let launched = t0.elapsed();
    let rss1 = rss_bytes();
    let guest = m.guest_resident_bytes();
    let exit = m
        .wait_timeout(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("guest did not reset; console: {:?}", console.text()));
    assert_eq!(console.text(), "devbox-kvm-ok\n");
    assert!(exit.description.contains("i8042"), "{exit:?}");
    eprintln!(
        "[kvm] launch {:?}, exit after {:?}: {}; VMM RSS growth {} KiB of which guest RAM touched {} KiB => overhead {} KiB",
        launched,
        t0.elapsed(),
        exit.description,
        rss1.saturating_sub(rss0) / 1024,
        guest / 1024,
        rss1.saturating_sub(rss0).saturating_sub(guest) / 1024
    );
}

fn tiny_guest_powers_off_through_acpi_sleep_register() {
    let console = Console::default();
    let mut code = print("bye\n");
    code.extend_from_slice(&ACPI_S5);
    code.extend_from_slice(&HALT_LOOP);
    let mut m = machine(code, 2, &console);
    let exit = m
        .wait_timeout(Duration::from_secs(60))
        .expect("guest did not power off");
    assert_eq!(exit.description, "the guest powered off");
    assert_eq!(console.text(), "bye\n");
    // Reported once, and stays reported.
    assert_eq!(m.try_wait().unwrap(), Some(exit));
}

fn kill_stops_a_spinning_guest_and_its_idle_vcpus() {
    let console = Console::default();
    let mut code = print("spin\n");
    code.extend_from_slice(&SPIN);
    let mut m = machine(code, 2, &console);
    let deadline = Instant::now() + Duration::from_secs(60);
    while console.text() != "spin\n" {
        assert!(Instant::now() < deadline, "no output: {:?}", console.text());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(m.try_wait().unwrap(), None, "still running");
    let t = Instant::now();
    m.kill().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "kill took {:?}",
        t.elapsed()
    );
    let exit = m.try_wait().unwrap().expect("ended");
    assert_eq!(exit.description, "the machine was killed");
}

fn bad_boot_inputs_fail_before_any_vcpu_runs() {
    let dir = tempfile::tempdir().unwrap();
    let not_kernel = dir.path().join("vmlinuz");
    std::fs::write(&not_kernel, vec![0x7fu8; 4096]).unwrap();
    let initrd = dir.path().join("initrd.img");
    std::fs::write(&initrd, b"cpio").unwrap();
    let cfg = |kernel: &std::path::Path, initrd: &std::path::Path, mem: u64| MachineConfig {
        cpus: 1,
        memory_bytes: mem,
        payload: Payload::Linux {
            kernel: kernel.to_owned(),
            initrd: initrd.to_owned(),
            cmdline: None,
        },
        disks: vec![],
        nets: Vec::new(),
        rng: false,
        balloon: false,
        serial_out: Box::new(std::io::sink()),
    };
    let err = |c| launch(c).err().map(|e| error_chain(&e)).expect("must fail");

    let e = err(cfg(&not_kernel, &initrd, 128 << 20));
    assert!(e.contains("is not a bzImage"), "{e}");
    assert!(e.contains(&not_kernel.display().to_string()), "{e}");

    // A real-looking bzImage header with an old protocol.
    let mut old = vec![0u8; 8192];
    old[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    old[0x202..0x206].copy_from_slice(b"HdrS");
    old[0x206..0x208].copy_from_slice(&0x0202u16.to_le_bytes());
    let old_kernel = dir.path().join("old");
    std::fs::write(&old_kernel, &old).unwrap();
    let e = err(cfg(&old_kernel, &initrd, 128 << 20));
    assert!(e.contains("older than 2.12"), "{e}");

    // A good header but no initramfs.
    let mut ok = old.clone();
    ok[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    ok[0x236..0x238].copy_from_slice(&1u16.to_le_bytes());
    let good_kernel = dir.path().join("good");
    std::fs::write(&good_kernel, &ok).unwrap();
    let missing = dir.path().join("missing.img");
    let e = err(cfg(&good_kernel, &missing, 128 << 20));
    assert!(e.contains("initramfs") && e.contains("missing.img"), "{e}");

    // More memory than the host has.
    let e = err(cfg(&good_kernel, &initrd, 1 << 50));
    assert!(
        e.contains("MiB of guest memory requested but the host has"),
        "{e}"
    );
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
