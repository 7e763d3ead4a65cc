#!/usr/bin/env bash
# tools/mutate.sh — do the specs notice when a collector rule changes?
#
# One at a time, each mutation below changes one constant or one condition of
# a rule in engine/collect/ (the cookie's length, which X-Forwarded-For hop
# is the client, how origins compare, the size limits, the dedupe window),
# rebuilds, and runs the specs that exercise that rule: the C unit tests
# (build/test_collect) and the busted specs named with it, against a private
# Redis. A mutation is "killed" when at least one of them fails, "survived"
# when all pass — a rule whose change no spec notices is untested. The tree is
# restored after each mutation and on any exit (the mutated file is copied
# aside first; a trap copies it back and rebuilds).
#
#   tools/mutate.sh                 every mutation (a few minutes)
#   tools/mutate.sh cookie-length   only those whose name contains the word
#
# Prints a table: mutation, file:line, killed/survived, what failed. Exits 1
# when a mutation survived.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VAR="$ROOT/var/mutate"
rm -rf "$VAR"; mkdir -p "$VAR/redis"
FILTER=${1:-}

# name | file | the line as it is (a fixed string, unique in the file) | the line mutated | busted specs
MUTATIONS=(
  "cookie-length|engine/collect/limits.h|#define COLLECT_COOKIE_MAX_LEN 128|#define COLLECT_COOKIE_MAX_LEN 64|spec/02-integration/12-identity_cors_spec.lua spec/02-integration/10-collector_spec.lua"
  "xff-first-hop|engine/collect/visitor.c|            if (!sg_proxies_trust(p, a, an)) return;|            return;|spec/02-integration/12-identity_cors_spec.lua spec/02-integration/10-collector_spec.lua"
  "origin-case|engine/collect/cors.c|    for (size_t i = 0; i < n; i++) low[i] = (char)(o[i] >= 'A' && o[i] <= 'Z' ? o[i] + 32 : o[i]);|    for (size_t i = 0; i < n; i++) low[i] = o[i];|spec/02-integration/12-identity_cors_spec.lua spec/02-integration/10-collector_spec.lua"
  "origin-default-port|engine/collect/cors.c|memcmp(low + n - 4, \":443\", 4) == 0) n -= 4;|memcmp(low + n - 4, \":443\", 4) == 0) n -= 0;|spec/02-integration/12-identity_cors_spec.lua spec/02-integration/10-collector_spec.lua"
  "message-limit-33k|engine/collect/limits.h|#define COLLECT_MAX_MESSAGE (32 * 1024)|#define COLLECT_MAX_MESSAGE (33 * 1024)|spec/02-integration/10-collector_spec.lua"
  "body-limit-501k|engine/collect/limits.h|#define COLLECT_MAX_BODY (500 * 1024)|#define COLLECT_MAX_BODY (501 * 1024)|spec/02-integration/10-collector_spec.lua"
  "dedupe-window-1|engine/collect/limits.h|#define COLLECT_DEDUPE_WINDOWS 2|#define COLLECT_DEDUPE_WINDOWS 1|spec/02-integration/10-collector_spec.lua"
  "dedupe-window-3|engine/collect/limits.h|#define COLLECT_DEDUPE_WINDOWS 2|#define COLLECT_DEDUPE_WINDOWS 3|spec/02-integration/10-collector_spec.lua"
)

REDIS_PORT=$((18400 + RANDOM % 1000))
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --dir "$VAR/redis" --pidfile "$VAR/redis.pid" --logfile "$VAR/redis.log"
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
export SIGNAL_ROOT="$ROOT" SIGNAL_TEST_TMP="$VAR" SIGNAL_TEST_REDIS="redis://127.0.0.1:$REDIS_PORT/0"
export SIGNAL_LOG_LEVEL=error

CURRENT=""    # the file mutated right now (its original is $VAR/original)
restore() {
  if [ -n "$CURRENT" ]; then cp "$VAR/original" "$CURRENT"; CURRENT=""; fi
}
cleanup() {
  restore
  make -s all build/test_collect >/dev/null 2>&1
  [ -f "$VAR/redis.pid" ] && kill "$(cat "$VAR/redis.pid")" 2>/dev/null
  [ -f "$VAR/pids" ] && xargs -r kill -9 <"$VAR/pids" 2>/dev/null
  true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

make -s all build/test_collect || { echo "mutate.sh: the tree does not build" >&2; exit 1; }

ROWS=() survived=0
for m in "${MUTATIONS[@]}"; do
  IFS='|' read -r name file before after specs <<<"$m"
  [ -n "$FILTER" ] && [[ "$name" != *"$FILTER"* ]] && continue
  line=$(grep -nF -- "$before" "$file" | cut -d: -f1)
  if [ "$(echo "$line" | grep -c .)" -ne 1 ]; then
    ROWS+=("$(printf '%-22s %-34s %s' "$name" "$file:?" "not applied (the line is not unique, or gone)")")
    survived=$((survived + 1))
    continue
  fi
  cp "$file" "$VAR/original"
  CURRENT="$file"
  B="$before" A="$after" L="$line" perl -i -pe 'if ($. == $ENV{L}) { my ($b, $a) = ($ENV{B}, $ENV{A}); s/\Q$b\E/$a/ }' "$file"
  echo "== $name ($file:$line)"
  failed=""
  if ! make -s all build/test_collect >"$VAR/build.log" 2>&1; then
    failed="the build"
  else
    build/test_collect >"$VAR/c.log" 2>&1 || failed="test_collect"
    for s in $specs; do
      redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null
      if ! busted -o utfTerminal "$s" >"$VAR/busted.log" 2>&1; then
        failed="${failed:+$failed, }$(basename "$s" .lua)"
      fi
      [ -f "$VAR/pids" ] && xargs -r kill -9 <"$VAR/pids" 2>/dev/null; rm -f "$VAR/pids"
    done
  fi
  restore
  if [ -n "$failed" ]; then verdict="killed"; else verdict="SURVIVED"; survived=$((survived + 1)); fi
  ROWS+=("$(printf '%-22s %-34s %-9s %s' "$name" "$file:$line" "$verdict" "$failed")")
done

echo
printf '%-22s %-34s %-9s %s\n' "mutation" "file:line" "result" "failed"
for r in "${ROWS[@]}"; do echo "$r"; done
[ "$survived" -eq 0 ]
