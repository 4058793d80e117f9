//! virtio devices over the MMIO transport: the device trait, descriptor-chain access checked
//! against guest memory, and the block, net, rng and balloon devices.
//!
//! Everything in a descriptor chain comes from an untrusted guest. A chain is first collected
//! into [`Chain`]: every buffer must lie inside guest RAM, readable buffers must come before
//! writable ones, and the walk is bounded by the queue size (virtio-queue stops looping chains).
//! A chain that fails this is returned to the guest unused (length 0) and never touched.

pub mod balloon;
pub mod block;
pub mod mmio;
pub mod net;
pub mod rng;

use std::os::fd::RawFd;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

/// Guest RAM as the devices see it.
pub type GuestRam = GuestMemoryMmap<()>;

/// virtio device IDs (virtio 1.2 §5).
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_RNG: u32 = 4;
pub const TYPE_BALLOON: u32 = 5;

/// `VIRTIO_F_VERSION_1`: the only transport revision devbox offers.
pub const F_VERSION_1: u64 = 1 << 32;

/// A device model behind a [`mmio::MmioTransport`].
pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered to the driver (the transport adds nothing).
    fn features(&self) -> u64;
    /// The device-specific configuration space (at 0x100 in the MMIO window).
    fn config_space(&self) -> &[u8];
    /// The driver set DRIVER_OK with these features acknowledged.
    fn activate(&mut self, acked_features: u64) -> std::io::Result<()>;
    /// The driver reset the device.
    fn reset(&mut self) {}
    /// Work on queue `index` (notified by the guest). Returns a bit mask of the queues that
    /// got used buffers.
    fn process_queue(&mut self, queues: &mut [Queue], index: usize, mem: &GuestRam) -> u32;
    /// A host-side descriptor whose readiness (edge-triggered) means work, e.g. a TAP device.
    fn backend_fd(&self) -> Option<RawFd> {
        None
    }
    /// The backend descriptor became ready. Returns used-queue mask as `process_queue`.
    fn process_backend(&mut self, _queues: &mut [Queue], _mem: &GuestRam) -> u32 {
        0
    }
}

/// One buffer of a descriptor chain, already checked to lie inside guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    pub addr: GuestAddress,
    pub len: u32,
}

/// A descriptor chain, checked and split into its readable and writable parts.
#[derive(Debug, Default, Clone)]
pub struct Chain {
    pub head: u16,
    pub readable: Vec<Buffer>,
    pub writable: Vec<Buffer>,
}

/// Why a chain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainError {
    /// A buffer lies (partly) outside guest RAM.
    OutOfRange,
    /// A readable buffer follows a writable one.
    Order,
    /// The lengths add up past `u32::MAX`.
    TooLong,
}

impl Chain {
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|b| u64::from(b.len)).sum()
    }
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|b| u64::from(b.len)).sum()
    }

    /// Copies up to `out.len()` readable bytes starting `offset` bytes into the chain.
    /// Returns how many were copied.
    pub fn read_at(&self, mem: &GuestRam, offset: u64, out: &mut [u8]) -> usize {
        let mut done = 0;
        for (addr, len) in ranges(&self.readable, offset, out.len() as u64) {
            let n = len as usize;
            if mem.read_slice(&mut out[done..done + n], addr).is_err() {
                break;
            }
            done += n;
        }
        done
    }

    /// Copies `data` into the writable buffers starting `offset` bytes in. Returns how many
    /// bytes were written.
    pub fn write_at(&self, mem: &GuestRam, offset: u64, data: &[u8]) -> usize {
        let mut done = 0;
        for (addr, len) in ranges(&self.writable, offset, data.len() as u64) {
            let n = len as usize;
            if mem.write_slice(&data[done..done + n], addr).is_err() {
                break;
            }
            done += n;
        }
        done
    }

    /// Host slices for `len` writable bytes starting `offset` bytes in.
    pub fn writable_slices<'m>(
        &self,
        mem: &'m GuestRam,
        offset: u64,
        len: u64,
    ) -> Vec<VolatileSlice<'m, ()>> {
        slices(mem, &self.writable, offset, len)
    }

    /// Host slices for `len` readable bytes starting `offset` bytes in.
    pub fn readable_slices<'m>(
        &self,
        mem: &'m GuestRam,
        offset: u64,
        len: u64,
    ) -> Vec<VolatileSlice<'m, ()>> {
        slices(mem, &self.readable, offset, len)
    }
}

fn slices<'m>(
    mem: &'m GuestRam,
    bufs: &[Buffer],
    offset: u64,
    len: u64,
) -> Vec<VolatileSlice<'m, ()>> {
    ranges(bufs, offset, len)
        .filter_map(|(addr, n)| mem.get_slice(addr, n as usize).ok())
        .collect()
}

/// The (address, length) pieces covering `len` bytes from `offset` in `bufs`.
fn ranges(bufs: &[Buffer], offset: u64, len: u64) -> impl Iterator<Item = (GuestAddress, u64)> {
    let mut skip = offset;
    let mut left = len;
    bufs.iter().filter_map(move |b| {
        let blen = u64::from(b.len);
        if skip >= blen {
            skip -= blen;
            return None;
        }
        if left == 0 {
            return None;
        }
        let n = (blen - skip).min(left);
        let addr = GuestAddress(b.addr.0 + skip);
        skip = 0;
        left -= n;
        Some((addr, n))
    })
}

/// Takes the next available chain off `queue`, checked. `Ok(None)` when the ring is empty;
/// `Err((head, why))` for a chain that must be returned unused.
pub fn pop_chain(queue: &mut Queue, mem: &GuestRam) -> Option<Result<Chain, (u16, ChainError)>> {
    let dc = queue.pop_descriptor_chain(mem)?;
    let head = dc.head_index();
    let mut chain = Chain {
        head,
        ..Chain::default()
    };
    let mut total: u64 = 0;
    for desc in dc {
        total += u64::from(desc.len());
        if total > u64::from(u32::MAX) {
            return Some(Err((head, ChainError::TooLong)));
        }
        if desc.len() > 0 && mem.get_slice(desc.addr(), desc.len() as usize).is_err() {
            return Some(Err((head, ChainError::OutOfRange)));
        }
        let buf = Buffer {
            addr: desc.addr(),
            len: desc.len(),
        };
        if desc.is_write_only() {
            chain.writable.push(buf);
        } else if chain.writable.is_empty() {
            chain.readable.push(buf);
        } else {
            return Some(Err((head, ChainError::Order)));
        }
    }
    Some(Ok(chain))
}

/// Puts `head` on the used ring with `len` bytes written. A failure means the guest broke
/// its own ring; there is nothing more the device can do for it.
pub fn add_used(queue: &mut Queue, mem: &GuestRam, head: u16, len: u32) -> bool {
    queue.add_used(mem, head, len).is_ok()
}

/// Guest RAM of `size` bytes laid out as devbox machines have it (tests build devices on it).
pub fn guest_ram(size: u64) -> std::io::Result<GuestRam> {
    let regions: Vec<(GuestAddress, usize)> = crate::hypervisor::kvm::layout::ram_regions(size)
        .into_iter()
        .map(|(s, l)| (GuestAddress(s), l as usize))
        .collect();
    GuestMemoryMmap::from_ranges(&regions).map_err(|e| std::io::Error::other(e.to_string()))
}
