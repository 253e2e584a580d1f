# FunctionBench "matmul": the product of two random n x n matrices (numpy, from requirements.txt).
# Arguments: n (default 300), seed (default 1). The result is checked with an identity that does
# not need the product itself: (A @ B) @ v == A @ (B @ v).
import time

import numpy as np


def main(args):
    n = int(args.get("n", 300))
    if n < 1 or n > 4000:
        raise ValueError("n must be in 1..4000, got %d" % n)
    rng = np.random.default_rng(int(args.get("seed", 1)))
    a, b = rng.random((n, n)), rng.random((n, n))
    t = time.perf_counter()
    c = a @ b
    ms = (time.perf_counter() - t) * 1000
    v = rng.random(n)
    error = float(np.max(np.abs(c @ v - a @ (b @ v))) / max(1.0, float(np.max(np.abs(c @ v)))))
    return {"body": {"n": n, "ms": round(ms, 3), "trace": float(np.trace(c)), "relative_error": error}}
