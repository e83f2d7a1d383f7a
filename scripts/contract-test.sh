#!/usr/bin/env bash
# The REST contract tested against a running node with schemathesis (4.x, in a virtualenv): no
# 5xx, and every status, content type and body true to openapi.yaml. Peer endpoints (binary,
# secret-gated) and the WebSocket upgrade are covered by the Rust and Node.js tests instead.
#
# The node has API tokens, so authentication is part of the contract: one run with a write token
# (every operation, SCHEMATHESIS_EXAMPLES per operation), one with a read token (writes are 403),
# one with no token and one with an unknown token (everything but health and metrics is 401).
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
write_token="contract-write-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
read_token="contract-read-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
cat >"$data.tokens.toml" <<TOKENS
[[tokens]]
name = "contract-write"
token = "$write_token"
access = "write"

[[tokens]]
name = "contract-read"
token = "$read_token"
TOKENS
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# A short request timeout bounds long polls, so no test case waits for long.
"$bin" serve --listen "127.0.0.1:$port" --data-dir "$data" --token-file "$data.tokens.toml" \
  --request-timeout-secs 1 --log-level error &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$data" "$data.tokens.toml"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/v1/health" >/dev/null && break
  sleep 0.1
done

run() {
  local label="$1" examples="$2"
  shift 2
  echo "contract: $label, $examples examples per operation"
  "$venv/bin/schemathesis" run openapi.yaml --url "http://127.0.0.1:$port" \
    --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
    --exclude-path-regex '/v1/peer/.*|/v1/automerge-repo|/ui.*' \
    --max-examples "$examples" --request-timeout 15 \
    --seed "${SCHEMATHESIS_SEED:-1}" --no-color "$@"
}
run "write token" "${SCHEMATHESIS_EXAMPLES:-20}" -H "Authorization: Bearer $write_token"
run "read token" 5 -H "Authorization: Bearer $read_token"
run "no token" 2
run "unknown token" 2 -H "Authorization: Bearer not-a-token-of-this-node"
