#!/usr/bin/env bash
# Fuzzes every decoder of untrusted bytes (fuzz/fuzz_targets/) with libFuzzer, for a bounded time
# per target, starting from real protocol traffic (fuzz/seeds/, written by tests/js/fuzz_seeds.mjs).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 20 seconds, every target)
#   scripts/fuzz.sh --ci                                  (what the test command runs)
#
# `--ci` runs a fixed number of inputs per target from a fixed seed and no time cap, so a commit's
# result is the same on every run and on every machine, however fast (a time-bounded run with a
# fresh seed explores more, but could turn CI red at random, and a time cap would change how many
# inputs run).
#
# The targets build without the `server` feature, so without RocksDB: a cold build takes a couple
# of minutes. A crash fails the run; its input is kept in fuzz/artifacts/TARGET/ and replays with
# `cargo fuzz run -s none TARGET fuzz/artifacts/TARGET/FILE`. No sanitizer (`-s none`): address
# sanitizing needs a nightly compiler, and the code fuzzed here has no `unsafe`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh

bound=()
if [ "${1:-}" = "--ci" ]; then
  secs=0 # libFuzzer: no time cap
  bound=(-runs=500000 -seed=1)
  shift
else
  secs="${1:-20}"
  shift || true
fi
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(json_write sync_message changes repo_frame text_inputs)
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2 --quiet
fi
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
cargo fuzz build -s none --target-dir "$target_dir"

logs=$(mktemp -d)
status=0
for t in "${targets[@]}"; do
  corpus=$(mktemp -d)
  dict=()
  if [ -f "fuzz/$t.dict" ]; then dict=("-dict=fuzz/$t.dict"); fi
  if cargo fuzz run -s none --target-dir "$target_dir" "$t" "$corpus" "fuzz/seeds/$t" -- \
      -max_total_time="$secs" "${bound[@]}" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
      "${dict[@]}" \
      >"$logs/$t.log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' || true)
    cov=$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -1 || true)
    took=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$logs/$t.log" | grep -o '[0-9]* second' | grep -o '[0-9]*' || true)
    echo "fuzz: $t ok: ${runs:-?} runs in ${took:-?}s, $cov, corpus $(ls "$corpus" | wc -l) inputs"
  else
    status=1
    echo "fuzz: $t FAILED; the end of its log:"
    tail -40 "$logs/$t.log"
  fi
  rm -rf "$corpus"
done
rm -rf "$logs"
if [ "$status" -eq 0 ]; then
  echo "fuzz: ${#targets[@]} passed, 0 failed"
fi
exit "$status"
