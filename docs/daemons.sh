# Sourced by the examples of docs/*.md that start a worker or a controller:
#   start NAME COMMAND...   runs a daemon in the background (stdout in NAME.ready, stderr in
#                           NAME.log), waits for its ready line and stops it (SIGTERM, then
#                           waits) when the shell exits; fails with the log if it dies first.
#   grpc_port NAME / http_addr NAME   the gRPC port and the HTTP host:port of its ready line.
DAEMONS=()
trap 'kill -TERM "${DAEMONS[@]}" 2>/dev/null; wait' EXIT
start() {
  local name=$1
  shift
  "$@" >"$name.ready" 2>"$name.log" &
  DAEMONS+=($!)
  until [ -s "$name.ready" ]; do
    kill -0 "${DAEMONS[-1]}" 2>/dev/null || { echo "$name did not start:" >&2; cat "$name.log" >&2; return 1; }
    sleep 0.1
  done
}
grpc_port() { grep -o '"grpc":"[^"]*"' "$1.ready" | cut -d'"' -f4 | cut -d: -f2; }
http_addr() { grep -o '"http":"[^"]*"' "$1.ready" | cut -d'"' -f4; }
