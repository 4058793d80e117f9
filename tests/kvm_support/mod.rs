//! A minimal virtio guest driver for tests: it lays split rings and buffers out in guest RAM
//! and talks to a device only through its virtio-mmio registers, as a guest kernel would.
#![allow(dead_code)]

use std::sync::Arc;

use devbox::hypervisor::kvm::devices::virtio::GuestRam;
use devbox::hypervisor::kvm::devices::virtio::mmio::*;
use vm_memory::{Bytes, GuestAddress};

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;

pub struct Ring {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

pub struct GuestDriver {
    pub mem: Arc<GuestRam>,
    pub rings: Vec<Ring>,
    next_buf: u64,
}

impl GuestDriver {
    /// Negotiates `features & offered` (plus VERSION_1) and sets up `queues` rings of
    /// `size` entries, then sets DRIVER_OK. Returns the driver and the final status.
    pub fn start(t: &mut MmioTransport, mem: Arc<GuestRam>, size: u16, want: u64) -> GuestDriver {
        assert_eq!(reg(t, REG_MAGIC), 0x7472_6976);
        assert_eq!(reg(t, REG_VERSION), 2);
        set(t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        set(t, REG_DEVICE_FEATURES_SEL, 0);
        let lo = reg(t, REG_DEVICE_FEATURES) as u64;
        set(t, REG_DEVICE_FEATURES_SEL, 1);
        let offered = lo | ((reg(t, REG_DEVICE_FEATURES) as u64) << 32);
        let acked = offered & want;
        set(t, REG_DRIVER_FEATURES_SEL, 0);
        set(t, REG_DRIVER_FEATURES, acked as u32);
        set(t, REG_DRIVER_FEATURES_SEL, 1);
        set(t, REG_DRIVER_FEATURES, (acked >> 32) as u32);
        set(
            t,
            REG_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        let mut rings = Vec::new();
        let mut q = 0;
        loop {
            set(t, REG_QUEUE_SEL, q);
            if reg(t, REG_QUEUE_NUM_MAX) == 0 {
                break;
            }
            let base = 0x10_0000 + u64::from(q) * 0x1_0000;
            let ring = Ring {
                size,
                desc: base,
                avail: base + 0x4000,
                used: base + 0x8000,
                next_desc: 0,
                avail_idx: 0,
                used_seen: 0,
            };
            set(t, REG_QUEUE_NUM, u32::from(size));
            set(t, REG_QUEUE_DESC_LOW, ring.desc as u32);
            set(t, REG_QUEUE_DESC_HIGH, 0);
            set(t, REG_QUEUE_AVAIL_LOW, ring.avail as u32);
            set(t, REG_QUEUE_AVAIL_HIGH, 0);
            set(t, REG_QUEUE_USED_LOW, ring.used as u32);
            set(t, REG_QUEUE_USED_HIGH, 0);
            set(t, REG_QUEUE_READY, 1);
            rings.push(ring);
            q += 1;
        }
        set(
            t,
            REG_STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        GuestDriver {
            mem,
            rings,
            next_buf: 0x80_0000,
        }
    }

    /// A fresh zeroed buffer of `len` bytes in guest RAM.
    pub fn alloc(&mut self, len: u64) -> u64 {
        let a = self.next_buf;
        self.next_buf = (self.next_buf + len + 0xfff) & !0xfff;
        let zero = vec![0u8; len as usize];
        self.mem.write_slice(&zero, GuestAddress(a)).unwrap();
        a
    }

    pub fn put(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }

    pub fn get(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    /// Writes raw descriptor `i` of queue `q`.
    pub fn raw_desc(&self, q: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let r = &self.rings[q];
        let at = r.desc + u64::from(i) * 16;
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        self.put(at, &d);
    }

    /// Makes descriptor `head` available on queue `q` (no notification).
    pub fn publish(&mut self, q: usize, head: u16) {
        let r = &mut self.rings[q];
        let slot = r.avail + 4 + u64::from(r.avail_idx % r.size) * 2;
        r.avail_idx = r.avail_idx.wrapping_add(1);
        let (idx, avail) = (r.avail_idx, r.avail);
        self.put(slot, &head.to_le_bytes());
        self.put(avail + 2, &idx.to_le_bytes());
    }

    /// Adds a chain of (address, length, device-writable) buffers to queue `q`.
    pub fn add_chain(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
        let size = self.rings[q].size;
        let head = self.rings[q].next_desc;
        for (k, &(addr, len, write)) in bufs.iter().enumerate() {
            let i = (head + k as u16) % size;
            let last = k + 1 == bufs.len();
            let mut flags = if write { F_WRITE } else { 0 };
            if !last {
                flags |= F_NEXT;
            }
            self.raw_desc(q, i, addr, len, flags, (i + 1) % size);
        }
        self.rings[q].next_desc = (head + bufs.len() as u16) % size;
        self.publish(q, head);
        head
    }

    /// New used-ring entries (id, len) on queue `q` since the last call.
    pub fn used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let r = &self.rings[q];
        let idx = u16::from_le_bytes(self.get(r.used + 2, 2).try_into().unwrap());
        let mut out = Vec::new();
        let mut seen = r.used_seen;
        while seen != idx {
            let e = self.get(r.used + 4 + u64::from(seen % r.size) * 8, 8);
            out.push((
                u32::from_le_bytes(e[0..4].try_into().unwrap()),
                u32::from_le_bytes(e[4..8].try_into().unwrap()),
            ));
            seen = seen.wrapping_add(1);
        }
        self.rings[q].used_seen = seen;
        out
    }
}

pub fn reg(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

pub fn set(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

pub fn notify(t: &mut MmioTransport, q: u32) {
    set(t, REG_QUEUE_NOTIFY, q);
}
