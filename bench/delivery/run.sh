#!/usr/bin/env bash
# bench/delivery/run.sh — end-to-end delivered events/s and the engine's peak
# memory, with the Amperity sandbox adding 50 ms to every request.
#
# Starts, on free loopback ports: a private redis-server, the sandbox
# (`signal sandbox`, SANDBOX_LATENCY_MS=50) and, per run, the engine
# (`signal run`, $WORKERS workers, one pipeline, one Amperity integration
# pointing at the sandbox, live events on, the per-tenant rate limit raised
# out of the way). Three runs:
#   1. drain:   N events are put in the raw stream first (what the collector
#               stores), then the engine starts; figure = N / (engine start →
#               N-th request received by the sandbox). Also the CPU time the
#               engine, the sandbox and Redis spent per event (from
#               /proc/<pid>/stat), which does not depend on what else the
#               machine is running, and the engine's VmHWM.
#   2. steady:  the engine runs while inject.lua enqueues N events (its own
#               CPU competes for the same 2 cores); figure = N / (first
#               enqueue → N-th delivery).
#   3. memory:  as 1. with RSS_N = 10,000 events: every one is inside the
#               engine's pipeline at once; VmHWM = peak RSS.
#
#   bench/delivery/run.sh                       # N=30000
#   MODE=collector bench/delivery/run.sh        # run 2 through POST /v1/batch
#   LIVE=0 bench/delivery/run.sh                # live events off
#
# Needs: redis-server, redis-cli, curl, bc. Target: ≥ 5,000
# delivered events/s on 2 vCPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
N=${N:-30000}
RSS_N=${RSS_N:-10000}
MODE=${MODE:-raw}
WORKERS=${WORKERS:-2}
LATENCY=${LATENCY:-50}
LIVE=${LIVE:-1}
KEY=dk_bench

make -s all

WORK=$(mktemp -d /tmp/signal-bench-delivery.XXXXXX)
ENGINE_PID= SANDBOX_PID= REDIS_PID_FILE="$WORK/redis.pid"
cleanup() {
  [ -n "$ENGINE_PID" ] && kill "$ENGINE_PID" 2>/dev/null && wait "$ENGINE_PID" 2>/dev/null
  [ -n "$SANDBOX_PID" ] && kill "$SANDBOX_PID" 2>/dev/null && wait "$SANDBOX_PID" 2>/dev/null
  [ -f "$REDIS_PID_FILE" ] && kill "$(cat "$REDIS_PID_FILE")" 2>/dev/null
  true
}
trap cleanup EXIT

free_port() {
  local p=$((20000 + RANDOM % 12000))   # below the ephemeral range (32768+)
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}
wait_port() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "run.sh: nothing listens on port $1" >&2; return 1
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --dir "$WORK" --pidfile "$REDIS_PID_FILE" --logfile "$WORK/redis.log"
wait_port "$REDIS_PORT"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
REDIS_PID=$(cat "$REDIS_PID_FILE")

SANDBOX_PORT=$(free_port)
SANDBOX_LATENCY_MS=$LATENCY "$ROOT/bin/signal" sandbox --listen "127.0.0.1:$SANDBOX_PORT" \
  --profiles "$ROOT/spec/fixtures/profiles.json" >"$WORK/sandbox.log" 2>&1 &
SANDBOX_PID=$!
wait_port "$SANDBOX_PORT"
SANDBOX_URL="http://127.0.0.1:$SANDBOX_PORT"

INGEST_TOKEN=$(luajit -e 'local f=io.open("spec/fixtures/profiles.json") local s=f:read("*a") print((s:match([["ingest_token"%s*:%s*"([^"]+)"]])))')
LIVE_MAX=1000; [ "$LIVE" = 1 ] || LIVE_MAX=0

start_engine() {
  ENGINE_PORT=$(free_port)
  cat >"$WORK/signal.conf.lua" <<EOF
return {
  listen = "127.0.0.1:$ENGINE_PORT", workers = $WORKERS, log_level = "warn",
  redis = "$REDIS_URL", live_events_max = $LIVE_MAX,
  delivery = { rate_limit_per_tenant = 1000000 },
  pipelines = { { key = "$KEY", integrations = { {
    type = "amperity", tenant_subdomain = "acme", tenant_id = "acme", api_key = "$INGEST_TOKEN",
    event_stream_id = "esm-demo", source_value = "DATAFLY", base_url = "$SANDBOX_URL" } } } },
}
EOF
  "$ROOT/bin/signal" run -c "$WORK/signal.conf.lua" >>"$WORK/engine.log" 2>&1 &
  ENGINE_PID=$!
  wait_port "$ENGINE_PORT"
}
stop_engine() { kill "$ENGINE_PID"; wait "$ENGINE_PID" 2>/dev/null || true; ENGINE_PID=; }
inject() {
  "$ROOT/bin/signal" exec "$ROOT/bench/delivery/inject.lua" "$REDIS_URL" "$KEY" "$1" "$SANDBOX_URL" "$2" \
    "http://127.0.0.1:${ENGINE_PORT:-0}"
}
delivered() { curl -s "$SANDBOX_URL/_sandbox/stats" | sed -E 's/.*"events":([0-9]+).*/\1/'; }
field() { sed -E "s/.*\"$1\":([0-9.e+-]+).*/\1/"; }

# drain COUNT → "rate engine_us sandbox_us redis_us hwm_kib"
drain() {
  local count=$1 base s0 r0 t0 t1 e1 s1 r1 hwm
  inject "$count" enqueue >/dev/null
  base=$(delivered)
  s0=$(cpu_ticks "$SANDBOX_PID"); r0=$(cpu_ticks "$REDIS_PID")
  t0=$(date +%s.%N)
  start_engine
  while [ $(($(delivered) - base)) -lt "$count" ]; do sleep 0.02; done
  t1=$(date +%s.%N)
  e1=$(cpu_ticks "$ENGINE_PID"); s1=$(cpu_ticks "$SANDBOX_PID"); r1=$(cpu_ticks "$REDIS_PID")
  hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$ENGINE_PID/status")
  stop_engine
  echo "$(echo "$count / ($t1 - $t0)" | bc) $(echo "$e1 * 1000000 / $HZ / $count" | bc)" \
    "$(echo "($s1 - $s0) * 1000000 / $HZ / $count" | bc) $(echo "($r1 - $r0) * 1000000 / $HZ / $count" | bc) $hwm"
}

drain 3000 >/dev/null                           # warm-up: page cache, Redis memory
read -r D_RATE D_ENG D_SBX D_RED D_HWM <<<"$(drain "$N")"

start_engine
inject 2000 raw >/dev/null                       # warm-up: JIT, connections
STEADY=$(inject "$N" "$MODE")
stop_engine

read -r M_RATE _ _ _ M_HWM <<<"$(drain "$RSS_N")"

echo "machine: $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load before run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "setup:   engine $WORKERS workers, sandbox +${LATENCY} ms per request, live events $([ "$LIVE" = 1 ] && echo on || echo off)"
printf "drain %d queued events:     %6d events/s delivered   (engine %d µs CPU/event, sandbox %d, redis %d; VmHWM %d KiB)\n" \
  "$N" "$D_RATE" "$D_ENG" "$D_SBX" "$D_RED" "$D_HWM"
printf "steady, %s injection:  %6d events/s delivered   %s\n" "$MODE" "$(echo "$STEADY" | field rate)" "$STEADY"
printf "peak RSS, %d events in flight: VmHWM %d KiB (drained at %d events/s)\n" "$RSS_N" "$M_HWM" "$M_RATE"
echo "target: >= 5000 events/s delivered"
