#!/usr/bin/env bash
# An Azure-shaped trace against a live worker with simulated containers (no root needed):
# 40 functions with log-normal rates (sigma 1.5: a few hot, most rare), a third on timers,
# as in the Azure Functions 2019 dataset. 5 minutes (QUICK=1: 1 minute). With the real
# dataset, `iluvatar_load_gen generate azure --help` converts its day files instead.
#
# Expect: about 1,200 invocations (QUICK: about 240), 0 failed; cold starts around 40-60
# (every function's first call, plus bursts of the hot ones at 8 concurrent invocations);
# latency p50 near the warm durations (~100 ms mean, log-normal).
source "$(dirname "$0")/../common.sh"
OUT=${1:-$EXAMPLES/azure-trace/results}
fresh_out "$OUT"
DUR=300
[ -n "$QUICK" ] && DUR=60
"$L" generate synthetic --functions 40 --duration-s "$DUR" --mean-rate 0.1 --rate-sigma 1.5 \
  --timer-fraction 0.33 --mean-warm-ms 100 --mean-cold-extra-ms 500 --mem-mb 128,256,512 \
  --seed 1 --out "$OUT/workload"
start WORKER "$W" "$EXAMPLES/configs/worker-sim.toml"
"$L" trace --port "$WORKER_PORT" --isolation sim --input "$OUT/workload/trace.csv" \
  --metadata "$OUT/workload/metadata.csv" --out "$OUT/run" --seed 1 --quiet
summary "$OUT/run"
