#!/usr/bin/env bash
# tools/deps.sh — `make deps`: install what Signal needs to build, test and
# run the demo, only when missing (safe to re-run). Debian packages via apt,
# the SDK's dev tools via npm (package-lock.json). Never downloads a browser:
# browser tests use Debian's chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential pkg-config libluajit2-5.1-dev luajit2 libcurl4-openssl-dev libhiredis-dev
      lua-cjson libevent-dev libssl-dev zlib1g-dev redis-server lua-busted luarocks curl wrk
      nodejs npm chromium valgrind nginx-light libnginx-mod-http-lua)

missing=()
for p in "${PKGS[@]}"; do
  if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi   # nodesource node ships npm
  if [ "$p" = nodejs ] && command -v node >/dev/null 2>&1; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -f package-lock.json ] && command -v npm >/dev/null 2>&1; then
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "deps: npm ci"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null
  fi
fi
