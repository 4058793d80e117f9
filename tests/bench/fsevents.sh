#!/usr/bin/env bash
# File events on a share (issue #17), measured in one run inside a network namespace this
# script creates, on one machine with one share:
#  1. latency: the host creates a file; a watcher in the guest (`inotifywait`, through a
#     `devbox ssh` session) prints its name, and the host timestamps the line's arrival. The
#     figure is host change -> guest event -> back on the host over SSH: an upper bound of
#     host change -> guest event. p50 and p99 over LATENCY_RUNS (default 200), 50 ms apart.
#  2. missed final states over 10,000 mixed host operations (create, write, rename, delete on
#     500 names) in one burst, from the events a guest watcher logged (goal 0);
#  3. CPU time per 1,000 raised events during that burst: the host's supervisor (watcher,
#     batching, SSH) and, in the guest, the channel's `cat` process (the module runs in its
#     write(2) calls).
# Needs root. DEVBOX (default: a release build) picks the binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
LATENCY_RUNS=${LATENCY_RUNS:-200}

if [ -z "${DEVBOX:-}" ]; then
  cargo build --release -q
  DEVBOX=$(realpath "${CARGO_TARGET_DIR:-target}")/release/devbox
fi
work=$(mktemp -d)
export DEVBOX_HOME=$work/home DEVBOX_DNS_UPSTREAMS=127.0.0.1:53
NS=devbox-bench-fe-$$
ip netns add "$NS"
ip -n "$NS" link set lo up
cleanup() {
  ip netns exec "$NS" "$DEVBOX" rm -y --force fe >/dev/null 2>&1 || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
nsx() { ip netns exec "$NS" "$@"; }
share=$work/share
mkdir -p "$share/lat" "$share/burst"

"$DEVBOX" image build >/dev/null
nsx "$DEVBOX" create fe --share "$share" --allow-root-share --cpus 2 --memory 2048 --disk-size 4G >/dev/null 2>&1
nsx "$DEVBOX" start fe >/dev/null
accel=$(nsx "$DEVBOX" status fe --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["runtime"]["accel"])')
# The share watcher starts right after the machine is ready.
for _ in $(seq 100); do
  grep -q "file events: watching the shares" "$DEVBOX_HOME/machines/fe/supervisor.log" && break
  sleep 0.1
done
grep -q "file events: watching the shares" "$DEVBOX_HOME/machines/fe/supervisor.log" ||
  { echo "error: the machine's share watcher did not start (see its supervisor.log)" >&2; exit 1; }

# ---- 1. latency ----
python3 - "$NS" "$DEVBOX" "$share/lat" "$LATENCY_RUNS" > "$work/latency" <<'PY'
import os, subprocess, sys, time
ns, devbox, d, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
p = subprocess.Popen(["ip", "netns", "exec", ns, devbox, "ssh", "fe", "--",
                      "inotifywait", "-q", "-m", "-e", "create", "--format", "%f", d],
                     stdout=subprocess.PIPE, text=True, bufsize=1)
time.sleep(2)
# Warm-up: the watch is in place once a first event comes back.
open(os.path.join(d, "warm"), "w").close()
while p.stdout.readline().strip() != "warm":
    pass
for i in range(runs):
    name = f"l{i}"
    t = time.monotonic()
    open(os.path.join(d, name), "w").close()
    while p.stdout.readline().strip() != name:
        pass
    print(f"{(time.monotonic() - t) * 1000:.2f}")
    time.sleep(0.05)
p.kill()
PY
pct() { sort -g "$1" | awk -v q="$2" '{a[NR]=$1} END {i=int(NR*q+0.999); if (i<1) i=1; print a[i]}'; }
p50=$(pct "$work/latency" 0.50); p99=$(pct "$work/latency" 0.99)

# ---- 2 and 3. a 10,000-operation burst ----
nsx "$DEVBOX" ssh fe -- sh -c "(inotifywait -q -m -e create,delete,moved_from,moved_to --format '%e %f' $share/burst > /tmp/burst.log 2>&1 &); (inotifywait -q -m -r -e create,modify,attrib,close_write,delete,moved_from,moved_to --format x $share/burst > /tmp/all.log 2>&1 &); sleep 1"
sup=$(cat "$DEVBOX_HOME/machines/fe/supervisor.pid")
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
guest_cpu() { nsx "$DEVBOX" ssh fe -- sh -c 'for p in $(pidof cat); do if [ "$(readlink /proc/$p/fd/1)" = /dev/devbox-notify ]; then awk "{print \$14 + \$15}" /proc/$p/stat; fi; done' | head -1; }
host0=$(cpu "$sup"); guest0=$(guest_cpu)
python3 - "$share/burst" <<'PY'
import os, sys
d = sys.argv[1]
n = lambda i: os.path.join(d, f"n{i % 500}")
for r in range(2500):
    a, b = n(r), n(r * 7 + 3)
    k = r % 4
    if k == 0:
        open(a, "w").write("x"); open(b, "w").write("y")
    elif k == 1:
        try: os.rename(a, b)
        except FileNotFoundError: pass
        open(a, "w").write("z")
    elif k == 2:
        for p in (a, b):
            try: os.remove(p)
            except FileNotFoundError: pass
    else:
        open(b, "w").write("w")
        try: os.rename(b, a)
        except FileNotFoundError: pass
PY
# Settle: until the guest's event count stops growing (bounded).
last=-1
for _ in $(seq 120); do
  n=$(nsx "$DEVBOX" ssh fe -- sh -c 'wc -l < /tmp/all.log')
  [ "$n" = "$last" ] && break
  last=$n; sleep 1
done
host1=$(cpu "$sup"); guest1=$(guest_cpu)
events=$last
missed=$(nsx "$DEVBOX" ssh fe -- cat /tmp/burst.log | python3 -c '
import os, sys
seen = set()
for line in sys.stdin:
    ev, _, name = line.strip().partition(" ")
    if ev.startswith(("CREATE", "MOVED_TO")): seen.add(name)
    elif ev.startswith(("DELETE", "MOVED_FROM")): seen.discard(name)
truth = set(os.listdir(sys.argv[1]))
print(len(truth ^ seen))' "$share/burst")

per1k() { python3 -c "print(f'{($2 - $1) / $ticks * 1000 / max($3, 1) * 1000:.1f}')"; }
echo
echo "file events ($accel, $LATENCY_RUNS creates, 10,000-operation burst):"
echo "  host change -> guest event (upper bound, via SSH back): p50 ${p50} ms, p99 ${p99} ms"
echo "  missed final states after 10,000 operations: $missed"
echo "  events raised in the guest by the burst: $events"
echo "  CPU per 1,000 events: host supervisor $(per1k "$host0" "$host1" "$events") ms, guest channel + module $(per1k "${guest0:-0}" "${guest1:-0}" "$events") ms"
