#!/usr/bin/env bash
# Benchmark every function in functions/ on real containers: cold iterations (each the first
# call of a freshly registered version) and warm ones; writes function_data.json, which
# `trace --function-data` uses to map a trace's functions onto real ones.
#
# Expect: per function, cold times of tens to hundreds of milliseconds (a standby container
# takes most code functions' cold starts) and warm times of about a millisecond for hello;
# a function that computes for 100 ms or more (aes, compression) has cold and warm times
# close to each other, its cold start being a small part of them.
source "$(dirname "$0")/../common.sh"
OUT=${1:-$EXAMPLES/benchmark/results}
fresh_out "$OUT"
COLD=5
WARM=20
ONLY=()
# Quick (the test): three functions without a requirements.txt (no dependency layer to build);
# tests/runtime/suite.rs runs the whole suite.
[ -n "$QUICK" ] && COLD=2 && WARM=5 && ONLY=(--functions hello,synthetic,json_serdes)
start WORKER "$W" "$EXAMPLES/configs/worker.toml"
"$L" benchmark --port "$WORKER_PORT" --isolation runtime --functions-dir "$ROOT/functions" \
  --cold-iters "$COLD" --warm-iters "$WARM" "${ONLY[@]}" --out "$OUT/function_data.json"
