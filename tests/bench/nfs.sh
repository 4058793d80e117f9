#!/usr/bin/env bash
# File-sharing figures, measured in one run on one guest image, inside a network namespace
# this script creates. Workloads run in the guest on the shared folder:
#   seq-write  256 MiB written with dd (conv=fsync)
#   seq-read   the same file read back after dropping the guest's caches
#   stat-10k   stat of every file in a 10,000-file tree (what `git status` does), cold caches
#   create-1k  1,000 small files created
# against:
#   devbox   devbox's embedded NFS server (the machine's own share)
#   knfsd    the Linux kernel NFS server (nfs-kernel-server), where the host kernel has nfsd
#   ganesha  NFS-Ganesha (userspace NFSv3, FSAL_VFS), in the same guest, same options;
#            measured always, and the stand-in for knfsd on hosts without nfsd
#   9p       QEMU's virtfs (virtio-9p, 9p2000.L, msize 512 KiB): same image, config drive
#            and data disk, booted by plain QEMU (devbox's driver has no virtfs device)
#   virtiofs virtio-fs: the virtiofsd QEMU ships, over vhost-user with the guest's RAM shared,
#            booted the same way (VIRTIOFSD overrides its path)
# The image uses Debian's generic kernel (`devbox image build --kernel generic`): the cloud
# kernel of the default image is built without 9p. It is built into its own cache
# (BENCH_CACHE, default /var/cache/devbox-bench) so that the user's newest image stays theirs.
# Every server exports the same host directory to the same guest address; all NFS mounts use
# devbox's guest options (vers=3, tcp, nolock, noacl, the kernel's default rsize/wsize).
# Times are host wall-clock of `ssh … CMD`, minus the median of `ssh … true`.
# Needs root. RUNS (default 3) repeats each workload; medians are printed.
#
# BASELINE=/path/to/devbox compares this build with another build of devbox instead (an
# earlier commit's `target/release/devbox`): a second machine is created and started by that
# binary (its own image, built by it into the same cache), sharing the same directory, owned
# by an ordinary user as a home is; the two shares alternate run by run, each guest running
# its own workload while the other idles. Ganesha, knfsd and 9p are skipped then.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
BENCH_CACHE=${BENCH_CACHE:-/var/cache/devbox-bench}

if [ -z "${BASELINE:-}" ] && { ! command -v ganesha.nfsd >/dev/null || [ ! -e /usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so ]; }; then
  had_rpcbind=$(pgrep -x rpcbind || true)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    nfs-ganesha nfs-ganesha-vfs rpcbind >/dev/null
  # The package starts rpcbind on the host's network; this script runs its own in the
  # namespace instead.
  [ -n "$had_rpcbind" ] || pkill -x rpcbind || true
fi

