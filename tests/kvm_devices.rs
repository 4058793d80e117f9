//! Tier 0: the KVM driver's virtio device models, driven the way a guest kernel drives them
//! (rings and buffers in guest RAM, virtio-mmio register accesses, notifications), including
//! the malformed requests an untrusted guest can send. No KVM needed.
#![cfg(target_os = "linux")]

mod kvm_support;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

use devbox::hypervisor::kvm::devices::virtio::block::{self, Block};
use devbox::hypervisor::kvm::devices::virtio::mmio::*;
use devbox::hypervisor::kvm::devices::virtio::rng::Rng;
use devbox::hypervisor::kvm::devices::virtio::{F_VERSION_1, GuestRam, guest_ram};
use kvm_support::*;

const ALL: u64 = u64::MAX;
const MIB: u64 = 1 << 20;

fn ram() -> Arc<GuestRam> {
    Arc::new(guest_ram(64 * MIB).unwrap())
}

struct Disk {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

/// A sparse raw disk of `size` bytes.
fn disk(size: u64) -> Disk {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    Disk { _dir: dir, path }
}

fn blk(d: &Disk, ro: bool) -> (MmioTransport, GuestDriver) {
    let dev = Block::open(&d.path, ro, "devbox-data").unwrap();
    let mem = ram();
    let mut t = MmioTransport::new(Box::new(dev), mem.clone()).unwrap();
    let g = GuestDriver::start(&mut t, mem, 64, ALL);
    assert!(t.is_activated());
    (t, g)
}

/// One request: header, optional data out, optional data in, status. Returns (status, used len).
fn request(
    t: &mut MmioTransport,
    g: &mut GuestDriver,
    kind: u32,
    sector: u64,
    out: &[u8],
    in_len: u32,
) -> (u8, u32, Vec<u8>) {
    let hdr = g.alloc(16);
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    g.put(hdr, &h);
    let mut bufs = vec![(hdr, 16, false)];
    if !out.is_empty() {
        let a = g.alloc(out.len() as u64);
        g.put(a, out);
        bufs.push((a, out.len() as u32, false));
    }
    let inb = g.alloc(u64::from(in_len.max(1)));
    if in_len > 0 {
        bufs.push((inb, in_len, true));
    }
    let status = g.alloc(1);
    g.put(status, &[0xee]);
    bufs.push((status, 1, true));
    let head = g.add_chain(0, &bufs);
    notify(t, 0);
    let used = g.used(0);
    assert_eq!(used.len(), 1, "one request, one used entry");
    assert_eq!(used[0].0, u32::from(head));
    (g.get(status, 1)[0], used[0].1, g.get(inb, in_len as usize))
}

fn allocated(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn transport_identifies_and_negotiates() {
    let d = disk(MIB);
    let mem = ram();
    let mut t =
        MmioTransport::new(Box::new(Block::open(&d.path, false, "x").unwrap()), mem).unwrap();
    assert_eq!(reg(&mut t, REG_MAGIC), 0x7472_6976);
    assert_eq!(reg(&mut t, REG_VERSION), 2);
    assert_eq!(reg(&mut t, REG_DEVICE_ID), 2);
    // Capacity in the config space: 2048 sectors.
    let mut cap = [0u8; 8];
    t.read(REG_CONFIG, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 2048);
    // A driver that does not accept VERSION_1 does not get FEATURES_OK.
    set(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    set(&mut t, REG_DRIVER_FEATURES_SEL, 0);
    set(&mut t, REG_DRIVER_FEATURES, 0xffff_ffff);
    set(
        &mut t,
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    assert_eq!(reg(&mut t, REG_STATUS) & STATUS_FEATURES_OK, 0);
    // Reset clears everything.
    set(&mut t, REG_STATUS, 0);
    assert_eq!(reg(&mut t, REG_STATUS), 0);
    assert_eq!(t.acked_features(), 0);
}

#[test]
fn queue_outside_guest_ram_fails_activation() {
    let d = disk(MIB);
    let mem = ram();
    let mut t =
        MmioTransport::new(Box::new(Block::open(&d.path, false, "x").unwrap()), mem).unwrap();
    set(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    set(&mut t, REG_DRIVER_FEATURES_SEL, 1);
    set(&mut t, REG_DRIVER_FEATURES, (F_VERSION_1 >> 32) as u32);
    set(
        &mut t,
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    set(&mut t, REG_QUEUE_SEL, 0);
    set(&mut t, REG_QUEUE_NUM, 64);
    set(&mut t, REG_QUEUE_DESC_LOW, 0xf000_0000); // in the MMIO gap, not RAM
    set(&mut t, REG_QUEUE_AVAIL_LOW, 0x1000);
    set(&mut t, REG_QUEUE_USED_LOW, 0x2000);
    set(&mut t, REG_QUEUE_READY, 1);
    set(&mut t, REG_STATUS, 0xf);
    assert!(!t.is_activated());
    assert_ne!(reg(&mut t, REG_STATUS) & STATUS_NEEDS_RESET, 0);
    assert_ne!(reg(&mut t, REG_INTERRUPT_STATUS) & INT_CONFIG, 0);
    // Notifying a device that did not activate does nothing (and does not panic).
    notify(&mut t, 0);
}

#[test]
fn block_write_read_flush_get_id() {
    let d = disk(4 * MIB);
    let (mut t, mut g) = blk(&d, false);
    let data = pattern(8 * 512, 7);
    let (st, len, _) = request(&mut t, &mut g, block::T_OUT, 3, &data, 0);
    assert_eq!((st, len), (block::S_OK, 1));
    assert_ne!(t.irq().read().unwrap(), 0, "used buffer interrupt");
    assert_eq!(reg(&mut t, REG_INTERRUPT_STATUS) & INT_VRING, INT_VRING);
    set(&mut t, REG_INTERRUPT_ACK, INT_VRING);
    assert_eq!(reg(&mut t, REG_INTERRUPT_STATUS), 0);

    let mut on_disk = vec![0u8; data.len()];
    std::fs::File::open(&d.path)
        .unwrap()
        .read_exact_at(&mut on_disk, 3 * 512)
        .unwrap();
    assert_eq!(on_disk, data);

    let (st, len, back) = request(&mut t, &mut g, block::T_IN, 3, &[], 8 * 512);
    assert_eq!((st, len), (block::S_OK, 8 * 512 + 1));
    assert_eq!(back, data);

    let (st, _, _) = request(&mut t, &mut g, block::T_FLUSH, 0, &[], 0);
    assert_eq!(st, block::S_OK);

    let (st, len, id) = request(&mut t, &mut g, block::T_GET_ID, 0, &[], 20);
    assert_eq!((st, len), (block::S_OK, 21));
    assert_eq!(&id[..11], b"devbox-data");
    assert!(id[11..].iter().all(|&b| b == 0));
}

#[test]
fn block_discard_and_write_zeroes_free_host_space() {
    let d = disk(8 * MIB);
    let (mut t, mut g) = blk(&d, false);
    // Fill 4 MiB so the file has real blocks.
    let data = pattern(MIB as usize, 1);
    for i in 0..4 {
        let (st, _, _) = request(&mut t, &mut g, block::T_OUT, i * 2048, &data, 0);
        assert_eq!(st, block::S_OK);
    }
    let full = allocated(&d.path);
    assert!(full >= 4 * MIB, "allocated {full}");

    // Discard the first 2 MiB.
    let mut seg = [0u8; 16];
    seg[0..8].copy_from_slice(&0u64.to_le_bytes());
    seg[8..12].copy_from_slice(&4096u32.to_le_bytes());
    let (st, _, _) = request(&mut t, &mut g, block::T_DISCARD, 0, &seg, 0);
    assert_eq!(st, block::S_OK);
    let after_discard = allocated(&d.path);
    assert!(after_discard <= full - 2 * MIB, "{full} -> {after_discard}");
    // SEEK_HOLE finds the hole at the start.
    let f = std::fs::File::open(&d.path).unwrap();
    let hole = nix::unistd::lseek(&f, 0, nix::unistd::Whence::SeekHole).unwrap();
    assert_eq!(hole, 0);
    let (_, _, back) = request(&mut t, &mut g, block::T_IN, 0, &[], 4096);
    assert!(back.iter().all(|&b| b == 0));

    // Write-zeroes with UNMAP frees the third MiB.
    seg[0..8].copy_from_slice(&4096u64.to_le_bytes());
    seg[8..12].copy_from_slice(&2048u32.to_le_bytes());
    seg[12..16].copy_from_slice(&1u32.to_le_bytes());
    let (st, _, _) = request(&mut t, &mut g, block::T_WRITE_ZEROES, 0, &seg, 0);
    assert_eq!(st, block::S_OK);
    let after_wz = allocated(&d.path);
    assert!(
        after_wz <= after_discard - MIB,
        "{after_discard} -> {after_wz}"
    );

    // Write-zeroes without UNMAP zeroes the data in place.
    seg[0..8].copy_from_slice(&6144u64.to_le_bytes());
    seg[8..12].copy_from_slice(&8u32.to_le_bytes());
    seg[12..16].copy_from_slice(&0u32.to_le_bytes());
    let (st, _, _) = request(&mut t, &mut g, block::T_WRITE_ZEROES, 0, &seg, 0);
    assert_eq!(st, block::S_OK);
    let (_, _, back) = request(&mut t, &mut g, block::T_IN, 6144, &[], 8 * 512);
    assert!(back.iter().all(|&b| b == 0));
    let (_, _, back) = request(&mut t, &mut g, block::T_IN, 6152, &[], 512);
    assert_eq!(back, data[8 * 512..9 * 512]);
}

#[test]
fn block_read_only_refuses_writes() {
    let d = disk(MIB);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&d.path)
        .unwrap()
        .write_all_at(b"config", 0)
        .unwrap();
    let (mut t, mut g) = blk(&d, true);
    assert_ne!(t.acked_features() & block::F_RO, 0);
    assert_eq!(t.acked_features() & block::F_DISCARD, 0);
    let (st, _, _) = request(&mut t, &mut g, block::T_OUT, 0, &[0u8; 512], 0);
    assert_eq!(st, block::S_IOERR);
    let mut seg = [0u8; 16];
    seg[8..12].copy_from_slice(&1u32.to_le_bytes());
    let (st, _, _) = request(&mut t, &mut g, block::T_DISCARD, 0, &seg, 0);
    assert_eq!(st, block::S_IOERR);
    let (st, _, back) = request(&mut t, &mut g, block::T_IN, 0, &[], 512);
    assert_eq!(st, block::S_OK);
    assert_eq!(&back[..6], b"config");
}

#[test]
fn block_rejects_bad_requests() {
    let d = disk(MIB); // 2048 sectors
    let (mut t, mut g) = blk(&d, false);
    let before = std::fs::read(&d.path).unwrap();
    // Past the end, straddling the end, and a sector number that overflows.
    for sector in [2048, 2047, u64::MAX / 256] {
        let (st, len, _) = request(&mut t, &mut g, block::T_IN, sector, &[], 1024);
        assert_eq!((st, len), (block::S_IOERR, 1), "read at {sector}");
        let (st, _, _) = request(&mut t, &mut g, block::T_OUT, sector, &[1u8; 1024], 0);
        assert_eq!(st, block::S_IOERR, "write at {sector}");
    }
    // Discard past the end, and a request with too many segments.
    let mut seg = [0u8; 16];
    seg[0..8].copy_from_slice(&2000u64.to_le_bytes());
    seg[8..12].copy_from_slice(&100u32.to_le_bytes());
    let (st, _, _) = request(&mut t, &mut g, block::T_DISCARD, 0, &seg, 0);
    assert_eq!(st, block::S_IOERR);
    let (st, _, _) = request(&mut t, &mut g, block::T_DISCARD, 0, &[0u8; 16 * 33], 0);
    assert_eq!(st, block::S_IOERR);
    // Unknown flags on a discard segment, unknown request type.
    seg[0..8].copy_from_slice(&0u64.to_le_bytes());
    seg[12..16].copy_from_slice(&2u32.to_le_bytes());
    let (st, _, _) = request(&mut t, &mut g, block::T_DISCARD, 0, &seg, 0);
    assert_eq!(st, block::S_UNSUPP);
    let (st, _, _) = request(&mut t, &mut g, 99, 0, &[], 0);
    assert_eq!(st, block::S_UNSUPP);
    // Data that is not a whole number of sectors.
    let (st, _, _) = request(&mut t, &mut g, block::T_OUT, 0, &[1u8; 100], 0);
    assert_eq!(st, block::S_IOERR);
    assert_eq!(
        std::fs::read(&d.path).unwrap(),
        before,
        "the disk is unchanged"
    );

    // Header too short: IOERR in the status byte.
    let hdr = g.alloc(8);
    let status = g.alloc(1);
    g.add_chain(0, &[(hdr, 8, false), (status, 1, true)]);
    notify(&mut t, 0);
    assert_eq!(g.used(0)[0].1, 1);
    assert_eq!(g.get(status, 1)[0], block::S_IOERR);

    // No writable status byte (wrong direction): returned unused, nothing written.
    let hdr = g.alloc(16);
    let st = g.alloc(1);
    g.put(st, &[0xee]);
    g.add_chain(0, &[(hdr, 16, false), (st, 1, false)]);
    notify(&mut t, 0);
    assert_eq!(g.used(0)[0].1, 0);
    assert_eq!(g.get(st, 1)[0], 0xee);

    // Readable after writable: refused.
    let a = g.alloc(512);
    g.add_chain(0, &[(hdr, 16, false), (a, 512, true), (st, 1, false)]);
    notify(&mut t, 0);
    assert_eq!(g.used(0)[0].1, 0);

    // A buffer outside guest RAM (and one wrapping the address space): refused untouched.
    for bad in [0xf000_0000u64, u64::MAX - 10] {
        g.add_chain(0, &[(hdr, 16, false), (bad, 512, true), (st, 1, true)]);
        notify(&mut t, 0);
        assert_eq!(g.used(0)[0].1, 0, "buffer at {bad:#x}");
        assert_eq!(g.get(st, 1)[0], 0xee);
    }

    // A descriptor loop (desc 60 -> 61 -> 60 ...) ends, returned unused.
    g.raw_desc(0, 60, hdr, 16, F_NEXT, 61);
    g.raw_desc(0, 61, st, 1, F_NEXT | F_WRITE, 60);
    g.publish(0, 60);
    notify(&mut t, 0);
    assert_eq!(g.used(0), vec![(60, 0)]);

    // A head index past the queue size.
    g.publish(0, 500);
    notify(&mut t, 0);
    assert!(g.used(0).len() <= 1);

    // The device still works afterwards.
    let (st, _, _) = request(&mut t, &mut g, block::T_IN, 0, &[], 512);
    assert_eq!(st, block::S_OK);
}

#[test]
fn rng_fills_buffers() {
    let mem = ram();
    let mut t = MmioTransport::new(Box::new(Rng::new()), mem.clone()).unwrap();
    let mut g = GuestDriver::start(&mut t, mem, 16, ALL);
    assert_eq!(reg(&mut t, REG_DEVICE_ID), 4);
    let a = g.alloc(256);
    let b = g.alloc(100);
    g.add_chain(0, &[(a, 256, true), (b, 100, true)]);
    notify(&mut t, 0);
    assert_eq!(g.used(0)[0].1, 356);
    let got = g.get(a, 256);
    assert!(got.iter().any(|&x| x != 0));
    // A readable-only chain gets nothing.
    g.add_chain(0, &[(a, 16, false)]);
    notify(&mut t, 0);
    assert_eq!(g.used(0)[0].1, 0);
}

/// Pages of `len` bytes at guest address `addr` that are resident on the host (mincore).
fn resident_pages(mem: &GuestRam, addr: u64, len: usize) -> usize {
    use vm_memory::GuestMemoryBackend;
    let slice = mem.get_slice(vm_memory::GuestAddress(addr), len).unwrap();
    let guard = slice.ptr_guard();
    let pages = len.div_ceil(4096);
    let mut vec = vec![0u8; pages];
    // SAFETY: a live, page-aligned range of the guest RAM mapping and a vector of one byte
    // per page.
    let r = unsafe { libc::mincore(guard.as_ptr() as *mut libc::c_void, len, vec.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 == 1).count()
}

#[test]
fn balloon_gives_reported_free_pages_back_to_the_host() {
    use devbox::hypervisor::kvm::devices::virtio::balloon::{self, Balloon};
    let mem = ram();
    let mut t = MmioTransport::new(Box::new(Balloon::new()), mem.clone()).unwrap();
    let mut g = GuestDriver::start(&mut t, mem.clone(), 16, ALL);
    assert_eq!(reg(&mut t, REG_DEVICE_ID), 5);
    set(&mut t, REG_DEVICE_FEATURES_SEL, 0);
    assert_ne!(
        u64::from(reg(&mut t, REG_DEVICE_FEATURES)) & balloon::F_REPORTING,
        0,
        "free page reporting is offered"
    );
    // num_pages: the balloon is never asked to inflate.
    assert_eq!(reg(&mut t, 0x100), 0);

    // 2 MiB that the guest used (touched: resident), then freed and reported, between two
    // pages it still uses.
    let before = g.alloc(4096);
    let free = g.alloc(2 * MIB);
    let after = g.alloc(4096);
    g.put(before, &[0xaa; 4096]);
    g.put(free, &vec![0x55; (2 * MIB) as usize]);
    g.put(after, &[0xbb; 4096]);
    assert_eq!(resident_pages(&mem, free, (2 * MIB) as usize), 512);
    g.add_chain(balloon::REPORTING, &[(free, (2 * MIB) as u32, true)]);
    notify(&mut t, balloon::REPORTING as u32);
    assert_eq!(
        g.used(balloon::REPORTING).len(),
        1,
        "the report is returned"
    );
    assert_eq!(
        resident_pages(&mem, free, (2 * MIB) as usize),
        0,
        "the host no longer holds the reported range"
    );
    assert!(g.get(free, 4096).iter().all(|&b| b == 0));
    assert_eq!(
        g.get(before, 4096),
        vec![0xaa; 4096],
        "neighbours keep their data"
    );
    assert_eq!(g.get(after, 4096), vec![0xbb; 4096]);

    // A range that starts and ends inside pages releases only the whole pages within.
    let p = g.alloc(3 * 4096);
    g.put(p, &vec![0x11; 3 * 4096]);
    g.add_chain(balloon::REPORTING, &[(p + 100, (2 * 4096) as u32, true)]);
    notify(&mut t, balloon::REPORTING as u32);
    assert_eq!(g.used(balloon::REPORTING).len(), 1);
    assert_eq!(
        g.get(p, 4096),
        vec![0x11; 4096],
        "the partial first page is kept"
    );
    assert!(
        g.get(p + 4096, 4096).iter().all(|&b| b == 0),
        "the whole page is released"
    );
    assert_eq!(
        g.get(p + 2 * 4096, 4096),
        vec![0x11; 4096],
        "the partial last page is kept"
    );

    // A range outside guest RAM is returned unused, and nothing is released.
    let keep = g.alloc(4096);
    g.put(keep, &[0x77; 4096]);
    g.add_chain(balloon::REPORTING, &[(60 * MIB, (8 * MIB) as u32, true)]);
    notify(&mut t, balloon::REPORTING as u32);
    assert_eq!(g.used(balloon::REPORTING)[0].1, 0);
    assert_eq!(g.get(keep, 4096), vec![0x77; 4096]);

    // Inflated pages (4 KiB PFNs) go back too; the device keeps working after bad input.
    let q = g.alloc(4096);
    g.put(q, &[0x33; 4096]);
    let pfns = g.alloc(8);
    g.put(pfns, &((q / 4096) as u32).to_le_bytes());
    g.add_chain(balloon::INFLATE, &[(pfns, 4, false)]);
    notify(&mut t, balloon::INFLATE as u32);
    assert_eq!(g.used(balloon::INFLATE).len(), 1);
    assert_eq!(resident_pages(&mem, q, 4096), 0);
}
