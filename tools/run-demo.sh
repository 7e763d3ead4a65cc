#!/usr/bin/env bash
# tools/run-demo.sh — `make run`: the whole demo on one machine, in the
# foreground, until Ctrl-C.
#
#   Redis          private redis-server on 6390, data in var/demo/redis
#                  (or the Redis in SIGNAL_REDIS, which is then not started)
#   sandbox        bin/signal sandbox on 127.0.0.1:8091 (spec/fixtures/profiles.json):
#                  Amperity's, GA4's and Meta's stand-ins and a webhook receiver
#   engine         bin/signal run -c examples/signal.conf.lua on 127.0.0.1:8080,
#                  admin token set (live events) and the identity hub on
#   storefront     bin/signal serve examples/demo/app.lua on 127.0.0.1:8000
#
# Each is started, then awaited (bounded) before the next; a taken port or a
# process that dies stops the demo with the reason and its log's tail. Ctrl-C
# (or any one process exiting) stops everything this script started.
# Logs: var/demo/*.log. Ports other than the engine's come from env
# (DEMO_PAGE_PORT, DEMO_SANDBOX_PORT); the engine's and the sandbox URL it
# calls are in examples/signal.conf.lua.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VAR="$ROOT/var/demo"
mkdir -p "$VAR/redis"

ENGINE_PORT=8080
SANDBOX_PORT=${DEMO_SANDBOX_PORT:-8091}
PAGE_PORT=${DEMO_PAGE_PORT:-8000}
FIXTURE=spec/fixtures/profiles.json
export SIGNAL_ADMIN_TOKEN=${SIGNAL_ADMIN_TOKEN:-demo-admin-token-not-for-production}
# The config's own default; set here so one value is printed and used.
export IDENTITY_HUB_ORG_ID=${IDENTITY_HUB_ORG_ID:-8a3c1f2e-0d4b-4c6a-9e57-5d0c2b7a1f00}

if [ -t 1 ]; then B=$'\e[1m'; G=$'\e[32m'; R=$'\e[31m'; N=$'\e[0m'; else B=; G=; R=; N=; fi
say() { echo "${G}demo:${N} $*"; }