cargo build --release -q
DEVBOX=$(realpath "${CARGO_TARGET_DIR:-target}")/release/devbox
work=$(mktemp -d)
export DEVBOX_HOME=$work/home DEVBOX_CACHE=$BENCH_CACHE
# The host's own resolver is never a target: names the machine does not own go nowhere.
export DEVBOX_DNS_UPSTREAMS=127.0.0.1:53
NS=devbox-nfsbench-$$
ip netns add "$NS"
ip -n "$NS" link set lo up
cleanup() {
  ip netns exec "$NS" "$DEVBOX" stop --force nfsb >/dev/null 2>&1 || true
  [ -n "${BASELINE:-}" ] && DEVBOX_HOME=$work/home-baseline ip netns exec "$NS" "$BASELINE" stop --force nfsbase >/dev/null 2>&1 || true
  [ -n "${QPID:-}" ] && kill "$QPID" 2>/dev/null || true
  [ -n "${VPID:-}" ] && kill "$VPID" 2>/dev/null || true
  [ -f "$work/ganesha.pid" ] && kill "$(cat "$work/ganesha.pid")" 2>/dev/null || true
  [ -n "${RPCPID:-}" ] && kill "$RPCPID" 2>/dev/null || true
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
# A user's directory, as a home or project is: devbox acts with its owner's identity there
# (and refuses a directory root owns without --allow-root-share).
chown -R 1000:1000 "$share"

image=$("$DEVBOX" image build --kernel generic 2>/dev/null)
nsx "$DEVBOX" create nfsb --image "$image" --cpus 2 --memory 2048 --disk-size 4G --share "$share:/mnt/share" >/dev/null 2>&1
M=$DEVBOX_HOME/machines/nfsb
host_ip=192.168.64.1
ip=192.168.64.2
echo "$ip $(cat "$M/ssh_host_ed25519_key.pub")" > "$work/known_hosts"
ssh_opts=(-i "$M/id_ed25519" -o UserKnownHostsFile="$work/known_hosts" -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR)
g() { nsx ssh "${ssh_opts[@]}" "root@$ip" "$@"; }
# The guest a label's workloads run in: the baseline's machine for `baseline`, else this one.
gl() { local label=$1; shift; if [ "$label" = baseline ]; then gb "$@"; else g "$@"; fi; }
timed() { local t; t=$(now); gl "$1" "$2" >/dev/null || { echo "workload failed: $2" >&2; return 1; }; echo "$(now) - $t" | bc -l; }

# Each workload RUNS times on every mount given, alternating between them run by run, so
# that a change in the host's load falls on all of them alike; each time is minus the SSH
# round trip. Writes the median of each (label, workload) to $work/LABEL-WORKLOAD.
run_workloads() { # LABEL:MOUNT...
  local base lm label mnt w r seq c t cmd
  for lm in "$@"; do
    label=${lm%%:*}
    for _ in 1 2 3 4 5; do timed "$label" true; done | median > "$work/$label-base"
  done
  for w in seq-write seq-read stat-10k create-1k; do
    for r in $(seq "$RUNS"); do
      for lm in "$@"; do
        # Mounts of one host directory: each server writes under names of its own.
        label=${lm%%:*} mnt=${lm#*:}
        seq=$mnt/seq-$label c=$mnt/c-$label
        case $w in
          seq-write) cmd="rm -f $seq; dd if=/dev/zero of=$seq bs=1M count=256 conv=fsync 2>/dev/null" ;;
          seq-read) cmd="sync; echo 3 > /proc/sys/vm/drop_caches; cat $seq > /dev/null" ;;
          stat-10k) cmd="echo 3 > /proc/sys/vm/drop_caches; ls -lR $mnt/tree > /dev/null" ;;
          create-1k) cmd="set -e; rm -rf $c; mkdir $c; cd $c; i=0; while [ \$i -lt 1000 ]; do echo x > f\$i; i=\$((i+1)); done" ;;
        esac
        t=$(timed "$label" "$cmd")
        echo "$t - $(cat "$work/$label-base")" | bc -l >> "$work/$label-$w.runs"
      done
    done
    for lm in "$@"; do
      label=${lm%%:*}
      median < "$work/$label-$w.runs" > "$work/$label-$w"
      printf '%-8s %-10s %8.3f s\n' "$label" "$w" "$(cat "$work/$label-$w")" >&2
    done
  done
  for lm in "$@"; do gl "${lm%%:*}" "rm -rf ${lm#*:}/c-${lm%%:*} ${lm#*:}/seq-${lm%%:*}"; done
}
nfs_opts="vers=3,proto=tcp,nolock,noacl,mountproto=tcp,addr=$host_ip"

nsx "$DEVBOX" start nfsb >/dev/null 2>&1
g "mount | grep -q ' /mnt/share type nfs'"

if [ -n "${BASELINE:-}" ]; then
  # The baseline's own state directory and image (its recipe may differ); its machine takes
  # the next free host-only /24, since this one's is routed now.
  bhome=$work/home-baseline
  bimage=$(DEVBOX_HOME=$bhome "$BASELINE" image build --kernel generic 2>/dev/null)
  DEVBOX_HOME=$bhome nsx "$BASELINE" create nfsbase --image "$bimage" --cpus 2 --memory 2048 --disk-size 4G --share "$share:/mnt/share" >/dev/null 2>&1
  DEVBOX_HOME=$bhome nsx "$BASELINE" start nfsbase >/dev/null 2>&1
  B=$bhome/machines/nfsbase
  bip=$(grep guest_ip: "$B/machine.yaml" | awk '{print $2}')
  echo "$bip $(cat "$B/ssh_host_ed25519_key.pub")" >> "$work/known_hosts"
  gb() { nsx ssh -i "$B/id_ed25519" -o UserKnownHostsFile="$work/known_hosts" -o StrictHostKeyChecking=yes -o BatchMode=yes -o LogLevel=ERROR "root@$bip" "$@"; }
  gb "mount | grep -q ' /mnt/share type nfs'"
  run_workloads devbox:/mnt/share baseline:/mnt/share
  echo
  echo "ratio = baseline's time / this build's time (> 1: this build is faster); baseline: $BASELINE"
  printf '%-10s %9s %9s %9s\n' workload devbox baseline ratio
  for w in seq-write seq-read stat-10k create-1k; do
    d=$(cat "$work/devbox-$w") b=$(cat "$work/baseline-$w")
    printf '%-10s %8.3fs %8.3fs %8.2fx\n' "$w" "$d" "$b" "$(echo "$b / $d" | bc -l)"
  done
  exit 0
