# Tests for the Python in-container agent (agent.py), run as a real subprocess over a real Unix socket.
# From the repository root: python3 -m unittest discover -s runtimes/python -p 'test_*.py'
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
AGENT = os.path.join(HERE, "agent.py")
FUNCTIONS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "functions")
# The containers run the host's /usr/bin/python3.11; test with it when it exists.
PYTHON = os.environ.get("ILUVATAR_TEST_PYTHON") or (
    "/usr/bin/python3.11" if os.path.exists("/usr/bin/python3.11") else sys.executable)
START_TIMEOUT_S = 10.0


class Agent:
    """One agent process with its own socket dir, function dir and stdout/stderr files."""

    def __init__(self, source=None, copy_from=None, env=None, stale_socket=False):
        self.tmp = tempfile.mkdtemp(prefix="ilu-agent-")  # short path: AF_UNIX paths are limited to ~107 bytes
        self.sock_dir = os.path.join(self.tmp, "sock")
        self.func_dir = os.path.join(self.tmp, "function")
        os.mkdir(self.sock_dir)
        if copy_from:
            shutil.copytree(copy_from, self.func_dir)
        else:
            os.mkdir(self.func_dir)
        if source is not None:
            with open(os.path.join(self.func_dir, "main.py"), "w") as f:
                f.write(textwrap.dedent(source))
        self.sock_path = os.path.join(self.sock_dir, "agent.sock")
        if stale_socket:  # what a crashed predecessor could leave behind
            with open(self.sock_path, "w") as f:
                f.write("stale")
        full_env = dict(os.environ, ILUVATAR_SOCKET=self.sock_path, ILUVATAR_FUNCTION_DIR=self.func_dir,
                        PYTHONDONTWRITEBYTECODE="1", **(env or {}))
        # Files, not pipes: a function printing megabytes must never block on a reader.
        self.stdout = open(os.path.join(self.tmp, "stdout.log"), "w+b")
        self.stderr = open(os.path.join(self.tmp, "stderr.log"), "w+b")
        self.proc = subprocess.Popen([PYTHON, "-u", AGENT], env=full_env, stdin=subprocess.DEVNULL,
                                     stdout=self.stdout, stderr=self.stderr)

    def wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while not os.path.exists(self.sock_path):
            if self.proc.poll() is not None:
                raise AssertionError("agent exited with %s: %s" % (self.proc.returncode, self.stderr_text()))
            if time.monotonic() > deadline:
                raise AssertionError("socket never appeared: " + self.stderr_text())
            time.sleep(0.002)
        return self

    def connect(self):
        # No retry on purpose: once the path exists the agent must already accept connections.
        return Conn(self.sock_path)

    def stderr_text(self):
        self.stderr.flush()
        with open(self.stderr.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stdout.close()
        self.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Conn:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.reader = self.sock.makefile("rb")

    def send_line(self, raw):
        self.sock.sendall(raw)
        line = self.reader.readline()
        if not line.endswith(b"\n"):
            raise AssertionError("truncated response %r" % line)
        return json.loads(line)

    def call(self, args, tid="t"):
        return self.send_line(json.dumps({"args": args, "tid": tid}).encode() + b"\n")

    def close(self):
        self.reader.close()
        self.sock.close()


class AgentTest(unittest.TestCase):
    def start(self, source=None, **kw):
        agent = Agent(source, **kw)
        self.addCleanup(agent.close)
        return agent

    def serve(self, source=None, **kw):
        conn = self.start(source, **kw).wait_ready().connect()
        self.addCleanup(conn.close)
        return conn

    def assert_import_error(self, agent, kind):
        self.assertEqual(agent.proc.wait(timeout=START_TIMEOUT_S), 3)
        self.assertFalse(os.path.exists(agent.sock_path), "must never serve after a failed import")
        lines = [json.loads(l) for l in agent.stderr_text().splitlines() if l.startswith("{")]
        self.assertEqual(len(lines), 1, agent.stderr_text())
        err = lines[0]
        self.assertEqual(err["event"], "import_error")
        self.assertEqual(err["kind"], kind)
        self.assertTrue(err["message"])
        self.assertIn("traceback", err)
        return err

    # --- the happy path -------------------------------------------------------------------------

    def test_hello_and_first_call(self):
        conn = self.serve(copy_from=os.path.join(FUNCTIONS, "hello"))
        r1 = conn.call({"name": "Ada"})
        self.assertEqual(r1["result"], {"body": {"greeting": "Hello Ada!"}})
        self.assertIs(r1["ok"], True)
        self.assertIs(r1["first_call"], True)
        self.assertLessEqual(r1["start_us"], r1["end_us"])
        self.assertAlmostEqual(r1["start_us"] / 1e6, time.time(), delta=60)  # Unix microseconds
        r2 = conn.call({})
        self.assertEqual(r2["result"], {"body": {"greeting": "Hello stranger!"}})
        self.assertIs(r2["first_call"], False)
        self.assertLessEqual(r1["end_us"], r2["start_us"])
        self.assertEqual(set(r2), {"ok", "result", "start_us", "end_us", "first_call"})

    def test_any_json_value_is_returned_as_is(self):
        conn = self.serve("def main(args):\n    return args['v']\n")
        for v in [None, 1, 2.5, "s", [1, {"a": None}], {"no_body": True}, "ünïcødé ☃"]:
            self.assertEqual(conn.call({"v": v})["result"], v)

    def test_pipelined_requests_and_large_payload(self):
        conn = self.serve("def main(args):\n    return len(args['x'])\n")
        big = "y" * (2 * 1024 * 1024)
        raw = b"".join(json.dumps({"args": {"x": s}}).encode() + b"\n" for s in ["a", big, "abc"])
        conn.sock.sendall(raw)
        results = [json.loads(conn.reader.readline())["result"] for _ in range(3)]
        self.assertEqual(results, [1, len(big), 3])

    def test_function_can_import_siblings(self):
        agent = self.start("import helper\ndef main(args):\n    return helper.VALUE\n")
        with open(os.path.join(agent.func_dir, "helper.py"), "w") as f:
            f.write("VALUE = 42\n")
        conn = agent.wait_ready().connect()
        self.addCleanup(conn.close)
        self.assertEqual(conn.call({})["result"], 42)

    # --- failures during a call -----------------------------------------------------------------

    def test_exception_is_structured_and_agent_keeps_serving(self):
        conn = self.serve("""\
            def main(args):
                if args.get("boom"):
                    raise KeyError("nope")
                return "fine"
            """)
        r = conn.call({"boom": True})
        self.assertIs(r["ok"], False)
        self.assertIs(r["first_call"], True)  # a failed call is still the container's first
        self.assertLessEqual(r["start_us"], r["end_us"])
        self.assertEqual(r["error"]["kind"], "KeyError")
        self.assertEqual(r["error"]["message"], "'nope'")
        self.assertIn('raise KeyError("nope")', r["error"]["traceback"])
        self.assertNotIn("agent.py", r["error"]["traceback"])
        self.assertNotIn("result", r)
        r = conn.call({})
        self.assertEqual((r["ok"], r["result"], r["first_call"]), (True, "fine", False))

    def test_sys_exit_in_function_does_not_kill_agent(self):
        conn = self.serve("import sys\ndef main(args):\n    if args: sys.exit(5)\n    return 1\n")
        self.assertEqual(conn.call({"x": 1})["error"]["kind"], "SystemExit")
        self.assertEqual(conn.call({})["result"], 1)

    def test_non_json_result(self):
        conn = self.serve("""\
            def main(args):
                return {"set": {1, 2}} if args.get("kind") == "set" else float("nan")
            """)
        for kind, type_name in [("set", "dict"), ("nan", "float")]:
            r = conn.call({"kind": kind})
            self.assertIs(r["ok"], False)
            self.assertEqual(r["error"]["kind"], "NonJsonResult")
            self.assertIn(type_name, r["error"]["message"])
        self.assertIs(conn.call({"kind": "set"})["first_call"], False)

    def test_malformed_requests_then_good_request(self):
        conn = self.serve("def main(args):\n    return args\n")
        for raw in [b"not json\n", b"[1, 2]\n", b'{"args": [1]}\n', b'{"tid": "x"}\n', b"\n",
                    b"\xff\xfe\xfa\n", b"[" * 100000 + b"\n"]:
            r = conn.send_line(raw)
            self.assertIs(r["ok"], False, raw[:20])
            self.assertEqual(r["error"]["kind"], "BadRequest")
            self.assertIs(r["first_call"], False)  # main was not called
        r = conn.call({"a": 1})
        self.assertEqual((r["ok"], r["result"], r["first_call"]), (True, {"a": 1}, True))

    # --- import failures --------------------------------------------------------------------------

    def test_missing_main_py(self):
        err = self.assert_import_error(self.start(), "ModuleNotFoundError")
        self.assertIn("main.py", err["message"])

    def test_import_time_exception(self):
        err = self.assert_import_error(self.start("raise ValueError('bad config')\n"), "ValueError")
        self.assertEqual(err["message"], "bad config")
        self.assertIn("main.py", err["traceback"])

    def test_syntax_error(self):
        self.assert_import_error(self.start("def main(args):\n    return (\n"), "SyntaxError")

    def test_no_callable_main(self):
        self.assert_import_error(self.start("main = 3\n"), "AttributeError")

    # --- connection handling and lifecycle ---------------------------------------------------------

    def test_reconnect(self):
        agent = self.start("def main(args):\n    return 'ok'\n").wait_ready()
        first = agent.connect()
        self.assertIs(first.call({})["first_call"], True)
        first.close()
        second = agent.connect()
        self.addCleanup(second.close)
        r = second.call({})
        self.assertEqual((r["result"], r["first_call"]), ("ok", False))

    def test_second_connection_is_served_after_first_drops(self):
        agent = self.start("def main(args):\n    return 'ok'\n").wait_ready()
        first = agent.connect()
        first.call({})
        second = agent.connect()  # queued in the backlog while the first is served
        self.addCleanup(second.close)
        first.close()
        self.assertEqual(second.call({})["result"], "ok")

    def test_disconnect_mid_call(self):
        agent = self.start("import time\ndef main(args):\n    time.sleep(args['s'])\n    return 'ok'\n").wait_ready()
        conn = agent.connect()
        conn.sock.sendall(b'{"args": {"s": 0.2}}\n')
        conn.close()  # the agent's reply will hit a closed socket
        again = agent.connect()
        self.addCleanup(again.close)
        self.assertEqual(again.call({"s": 0})["result"], "ok")

    def test_sigterm_exits_promptly(self):
        for busy in (False, True):
            agent = self.start("import time\ndef main(args):\n    time.sleep(args['s'])\n").wait_ready()
            conn = agent.connect()
            self.addCleanup(conn.close)
            if busy:
                conn.sock.sendall(b'{"args": {"s": 60}}\n')
                time.sleep(0.1)
            t = time.monotonic()
            agent.proc.send_signal(signal.SIGTERM)
            self.assertEqual(agent.proc.wait(timeout=2), 0)
            self.assertLess(time.monotonic() - t, 1.0)
            self.assertFalse(os.path.exists(agent.sock_path), "socket should be removed on exit")

    def test_sigterm_right_after_connect_is_never_lost(self):
        # The signal lands while the agent goes from accept to recv: a Python-level handler alone
        # can miss it there (it runs between bytecodes) and leave the agent asleep in recv. The
        # old agent missed it in 1 of 10 to 1 of 30 tries on this machine.
        for _ in range(40):
            agent = self.start("def main(args):\n    return 1\n").wait_ready()
            conn = agent.connect()
            self.addCleanup(conn.close)
            agent.proc.send_signal(signal.SIGTERM)
            self.assertEqual(agent.proc.wait(timeout=2), 0, agent.stderr_text())
            agent.close()

    def test_sigterm_exits_even_if_the_function_takes_the_signal(self):
        # A function that installs its own SIGTERM handler (here one doing nothing) still stops.
        agent = self.start("import signal\nsignal.signal(signal.SIGTERM, lambda *a: None)\n"
                           "signal.signal(signal.SIGUSR1, lambda *a: None)\n"
                           "def main(args):\n    return 1\n").wait_ready()
        conn = agent.connect()
        self.addCleanup(conn.close)
        agent.proc.send_signal(signal.SIGUSR1)  # another signal the function handles: no exit
        self.assertEqual(conn.call({})["result"], 1)
        agent.proc.send_signal(signal.SIGTERM)
        self.assertEqual(agent.proc.wait(timeout=2), 0)

    def test_socket_replaces_stale_path(self):
        agent = self.start("def main(args):\n    return 1\n", stale_socket=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                conn = Conn(agent.sock_path)
                break
            except OSError:
                self.assertLess(time.monotonic(), deadline, agent.stderr_text())
                time.sleep(0.005)
        self.addCleanup(conn.close)
        self.assertEqual(conn.call({})["result"], 1)
        self.assertEqual([n for n in os.listdir(agent.sock_dir)], ["agent.sock"])

    # --- dependency layers --------------------------------------------------------------------------

    def test_dependency_layer_is_on_the_path_before_host_packages(self):
        deps = tempfile.mkdtemp(prefix="ilu-deps-")
        self.addCleanup(shutil.rmtree, deps, True)
        os.mkdir(os.path.join(deps, "layerpkg"))
        with open(os.path.join(deps, "layerpkg", "__init__.py"), "w") as f:
            f.write("WHERE = 'layer'\n")
        # A .pth file in the layer adds its line to the path, as site directories do.
        os.mkdir(os.path.join(deps, "extra"))
        with open(os.path.join(deps, "extra", "pthmod.py"), "w") as f:
            f.write("X = 7\n")
        with open(os.path.join(deps, "layer.pth"), "w") as f:
            f.write("extra\n")
        source = '''
            import sys, sysconfig, layerpkg, pthmod
            def main(args):
                site_dirs = [i for i, p in enumerate(sys.path) if p.endswith(("site-packages", "dist-packages"))]
                stdlib = sys.path.index(sysconfig.get_paths()["stdlib"])  # the agent's Python's
                return {"where": layerpkg.WHERE, "x": pthmod.X, "at": sys.path.index(args["deps"]),
                        "first_site": site_dirs[0] if site_dirs else None, "stdlib": stdlib}
            '''
        conn = self.serve(source, env={"ILUVATAR_DEPS_DIR": deps})
        r = conn.call({"deps": deps})
        self.assertIs(r["ok"], True, r)
        r = r["result"]
        self.assertEqual((r["where"], r["x"]), ("layer", 7), r)
        self.assertGreater(r["at"], r["stdlib"], "after the standard library: %s" % r)
        if r["first_site"] is not None:
            self.assertLess(r["at"], r["first_site"], "before the host's site directories: %s" % r)

    def test_missing_dependency_layer_fails_the_import(self):
        agent = self.start("def main(args):\n    return 1\n", env={"ILUVATAR_DEPS_DIR": "/nonexistent/deps"})
        err = self.assert_import_error(agent, "ModuleNotFoundError")
        self.assertIn("/nonexistent/deps", err["message"])

    def test_without_a_layer_its_packages_are_not_importable(self):
        conn = self.serve("def main(args):\n    import layerpkg\n")
        self.assertEqual(conn.call({})["error"]["kind"], "ModuleNotFoundError")

    # --- the synthetic function -------------------------------------------------------------------

    def test_synthetic(self):
        agent = self.start(copy_from=os.path.join(FUNCTIONS, "synthetic"), env={"SYNTHETIC_IMPORT_MS": "50"})
        t = time.monotonic()
        agent.wait_ready()
        self.assertGreaterEqual(time.monotonic() - t, 0.05)
        conn = agent.connect()
        self.addCleanup(conn.close)
        r = conn.call({"compute_ms": 20, "sleep_ms": 10, "memory_mb": 8, "output_kb": 4096})
        self.assertIs(r["ok"], True, r)
        body = r["result"]["body"]
        self.assertGreaterEqual(body["compute_ms"], 20)
        self.assertGreaterEqual(body["slept_ms"], 10)
        self.assertEqual(body["memory_mb"], 8)
        self.assertGreaterEqual(r["end_us"] - r["start_us"], 30_000)
        self.assertGreaterEqual(os.path.getsize(agent.stdout.name), 4096 * 1024)  # stdout went to the log
        self.assertEqual(conn.call({})["result"], {"body": {"compute_ms": 0.0, "memory_mb": 0, "slept_ms": 0.0}})
        r = conn.call({"fail": "on purpose"})
        self.assertEqual((r["error"]["kind"], r["error"]["message"]), ("RuntimeError", "on purpose"))
        # resident_mb is kept across calls: the first call that asks pays, later ones do not shrink it.
        self.assertEqual(conn.call({"resident_mb": 4})["result"]["body"]["resident_mb"], 4)
        self.assertEqual(conn.call({"resident_mb": 2})["result"]["body"]["resident_mb"], 4)
        self.assertEqual(conn.call({"resident_mb": 6})["result"]["body"]["resident_mb"], 6)
        for bad in [{"compute_ms": "5"}, {"sleep_ms": -1}, {"memory_mb": True}, {"output_kb": 1.5}, {"resident_mb": -2}]:
            r = conn.call(bad)
            self.assertEqual(r["error"]["kind"], "ValueError", bad)
            self.assertIn(next(iter(bad)), r["error"]["message"])

    def test_sigterm_during_slow_import(self):
        agent = self.start(copy_from=os.path.join(FUNCTIONS, "synthetic"), env={"SYNTHETIC_IMPORT_MS": "60000"})
        time.sleep(0.3)
        agent.proc.send_signal(signal.SIGTERM)
        self.assertEqual(agent.proc.wait(timeout=2), 0)
        self.assertFalse(os.path.exists(agent.sock_path))

    def test_synthetic_bad_import_ms(self):
        agent = self.start(copy_from=os.path.join(FUNCTIONS, "synthetic"), env={"SYNTHETIC_IMPORT_MS": "soon"})
        self.assert_import_error(agent, "ValueError")

    # --- latency (printed, not asserted: it depends on the machine) --------------------------------

    def test_latency(self):
        conn = self.serve("def main(args):\n    return 1\n")
        line = b'{"args":{},"tid":"x"}\n'
        send, readline = conn.sock.sendall, conn.reader.readline
        for _ in range(200):
            send(line)
            readline()
        samples = []
        for _ in range(2000):
            t = time.perf_counter_ns()
            send(line)
            readline()
            samples.append(time.perf_counter_ns() - t)
        samples.sort()
        p50, p99 = samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000
        print("\nagent round trip (trivial function, 2000 calls): p50 %.1f us, p99 %.1f us" % (p50, p99),
              file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
