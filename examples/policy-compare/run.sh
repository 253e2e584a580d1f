#!/usr/bin/env bash
# Keep-alive and eviction policies side by side, in simulation: scripts/compare-policies.sh
# (README, "Comparing configs") on a shorter trace: 1 hour (QUICK: 10 minutes), fixed TTL and
# hybrid keep-alive, each with LRU and GDSF eviction, at 2 and 8 GB.
#
# Expect: a table of 8 configs (cold-start %, latency, memory held and idle); GDSF at or below
# LRU's cold starts at 2 GB; compare.csv/json/svg in the results folder.
source "$(dirname "$0")/../common.sh"
OUT=${1:-$EXAMPLES/policy-compare/results}
fresh_out "$OUT"
DUR=3600
[ -n "$QUICK" ] && DUR=600
# compare-policies.sh builds with cargo itself unless its binaries are given.
BIN_DIR=$BIN DURATION_S=$DUR MEMORY_MB="2048 8192" POLICIES="fixed:lru fixed:gdsf hybrid:lru hybrid:gdsf" \
  bash "$ROOT/scripts/compare-policies.sh" "$OUT"
