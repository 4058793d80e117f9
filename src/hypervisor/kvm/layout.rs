//! Guest physical memory map and interrupt lines of a devbox KVM machine (x86_64).
//!
//! Low memory follows the Linux boot protocol and Firecracker's layout (research/vmm.md §1.2);
//! devices live in the 32-bit MMIO gap below 4 GiB. RAM past the gap continues at 4 GiB.

/// GDT: null, 64-bit code, data, TSS.
pub const GDT_ADDR: u64 = 0x500;
/// A one-entry, all-zero IDT (the kernel installs its own before enabling interrupts).
pub const IDT_ADDR: u64 = 0x520;
/// `boot_params` (the "zero page"); `rsi` points here at the 64-bit entry.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer.
pub const BOOT_STACK: u64 = 0x8ff0;
/// PML4, PDPT and PD identity-mapping the first 1 GiB with 2 MiB pages.
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
pub const CMDLINE_MAX: usize = 4096;
/// `[EBDA_START, 0x10_0000)` is not RAM for the guest: EBDA, the ACPI tables, the legacy ROM area.
pub const EBDA_START: u64 = 0x9_fc00;
/// ACPI tables (RSDP first) live in the BIOS area the e820 map leaves out.
pub const ACPI_START: u64 = 0xe_0000;
pub const ACPI_END: u64 = 0x10_0000;
/// Where the kernel (or a raw payload) is loaded.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap; RAM stops here and resumes at 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// virtio-mmio slots: 4 KiB each from the start of the gap.
pub const VIRTIO_MMIO_BASE: u64 = MMIO_GAP_START;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// IOAPIC and LAPIC (provided by KVM's in-kernel irqchip).
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
pub const LAPIC_ADDR: u32 = 0xfee0_0000;
/// `KVM_SET_TSS_ADDR`: three pages outside RAM.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;

/// Legacy interrupt lines (IOAPIC pins = GSIs).
pub const GSI_I8042: u32 = 1;
pub const GSI_SERIAL: u32 = 4;
/// virtio-mmio devices take GSIs from here upwards.
pub const GSI_VIRTIO_FIRST: u32 = 5;
/// The ACPI generic event device (power button).
pub const GSI_GED: u32 = 23;

/// Port I/O: 8250 COM1, i8042, and devbox's ACPI sleep/reset registers.
pub const PORT_SERIAL: u16 = 0x3f8;
pub const PORT_I8042: u16 = 0x60;
/// ACPI hardware-reduced sleep control (write SLP_TYP|SLP_EN), sleep status, reset.
pub const PORT_ACPI_SLEEP_CONTROL: u16 = 0x600;
pub const PORT_ACPI_SLEEP_STATUS: u16 = 0x601;
pub const PORT_ACPI_RESET: u16 = 0x602;
pub const ACPI_RESET_VALUE: u8 = 0x1;

/// Address of virtio-mmio slot `i`.
pub fn virtio_mmio_addr(slot: usize) -> u64 {
    VIRTIO_MMIO_BASE + slot as u64 * VIRTIO_MMIO_SIZE
}

/// The guest RAM regions (start, length) for `size` bytes of RAM.
pub fn ram_regions(size: u64) -> Vec<(u64, u64)> {
    if size <= MMIO_GAP_START {
        vec![(0, size)]
    } else {
        vec![(0, MMIO_GAP_START), (MMIO_GAP_END, size - MMIO_GAP_START)]
    }
}
