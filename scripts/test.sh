#!/usr/bin/env bash
# Sets up the machine and runs the whole test suite: unit, integration (real HTTP, real RocksDB,
# real processes) and property tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
cargo test --locked "$@"