PIDS=() NAMES=() LOGS=()
stopping=
cleanup() {
  [ -n "$stopping" ] && return
  stopping=1
  local i
  if [ ${#PIDS[@]} -gt 0 ]; then
    echo; say "stopping…"
    # Reverse start order: the page and the engine go before what they use.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null; done
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do wait "${PIDS[i]}" 2>/dev/null; done
    say "stopped."
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
  echo "${R}demo: $1${N}" >&2
  [ -n "${2:-}" ] && [ -s "$2" ] && { echo "--- last lines of $2:" >&2; tail -15 "$2" >&2; }
  exit 1
}

for bin in redis-server redis-cli curl; do
  command -v "$bin" >/dev/null || die "$bin is not installed (make deps installs it)"
done
[ -x bin/signal ] || die "bin/signal is missing: run make first"

# Something accepts connections on 127.0.0.1:$1.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
check_port() {
  local port=$1 what=$2 how=$3 who=""
  port_busy "$port" || return 0
  command -v ss >/dev/null && who=$(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'users:(([^)]*' | head -1 | sed 's/users:((//')
  die "port $port (the $what) is already in use${who:+ by $who}. Stop that process, or $how."
}

start() {  # start NAME LOG CMD… : background, remembered for cleanup
  local name=$1 logf=$2; shift 2
  "$@" >"$logf" 2>&1 &
  PIDS+=($!) NAMES+=("$name") LOGS+=("$logf")
}

await() {  # await NAME LOG CHECK… : bounded wait until CHECK succeeds
  local name=$1 logf=$2 pid=${PIDS[${#PIDS[@]} - 1]} i; shift 2
  for i in $(seq 150); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || die "the $name exited during startup" "$logf"
    sleep 0.1
  done
  die "the $name did not come up within 15 s" "$logf"
}

check_port "$ENGINE_PORT" "engine, listen in examples/signal.conf.lua" "change listen there"
check_port "$SANDBOX_PORT" "sandbox" "set DEMO_SANDBOX_PORT (and the sandbox URLs in examples/signal.conf.lua)"
check_port "$PAGE_PORT" "demo storefront" "set DEMO_PAGE_PORT (and the origins in examples/signal.conf.lua)"

if [ -n "${SIGNAL_REDIS:-}" ]; then
  redis-cli -u "$SIGNAL_REDIS" ping >/dev/null 2>&1 || die "SIGNAL_REDIS=$SIGNAL_REDIS does not answer PING"
  say "using the Redis at $SIGNAL_REDIS"
else
  export SIGNAL_REDIS=redis://127.0.0.1:6390/0
  check_port 6390 "demo Redis" "set SIGNAL_REDIS=redis://host:port/db to use a Redis you already run"
  # Saved to var/demo/redis on exit and every minute: a returning visitor
  # (same browser, same _dfdid cookie) is still known next time.
  start "Redis" "$VAR/redis.log" redis-server --port 6390 --bind 127.0.0.1 --dir "$VAR/redis" \
    --save 60 1 --appendonly no --logfile ""
  await "Redis" "$VAR/redis.log" redis-cli -p 6390 ping
  say "Redis on 127.0.0.1:6390 (data in var/demo/redis)"
fi

start "sandbox" "$VAR/sandbox.log" bin/signal sandbox --listen "127.0.0.1:$SANDBOX_PORT" --profiles "$FIXTURE"
await "sandbox" "$VAR/sandbox.log" curl -fsS --max-time 1 "http://127.0.0.1:$SANDBOX_PORT/_sandbox/stats"
say "sandbox (Amperity, GA4, Meta, webhook receiver) on 127.0.0.1:$SANDBOX_PORT"

start "engine" "$VAR/engine.log" bin/signal run -c examples/signal.conf.lua
await "engine" "$VAR/engine.log" curl -fsS --max-time 1 "http://127.0.0.1:$ENGINE_PORT/healthz"
say "engine on 127.0.0.1:$ENGINE_PORT"

start "storefront" "$VAR/page.log" env SIGNAL_DEMO_ENGINE_PORT="$ENGINE_PORT" \
  bin/signal serve examples/demo/app.lua --listen "127.0.0.1:$PAGE_PORT"
await "storefront" "$VAR/page.log" curl -fsS --max-time 1 "http://127.0.0.1:$PAGE_PORT/"
say "storefront on 127.0.0.1:$PAGE_PORT"

LIVE=""
if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$ENGINE_PORT/live"; then
  LIVE="http://127.0.0.1:$ENGINE_PORT/live?token=$SIGNAL_ADMIN_TOKEN"
fi

cat <<EOF

${B}Signal demo is running.${N} Open:

  Storefront         http://127.0.0.1:$PAGE_PORT/
                     (or http://localhost:$PAGE_PORT/ — the page talks to the engine on
                     the same hostname, so the _dfdid cookie stays first-party)
${LIVE:+  Live events        $LIVE
}  Amperity received  http://127.0.0.1:$SANDBOX_PORT/_sandbox/requests?prefix=/prof/events
  Webhook received   http://127.0.0.1:$SANDBOX_PORT/_sandbox/requests?prefix=/hooks/demo
  GA4 received       http://127.0.0.1:$SANDBOX_PORT/_sandbox/requests?prefix=/mp/collect
                     (what GA4 collected: http://127.0.0.1:$SANDBOX_PORT/_sandbox/ga4)
  Meta received      http://127.0.0.1:$SANDBOX_PORT/_sandbox/requests?prefix=/v
                     (what Meta received: http://127.0.0.1:$SANDBOX_PORT/_sandbox/meta)

Try: view a product, add to cart, check out; choose in the cookie banner
(GA4 needs analytics consent and Meta marketing consent: "Reject all" sends
to Amperity and the webhook only, and live events show why the others were
skipped);
then "Sign in as jane.doe@example.com" — she is a "Value Hunter", so the hero
turns into the promo and datafly.profile.amperity fills in (right-hand panel).

Watch live events (admin token: $SIGNAL_ADMIN_TOKEN):

  curl -s -H 'Authorization: Bearer $SIGNAL_ADMIN_TOKEN' \\
    'http://127.0.0.1:$ENGINE_PORT/v1/admin/live?pipeline=dk_live_demo&limit=5'

What Amperity and the webhook received (newest last; the webhook's payloads
carry the Amperity attributes under partner_attrs.amperity once Jane signs in):

  curl -s 'http://127.0.0.1:$SANDBOX_PORT/_sandbox/requests?prefix=/prof/events&limit=5'
  curl -s 'http://127.0.0.1:$SANDBOX_PORT/_sandbox/requests?prefix=/hooks/demo&limit=5'

Customer mapping scripts: examples/scripts/ (e.g. 10_acme_loyalty.lua). Edit
one while the demo runs: the next events use it, no restart (a broken edit is
refused and shown in /v1/admin/status; the last good version keeps serving).

Logs in var/demo/. Press Ctrl-C to stop everything.
EOF

# Foreground until Ctrl-C or until one of the processes exits on its own.
wait -n
rc=$?
[ -n "$stopping" ] && exit "$rc"
for i in "${!PIDS[@]}"; do
  if ! kill -0 "${PIDS[i]}" 2>/dev/null; then
    die "the ${NAMES[i]} stopped (exit $rc); stopping the demo" "${LOGS[i]}"
  fi
done
exit "$rc"
