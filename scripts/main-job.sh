#!/usr/bin/env bash
# The main job: build, start a worker with the embedded container runtime (real containers,
# needs root), register functions/hello, invoke it cold then warm, then benchmark the worker
# on real containers and the control plane alone, and time a simulation. Results go to results/
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
BIN=target/release
OUT=results
mkdir -p "$OUT"
STATE=$(mktemp -d)
cat > "$OUT/worker.json" <<JSON
{"name": "main-job", "state_dir": "$STATE", "grpc": {"address": "127.0.0.1", "port": 0},
 "http": {"enabled": true, "address": "127.0.0.1", "port": 0}, "log_level": "warn"}
JSON
"$BIN/iluvatar_worker" -c "$OUT/worker.json" > "$OUT/worker.ready" 2> "$OUT/worker.log" &
WORKER=$!
trap 'kill -TERM $WORKER 2>/dev/null || true; wait $WORKER 2>/dev/null || true; rm -rf "$STATE"' EXIT
for _ in $(seq 100); do [ -s "$OUT/worker.ready" ] && break; sleep 0.1; done
PORT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["grpc"].rsplit(":",1)[1])' "$OUT/worker.ready")
CLI="$BIN/iluvatar_worker_cli --address 127.0.0.1 --port $PORT"
echo "== worker ready on port $PORT; backends: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["backends"])' "$OUT/worker.ready")"
$CLI register --name hello --version 1 --code functions/hello --memory 128 --cpu 1
echo "== invoke (cold: a new container)"; $CLI invoke --name hello --version 1 -a name=bob
echo "== invoke (warm)"; $CLI invoke --name hello --version 1 -a name=bob
echo "== status"; $CLI status
echo "== a short trace on real containers: 5 synthetic functions, 30 s"
"$BIN/iluvatar_load_gen" generate synthetic --functions 5 --duration-s 30 --mean-rate 4 \
  --mean-warm-ms 10 --mean-cold-extra-ms 50 --mem-mb 32 --seed 1 --out "$OUT/workload" --force
"$BIN/iluvatar_load_gen" trace --port "$PORT" --isolation runtime --input "$OUT/workload/trace.csv" \
  --metadata "$OUT/workload/metadata.csv" --out "$OUT/trace" --seed 1 --force
kill -TERM $WORKER; wait $WORKER || true
echo "== worker benchmark: real containers (cold starts, closed and open loop)"
"$BIN/iluvatar_load_gen" worker-bench --out "$OUT/worker_bench.json"
echo "== control-plane benchmark: sim backend, zero-duration function"
"$BIN/iluvatar_load_gen" control-plane --clients 1,4,16 --duration-s 10 --out "$OUT/control_plane.json"
echo "== simulation: the same worker code under virtual time, ~1.3 M invocations"
"$BIN/iluvatar_load_gen" sim-bench --out "$OUT/sim_bench" --force
