//! Building and running one machine: KVM VM, guest RAM, boot payload, ACPI, devices,
//! vCPU threads and the event-loop thread; and the live handle that stops it.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::devices::Buses;
use super::devices::legacy::{AcpiPm, EventFdTrigger, I8042, SerialPort};
use super::devices::virtio::balloon::Balloon;
use super::devices::virtio::block::Block;
use super::devices::virtio::mmio::{MmioTransport, REG_QUEUE_NOTIFY};
use super::devices::virtio::net::Net;
use super::devices::virtio::rng::Rng;
use super::devices::virtio::{GuestRam, VirtioDevice, guest_ram};
use super::event_loop::{PowerEvents, Subscriber, VirtioEvents};
use super::layout::*;
use super::run_state::RunState;
use super::{KvmError, acpi, boot, cpu};
use crate::hypervisor::{HypervisorError, RunningVm, VmExit};

/// What the machine runs.
pub enum Payload {
    /// A Linux bzImage and initramfs; `cmdline` defaults to [`boot::kernel_cmdline`].
    Linux {
        kernel: PathBuf,
        initrd: PathBuf,
        cmdline: Option<String>,
    },
    /// 64-bit code loaded at [`HIMEM_START`] and entered there in long mode, with the same
    /// GDT and page tables a kernel gets (the smoke test's guest).
    Raw { code: Vec<u8> },
}

pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
    pub serial: String,
}

/// Everything needed to build a machine.
pub struct MachineConfig {
    pub cpus: u8,
    pub memory_bytes: u64,
    pub payload: Payload,
    pub disks: Vec<DiskConfig>,
    /// TAP descriptor (IFF_VNET_HDR) and MAC of each NIC, in slot order.
    pub nets: Vec<(OwnedFd, [u8; 6])>,
    pub rng: bool,
    /// A virtio-balloon with free page reporting: memory the guest frees goes back to the
    /// host.
    pub balloon: bool,
    /// Where the serial console goes.
    pub serial_out: Box<dyn Write + Send>,
}

