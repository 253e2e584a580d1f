#!/usr/bin/env bash
# Simulation at scale (README, "Simulation at scale"): a full day of an Azure-shaped
# synthetic trace (heavy-tailed rates, 30% timers, >= 10 million invocations) replayed on
# simulated clusters of 1,000 and 100 workers behind ch_bl, twice each (results must be
# byte-identical), with the controller's own time per invocation drawn from a distribution
# measured here by controller-bench; then an hour of the same shape on 10 and 1,000
# workers; then the issue's before shape (5 minutes, 465 functions, ~75,000 invocations)
# on 10, 50 and 200 workers. Each step writes sim_bench.json (wall and CPU time, load
# averages, invocations/s, peak memory, hashes of the results, the command).
#
#   bash scripts/sim-scale.sh [OUT]
#   env: WORKERS (1000,100), RUNS (2), FUNCTIONS (1000), MEAN_RATE (0.12), DURATION_S (86400)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/sim_scale}
WORKERS=${WORKERS:-1000,100}
RUNS=${RUNS:-2}
NF=${FUNCTIONS:-1000}
RATE=${MEAN_RATE:-0.12}
DUR=${DURATION_S:-86400}
T=${CARGO_TARGET_DIR:-target}/release
L=$T/iluvatar_load_gen
cargo build --release -p iluvatar_load_gen -p iluvatar_controller -p iluvatar_worker
mkdir -p "$OUT"

# The controller's own time per invocation, measured live (one client: no queueing in it).
$L controller-bench --clients 1 --duration-s 10 --out "$OUT/controller_bench.json"

# A day on 100 and 1,000 workers.
$L sim-bench --functions "$NF" --duration-s "$DUR" --mean-rate "$RATE" --rate-sigma 2 --timer-fraction 0.3 \
  --workers "$WORKERS" --runs "$RUNS" --controller-overhead "$OUT/controller_bench.json" \
  --out "$OUT/day" --force

# An hour of the same shape on 10 and 1,000 workers: how the cost grows with the workers.
$L sim-bench --functions "$NF" --duration-s 3600 --mean-rate "$RATE" --rate-sigma 2 --timer-fraction 0.3 \
  --workers 10,1000 --runs 2 --out "$OUT/hour" --force

# The issue's before shape: 5 minutes, 465 functions, ~75,000 invocations.
$L sim-bench --functions 465 --duration-s 300 --mean-rate 0.61 --rate-sigma 2 --timer-fraction 0.3 \
  --workers 10,50,200 --runs 3 --out "$OUT/five_minutes" --force
