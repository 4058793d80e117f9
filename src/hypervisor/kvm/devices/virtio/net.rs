//! virtio-net over a TAP descriptor opened with `IFF_VNET_HDR`.
//!
//! Frames carry the 12-byte `virtio_net_hdr_v1` both ways unchanged (the TAP's vnet header
//! size is set to 12), so checksum and segmentation offloads the guest acknowledges are handed
//! to the host kernel with `TUNSETOFFLOAD` (research/vmm.md §2.6, §3).
//!
//! RX: the TAP descriptor is watched edge-triggered; each readiness edge (and each guest
//! refill of the RX queue) reads frames until the TAP is empty or the guest has no buffers.
//! A frame that arrives while the guest has no buffers waits in `pending`; a frame larger than
//! the buffer offered is dropped (counted) and the buffer returned with length 0.
//! TX: each chain's readable bytes (header + frame) are written to the TAP as one frame.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use virtio_queue::{Queue, QueueT};

use super::{F_VERSION_1, GuestRam, TYPE_NET, VirtioDevice, add_used, pop_chain};

pub const QUEUE_SIZE: u16 = 256;
pub const RX: usize = 0;
pub const TX: usize = 1;
/// `sizeof(struct virtio_net_hdr_v1)`.
pub const VNET_HDR_LEN: usize = 12;
/// Largest frame with TSO (64 KiB + Ethernet header) plus the virtio header.
pub const MAX_FRAME: usize = 65562 + VNET_HDR_LEN;

pub const F_CSUM: u64 = 1 << 0;
pub const F_GUEST_CSUM: u64 = 1 << 1;
pub const F_MAC: u64 = 1 << 5;
pub const F_GUEST_TSO4: u64 = 1 << 7;
pub const F_GUEST_TSO6: u64 = 1 << 8;
pub const F_HOST_TSO4: u64 = 1 << 11;
pub const F_HOST_TSO6: u64 = 1 << 12;
pub const F_STATUS: u64 = 1 << 16;

const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

/// Traffic counters (frames).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetCounters {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