/// Host RAM in bytes (MemTotal).
fn host_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Checks a configuration before any KVM resource exists.
pub fn validate(cfg: &MachineConfig) -> Result<(), KvmError> {
    if cfg.cpus == 0 || cfg.cpus > 64 {
        return Err(KvmError::Config(format!(
            "{} vCPUs requested; devbox supports 1 to 64",
            cfg.cpus
        )));
    }
    if cfg.memory_bytes < 64 << 20 {
        return Err(KvmError::Config(
            "at least 64 MiB of guest memory is needed".into(),
        ));
    }
    if let Some(host) = host_memory()
        && cfg.memory_bytes > host
    {
        return Err(KvmError::Config(format!(
            "{} MiB of guest memory requested but the host has {} MiB",
            cfg.memory_bytes >> 20,
            host >> 20
        )));
    }
    if let Payload::Linux { kernel, initrd, .. } = &cfg.payload {
        boot::check_bzimage(kernel)?;
        std::fs::metadata(initrd).map_err(|source| boot::BootError::Initrd {
            path: initrd.clone(),
            source,
        })?;
    }
    let slots = cfg.disks.len() + cfg.nets.len() + usize::from(cfg.rng) + usize::from(cfg.balloon);
    if slots > (GSI_GED - GSI_VIRTIO_FIRST) as usize {
        return Err(KvmError::Config(format!(
            "{slots} virtio devices is too many"
        )));
    }
    Ok(())
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The signal that knocks a vCPU thread out of KVM_RUN (the handler does nothing; the
/// interrupted ioctl returns EINTR and the loop sees `stopping`).
fn kick_signal() -> libc::c_int {
    static INSTALL: Once = Once::new();
    let sig = vmm_sys_util::signal::SIGRTMIN();
    INSTALL.call_once(|| {
        vmm_sys_util::signal::register_signal_handler(sig, kick_handler)
            .expect("install the vCPU kick signal handler");
    });
    sig
}

/// A running machine.
pub struct KvmMachine {
    shared: Arc<RunState>,
    vcpus: Vec<JoinHandle<()>>,
    event_loop: Option<JoinHandle<()>>,
    ged: EventFd,
    buses: Option<Arc<Buses>>,
    mem: Option<Arc<GuestRam>>,
    vm: Option<VmFd>,
    killed: bool,
}

fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> KvmError {
    move |source| KvmError::Kvm { what, source }
}

/// Builds the machine and starts its threads. Every check and every allocation happens
/// before the first vCPU runs.
pub fn launch(cfg: MachineConfig) -> Result<KvmMachine, KvmError> {
    validate(&cfg)?;
    let kvm = Kvm::new().map_err(kvm_err("opening /dev/kvm"))?;
    for (cap, name) in [
        (Cap::Irqchip, "in-kernel irqchip"),
        (Cap::Ioeventfd, "ioeventfd"),
        (Cap::Irqfd, "irqfd"),
        (Cap::UserMemory, "user memory"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(KvmError::MissingCapability(name));
        }
    }
    let vm = kvm.create_vm().map_err(kvm_err("creating the VM"))?;
    vm.set_tss_address(KVM_TSS_ADDR as usize)
        .map_err(kvm_err("setting the TSS address"))?;
    vm.create_irq_chip()
        .map_err(kvm_err("creating the irqchip"))?;
    vm.create_pit2(kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    })
    .map_err(kvm_err("creating the PIT"))?;

    let mem = Arc::new(guest_ram(cfg.memory_bytes).map_err(KvmError::Memory)?);
    if mem.num_regions() > kvm.get_nr_memslots() {
        return Err(KvmError::Config("too many memory regions".into()));
    }
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| KvmError::Memory(std::io::Error::other(e.to_string())))?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
            flags: 0,
        };
        // SAFETY: the region is a live mmap owned by `mem`, which the machine keeps until
        // after every vCPU thread has been joined and the VM fd closed.
        unsafe { vm.set_user_memory_region(r) }.map_err(kvm_err("registering guest RAM"))?;
    }

    // Devices, in virtio slot order: disks, NICs, entropy, balloon.
    let mut virtio: Vec<Box<dyn VirtioDevice>> = Vec::new();
    for d in &cfg.disks {
        virtio.push(Box::new(Block::open(&d.path, d.read_only, &d.serial)?));
    }
    for (tap, mac) in cfg.nets {
        virtio.push(Box::new(Net::new(tap, mac).map_err(KvmError::Tap)?));
    }
    if cfg.rng {
        virtio.push(Box::new(Rng::new()));
    }
    if cfg.balloon {
        virtio.push(Box::new(Balloon::new()));
    }
    let slots = virtio.len();

    // Boot data.
    let tables = acpi::build(cfg.cpus, slots);
    for (addr, bytes) in &tables.tables {
        mem.write_slice(bytes, GuestAddress(*addr))
            .map_err(|e| KvmError::Memory(std::io::Error::other(e.to_string())))?;
    }
    cpu::write_boot_tables(&mem)
        .map_err(|e| KvmError::Memory(std::io::Error::other(e.to_string())))?;
    let entry = match &cfg.payload {
        Payload::Linux {
            kernel,
            initrd,
            cmdline,
        } => {
            let line = cmdline
                .clone()
                .unwrap_or_else(|| boot::kernel_cmdline(slots));
            boot::load_linux(&mem, kernel, initrd, &line, tables.rsdp_addr())?.entry
        }
        Payload::Raw { code } => {
            mem.write_slice(code, GuestAddress(HIMEM_START))
                .map_err(|e| KvmError::Memory(std::io::Error::other(e.to_string())))?;
            HIMEM_START
        }
    };

    let io = KvmError::Io;
    let serial = SerialPort::new(EventFdTrigger::new().map_err(io)?, cfg.serial_out);
    vm.register_irqfd(serial.irq(), GSI_SERIAL)
        .map_err(kvm_err("registering the serial irqfd"))?;
    let i8042 = Arc::new(Mutex::new(I8042::new(EventFdTrigger::new().map_err(io)?)));
    let acpi_pm = Arc::new(AcpiPm::new().map_err(io)?);
    let ged = EventFd::new(EFD_NONBLOCK).map_err(io)?;
    vm.register_irqfd(&ged, GSI_GED)
        .map_err(kvm_err("registering the power-button irqfd"))?;

    let mut transports = Vec::new();
    for (slot, dev) in virtio.into_iter().enumerate() {
        let t = MmioTransport::new(dev, mem.clone()).map_err(io)?;
        vm.register_irqfd(t.irq(), GSI_VIRTIO_FIRST + slot as u32)
            .map_err(kvm_err("registering a virtio irqfd"))?;
        for (q, evt) in t.queue_evts().iter().enumerate() {
            let addr = IoEventAddress::Mmio(virtio_mmio_addr(slot) + REG_QUEUE_NOTIFY);
            vm.register_ioevent(evt, &addr, q as u32)
                .map_err(kvm_err("registering a virtio ioeventfd"))?;
        }
        transports.push(Arc::new(Mutex::new(t)));
    }

    let shared = Arc::new(RunState::new().map_err(io)?);
    let buses = Arc::new(Buses {
        serial: Arc::new(Mutex::new(serial)),
        i8042: i8042.clone(),
        acpi: acpi_pm.clone(),
        virtio: transports.clone(),
    });

    let mut vcpu_fds = Vec::new();
    for id in 0..cfg.cpus {
        let vcpu = vm
            .create_vcpu(u64::from(id))
            .map_err(kvm_err("creating a vCPU"))?;
        cpu::configure(&kvm, &vcpu, id, cfg.cpus, entry).map_err(kvm_err("configuring a vCPU"))?;
        vcpu_fds.push(vcpu);
    }

    // Threads: the event loop first, so no notification is missed, then the vCPUs.
    let mut subscribers: Vec<Subscriber> = transports
        .into_iter()
        .map(|t| Box::new(VirtioEvents(t)) as Subscriber)
        .collect();
    subscribers.push(Box::new(PowerEvents {
        i8042,
        acpi: acpi_pm,
        shared: shared.clone(),
    }));
    let s = shared.clone();
    let event_loop = std::thread::Builder::new()
        .name("devbox-events".into())
        .spawn(move || super::event_loop::run(subscribers, s))
        .map_err(io)?;
    kick_signal();
    let mut vcpus = Vec::new();
    for (id, vcpu) in vcpu_fds.into_iter().enumerate() {
        let (b, s) = (buses.clone(), shared.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("devbox-vcpu{id}"))
            .spawn(move || cpu::run(vcpu, id as u8, b, s));
        match spawned {
            Ok(h) => vcpus.push(h),
            Err(e) => {
                let mut m = KvmMachine {
                    shared,
                    vcpus,
                    event_loop: Some(event_loop),
                    ged,
                    buses: Some(buses),
                    mem: Some(mem),
                    vm: Some(vm),
                    killed: false,
                };
                m.stop("could not start a vCPU thread".into());
                return Err(KvmError::Io(e));
            }
        }
    }
    Ok(KvmMachine {
        shared,
        vcpus,
        event_loop: Some(event_loop),
        ged,
        buses: Some(buses),
        mem: Some(mem),
        vm: Some(vm),
        killed: false,
    })
}

