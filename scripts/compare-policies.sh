#!/usr/bin/env bash
# Keep-alive and eviction policies compared in simulation on one generated Azure-like trace
# (many functions, log-normal rates with a heavy skew: a few hot functions, many rare ones;
# a third of them on timers, as in the Azure dataset) at three pool sizes: each POLICIES
# entry KEEPALIVE:EVICTION (fixed = one TTL for all; hybrid = the hybrid histogram policy)
# at the same memory. Prints and writes the side-by-side table (compare.csv, compare.json,
# compare.svg).
#
#   bash scripts/compare-policies.sh [OUT]
#   env: PROFILE (debug), FUNCTIONS (40), DURATION_S (14400), MEAN_RATE (0.1), SEED (1),
#        TIMER_FRACTION (0.33), MEMORY_MB ("2048 8192 65536"), TTL_MS (600000),
#        POLICIES ("fixed:lru fixed:lfu fixed:gdsf hybrid:lru hybrid:gdsf"),
#        LIVE (unset: simulation; 1: live workers on the sim backend), BIN_DIR (built binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/compare-policies}
PROFILE=${PROFILE:-debug}
NF=${FUNCTIONS:-40}
DUR=${DURATION_S:-14400}
RATE=${MEAN_RATE:-0.1}
TIMERS=${TIMER_FRACTION:-0.33}
POLICIES=${POLICIES:-fixed:lru fixed:lfu fixed:gdsf hybrid:lru hybrid:gdsf}
SEED=${SEED:-1}
MEMORY=${MEMORY_MB:-2048 8192 65536}
TTL=${TTL_MS:-600000}
T=${BIN_DIR:-${CARGO_TARGET_DIR:-target}/$PROFILE}
if [ -n "${BIN_DIR:-}" ]; then
  : # binaries given
elif [ "$PROFILE" = release ]; then
  cargo build --release -p iluvatar_worker -p iluvatar_load_gen
else
  cargo build -p iluvatar_worker -p iluvatar_load_gen
fi
L=$T/iluvatar_load_gen
mkdir -p "$OUT/configs"
"$L" generate synthetic --functions "$NF" --duration-s "$DUR" --mean-rate "$RATE" --rate-sigma 1.5 \
  --mean-warm-ms 100 --warm-sigma 1.0 --mean-cold-extra-ms 500 --cold-sigma 0.5 \
  --mem-mb 128,256,512 --timer-fraction "$TIMERS" --seed "$SEED" --out "$OUT/workload" --force
args=()
for mem in $MEMORY; do
  for p in $POLICIES; do
    ka=${p%%:*}
    ev=${p#*:}
    case $ka in
      fixed) keep="{ type = \"fixed\", ttl_ms = $TTL }" ;;
      hybrid) keep="{ type = \"hybrid\", fallback_ttl_ms = $TTL }" ;;
      *) echo "unknown keep-alive $ka in POLICIES (fixed or hybrid)" >&2; exit 2 ;;
    esac
    name="$ka-$ev-$mem"
    f="$OUT/configs/$name.toml"
    cat >"$f" <<TOML
name = "$name"

[container_pool]
memory_mb = $mem
keep_alive = $keep
eviction = { type = "$ev" }

[invoker]
concurrency = 16

[[isolation.backends]]
type = "sim"
TOML
    args+=(--config "$name=$f")
  done
done
setup=simulation
[ -n "${LIVE:-}" ] && setup=live
"$L" compare --setup "$setup" --input "$OUT/workload/trace.csv" --metadata "$OUT/workload/metadata.csv" \
  "${args[@]}" --seed "$SEED" --out "$OUT" --force
