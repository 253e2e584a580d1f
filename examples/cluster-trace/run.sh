#!/usr/bin/env bash
# A cluster: a controller (configs/controller.toml, least_loaded) and two workers with
# simulated containers that register with it; the trace goes through the controller. Then the
# same trace on a simulated cluster of two workers behind the same balancing code.
#
# Expect: live, every invocation answered (0 failed), spread over both workers (the table
# prints invocations per worker), controller overhead a fraction of a millisecond; simulated,
# the same counts and similar cold starts, workers named simulated-0 and simulated-1.
source "$(dirname "$0")/../common.sh"
OUT=${1:-$EXAMPLES/cluster-trace/results}
fresh_out "$OUT"
DUR=120
[ -n "$QUICK" ] && DUR=30
"$L" generate synthetic --functions 10 --duration-s "$DUR" --mean-rate 1 --mean-warm-ms 50 \
  --mean-cold-extra-ms 300 --mem-mb 128,256 --seed 2 --out "$OUT/workload"
start CTL "$C" "$EXAMPLES/configs/controller.toml"
for i in 0 1; do
  start "W$i" "$W" "$EXAMPLES/configs/worker-sim.toml" "ILUVATAR_WORKER__name=worker-$i" \
    "ILUVATAR_WORKER__controller__address=127.0.0.1" "ILUVATAR_WORKER__controller__port=$CTL_PORT"
done
"$L" trace --target controller --port "$CTL_PORT" --controller-http "$CTL_HTTP" --min-workers 2 \
  --isolation sim --input "$OUT/workload/trace.csv" --metadata "$OUT/workload/metadata.csv" \
  --out "$OUT/live" --seed 1 --quiet
summary "$OUT/live"
"$L" trace --setup simulation --controller-config "$EXAMPLES/configs/controller.toml" --workers 2 \
  --worker-config "$EXAMPLES/configs/simulation.toml" --input "$OUT/workload/trace.csv" \
  --metadata "$OUT/workload/metadata.csv" --out "$OUT/simulated" --seed 1 --quiet
summary "$OUT/simulated"
