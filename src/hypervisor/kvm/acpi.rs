//! ACPI tables for a hardware-reduced x86 machine: RSDP, XSDT, FADT, MADT and a DSDT.
//!
//! Debian's `virtio_mmio` module finds devices only through ACPI (`LNRO0005`) or a device
//! tree, so the DSDT carries one device per virtio-mmio slot (research/vmm.md §0.4, §2.2). The
//! MADT lists one local APIC per vCPU (the Debian cloud kernel ignores MP tables). Power:
//! `_S5_` plus the FADT sleep-control register let `poweroff` reach the VMM; a Generic Event
//! Device raises the power-button notification for [`RunningVm::request_stop`].
//!
//! [`RunningVm::request_stop`]: crate::hypervisor::RunningVm::request_stop

use acpi_tables::Aml;
use acpi_tables::aml::{
    self, Device, EISAName, Interrupt, Memory32Fixed, Method, Name, Notify, Package, Path,
    ResourceTemplate,
};
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, MADT, ProcessorLocalApic,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;

use super::devices::legacy::S5_SLP_TYP;
use super::layout::*;

const OEM_ID: [u8; 6] = *b"DEVBOX";
const OEM_TABLE_ID: [u8; 8] = *b"DEVBOXVM";
const OEM_REVISION: u32 = 1;

/// The tables and the guest-physical address each goes to (RSDP first, at [`ACPI_START`]).
#[derive(Debug, Clone)]
pub struct AcpiTables {
    pub tables: Vec<(u64, Vec<u8>)>,
}

impl AcpiTables {
    pub fn rsdp_addr(&self) -> u64 {
        ACPI_START
    }
}

fn bytes(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

/// The DSDT body: `_S5_`, COM1, the GED power button, one `LNRO0005` per virtio slot.
pub fn dsdt_aml(virtio_slots: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let s5 = Name::new(Path::new("_S5_"), &Package::new(vec![&S5_SLP_TYP]));
    s5.to_aml_bytes(&mut out);

    let mut devices: Vec<Vec<u8>> = Vec::new();
    // COM1, so the console port is described (PNP0501).
    let com1_io = aml::IO::new(PORT_SERIAL, PORT_SERIAL, 1, 8);
    let com1_irq = Interrupt::new(true, true, false, false, GSI_SERIAL);
    let com1_crs = ResourceTemplate::new(vec![&com1_io, &com1_irq]);
    devices.push(bytes(&Device::new(
        Path::new("COM1"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new("PNP0501")),
            &Name::new(Path::new("_UID"), &0u8),
            &Name::new(Path::new("_CRS"), &com1_crs),
        ],
    )));
    // Power button (control-method) and the GED whose interrupt notifies it.
    devices.push(bytes(&Device::new(
        Path::new("PWRB"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new("PNP0C0C")),
            &Name::new(Path::new("_UID"), &0u8),
        ],
    )));
    let ged_irq = Interrupt::new(true, true, false, false, GSI_GED);
    let ged_crs = ResourceTemplate::new(vec![&ged_irq]);
    let pwrb = Path::new("\\_SB_.PWRB");
    let notify = Notify::new(&pwrb, &0x80u8);
    devices.push(bytes(&Device::new(
        Path::new("GED_"),
        vec![
            &Name::new(Path::new("_HID"), &"ACPI0013"),
            &Name::new(Path::new("_UID"), &0u8),
            &Name::new(Path::new("_CRS"), &ged_crs),
            &Method::new(Path::new("_EVT"), 1, true, vec![&notify]),
        ],
    )));
    for slot in 0..virtio_slots {
        let window =
            Memory32Fixed::new(true, virtio_mmio_addr(slot) as u32, VIRTIO_MMIO_SIZE as u32);
        let irq = Interrupt::new(true, true, false, false, GSI_VIRTIO_FIRST + slot as u32);
        let crs = ResourceTemplate::new(vec![&window, &irq]);
        let uid = slot as u8;
        devices.push(bytes(&Device::new(
            Path::new(&format!("V{slot:03}")),
            vec![
                &Name::new(Path::new("_HID"), &"LNRO0005"),
                &Name::new(Path::new("_UID"), &uid),
                &Name::new(Path::new("_CCA"), &aml::ONE),
                &Name::new(Path::new("_CRS"), &crs),
            ],
        )));
    }
    let raw: Vec<RawAml> = devices.into_iter().map(RawAml).collect();
    let children: Vec<&dyn Aml> = raw.iter().map(|r| r as &dyn Aml).collect();
    aml::Scope::new(Path::new("\\_SB_"), children).to_aml_bytes(&mut out);
    out
}

/// Already-serialised AML.
struct RawAml(Vec<u8>);
impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

fn io_reg(port: u16) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        u64::from(port),
    )
}

/// Builds all tables for `cpus` vCPUs and `virtio_slots` virtio-mmio devices.
pub fn build(cpus: u8, virtio_slots: usize) -> AcpiTables {
    let align = |a: u64| a.next_multiple_of(16);
    let rsdp_addr = ACPI_START;
    let xsdt_addr = align(rsdp_addr + 36);
    // XSDT: header + 2 entries.
    let fadt_addr = align(xsdt_addr + 36 + 16);

    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    dsdt.append_slice(&dsdt_aml(virtio_slots));
    let dsdt = dsdt.as_slice().to_vec();

    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup);
    fadt.sleep_control_reg = io_reg(PORT_ACPI_SLEEP_CONTROL);
    fadt.sleep_status_reg = io_reg(PORT_ACPI_SLEEP_STATUS);
    fadt.reset_reg = io_reg(PORT_ACPI_RESET);
    fadt.reset_value = ACPI_RESET_VALUE;
    // IAPC_BOOT_ARCH: no VGA, no CMOS RTC to probe.
    fadt.iapc_boot_arch = ((1u16 << 2) | (1u16 << 5)).into();
    let fadt_len = acpi_tables::fadt::FADT::len() as u64;
    let madt_addr = align(fadt_addr + fadt_len);

    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_ADDR),
    );
    for i in 0..cpus {
        madt.add_structure(ProcessorLocalApic::new(i, i, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(0, IOAPIC_ADDR, 0));
    let madt = bytes(&madt);
    let dsdt_addr = align(madt_addr + madt.len() as u64);
    let fadt = bytes(&fadt.dsdt_64(dsdt_addr).finalize());

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt = bytes(&xsdt);
    let rsdp = bytes(&Rsdp::new(OEM_ID, xsdt_addr));

    let tables = vec![
        (rsdp_addr, rsdp),
        (xsdt_addr, xsdt),
        (fadt_addr, fadt),
        (madt_addr, madt),
        (dsdt_addr, dsdt),
    ];
    AcpiTables { tables }
}
