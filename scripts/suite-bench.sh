#!/usr/bin/env bash
# Measures the function suite (functions/) on the runtime backend, as root with the release
# binaries and pip access to the package index: `iluvatar_load_gen benchmark` against a fresh
# worker (standby containers on, as by default), RUNS times, then one table with the range of
# each figure over the runs. Writes results/suite/run-N.json (usable as --function-data).
#   bash scripts/suite-bench.sh [RUNS] [COLD_ITERS] [WARM_ITERS]   (BIN=target/release)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}; COLD=${2:-10}; WARM=${3:-50}
BIN=${BIN:-target/release}
W=$BIN/iluvatar_worker; L=$BIN/iluvatar_load_gen
for b in "$W" "$L"; do [ -x "$b" ] || { echo "$b missing: cargo build --release --workspace" >&2; exit 1; }; done
[ "$(id -u)" = 0 ] || { echo "run as root: real containers" >&2; exit 1; }
TMP=$(mktemp -d /tmp/iluvatar-suite-bench.XXXXXX)
chmod 755 "$TMP"  # the dependency download runs as the unprivileged build user
PID=""
cleanup() {
  if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p results/suite
for run in $(seq "$RUNS"); do
  cat > "$TMP/worker.json" <<JSON
{"state_dir": "$TMP/state-$run", "grpc": {"port": 0}, "http": {"enabled": false},
 "isolation": {"backends": [{"type": "runtime"}]}}
JSON
  : > "$TMP/ready"
  "$W" -c "$TMP/worker.json" > "$TMP/ready" 2>> "$TMP/worker.log" &
  PID=$!
  for _ in $(seq 200); do grep -q ready "$TMP/ready" && break; sleep 0.05; done
  PORT=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["grpc"].rsplit(":",1)[1])' "$TMP/ready")
  echo "run $run"
  "$L" benchmark --port "$PORT" --functions-dir functions --cold-iters "$COLD" --warm-iters "$WARM" \
    --out "results/suite/run-$run.json"
  kill -TERM "$PID"; wait "$PID" || true; PID=""
done
python3 - results/suite "$RUNS" <<'PY'
import json, os, sys
d, runs = sys.argv[1], int(sys.argv[2])
data = [json.load(open(os.path.join(d, "run-%d.json" % r)))["functions"] for r in range(1, runs + 1)]
def rng(vals):
    return "%.1f" % vals[0] if len(vals) == 1 else "%.1f-%.1f" % (min(vals), max(vals))
print("\n| function | layer | first registration ms | cold p50 ms | container start p50 ms | warm p50 ms | in-function p50 ms |")
print("|---|---|---|---|---|---|---|")
for i, f in enumerate(data[0]):
    rows = [run[i] for run in data]
    col = lambda g: rng([g(r) for r in rows])
    print("| %s | %s | %s | %s | %s | %s | %s |" % (
        f["name"], "yes" if f["detail"]["requirements"] else "no", col(lambda r: r["detail"]["register_ms"][0]),
        col(lambda r: r["cold_ms_p50"]), col(lambda r: r["detail"]["cold_start_ms"]["p50"]),
        col(lambda r: r["warm_ms_p50"]), col(lambda r: r["detail"]["warm_function_ms"]["p50"])))
PY
