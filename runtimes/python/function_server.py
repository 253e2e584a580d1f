# A function server of the reference Ilúvatar protocol, standard library only: what the
# reference platform's images run (there: gunicorn + Flask), for images built by
# scripts/build-python-image.py --server http|unix. Imports main.py from the working
# directory once, then serves calls of main(args).
#
#   python3 function_server.py http   HTTP/1.1 on $__IL_HOST:$__IL_PORT (0.0.0.0:8080)
#   python3 function_server.py unix   the socket variant at $__IL_SOCKET
#
# GET / (socket command 0) answers {"Status": "OK"}, or HTTP 500 with {"Status": "code import
# error", "user_error": TRACEBACK}. POST /invoke (socket command 1) takes the JSON arguments
# and answers {"start", "end" (times formatted %Y-%m-%d %H:%M:%S:%f+%z), "was_cold",
# "duration_sec", "user_result": json.dumps(value)} with HTTP 200, or the same with
# "user_error" (json.dumps of {"kind", "message", "traceback"}) and HTTP 422; arguments that
# are not JSON answer HTTP 500 {"platform_error", "was_cold"}. Socket frames: two
# native-endian u64 (command, length) and the arguments; answers: a native-endian u64
# length and the JSON.
import json
import os
import signal
import socketserver
import sys
import traceback
from datetime import datetime, timezone

FORMAT = "%Y-%m-%d %H:%M:%S:%f+%z"
_cold = True
_import_error = None
try:
    sys.path.insert(0, os.getcwd())
    from main import main as _main
except BaseException:  # a function that cannot be imported is reported by every answer
    _import_error = traceback.format_exc()


def _now():
    # Aware, so that %z names the offset and the worker need not guess the zone.
    return datetime.now(timezone.utc)


def _meta(start, end, was_cold):
    return {"start": start.strftime(FORMAT), "end": end.strftime(FORMAT), "was_cold": was_cold,
            "duration_sec": (end - start).total_seconds()}


def _user_error(kind, message, tb=""):
    return json.dumps({"kind": kind, "message": message, "traceback": tb})


def status():
    if _import_error is not None:
        return 500, {"Status": "code import error", "user_error": _import_error}
    return 200, {"Status": "OK"}


def invoke(body):
    """(HTTP status, answer) of one call with the raw request body."""
    global _cold
    was_cold, _cold = _cold, False
    if _import_error is not None:
        t = _now()
        return 422, dict(_meta(t, t, was_cold), user_error=_user_error("ImportError", _import_error))
    try:
        args = json.loads(body)
    except (ValueError, RecursionError) as e:
        return 500, {"platform_error": str(e), "was_cold": was_cold}
    start = _now()
    try:
        value = _main(args)
        end = _now()
        result = json.dumps(value, allow_nan=False)
    except Exception as e:  # the function's error (or a value that is not JSON) is the caller's
        end = _now()
        return 422, dict(_meta(start, end, was_cold),
                         user_error=_user_error(type(e).__name__, str(e), traceback.format_exc()))
    return 200, dict(_meta(start, end, was_cold), user_result=result)


_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 422: b"Unprocessable Entity",
            500: b"Internal Server Error", 501: b"Not Implemented"}


class _Http(socketserver.StreamRequestHandler):
    # HTTP/1.1 with keep-alive, read by hand: http.server parses every header with the email
    # package, which costs more than the whole call of a small function.
    disable_nagle_algorithm = True

    def handle(self):
        rfile = self.rfile
        while True:
            line = rfile.readline(65537)
            if not line:
                return
            if line in (b"\r\n", b"\n"):
                continue
            parts = line.split()
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
                return self._answer(400, {"platform_error": "not an HTTP/1.x request"}, True)
            method, path, version = parts
            length, close = 0, version == b"HTTP/1.0"
            while True:
                h = rfile.readline(65537)
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    close = b"close" in value.lower() or (close and b"keep-alive" not in value.lower())
                elif name == b"transfer-encoding":
                    return self._answer(501, {"platform_error": "chunked requests are not read"}, True)
            body = rfile.read(length) if length else b""
            if method == b"GET" and path == b"/":
                code, obj = status()
            elif method == b"POST" and path == b"/invoke":
                code, obj = invoke(body)
            else:
                code, obj = 404, {"platform_error": "no such path"}
            self._answer(code, obj, close)
            if close:
                return

    def _answer(self, code, obj, close):
        data = json.dumps(obj).encode()
        head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n" % (
            code, _REASONS.get(code, b"Other"), len(data), b"Connection: close\r\n" if close else b"")
        self.wfile.write(head + data)


class _Frames(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            head = self.rfile.read(16)
            if len(head) < 16:
                return
            command = int.from_bytes(head[:8], sys.byteorder)
            size = int.from_bytes(head[8:], sys.byteorder)
            payload = self.rfile.read(size)
            if command == 0:
                answer = status()[1]
            elif command == 1:
                answer = invoke(payload)[1]
            else:
                answer = {"platform_error": "unknown command %d" % command}
            data = json.dumps(answer).encode()
            self.wfile.write(len(data).to_bytes(8, sys.byteorder) + data)


class _UnixServer(socketserver.UnixStreamServer):
    def server_bind(self):
        # Listen under a temporary name, then rename: the path only ever names a socket
        # that accepts connections.
        final, tmp = self.server_address, "%s.tmp-%d" % (self.server_address, os.getpid())
        if os.path.lexists(tmp):
            os.unlink(tmp)
        self.socket.bind(tmp)
        self.socket.listen(self.request_queue_size)
        os.rename(tmp, final)
        self.server_address = final

    def server_activate(self):
        pass  # listening already


def serve(kind):
    # As PID 1 in a container, a signal without a handler is ignored.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if kind == "unix":
        path = os.environ.get("__IL_SOCKET", "/iluvatar/sockets/sock")
        _UnixServer(path, _Frames).serve_forever()
    else:
        host = os.environ.get("__IL_HOST", "0.0.0.0")
        port = int(os.environ.get("__IL_PORT", "8080"))
        socketserver.TCPServer.allow_reuse_address = True
        socketserver.TCPServer((host, port), _Http).serve_forever()


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else "http")
