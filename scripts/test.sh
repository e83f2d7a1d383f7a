#!/usr/bin/env bash
# Sets up the machine and runs the whole test suite: unit, integration (real HTTP, real RocksDB,
# real processes, Node.js clients), property tests, a bounded fuzz run of every decoder of untrusted
# input, and the OpenAPI contract (schemathesis).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
CONCORD_SETUP_TESTS=1 source scripts/setup.sh
# The JavaScript clients, as pinned by tests/js/package-lock.json. (`npm install`, not `npm ci`:
# npm 11's `ci` rejects this lockfile over cbor-extract's platform-specific optional packages;
# `install` with a lockfile present installs exactly the locked versions.)
npm install --prefix tests/js --no-audit --no-fund --loglevel=error
# The console's browser tests: playwright-core (no browser download) drives Debian's chromium.
# Pinned to 1.61.1, the last release that runs on Node.js 18 (Debian bookworm's nodejs): from
# 1.62 on, importing it exits at once on Node 18, and every browser test fails.
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
cargo test --locked "$@"
# Every decoder of untrusted bytes under libFuzzer, briefly and reproducibly (longer, random
# runs: scripts/fuzz.sh 600).
scripts/fuzz.sh --ci
# The REST contract against a running node (schemathesis).
scripts/contract-test.sh