fi

# The kernel NFS server, where the host kernel has one.
if grep -qw nfsd /proc/filesystems 2>/dev/null || modprobe -n nfsd 2>/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nfs-kernel-server >/dev/null
  mountpoint -q /proc/fs/nfsd || mount -t nfsd nfsd /proc/fs/nfsd
  exportfs -o rw,sync,no_subtree_check,no_root_squash "$ip:$share"
  nsx rpc.nfsd -N 4 -H "$host_ip" 8
  nsx rpc.mountd -N 4 -p 20049
  g "mkdir -p /mnt/knfsd && mount -t nfs -o $nfs_opts,port=2049,mountport=20049 $host_ip:$share /mnt/knfsd"
  run_workloads devbox:/mnt/share knfsd:/mnt/knfsd
  g "umount /mnt/knfsd"
  exportfs -u "$ip:$share"
  knfsd=measured
else
  echo "knfsd: this host's kernel has no nfsd (no 'nfsd' in /proc/filesystems, no module): not measurable here; NFS-Ganesha stands in" >&2
  knfsd=unavailable
fi

# NFS-Ganesha: userspace NFSv3 with the VFS FSAL, bound to the machine's host-side address
# and exporting the share to the guest alone. Ganesha registers with rpcbind, so one runs in
# the namespace too.
if pgrep -x rpcbind >/dev/null; then
  echo "ganesha: an rpcbind runs on this host already; ganesha registers with it" >&2
else
  nsx rpcbind -f -w & RPCPID=$!
fi
sleep 0.5
cat > "$work/ganesha.conf" <<CONF
NFS_CORE_PARAM {
  Protocols = 3;
  NFS_Port = 2049;
  MNT_Port = 20048;
  Bind_addr = $host_ip;
  Enable_NLM = false;
  Enable_RQUOTA = false;
  Enable_UDP = false;
}
EXPORT {
  Export_Id = 1;
  Path = "$share";
  Pseudo = "$share";
  Protocols = 3;
  Transports = TCP;
  Access_Type = None;
  Squash = No_Root_Squash;
  SecType = sys;
  FSAL { Name = VFS; }
  CLIENT { Clients = $ip; Access_Type = RW; }
}
LOG { Default_Log_Level = WARN; }
CONF
nsx ganesha.nfsd -f "$work/ganesha.conf" -L "$work/ganesha.log" -p "$work/ganesha.pid" -N NIV_WARN
for _ in $(seq 100); do
  nsx bash -c "exec 3<>/dev/tcp/$host_ip/20048" 2>/dev/null && break
  sleep 0.2
done
# Ganesha holds new clients off for its grace period; a mount retried until it ends.
g "mkdir -p /mnt/ganesha; for i in \$(seq 120); do mount -t nfs -o $nfs_opts,port=2049,mountport=20048 $host_ip:$share /mnt/ganesha 2>/dev/null && exit 0; sleep 1; done; exit 1" ||
  { echo "ganesha: the guest could not mount; log:" >&2; cat "$work/ganesha.log" >&2; exit 1; }
run_workloads devbox:/mnt/share ganesha:/mnt/ganesha
g "umount /mnt/ganesha"
kill "$(cat "$work/ganesha.pid")" 2>/dev/null || true
rm -f "$work/ganesha.pid"
[ -n "${RPCPID:-}" ] && kill "$RPCPID" 2>/dev/null || true
RPCPID=
nsx "$DEVBOX" stop nfsb >/dev/null 2>&1

# 9p: plain QEMU, the same image, config drive and disk, plus a virtio-9p device.
img=$(nsx "$DEVBOX" inspect nfsb | python3 -c 'import json,sys; print(json.load(sys.stdin)["image"]["dir"])')
# The image's system disk, as the qemu driver attaches it (images of the earlier layout have none).
root_args=()
if [ -f "$img/root.img" ]; then
  root_args=(-drive "id=root,file=$img/root.img,format=raw,if=none,readonly=on" -device virtio-blk-device,drive=root,serial=devbox-root)
