#!/usr/bin/env bash
# tools/deps.sh — `make deps`: install what Signal needs to build, test and
# run the demo, only when missing (safe to re-run). Debian packages via apt,
# the SDK's dev tools via npm (package-lock.json). Never downloads a browser:
# browser tests use Debian's chromium.
#
# REQUIRED packages must install or this fails. OPTIONAL ones (the browser
# for the e2e test, benchmark and memory-check tools) are tried separately:
# if one cannot be installed the run goes on, and the tests that need it say
# so (the browser test reports itself skipped, never passed).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUIRED=(build-essential pkg-config libluajit2-5.1-dev luajit2 libcurl4-openssl-dev libhiredis-dev
          lua-cjson lua-socket libevent-dev libssl-dev zlib1g-dev redis-server redis-tools lua-busted lua-check
          luarocks curl)
OPTIONAL=(chromium wrk valgrind nginx-light libnginx-mod-http-lua bc)

missing() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"
  done
}

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
updated=0
apt_install() {
  [ $updated -eq 1 ] || { $SUDO apt-get update -qq; updated=1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

req=$(missing "${REQUIRED[@]}")
command -v node >/dev/null 2>&1 || req="$req nodejs npm"   # nodesource's node ships npm
if [ -n "$(echo $req)" ]; then
  echo "deps: installing $(echo $req)"
  apt_install $req
fi

opt=$(missing "${OPTIONAL[@]}")
for p in $opt; do
  echo "deps: installing $p (optional)"
  apt_install "$p" || echo "deps: WARNING: could not install $p; the checks that need it will say so"
done

if [ -f package-lock.json ]; then
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "deps: npm ci"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null
  fi
fi
