#!/usr/bin/env bash
# Walking-skeleton figures, measured in one run inside a network namespace this script creates:
#  1. `devbox start` -> ready, against plain qemu-system-x86_64 booting the same kernel,
#     initramfs, devices and acceleration to the same readiness marker on the console;
#  2. `devbox ssh NAME -- true` against OpenSSH's `ssh -i KEY root@IP true` to the same guest.
# Prints medians and ratios. Needs root. RUNS (default 5) and SSH_RUNS (default 20) tune it.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-5}
SSH_RUNS=${SSH_RUNS:-20}

cargo build --release -q
DEVBOX=$(realpath "${CARGO_TARGET_DIR:-target}")/release/devbox
work=$(mktemp -d)
export DEVBOX_HOME=$work/home
# The host's own resolver is never a target: names the machine does not own go nowhere.
export DEVBOX_DNS_UPSTREAMS=127.0.0.1:53
NS=devbox-bench-$$
ip netns add "$NS"
ip -n "$NS" link set lo up
cleanup() {
  ip netns exec "$NS" "$DEVBOX" stop --force bench >/dev/null 2>&1 || true
  [ -n "${QPID:-}" ] && kill "$QPID" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
nsx() { ip netns exec "$NS" "$@"; }
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

"$DEVBOX" image build >/dev/null
# No shares: the comparison is about orchestration; plain QEMU has no NFS server to mount.
nsx "$DEVBOX" create bench --no-share --cpus 2 --memory 2048 --disk-size 4G >/dev/null 2>&1
M=$DEVBOX_HOME/machines/bench
echo "warm-up boot (formats the data disk; not measured)" >&2
nsx "$DEVBOX" start bench >/dev/null 2>&1
accel=$(nsx "$DEVBOX" status bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["runtime"]["accel"])')

# ---- 2. SSH latency (on the warm-up boot) ----
ip=$(nsx "$DEVBOX" ip bench)
echo "$ip $(cat "$M/ssh_host_ed25519_key.pub")" > "$work/known_hosts"
ssh_opts=(-i "$M/id_ed25519" -o UserKnownHostsFile="$work/known_hosts" -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR)
nsx ssh "${ssh_opts[@]}" "root@$ip" true   # check it works at all
: > "$work/ssh_devbox"; : > "$work/ssh_openssh"
for _ in $(seq "$SSH_RUNS"); do
  t=$(now); nsx "$DEVBOX" ssh bench -- true; echo "$(now) - $t" | bc -l >> "$work/ssh_devbox"
  t=$(now); nsx ssh "${ssh_opts[@]}" "root@$ip" true; echo "$(now) - $t" | bc -l >> "$work/ssh_openssh"
done
nsx "$DEVBOX" stop bench >/dev/null 2>&1

# ---- 1. boot to ready, devbox and plain QEMU alternating (so host load hits both alike) ----
# Plain QEMU: the same image, config drive and disk (the machine is stopped), its own TAP.
img=$(nsx "$DEVBOX" inspect bench | python3 -c 'import json,sys; print(json.load(sys.stdin)["image"]["dir"])')
khz=$(awk -F: '/^cpu MHz/ {printf "%d", $2*1000; exit}' /proc/cpuinfo)
if [ "$accel" = tcg ]; then
  accel_args=(-accel tcg -cpu max); cmdline="console=ttyS0 panic=-1 loglevel=4 tsc_early_khz=$khz tsc=reliable cgroup.memory=nokmem"
else
  accel_args=(-accel kvm -cpu host); cmdline="console=ttyS0 panic=-1 loglevel=4"
fi
# The image's system disk, as the qemu driver attaches it (images of the earlier layout have none).
root_args=()
if [ -f "$img/root.img" ]; then
  root_args=(-drive "id=root,file=$img/root.img,format=raw,if=none,readonly=on" -device virtio-blk-device,drive=root,serial=devbox-root)
fi
plain_qemu() { # $1: run number
  local log=$work/serial-$1.log t d
  : > "$log"
  nsx ip tuntap add dev tapbench mode tap
  nsx ip addr add 192.168.64.1/24 dev tapbench
  nsx ip link set tapbench up
  t=$(now)
  nsx qemu-system-x86_64 -machine microvm,acpi=on,rtc=on "${accel_args[@]}" -smp 2 -m 2048 \
    -nodefaults -no-user-config -display none -no-reboot \
    -chardev "file,id=c,path=$log" -serial chardev:c \
    -kernel "$img/vmlinuz" -initrd "$img/initrd.img" -append "$cmdline" \
    -drive "id=config,file=$M/config.tar,format=raw,if=none,readonly=on" -device virtio-blk-device,drive=config,serial=devbox-config \
    -drive "id=data,file=$M/disk.raw,format=raw,if=none,cache=writeback,discard=unmap,detect-zeroes=unmap" -device virtio-blk-device,drive=data,serial=devbox-data \
    -netdev tap,id=n,ifname=tapbench,script=no,downscript=no,vhost=off -device "virtio-net-device,netdev=n,mac=$(grep mac: "$M/machine.yaml" | awk '{print $2}')" \
    -device virtio-rng-device "${root_args[@]}" &
  QPID=$!
  until grep -q "devbox-guest: ready" "$log"; do sleep 0.05; done
  d=$(echo "$(now) - $t" | bc -l); echo "$d" >> "$work/boot_qemu"; echo "plain qemu #$1: $d s" >&2
  # A clean poweroff, as devbox stop does, so the next boot finds a clean filesystem.
  nsx ssh "${ssh_opts[@]}" "root@$ip" poweroff >/dev/null 2>&1 || true
  for _ in $(seq 600); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.1; done
  kill "$QPID" 2>/dev/null || true; wait "$QPID" 2>/dev/null || true; QPID=
  nsx ip link del tapbench
}
: > "$work/boot_devbox"; : > "$work/boot_qemu"
for i in $(seq "$RUNS"); do
  t=$(now); nsx "$DEVBOX" start bench >/dev/null 2>&1; d=$(echo "$(now) - $t" | bc -l)
  echo "$d" >> "$work/boot_devbox"; echo "devbox start #$i: $d s" >&2
  nsx "$DEVBOX" stop bench >/dev/null 2>&1
  plain_qemu "$i"
done

bd=$(median < "$work/boot_devbox"); bq=$(median < "$work/boot_qemu")
sd=$(median < "$work/ssh_devbox"); so=$(median < "$work/ssh_openssh")
echo
echo "acceleration: $accel, runs: $RUNS boots, $SSH_RUNS ssh"
printf 'start->ready  devbox %.2f s   plain qemu %.2f s   ratio %.3f  (goal <= 1.10)\n' "$bd" "$bq" "$(echo "$bd / $bq" | bc -l)"
printf 'ssh -- true   devbox %.3f s   openssh    %.3f s   ratio %.3f  (goal <= 1.00)\n' "$sd" "$so" "$(echo "$sd / $so" | bc -l)"
