# Shared by the examples: sourced, not run. Builds (or finds) the binaries, starts daemons
# on free ports, waits for their ready lines, and stops them (and removes their state) on exit.
#
#   PROFILE=release (default) or debug: which build to use; BIN=DIR: binaries already built.
#   QUICK=1: shorter runs (what CI's tests use).
set -euo pipefail
EXAMPLES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$EXAMPLES")
PROFILE=${PROFILE:-release}
if [ -z "${BIN:-}" ]; then
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE
  if [ "$PROFILE" = release ]; then
    (cd "$ROOT" && cargo build --release --workspace --quiet)
  else
    (cd "$ROOT" && cargo build --workspace --quiet)
  fi
fi
W=$BIN/iluvatar_worker
C=$BIN/iluvatar_controller
L=$BIN/iluvatar_load_gen
CLI=$BIN/iluvatar_worker_cli
QUICK=${QUICK:-}
SCRATCH=$(mktemp -d /tmp/iluvatar-example-XXXXXX)
# Containers run as unprivileged users: they must be able to pass through the state dir.
chmod 755 "$SCRATCH"
DAEMONS=()

cleanup() {
  for pid in "${DAEMONS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${DAEMONS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$SCRATCH"
}
trap cleanup EXIT

# fresh_out DIR: the results folder, emptied first (a rerun must not mix with old files).
fresh_out() {
  rm -rf "$1"
  mkdir -p "$1"
}

# start NAME BINARY CONFIG [ENV=VALUE...]: starts a daemon with CONFIG (its state dir and
# ports are overridden: a private state dir under $SCRATCH and free ports), waits for its
# ready line, and sets ${NAME}_GRPC (host:port), ${NAME}_PORT and ${NAME}_HTTP.
start() {
  local name=$1 bin=$2 config=$3
  shift 3
  local kind
  kind=$(basename "$bin" | sed 's/iluvatar_//' | tr '[:lower:]' '[:upper:]')
  local dir=$SCRATCH/$name
  mkdir -p "$dir"
  env "$@" "ILUVATAR_${kind}__state_dir=$dir/state" "ILUVATAR_${kind}__grpc__port=0" \
    "ILUVATAR_${kind}__http__port=0" "$bin" -c "$config" >"$dir/ready" 2>"$dir/log" &
  DAEMONS+=($!)
  for _ in $(seq 300); do
    [ -s "$dir/ready" ] && break
    if ! kill -0 "${DAEMONS[-1]}" 2>/dev/null; then
      echo "$name did not start; its log:" >&2
      cat "$dir/log" >&2
      exit 1
    fi
    sleep 0.1
  done
  [ -s "$dir/ready" ] || { echo "$name: no ready line after 30 s" >&2; cat "$dir/log" >&2; exit 1; }
  local grpc http
  grpc=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["grpc"])' "$dir/ready")
  http=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline()).get("http") or "")' "$dir/ready")
  printf -v "${name}_GRPC" '%s' "$grpc"
  printf -v "${name}_PORT" '%s' "${grpc##*:}"
  printf -v "${name}_HTTP" '%s' "$http"
  echo "== $name ready: grpc $grpc${http:+, http $http} (log: $dir/log)"
}

# summary DIR: the headline figures of a run's summary.json.
summary() {
  python3 - "$1/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
lat = s.get("client_latency_ms", {})
print(f"   invocations {s.get('invocations')}, failed {s.get('failed')}, cold starts {s.get('cold')}, "
      f"client latency p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms")
PY
}
