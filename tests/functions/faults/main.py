# Misbehaving function for the end-to-end fault tests. Each argument asks for one fault;
# with none, it answers with its container's hostname (unique per container). Arguments:
#   raise: MESSAGE      raise ValueError(MESSAGE)
#   exit: CODE          kill the agent process itself mid-call (os._exit, no response)
#   alloc_mb: N         allocate and touch N MB, then return
#   sleep_s: S          sleep S seconds, then return
#   print_mb: N         write N MB to stdout, then return
#   non_json: true      return a value JSON cannot encode
import os
import socket
import sys
import time


def main(args):
    if "raise" in args:
        raise ValueError(str(args["raise"]))
    if "exit" in args:
        sys.stdout.flush()
        os._exit(int(args["exit"]))
    if "alloc_mb" in args:
        buf = bytearray(int(args["alloc_mb"]) * 1024 * 1024)
        buf[::4096] = b"\x01" * len(range(0, len(buf), 4096))  # touch every page
        return {"allocated_mb": len(buf) // (1024 * 1024)}
    if "sleep_s" in args:
        time.sleep(float(args["sleep_s"]))
        return {"slept_s": args["sleep_s"]}
    if "print_mb" in args:
        line = "y" * 1023 + "\n"
        block = line * 1024  # 1 MiB
        for _ in range(int(args["print_mb"])):
            sys.stdout.write(block)
        sys.stdout.flush()
        return {"printed_mb": int(args["print_mb"])}
    if args.get("non_json"):
        return {"a set": {1, 2, 3}}
    return {"fine": True, "container": socket.gethostname()}
