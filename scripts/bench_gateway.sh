#!/usr/bin/env bash
# Gateway overhead through the durable queue, against a real HTTP upstream, next to what this
# machine's Postgres allows. One run measures, with wrk:
#   - the upstream alone (nginx answering a fixed OpenAI-format completion);
#   - `optimizer serve` (API + in-process workers) in front of it: /v1/chat/completions and
#     /complete, one connection (sequential) and CONNS connections;
#   - split mode (`optimizer serve --no-workers` + one `optimizer worker`) at CONNS connections;
#   - `pgbench -N` (one durable transaction): single-client latency, 16-client tps;
# and prints the ratios issue 17 sets goals on. Absolute figures move from run to run on shared
# machines: compare the ratios of one run.
#
# Usage: scripts/bench_gateway.sh [SECONDS=10] [CONNS=50]
#   BIN=path/to/optimizer   benchmark that binary instead of building target/release/optimizer
#   PG=postgres://…         the server to use (default postgres://postgres@127.0.0.1:5432)
# Needs nginx, wrk and pgbench (installed with apt-get when missing and possible).
set -u
S=${1:-10}; C=${2:-50}
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PG=${PG:-postgres://postgres@127.0.0.1:5432}
if [ -z "${BIN:-}" ]; then
  cargo build --release --bin optimizer -q || exit 1
  BIN=$ROOT/target/release/optimizer
fi
missing=""
command -v nginx >/dev/null || missing="$missing nginx-light"
command -v wrk >/dev/null || missing="$missing wrk"
command -v pgbench >/dev/null || missing="$missing postgresql-contrib"
if [ -n "$missing" ]; then
  command -v apt-get >/dev/null || { echo "install:$missing"; exit 2; }
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null
fi
D=$(mktemp -d /tmp/bench-gateway.XXXX); mkdir -p "$D/tmp"
UP=18180; API=18181; WORKER=18182
DB=bench_gateway_$$; PGB=bench_pgbench_$$
sed "s#DIR#$D#g; s#PORT#$UP#g" scripts/bench/upstream.conf > "$D/nginx.conf"
PIDS=""
cleanup() {
  for p in $PIDS; do kill "$p" 2>/dev/null; done
  for p in $PIDS; do wait "$p" 2>/dev/null; done
  nginx -c "$D/nginx.conf" -p "$D" -s stop 2>/dev/null
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -qc "DROP DATABASE IF EXISTS $PGB" >/dev/null 2>&1
  rm -rf "$D"
}
trap cleanup EXIT
nginx -c "$D/nginx.conf" -p "$D" || exit 1

ENV=(DATABASE_URL=$PG/$DB PROVIDERS=openai_compat OPENAI_COMPAT_BASE_URL=http://127.0.0.1:$UP/v1
     CACHE_ENABLED=false EXPLORATION_RATE=0 RUST_LOG=warn BIND=127.0.0.1:$API WORKER_BIND=127.0.0.1:$WORKER)
start() { # args: the optimizer subcommand; sets PID
  env "${ENV[@]}" "$BIN" "$@" >>"$D/optimizer.log" 2>&1 &
  PID=$!; PIDS="$PIDS $PID"
}
wait_ready() {
  for _ in $(seq 300); do curl -fs "127.0.0.1:$API/ready" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "the service did not become ready:"; tail -5 "$D/optimizer.log"; exit 1
}
stop() { for p in "$@"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; }
# Peak RSS (MiB) of the given processes while a measurement runs.
sample_rss() {
  ( peak=0; while :; do
      now=0; for p in "$@"; do r=$(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0); now=$((now + r)); done
      [ "$now" -gt "$peak" ] && { peak=$now; echo $((peak / 1024)) > "$D/rss"; }
      sleep 0.2
    done ) & RSS_PID=$!
}
# measure LABEL URL BODY CONNS [PIDS for RSS…]: prints one row; sets RPS P50 P99 P999.
measure() {
  local label=$1 url=$2 body=$3 conns=$4; shift 4
  BODY=$body wrk -t1 -c"$conns" -d2s -s scripts/bench/wrk.lua "$url" >/dev/null 2>&1
  echo 0 > "$D/rss"; [ $# -gt 0 ] && sample_rss "$@"
  local threads=1; [ "$conns" -gt 1 ] && threads=2
  local r; r=$(BODY=$body wrk -t$threads -c"$conns" -d"${S}s" -s scripts/bench/wrk.lua "$url" 2>&1 | awk '/^RESULT/ {print $2, $3, $4, $5, $6}')
  [ $# -gt 0 ] && { kill $RSS_PID 2>/dev/null; wait $RSS_PID 2>/dev/null; }
  read -r RPS P50 P99 P999 ERR <<<"${r:-0 0 0 0 0}"
  printf "%-34s %5s %10s %9s %9s %10s %6s %8s\n" "$label" "$conns" "$RPS" "$P50" "$P99" "$P999" "$ERR" "$([ $# -gt 0 ] && cat "$D/rss" || echo -)"
}
floor() { # best of the runs: lowest single-client latency (ms), highest 16-client tps
  local l t
  rm -f "$D"/tmp/pgbench_log*
  l=$(pgbench -N -c1 -T5 -l --log-prefix="$D/tmp/pgbench_log" "$PG/$PGB" 2>/dev/null | awk '/latency average/ {print $4}')
  # The floor of the tail goal: one durable commit's own p99.9 / p50 at one client (per-transaction
  # latencies, the worse of the runs).
  PGTAIL=$(python3 - "$D"/tmp/pgbench_log* "${PGTAIL:-0}" <<'EOF2'
import sys
v = sorted(int(l.split()[2]) for f in sys.argv[1:-1] for l in open(f))
print(max(float(sys.argv[-1]), v[int(0.999 * len(v))] / v[len(v) // 2]) if v else sys.argv[-1])
EOF2
)
  t=$(pgbench -N -c16 -j2 -T5 "$PG/$PGB" 2>/dev/null | awk '/^tps/ {print $3}')
  PG1=$(python3 -c "print(min(x for x in [${l:-1e9}, ${PG1:-1e9}]))")
  PG16=$(python3 -c "print(max(x for x in [${t:-0}, ${PG16:-0}]))")
}

psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $PGB" -qc "CREATE DATABASE $PGB" >/dev/null 2>&1
pgbench -q -i "$PG/$PGB" >/dev/null 2>&1
floor
CHAT='{"model":"auto","messages":[{"role":"user","content":"hi"}]}'
COMPLETE='{"prompt":"hi"}'
printf "%-34s %5s %10s %9s %9s %10s %6s %8s\n" "" conns "req/s" "p50 ms" "p99 ms" "p99.9 ms" errors "RSS MiB"
measure "upstream direct" "http://127.0.0.1:$UP/v1/chat/completions" "$CHAT" 1
UP50=$P50

psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
start serve; SERVE=$PID; wait_ready
measure "serve /v1/chat/completions" "http://127.0.0.1:$API/v1/chat/completions" "$CHAT" 1 $SERVE
V1_P50=$P50; V1_P999=$P999
measure "serve /complete" "http://127.0.0.1:$API/complete" "$COMPLETE" 1 $SERVE
measure "serve /v1/chat/completions" "http://127.0.0.1:$API/v1/chat/completions" "$CHAT" "$C" $SERVE
SERVE_RPS=$RPS; SERVE_RSS=$(cat "$D/rss")
measure "serve /complete" "http://127.0.0.1:$API/complete" "$COMPLETE" "$C" $SERVE
stop $SERVE

start serve --no-workers; API_PID=$PID; wait_ready
start worker; WORKER_PID=$PID
for _ in $(seq 100); do curl -fs "127.0.0.1:$WORKER/ready" >/dev/null 2>&1 && break; sleep 0.1; done
measure "split /v1/chat/completions" "http://127.0.0.1:$API/v1/chat/completions" "$CHAT" 1 $API_PID $WORKER_PID
measure "split /v1/chat/completions" "http://127.0.0.1:$API/v1/chat/completions" "$CHAT" "$C" $API_PID $WORKER_PID
SPLIT_RPS=$RPS
# Let the requests wrk left in flight finish before stopping (they would after a restart too).
for _ in $(seq 100); do
  [ "$(psql "$PG/$DB" -Atc "SELECT count(*) FROM requests WHERE status IN ('queued', 'running')")" = 0 ] && break
  sleep 0.1
done
stop $API_PID $WORKER_PID
floor
echo "pgbench -N: single-client transaction ${PG1} ms; 16 clients ${PG16} tps (best of a run before and one after)"
echo "pgbench -N single-client p99.9 / p50 = $(printf %.1f "$PGTAIL") (worse of the two runs: the tail of one durable commit on this machine)"
echo "requests by status: $(psql "$PG/$DB" -Atc "SELECT string_agg(status || '=' || n, ' ') FROM (SELECT status, count(*) n FROM requests GROUP BY 1) s")"
python3 - "$V1_P50" "$UP50" "$PG1" "$V1_P999" "$SERVE_RPS" "$SPLIT_RPS" "$PG16" "$SERVE_RSS" <<'EOF'
import sys
p50, up, pg1, p999, serve, split, pg16, rss = map(float, sys.argv[1:])
print(f"sequential overhead (p50 - upstream p50) = {p50 - up:.2f} ms = {(p50 - up) / pg1:.2f}x one pgbench -N transaction (goal <= 2.5x)")
print(f"p99.9 / p50 at one connection = {p999 / p50:.2f} (goal <= 2)")
print(f"completions/s at load: serve {serve / pg16:.0%}, split {split / pg16:.0%} of pgbench -N 16-client tps (goal >= 30%)")
print(f"peak RSS of serve under load: {rss:.0f} MiB (goal <= 64)")
EOF
