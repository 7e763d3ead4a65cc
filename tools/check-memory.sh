#!/usr/bin/env bash
# tools/check-memory.sh — `make check-memory`: the C unit tests (test_core,
# test_http_parse, test_collect) under valgrind, then the
# AddressSanitizer/LeakSanitizer build of the engine
# driven through its primitives (HTTP client, 300 concurrent requests, Redis
# stall timeouts, Redis reconnect) and as a server under load, stopped with SIGTERM, then
# running the HTTP server and collector specs (SIGNAL_BIN), and the collector
# under load stopped with SIGTERM. Any sanitizer report fails the run.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd); TMP=$(mktemp -d)
export SIGNAL_HOME=$ROOT SIGNAL_LOG_LEVEL=error ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
fail=0
# spec/helpers.lua lists what the specs start in $TMP/spec/pids: a failed
# spec can leave an engine or a private redis-server behind otherwise
cleanup() {
  kill $(jobs -p) 2>/dev/null
  [ -f "$TMP/spec/pids" ] && xargs -r kill -9 <"$TMP/spec/pids" 2>/dev/null
  redis-cli -p "$RP" shutdown nosave >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT
P=$((18500 + RANDOM % 500)); RP=$((P + 1)); AP=$((P + 2))

for t in build/test_core build/test_http_parse build/test_collect; do
  echo "== valgrind $t"
  valgrind -q --error-exitcode=99 --leak-check=full "$t" || fail=1
done

echo "== ASan engine: primitives"
bin/signal serve spec/fixtures/apps/upstream.lua --listen 127.0.0.1:$P 2>/dev/null & sleep 0.5
redis-server --port $RP --save '' --appendonly no --daemonize yes --dir "$TMP" >/dev/null; sleep 0.2
RPID=$(redis-cli -p $RP info server | tr -d '\r' | awk -F: '/^process_id/{print $2}')
for t in "http_client.lua http://127.0.0.1:$P" "http_concurrency.lua http://127.0.0.1:$P 300" \
         "redis_stall.lua $RP $RPID" "redis_reconnect.lua $RP $TMP"; do
  set -- $t
  build/signal-asan exec "spec/fixtures/tasks/$1" "${@:2}" >"$TMP/out" 2>&1
  if grep -q "Sanitizer" "$TMP/out"; then cat "$TMP/out"; fail=1; else echo "ok: $1"; fi
done

echo "== ASan engine: server under load, then SIGTERM"
build/signal-asan serve spec/fixtures/apps/upstream.lua --listen 127.0.0.1:$AP 2>"$TMP/serve.log" & APID=$!
sleep 1
for _ in 1 2 3; do curl -s "127.0.0.1:$AP/slow?ms=300" >/dev/null & done
curl -s -XPOST "127.0.0.1:$AP/echo" -d x >/dev/null
curl -s "127.0.0.1:$AP/stream?n=3" >/dev/null
curl -s --max-time 0.3 "127.0.0.1:$AP/stream_forever" >/dev/null
sleep 0.3   # the abandoned stream's handler notices on its next write
wrk -t1 -c20 -d2s "http://127.0.0.1:$AP/hello" >/dev/null
kill -TERM $APID; wait $APID
if grep -q "Sanitizer" "$TMP/serve.log"; then cat "$TMP/serve.log"; fail=1; else echo "ok: serve + SIGTERM"; fi

echo "== ASan engine: HTTP server and collector specs (raw sockets, the collector, group commit)"
redis-server --port $((P + 3)) --save '' --appendonly no --daemonize yes --dir "$TMP" >/dev/null; sleep 0.2
if SIGNAL_BIN=$ROOT/build/signal-asan SIGNAL_ROOT=$ROOT SIGNAL_TEST_TMP=$TMP/spec \
   SIGNAL_TEST_REDIS=redis://127.0.0.1:$((P + 3))/0 \
   busted -o utfTerminal spec/02-integration/03-http_server_spec.lua spec/02-integration/10-collector_spec.lua \
   spec/02-integration/12-identity_cors_spec.lua spec/02-integration/13-collector_conditions_spec.lua \
   >"$TMP/busted.out" 2>&1; then
  echo "ok: $(grep -aE '[0-9]+ success' "$TMP/busted.out" | tail -1)"
else
  grep -av '^●*$' "$TMP/busted.out" | tail -40; fail=1
fi

echo "== ASan engine: collector under load, SIGTERM with requests in flight"
LP=$((P + 4))
printf 'return { listen = "127.0.0.1:%s", workers = 1, redis = "redis://127.0.0.1:%s/1",\n  pipelines = { { key = "dk_asan", origins = { "https://www.example.com" } } } }\n' \
  "$LP" "$((P + 3))" >"$TMP/lane.conf.lua"
luajit bench/collector/event.lua >"$TMP/event.json"
build/signal-asan run -c "$TMP/lane.conf.lua" 2>"$TMP/lane.log" & LPID=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$LP/healthz" >/dev/null && break; sleep 0.1; done
wrk -t1 -c32 -d3s -s bench/collector/post.lua "http://127.0.0.1:$LP/v1/t" -- "$TMP/event.json" dk_asan \
  >"$TMP/lane.wrk" 2>&1 & WPID=$!
sleep 1.5
kill -TERM $LPID; wait $LPID; wait $WPID
N=$(awk '/requests in/ { print $1 }' "$TMP/lane.wrk")
if grep -q "Sanitizer" "$TMP/lane.log"; then cat "$TMP/lane.log"; fail=1
elif [ "${N:-0}" -lt 100 ]; then cat "$TMP/lane.wrk" "$TMP/lane.log"; echo "the collector served too little load"; fail=1
else echo "ok: collector load + SIGTERM ($N requests)"; fi
redis-cli -p $((P + 3)) shutdown nosave >/dev/null 2>&1

[ $fail -eq 0 ] && echo "check-memory: clean" || echo "check-memory: FAILED"
exit $fail
