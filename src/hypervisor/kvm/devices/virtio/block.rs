//! virtio-blk over a raw (sparse) image file.
//!
//! Requests: read, write, flush, get-id, and — on writable disks — discard and write-zeroes,
//! which punch holes (`FALLOC_FL_PUNCH_HOLE`) or zero ranges (`FALLOC_FL_ZERO_RANGE`) so that
//! space the guest frees goes back to the host (ARCHITECTURE.md "Guest"). Reads and writes go
//! straight between the file and guest RAM with `pread`/`pwrite` (no bounce buffer).
//!
//! Status for bad requests: a range past the end of the disk, a write to a read-only disk, or a
//! too-short header → `VIRTIO_BLK_S_IOERR`; an unknown request type → `VIRTIO_BLK_S_UNSUPP`; a
//! chain with no writable status byte cannot be answered and is returned with length 0.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use virtio_queue::Queue;
use vm_memory::VolatileSlice;

use super::{F_VERSION_1, GuestRam, TYPE_BLOCK, VirtioDevice, add_used, pop_chain};

pub const SECTOR_SIZE: u64 = 512;
pub const QUEUE_SIZE: u16 = 256;
/// Serial numbers are at most 20 bytes (virtio 1.2 §5.2.6, VIRTIO_BLK_ID_BYTES).
pub const ID_BYTES: usize = 20;

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

pub const F_RO: u64 = 1 << 5;
pub const F_BLK_SIZE: u64 = 1 << 6;
pub const F_FLUSH: u64 = 1 << 9;
pub const F_DISCARD: u64 = 1 << 13;
pub const F_WRITE_ZEROES: u64 = 1 << 14;

/// `VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP`.
const WZ_FLAG_UNMAP: u32 = 1;
/// Segments accepted in one discard / write-zeroes request.
pub const MAX_SEGMENTS: u32 = 32;
const HEADER_LEN: u64 = 16;
const SEGMENT_LEN: u64 = 16;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("opening disk image {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serial {serial:?} is longer than {ID_BYTES} bytes")]
    Serial { serial: String },
}

/// A virtio-blk device.
pub struct Block {
    file: File,
    path: PathBuf,
    read_only: bool,
    capacity: u64,
    serial: Vec<u8>,
    config: Vec<u8>,
    features: u64,
    queue_sizes: [u16; 1],
}