impl KvmMachine {
    /// Why the machine ended, once it has.
    pub fn exit_reason(&self) -> Option<String> {
        self.shared.exit()
    }

    /// Bytes of guest RAM that are resident in host memory (pages the guest or the VMM
    /// touched), for overhead measurements.
    pub fn guest_resident_bytes(&self) -> u64 {
        let Some(mem) = &self.mem else { return 0 };
        let page = 4096usize;
        let mut total = 0u64;
        for region in mem.iter() {
            let Ok(host) = mem.get_host_address(region.start_addr()) else {
                continue;
            };
            let len = region.len() as usize;
            let mut vec = vec![0u8; len.div_ceil(page)];
            // SAFETY: `host..host+len` is one live, page-aligned mmap owned by `mem`;
            // mincore writes one byte per page into `vec`, which has exactly that many.
            let rc = unsafe { libc::mincore(host.cast(), len, vec.as_mut_ptr()) };
            if rc == 0 {
                total += vec.iter().filter(|&&b| b & 1 != 0).count() as u64 * page as u64;
            }
        }
        total
    }

    /// Waits up to `timeout` for the machine to end on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<VmExit> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(e)) = self.try_wait() {
                return Some(e);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// Stops every thread and releases guest RAM, the VM and every device (TAP, files).
    fn stop(&mut self, why: String) {
        self.shared.record_exit(why);
        let sig = kick_signal();
        for h in self.vcpus.drain(..) {
            while !h.is_finished() {
                // SAFETY: the pthread_t belongs to a thread that has not been joined yet,
                // so it is still valid; the signal's handler does nothing.
                unsafe { libc::pthread_kill(h.as_pthread_t(), sig) };
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = h.join();
        }
        if let Some(h) = self.event_loop.take() {
            let _ = h.join();
        }
        self.buses = None;
        self.vm = None;
        self.mem = None;
    }
}

impl RunningVm for KvmMachine {
    fn pid(&self) -> Option<u32> {
        None
    }

    /// Presses the ACPI power button (a GED interrupt that notifies `\_SB_.PWRB`).
    fn request_stop(&mut self) -> Result<(), HypervisorError> {
        self.ged.write(1)?;
        Ok(())
    }

    fn kill(&mut self) -> Result<(), HypervisorError> {
        self.killed = true;
        self.stop("the machine was killed".into());
        Ok(())
    }

    fn try_wait(&mut self) -> Result<Option<VmExit>, HypervisorError> {
        if !self.shared.stopping.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if !self.vcpus.is_empty() || self.event_loop.is_some() {
            self.stop(String::new());
        }
        Ok(self.shared.exit().map(|description| VmExit { description }))
    }
}

impl Drop for KvmMachine {
    fn drop(&mut self) {
        if !self.vcpus.is_empty() || self.event_loop.is_some() {
            self.stop("the machine handle was dropped".into());
        }
    }
}
