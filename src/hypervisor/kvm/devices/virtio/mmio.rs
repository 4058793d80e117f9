//! The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2).
//!
//! The vCPU thread calls [`MmioTransport::read`]/[`write`](MmioTransport::write) for register
//! accesses; queue notifications arrive either as a write to QueueNotify (tests, or a host
//! without ioeventfd) or on the per-queue eventfds the event loop watches (registered as KVM
//! ioeventfds, so the guest's notify never exits to userspace). Used-buffer interrupts go out
//! through `irq`, an eventfd registered as a KVM irqfd on the device's GSI.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::{F_VERSION_1, GuestRam, VirtioDevice};

const MAGIC: u32 = 0x7472_6976;
const VERSION: u32 = 2;
const VENDOR: u32 = 0x4442_5844; // "DXBD"

pub const REG_MAGIC: u64 = 0x000;
pub const REG_VERSION: u64 = 0x004;
pub const REG_DEVICE_ID: u64 = 0x008;
pub const REG_VENDOR_ID: u64 = 0x00c;
pub const REG_DEVICE_FEATURES: u64 = 0x010;
pub const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
pub const REG_DRIVER_FEATURES: u64 = 0x020;
pub const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
pub const REG_QUEUE_SEL: u64 = 0x030;
pub const REG_QUEUE_NUM_MAX: u64 = 0x034;
pub const REG_QUEUE_NUM: u64 = 0x038;
pub const REG_QUEUE_READY: u64 = 0x044;
pub const REG_QUEUE_NOTIFY: u64 = 0x050;
pub const REG_INTERRUPT_STATUS: u64 = 0x060;
pub const REG_INTERRUPT_ACK: u64 = 0x064;
pub const REG_STATUS: u64 = 0x070;
pub const REG_QUEUE_DESC_LOW: u64 = 0x080;
pub const REG_QUEUE_DESC_HIGH: u64 = 0x084;
pub const REG_QUEUE_AVAIL_LOW: u64 = 0x090;
pub const REG_QUEUE_AVAIL_HIGH: u64 = 0x094;
pub const REG_QUEUE_USED_LOW: u64 = 0x0a0;
pub const REG_QUEUE_USED_HIGH: u64 = 0x0a4;
pub const REG_CONFIG_GENERATION: u64 = 0x0fc;
pub const REG_CONFIG: u64 = 0x100;

pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_NEEDS_RESET: u32 = 0x40;
pub const STATUS_FAILED: u32 = 0x80;

pub const INT_VRING: u32 = 1;
pub const INT_CONFIG: u32 = 2;

/// One virtio device and its transport state.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: Arc<GuestRam>,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    irq: EventFd,
    interrupt_status: u32,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    activated: bool,
}

