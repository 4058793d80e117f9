#!/usr/bin/env bash
# Lighter machines (issue #20), the layout before against the layout now, in one run inside a
# network namespace this script creates, boots alternating so host load hits both alike:
#  - start -> ready (host-timed), with each boot phase the guest marked (`devbox inspect`);
#  - the VM process's idle resident set after boot (lowest of 5 samples 2 s apart, 20 s after
#    ready), QEMU's TCG translation cache shown apart (`inspect`'s memory), and what the
#    guest holds (used and page cache, from its `free`);
#  - the resident set 30 s after the guest touched 1 GiB and freed it, against idle.
# "Before" is the previous release: its binary (BASELINE, built from the commit before the
# root image, e.g. `git worktree add /tmp/base <commit> && cargo build --release` there) builds
# its image into a cache of its own and boots it with its own driver; "now" is this tree's.
# Needs root. DEVBOX_CACHE is the cache of "now"; BASELINE_CACHE, if set, the one of "before".
# Usage:
#   sudo BASELINE=/path/to/old/devbox [DEVBOX=target/release/devbox] bash tests/bench/memory.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
: "${BASELINE:?set BASELINE to the devbox binary of the release before the root image}"
if [ -z "${DEVBOX:-}" ]; then
  cargo build --release -q
  DEVBOX=$(realpath "${CARGO_TARGET_DIR:-target}")/release/devbox
fi
work=$(mktemp -d)
# The host's own resolver is never a target: names the machine does not own go nowhere.
export DEVBOX_DNS_UPSTREAMS=127.0.0.1:53
OLD_CACHE=${BASELINE_CACHE:-$work/cache-old}
NS=devbox-mem-$$
ip netns add "$NS"
ip -n "$NS" link set lo up
nsx() { ip netns exec "$NS" "$@"; }
# $1: old|new, then the devbox arguments.
dbx() {
  local side=$1; shift
  if [ "$side" = old ]; then
    DEVBOX_HOME=$work/home-old DEVBOX_CACHE=$OLD_CACHE nsx "$BASELINE" "$@"
  else
    DEVBOX_HOME=$work/home-new nsx "$DEVBOX" "$@"
  fi
}
cleanup() {
  for side in old new; do dbx "$side" rm -y --force mem >/dev/null 2>&1 || true; done
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

echo "building both images (cached ones are reused)" >&2
DEVBOX_CACHE=$OLD_CACHE "$BASELINE" image build >/dev/null
"$DEVBOX" image build >/dev/null
for side in old new; do
  mkdir -p "$work/home-$side"
  dbx "$side" create mem --no-share --disk-size 4G >/dev/null 2>&1
  echo "$side: warm-up boot (formats the data disk; not measured)" >&2
  dbx "$side" start mem --timeout 600 >/dev/null
  dbx "$side" stop mem >/dev/null
  : > "$work/ready-$side"; : > "$work/idle-$side"; : > "$work/tb-$side"; : > "$work/after-$side"
  : > "$work/used-$side"; : > "$work/cache-$side"; : > "$work/phases-$side"
done

measure() { # $1: old|new, $2: round
  local side=$1 t ready pid idle s tb after inspect used cache
  t=$(now)
  dbx "$side" start mem --timeout 600 >/dev/null
  ready=$(echo "$(now) - $t" | bc -l)
  echo "$ready" >> "$work/ready-$side"
  inspect=$(dbx "$side" inspect mem)
  pid=$(json 'd["runtime"]["vm_pid"]' <<<"$inspect")
  sleep 20
  idle=
  for _ in 1 2 3 4 5; do
    s=$(rss_kib "$pid"); if [ -z "$idle" ] || [ "$s" -lt "$idle" ]; then idle=$s; fi
    sleep 2
  done
  inspect=$(dbx "$side" inspect mem)
  tb=$(json 'd.get("memory", {}).get("translation_cache_bytes") or 0' <<<"$inspect")
  json '" ".join("%s=%s" % (p["name"], p["guest_s"]) for p in d["runtime"]["boot"]["phases"])' <<<"$inspect" >> "$work/phases-$side"
  read -r used cache < <(dbx "$side" ssh mem -- "free -k | awk '/^Mem:/ {print \$3, \$6}'")
  echo "$used" >> "$work/used-$side"; echo "$cache" >> "$work/cache-$side"
  dbx "$side" ssh mem -- "mkdir -p /run/bench-mem && mount -t tmpfs -o size=1100m bench-mem /run/bench-mem && dd if=/dev/zero of=/run/bench-mem/fill bs=1M count=1024 2>/dev/null && sync && umount /run/bench-mem && rmdir /run/bench-mem"
  sleep 30
  after=$(rss_kib "$pid")
  echo "$idle" >> "$work/idle-$side"; echo "$((tb / 1024))" >> "$work/tb-$side"; echo "$after" >> "$work/after-$side"
  echo "round $2 $side: ready ${ready}s, idle RSS $((idle / 1024)) MiB (TCG cache $((tb / 1048576)) MiB), 30 s after 1 GiB freed $((after / 1024)) MiB; phases: $(tail -1 "$work/phases-$side")" >&2
  dbx "$side" stop mem >/dev/null
}
for r in $(seq "$ROUNDS"); do
  measure old "$r"
  measure new "$r"
done

m() { median < "$work/$1"; }
mib() { echo "scale=1; $1 / 1024" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }
echo
echo "medians of $ROUNDS rounds; guest on $(dbx new inspect mem | json 'd["driver"]["name"]') ($(dbx new inspect mem | json 'd["runtime"]["accel"]'))"
for side in old new; do
  g="$(mib "$(m used-$side)")/$(mib "$(m cache-$side)")"
  printf '%-4s ready %6.2f s | idle RSS %7s MiB (TCG cache %s MiB, without it %s MiB) | after 1 GiB freed %7s MiB (%sx idle) | guest used/cache %s MiB\n' \
    "$side" "$(m ready-$side)" "$(mib "$(m idle-$side)")" "$(mib "$(m tb-$side)")" \
    "$(mib "$(( $(m idle-$side) - $(m tb-$side) ))")" "$(mib "$(m after-$side)")" \
    "$(ratio "$(m after-$side)" "$(m idle-$side)")" "$g"
done
echo "phases (last round) old: $(tail -1 "$work/phases-old")"
echo "phases (last round) new: $(tail -1 "$work/phases-new")"
echo "new/old: ready $(ratio "$(m ready-new)" "$(m ready-old)")x (goal <= 0.7 under TCG), idle RSS $(ratio "$(m idle-new)" "$(m idle-old)")x (goal <= 0.5), idle RSS without the TCG cache $(ratio "$(( $(m idle-new) - $(m tb-new) ))" "$(( $(m idle-old) - $(m tb-old) ))")x"
