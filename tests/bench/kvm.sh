#!/usr/bin/env bash
# KVM driver benchmarks: virtio-blk device-model throughput against pread, and VMM memory
# overhead (RSS growth minus guest RAM touched) for the tiny smoke-test guest.
# Usage: tests/bench/kvm.sh   (from the repository root; honours CARGO_TARGET_DIR)
set -euo pipefail
cd "$(dirname "$0")/../.."

echo "== virtio-blk: 4 KiB random reads through the queue vs pread (release build)"
cargo test --release --quiet --test kvm_bench -- --ignored --nocapture --test-threads=1 2>&1 \
    | grep -E "virtio-blk|pread|queue"

echo "== VMM memory overhead, tiny guest (128 MiB RAM, 1 vCPU) on /dev/kvm"
cargo test --release --quiet --test privileged -- --nocapture --test-threads=1 \
    tiny_guest_prints_and_resets_through_i8042 2>&1 | grep -E "^\[kvm\]|ignored" || true

echo "== full boot"
cargo test --release --quiet --test privileged -- --nocapture --test-threads=1 \
    real_guest_boots_and_finds_its_devices 2>&1 | grep -E "^\[kvm-boot\]|ignored" || true
