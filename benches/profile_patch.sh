#!/usr/bin/env bash
# Where a durable single-field PATCH spends its CPU: two flame graphs (issue 15).
#
#   1. ceiling.svg: the in-process commit path (`http_load --only ceiling`: 64 threads committing
#      merge patches through the store, no HTTP), the whole bench process;
#   2. node.svg: the node process while `wrk` sends it PATCHes (`http_load --only wrk-patch`).
#
# Each also gets a text summary (`*.top.txt`): the share of samples in which each function is on
# the stack (inclusive) and on top of it (self). Needs `perf` (linux-perf) and inferno
# (`cargo install inferno`); stacks are unwound from DWARF call frame information, so the
# optimised dependencies need no frame pointers.
#
# Run: benches/profile_patch.sh [out-dir] [seconds]   (defaults: target/profiles, 10)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/profiles}
secs=${2:-10}
mkdir -p "$out"
for tool in perf inferno-collapse-perf inferno-flamegraph wrk; do
    command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
bin=$(cargo bench --profile dev --bench http_load --no-run 2>&1 \
    | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "could not find the http_load bench binary" >&2; exit 1; }

# The share of samples each frame is in (inclusive) and on top of (self), from folded stacks.
summarise() {
    python3 - "$1" <<'EOF'
import collections, sys
incl, top, total = collections.Counter(), collections.Counter(), 0
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip("\n").rpartition(" ")
    n = int(n)
    frames = stack.split(";")
    total += n
    top[frames[-1]] += n
    for f in set(frames):
        incl[f] += n
print(f"{total} sample weight (perf periods; read the shares)")
print("inclusive  self  function")
for f, n in incl.most_common(60):
    print(f"{100 * n / total:8.1f}% {100 * top[f] / total:5.1f}%  {f[:160]}")
EOF
}

fold() {
    local name=$1
    perf script -i "$out/$name.data" --no-inline 2>/dev/null | inferno-collapse-perf >"$out/$name.folded"
    inferno-flamegraph --title "$name" <"$out/$name.folded" >"$out/$name.svg"
    summarise "$out/$name.folded" >"$out/$name.top.txt"
    echo "$out/$name.svg, $out/$name.top.txt"
}

echo "1/2: the in-process commit ceiling, ${secs}s"
perf record -q -F 499 --call-graph dwarf,32768 -o "$out/ceiling.data" -- \
    "$bin" --only ceiling --secs "$secs"
fold ceiling

echo "2/2: the node under wrk's PATCHes, ${secs}s"
log="$out/wrk-patch.log"
"$bin" --only wrk-patch --secs "$secs" >"$log" &
bench=$!
pid=""
for _ in $(seq 600); do
    pid=$(sed -n 's/^node pid //p' "$log")
    [ -n "$pid" ] && pgrep -x wrk >/dev/null && break
    sleep 0.1
done
[ -n "$pid" ] || { echo "the node did not start" >&2; kill "$bench"; exit 1; }
perf record -q -F 499 --call-graph dwarf,32768 -o "$out/node.data" -p "$pid" -- sleep $((secs - 1))
wait "$bench"
cat "$log"
fold node
