//! vCPU state for a direct 64-bit Linux entry (GDT, identity page tables, long mode, CPUID,
//! MSRs, LAPIC, FPU) and the per-vCPU exit loop (research/vmm.md §1.3–1.6).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN, Msrs, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress};

use super::devices::Buses;
use super::devices::virtio::GuestRam;
use super::layout::*;
use super::run_state::RunState;

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// GDT entries: null, 64-bit code, data, TSS (flags as in the Linux boot protocol docs).
const GDT: [(u16, u32, u32); 4] = [
    (0, 0, 0),
    (0xa09b, 0, 0xfffff),
    (0xc093, 0, 0xfffff),
    (0x808b, 0, 0xfffff),
];

fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (u64::from(flags), u64::from(base), u64::from(limit));
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

fn segment(entry: u64, index: u16) -> kvm_segment {
    let g = ((entry >> 55) & 1) as u8;
    let mut limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    if g == 1 {
        limit = (limit << 12) | 0xfff;
    }
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 32) & 0xff00_0000) | ((entry >> 16) & 0x00ff_ffff),
        limit,
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// Writes the GDT, IDT and identity-mapping page tables (first 1 GiB, 2 MiB pages).
pub fn write_boot_tables(mem: &GuestRam) -> Result<(), vm_memory::GuestMemoryError> {
    for (i, &(f, b, l)) in GDT.iter().enumerate() {
        mem.write_obj(gdt_entry(f, b, l), GuestAddress(GDT_ADDR + i as u64 * 8))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))?;
    mem.write_obj(PDPT_ADDR | 0x3, GuestAddress(PML4_ADDR))?;
    mem.write_obj(PD_ADDR | 0x3, GuestAddress(PDPT_ADDR))?;
    for i in 0..512u64 {
        mem.write_obj((i << 21) | 0x83, GuestAddress(PD_ADDR + i * 8))?;
    }
    Ok(())
}

/// CPUID for vCPU `id` of `count`: KVM's supported set with the topology fields filled in.
pub fn cpuid(kvm: &Kvm, id: u8, count: u8) -> Result<CpuId, kvm_ioctls::Error> {
    let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)?;
    let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_00ff) | (u32::from(id) << 24) | (8 << 8);
                if count > 1 {
                    e.ebx |= u32::from(count) << 16;
                    e.edx |= 1 << 28; // HTT: the count field is valid
                }
                e.ecx |= 1 << 31; // running under a hypervisor
                if tsc_deadline {
                    e.ecx |= 1 << 24;
                }
            }
            6 => e.ecx &= !(1 << 3), // no energy-performance bias MSR
            0xb => e.edx = u32::from(id),
            _ => {}
        }
    }
    Ok(cpuid)
}

fn boot_msrs() -> Vec<kvm_msr_entry> {
    let msr = |index: u32, data: u64| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    };
    vec![
        msr(0x174, 0),             // IA32_SYSENTER_CS
        msr(0x175, 0),             // IA32_SYSENTER_ESP
        msr(0x176, 0),             // IA32_SYSENTER_EIP
        msr(0xc000_0081, 0),       // STAR
        msr(0xc000_0083, 0),       // CSTAR
        msr(0xc000_0102, 0),       // KERNEL_GS_BASE
        msr(0xc000_0084, 0),       // SYSCALL_MASK
        msr(0xc000_0082, 0),       // LSTAR
        msr(0x10, 0),              // IA32_TSC
        msr(0x1a0, 1),             // IA32_MISC_ENABLE: fast strings
        msr(0x2ff, (1 << 11) | 6), // MTRRdefType: enabled, write-back (FC #5526)
    ]
}

/// Puts vCPU `id` into 64-bit mode at `entry` with `rsi` = the zero page.
pub fn configure(
    kvm: &Kvm,
    vcpu: &VcpuFd,
    id: u8,
    count: u8,
    entry: u64,
) -> Result<(), kvm_ioctls::Error> {
    vcpu.set_cpuid2(&cpuid(kvm, id, count)?)?;
    let msrs = boot_msrs();
    let set = vcpu.set_msrs(&Msrs::from_entries(&msrs).expect("fewer MSRs than the FAM limit"))?;
    if set != msrs.len() {
        return Err(kvm_ioctls::Error::new(libc::EINVAL));
    }

    let mut sregs = vcpu.get_sregs()?;
    let entries: Vec<u64> = GDT.iter().map(|&(f, b, l)| gdt_entry(f, b, l)).collect();
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (entries.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    let code = segment(entries[1], 1);
    let data = segment(entries[2], 2);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(entries[3], 3);
    sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs)?;

    let mut lapic = vcpu.get_lapic()?;
    set_lvt(&mut lapic.regs, 0x350, 7); // LINT0: ExtINT (the 8259 behind it)
    set_lvt(&mut lapic.regs, 0x360, 4); // LINT1: NMI
    vcpu.set_lapic(&lapic)?;

    vcpu.set_fpu(&kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    })?;
    vcpu.set_regs(&kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        rsi: ZERO_PAGE_ADDR,
        ..Default::default()
    })?;
    Ok(())
}

fn set_lvt(regs: &mut [libc::c_char; 1024], offset: usize, mode: u32) {
    let mut b = [0u8; 4];
    for (i, x) in b.iter_mut().enumerate() {
        *x = regs[offset + i] as u8;
    }
    let v = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
    for (i, x) in v.to_le_bytes().iter().enumerate() {
        regs[offset + i] = *x as libc::c_char;
    }
}

/// Runs vCPU `id` until the machine stops. Exits that end the machine are recorded in
/// `shared`; the first one wins.
pub fn run(mut vcpu: VcpuFd, id: u8, buses: Arc<Buses>, shared: Arc<RunState>) {
    while !shared.stopping.load(Ordering::SeqCst) {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => buses.pio_write(port, data),
            Ok(VcpuExit::IoIn(port, data)) => buses.pio_read(port, data),
            Ok(VcpuExit::MmioRead(addr, data)) => buses.mmio_read(addr, data),
            Ok(VcpuExit::MmioWrite(addr, data)) => buses.mmio_write(addr, data),
            Ok(VcpuExit::Hlt) => {
                // Only without an in-kernel irqchip; ours has one. Yield rather than spin.
                std::thread::yield_now();
            }
            Ok(VcpuExit::Shutdown) => {
                shared.record_exit("the guest reset (triple fault)".into());
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                let what = match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => "the guest powered off",
                    KVM_SYSTEM_EVENT_RESET => "the guest rebooted",
                    KVM_SYSTEM_EVENT_CRASH => "the guest crashed",
                    _ => "the guest stopped (system event)",
                };
                shared.record_exit(what.into());
            }
            Ok(VcpuExit::InternalError) => {
                shared.record_exit(format!(
                    "vCPU {id}: KVM internal error (the host could not emulate a guest instruction)"
                ));
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                shared.record_exit(format!(
                    "vCPU {id}: KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu})"
                ));
            }
            Ok(other) => {
                shared.record_exit(format!("vCPU {id}: unexpected KVM exit {other:?}"));
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
            }
            Err(e) => {
                shared.record_exit(format!("vCPU {id}: KVM_RUN failed: {e}"));
            }
        }
    }
}
