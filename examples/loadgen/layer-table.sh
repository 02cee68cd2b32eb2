#!/usr/bin/env bash
# Runs the demo server with every layer on, with each layer off in turn, and with all off, puts the same load on
# each (loadgen: closed loop, mixed routes, on this machine only) and prints a Markdown table of requests/s, p50 and
# p99 per configuration. With every layer on, one row per content coding the client accepts (zstd, br, gzip,
# deflate, none), so the cost of each codec shows (the demo caches each coding's variant of the cached routes).
#
#   examples/loadgen/layer-table.sh [seconds per run, default 10] [connections, default 64]
#
# The rate limit is raised so that the quota does not refuse the load (its cost is still paid per request).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}
connections=${2:-64}
port=3917
cargo build --release -q -p demo-server -p loadgen
db=$(mktemp -d)/items.sqlite3

run() {
  local label=$1; shift
  local accept=${ACCEPT:-gzip}
  RUST_LOG=warn ./target/release/demo-server --listen 127.0.0.1:$port --items-db "$db" \
    --rate-limit 100000000 --rate-limit-burst 1000000 --rate-limit-window 1s "$@" &
  local pid=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local out
  out=$(./target/release/loadgen --addr 127.0.0.1:$port --connections "$connections" --seconds "$seconds" --json \
    --header "accept-encoding: $accept" \
    --path /api/items --path /api/items/1 --path /api/items/42 --path /api/report --path /health \
    --path /api/items/7 --path /api/items/300 --path /no/such/route)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 -c 'import json,sys; r=json.loads(sys.argv[2]); print("| %s | %.0f | %.2f | %.2f | %s |" % (sys.argv[1], r["requests_per_second"], r["p50_ms"], r["p99_ms"], ", ".join("%s: %d" % kv for kv in sorted(r["statuses"].items()))))' "$label" "$out"
}

echo "| configuration | requests/s | p50 ms | p99 ms | statuses |"
echo "|---|---|---|---|---|"
for coding in zstd br gzip deflate identity; do
  ACCEPT=$coding run "all layers on, accept-encoding: $coding"
done
for layer in timing ratelimit concurrency compression cache batch; do
  run "without $layer" --disable "$layer"
done
run "all layers off" --disable timing,ratelimit,concurrency,compression,cache,batch
