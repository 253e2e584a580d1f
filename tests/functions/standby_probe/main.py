# Reports what a function given a standby container sees: its folder (read-only), the
# environment its registration set, and the memory limit the kernel applies to it.
import os


def main(args):
    try:
        open("/function/written", "w").close()
        wrote = True
    except OSError:
        wrote = False
    return {
        "files": sorted(os.listdir("/function")),
        "wrote_function_dir": wrote,
        "word": os.environ.get("PROBE_WORD"),
        "name": args.get("name"),
    }
