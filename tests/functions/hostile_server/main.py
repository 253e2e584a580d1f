# A hostile function server for the worker's tests, run as an image's entrypoint
# (python3 -u /app/main.py [mute]): it answers GET / as the reference protocol says (with
# "mute", it accepts connections and never answers), then misbehaves on POST /invoke as the
# call's {"mode": ...} asks. Raw sockets, so that it can send exactly the bytes it wants.
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone

FORMAT = "%Y-%m-%d %H:%M:%S:%f+%z"
calls = 0


def read_request(f):
    line = f.readline()
    if not line:
        return None, None
    length = 0
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.decode().partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    return line.split()[0].decode(), f.read(length)


def answer(conn, code, body, extra=""):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = "HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n" % (code, len(data), extra)
    conn.sendall(head.encode() + data)


def result(value):
    now = datetime.now(timezone.utc).strftime(FORMAT)
    return {"start": now, "end": now, "was_cold": calls == 1, "duration_sec": 0.0, "user_result": json.dumps(value)}


def misbehave(conn, mode):
    if mode == "ok":
        answer(conn, 200, result({"mode": mode}))
    elif mode == "close_ok":  # as gunicorn's sync workers do
        answer(conn, 200, result({"mode": mode}), "Connection: close\r\n")
        return False
    elif mode == "chunked_ok":
        data = json.dumps(result({"mode": mode})).encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(data), 7):
            piece = data[i:i + 7]
            conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        conn.sendall(b"0\r\n\r\n")
    elif mode == "garbage":
        conn.sendall(b"SPAM SPAM SPAM\r\n\r\n")
    elif mode == "not_json":
        answer(conn, 200, b"this is not json")
    elif mode == "bad_result":
        body = result(None)
        body["user_result"] = "{not json"
        answer(conn, 200, body)
    elif mode == "html_500":
        answer(conn, 500, b"<html><h1>Internal Server Error</h1></html>")
    elif mode == "huge_header":
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        while True:
            conn.sendall(b"X-Pad: " + b"a" * 1000 + b"\r\n")
    elif mode == "huge_body":
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n")
        while True:
            conn.sendall(b"\0" * 65536)
    elif mode == "huge_chunks":
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            conn.sendall(b"10000\r\n" + b"a" * 65536 + b"\r\n")
    elif mode == "slow":  # slow-loris: a byte at a time, for ever
        for b in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"z" * 100000:
            conn.sendall(bytes([b]))
            time.sleep(0.2)
    elif mode == "hang":
        time.sleep(3600)
    elif mode == "close":
        return False
    elif mode == "crash":
        os._exit(7)
    return True


def main():
    global calls
    mute = "mute" in sys.argv[1:]
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # 127.0.0.1 at once: loopback must be up before the container's first instruction.
    srv.bind(("127.0.0.1", int(os.environ.get("__IL_PORT", "8080"))))
    srv.listen(16)
    print("hostile server listening", flush=True)
    while True:
        conn, _ = srv.accept()
        if mute:
            time.sleep(3600)
        f = conn.makefile("rb")
        try:
            while True:
                method, body = read_request(f)
                if method is None:
                    break
                if method == "GET":
                    answer(conn, 200, {"Status": "OK"})
                    continue
                calls += 1
                mode = json.loads(body).get("mode", "ok")
                if not misbehave(conn, mode):
                    break
        except OSError:
            pass
        finally:
            f.close()
            conn.close()


if __name__ == "__main__":
    main()
