#!/usr/bin/env bash
# Boots the guest image again and again and counts the console lines that went missing
# (issue #12: `devbox-guest: init` lost on the arm64 `hvc0` console one boot in a few).
# Not part of CI: a loop to run by hand after touching how devbox-boot writes its console.
#
#   sudo bash tests/loops/console.sh arm64 20     # tests/e2e/arm64.rs, run 20 times
#   sudo bash tests/loops/console.sh x86_64 20    # devbox create once, then start/stop 20 times
#
# arm64: each run is the e2e check arm64_image_boots_under_qemu_virt (qemu-system-aarch64
# -M virt, virtio-serial-pci with a virtconsole, the vz driver's `console=hvc0`); the lines
# counted are the ones that check prints as it sees them: devbox-boot's `init`, the probe lines its config drive adds
# (uname, evdev, sshd, dhcp), the expected vsock error and `ready`.
# x86_64: a machine booted by devbox itself (QEMU microvm, `console=ttyS0`) in a network
# namespace of this script; the lines counted are `init` and `ready` from the boot's
# serial.log and `shutdown` after `devbox stop`. For each boot it also reads from the guest's
# boot log whether devbox-boot had to wait for /dev/console.
#
# Prints one line per boot and a total; exits non-zero when a line was lost.
# Uses DEVBOX_CACHE (default /root/.cache/devbox) for images, a temporary DEVBOX_HOME.
set -euo pipefail
cd "$(dirname "$0")/../.."
arch=${1:?usage: console.sh arm64|x86_64 [N]}
n=${2:-20}
[ "$(id -u)" -eq 0 ] || { echo "error: needs root (network namespaces); run with sudo" >&2; exit 1; }
export DEVBOX_CACHE=${DEVBOX_CACHE:-/root/.cache/devbox}
work=$(mktemp -d)
lost_total=0
boots=0

test_exe() {
  cargo test --test "$1" --no-run --message-format=json 2>/dev/null |
    jq -r --arg t "$1" 'select(.reason == "compiler-artifact" and .target.name == $t and .executable) | .executable'
}

arm64() {
  local exe
  exe=$(test_exe e2e)
  cargo build -q --bin devbox
  local want=("devbox-guest: init" "devbox-test: uname " "devbox-test: evdev loaded"
    "devbox-test: sshd running" "devbox-test: dhcp " "devbox-guest: error: cannot report the address"
    "devbox-guest: ready")
  for i in $(seq 1 "$n"); do
    local out="$work/arm64-$i.log" lost=() status=pass
    "$exe" arm64_image_boots_under_qemu_virt >"$out" 2>&1 || status=FAIL
    for w in "${want[@]}"; do
      grep -q "^\[arm64\] *[0-9.]*s $w" "$out" || lost+=("$w")
    done
    boots=$((boots + 1))
    lost_total=$((lost_total + ${#lost[@]}))
    local init_at waited
    init_at=$(sed -n 's/^\[arm64\] *\([0-9.]*s\) devbox-guest: init.*/\1/p' "$out")
    # devbox-boot's own log line, relayed by the check's probe (new images only).
    waited=$(sed -n 's/.*devbox-test: console: waited for \/dev\/console after loading virtio_console: \([0-9]*\) checks.*/\1/p' "$out")
    printf 'arm64 boot %2d: test %s, init at %s, console after %s checks (50 ms), lost %d%s\n' \
      "$i" "$status" "${init_at:--}" "${waited:-?}" \
      "${#lost[@]}" "$( [ ${#lost[@]} -eq 0 ] || printf ' (%s)' "${lost[*]}")"
    if [ "$status" = pass ]; then rm -f "$out"; else echo "  log: $out"; fi
  done
}

x86_64() {
  cargo build -q --bin devbox
  # Not local: the EXIT trap below runs after this function has returned.
  bin=target/debug/devbox ns="devbox-loop-$$" home="$work/home"
  ip netns add "$ns"
  trap 'ip netns exec "$ns" env DEVBOX_HOME="$home" "$bin" stop --force loop >/dev/null 2>&1 || true; ip netns del "$ns"; rm -rf "$work"' EXIT
  ip -n "$ns" link set lo up
  dbx() { ip netns exec "$ns" env DEVBOX_HOME="$home" NO_COLOR=1 DEVBOX_DNS_UPSTREAMS=127.0.0.1:5353 "$bin" "$@"; }
  "$bin" image build >/dev/null
  dbx create loop --cpus 2 --memory 1024 --disk-size 2G --no-share >/dev/null
  local serial="$home/machines/loop/serial.log"
  has() { tr -d '\r' <"$serial" | grep -q -- "$1\$"; }
  for i in $(seq 1 "$n"); do
    local lost=() status=pass t0=$SECONDS waited
    dbx start loop --timeout 600 >/dev/null 2>"$work/start.err" || { status=FAIL; cat "$work/start.err"; }
    # devbox's readiness is SSH and `docker info`; the guest's own marker follows within a poll.
    # Markers that come after devbox-boot has returned (ready, shutdown) share their line
    # with busybox init's "Please press Enter to activate this console." (the ttyS0 shell's
    # prompt, which ends without a newline): a marker counts as present at the end of a line.
    for _ in $(seq 1 100); do has "devbox-guest: ready" && break; sleep 0.2; done
    waited=$(dbx ssh loop -- "grep -c '^console: waited' /var/log/devbox-boot.log || true" 2>/dev/null | tr -d '\r')
    has "devbox-guest: init" || lost+=("devbox-guest: init")
    has "devbox-guest: ready" || lost+=("devbox-guest: ready")
    dbx stop loop >/dev/null 2>&1 || status=FAIL
    has "devbox-guest: shutdown" || lost+=("devbox-guest: shutdown")
    grep -a "devbox-guest: error" "$serial" && status=FAIL
    boots=$((boots + 1))
    lost_total=$((lost_total + ${#lost[@]}))
    printf 'x86_64 boot %2d: %s in %d s, console waits %s, lost %d%s\n' "$i" "$status" \
      $((SECONDS - t0)) "${waited:-?}" "${#lost[@]}" "$( [ ${#lost[@]} -eq 0 ] || printf ' (%s)' "${lost[*]}")"
  done
  dbx rm -y loop >/dev/null
}

case "$arch" in
arm64) arm64 ;;
x86_64) x86_64 ;;
*) echo "error: unknown arch $arch (arm64 or x86_64)" >&2; exit 1 ;;
esac
echo "console loop $arch: $boots boots, $lost_total console lines lost"
[ "$lost_total" -eq 0 ]
