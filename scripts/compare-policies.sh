#!/usr/bin/env bash
# Keep-alive and eviction policies compared in simulation on one generated Azure-like trace
# (many functions, log-normal rates with a heavy skew: a few hot functions, many rare ones)
# at three pool sizes: fixed TTL with LRU, LFU and GDSF evictions at the same memory.
# Prints and writes the side-by-side table (compare.csv, compare.json, compare.svg).
#
#   bash scripts/compare-policies.sh [OUT]
#   env: PROFILE (debug), FUNCTIONS (40), DURATION_S (600), MEAN_RATE (0.25), SEED (1),
#        MEMORY_MB ("2048 4096 8192"), TTL_MS (600000), LIVE (unset: simulation; 1: live
#        workers on the sim backend)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/compare-policies}
PROFILE=${PROFILE:-debug}
NF=${FUNCTIONS:-40}
DUR=${DURATION_S:-600}
RATE=${MEAN_RATE:-0.25}
SEED=${SEED:-1}
MEMORY=${MEMORY_MB:-2048 4096 8192}
TTL=${TTL_MS:-600000}
T=${CARGO_TARGET_DIR:-target}/$PROFILE
if [ "$PROFILE" = release ]; then
  cargo build --release -p iluvatar_worker -p iluvatar_load_gen
else
  cargo build -p iluvatar_worker -p iluvatar_load_gen
fi
L=$T/iluvatar_load_gen
mkdir -p "$OUT/configs"
"$L" generate synthetic --functions "$NF" --duration-s "$DUR" --mean-rate "$RATE" --rate-sigma 1.5 \
  --mean-warm-ms 100 --warm-sigma 1.0 --mean-cold-extra-ms 500 --cold-sigma 0.5 \
  --mem-mb 128,256,512 --seed "$SEED" --out "$OUT/workload" --force
args=()
for mem in $MEMORY; do
  for ev in lru lfu gdsf; do
    f="$OUT/configs/$ev-$mem.toml"
    cat >"$f" <<TOML
name = "$ev-$mem"

[container_pool]
memory_mb = $mem
keep_alive = { type = "fixed", ttl_ms = $TTL }
eviction = { type = "$ev" }

[invoker]
concurrency = 16

[[isolation.backends]]
type = "sim"
TOML
    args+=(--config "$ev-$mem=$f")
  done
done
setup=simulation
[ -n "${LIVE:-}" ] && setup=live
"$L" compare --setup "$setup" --input "$OUT/workload/trace.csv" --metadata "$OUT/workload/metadata.csv" \
  "${args[@]}" --seed "$SEED" --out "$OUT" --force
