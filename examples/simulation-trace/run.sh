#!/usr/bin/env bash
# The Azure-shaped trace of azure-trace, simulated: the worker's own code under virtual time
# (no worker process, no waiting: seconds of wall time for the trace's minutes), with
# configs/simulation.toml. Run twice with the same seed: the results are byte-identical.
#
# Expect: the same invocation count as azure-trace, 0 failed, cold starts and latencies close
# to the live run's; "identical: yes".
source "$(dirname "$0")/../common.sh"
OUT=${1:-$EXAMPLES/simulation-trace/results}
fresh_out "$OUT"
DUR=300
[ -n "$QUICK" ] && DUR=60
"$L" generate synthetic --functions 40 --duration-s "$DUR" --mean-rate 0.1 --rate-sigma 1.5 \
  --timer-fraction 0.33 --mean-warm-ms 100 --mean-cold-extra-ms 500 --mem-mb 128,256,512 \
  --seed 1 --out "$OUT/workload"
for run in run rerun; do
  "$L" trace --setup simulation --worker-config "$EXAMPLES/configs/simulation.toml" \
    --input "$OUT/workload/trace.csv" --metadata "$OUT/workload/metadata.csv" --out "$OUT/$run" \
    --seed 1 --quiet
done
summary "$OUT/run"
if cmp -s "$OUT/run/invocations.csv" "$OUT/rerun/invocations.csv"; then
  echo "   identical: yes"
else
  echo "   identical: NO (invocations.csv differs between two runs with one seed)" >&2
  exit 1
fi
