#!/usr/bin/env bash
# Scaling on real containers: closed-loop clients from 1 to 4 (QUICK: 1 to 2), each calling
# a synthetic function (10 ms of work) as fast as it answers; throughput and latency per step.
#
# Expect: throughput rising with clients until the cores (here the worker's 4 concurrent
# invocations and the machine's cores) are busy, then latency rising instead.
source "$(dirname "$0")/../common.sh"
OUT=${1:-$EXAMPLES/scaling/results}
fresh_out "$OUT"
END=4
SECS=5
[ -n "$QUICK" ] && END=2 && SECS=2
start WORKER "$W" "$EXAMPLES/configs/worker.toml"
"$L" scaling --port "$WORKER_PORT" --isolation runtime --functions-dir "$ROOT/functions" \
  --function work:200:10:64 --start 1 --end "$END" --duration-s "$SECS" --out "$OUT"
