#!/usr/bin/env bash
# Reruns the hostile-load scenarios against release builds of the demo server and cache-proxy on this machine and
# prints, per scenario, what came back, the server's resident memory and its in-flight gauges. Every scenario is
# bounded in count and time; the whole run takes about three minutes.
#
#   examples/loadgen/abuse.sh            # all scenarios
#   examples/loadgen/abuse.sh demo       # only the demo-server ones
#   examples/loadgen/abuse.sh proxy      # only the cache-proxy ones
#
# Short timeouts are used so the run is quick; the defaults are in the book's operations chapter.
set -euo pipefail
cd "$(dirname "$0")/../.."
which=${1:-all}
port=3931
proxy_port=3932
origin_port=3933
[ -n "${ABUSE_NO_BUILD:-}" ] || cargo build --release -q -p demo-server -p cache-proxy -p loadgen
abuse=./target/release/abuse
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_for() {
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$1/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server on port $1 did not start" >&2
  return 1
}

if [ "$which" = all ] || [ "$which" = demo ]; then
  echo "## demo-server (16 MiB cache, 1 s header and idle timeouts, default connection cap, events cap 256)"
  # A descriptor limit like a small container's: the connection cap (default: below the limit) must keep the server
  # reachable under it. The rate limit is off here so the crawler and the streams reach the cache and compressor.
  (ulimit -n 1024
   RUST_LOG=error exec ./target/release/demo-server --listen 127.0.0.1:$port --items-db "$work/items.sqlite3" \
     --cache-max-bytes $((16 * 1024 * 1024)) --header-read-timeout 1s --idle-timeout 1s \
     --events-max-in-flight 256 --disable ratelimit) &
  demo=$!
  pids+=("$demo")
  wait_for $port
  $abuse --addr 127.0.0.1:$port --pid "$demo" silent --count 1100 --seconds 4
  $abuse --addr 127.0.0.1:$port --pid "$demo" slowloris --count 500 --seconds 4 --gap-ms 200
  $abuse --addr 127.0.0.1:$port --pid "$demo" idle --count 2000 --seconds 4
  $abuse --addr 127.0.0.1:$port --pid "$demo" urls --seconds 20 --connections 32 --gzip
  $abuse --addr 127.0.0.1:$port --pid "$demo" sse --count 600 --seconds 3 --rounds 3
  $abuse --addr 127.0.0.1:$port --pid "$demo" burst --path /api/slow --count 400 --concurrency 200
  sleep 1
  $abuse --addr 127.0.0.1:$port gauges
  kill "$demo"; wait "$demo" 2>/dev/null || true

  echo "## demo-server behind a trusted proxy (127.0.0.1/32 sets X-Forwarded-For; default quota 100/min, burst 10)"
  RUST_LOG=error ./target/release/demo-server --listen 127.0.0.1:$port --items-db "$work/items2.sqlite3" \
    --rate-limit-trusted-proxies 127.0.0.1/32 --rate-limit-client-ip-header x-forwarded-for &
  demo=$!
  pids+=("$demo")
  wait_for $port
  $abuse --addr 127.0.0.1:$port --pid "$demo" spoof --count 30 --header forwarded
  $abuse --addr 127.0.0.1:$port --pid "$demo" spoof --count 30 --header x-forwarded-for
  kill "$demo"; wait "$demo" 2>/dev/null || true
fi

if [ "$which" = all ] || [ "$which" = proxy ]; then
  echo "## cache-proxy (16 MiB cache, upstream timeout 2 s) in front of misbehaving origins"
  # An origin on this machine that answers /hang never, /both with Content-Length next to chunked, /badchunk with a
  # malformed chunk, and everything else with a small cacheable body.
  python3 - "$origin_port" <<'PY' &
import socket, sys, threading
def serve(c):
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            d = c.recv(4096)
            if not d: return
            data += d
        path = data.split(b" ")[1]
        if path.startswith(b"/hang"):
            threading.Event().wait(120); return
        if path.startswith(b"/both"):
            c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n31\r\n" + b"x" * 49 + b"\r\n0\r\n\r\n")
        elif path.startswith(b"/badchunk"):
            c.sendall(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n")
        else:
            c.sendall(b"HTTP/1.1 200 OK\r\ncache-control: max-age=600\r\ncontent-length: 10\r\n\r\n0123456789")
    finally:
        c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
  pids+=($!)
  for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/$origin_port) 2>/dev/null && break; sleep 0.1; done
  RUST_LOG=error ./target/release/cache-proxy --listen 127.0.0.1:$proxy_port --upstream http://127.0.0.1:$origin_port \
    --max-bytes $((16 * 1024 * 1024)) --upstream-timeout 2s --header-read-timeout 1s --idle-timeout 1s &
  proxy=$!
  pids+=("$proxy")
  for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/$proxy_port) 2>/dev/null && break; sleep 0.1; done
  $abuse --addr 127.0.0.1:$proxy_port once --path /hang --seconds 45
  $abuse --addr 127.0.0.1:$proxy_port once --path /both
  $abuse --addr 127.0.0.1:$proxy_port once --path /badchunk
  $abuse --addr 127.0.0.1:$proxy_port --pid "$proxy" urls --prefix '/small?x=' --seconds 20 --connections 8
  $abuse --addr 127.0.0.1:$proxy_port --pid "$proxy" silent --count 500 --seconds 4
fi
