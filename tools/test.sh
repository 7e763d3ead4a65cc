#!/usr/bin/env bash
# tools/test.sh — `make test`: C unit tests, busted specs (unit + integration
# against a private Redis and real engine processes), the SDK's node tests and
# the browser end-to-end test. Ends with one line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VAR="$ROOT/var/test"
rm -rf "$VAR"; mkdir -p "$VAR/redis"

REDIS_PORT=${SIGNAL_TEST_REDIS_PORT:-$((16400 + RANDOM % 2000))}
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --dir "$VAR/redis" --pidfile "$VAR/redis.pid" --logfile "$VAR/redis.log"
cleanup() {
  [ -f "$VAR/redis.pid" ] && kill "$(cat "$VAR/redis.pid")" 2>/dev/null
  [ -f "$VAR/pids" ] && xargs -r kill -9 <"$VAR/pids" 2>/dev/null
  true
}
trap cleanup EXIT
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

export SIGNAL_ROOT="$ROOT" SIGNAL_TEST_TMP="$VAR" SIGNAL_TEST_REDIS="redis://127.0.0.1:$REDIS_PORT/0"
export SIGNAL_LOG_LEVEL=${SIGNAL_LOG_LEVEL:-warn}

passed=0; failed=0; skipped=0
add() { passed=$((passed + $1)); failed=$((failed + $2)); }

echo "== C unit tests"
for t in build/test_core build/test_http_parse build/test_collect; do
  out=$("$t" 2>&1); echo "-- $t"; echo "$out"
  line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -1)
  if [ -n "$line" ]; then add "$(echo "$line" | awk '{print $1}')" "$(echo "$line" | awk '{print $3}')"; else add 0 1; fi
done

echo "== busted specs"
busted --output=utfTerminal "$@" 2>&1 | tee "$VAR/busted.out"
sum=$(grep -E '[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors?' "$VAR/busted.out" | tail -1)
if [ -n "$sum" ]; then
  s=$(echo "$sum" | sed -E 's/.*([0-9]+) success.*/\1/; s/^([0-9]+).*/\1/')
  s=$(echo "$sum" | grep -oE '[0-9]+ success' | grep -oE '[0-9]+')
  f=$(echo "$sum" | grep -oE '[0-9]+ failure' | grep -oE '[0-9]+')
  e=$(echo "$sum" | grep -oE '[0-9]+ error' | grep -oE '[0-9]+')
  add "$s" $((f + e))
else
  echo "busted produced no summary"; add 0 1
fi

if [ -d sdk/test ] && command -v node >/dev/null; then
  echo "== SDK tests (node --test)"
  node --test sdk/test/ 2>&1 | tee "$VAR/node.out" | tail -15
  p=$(grep -E '^# pass [0-9]+' "$VAR/node.out" | awk '{print $3}')
  f=$(grep -E '^# fail [0-9]+' "$VAR/node.out" | awk '{print $3}')
  add "${p:-0}" "${f:-1}"
fi

if [ -f spec/e2e/run.sh ]; then
  echo "== browser end-to-end"
  bash spec/e2e/run.sh 2>&1 | tee "$VAR/e2e.out" | tail -20
  p=$(grep -E '^# pass [0-9]+' "$VAR/e2e.out" | awk '{print $3}')
  f=$(grep -E '^# fail [0-9]+' "$VAR/e2e.out" | awk '{print $3}')
  s=$(grep -E '^# skipped [0-9]+' "$VAR/e2e.out" | awk '{print $3}')
  add "${p:-0}" "${f:-1}"; skipped=$((skipped + ${s:-0}))
fi

if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
