#!/usr/bin/env bash
# Sets up the machine and runs one Concord node on 127.0.0.1:7070 with its data in ./concord-data.
# Extra arguments go to `concord serve` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
exec cargo run --locked -- serve "$@"
