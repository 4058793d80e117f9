#!/usr/bin/env bash
# File-sharing figures, measured in one run, same image, inside a network namespace this
# script creates. Workloads run in the guest on the shared folder:
#   seq-write  256 MiB written with dd (conv=fsync)
#   seq-read   the same file read back after dropping the guest's caches
#   stat-10k   stat of every file in a 10,000-file tree (what `git status` does), cold caches
#   create-1k  1,000 small files created
# against (a) devbox's embedded NFS server, (b) QEMU's 9p (virtfs, virtio-9p, 9p2000.L) on the
# same host directory, and (c) the Linux kernel NFS server when the host kernel has one.
# Times are host wall-clock of `ssh … CMD`, minus the median of `ssh … true`.
# Needs root. RUNS (default 3) repeats each workload; medians are printed.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}

cargo build --release -q
DEVBOX=$(realpath "${CARGO_TARGET_DIR:-target}")/release/devbox
work=$(mktemp -d)
export DEVBOX_HOME=$work/home
# The host's own resolver is never a target: names the machine does not own go nowhere.
export DEVBOX_DNS_UPSTREAMS=127.0.0.1:53
NS=devbox-nfsbench-$$
ip netns add "$NS"
ip -n "$NS" link set lo up
cleanup() {
  ip netns exec "$NS" "$DEVBOX" stop --force nfsb >/dev/null 2>&1 || true
  [ -n "${QPID:-}" ] && kill "$QPID" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
nsx() { ip netns exec "$NS" "$@"; }
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

share=$work/share
mkdir -p "$share/tree"
for d in $(seq 0 99); do
  mkdir -p "$share/tree/d$d"
  for f in $(seq 0 99); do : > "$share/tree/d$d/f$f"; done
done

"$DEVBOX" image build >/dev/null
nsx "$DEVBOX" create nfsb --cpus 2 --memory 2048 --disk-size 4G --share "$share:/mnt/share" >/dev/null 2>&1
M=$DEVBOX_HOME/machines/nfsb
ip=192.168.64.2
echo "$ip $(cat "$M/ssh_host_ed25519_key.pub")" > "$work/known_hosts"
ssh_opts=(-i "$M/id_ed25519" -o UserKnownHostsFile="$work/known_hosts" -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR)
g() { nsx ssh "${ssh_opts[@]}" "root@$ip" "$@"; }
timed() { local t; t=$(now); g "$1" >/dev/null; echo "$(now) - $t" | bc -l; }

# One workload, RUNS times, minus the SSH round trip; prints the median in seconds.
run_workloads() { # $1: label, $2: guest mount point
  local mnt=$2 base
  base=$(for _ in 1 2 3 4 5; do timed true; done | median)
  for w in seq-write seq-read stat-10k create-1k; do
    for _ in $(seq "$RUNS"); do
      case $w in
        seq-write) cmd="rm -f $mnt/seq; dd if=/dev/zero of=$mnt/seq bs=1M count=256 conv=fsync 2>/dev/null" ;;
        seq-read) cmd="sync; echo 3 > /proc/sys/vm/drop_caches; cat $mnt/seq > /dev/null" ;;
        stat-10k) cmd="echo 3 > /proc/sys/vm/drop_caches; ls -lR $mnt/tree > /dev/null" ;;
        create-1k) cmd="rm -rf $mnt/c; mkdir $mnt/c; cd $mnt/c; i=0; while [ \$i -lt 1000 ]; do echo x > f\$i; i=\$((i+1)); done" ;;
      esac
      echo "$(timed "$cmd") - $base" | bc -l
    done | median > "$work/$1-$w"
    printf '%-8s %-10s %8.3f s\n' "$1" "$w" "$(cat "$work/$1-$w")" >&2
  done
}

# (a) devbox's NFS server.
nsx "$DEVBOX" start nfsb >/dev/null 2>&1
g "mount | grep -q ' /mnt/share type nfs'"
run_workloads devbox /mnt/share
nsx "$DEVBOX" stop nfsb >/dev/null 2>&1

