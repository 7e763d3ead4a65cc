#!/usr/bin/env bash
# bench/enrich/run.sh — enrichment and identity-hub figures:
#   1. GET /v1/enrich throughput and latency (wrk --latency at fixed
#      connections, and at ~5,000 req/s offered by pacing each connection
#      with wrk's delay(): Debian's wrk has no -R mode), beside /healthz
#      (one Redis PING: the floor of any Redis-backed route) in the same run.
#   2. Profile API calls per 1000 events for a 100-visitor workload (target:
#      100 = one lookup per visitor; lookups carry attributes), cold and warm
#      cache, through enrich.run directly and through the whole engine
#      (collector → processor → delivery), plus enrich.run's own latency.
#   3. The same with context personalization on (3 page categories): the
#      expected extra is one personalized call per visitor × category seen.
# Usage: bench/enrich/run.sh   (after `make`); DUR=5 for shorter wrk runs,
# WORKERS=N engine workers (default 1).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd); TMP=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$TMP"; }
trap cleanup EXIT
SIG=$ROOT/bin/signal
RPORT=$((18000 + RANDOM % 1000)); SBPORT=$((RPORT + 1)); EPORT=$((RPORT + 2))
DUR=${DUR:-10}; WORKERS=${WORKERS:-1}
export VISITORS=${VISITORS:-100} EVENTS=${EVENTS:-1000} CONC=${CONC:-50}
export SIGNAL_LOG_LEVEL=error

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); engine workers: $WORKERS"
redis-server --port $RPORT --save '' --appendonly no --daemonize yes --dir "$TMP" >/dev/null
for _ in $(seq 50); do redis-cli -p $RPORT ping >/dev/null 2>&1 && break; sleep 0.1; done
$SIG sandbox --listen 127.0.0.1:$SBPORT --profiles spec/fixtures/profiles.json >"$TMP/sandbox.log" 2>&1 &

write_conf() {  # $1 = personalization on (true|false)
  sed -e "s/@RPORT@/$RPORT/; s/@SBPORT@/$SBPORT/; s/@EPORT@/$EPORT/; s/@WORKERS@/$WORKERS/; s/@PERS@/$1/" \
    bench/enrich/signal.conf.lua.in >"$TMP/signal.conf.lua"
}
flush() { redis-cli -p $RPORT flushdb >/dev/null; }
wl() { $SIG exec bench/enrich/workload.lua "$1" "$TMP/signal.conf.lua" "http://127.0.0.1:$SBPORT" "http://127.0.0.1:$EPORT"; }
start_engine() {
  $SIG run -c "$TMP/signal.conf.lua" >"$TMP/engine.log" 2>&1 & EPID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$EPORT/healthz" >/dev/null && return; sleep 0.1; done
  echo "engine did not start:"; cat "$TMP/engine.log"; exit 1
}
sleep 0.3
write_conf false
wl setup >/dev/null

echo "== 1. GET /v1/enrich (100 visitors' cached slices), wrk -t1 --latency, ${DUR}s"
flush; wl hub
start_engine
wrkrun() {  # $1 = connections, $2 = url, $3.. = wrk args
  local c=$1 url=$2; shift 2
  wrk -t1 -c"$c" -d"${DUR}s" --latency "$@" "$url" | awk -v c="$c" '
    /Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=$NF}
    END {printf "  -c%-3s %9s req/s   p50 %8s   p99 %8s%s\n", c, rps, p50, p99, bad ? "   NON-2xx: " bad : ""}'
}
curl -s -H "Cookie: _dfdid=dfid_bench_7" "http://127.0.0.1:$EPORT/v1/enrich?provider=amperity"; echo
echo "/v1/enrich:"
wrkrun 1 "http://127.0.0.1:$EPORT/v1/enrich?provider=amperity" -s bench/enrich/enrich_wrk.lua
wrkrun 32 "http://127.0.0.1:$EPORT/v1/enrich?provider=amperity" -s bench/enrich/enrich_wrk.lua
echo "/v1/enrich at ~5,000 req/s offered (50 connections, each pacing 10 ms):"
PACE_MS=10 wrkrun 50 "http://127.0.0.1:$EPORT/v1/enrich?provider=amperity" -s bench/enrich/enrich_wrk.lua
echo "/healthz (reference: one Redis PING per request):"
wrkrun 1 "http://127.0.0.1:$EPORT/healthz"
wrkrun 32 "http://127.0.0.1:$EPORT/healthz"
kill $EPID; wait $EPID 2>/dev/null || true

echo "== 2. Profile API calls per 1000 events, $VISITORS visitors, $EVENTS events, $CONC in flight"
flush; curl -s -XPOST "http://127.0.0.1:$SBPORT/_sandbox/reset" >/dev/null; wl setup >/dev/null
echo "enrich.run, cold cache: $(wl direct)"
echo "enrich.run, warm cache: $(wl direct)"
echo "enrich.run, warm cache, one event at a time: $(CONC=1 wl direct)"
flush; start_engine
echo "engine (collector → processor), cold cache: $(wl collector)"
kill $EPID; wait $EPID 2>/dev/null || true

echo "== 3. with context personalization (pageCategory: 3 values)"
write_conf true; flush
echo "enrich.run, cold cache: $(wl direct)"
echo "enrich.run, warm cache: $(wl direct)"
