//! Benchmarks for the KVM driver's device models (ignored by default; `tests/bench/kvm.sh`
//! runs them in release mode): virtio-blk 4 KiB random reads through the queue, against
//! `pread` of the same offsets on the same file from one thread.
#![cfg(target_os = "linux")]

mod kvm_support;

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use devbox::hypervisor::kvm::devices::virtio::block::{self, Block};
use devbox::hypervisor::kvm::devices::virtio::guest_ram;
use devbox::hypervisor::kvm::devices::virtio::mmio::MmioTransport;
use kvm_support::*;

const FILE_MIB: u64 = 128;
const READS: usize = 50_000;

/// A deterministic xorshift sequence of sector-aligned 4 KiB offsets.
fn offsets() -> Vec<u64> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let blocks = FILE_MIB * 256;
    (0..READS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % blocks) * 4096
        })
        .collect()
}

#[test]
#[ignore = "benchmark: run through tests/bench/kvm.sh"]
fn blk_random_read_4k_vs_pread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.raw");
    {
        let f = std::fs::File::create(&path).unwrap();
        let chunk: Vec<u8> = (0..(1 << 20)).map(|i| (i * 7) as u8).collect();
        for i in 0..FILE_MIB {
            f.write_all_at(&chunk, i << 20).unwrap();
        }
        f.sync_all().unwrap();
    }
    let offs = offsets();

    // Baseline: pread into one buffer, page cache warm.
    let f = std::fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; 4096];
    for &o in &offs {
        f.read_exact_at(&mut buf, o).unwrap();
    }
    let t = Instant::now();
    for &o in &offs {
        f.read_exact_at(&mut buf, o).unwrap();
    }
    let pread = t.elapsed();

    let mem = Arc::new(guest_ram(256 << 20).unwrap());
    let dev = Block::open(&path, true, "bench").unwrap();
    let mut tr = MmioTransport::new(Box::new(dev), mem.clone()).unwrap();
    let mut g = GuestDriver::start(&mut tr, mem, 256, u64::MAX);
    const BATCH: usize = 32;
    let slots: Vec<(u64, u64, u64)> = (0..BATCH)
        .map(|_| (g.alloc(16), g.alloc(4096), g.alloc(1)))
        .collect();
    let mut run = |batch: usize| {
        let t = Instant::now();
        for chunk in offs.chunks(batch) {
            for (k, &o) in chunk.iter().enumerate() {
                let (h, d, s) = slots[k];
                let mut hdr = [0u8; 16];
                hdr[0..4].copy_from_slice(&block::T_IN.to_le_bytes());
                hdr[8..16].copy_from_slice(&(o / 512).to_le_bytes());
                g.put(h, &hdr);
                g.add_chain(0, &[(h, 16, false), (d, 4096, true), (s, 1, true)]);
            }
            notify(&mut tr, 0);
            let used = g.used(0);
            assert_eq!(used.len(), chunk.len());
            let _ = tr.irq().read();
        }
        t.elapsed()
    };
    run(BATCH); // warm-up
    let one = run(1);
    let batched = run(BATCH);
    let iops = |d: std::time::Duration| READS as f64 / d.as_secs_f64();
    println!(
        "virtio-blk 4 KiB random read, {READS} reads over a {FILE_MIB} MiB file (page cache warm):"
    );
    println!("  pread baseline            {:>10.0} IOPS", iops(pread));
    println!(
        "  queue, 1 request/notify   {:>10.0} IOPS  ({:.2}x pread)",
        iops(one),
        pread.as_secs_f64() / one.as_secs_f64()
    );
    println!(
        "  queue, {BATCH} requests/notify {:>8.0} IOPS  ({:.2}x pread)",
        iops(batched),
        pread.as_secs_f64() / batched.as_secs_f64()
    );
}
