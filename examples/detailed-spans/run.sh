#!/usr/bin/env bash
# Where an invocation's time goes inside the worker: a worker at log level debug writes a span
# per step (api, queue, pool acquire, container start, agent call, ...) with its transaction
# id; one cold and one warm invocation of functions/hello, then the spans of each.
#
# Expect: two span trees (invoke > queue > acquire > create > standby, call > agent). The cold
# call spends milliseconds in acquire:create (a standby container taken over and the function
# imported); the warm call's acquire takes microseconds and its time is the agent's answer
# (call:agent, mostly idle: waiting on the container). busy = CPU time in the span, idle = the
# rest of its wall time.
source "$(dirname "$0")/../common.sh"
OUT=${1:-$EXAMPLES/detailed-spans/results}
fresh_out "$OUT"
start WORKER "$W" "$EXAMPLES/configs/worker.toml" ILUVATAR_WORKER__log_level=info,iluvatar_worker=debug ILUVATAR_WORKER__log_spans=true
"$CLI" --port "$WORKER_PORT" register --name hello --version 1 --code "$ROOT/functions/hello" --memory 128 --cpu 1 >/dev/null
for call in cold warm; do
  "$CLI" --port "$WORKER_PORT" invoke --name hello --version 1 -a name=spans > "$OUT/$call.json"
done
cp "$SCRATCH/WORKER/log" "$OUT/worker.log"
python3 - "$OUT/worker.log" <<'PY'
import re, sys
lines = open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines()
# A closing span: "... invoke{tid=T}:queue{...}:acquire: target: close time.busy=X time.idle=Y"
close = re.compile(r"(invoke\{tid=([^}]+)\}(?::\w+(?:\{[^}]*\})?)*):? [\w:]+: close time\.busy=(\S+) time\.idle=(\S+)")
tids = []
for l in lines:
    m = close.search(l)
    if m and m.group(2) not in tids:
        tids.append(m.group(2))
if len(tids) < 2:
    sys.exit(f"expected the spans of two invocations in the log, found {len(tids)}")
for call, tid in zip(("cold", "warm"), tids):
    print(f"== {call} invocation (tid {tid}): span path, busy, idle")
    for l in lines:
        m = close.search(l)
        if m and m.group(2) == tid:
            path = re.sub(r"\{[^}]*\}", "", m.group(1))
            print(f"   {path:<48} busy {m.group(3):>9}  idle {m.group(4):>9}")
PY
