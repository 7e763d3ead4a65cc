#!/usr/bin/env bash
# bench/run.sh — `make bench`: every benchmark in turn (see bench/README.md
# for the recorded figures and what each compares against).
set -uo pipefail
cd "$(dirname "$0")/.."
echo "### engine core";            bench/core/run.sh
echo "### pipeline (no network)";  luajit bench/pipeline/run.lua
echo "### collector";              bench/collector/run.sh
echo "### enrichment";             bench/enrich/run.sh
[ -x bench/delivery/run.sh ] && { echo "### delivery"; bench/delivery/run.sh; }
exit 0
