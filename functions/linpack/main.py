# FunctionBench "linpack": solves a dense random system A x = b (numpy's LAPACK) and reports the
# rate in MFLOP/s as LINPACK counts it (2/3 n^3 + 2 n^2 operations) and the normalised residual
# ||A x - b|| / (||A|| ||x|| n eps), which LINPACK expects to be of order 1.
# Arguments: n (default 300), seed (default 1).
import time

import numpy as np


def main(args):
    n = int(args.get("n", 300))
    if n < 2 or n > 4000:
        raise ValueError("n must be in 2..4000, got %d" % n)
    rng = np.random.default_rng(int(args.get("seed", 1)))
    a = rng.random((n, n)) - 0.5
    b = rng.random(n) - 0.5
    t = time.perf_counter()
    x = np.linalg.solve(a, b)
    seconds = time.perf_counter() - t
    eps = np.finfo(float).eps
    norm = np.linalg.norm
    residual = float(norm(a @ x - b, np.inf) / (norm(a, np.inf) * norm(x, np.inf) * n * eps))
    flops = 2.0 / 3.0 * n**3 + 2.0 * n**2
    return {"body": {"n": n, "ms": round(seconds * 1000, 3), "mflops": round(flops / seconds / 1e6, 1),
                     "residual": residual}}
