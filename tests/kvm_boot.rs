//! Tier 1: what the KVM driver writes for the guest before it runs — ACPI tables parsed back
//! and checksummed, the zero page / e820 map / command line golden-tested
//! (`UPDATE_GOLDEN=1 cargo test --test kvm_boot` rewrites tests/golden/kvm/).
#![cfg(target_os = "linux")]

mod support;
use support::golden;

use devbox::hypervisor::kvm::{acpi, boot, layout};
use linux_loader::loader::bootparam::setup_header;

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

#[test]
fn acpi_tables_parse_back_and_checksum() {
    let t = acpi::build(2, 4);
    let at = |addr: u64| -> &[u8] {
        &t.tables
            .iter()
            .find(|(a, _)| *a == addr)
            .expect("table at address")
            .1
    };
    for (addr, b) in &t.tables {
        assert!(*addr >= layout::ACPI_START && addr + b.len() as u64 <= layout::ACPI_END);
    }
    // No two tables overlap.
    let mut spans: Vec<(u64, u64)> = t
        .tables
        .iter()
        .map(|(a, b)| (*a, a + b.len() as u64))
        .collect();
    spans.sort();
    assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "{spans:?}");

    let rsdp = at(t.rsdp_addr());
    assert_eq!(&rsdp[0..8], b"RSD PTR ");
    assert_eq!(sum(&rsdp[..20]), 0, "RSDP checksum");
    assert_eq!(rsdp.len(), 36);
    assert_eq!(sum(rsdp), 0, "RSDP extended checksum");
    let xsdt = at(u64_at(rsdp, 24));
    assert_eq!(&xsdt[0..4], b"XSDT");

    let table = |addr: u64, sig: &[u8; 4]| -> Vec<u8> {
        let b = at(addr);
        assert_eq!(&b[0..4], sig);
        assert_eq!(u32_at(b, 4) as usize, b.len(), "{sig:?} length");
        assert_eq!(sum(b), 0, "{:?} checksum", String::from_utf8_lossy(sig));
        b.to_vec()
    };
    let xsdt = table(u64_at(rsdp, 24), b"XSDT");
    assert_eq!(xsdt.len(), 36 + 16);
    let fadt = table(u64_at(&xsdt, 36), b"FACP");
    let madt = table(u64_at(&xsdt, 44), b"APIC");
    // FADT: hardware-reduced, power button as a control-method device, reset register,
    // sleep control at the port the VMM watches, and the DSDT.
    let flags = u32_at(&fadt, 112);
    assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
    assert_ne!(flags & (1 << 4), 0, "PWR_BUTTON (control method)");
    assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
    assert_eq!(u64_at(&fadt, 116 + 4), u64::from(layout::PORT_ACPI_RESET));
    assert_eq!(fadt[128], layout::ACPI_RESET_VALUE);
    assert_eq!(
        u64_at(&fadt, 244 + 4),
        u64::from(layout::PORT_ACPI_SLEEP_CONTROL)
    );
    assert_eq!(
        u64_at(&fadt, 256 + 4),
        u64::from(layout::PORT_ACPI_SLEEP_STATUS)
    );
    let dsdt = table(u64_at(&fadt, 140), b"DSDT");
    // MADT: LAPIC address, one local APIC per vCPU, one IOAPIC.
    assert_eq!(u32_at(&madt, 36), layout::LAPIC_ADDR);
    let mut off = 44;
    let mut lapics = vec![];
    let mut ioapics = 0;
    while off < madt.len() {
        let (ty, len) = (madt[off], madt[off + 1] as usize);
        match ty {
            0 => lapics.push((madt[off + 2], madt[off + 3], u32_at(&madt, off + 4))),
            1 => {
                ioapics += 1;
                assert_eq!(u32_at(&madt, off + 4), layout::IOAPIC_ADDR);
            }
            _ => panic!("unexpected MADT entry {ty}"),
        }
        off += len;
    }
    assert_eq!(lapics, vec![(0, 0, 1), (1, 1, 1)]);
    assert_eq!(ioapics, 1);
    // DSDT: one LNRO0005 per virtio slot with its window, S5, GED and power button.
    assert_eq!(count(&dsdt, b"LNRO0005"), 4);
    for slot in 0..4 {
        let base = (layout::virtio_mmio_addr(slot) as u32).to_le_bytes();
        assert_eq!(count(&dsdt, &base), 1, "window of slot {slot}");
    }
    assert_eq!(count(&dsdt, b"_S5_"), 1);
    assert_eq!(count(&dsdt, b"ACPI0013"), 1);
    assert_eq!(
        count(&dsdt, b"PWRB"),
        2,
        "device and the GED's Notify target"
    );
}

fn header() -> setup_header {
    setup_header {
        version: 0x020f,
        loadflags: 0x01,
        initrd_addr_max: 0x7fff_ffff,
        kernel_alignment: 0x20_0000,
        xloadflags: 0x7f,
        ..Default::default()
    }
}

#[test]
fn zero_page_e820_and_cmdline_golden() {
    let mut out = String::new();
    for mib in [512u64, 5 << 10] {
        let cmdline = boot::kernel_cmdline(4);
        let p = boot::boot_params(
            header(),
            cmdline.len(),
            (0x1f00_0000, 0x0123_4000),
            mib << 20,
            layout::ACPI_START,
        );
        out.push_str(&format!("# {mib} MiB, 4 virtio slots\n"));
        out.push_str(&boot::describe(&p, &cmdline));
    }
    golden("kvm", "boot-params.txt", &out);
}

#[test]
fn e820_never_maps_the_mmio_gap_or_the_bios_area_as_ram() {
    for mib in [64u64, 3 << 10, 4 << 10, 16 << 10] {
        let map = boot::e820_map(mib << 20);
        let ram: u64 = map
            .iter()
            .filter(|e| e.2 == boot::E820_RAM)
            .map(|e| e.1)
            .sum();
        // All RAM but the part under 1 MiB that is reserved or left out.
        assert_eq!(
            ram,
            (mib << 20) - (layout::HIMEM_START - layout::EBDA_START)
        );
        for &(start, len, ty) in &map {
            if ty == boot::E820_RAM {
                let end = start + len;
                assert!(end <= layout::MMIO_GAP_START || start >= layout::MMIO_GAP_END);
                assert!(end <= layout::EBDA_START || start >= layout::HIMEM_START);
            }
        }
    }
}
