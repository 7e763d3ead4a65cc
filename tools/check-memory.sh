#!/usr/bin/env bash
# tools/check-memory.sh — `make check-memory`: the C unit tests under
# valgrind, then the AddressSanitizer/LeakSanitizer build of the engine
# driven through its primitives (HTTP client, 300 concurrent requests, Redis
# stall timeouts, Redis reconnect) and as a server under load, stopped with SIGTERM, then
# running the HTTP server and collector specs (SIGNAL_BIN). Any sanitizer report fails the run.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd); TMP=$(mktemp -d)
export SIGNAL_HOME=$ROOT SIGNAL_LOG_LEVEL=error ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
fail=0
cleanup() { kill $(jobs -p) 2>/dev/null; redis-cli -p "$RP" shutdown nosave >/dev/null 2>&1; rm -rf "$TMP"; }
trap cleanup EXIT
P=$((18500 + RANDOM % 500)); RP=$((P + 1)); AP=$((P + 2))

echo "== valgrind build/test_core"
valgrind -q --error-exitcode=99 --leak-check=full build/test_core || fail=1

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

echo "== ASan engine: HTTP server and collector specs (raw sockets, fast path, group commit)"
redis-server --port $((P + 3)) --save '' --appendonly no --daemonize yes --dir "$TMP" >/dev/null; sleep 0.2
if SIGNAL_BIN=$ROOT/build/signal-asan SIGNAL_ROOT=$ROOT SIGNAL_TEST_TMP=$TMP/spec \
   SIGNAL_TEST_REDIS=redis://127.0.0.1:$((P + 3))/0 \
   busted -o utfTerminal spec/02-integration/03-http_server_spec.lua spec/02-integration/10-collector_spec.lua \
   >"$TMP/busted.out" 2>&1; then
  echo "ok: $(grep -aE '[0-9]+ success' "$TMP/busted.out" | tail -1)"
else
  grep -av '^●*$' "$TMP/busted.out" | tail -40; fail=1
fi
redis-cli -p $((P + 3)) shutdown nosave >/dev/null 2>&1

[ $fail -eq 0 ] && echo "check-memory: clean" || echo "check-memory: FAILED"
exit $fail