impl Block {
    /// Opens `path` (read-only when `read_only`). The disk size is the file size, rounded down
    /// to whole sectors.
    pub fn open(path: &Path, read_only: bool, serial: &str) -> Result<Block, BlockError> {
        if serial.len() > ID_BYTES {
            return Err(BlockError::Serial {
                serial: serial.into(),
            });
        }
        let open_err = |source| BlockError::Open {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        let capacity = len / SECTOR_SIZE;
        let mut features = F_VERSION_1 | F_FLUSH | F_BLK_SIZE;
        if read_only {
            features |= F_RO;
        } else {
            features |= F_DISCARD | F_WRITE_ZEROES;
        }
        Ok(Block {
            file,
            path: path.to_owned(),
            read_only,
            capacity,
            serial: serial.as_bytes().to_vec(),
            config: config_space(capacity),
            features,
            queue_sizes: [QUEUE_SIZE],
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The byte range of `sectors` sectors at `sector`, if it lies on the disk.
    fn range(&self, sector: u64, bytes: u64) -> Option<u64> {
        let start = sector.checked_mul(SECTOR_SIZE)?;
        let end = start.checked_add(bytes)?;
        (end <= self.capacity * SECTOR_SIZE).then_some(start)
    }

    /// Handles one request; returns (status, bytes of data written for the guest).
    fn execute(&mut self, chain: &super::Chain, mem: &GuestRam) -> (u8, u64) {
        let mut hdr = [0u8; HEADER_LEN as usize];
        if chain.read_at(mem, 0, &mut hdr) != hdr.len() {
            return (S_IOERR, 0);
        }
        let kind = u32::from_le_bytes(hdr[0..4].try_into().expect("4 bytes"));
        let sector = u64::from_le_bytes(hdr[8..16].try_into().expect("8 bytes"));
        // The last writable byte is the status; everything writable before it is data.
        let data_in = chain.writable_len() - 1;
        let data_out = chain.readable_len() - HEADER_LEN;
        match kind {
            T_IN => {
                if !data_in.is_multiple_of(SECTOR_SIZE) {
                    return (S_IOERR, 0);
                }
                let Some(off) = self.range(sector, data_in) else {
                    return (S_IOERR, 0);
                };
                let slices = chain.writable_slices(mem, 0, data_in);
                match pread_all(&self.file, &slices, off) {
                    Ok(()) => (S_OK, data_in),
                    Err(_) => (S_IOERR, 0),
                }
            }
            T_OUT => {
                if self.read_only || !data_out.is_multiple_of(SECTOR_SIZE) {
                    return (S_IOERR, 0);
                }
                let Some(off) = self.range(sector, data_out) else {
                    return (S_IOERR, 0);
                };
                let slices = chain.readable_slices(mem, HEADER_LEN, data_out);
                match pwrite_all(&self.file, &slices, off) {
                    Ok(()) => (S_OK, 0),
                    Err(_) => (S_IOERR, 0),
                }
            }
            T_FLUSH => match self.file.sync_data() {
                Ok(()) => (S_OK, 0),
                Err(_) => (S_IOERR, 0),
            },
            T_GET_ID => {
                let n = (data_in as usize).min(ID_BYTES);
                let mut id = [0u8; ID_BYTES];
                id[..self.serial.len()].copy_from_slice(&self.serial);
                let written = chain.write_at(mem, 0, &id[..n]);
                (S_OK, written as u64)
            }
            T_DISCARD | T_WRITE_ZEROES => {
                if self.read_only {
                    return (S_IOERR, 0);
                }
                (self.segments(chain, mem, kind, data_out), 0)
            }
            _ => (S_UNSUPP, 0),
        }
    }

    fn segments(&mut self, chain: &super::Chain, mem: &GuestRam, kind: u32, len: u64) -> u8 {
        if len == 0
            || !len.is_multiple_of(SEGMENT_LEN)
            || len / SEGMENT_LEN > u64::from(MAX_SEGMENTS)
        {
            return S_IOERR;
        }
        // Check every segment before changing anything.
        let mut segs = Vec::new();
        for i in 0..len / SEGMENT_LEN {
            let mut seg = [0u8; SEGMENT_LEN as usize];
            if chain.read_at(mem, HEADER_LEN + i * SEGMENT_LEN, &mut seg) != seg.len() {
                return S_IOERR;
            }
            let sector = u64::from_le_bytes(seg[0..8].try_into().expect("8 bytes"));
            let count = u32::from_le_bytes(seg[8..12].try_into().expect("4 bytes"));
            let flags = u32::from_le_bytes(seg[12..16].try_into().expect("4 bytes"));
            let bytes = u64::from(count) * SECTOR_SIZE;
            // Discard takes no flags; write-zeroes only UNMAP.
            let allowed = if kind == T_DISCARD { 0 } else { WZ_FLAG_UNMAP };
            if flags & !allowed != 0 {
                return S_UNSUPP;
            }
            let Some(off) = self.range(sector, bytes) else {
                return S_IOERR;
            };
            segs.push((off, bytes, flags));
        }
        for (off, bytes, flags) in segs {
            if bytes == 0 {
                continue;
            }
            let res = if kind == T_DISCARD || flags & WZ_FLAG_UNMAP != 0 {
                // A hole reads back as zeroes, so it also serves write-zeroes with UNMAP.
                fallocate(&self.file, FALLOC_PUNCH, off, bytes)
            } else {
                fallocate(&self.file, FALLOC_ZERO, off, bytes)
                    .or_else(|_| write_zeroes(&self.file, off, bytes))
            };
            if res.is_err() {
                return S_IOERR;
            }
        }
        S_OK
    }
}

const FALLOC_PUNCH: libc::c_int = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
const FALLOC_ZERO: libc::c_int = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;

fn fallocate(file: &File, mode: libc::c_int, off: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: fallocate only acts on the open descriptor `file` owns; no memory is passed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, off as i64, len as i64) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn write_zeroes(file: &File, mut off: u64, mut len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let zeroes = vec![0u8; 64 * 1024];
    while len > 0 {
        let n = len.min(zeroes.len() as u64) as usize;
        file.write_all_at(&zeroes[..n], off)?;
        off += n as u64;
        len -= n as u64;
    }
    Ok(())
}

/// Reads from `file` at `off` into guest memory, filling every slice.
fn pread_all(file: &File, slices: &[VolatileSlice<'_, ()>], mut off: u64) -> std::io::Result<()> {
    for s in slices {
        let guard = s.ptr_guard_mut();
        let mut done = 0usize;
        while done < s.len() {
            // SAFETY: the slice was obtained from guest RAM for exactly `s.len()` bytes and
            // the guard keeps that mapping alive; pread writes at most `s.len() - done` bytes
            // starting `done` bytes into it.
            let n = unsafe {
                libc::pread(
                    file.as_raw_fd(),
                    guard.as_ptr().add(done).cast(),
                    s.len() - done,
                    off as i64,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                // Past the end of a file shorter than the disk: zeroes, as the file is sparse.
                // SAFETY: same region as above, `s.len() - done` bytes from `done`.
                unsafe { std::ptr::write_bytes(guard.as_ptr().add(done), 0, s.len() - done) };
                off += (s.len() - done) as u64;
                break;
            }
            done += n as usize;
            off += n as u64;
        }
    }
    Ok(())
}

/// Writes guest memory to `file` at `off`.
fn pwrite_all(file: &File, slices: &[VolatileSlice<'_, ()>], mut off: u64) -> std::io::Result<()> {
    for s in slices {
        let guard = s.ptr_guard();
        let mut done = 0usize;
        while done < s.len() {
            // SAFETY: the slice covers `s.len()` bytes of mapped guest RAM kept alive by the
            // guard; pwrite reads at most `s.len() - done` bytes from `done` onwards.
            let n = unsafe {
                libc::pwrite(
                    file.as_raw_fd(),
                    guard.as_ptr().add(done).cast(),
                    s.len() - done,
                    off as i64,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            done += n as usize;
            off += n as u64;
        }
    }
    Ok(())
}

/// `struct virtio_blk_config` (virtio 1.2 §5.2.4), little-endian, 60 bytes.
pub fn config_space(capacity: u64) -> Vec<u8> {
    let mut c = vec![0u8; 0x3c];
    c[0..8].copy_from_slice(&capacity.to_le_bytes());
    c[0x14..0x18].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes()); // blk_size
    c[0x22..0x24].copy_from_slice(&1u16.to_le_bytes()); // num_queues
    c[0x24..0x28].copy_from_slice(&u32::MAX.to_le_bytes()); // max_discard_sectors
    c[0x28..0x2c].copy_from_slice(&MAX_SEGMENTS.to_le_bytes()); // max_discard_seg
    c[0x2c..0x30].copy_from_slice(&1u32.to_le_bytes()); // discard_sector_alignment
    c[0x30..0x34].copy_from_slice(&u32::MAX.to_le_bytes()); // max_write_zeroes_sectors
    c[0x34..0x38].copy_from_slice(&MAX_SEGMENTS.to_le_bytes()); // max_write_zeroes_seg
    c[0x38] = 1; // write_zeroes_may_unmap
    c
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }
    fn features(&self) -> u64 {
        self.features
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
            let (head, len) = match next {
                Err((head, _)) => (head, 0),
                Ok(chain) if chain.writable_len() == 0 || chain.readable_len() < HEADER_LEN => {
                    // No room for the status byte, or no header: report what we can.
                    let len = if chain.writable_len() > 0 {
                        let at = chain.writable_len() - 1;
                        u32::from(chain.write_at(mem, at, &[S_IOERR]) == 1)
                    } else {
                        0
                    };
                    (chain.head, len)
                }
                Ok(chain) => {
                    let (status, data) = self.execute(&chain, mem);
                    let at = chain.writable_len() - 1;
                    let wrote = chain.write_at(mem, at, &[status]) as u64;
                    (chain.head, (data + wrote) as u32)
                }
            };
            add_used(q, mem, head, len);
            used |= 1 << index;
        }
        used
    }
}
