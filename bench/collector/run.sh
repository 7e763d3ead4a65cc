#!/usr/bin/env bash
# bench/collector/run.sh — the collector's hot path against its baseline.
#
# Starts, on free loopback ports: a private redis-server, Signal (`signal
# run`, 1 worker, one pipeline) and nginx (1 worker, Debian's lua module,
# a handler that only reads + cjson-decodes + re-encodes the body). Then
# runs wrk (1 thread, $CONNECTIONS connections, $DURATION) POSTing the same
# ~1.1 KB datafly.js track event to each — to Signal's /v1/t with
# X-Pipeline-Key and a fresh messageId per request — after a short warm-up,
# and prints req/s for both, the ratio, and the raw stream's XLEN (proof the
# events were stored, not just answered).
#
#   bench/collector/run.sh                      # 10 s, 32 connections
#   DURATION=30s CONNECTIONS=64 bench/collector/run.sh
#   PROCESSOR=1 bench/collector/run.sh          # let the processor run too
#   BREAKDOWN=1 bench/collector/run.sh          # + per-layer figures (layers_app.lua)
#
# The engine's processor runs in the same worker thread and would consume
# (and XDEL) the raw stream while we measure; by default its consumer group
# is parked far in the future so it reads nothing: the figure is ingest
# alone, and XLEN can prove every answered event was stored.
#
# Needs: redis-server, redis-cli, nginx + libnginx-mod-http-lua, wrk, luajit.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
HERE="$ROOT/bench/collector"
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-3s}
PROCESSOR=${PROCESSOR:-0}
BREAKDOWN=${BREAKDOWN:-0}
KEY=dk_bench

for tool in redis-server redis-cli nginx wrk luajit; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing (make deps)" >&2; exit 1; }
done
[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] ||
  { echo "run.sh: libnginx-mod-http-lua is missing (apt-get install libnginx-mod-http-lua)" >&2; exit 1; }

make -s all

WORK=$(mktemp -d /tmp/signal-bench.XXXXXX)
ENGINE_PID= LAYERS_PID= NGINX_PID_FILE="$WORK/nginx/nginx.pid" REDIS_PID_FILE="$WORK/redis.pid"
cleanup() {
  [ -n "$ENGINE_PID" ] && kill "$ENGINE_PID" 2>/dev/null && wait "$ENGINE_PID" 2>/dev/null
  [ -n "$LAYERS_PID" ] && kill "$LAYERS_PID" 2>/dev/null && wait "$LAYERS_PID" 2>/dev/null
  [ -f "$NGINX_PID_FILE" ] && kill "$(cat "$NGINX_PID_FILE")" 2>/dev/null
  [ -f "$REDIS_PID_FILE" ] && kill "$(cat "$REDIS_PID_FILE")" 2>/dev/null
  true
}
trap cleanup EXIT

# free_port: the first port from a random base that nothing answers on
free_port() {
  local p=$((20000 + RANDOM % 12000))   # below the ephemeral range
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}
# wait_port PORT NAME [LOG]: up to 30 s (the engine loads every preset first)
wait_port() {
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  echo "run.sh: $2 does not listen on port $1" >&2
  [ -n "${3:-}" ] && tail -20 "$3" >&2
  return 1
}

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --dir "$WORK" --pidfile "$REDIS_PID_FILE" --logfile "$WORK/redis.log"
wait_port "$REDIS_PORT" redis-server "$WORK/redis.log"
if [ "$PROCESSOR" != 1 ]; then
  redis-cli -p "$REDIS_PORT" XGROUP CREATE "signal:{$KEY}:raw" processors 9999999999999-0 MKSTREAM >/dev/null
fi

ENGINE_PORT=$(free_port)
cat >"$WORK/signal.conf.lua" <<EOF
return {
  listen = "127.0.0.1:$ENGINE_PORT", workers = 1, log_level = "warn",
  redis = "redis://127.0.0.1:$REDIS_PORT/0",
  pipelines = { { key = "$KEY", origins = { "https://www.example.com" } } },
}
EOF
"$ROOT/bin/signal" run -c "$WORK/signal.conf.lua" >"$WORK/engine.log" 2>&1 &
ENGINE_PID=$!
wait_port "$ENGINE_PORT" signal "$WORK/engine.log"

NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx/body"
sed -e "s#@PORT@#$NGINX_PORT#g" -e "s#@DIR@#$WORK/nginx#g" "$HERE/nginx.conf.in" >"$WORK/nginx/nginx.conf"
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log"
wait_port "$NGINX_PORT" nginx "$WORK/nginx/error.log"

luajit "$HERE/event.lua" >"$WORK/event.json"
BYTES=$(wc -c <"$WORK/event.json")

# bench NAME URL → prints wrk's output; fails on any non-2xx answer
bench() {
  local url=$2
  wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" -s "$HERE/post.lua" "$url" -- "$WORK/event.json" "$KEY" >/dev/null
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$HERE/post.lua" "$url" -- "$WORK/event.json" "$KEY" \
    >"$WORK/$1.wrk"
  if grep -q "Non-2xx" "$WORK/$1.wrk"; then
    cat "$WORK/$1.wrk" >&2
    echo "run.sh: $1 answered errors; the run is void" >&2
    exit 1
  fi
}
rps() { awk '/^Requests\/sec:/ { print $2 }' "$WORK/$1.wrk"; }
p99() { awk '$1 == "99%" { print $2 }' "$WORK/$1.wrk"; }

bench nginx "http://127.0.0.1:$NGINX_PORT/v1/t"
bench signal "http://127.0.0.1:$ENGINE_PORT/v1/t"

if [ "$BREAKDOWN" = 1 ]; then
  LAYERS_PORT=$(free_port)
  BENCH_REDIS="redis://127.0.0.1:$REDIS_PORT/1" "$ROOT/bin/signal" serve "$HERE/layers_app.lua" \
    --listen "127.0.0.1:$LAYERS_PORT" --workers 1 >"$WORK/layers.log" 2>&1 &
  LAYERS_PID=$!
  wait_port "$LAYERS_PORT" "signal serve" "$WORK/layers.log"
  for layer in const json redis collect; do bench "layer-$layer" "http://127.0.0.1:$LAYERS_PORT/$layer"; done
fi

# every answered request must be in the stream (warm-up included)
SIGNAL_REQS=$(awk '/requests in/ { print $1 }' "$WORK/signal.wrk")
XLEN=$(redis-cli -p "$REDIS_PORT" XLEN "signal:{$KEY}:raw")
SAMPLE_OK=$(redis-cli -p "$REDIS_PORT" --raw XREVRANGE "signal:{$KEY}:raw" + - COUNT 1 | grep -q "\"event\":\"Product Added\"" && echo yes || echo no)

N=$(rps nginx); S=$(rps signal)
echo "machine: $(nproc) vCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "event:   $BYTES bytes, wrk -t1 -c$CONNECTIONS -d$DURATION (after a $WARMUP warm-up each)"
printf "nginx+lua (decode+encode):         %10s req/s   p99 %s\n" "$N" "$(p99 nginx)"
printf "signal /v1/t (validate+XADD):      %10s req/s   p99 %s\n" "$S" "$(p99 signal)"
echo "ratio signal/nginx:                $(awk -v s="$S" -v n="$N" 'BEGIN { printf "%.2f", s / n }')x"
if [ "$BREAKDOWN" = 1 ]; then
  echo "engine layers (signal serve layers_app.lua, same load):"
  printf "  constant 200:                    %10s req/s\n" "$(rps layer-const)"
  printf "  decode+encode (nginx's work):    %10s req/s\n" "$(rps layer-json)"
  printf "  decode+encode+XADD:              %10s req/s\n" "$(rps layer-redis)"
  printf "  collector handler, no router:    %10s req/s\n" "$(rps layer-collect)"
fi
if [ "$PROCESSOR" = 1 ]; then
  echo "raw stream XLEN:                   $XLEN (processor running: it consumes and XDELs entries)"
  exit 0
fi
echo "raw stream XLEN:                   $XLEN (measured run alone: $SIGNAL_REQS requests; last entry is the event: $SAMPLE_OK)"
if [ "$XLEN" -lt "$SIGNAL_REQS" ]; then
  echo "run.sh: fewer stream entries than answered requests" >&2
  exit 1
fi
