#!/usr/bin/env bash
# spec/e2e/run.sh — the browser end-to-end test (run by `make test` through
# tools/test.sh, or alone: `bash spec/e2e/run.sh`).
#
# Starts, on free ports so it never collides with a running `make run`:
#   - Redis: the one in SIGNAL_TEST_REDIS (tools/test.sh's), on its own
#     database (15) so the busted specs' FLUSHDB on db 0 and this test never
#     meet; without SIGNAL_TEST_REDIS, a private redis-server.
#   - the Amperity sandbox with spec/fixtures/profiles.json,
#   - the engine with spec/e2e/signal.e2e.conf.lua (admin token set),
#   - the demo storefront (examples/demo/app.lua),
# then runs `node --test spec/e2e/` (headless Debian chromium via
# playwright-core) and stops everything it started. Prints node's TAP output,
# whose summary lines (# pass N / # fail N / # skipped N) tools/test.sh reads.
# Without /usr/bin/chromium the test reports itself skipped (never passed).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
VAR="$ROOT/var/e2e"
rm -rf "$VAR"; mkdir -p "$VAR"
FIXTURE="$ROOT/spec/fixtures/profiles.json"
CHROMIUM=${E2E_CHROMIUM:-/usr/bin/chromium}

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A setup failure is one failed test, in the summary format tools/test.sh reads.
setup_failed() {
  echo "e2e setup failed: $*"
  local f
  for f in "$VAR"/*.log; do
    [ -s "$f" ] && { echo "--- tail $f"; tail -20 "$f"; }
  done
  echo "not ok 1 - e2e setup: $*"
  echo "# tests 1"; echo "# pass 0"; echo "# fail 1"; echo "# skipped 0"
  exit 1
}

command -v node >/dev/null || setup_failed "node is not installed (make deps)"

# Node's TAP output, with its summary lines ("# pass N" …) held back to the
# very end, after any log tail, so a reader of the last lines sees them.
SUMMARY='^# (tests|suites|pass|fail|cancelled|skipped|todo|duration_ms) '
run_tests() {
  node --test --test-reporter=tap spec/e2e/ >"$VAR/node.out" 2>&1
  local rc=$?
  grep -Ev "$SUMMARY" "$VAR/node.out"
  if [ "$rc" -ne 0 ] && [ -s "$VAR/engine.log" ]; then
    echo "--- engine log (tail; all of it in $VAR/engine.log)"
    tail -30 "$VAR/engine.log"
  fi
  grep -E "$SUMMARY" "$VAR/node.out"
  return "$rc"
}

# No browser: nothing to start; the test file reports itself skipped.
if [ ! -x "$CHROMIUM" ]; then
  E2E_CHROMIUM="$CHROMIUM" run_tests
  exit $?
fi

[ -x bin/signal ] || setup_failed "bin/signal is missing (run make)"

# Free ports, all reserved at once so they are distinct.
read -r ENGINE_PORT SANDBOX_PORT PAGE_PORT REDIS_PORT < <(node -e '
  const net = require("net"); const ss = [];
  let n = 0; for (let i = 0; i < 4; i++) { const s = net.createServer(); ss.push(s);
    s.listen(0, "127.0.0.1", () => { if (++n === 4) { console.log(ss.map((x) => x.address().port).join(" ")); ss.forEach((x) => x.close()); } }); }')
[ -n "${REDIS_PORT:-}" ] || setup_failed "could not find free ports"

if [ -n "${SIGNAL_TEST_REDIS:-}" ]; then
  case "$SIGNAL_TEST_REDIS" in
    redis://*) E2E_REDIS="$(echo "$SIGNAL_TEST_REDIS" | sed -E 's#(redis://[^/]+).*#\1#')/15" ;;
    *) E2E_REDIS="$SIGNAL_TEST_REDIS" ;;
  esac
else
  command -v redis-server >/dev/null || setup_failed "redis-server is not installed (make deps)"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$VAR" --logfile "$VAR/redis.log" &
  PIDS+=($!)
  E2E_REDIS="redis://127.0.0.1:$REDIS_PORT/0"
fi

# The tokens' one source is the fixture the sandbox checks them against.
E2E_INGEST_TOKEN=$(node -p "require('$FIXTURE').ingest_token") || setup_failed "cannot read $FIXTURE"
E2E_PROFILE_TOKEN=$(node -p "require('$FIXTURE').profile_token") || setup_failed "cannot read $FIXTURE"
export E2E_ENGINE_PORT="$ENGINE_PORT" E2E_SANDBOX_PORT="$SANDBOX_PORT" E2E_PAGE_PORT="$PAGE_PORT"
export E2E_REDIS E2E_INGEST_TOKEN E2E_PROFILE_TOKEN E2E_FIXTURE="$FIXTURE" E2E_CHROMIUM="$CHROMIUM"
export E2E_ALLOWLIST="Persona,FavoriteBrand,LifetimeTier"
SIGNAL_ADMIN_TOKEN="e2e-admin-token-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
export SIGNAL_ADMIN_TOKEN E2E_ADMIN_TOKEN="$SIGNAL_ADMIN_TOKEN"
export SIGNAL_LOG_LEVEL=${SIGNAL_LOG_LEVEL:-info}

# Waits (bounded) until URL answers 2xx; fails setup if the process died.
wait_up() {
  local name=$1 pid=$2 url=$3 i
  for i in $(seq 100); do
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || setup_failed "$name exited during startup"
    sleep 0.1
  done
  setup_failed "$name did not answer $url within 10 s"
}

if [ -z "${SIGNAL_TEST_REDIS:-}" ]; then
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
redis-cli -u "$E2E_REDIS" FLUSHDB >/dev/null 2>&1 || setup_failed "Redis at $E2E_REDIS does not answer"

bin/signal sandbox --listen "127.0.0.1:$SANDBOX_PORT" --profiles "$FIXTURE" >"$VAR/sandbox.log" 2>&1 &
PIDS+=($!); wait_up sandbox $! "http://127.0.0.1:$SANDBOX_PORT/_sandbox/stats"

bin/signal run -c spec/e2e/signal.e2e.conf.lua >"$VAR/engine.log" 2>&1 &
PIDS+=($!); wait_up engine $! "http://127.0.0.1:$ENGINE_PORT/healthz"

SIGNAL_DEMO_ENGINE_PORT="$ENGINE_PORT" bin/signal serve examples/demo/app.lua \
  --listen "127.0.0.1:$PAGE_PORT" >"$VAR/page.log" 2>&1 &
PIDS+=($!); wait_up "demo page" $! "http://127.0.0.1:$PAGE_PORT/"

run_tests
