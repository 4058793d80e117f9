#!/usr/bin/env bash
# DNS throughput and latency, devbox's server against dnsmasq, in one run on loopback only.
# Both serve the same 1,000 names (machine `bench`, TLD `dev`, containers c0..c999 with one
# IPv4 and one IPv6 address each); dnsmasq is authoritative for bench.dev via `local=` so
# misses are answered locally by both. devbox runs with a machine's source allowlist in place
# (the client, loopback, is the host). dnsperf (Debian `dnsperf`) measures, for hits, misses
# (NXDOMAIN) and a 60/40 A/AAAA mix: queries/s from a plain run, p99 latency from a `-v` run
# with the same settings. RUNS rounds (default 5), the two servers alternating which goes
# first, so both see the same host load; the table gives the medians and the ratio of the
# median queries/s. Needs `dnsperf` and `dnsmasq-base` (apt-get install dnsperf
# dnsmasq-base). DURATION (default 5 s), CLIENTS (8) and OUTSTANDING (200) tune it.
#
# Threads: dnsmasq answers on one thread; devbox's server runs on a runtime of one worker
# (tests/dns_serve.rs), so under a loaded host neither gets more CPU by having more threads.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-5}
RUNS=${RUNS:-5}
CLIENTS=${CLIENTS:-8}
OUTSTANDING=${OUTSTANDING:-200}
N=1000
DEVBOX_PORT=${DEVBOX_PORT:-5391}
DNSMASQ_PORT=${DNSMASQ_PORT:-5392}
for tool in dnsperf dnsmasq; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install dnsperf dnsmasq-base" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# ---- the same records for both servers ----
: > "$work/dnsmasq.conf"
echo "local=/bench.dev/" >> "$work/dnsmasq.conf"
echo "host-record=bench.dev,192.168.64.2" >> "$work/dnsmasq.conf"
for i in $(seq 0 $((N - 1))); do
  printf 'host-record=c%d.bench.dev,172.18.%d.%d,fd00::%x\n' "$i" $((i / 250)) $((i % 250 + 2)) $((i + 2)) >> "$work/dnsmasq.conf"
done
for i in $(seq 0 $((N - 1))); do echo "c$i.bench.dev A"; done > "$work/hits"
for i in $(seq 0 $((N - 1))); do echo "nx$i.bench.dev A"; done > "$work/misses"
for i in $(seq 0 $((N - 1))); do
  if [ $((i % 5)) -lt 3 ]; then echo "c$i.bench.dev A"; else echo "c$i.bench.dev AAAA"; fi
done > "$work/mix"

# ---- servers ----
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target} cargo test --release --test dns_serve --no-run -q 2>/dev/null
bin=$(CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target} cargo test --release --test dns_serve --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="dns_serve" and m.get("executable"): print(m["executable"])')
DEVBOX_DNS_BENCH_ADDR=127.0.0.1:$DEVBOX_PORT DEVBOX_DNS_BENCH_CONTAINERS=$N \
  "$bin" --ignored --exact serve_for_benchmark >"$work/devbox.log" 2>&1 &
pids+=($!)
dnsmasq -k --conf-file="$work/dnsmasq.conf" --no-resolv --no-hosts --port "$DNSMASQ_PORT" \
  --listen-address 127.0.0.1 --bind-interfaces --pid-file= --user="$(id -un)" --log-facility=- \
  >"$work/dnsmasq.log" 2>&1 &
pids+=($!)
for port in "$DEVBOX_PORT" "$DNSMASQ_PORT"; do
  for _ in $(seq 100); do
    dig +short +time=1 +tries=1 @127.0.0.1 -p "$port" c1.bench.dev A 2>/dev/null | grep -q 172.18.0.3 && break
    sleep 0.1
  done
  dig +short +time=1 +tries=1 @127.0.0.1 -p "$port" c1.bench.dev A | grep -q 172.18.0.3 \
    || { echo "server on port $port does not answer" >&2; cat "$work"/*.log >&2; exit 1; }
done
# Same answers from both (the comparison is only fair if they serve the same thing).
for q in "c7.bench.dev A" "c7.bench.dev AAAA" "nx1.bench.dev A"; do
  a=$(dig +short @127.0.0.1 -p "$DEVBOX_PORT" $q; dig +noall +comments @127.0.0.1 -p "$DEVBOX_PORT" $q | grep -o 'status: [A-Z]*')
  b=$(dig +short @127.0.0.1 -p "$DNSMASQ_PORT" $q; dig +noall +comments @127.0.0.1 -p "$DNSMASQ_PORT" $q | grep -o 'status: [A-Z]*')
  [ "$a" = "$b" ] || { echo "answers differ for $q: devbox [$a] dnsmasq [$b]" >&2; exit 1; }
done

perf() { dnsperf -s 127.0.0.1 -p "$1" -d "$2" -c "$CLIENTS" -q "$OUTSTANDING" -l "$DURATION" "${@:3}"; }
qps() { perf "$1" "$2" | awk '/Queries per second/ {printf "%.0f", $4}'; }
p99() {
  perf "$1" "$2" -v | awk '/^> / {print $NF}' | sort -g \
    | awk '{a[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.3f", a[i]*1000}'
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '%-8s %12s %12s %7s %14s %14s   %s\n' case "devbox q/s" "dnsmasq q/s" ratio "devbox p99 ms" "dnsmasq p99 ms" "per-run ratios"
for case in hits misses mix; do
  dq=(); mq=(); dl=(); ml=(); ratios=()
  for run in $(seq "$RUNS"); do
    # Alternate which server goes first, so neither always meets a warmer or busier host.
    if [ $((run % 2)) -eq 1 ]; then
      d=$(qps "$DEVBOX_PORT" "$work/$case"); m=$(qps "$DNSMASQ_PORT" "$work/$case")
      dl+=("$(p99 "$DEVBOX_PORT" "$work/$case")"); ml+=("$(p99 "$DNSMASQ_PORT" "$work/$case")")
    else
      m=$(qps "$DNSMASQ_PORT" "$work/$case"); d=$(qps "$DEVBOX_PORT" "$work/$case")
      ml+=("$(p99 "$DNSMASQ_PORT" "$work/$case")"); dl+=("$(p99 "$DEVBOX_PORT" "$work/$case")")
    fi
    dq+=("$d"); mq+=("$m"); ratios+=("$(echo "scale=2; $d / $m" | bc -l)")
  done
  d=$(median "${dq[@]}"); m=$(median "${mq[@]}")
  printf '%-8s %12s %12s %6.2fx %14s %14s   %s\n' "$case" "$d" "$m" "$(echo "$d / $m" | bc -l)" \
    "$(median "${dl[@]}")" "$(median "${ml[@]}")" "${ratios[*]}"
done
echo "(medians of $RUNS alternating runs; dnsperf -c $CLIENTS -q $OUTSTANDING -l $DURATION, $N names, loopback, $(nproc) CPUs shared with dnsperf; goal: ratio >= 1.00, p99 <= dnsmasq's)"
