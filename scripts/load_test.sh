#!/usr/bin/env bash
# Load harness: a release `optimizer serve` (API + in-process workers) on the simulated provider
# with zero latency and the cache off, so every request goes through the durable queue; then
# `examples/load.rs` on loopback. Prints client throughput/latency, the server's own view of
# gateway overhead (latency minus provider time, from routing_metrics) and peak RSS.
#
# Usage: scripts/load_test.sh [REQUESTS] [CONCURRENCY] [MODE: sync|async]
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${1:-5000}
CONCURRENCY=${2:-64}
MODE=${3:-sync}
SERVER=${LOAD_DATABASE_SERVER:-postgres://postgres@127.0.0.1:5432}
DB=optimizer_load_$$
PORT=${LOAD_PORT:-18000}

cargo build --release --bin optimizer --example load -q
psql "$SERVER/postgres" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null
DATABASE_URL="$SERVER/$DB" BIND=127.0.0.1:$PORT SIMULATED_LATENCY_MS=0 CACHE_ENABLED=false \
  EXPLORATION_RATE=0 RUST_LOG=warn DB_MAX_CONNECTIONS=${DB_MAX_CONNECTIONS:-20} \
  ./target/release/optimizer serve &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; psql "$SERVER/postgres" -qc "DROP DATABASE IF EXISTS $DB" >/dev/null' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break
  sleep 0.1
done
# Warm-up (connections, first jobs), then the measured run.
./target/release/examples/load --url "http://127.0.0.1:$PORT" --requests 200 --concurrency 8 >/dev/null
psql "$SERVER/$DB" -qc "TRUNCATE routing_metrics, requests CASCADE" >/dev/null
PEAK=0
( while kill -0 $PID 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' /proc/$PID/status 2>/dev/null || echo 0)
    echo "$rss"; sleep 0.2
  done ) > /tmp/optimizer_rss_$$ &
SAMPLER=$!
./target/release/examples/load --url "http://127.0.0.1:$PORT" --requests "$REQUESTS" \
  --concurrency "$CONCURRENCY" --mode "$MODE"
if [ "$MODE" = async ]; then
  # Wait for the queue to drain, then report completions per second through the queue.
  for _ in $(seq 1 600); do
    left=$(psql "$SERVER/$DB" -tAc "SELECT count(*) FROM requests WHERE status IN ('queued','running')")
    [ "$left" = 0 ] && break
    sleep 0.1
  done
fi
kill $SAMPLER 2>/dev/null || true
PEAK=$(sort -n /tmp/optimizer_rss_$$ | tail -n 1); rm -f /tmp/optimizer_rss_$$
psql "$SERVER/$DB" -tAc "
  SELECT 'completions=' || count(*) ||
         ' through_queue_per_s=' || round(count(*) / greatest(extract(epoch FROM max(timestamp) - min(timestamp)), 0.001))::text ||
         ' overhead_ms_p50=' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms - provider_latency_ms)::numeric, 2) ||
         ' overhead_ms_p99=' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms - provider_latency_ms)::numeric, 2)
  FROM routing_metrics WHERE status = 'succeeded'"
echo "peak_rss_mib=$(( PEAK / 1024 ))"
