# Tests for pip_step.py (pip run in-process, its exit status written to a file), as the worker
# runs it: a real interpreter, real pip, no network needed.
# From the repository root: python3 -m unittest discover -s runtimes/python -p 'test_*.py'
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
STEP = os.path.join(HERE, "pip_step.py")
PYTHON = os.environ.get("ILUVATAR_TEST_PYTHON") or (
    "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable)


def has_pip():
    return subprocess.run([PYTHON, "-c", "import pip"], capture_output=True).returncode == 0


class PipStepTest(unittest.TestCase):
    def run_step(self, *args):
        d = tempfile.mkdtemp(prefix="ilu-pipstep-")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", d]))
        status = os.path.join(d, "status")
        p = subprocess.run([PYTHON, "-I", STEP, status] + list(args), capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)  # the step itself always ends normally
        self.assertFalse(os.path.exists(status + ".tmp"))
        with open(status) as f:
            return int(f.read()), p.stdout + p.stderr

    @unittest.skipUnless(has_pip(), "pip is not installed for this Python")
    def test_success_and_failure_statuses_are_written(self):
        code, out = self.run_step("--version")
        self.assertEqual(code, 0)
        self.assertIn("pip ", out)
        code, out = self.run_step("install", "--no-index", "--target", "/nonexistent-dir", "surely-not-a-package-xyz")
        self.assertNotEqual(code, 0)
        self.assertIn("surely-not-a-package-xyz", out)
        code, _ = self.run_step("no-such-command")
        self.assertNotEqual(code, 0)

    def test_usage_error_writes_nothing(self):
        p = subprocess.run([PYTHON, "-I", STEP], capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)
        self.assertIn("usage", p.stderr)


if __name__ == "__main__":
    unittest.main()
