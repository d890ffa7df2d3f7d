#!/usr/bin/env bash
# Schema-based fuzzing of the HTTP API: schemathesis (PyPI) generates requests from
# docs/openapi.json against a running release `optimizer serve` (simulated providers, a scratch
# database) and checks that no answer is a server error and every answer conforms to the
# document (status code, content type, headers, body schema). The stateful phase follows the
# document's links (a created key → its operations; a queued retrain → its run).
#
#   scripts/fuzz_api.sh [SECONDS=120]
#
# Needs `cargo build --release` first, Python 3 (makes target/fuzz-venv on first use) and the
# Postgres of DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_BUDGET=${1:-120}
PG_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
SERVER=${PG_URL%/*}
DB="optimizer_fuzz_$$"
PORT=$((20000 + $$ % 20000))
VENV=target/fuzz-venv

if ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'schemathesis>=4.0,<5'
fi

psql -q "$PG_URL" -c "CREATE DATABASE $DB" >/dev/null
LOG=$(mktemp)
cleanup() {
    if [ -n "${PID:-}" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
    rm -f "$LOG"
}
trap cleanup EXIT

DATABASE_URL="$SERVER/$DB" BIND="127.0.0.1:$PORT" ADMIN_TOKEN=fuzz-admin \
    SIMULATED_LATENCY_MS=0 RUST_LOG=warn target/release/optimizer serve >"$LOG" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
    if curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1; then break; fi
    sleep 0.2
done
curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null || { cat "$LOG"; exit 1; }

status=0
"$VENV/bin/schemathesis" run docs/openapi.json \
    --url "http://127.0.0.1:$PORT" \
    --header "Authorization: Bearer fuzz-admin" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing,stateful \
    --max-time "$SECONDS_BUDGET" \
    --workers 1 \
    --request-timeout 30 \
    --suppress-health-check all || status=$?
if [ "$status" != 0 ]; then
    echo "--- server log (last 50 lines)"
    tail -n 50 "$LOG"
fi
exit "$status"
