#!/usr/bin/env bash
# bench/core/run.sh — engine core figures, each beside a reference
# measured in the same run on the same machine:
#   1. HTTP server req/s, trivial Lua route (wrk)  vs nginx `return 200`
#   2. Redis round trips/s from Lua                 vs redis-benchmark
#   3. outbound HTTP req/s via core.http.request    vs curl -Z (parallel)
# Usage: bench/core/run.sh   (after `make`); results go to stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd); TMP=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$TMP"' EXIT
SIG=$ROOT/bin/signal
RPORT=$((17000 + RANDOM % 1000)); SPORT=$((RPORT + 1)); NPORT=$((RPORT + 2))
DUR=${DUR:-10}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
redis-server --port $RPORT --save '' --appendonly no --daemonize yes --dir "$TMP" >/dev/null
cat >"$TMP/nginx.conf" <<NGX
worker_processes 1; daemon off; pid $TMP/nginx.pid; error_log $TMP/nginx.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$NPORT; location / { return 200 "ok"; } } }
NGX
nginx -c "$TMP/nginx.conf" -p "$TMP" & sleep 0.3
SIGNAL_LOG_LEVEL=warn $SIG serve bench/core/hello_app.lua --listen 127.0.0.1:$SPORT --workers 1 & sleep 0.5

echo "== 1. HTTP server, trivial route, 1 worker: wrk -t1 -c32 -d${DUR}s"
printf "signal (Lua route): "; wrk -t1 -c32 -d${DUR}s http://127.0.0.1:$SPORT/ | awk '/Requests\/sec/{print $2}'
printf "nginx return 200:   "; wrk -t1 -c32 -d${DUR}s http://127.0.0.1:$NPORT/ | awk '/Requests\/sec/{print $2}'

echo "== 2. Redis SET round trips from Lua (one worker) vs redis-benchmark"
$SIG exec bench/core/redis_rt.lua redis://127.0.0.1:$RPORT/0 200000
rb() { redis-benchmark -p $RPORT -t set "$@" -q 2>/dev/null | tr '\r' '\n' | grep 'requests per second' | tail -1; }
echo "redis-benchmark -c1 -P1:    $(rb -n 200000 -c 1)"
echo "redis-benchmark -c50 -P1:   $(rb -n 200000 -c 50)"
echo "redis-benchmark -c1 -P100:  $(rb -n 2000000 -c 1 -P 100)"

echo "== 3. outbound HTTP to nginx (keep-alive), 20000 requests, 64 in flight"
$SIG exec bench/core/http_out.lua http://127.0.0.1:$NPORT/ 20000 64
for i in $(seq 20000); do echo "url = \"http://127.0.0.1:$NPORT/\""; echo "output = /dev/null"; done >"$TMP/curl.cfg"
s=$(date +%s.%N); curl -s -Z --parallel-max 64 -K "$TMP/curl.cfg" 2>/dev/null; e=$(date +%s.%N)
echo "curl -Z --parallel-max 64: $(echo "20000 / ($e - $s)" | bc) req/s"
redis-cli -p $RPORT shutdown nosave >/dev/null 2>&1 || true
