# FunctionBench "float operation": sin, cos and sqrt over a range of numbers (standard library).
# Arguments: n (how many numbers, default 100000).
import math
import time


def main(args):
    n = int(args.get("n", 100_000))
    if n < 0 or n > 100_000_000:
        raise ValueError("n must be in 0..100000000, got %d" % n)
    t = time.perf_counter()
    total = 0.0
    for i in range(n):
        x = float(i)
        total += math.sin(x) + math.cos(x) + math.sqrt(x)
    ms = (time.perf_counter() - t) * 1000
    return {"body": {"n": n, "sum": total, "ms": round(ms, 3)}}
