#!/usr/bin/env bash
# Fidelity of the simulation: one trace run live (real containers, runtime backend) and
# simulated (the same worker config), compared per function: cold starts, mean, p50 and
# p99 client latency, relative errors. Needs root (real containers).
#
#   bash scripts/fidelity.sh [OUT]
#   env: DURATION_S (300), CALIBRATION_S (DURATION_S), FUNCTIONS (10), KEEP_ALIVE_MS (10000),
#        SEED (1), SIM_RUNS (5), PORT (8391)
#
# Steps: generate a synthetic trace; calibrate: a calibration trace (each function's
# arrivals resampled at its rate in the trace, with another seed) is run live, and each
# function's measured service times (client latency minus queue wait), cold and warm,
# become the samples the sim backend draws its durations from (by the idle time before each
# warm call); run the trace live; simulate it SIM_RUNS times (seeds SEED..) with the
# calibrated metadata and the same worker config; compare (simulated figures averaged over
# the runs). Then the same with durations measured in the live run itself: the error of the
# model alone, without the calibration's.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/fidelity}
DUR=${DURATION_S:-300}
CAL=${CALIBRATION_S:-$DUR}
NF=${FUNCTIONS:-10}
KEEP=${KEEP_ALIVE_MS:-10000}
SEED=${SEED:-1}
RUNS=${SIM_RUNS:-5}
PORT=${PORT:-8391}
W=target/release/iluvatar_worker
L=target/release/iluvatar_load_gen
cargo build --release -p iluvatar_worker -p iluvatar_load_gen
rm -rf "$OUT" && mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# The worker both runs use: fixed concurrency (the simulation must not guess the cores).
worker_config() { # $1 = file, $2 = keep-alive ms, $3 = state dir
  cat > "$1" <<JSON
{"grpc": {"address": "127.0.0.1", "port": $PORT}, "http": {"enabled": false},
 "state_dir": "$3", "log_level": "warn",
 "invoker": {"concurrency": 4},
 "container_pool": {"memory_mb": 2048, "keep_alive": {"type": "fixed", "ttl_ms": $2}, "reap_interval_ms": 250},
 "isolation": {"backends": [{"type": "runtime"}]}}
JSON
}
WORKER_PID=
start_worker() { # $1 = config
  "$W" -c "$1" > "$OUT/ready.line" 2>> "$OUT/worker.log" &
  WORKER_PID=$!
  for _ in $(seq 100); do [ -s "$OUT/ready.line" ] && return 0; sleep 0.1; done
  echo "the worker did not start; see $OUT/worker.log" >&2; exit 1
}
stop_worker() { kill -TERM "$WORKER_PID"; wait "$WORKER_PID" || true; rm -f "$OUT/ready.line"; }
trap '[ -n "$WORKER_PID" ] && kill -TERM "$WORKER_PID" 2>/dev/null || true' EXIT

$L generate synthetic --functions "$NF" --duration-s "$DUR" --mean-rate 0.5 --rate-sigma 0.7 \
  --mean-warm-ms 50 --warm-sigma 0.7 --mean-cold-extra-ms 300 --mem-mb 64,128 --seed "$SEED" --out "$OUT/workload" --force

echo "== calibration (live)"
$L fidelity calibration-trace --input "$OUT/workload/trace.csv" --metadata "$OUT/workload/metadata.csv" \
  --duration-s "$CAL" --seed $((SEED + 1000)) --out "$OUT/calibration-trace" --force
worker_config "$OUT/calibration.json" "$KEEP" "$OUT/state-calibration"
start_worker "$OUT/calibration.json"
$L trace --port "$PORT" --input "$OUT/calibration-trace/trace.csv" --metadata "$OUT/workload/metadata.csv" \
  --out "$OUT/calibration-run" --quiet --force
stop_worker
$L fidelity calibrate --run "$OUT/calibration-run" --metadata "$OUT/workload/metadata.csv" --out "$OUT/calibrated.csv"

echo "== live run"
worker_config "$OUT/worker.json" "$KEEP" "$OUT/state-live"
start_worker "$OUT/worker.json"
$L trace --port "$PORT" --input "$OUT/workload/trace.csv" --metadata "$OUT/workload/metadata.csv" --out "$OUT/live" --quiet --force
stop_worker

echo "== simulated runs (seeds $SEED..$((SEED + RUNS - 1)))"
simulate() { # $1 = metadata, $2 = results prefix; prints the --sim arguments
  for i in $(seq 0 $((RUNS - 1))); do
    $L trace --setup simulation --worker-config "$OUT/worker.json" --seed $((SEED + i)) \
      --input "$OUT/workload/trace.csv" --metadata "$1" --out "$2-$i" --quiet --force > /dev/null
    printf -- '--sim %s ' "$2-$i"
  done
}
SIMS=$(simulate "$OUT/calibrated.csv" "$OUT/sim")

echo "== live vs simulated"
# shellcheck disable=SC2086
$L fidelity compare --live "$OUT/live" $SIMS --out "$OUT/fidelity.json"

# The model's own error: the simulation fed the live run's own measured durations (no
# calibration error, no drift of the machine between the calibration and the live run).
echo "== live vs simulated with the live run's own durations (the model's error alone)"
$L fidelity calibrate --run "$OUT/live" --metadata "$OUT/workload/metadata.csv" --out "$OUT/self-calibrated.csv" > /dev/null
SIMS=$(simulate "$OUT/self-calibrated.csv" "$OUT/sim-self")
# shellcheck disable=SC2086
$L fidelity compare --live "$OUT/live" $SIMS --out "$OUT/fidelity-self.json"
