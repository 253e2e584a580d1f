#!/usr/bin/env bash
# A basic trace on real containers: one worker with the embedded runtime backend (root), three
# functions (functions/synthetic, shaped by metadata.csv: fast every 0.5 s, slow every 1.5 s,
# rare every 4 s), 10 s of trace replayed open-loop, results in results/ (or $1).
#
# Expect: 30 invocations, 0 failed; 3 to 5 cold starts: one per function, and one more for a
# function whose next call arrives while its first container is still starting (a replay does
# not wait); the rest warm under the 10-minute keep-alive. Warm latency near the warm
# durations (10-100 ms plus about a millisecond).
source "$(dirname "$0")/../common.sh"
OUT=${1:-$EXAMPLES/basic-trace/results}
fresh_out "$OUT"
start WORKER "$W" "$EXAMPLES/configs/worker.toml"
"$L" trace --port "$WORKER_PORT" --isolation runtime --functions-dir "$ROOT/functions" \
  --input "$EXAMPLES/basic-trace/trace.csv" --metadata "$EXAMPLES/basic-trace/metadata.csv" \
  --out "$OUT" --seed 1 --quiet
summary "$OUT"
