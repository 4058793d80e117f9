#!/usr/bin/env bash
# `devbox image build`: the Rust builder against the apt-based one it replaced (commit APT_REV,
# the last with apt-get and dpkg-deb; built in a temporary git worktree), same host, same
# arch, in one run, alternating run by run:
#   cold    empty cache: package lists, packages and image all fetched and built
#   cached  the image already built: what every later `image build` (and each test run) does
# Medians of RUNS (default 3) per arch (ARCHS, default "x86_64 arm64"); the ratio is
# Rust / apt (goal <= 1.0). Then the two manifests must list the same packages and versions:
# their diff is printed (empty when they agree). The apt-based build reads the host's apt
# sources (Debian 12 hosts); both builds use deb.debian.org.
# OLD_DEVBOX / NEW_DEVBOX: use these binaries instead of building them (release builds).
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${RUNS:-3}
ARCHS=${ARCHS:-x86_64 arm64}
APT_REV=${APT_REV:-f3578aa}
command -v apt-get >/dev/null || { echo "the apt-based builder needs apt-get (a Debian host)" >&2; exit 1; }

work=$(mktemp -d)
cleanup() {
  git worktree remove --force "$work/apt-src" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${NEW_DEVBOX:-}" ]; then
  cargo build --release -q --bin devbox
  NEW_DEVBOX=$(realpath "${CARGO_TARGET_DIR:-target}")/release/devbox
fi
if [ -z "${OLD_DEVBOX:-}" ]; then
  git worktree add -q --detach "$work/apt-src" "$APT_REV"
  (cd "$work/apt-src" && CARGO_TARGET_DIR="$work/apt-target" cargo build --release -q --bin devbox)
  OLD_DEVBOX=$work/apt-target/release/devbox
fi
export DEVBOX_HOME=$work/home

# Seconds one `image build` takes: bin cache arch.
build() {
  local t0 t1
  t0=$(date +%s.%N)
  if ! DEVBOX_CACHE=$2 "$1" image build --arch "$3" >/dev/null 2>"$work/log"; then
    cat "$work/log" >&2
    exit 1
  fi
  t1=$(date +%s.%N)
  python3 -c "print(f'{$t1 - $t0:.2f}')"
}

median() { python3 -c 'import statistics,sys; print(f"{statistics.median(map(float, sys.argv[1:])):.2f}")' "$@"; }
ratio() { python3 -c 'import sys; print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}")' "$1" "$2"; }

for arch in $ARCHS; do
  declare -A cold=([apt]="" [rust]="") cached=([apt]="" [rust]="")
  for run in $(seq "$RUNS"); do
    order="apt rust"
    [ $((run % 2)) -eq 0 ] && order="rust apt"
    for tool in $order; do
      bin=$OLD_DEVBOX
      [ "$tool" = rust ] && bin=$NEW_DEVBOX
      cache=$work/cache-$tool-$arch
      rm -rf "$cache"
      c=$(build "$bin" "$cache" "$arch")
      h=$(build "$bin" "$cache" "$arch")
      cold[$tool]+=" $c"
      cached[$tool]+=" $h"
      echo "$arch run $run $tool: cold ${c} s, cached ${h} s" >&2
    done
  done
  # shellcheck disable=SC2086
  ca=$(median ${cold[apt]}); cr=$(median ${cold[rust]})
  # shellcheck disable=SC2086
  ha=$(median ${cached[apt]}); hr=$(median ${cached[rust]})
  echo "$arch cold:   rust ${cr} s, apt ${ca} s: $(ratio "$cr" "$ca")x"
  echo "$arch cached: rust ${hr} s, apt ${ha} s: $(ratio "$hr" "$ha")x"
  python3 - "$work/cache-apt-$arch" "$work/cache-rust-$arch" "$arch" <<'EOF'
import glob, json, sys
def packages(cache):
    [m] = glob.glob(f"{cache}/images/*/manifest.json")
    return json.load(open(m))["packages"]
apt, rust, arch = packages(sys.argv[1]), packages(sys.argv[2]), sys.argv[3]
diff = [f"  {n}: apt {apt.get(n)}, rust {rust.get(n)}" for n in sorted(set(apt) | set(rust)) if apt.get(n) != rust.get(n)]
print(f"{arch} manifests: {len(apt)} packages (apt), {len(rust)} (rust); {len(diff)} differences")
print("\n".join(diff)) if diff else None
EOF
done
