# Tests for the reference-protocol function server (function_server.py), run as a real
# subprocess over real HTTP and a real Unix socket.
# From the repository root: python3 -m unittest discover -s runtimes/python -p 'test_*.py'
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "function_server.py")
PYTHON = os.environ.get("ILUVATAR_TEST_PYTHON") or (
    "/usr/bin/python3.11" if os.path.exists("/usr/bin/python3.11") else sys.executable)
FORMAT = "%Y-%m-%d %H:%M:%S:%f+%z"

FUNCTION = """
calls = 0

def main(args):
    global calls
    calls += 1
    if "raise" in args:
        raise ValueError(args["raise"])
    if "set" in args:
        return {1, 2}
    return {"greeting": "Hello %s!" % args.get("name", "stranger"), "calls": calls}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, source, kind="http"):
        self.dir = tempfile.mkdtemp(prefix="ilu-srv-")
        with open(os.path.join(self.dir, "main.py"), "w") as f:
            f.write(textwrap.dedent(source))
        self.port = free_port()
        self.sock = os.path.join(self.dir, "sock")
        env = dict(os.environ, __IL_PORT=str(self.port), __IL_HOST="127.0.0.1", __IL_SOCKET=self.sock)
        self.proc = subprocess.Popen([PYTHON, "-u", SERVER, kind], cwd=self.dir, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if kind == "http":
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                elif os.path.exists(self.sock):
                    break
                else:
                    raise OSError
                break
            except OSError:
                time.sleep(0.02)

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class HttpServerTest(unittest.TestCase):
    def setUp(self):
        self.server = Server(FUNCTION)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)

    def tearDown(self):
        self.conn.close()
        self.server.close()

    def request(self, method, path, body=None):
        self.conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        return r.status, json.loads(r.read()), r

    def test_status_invocations_and_errors_on_one_kept_connection(self):
        status, body, _ = self.request("GET", "/")
        self.assertEqual((status, body), (200, {"Status": "OK"}))
        before = datetime.now(timezone.utc)
        status, body, r = self.request("POST", "/invoke", json.dumps({"name": "bob"}))
        self.assertEqual(status, 200)
        self.assertEqual(r.getheader("Content-Type"), "application/json")
        self.assertEqual(json.loads(body["user_result"]), {"greeting": "Hello bob!", "calls": 1})
        self.assertIs(body["was_cold"], True)
        start, end = (datetime.strptime(body[k], FORMAT) for k in ("start", "end"))
        self.assertTrue(before <= start <= end, body)
        self.assertAlmostEqual(body["duration_sec"], (end - start).total_seconds(), places=6)
        status, body, _ = self.request("POST", "/invoke", "{}")
        self.assertEqual((status, body["was_cold"]), (200, False))
        self.assertEqual(json.loads(body["user_result"])["calls"], 2)

        status, body, _ = self.request("POST", "/invoke", json.dumps({"raise": "boom"}))
        self.assertEqual(status, 422)
        err = json.loads(body["user_error"])
        self.assertEqual((err["kind"], err["message"]), ("ValueError", "boom"))
        self.assertIn("main.py", err["traceback"])
        status, body, _ = self.request("POST", "/invoke", json.dumps({"set": 1}))
        self.assertEqual((status, json.loads(body["user_error"])["kind"]), (422, "TypeError"))
        status, body, _ = self.request("POST", "/invoke", "{oops")
        self.assertEqual(status, 500)
        self.assertIn("platform_error", body)
        status, body, _ = self.request("GET", "/nowhere")
        self.assertEqual(status, 404)

    def test_an_import_error_is_reported_by_every_answer(self):
        self.tearDown()
        self.server = Server("import no_such_module_here\n")
        self.conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        status, body, _ = self.request("GET", "/")
        self.assertEqual((status, body["Status"]), (500, "code import error"))
        self.assertIn("no_such_module_here", body["user_error"])
        status, body, _ = self.request("POST", "/invoke", "{}")
        self.assertEqual(status, 422)
        self.assertEqual(json.loads(body["user_error"])["kind"], "ImportError")


class SocketServerTest(unittest.TestCase):
    def test_frames(self):
        server = Server(FUNCTION, kind="unix")
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(server.sock)
            f = s.makefile("rb")

            def call(cmd, payload=b""):
                s.sendall(cmd.to_bytes(8, sys.byteorder) + len(payload).to_bytes(8, sys.byteorder) + payload)
                n = int.from_bytes(f.read(8), sys.byteorder)
                return json.loads(f.read(n))

            self.assertEqual(call(0), {"Status": "OK"})
            body = call(1, json.dumps({"name": "sock"}).encode())
            self.assertEqual(json.loads(body["user_result"])["greeting"], "Hello sock!")
            self.assertIs(body["was_cold"], True)
            self.assertEqual(json.loads(call(1, b'{"raise": "x"}')["user_error"])["message"], "x")
            self.assertIn("platform_error", call(9))
            f.close()
            s.close()
        finally:
            server.close()


if __name__ == "__main__":
    unittest.main()
