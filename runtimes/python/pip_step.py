# One step of building a function's dependency layer, run by the Ilúvatar worker: pip with the
# arguments given, in this process, its exit status then written to a file.
#
# Usage: python3 -I pip_step.py STATUS_FILE PIP_ARGS...
# The worker runs it twice: `download` on the host as an unprivileged user (wheels only, so no
# package code runs), then `install --no-index` inside a container without network. The status
# goes through a file because the worker does not learn the exit status of either process (a
# container's init is the launcher's child; a host child may be reaped by the worker's zombie
# sweep). STATUS_FILE is written last, atomically: its absence means the step did not finish.
import os
import runpy
import sys


def _status_of(exc):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints the message and exits 1
    return 1


def main():
    if len(sys.argv) < 3:
        print("usage: pip_step.py STATUS_FILE PIP_ARGS...", file=sys.stderr)
        return 2
    status_file = sys.argv[1]
    sys.argv = ["pip"] + sys.argv[2:]
    try:
        runpy.run_module("pip", run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as e:
        status = _status_of(e)
    except ImportError as e:
        print("pip is not installed for %s (%s): install it (Debian: python3-pip)" % (sys.executable, e),
              file=sys.stderr)
        status = 127
    sys.stdout.flush()
    sys.stderr.flush()
    tmp = status_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % status)
    os.rename(tmp, status_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
