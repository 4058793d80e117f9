//! Loading a Linux bzImage + initramfs and writing the Linux x86 boot protocol structures
//! (zero page, command line, e820 map) into guest RAM. linux-loader parses the bzImage;
//! everything else (e820, initrd placement, RSDP pointer) is ours (research/vmm.md §1.2–1.3).

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::loader::KernelLoader;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::bzimage::BzImage;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::devices::virtio::GuestRam;
use super::layout::*;

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;
/// Oldest boot protocol with the 64-bit entry point and `xloadflags` (2.12).
const MIN_PROTOCOL: u16 = 0x020c;
const XLF_KERNEL_64: u16 = 1;
const HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("reading kernel {path}")]
    Kernel {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel {path} is not a bzImage: {reason}")]
    NotBzImage { path: PathBuf, reason: String },
    #[error("reading initramfs {path}")]
    Initrd {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("initramfs {path} ({size} bytes) does not fit in guest RAM below {limit:#x}")]
    InitrdTooBig {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("kernel command line is longer than {CMDLINE_MAX} bytes")]
    CmdlineTooLong,
    #[error("writing boot data into guest RAM: {0}")]
    Memory(String),
}

/// Where the kernel was put and where its 64-bit entry point is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedKernel {
    pub entry: u64,
    pub kernel_end: u64,
    pub initrd: (u64, u64),
}

/// The e820 map for `mem_size` bytes of RAM: low RAM below the EBDA, the EBDA/BIOS area
/// reserved, the ACPI area left out, RAM from 1 MiB, and RAM above 4 GiB past the MMIO gap.
pub fn e820_map(mem_size: u64) -> Vec<(u64, u64, u32)> {
    let mut m = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, ACPI_START - EBDA_START, E820_RESERVED),
    ];
    for (start, len) in ram_regions(mem_size) {
        let s = start.max(HIMEM_START);
        let end = start + len;
        if end > s {
            m.push((s, end - s, E820_RAM));
        }
    }
    m
}

/// The zero page for a kernel whose setup header is `hdr`.
pub fn boot_params(
    hdr: linux_loader::loader::bootparam::setup_header,
    cmdline_len: usize,
    initrd: (u64, u64),
    mem_size: u64,
    rsdp: u64,
) -> boot_params {
    let mut p = boot_params {
        hdr,
        ..Default::default()
    };
    // 0xff: "undefined boot loader"; kernels misbehave when it is 0 (cloud-hypervisor #918).
    p.hdr.type_of_loader = 0xff;
    p.hdr.boot_flag = 0xaa55;
    p.hdr.header = HDR_MAGIC;
    p.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    p.hdr.cmdline_size = cmdline_len as u32;
    p.hdr.ramdisk_image = initrd.0 as u32;
    p.hdr.ramdisk_size = initrd.1 as u32;
    p.hdr.loadflags |= 0x01 | 0x80; // LOADED_HIGH | CAN_USE_HEAP
    p.acpi_rsdp_addr = rsdp;
    let map = e820_map(mem_size);
    for (i, (addr, size, ty)) in map.iter().enumerate() {
        p.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *ty,
        };
    }
    p.e820_entries = map.len() as u8;
    p
}

/// A readable summary of a zero page (golden-tested).
pub fn describe(p: &boot_params, cmdline: &str) -> String {
    let hdr = p.hdr;
    let mut s = String::new();
    s.push_str(&format!("type_of_loader={:#x}\n", { hdr.type_of_loader }));
    s.push_str(&format!("boot_flag={:#x}\n", { hdr.boot_flag }));
    s.push_str(&format!("loadflags={:#x}\n", { hdr.loadflags }));
    s.push_str(&format!("cmd_line_ptr={:#x}\n", { hdr.cmd_line_ptr }));
    s.push_str(&format!("cmdline_size={}\n", { hdr.cmdline_size }));
    s.push_str(&format!("ramdisk_image={:#x}\n", { hdr.ramdisk_image }));
    s.push_str(&format!("ramdisk_size={:#x}\n", { hdr.ramdisk_size }));
    s.push_str(&format!("acpi_rsdp_addr={:#x}\n", { p.acpi_rsdp_addr }));
    for i in 0..p.e820_entries as usize {
        let e = p.e820_table[i];
        let kind = e.r#type;
        let ty = match kind {
            E820_RAM => "ram",
            E820_RESERVED => "reserved",
            _ => "other",
        };
        s.push_str(&format!(
            "e820 {:#012x}-{:#012x} {ty}\n",
            { e.addr },
            { e.addr } + { e.size }
        ));
    }
    s.push_str(&format!("cmdline={cmdline}\n"));
    s
}

