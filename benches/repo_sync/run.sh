#!/usr/bin/env bash
# Concord against the reference automerge-repo sync server, side by side in one run, with the same
# client workload (benches/repo_sync/workload.mjs): N clients each creating and editing M
# documents, then a fresh client loading all of them with `repo.find`. Reports documents synced
# per second, sync latency, load rate and each find's latency, the server's CPU time per document
# (user + system, both phases) and its RSS, for both, then Concord's ratios to the reference.
#
# Usage: benches/repo_sync/run.sh [N clients] [M docs per client] [E edits per doc]
# (issue 15's workload: run.sh 8 50 10)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-20}; M=${2:-50}; E=${3:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/root/.cache/concord/target}"
npm install --prefix tests/js --no-audit --no-fund --loglevel=error >/dev/null
cargo build --quiet --bin concord
export NODE_PATH="$PWD/tests/js/node_modules"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss() { awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' "/proc/$1/status"; }
wait_port() { for _ in $(seq 200); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "server on $1 did not start" >&2; exit 1; }
# The workload and the reference server import packages installed under tests/js.
ln -sfn "$PWD/tests/js/node_modules" "$PWD/benches/repo_sync/node_modules"

echo "workload: $N clients x $M documents x $E edits"
echo "| server | docs synced/s | sync p50 | sync p99 | fresh-client load docs/s | find p50 | find p99 | fresh client CPU / load time | one find at a time p50 / p99 | server CPU per doc (sync + load) | server RSS after |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
declare -A cpu
for server in concord reference; do
  p=$(port)
  if [ "$server" = concord ]; then
    "$CARGO_TARGET_DIR/debug/concord" serve --listen "127.0.0.1:$p" --data-dir "$work/concord" --log-level warn &
    ws="ws://127.0.0.1:$p/v1/automerge-repo"
  else
    node benches/repo_sync/reference_server.mjs "$p" "$work/reference" >/dev/null &
    ws="ws://127.0.0.1:$p"
  fi
  pid=$!
  wait_port "$p"
  out=$(node benches/repo_sync/workload.mjs "$ws" "$N" "$M" "$E" "$pid")
  node -e 'const r = JSON.parse(process.argv[1]); const f = (x) => x.toFixed(1); const g = (x) => x.toFixed(3);
    console.log(`| ${process.argv[2]} | ${f(r.sync_docs_per_s)} | ${f(r.sync_p50_ms)} ms | ${f(r.sync_p99_ms)} ms | ${f(r.load_docs_per_s)} | ${f(r.find_p50_ms)} ms | ${f(r.find_p99_ms)} ms | ${(r.client_load_cpu_ms / r.load_ms).toFixed(2)} | ${f(r.find_one_p50_ms)} / ${f(r.find_one_p99_ms)} ms | ${g(r.sync_cpu_ms_per_doc)} + ${g(r.load_cpu_ms_per_doc)} ms | ${process.argv[3]} |`)' "$out" "$server" "$(rss "$pid")"
  cpu[$server]=$(node -e 'const r = JSON.parse(process.argv[1]); console.log(r.sync_cpu_ms_per_doc + r.load_cpu_ms_per_doc)' "$out")
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
node -e 'const [c, r] = process.argv.slice(1).map(Number);
  console.log(`server CPU per document: reference / Concord = ${(r / c).toFixed(1)}x`)' "${cpu[concord]}" "${cpu[reference]}"
