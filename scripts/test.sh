#!/usr/bin/env bash
# Sets up the machine and runs the whole test suite: unit, integration (real HTTP, real RocksDB,
# real processes) and property tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
# The JavaScript clients, exactly as pinned by tests/js/package-lock.json.
npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
cargo test --locked "$@"