/// The guest kernel command line for the KVM driver. Nothing secret goes here.
/// `reboot=k`: reboot through the i8042 reset line, which the VMM watches; `panic=-1`: a
/// panicking guest reboots at once, so the machine ends instead of hanging. The
/// `virtio_mmio.device=` entries serve kernels built with `VIRTIO_MMIO_CMDLINE_DEVICES`;
/// Debian's find the devices through the DSDT instead (research/vmm.md §0.4).
pub fn kernel_cmdline(virtio_slots: usize) -> String {
    let mut parts = vec![
        "console=ttyS0".to_owned(),
        "reboot=k".to_owned(),
        "panic=-1".to_owned(),
        "loglevel=4".to_owned(),
        "i8042.noaux".to_owned(),
        "i8042.nomux".to_owned(),
        "i8042.dumbkbd".to_owned(),
    ];
    for slot in 0..virtio_slots {
        parts.push(format!(
            "virtio_mmio.device=4K@{:#x}:{}",
            virtio_mmio_addr(slot),
            GSI_VIRTIO_FIRST + slot as u32
        ));
    }
    parts.join(" ")
}

/// Checks that `path` is a bzImage this VMM can boot (protocol ≥ 2.12 with a 64-bit entry),
/// without loading it.
pub fn check_bzimage(path: &Path) -> Result<(), BootError> {
    let data = std::fs::read(path).map_err(|source| BootError::Kernel {
        path: path.to_owned(),
        source,
    })?;
    let not = |reason: &str| BootError::NotBzImage {
        path: path.to_owned(),
        reason: reason.into(),
    };
    if data.len() < 0x270 {
        return Err(not("too short for a boot sector and setup header"));
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().expect("4 bytes"));
    if u16_at(0x1fe) != 0xaa55 || u32_at(0x202) != HDR_MAGIC {
        return Err(not("no Linux boot sector / \"HdrS\" setup header"));
    }
    if u16_at(0x206) < MIN_PROTOCOL {
        return Err(not(&format!(
            "boot protocol {:#x} is older than 2.12",
            u16_at(0x206)
        )));
    }
    if u16_at(0x236) & XLF_KERNEL_64 == 0 {
        return Err(not("no 64-bit entry point (XLF_KERNEL_64)"));
    }
    Ok(())
}

/// Loads kernel and initramfs and writes command line and zero page. The initramfs goes at
/// the top of low RAM (below the MMIO gap and the kernel's `initrd_addr_max`).
pub fn load_linux(
    mem: &GuestRam,
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    rsdp: u64,
) -> Result<LoadedKernel, BootError> {
    check_bzimage(kernel)?;
    if cmdline.len() + 1 > CMDLINE_MAX {
        return Err(BootError::CmdlineTooLong);
    }
    let initrd_size = std::fs::metadata(initrd)
        .map_err(|source| BootError::Initrd {
            path: initrd.to_owned(),
            source,
        })?
        .len();
    let mut f = File::open(kernel).map_err(|source| BootError::Kernel {
        path: kernel.to_owned(),
        source,
    })?;
    let res = BzImage::load(mem, None, &mut f, Some(GuestAddress(HIMEM_START))).map_err(|e| {
        BootError::NotBzImage {
            path: kernel.to_owned(),
            reason: e.to_string(),
        }
    })?;
    let hdr = res.setup_header.ok_or_else(|| BootError::NotBzImage {
        path: kernel.to_owned(),
        reason: "no setup header".into(),
    })?;
    let kernel_end = res.kernel_load.0 + res.kernel_end;
    let low_end = mem.last_addr().0.min(MMIO_GAP_START - 1) + 1;
    let limit = low_end.min(u64::from(hdr.initrd_addr_max) + 1);
    let initrd_addr = limit
        .checked_sub(initrd_size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel_end.next_multiple_of(0x1000))
        .ok_or_else(|| BootError::InitrdTooBig {
            path: initrd.to_owned(),
            size: initrd_size,
            limit,
        })?;
    let mut irf = File::open(initrd).map_err(|source| BootError::Initrd {
        path: initrd.to_owned(),
        source,
    })?;
    let slice = mem
        .get_slice(GuestAddress(initrd_addr), initrd_size as usize)
        .map_err(|e| BootError::Memory(e.to_string()))?;
    read_exact_volatile(&mut irf, &slice).map_err(|source| BootError::Initrd {
        path: initrd.to_owned(),
        source,
    })?;
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_ADDR))
        .map_err(|e| BootError::Memory(e.to_string()))?;
    let size: u64 = mem.iter().map(vm_memory::GuestMemoryRegion::len).sum();
    let params = boot_params(hdr, cmdline.len(), (initrd_addr, initrd_size), size, rsdp);
    mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(|e| BootError::Memory(e.to_string()))?;
    Ok(LoadedKernel {
        entry: res.kernel_load.0 + 0x200,
        kernel_end,
        initrd: (initrd_addr, initrd_size),
    })
}

fn read_exact_volatile(
    f: &mut File,
    slice: &vm_memory::VolatileSlice<'_, ()>,
) -> std::io::Result<()> {
    use vm_memory::ReadVolatile;
    let mut done = 0;
    while done < slice.len() {
        let mut sub = slice
            .subslice(done, slice.len() - done)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let n = f
            .read_volatile(&mut sub)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        done += n;
    }
    Ok(())
}