# (b) 9p: plain QEMU, the same image, config drive and disk, plus a virtio-9p device; only
# where the guest kernel has 9p (Debian's cloud kernel, which devbox's image uses, is built
# without it).
img=$(nsx "$DEVBOX" inspect nfsb | python3 -c 'import json,sys; print(json.load(sys.stdin)["image"]["dir"])')
if ! zstd -dc "$img/initrd.img" | cpio -it --quiet 2>/dev/null | grep -q '/9pnet_virtio.ko$'; then
  echo "9p: the guest kernel has no 9p modules (Debian's cloud kernel is built without CONFIG_9P_FS), so there is no 9p figure on the same guest" >&2
  p9=unavailable
else
  p9=measured
fi
if [ "$p9" = measured ]; then
nsx ip tuntap add dev tapnfs mode tap
nsx ip addr add 192.168.64.1/24 dev tapnfs
nsx ip link set tapnfs up
khz=$(awk -F: '/^cpu MHz/ {printf "%d", $2*1000; exit}' /proc/cpuinfo)
nsx qemu-system-x86_64 -machine microvm,acpi=on,rtc=on -accel tcg -cpu max -smp 2 -m 2048 \
  -nodefaults -no-user-config -display none -no-reboot \
  -chardev "file,id=c,path=$work/serial-9p.log" -serial chardev:c \
  -kernel "$img/vmlinuz" -initrd "$img/initrd.img" -append "console=ttyS0 panic=-1 loglevel=4 tsc_early_khz=$khz tsc=reliable" \
  -drive "id=config,file=$M/config.tar,format=raw,if=none,readonly=on" -device virtio-blk-device,drive=config,serial=devbox-config \
  -drive "id=data,file=$M/disk.raw,format=raw,if=none,cache=writeback,discard=unmap" -device virtio-blk-device,drive=data,serial=devbox-data \
  -netdev tap,id=n,ifname=tapnfs,script=no,downscript=no,vhost=off -device "virtio-net-device,netdev=n,mac=$(grep mac: "$M/machine.yaml" | awk '{print $2}')" \
  -device virtio-rng-device \
  -fsdev "local,id=fs0,path=$share,security_model=none" -device virtio-9p-device,fsdev=fs0,mount_tag=share &
QPID=$!
until grep -q "devbox-guest: ready" "$work/serial-9p.log" 2>/dev/null; do sleep 0.2; done
g "modprobe 9pnet_virtio && mkdir -p /mnt/9p && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share /mnt/9p"
run_workloads 9p /mnt/9p
g poweroff >/dev/null 2>&1 || true
wait "$QPID" 2>/dev/null || true
QPID=
fi

# (c) the kernel NFS server, where the host kernel has one.
if grep -qw nfsd /proc/filesystems 2>/dev/null || modprobe -n nfsd 2>/dev/null; then
  echo "kernel NFS server: available but not measured by this script (needs nfs-kernel-server and /etc/exports)" >&2
  kernel=unmeasured
else
  echo "kernel NFS server: this host's kernel has no nfsd (no 'nfsd' in /proc/filesystems, no module), so it cannot be measured here" >&2
  kernel=unavailable
fi

echo
printf '%-10s %10s %10s %12s\n' workload devbox 9p "9p/devbox"
for w in seq-write seq-read stat-10k create-1k; do
  d=$(cat "$work/devbox-$w")
  if [ "$p9" = measured ]; then
    n=$(cat "$work/9p-$w")
    printf '%-10s %9.3fs %9.3fs %11.2fx\n' "$w" "$d" "$n" "$(echo "$n / $d" | bc -l)"
  else
    printf '%-10s %9.3fs %10s %12s\n' "$w" "$d" "n/a" "n/a"
  fi
done
echo "(ratio > 1: devbox is faster; goal >= 2x on stat-10k and create-1k)"
echo "9p: $p9"
echo "kernel NFS server: $kernel"
