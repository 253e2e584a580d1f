# Synthetic Ilúvatar function for load generation: burns CPU, sleeps, allocates memory, prints, fails on request.
#
# Environment: SYNTHETIC_IMPORT_MS (default 0) burns that much CPU at import to model a cold-start cost.
# Arguments (all optional): compute_ms, sleep_ms, memory_mb, resident_mb (numbers >= 0), output_kb (integer >= 0),
# fail. memory_mb is allocated and touched on every call and held while computing and sleeping, so it counts in
# the container's footprint for the whole call; resident_mb is a working set kept across calls (allocated and
# touched by the first call that asks for it, grown by a later call that asks for more), so only a container's
# first call pays for it, as a real function's loaded data. `fail` raises after the work is done, so a failing
# call still costs what was asked.
import math
import os
import sys
import time

_MB = 1024 * 1024
_PAGE = 4096


def _burn(ms):
    # Busy loop, not sleep: the point is to consume CPU, as real work would.
    start = time.perf_counter()
    deadline = start + ms / 1000.0
    while time.perf_counter() < deadline:
        pass
    return (time.perf_counter() - start) * 1000.0


def _number(args, key):
    value = args.get(key, 0)
    # bool is an int subclass, but {"compute_ms": true} is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{key} must be a finite number >= 0, got {value!r} ({type(value).__name__})")
    return value


def _import_ms():
    raw = os.environ.get("SYNTHETIC_IMPORT_MS", "0")
    try:
        ms = float(raw)
    except ValueError:
        ms = -1.0
    if not math.isfinite(ms) or ms < 0:
        raise ValueError(f"SYNTHETIC_IMPORT_MS must be a finite number >= 0, got {raw!r}")
    return ms


IMPORT_MS = _burn(_import_ms())

# The working set kept across calls (resident_mb).
_resident = bytearray(0)


def _touched(mb):
    buf = bytearray(int(mb * _MB))
    # bytearray's zeroed pages may be mapped lazily: write one byte per page so they are really resident.
    count = len(range(0, len(buf), _PAGE))
    buf[::_PAGE] = b"\x01" * count
    return buf


def main(args):
    # Validate everything first, so that a bad argument costs nothing.
    compute_ms = _number(args, "compute_ms")
    sleep_ms = _number(args, "sleep_ms")
    memory_mb = _number(args, "memory_mb")
    resident_mb = _number(args, "resident_mb")
    output_kb = args.get("output_kb", 0)
    if isinstance(output_kb, bool) or not isinstance(output_kb, int) or output_kb < 0:
        raise ValueError(f"output_kb must be an integer >= 0, got {output_kb!r} ({type(output_kb).__name__})")
    fail = args.get("fail")

    global _resident
    if int(resident_mb * _MB) > len(_resident):
        _resident = _touched(resident_mb)
    buf = _touched(memory_mb) if memory_mb else None

    computed = _burn(compute_ms) if compute_ms else 0.0

    slept = 0.0
    if sleep_ms:
        t = time.perf_counter()
        time.sleep(sleep_ms / 1000.0)
        slept = (time.perf_counter() - t) * 1000.0

    if output_kb:
        line = "x" * 1023 + "\n"  # 1 KiB per line
        chunk = line * 64
        for _ in range(output_kb // 64):
            sys.stdout.write(chunk)
        sys.stdout.write(line * (output_kb % 64))
        sys.stdout.flush()

    del buf
    if fail:
        raise RuntimeError(str(fail))
    body = {"compute_ms": round(computed, 3), "memory_mb": memory_mb, "slept_ms": round(slept, 3)}
    if resident_mb:
        body["resident_mb"] = len(_resident) / _MB
    return {"body": body}