pub struct Net {
    tap: OwnedFd,
    config: Vec<u8>,
    queue_sizes: [u16; 2],
    pending: Option<Vec<u8>>,
    counters: NetCounters,
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *m = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

impl Net {
    /// A NIC with address `mac` on the TAP descriptor `tap`, which must have been opened with
    /// `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`. The descriptor is made non-blocking.
    pub fn new(tap: OwnedFd, mac: [u8; 6]) -> std::io::Result<Net> {
        // SAFETY: F_GETFL/F_SETFL on a descriptor this function owns; no memory involved.
        unsafe {
            let fl = libc::fcntl(tap.as_raw_fd(), libc::F_GETFL);
            if fl < 0 || libc::fcntl(tap.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let hdr_len: libc::c_int = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer, which is live for the call.
        let rc = unsafe { libc::ioctl(tap.as_raw_fd(), libc::TUNSETVNETHDRSZ, &hdr_len) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut config = vec![0u8; 10];
        config[0..6].copy_from_slice(&mac);
        config[6..8].copy_from_slice(&1u16.to_le_bytes()); // VIRTIO_NET_S_LINK_UP
        config[8..10].copy_from_slice(&1u16.to_le_bytes()); // max_virtqueue_pairs
        Ok(Net {
            tap,
            config,
            queue_sizes: [QUEUE_SIZE, QUEUE_SIZE],
            pending: None,
            counters: NetCounters::default(),
        })
    }

    pub fn counters(&self) -> NetCounters {
        self.counters
    }

    fn read_frame(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; MAX_FRAME];
        loop {
            // SAFETY: read writes at most `buf.len()` bytes into the live buffer.
            let n = unsafe { libc::read(self.tap.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return None; // EAGAIN: the TAP is empty (or gone).
            }
            buf.truncate(n as usize);
            return Some(buf);
        }
    }

    fn rx(&mut self, queues: &mut [Queue], mem: &GuestRam) -> u32 {
        let q = &mut queues[RX];
        let mut used = 0;
        loop {
            let frame = match self.pending.take() {
                Some(f) => f,
                None => match self.read_frame() {
                    Some(f) => f,
                    None => break,
                },
            };
            let chain = match pop_chain(q, mem) {
                None => {
                    self.pending = Some(frame);
                    break;
                }
                Some(Err((head, _))) => {
                    add_used(q, mem, head, 0);
                    used |= 1 << RX;
                    self.pending = Some(frame);
                    continue;
                }
                Some(Ok(c)) => c,
            };
            if frame.len() < VNET_HDR_LEN || frame.len() as u64 > chain.writable_len() {
                // Too big for the buffer the guest offered: the frame is dropped and the
                // buffer handed back empty, so one bad buffer cannot stall the queue.
                self.counters.rx_dropped += 1;
                add_used(q, mem, chain.head, 0);
                used |= 1 << RX;
                continue;
            }
            let n = chain.write_at(mem, 0, &frame);
            add_used(q, mem, chain.head, n as u32);
            used |= 1 << RX;
            self.counters.rx_frames += 1;
        }
        used
    }

    fn tx(&mut self, queues: &mut [Queue], mem: &GuestRam) -> u32 {
        let q = &mut queues[TX];
        let mut used = 0;
        while let Some(next) = pop_chain(q, mem) {
            let head = match next {
                Err((head, _)) => {
                    self.counters.tx_dropped += 1;
                    head
                }
                Ok(chain) => {
                    let len = chain.readable_len();
                    if (len as usize) < VNET_HDR_LEN || len as usize > MAX_FRAME {
                        self.counters.tx_dropped += 1;
                    } else {
                        let mut frame = vec![0u8; len as usize];
                        let n = chain.read_at(mem, 0, &mut frame);
                        // SAFETY: write reads `n` bytes from the live buffer.
                        let w =
                            unsafe { libc::write(self.tap.as_raw_fd(), frame.as_ptr().cast(), n) };
                        if w == n as isize {
                            self.counters.tx_frames += 1;
                        } else {
                            // TAP queue full or interface down: the frame is lost, as on a wire.
                            self.counters.tx_dropped += 1;
                        }
                    }
                    chain.head
                }
            };
            add_used(q, mem, head, 0);
            used |= 1 << TX;
        }
        used
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }
    fn features(&self) -> u64 {
        F_VERSION_1
            | F_MAC
            | F_STATUS
            | F_CSUM
            | F_GUEST_CSUM
            | F_GUEST_TSO4
            | F_GUEST_TSO6
            | F_HOST_TSO4
            | F_HOST_TSO6
    }
    fn config_space(&self) -> &[u8] {
        &self.config
    }
    fn activate(&mut self, acked: u64) -> std::io::Result<()> {
        // What the guest accepts from us, the TAP may hand over un-checksummed/unsegmented.
        let mut flags: libc::c_uint = 0;
        if acked & F_GUEST_CSUM != 0 {
            flags |= TUN_F_CSUM;
            if acked & F_GUEST_TSO4 != 0 {
                flags |= TUN_F_TSO4;
            }
            if acked & F_GUEST_TSO6 != 0 {
                flags |= TUN_F_TSO6;
            }
        }
        // SAFETY: TUNSETOFFLOAD takes its argument by value; the descriptor is ours.
        let rc = unsafe {
            libc::ioctl(
                self.tap.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    fn reset(&mut self) {
        self.pending = None;
    }
    fn process_queue(&mut self, queues: &mut [Queue], index: usize, mem: &GuestRam) -> u32 {
        match index {
            RX => self.rx(queues, mem),
            TX => self.tx(queues, mem),
            _ => 0,
        }
    }
    fn backend_fd(&self) -> Option<RawFd> {
        Some(self.tap.as_raw_fd())
    }
    fn process_backend(&mut self, queues: &mut [Queue], mem: &GuestRam) -> u32 {
        if !queues[RX].ready() {
            return 0;
        }
        self.rx(queues, mem)
    }
}
