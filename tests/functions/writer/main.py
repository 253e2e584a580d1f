# Writes where it is told, to show the bounds on what a function can write on the host.
import os
import sys


def main(args):
    if "print_mb" in args:
        chunk = "x" * (1024 * 1024 - 1) + "\n"
        for _ in range(int(args["print_mb"])):
            sys.stdout.write(chunk)
        sys.stdout.flush()
        return {"printed_mb": args["print_mb"]}
    path = os.path.join(os.path.dirname(os.environ["ILUVATAR_SOCKET"]), "fill")
    try:
        with open(path, "wb") as f:
            f.write(b"x" * (int(args["fill_kb"]) * 1024))
        return {"wrote": True}
    except OSError as e:
        return {"wrote": False, "errno": e.errno}