fi
nsx ip tuntap add dev tapnfs mode tap
nsx ip addr add $host_ip/24 dev tapnfs
nsx ip link set tapnfs up
khz=$(awk -F: '/^cpu MHz/ {printf "%d", $2*1000; exit}' /proc/cpuinfo)
# Plain QEMU on the same image, config drive and disk (the machine is stopped), its console in
# $1, `-machine` $2, and the devices of the share under test after them; returns once ready.
plain_qemu() {
  local log=$1 machine=$2; shift 2
  nsx qemu-system-x86_64 -machine "$machine" -accel tcg -cpu max -smp 2 -m 2048 \
    -nodefaults -no-user-config -display none -no-reboot \
    -chardev "file,id=c,path=$log" -serial chardev:c \
    -kernel "$img/vmlinuz" -initrd "$img/initrd.img" -append "console=ttyS0 panic=-1 loglevel=4 tsc_early_khz=$khz tsc=reliable cgroup.memory=nokmem" \
    -drive "id=config,file=$M/config.tar,format=raw,if=none,readonly=on" -device virtio-blk-device,drive=config,serial=devbox-config \
    -drive "id=data,file=$M/disk.raw,format=raw,if=none,cache=writeback,discard=unmap" -device virtio-blk-device,drive=data,serial=devbox-data \
    -netdev tap,id=n,ifname=tapnfs,script=no,downscript=no,vhost=off -device "virtio-net-device,netdev=n,mac=$(grep mac: "$M/machine.yaml" | awk '{print $2}')" \
    -device virtio-rng-device "${root_args[@]}" "$@" &
  QPID=$!
  until grep -q "devbox-guest: ready" "$log" 2>/dev/null; do sleep 0.2; done
}
plain_qemu "$work/serial-9p.log" microvm,acpi=on,rtc=on \
  -fsdev "local,id=fs0,path=$share,security_model=none" -device virtio-9p-device,fsdev=fs0,mount_tag=share
g "modprobe 9pnet_virtio && mkdir -p /mnt/9p && mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 share /mnt/9p"
run_workloads 9p:/mnt/9p
g poweroff >/dev/null 2>&1 || true
wait "$QPID" 2>/dev/null || true
QPID=

# virtio-fs, the modern bar: the virtiofsd QEMU ships (Debian 12: /usr/lib/qemu/virtiofsd)
# serving the same directory over vhost-user, the guest's RAM shared with it (a memfd
# backend), mounted with the kernel's virtiofs module; the same image and disks again.
VIRTIOFSD=${VIRTIOFSD:-/usr/lib/qemu/virtiofsd}
if [ -x "$VIRTIOFSD" ]; then
  "$VIRTIOFSD" --socket-path="$work/vfs.sock" -o source="$share" -o cache=auto >"$work/virtiofsd.log" 2>&1 &
  VPID=$!
  for _ in $(seq 100); do [ -S "$work/vfs.sock" ] && break; sleep 0.1; done
  # Modern virtio-mmio: libvhost-user (virtiofsd) refuses the legacy devices microvm defaults to.
  plain_qemu "$work/serial-vfs.log" microvm,acpi=on,rtc=on,memory-backend=mem \
    -global virtio-mmio.force-legacy=false -object memory-backend-memfd,id=mem,size=2048M,share=on \
    -chardev "socket,id=vfs,path=$work/vfs.sock" -device vhost-user-fs-device,chardev=vfs,tag=share
  g "modprobe virtiofs && mkdir -p /mnt/vfs && mount -t virtiofs share /mnt/vfs"
  run_workloads virtiofs:/mnt/vfs
  g poweroff >/dev/null 2>&1 || true
  wait "$QPID" 2>/dev/null || true
  QPID=
  kill "$VPID" 2>/dev/null || true
  wait "$VPID" 2>/dev/null || true
  virtiofs=measured
else
  echo "virtio-fs: no $VIRTIOFSD (Debian 12's qemu-system-common ships it): not measured" >&2
  virtiofs=unavailable
fi

echo
echo "ratio = other's time / devbox's time (> 1: devbox is faster)"
cols=(ganesha 9p)
[ "$virtiofs" = measured ] && cols+=(virtiofs)
[ "$knfsd" = measured ] && cols=(knfsd "${cols[@]}")
printf '%-10s %9s' workload devbox
for c in "${cols[@]}"; do printf ' %9s %9s' "$c" "ratio"; done
echo
for w in seq-write seq-read stat-10k create-1k; do
  d=$(cat "$work/devbox-$w")
  printf '%-10s %8.3fs' "$w" "$d"
  for c in "${cols[@]}"; do
    n=$(cat "$work/$c-$w")
    printf ' %8.3fs %8.2fx' "$n" "$(echo "$n / $d" | bc -l)"
  done
  echo
done
echo "goals: >= 0.8x the kernel NFS server on every workload; >= 2x 9p on stat-10k and create-1k"
echo "knfsd: $knfsd; virtio-fs: $virtiofs"
