#!/usr/bin/env bash
# Network figures of one machine, in one boot, inside network namespaces this script makes
# (the host's real interfaces, routes and firewall are never touched):
#
# 1. Outbound NAT: a bulk TCP transfer from the guest to "the internet" (a namespace on
#    TEST-NET-3 behind the host's uplink, through devbox's masquerade) against the same
#    transfer from the guest to the host's own address, alternating (goal: >= 0.9x).
# 2. Published ports: the same container's HTTP server through its published port on the
#    host's 127.0.0.1 against its own IP through the route: a 256 MiB download (goal: >= 0.8x
#    the direct throughput) and p50/p99 of 1,000 small requests (ab; goal: <= 1.2x direct).
#
# Needs root, a built devbox (target/debug/devbox or $DEVBOX), its image in $DEVBOX_CACHE,
# qemu, busybox-static, curl, ab (apache2-utils). Usage: sudo bash tests/bench/net.sh [ROUNDS]
set -euo pipefail
shopt -s inherit_errexit

rounds=${1:-3}
here=$(cd "$(dirname "$0")/../.." && pwd)
devbox=${DEVBOX:-$here/target/debug/devbox}
tag=dbxbench$$
host=$tag-host
inet=$tag-inet
work=$(mktemp -d)
export DEVBOX_HOME=$work/home

cleanup() {
	ip netns exec "$host" "$devbox" rm --force bench >/dev/null 2>&1 || true
	[ -n "${sink_pid:-}" ] && kill "$sink_pid" 2>/dev/null || true
	[ -n "${sink2_pid:-}" ] && kill "$sink2_pid" 2>/dev/null || true
	ip netns del "$host" 2>/dev/null || true
	ip netns del "$inet" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

in_host() { ip netns exec "$host" "$@"; }
in_inet() { ip netns exec "$inet" "$@"; }

ip netns add "$host"
ip netns add "$inet"
in_host ip link set lo up
in_inet ip link set lo up
ip -n "$host" link add up0 type veth peer name eth0 netns "$inet"
in_host ip addr add 203.0.113.1/24 dev up0
in_host ip link set up0 up
in_inet ip addr add 203.0.113.2/24 dev eth0
in_inet ip link set eth0 up
in_host ip route add default via 203.0.113.2

in_host "$devbox" create bench --no-share --cpus 2 --memory 2048 >/dev/null
in_host "$devbox" start bench
ssh_guest() { in_host "$devbox" ssh bench -- "$@"; }

# Receivers: busybox nc, one on the internet, one on the host's side of the TAP.
in_inet sh -c 'while :; do busybox nc -l -p 5001 >/dev/null; done' &
sink_pid=$!
in_host sh -c 'while :; do busybox nc -l -p 5001 >/dev/null; done' &
sink2_pid=$!
sleep 1

# Milliseconds for the guest to send 128 MiB to $1:5001 (timed on the host around one `devbox
# ssh`, whose own cost is the same for both targets).
send() {
	local s e
	s=$(date +%s%N)
	ssh_guest sh -c "dd if=/dev/zero bs=1M count=128 2>/dev/null | nc -w 2 $1 5001" >/dev/null
	e=$(date +%s%N)
	echo $(((e - s) / 1000000))
}
nat_ms=()
direct_ms=()
for _ in $(seq "$rounds"); do
	nat_ms+=("$(send 203.0.113.2 | tail -n1)")
	direct_ms+=("$(send 192.168.64.1 | tail -n1)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
nat=$(median "${nat_ms[@]}")
direct=$(median "${direct_ms[@]}")
echo "outbound NAT: guest -> internet ${nat} ms, guest -> host ${direct} ms for 128 MiB (median of $rounds)"
awk -v n="$nat" -v d="$direct" 'BEGIN { printf "outbound NAT throughput ratio: %.2fx (goal >= 0.9x)\n", d / n }'

# A container serving a 256 MiB file and a small one, from a busybox image made on the spot.
rootfs=$work/rootfs
mkdir -p "$rootfs/bin"
cp /bin/busybox "$rootfs/bin/busybox"
ln -s busybox "$rootfs/bin/sh"
tar -C "$rootfs" -c . | in_host env DOCKER_HOST="unix://$DEVBOX_HOME/machines/bench/docker.sock" \
	docker import - bb:bench >/dev/null
export DOCKER_HOST="unix://$DEVBOX_HOME/machines/bench/docker.sock"
in_host docker run -d --name web -p 8080:80 bb:bench sh -c \
	'mkdir /www && echo ok >/www/small && busybox dd if=/dev/zero of=/www/big bs=1M count=256 2>/dev/null && exec busybox httpd -f -p 80 -h /www' >/dev/null
cip=$(in_host docker inspect -f '{{.NetworkSettings.IPAddress}}' web)
for _ in $(seq 120); do
	in_host curl -sf "http://$cip/big" -o /dev/null -r 0-0 && break
	sleep 1
done

# Seconds for one 256 MiB download from $1.
fetch() { in_host curl -s -o /dev/null -w '%{time_total}\n' "$1"; }
fwd_s=()
dir_s=()
for _ in $(seq "$rounds"); do
	fwd_s+=("$(fetch http://127.0.0.1:8080/big)")
	dir_s+=("$(fetch "http://$cip/big")")
done
fwd=$(median "${fwd_s[@]}")
dir=$(median "${dir_s[@]}")
echo "256 MiB download: published port ${fwd} s, container IP ${dir} s (median of $rounds)"
awk -v f="$fwd" -v d="$dir" 'BEGIN { printf "published-port throughput ratio: %.2fx (goal >= 0.8x)\n", d / f }'

# p50/p99 of 1,000 small requests, one at a time (ab's percentile table, in ms).
pct() { in_host ab -q -n 1000 -c 1 "$1" | awk -v p="$2" '$1 == p"%" {print $2}'; }
f50=$(pct http://127.0.0.1:8080/small 50)
f99=$(pct http://127.0.0.1:8080/small 99)
d50=$(pct "http://$cip/small" 50)
d99=$(pct "http://$cip/small" 99)
echo "1,000 small requests: published port p50 ${f50} ms p99 ${f99} ms; container IP p50 ${d50} ms p99 ${d99} ms"
awk -v a="$f50" -v b="$d50" -v c="$f99" -v d="$d99" \
	'BEGIN { printf "published-port latency ratio: p50 %.2fx, p99 %.2fx (goal <= 1.2x)\n", a / b, c / d }'