impl MmioTransport {
    pub fn new(device: Box<dyn VirtioDevice>, mem: Arc<GuestRam>) -> std::io::Result<Self> {
        let mut queues = Vec::new();
        let mut queue_evts = Vec::new();
        for &max in device.queue_max_sizes() {
            queues.push(Queue::new(max).map_err(|e| std::io::Error::other(e.to_string()))?);
            queue_evts.push(EventFd::new(EFD_NONBLOCK)?);
        }
        Ok(MmioTransport {
            device,
            mem,
            queues,
            queue_evts,
            irq: EventFd::new(EFD_NONBLOCK)?,
            interrupt_status: 0,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            activated: false,
        })
    }

    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }
    /// One eventfd per queue: the guest's notifications (KVM ioeventfd on QueueNotify with
    /// the queue index as datamatch).
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }
    /// The used-buffer interrupt (a KVM irqfd).
    pub fn irq(&self) -> &EventFd {
        &self.irq
    }
    pub fn backend_fd(&self) -> Option<std::os::fd::RawFd> {
        self.device.backend_fd()
    }
    pub fn status(&self) -> u32 {
        self.status
    }
    pub fn is_activated(&self) -> bool {
        self.activated
    }
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// A register read of `data.len()` bytes at `offset` into the 4 KiB window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= REG_CONFIG {
            let cfg = self.device.config_space();
            let start = (offset - REG_CONFIG) as usize;
            for (i, b) in data.iter_mut().enumerate() {
                *b = cfg.get(start + i).copied().unwrap_or(0);
            }
            return;
        }
        if data.len() != 4 {
            data.fill(0);
            return;
        }
        let q = self.queues.get(self.queue_sel as usize);
        let v: u32 = match offset {
            REG_MAGIC => MAGIC,
            REG_VERSION => VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => q.map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => q.map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.interrupt_status,
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => 0,
            _ => 0,
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    /// A register write of `data` at `offset` into the 4 KiB window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= REG_CONFIG {
            // No device here has a writable configuration space (virtio-blk's writeback
            // toggle is not offered).
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let v = u32::from_le_bytes(bytes);
        let configurable = self.status & STATUS_DRIVER_OK == 0;
        let sel = self.queue_sel as usize;
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            REG_DRIVER_FEATURES if self.status & STATUS_FEATURES_OK == 0 => {
                let shift = match self.driver_features_sel {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                let mask = 0xffff_ffffu64 << shift;
                let offered = self.device.features();
                self.acked_features =
                    (self.acked_features & !mask) | ((u64::from(v) << shift) & offered & mask);
            }
            REG_QUEUE_SEL => self.queue_sel = v,
            REG_QUEUE_NUM if configurable => {
                if let Some(q) = self.queues.get_mut(sel) {
                    // Queue::set_size ignores sizes that are zero, too big or not a power of 2.
                    q.set_size(v as u16);
                }
            }
            REG_QUEUE_READY if configurable => {
                if let Some(q) = self.queues.get_mut(sel) {
                    q.set_ready(v == 1);
                }
            }
            REG_QUEUE_DESC_LOW | REG_QUEUE_DESC_HIGH | REG_QUEUE_AVAIL_LOW
            | REG_QUEUE_AVAIL_HIGH | REG_QUEUE_USED_LOW | REG_QUEUE_USED_HIGH
                if configurable =>
            {
                let Some(q) = self.queues.get_mut(sel) else {
                    return;
                };
                if q.ready() {
                    return;
                }
                match offset {
                    REG_QUEUE_DESC_LOW => q.set_desc_table_address(Some(v), None),
                    REG_QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(v)),
                    REG_QUEUE_AVAIL_LOW => q.set_avail_ring_address(Some(v), None),
                    REG_QUEUE_AVAIL_HIGH => q.set_avail_ring_address(None, Some(v)),
                    REG_QUEUE_USED_LOW => q.set_used_ring_address(Some(v), None),
                    _ => q.set_used_ring_address(None, Some(v)),
                }
            }
            REG_QUEUE_NOTIFY => self.notify(v as usize),
            REG_INTERRUPT_ACK => self.interrupt_status &= !v,
            REG_STATUS => self.set_status(v),
            _ => {}
        }
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let mut v = v;
        // FEATURES_OK only sticks for a feature set the device can honour: devbox devices
        // are modern-only.
        if v & STATUS_FEATURES_OK != 0
            && self.status & STATUS_FEATURES_OK == 0
            && self.acked_features & F_VERSION_1 == 0
        {
            v &= !STATUS_FEATURES_OK;
        }
        let newly_ok = v & STATUS_DRIVER_OK != 0 && self.status & STATUS_DRIVER_OK == 0;
        self.status = v;
        if newly_ok {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let mem = self.mem.clone();
        let queues_ok = self.status & STATUS_FEATURES_OK != 0
            && self.queues.iter().all(|q| !q.ready() || q.is_valid(&*mem));
        let result = if queues_ok {
            let event_idx = self.acked_features & (1 << 29) != 0;
            for q in &mut self.queues {
                q.set_event_idx(event_idx);
            }
            self.device.activate(self.acked_features)
        } else {
            Err(std::io::Error::other("queues misconfigured"))
        };
        match result {
            Ok(()) => self.activated = true,
            Err(_) => {
                self.status |= STATUS_NEEDS_RESET;
                self.raise(INT_CONFIG);
            }
        }
    }

    fn reset(&mut self) {
        self.device.reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.status = 0;
        self.acked_features = 0;
        self.interrupt_status = 0;
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.activated = false;
    }

    /// The guest notified queue `index`.
    pub fn notify(&mut self, index: usize) {
        if !self.activated || !self.queues.get(index).is_some_and(|q| q.ready()) {
            return;
        }
        let mem = self.mem.clone();
        let used = self.device.process_queue(&mut self.queues, index, &mem);
        self.signal_used(used);
    }

    /// The backend descriptor became readable.
    pub fn backend_ready(&mut self) {
        if !self.activated {
            return;
        }
        let mem = self.mem.clone();
        let used = self.device.process_backend(&mut self.queues, &mem);
        self.signal_used(used);
    }

    fn signal_used(&mut self, used_mask: u32) {
        let mem = self.mem.clone();
        let mut interrupt = false;
        for (i, q) in self.queues.iter_mut().enumerate() {
            if used_mask & (1 << i) != 0 && q.needs_notification(&*mem).unwrap_or(true) {
                interrupt = true;
            }
        }
        if interrupt {
            self.raise(INT_VRING);
        }
    }

    fn raise(&mut self, bit: u32) {
        self.interrupt_status |= bit;
        // A full eventfd counter still means "interrupt pending": nothing is lost.
        let _ = self.irq.write(1);
    }
}
