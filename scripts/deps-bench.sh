#!/usr/bin/env bash
# Measures dependency layers on the runtime backend (as root, with the release binaries and pip
# access to the package index): the first registration of a function with a requirements.txt
# (its layer's build: download and install), a second function with the same requirements
# (the layer reused), cold and warm times of a function with a layer and one without, with and
# without standby containers, and the memory of ten containers sharing one layer.
#   bash scripts/deps-bench.sh [RUNS]        (BIN=target/release by default)
# Prints a table per run and writes results/deps_bench.json.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
BIN=${BIN:-target/release}
W=$BIN/iluvatar_worker; C=$BIN/iluvatar_worker_cli; L=$BIN/iluvatar_load_gen
for b in "$W" "$C" "$L"; do [ -x "$b" ] || { echo "$b missing: cargo build --release --workspace" >&2; exit 1; }; done
[ "$(id -u)" = 0 ] || { echo "run as root: real containers" >&2; exit 1; }
TMP=$(mktemp -d /tmp/iluvatar-deps-bench.XXXXXX)
# The download runs as the unprivileged build user: it must be able to reach the state dir.
chmod 755 "$TMP"
PID=""
cleanup() {
  if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p results

# start STANDBY STATE: a worker on free ports; sets PID and PORT.
start() {
  cat > "$TMP/worker.json" <<JSON
{"state_dir": "$2", "grpc": {"port": 0}, "http": {"enabled": false},
 "isolation": {"backends": [{"type": "runtime", "standby": $1}]}}
JSON
  : > "$TMP/ready"
  "$W" -c "$TMP/worker.json" > "$TMP/ready" 2>> "$TMP/worker.log" &
  PID=$!
  for _ in $(seq 200); do grep -q ready "$TMP/ready" && break; sleep 0.05; done
  PORT=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["grpc"].rsplit(":",1)[1])' "$TMP/ready")
}
stop() { kill -TERM "$PID"; wait "$PID" || true; PID=""; }
ms_of() { python3 -c 'import sys,time; t=time.time(); import subprocess; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); print(round((time.time()-t)*1000))' "$@"; }
reg() { ms_of "$C" --port "$PORT" register --name "$1" --version 1 --code "functions/$2" --memory 128 --cpu 1; }

# The memory of the containers of this worker: per container the cgroup's usage and its
# processes' RSS and PSS (shared pages split among the processes mapping them).
memory() {
  python3 - "$1" <<'PY'
import json, os, sys
parent = open(os.path.join(sys.argv[1], "runtime", "cgroup_parent")).read().strip()
v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
base = os.path.join("/sys/fs/cgroup" if v2 else "/sys/fs/cgroup/memory", parent)
rows = []
for c in sorted(os.listdir(base)):
    d = os.path.join(base, c)
    if not os.path.isdir(d):
        continue
    usage = int(open(os.path.join(d, "memory.current" if v2 else "memory.usage_in_bytes")).read())
    rss = pss = layer_rss = layer_pss = 0
    for pid in open(os.path.join(d, "cgroup.procs")).read().split():
        in_layer = False
        for line in open("/proc/%s/smaps" % pid):
            f = line.split()
            if not line[0].isupper():  # a mapping's header: address perms offset dev inode [path]
                in_layer = len(f) > 5 and f[5].startswith("/iluvatar/deps/")
            elif f[0] in ("Rss:", "Pss:"):
                kb = int(f[1])
                if f[0] == "Rss:":
                    rss += kb
                    layer_rss += kb if in_layer else 0
                else:
                    pss += kb
                    layer_pss += kb if in_layer else 0
    rows.append({"cgroup_mb": usage / 2**20, "rss_mb": rss / 1024, "pss_mb": pss / 1024,
                 "layer_rss_mb": layer_rss / 1024, "layer_pss_mb": layer_pss / 1024})
print(json.dumps(rows))
PY
}

