//! virtio-balloon with free page reporting (virtio 1.2 §5.5, `VIRTIO_BALLOON_F_REPORTING`):
//! the guest's page allocator hands over ranges of memory it has freed (in blocks of at least
//! its pageblock order, 2 MiB on x86_64), and the device gives the backing host pages back to
//! the host with `madvise(MADV_DONTNEED)`, so a guest that touched 1 GiB once and freed it
//! does not keep holding it on the host. Reading such a page again gets zeros from the host,
//! which is what reporting allows (the page was free).
//!
//! The balloon itself is never inflated (`num_pages` stays 0): devbox does not take memory
//! from a running guest. Pages a guest inflates on its own all the same are released the same
//! way; deflated pages come back on the guest's next touch.
//!
//! Every range comes from the untrusted guest: only buffers inside guest RAM are accepted (the
//! chain checks of `pop_chain`), and only the whole host pages inside each are released, so a
//! range that starts or ends inside a page never discards a neighbour's data.

use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::{Buffer, F_VERSION_1, GuestRam, TYPE_BALLOON, VirtioDevice, add_used, pop_chain};

/// `VIRTIO_BALLOON_F_REPORTING`.
pub const F_REPORTING: u64 = 1 << 5;
/// Queues, in the order the driver finds them when only reporting is negotiated: inflate,
/// deflate, reporting (the stats and free-page-hint queues are not offered, so they take no
/// index).
pub const INFLATE: usize = 0;
pub const DEFLATE: usize = 1;
pub const REPORTING: usize = 2;
pub const QUEUE_SIZE: u16 = 128;
/// The balloon's page size: PFNs on the inflate queue are 4 KiB pages whatever the guest's.
const BALLOON_PAGE: u64 = 4096;

pub struct Balloon {
    queue_sizes: [u16; 3],
    /// `num_pages` (always 0) and `actual` (what the driver writes back).
    config: [u8; 8],
    page_size: u64,
    /// Bytes given back to the host so far (reported and inflated).
    released: u64,
}

impl Default for Balloon {
    fn default() -> Self {
        Self::new()
    }
}

impl Balloon {
    pub fn new() -> Balloon {
        Balloon {
            queue_sizes: [QUEUE_SIZE; 3],
            config: [0; 8],
            page_size: host_page_size(),
            released: 0,
        }
    }

    /// Bytes given back to the host since the machine started.
    pub fn released(&self) -> u64 {
        self.released
    }

    /// Gives the host pages wholly inside `[addr, addr + len)` back to the host.
    fn release(&mut self, mem: &GuestRam, addr: GuestAddress, len: u64) {
        let start = addr.0.next_multiple_of(self.page_size);
        let end = (addr.0 + len) / self.page_size * self.page_size;
        if end <= start {
            return;
        }
        let Ok(slice) = mem.get_slice(GuestAddress(start), (end - start) as usize) else {
            return;
        };
        let guard = slice.ptr_guard_mut();
        // Guest RAM is an anonymous private mapping, whose page-aligned host address follows
        // from the page-aligned guest address (regions start on page boundaries).
        // SAFETY: the range lies inside a live mapping of guest RAM (checked by get_slice);
        // dropping its pages only makes the next read see zeros, which the guest allowed by
        // reporting or inflating them.
        let r = unsafe {
            libc::madvise(
                guard.as_ptr().cast(),
                (end - start) as usize,
                libc::MADV_DONTNEED,
            )
        };
        if r == 0 {
            self.released += end - start;
        }
    }

    fn release_buffers(&mut self, mem: &GuestRam, bufs: &[Buffer]) {
        for b in bufs {
            self.release(mem, b.addr, u64::from(b.len));
        }
    }

    /// The inflate queue: each readable buffer is an array of little-endian u32 PFNs.
    fn inflate(&mut self, mem: &GuestRam, bufs: &[Buffer]) {
        for b in bufs {
            let count = b.len / 4;
            for i in 0..u64::from(count) {
                let mut pfn = [0u8; 4];
                if mem
                    .read_slice(&mut pfn, GuestAddress(b.addr.0 + i * 4))
                    .is_err()
                {
                    break;
                }
                let page = u64::from(u32::from_le_bytes(pfn)) * BALLOON_PAGE;
                self.release(mem, GuestAddress(page), BALLOON_PAGE);
            }
        }
    }
}

fn host_page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        TYPE_BALLOON
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }
    fn features(&self) -> u64 {
        F_VERSION_1 | F_REPORTING
    }
    fn config_space(&self) -> &[u8] {
        &self.config
    }
    fn activate(&mut self, _acked: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn process_queue(&mut self, queues: &mut [Queue], index: usize, mem: &GuestRam) -> u32 {
        let Some(q) = queues.get_mut(index) else {
            return 0;
        };
        let mut used = 0;
        while let Some(next) = pop_chain(q, mem) {
            let head = match next {
                Err((head, _)) => head,
                Ok(chain) => {
                    match index {
                        INFLATE => self.inflate(mem, &chain.readable),
                        // Reported ranges are device-writable buffers (the driver adds them
                        // as "in" buffers); nothing is ever written into them.
                        REPORTING => {
                            self.release_buffers(mem, &chain.writable);
                            self.release_buffers(mem, &chain.readable);
                        }
                        // DEFLATE: the pages come back on the guest's next touch.
                        _ => {}
                    }
                    chain.head
                }
            };
            add_used(q, mem, head, 0);
            used |= 1 << index;
        }
        used
    }
}
