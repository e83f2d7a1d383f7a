#!/usr/bin/env bash
# The REST contract tested against a running node with schemathesis (4.x, in a virtualenv): no
# 5xx, and every status, content type and body true to openapi.yaml. Peer endpoints (binary,
# secret-gated) and the WebSocket upgrade are covered by the Rust and Node.js tests instead.
# A fixed seed keeps CI reproducible; pass another with SCHEMATHESIS_SEED.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CONCORD_VENV:-$HOME/.cache/concord/venv}"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis>=4,<5"
fi
cargo build --locked --quiet --bin concord
bin="${CARGO_TARGET_DIR:-target}/debug/concord"
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# A short request timeout bounds long polls, so no test case waits for long.
"$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" --request-timeout-secs 1 --log-level error &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/v1/health" >/dev/null && break
  sleep 0.1
done
"$venv/bin/schemathesis" run openapi.yaml --url "http://127.0.0.1:$port" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --exclude-path-regex '/v1/peer/.*|/v1/automerge-repo' \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-10}" --request-timeout 15 \
  --seed "${SCHEMATHESIS_SEED:-1}" --no-color