for run in $(seq "$RUNS"); do
  STATE="$TMP/state-$run"
  start 2 "$STATE"
  first=$(reg matmul matmul)
  built=$(grep -o 'dependency layer built download_ms=[0-9]* install_ms=[0-9]* files=[0-9]* size_mb=[0-9]*' "$TMP/worker.log" | tail -1)
  again=$(reg model_training model_training)
  "$L" benchmark --port "$PORT" --functions matmul,float_operation --cold-iters 10 --warm-iters 20 --out "$TMP/standby.json" > /dev/null
  stop
  start 0 "$STATE"
  "$L" benchmark --port "$PORT" --functions matmul,float_operation --cold-iters 10 --warm-iters 20 --out "$TMP/started.json" > /dev/null
  "$C" --port "$PORT" clean > /dev/null
  for i in $(seq 10); do
    "$C" --port "$PORT" register --name "mem$i" --version 1 --code functions/matmul --memory 128 --cpu 1 > /dev/null
    "$C" --port "$PORT" invoke --name "mem$i" --version 1 -j '{"n": 300}' > /dev/null
  done
  mem=$(memory "$STATE")
  layers=$(ls "$STATE/runtime/deps/layers" | wc -l)
  stop
  row=$(python3 - "$first" "$again" "$built" "$TMP/standby.json" "$TMP/started.json" "$mem" "$layers" <<'PY'
import json, sys
first, again, built, standby, started, mem, layers = sys.argv[1:]
fields = dict(kv.split("=") for kv in built.split()[3:])
def fn(path, name):
    f = next(f for f in json.load(open(path))["functions"] if f["name"] == name)
    d = f["detail"]
    return {"cold_p50_ms": f["cold_ms_p50"], "start_p50_ms": d["cold_start_ms"]["p50"], "warm_p50_ms": f["warm_ms_p50"]}
mem = json.loads(mem)
print(json.dumps({
    "first_register_ms": int(first), "download_ms": int(fields["download_ms"]), "install_ms": int(fields["install_ms"]),
    "layer_files": int(fields["files"]), "layer_mb": int(fields["size_mb"]), "cached_register_ms": int(again),
    "standby": {"matmul": fn(standby, "matmul"), "float_operation": fn(standby, "float_operation")},
    "no_standby": {"matmul": fn(started, "matmul"), "float_operation": fn(started, "float_operation")},
    "ten_containers": {"layers_on_disk": int(layers), "containers": len(mem),
                       "cgroup_mb": sum(r["cgroup_mb"] for r in mem), "rss_mb": sum(r["rss_mb"] for r in mem),
                       "pss_mb": sum(r["pss_mb"] for r in mem),
                       "layer_rss_mb": sum(r["layer_rss_mb"] for r in mem),
                       "layer_pss_mb": sum(r["layer_pss_mb"] for r in mem),
                       "per_container_cgroup_mb": [round(r["cgroup_mb"], 1) for r in mem]},
}))
PY
)
  echo "run $run: $row"
  echo "$row" >> "$TMP/rows"
done
python3 -c 'import json,sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1])], indent=1))' "$TMP/rows" \
  > results/deps_bench.json
python3 - results/deps_bench.json <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))
def rng(f):
    v = [f(r) for r in runs]
    return "%.0f-%.0f" % (min(v), max(v)) if len(v) > 1 else "%.0f" % v[0]
print("over %d runs (min-max):" % len(runs))
print("  first registration (layer build) ms   ", rng(lambda r: r["first_register_ms"]),
      " download", rng(lambda r: r["download_ms"]), " install", rng(lambda r: r["install_ms"]),
      " layer MB", rng(lambda r: r["layer_mb"]))
print("  registration, same requirements ms    ", rng(lambda r: r["cached_register_ms"]))
for mode in ["standby", "no_standby"]:
    for f in ["matmul", "float_operation"]:
        print("  %-10s %-16s cold p50 %s ms (container start %s), warm p50 %s ms" % (
            mode, f, rng(lambda r: r[mode][f]["cold_p50_ms"]), rng(lambda r: r[mode][f]["start_p50_ms"]),
            rng(lambda r: r[mode][f]["warm_p50_ms"])))
t = lambda k: rng(lambda r: r["ten_containers"][k])
print("  ten matmul containers, one layer: cgroup %s MB, RSS %s MB, PSS %s MB (layers on disk: %s)" % (
    t("cgroup_mb"), t("rss_mb"), t("pss_mb"), t("layers_on_disk")))
print("    of which the layer's files mapped: RSS %s MB (what ten private copies would hold), PSS %s MB" % (
    t("layer_rss_mb"), t("layer_pss_mb")))
PY
echo "wrote results/deps_bench.json"
