#!/usr/bin/env bash
# HTTPS for container names (issue #16), measured in one run inside a network namespace this
# script creates, on one machine, against one container (busybox httpd serving a 1 KiB page,
# alias www.synbioz.dev), with one client (wrk: 2 threads, CONNECTIONS connections, DURATION
# each, latency percentiles):
#  1. devbox: https://www.synbioz.dev/ — the name resolves to the container's IP, the guest
#     hands port 443 to the supervisor's TLS terminator on the host, which proxies to the
#     container's port 80 (the path a browser takes);
#  2. nginx (Debian's package) terminating TLS on the host for the same container
#     (proxy_pass to its IP:80; an ECDSA P-256 certificate, as devbox's leaves are);
#  3. plain HTTP to the container's IP, for the latency TLS termination adds.
# The three are measured in turn, ROUNDS times (default 3), and each figure is the median of
# its rounds (an emulated guest is noisy). Prints requests/s and p99 of each, devbox/nginx ratios (goal: requests/s >= 1.0x nginx) and
# the added p50 latency against plain HTTP. Needs root, wrk and nginx (apt-get install wrk
# nginx-light). DEVBOX (default: a release build) picks the binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
ROUNDS=${ROUNDS:-3}

for tool in wrk nginx openssl docker; do
  command -v "$tool" >/dev/null ||
    { echo "error: $tool is not installed (apt-get install wrk nginx-light openssl docker.io)" >&2; exit 1; }
done
if [ -z "${DEVBOX:-}" ]; then
  cargo build --release -q
  DEVBOX=$(realpath "${CARGO_TARGET_DIR:-target}")/release/devbox
fi
work=$(mktemp -d)
export DEVBOX_HOME=$work/home DEVBOX_DNS_UPSTREAMS=127.0.0.1:53
NS=devbox-bench-tls-$$
ip netns add "$NS"
ip -n "$NS" link set lo up
cleanup() {
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  ip netns exec "$NS" "$DEVBOX" rm -y --force tb >/dev/null 2>&1 || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "/etc/netns/$NS" "$work"
}
trap cleanup EXIT
nsx() { ip netns exec "$NS" "$@"; }

"$DEVBOX" image build >/dev/null
nsx "$DEVBOX" create tb --no-share --cpus 2 --memory 2048 --disk-size 4G --dns-domain synbioz.dev >/dev/null 2>&1
nsx "$DEVBOX" start tb >/dev/null
accel=$(nsx "$DEVBOX" status tb --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["runtime"]["accel"])')
export DOCKER_HOST=unix://$DEVBOX_HOME/machines/tb/docker.sock

# The container: a static busybox serving a 1 KiB page (no registry needed).
mkdir -p "$work/rootfs/bin" "$work/rootfs/www"
cp "$(command -v busybox)" "$work/rootfs/bin/busybox"
for a in sh httpd; do ln -s busybox "$work/rootfs/bin/$a"; done
head -c 1024 /dev/zero | tr '\0' x > "$work/rootfs/www/index.html"
tar -C "$work/rootfs" -c . | docker import - bb:bench >/dev/null
docker run -d --name web -e DNSDOCK_ALIAS=www.synbioz.dev bb:bench /bin/httpd -f -p 80 -h /www >/dev/null
ip=$(docker inspect -f '{{.NetworkSettings.IPAddress}}' web)

# The client resolves the names as the machine's DNS server does (wrk has no --resolve).
mkdir -p "/etc/netns/$NS"
printf '127.0.0.1 localhost\n%s www.synbioz.dev\n127.0.0.1 nginx.bench\n' "$ip" > "/etc/netns/$NS/hosts"

# nginx terminating TLS for the same container.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=nginx.bench -addext subjectAltName=DNS:nginx.bench \
  -keyout "$work/nginx.key" -out "$work/nginx.crt" 2>/dev/null
cat > "$work/nginx.conf" <<EOF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  upstream web { server $ip:80; }
  server {
    listen 127.0.0.1:8443 ssl http2;
    ssl_certificate $work/nginx.crt;
    ssl_certificate_key $work/nginx.key;
    location / { proxy_pass http://web; proxy_http_version 1.1; }
  }
}
EOF
nsx nginx -c "$work/nginx.conf"

# Each endpoint answers the same page before it is measured (devbox's redirection follows
# the container's start within a second or two).
for url in "http://$ip/" "https://nginx.bench:8443/" "https://www.synbioz.dev/"; do
  for _ in $(seq 60); do
    nsx curl -sfk --max-time 5 -o /dev/null "$url" && break
    sleep 0.5
  done
  [ "$(nsx curl -sfk --max-time 5 "$url" | wc -c)" = 1024 ] ||
    { echo "error: $url does not serve the page" >&2; exit 1; }
done

# wrk's output -> "requests/s p50_ms p99_ms"
measure() {
  nsx wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$1" | python3 -c '
import re, sys
t = sys.stdin.read()
def ms(label):
    m = re.search(r"^\s*" + label + r"\s+([\d.]+)(us|ms|s)\s*$", t, re.M)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", t)
if errors:
    print("note: " + errors.group(0), file=sys.stderr)
p50, p99 = ms("50%"), ms("99%")
print(f"{rps:.1f} {p50:.2f} {p99:.2f}")'
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for round in $(seq "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  measure "http://$ip/" >> "$work/plain"
  measure "https://nginx.bench:8443/" >> "$work/nginx"
  measure "https://www.synbioz.dev/" >> "$work/devbox"
done
col() { awk -v c="$2" '{print $c}' "$work/$1" | median; }
plain_rps=$(col plain 1); plain_p50=$(col plain 2); plain_p99=$(col plain 3)
nginx_rps=$(col nginx 1); nginx_p50=$(col nginx 2); nginx_p99=$(col nginx 3)
devbox_rps=$(col devbox 1); devbox_p50=$(col devbox 2); devbox_p99=$(col devbox 3)

echo "HTTPS to a container by name ($accel guest, wrk -t2 -c$CONNECTIONS -d$DURATION, medians of $ROUNDS rounds, 1 KiB page, busybox httpd):"
printf '  %-32s %10s %10s %10s\n' "" "req/s" "p50 ms" "p99 ms"
printf '  %-32s %10s %10s %10s\n' "plain HTTP to the container's IP" "$plain_rps" "$plain_p50" "$plain_p99"
printf '  %-32s %10s %10s %10s\n' "nginx TLS on the host" "$nginx_rps" "$nginx_p50" "$nginx_p99"
printf '  %-32s %10s %10s %10s\n' "devbox (https://www.synbioz.dev/)" "$devbox_rps" "$devbox_p50" "$devbox_p99"
python3 - "$devbox_rps" "$nginx_rps" "$devbox_p99" "$nginx_p99" "$devbox_p50" "$plain_p50" <<'PY'
import sys
d_rps, n_rps, d_p99, n_p99, d_p50, p_p50 = map(float, sys.argv[1:])
print(f"  devbox/nginx requests/s: {d_rps / n_rps:.2f}x (goal >= 1.0x); p99 devbox/nginx: {d_p99 / n_p99:.2f}x")
print(f"  latency TLS termination adds to plain HTTP (p50): {d_p50 - p_p50:.2f} ms")
PY
