# FunctionBench "model training" (scikit-learn there): logistic regression trained by batch
# gradient descent on generated data, with numpy (from requirements.txt); accuracy measured on
# held-out samples. Arguments: samples (default 4000), features (default 20), epochs (default
# 200), seed (default 1).
import time

import numpy as np


def dataset(rng, samples, features):
    # Two Gaussian classes whose means differ along every feature: learnable, not trivially.
    y = rng.integers(0, 2, samples)
    shift = np.where(y[:, None] == 1, 0.5, -0.5)
    x = rng.normal(size=(samples, features)) + shift
    return x, y


def main(args):
    samples, features = int(args.get("samples", 4000)), int(args.get("features", 20))
    epochs = int(args.get("epochs", 200))
    if not (10 <= samples <= 10**6 and 1 <= features <= 1000 and 1 <= epochs <= 100000):
        raise ValueError("samples in 10..1000000, features in 1..1000, epochs in 1..100000")
    rng = np.random.default_rng(int(args.get("seed", 1)))
    x, y = dataset(rng, samples, features)
    cut = samples * 4 // 5
    (xt, yt), (xv, yv) = (x[:cut], y[:cut]), (x[cut:], y[cut:])
    w, b = np.zeros(features), 0.0
    t = time.perf_counter()
    for _ in range(epochs):
        p = 1.0 / (1.0 + np.exp(-(xt @ w + b)))
        w -= 0.5 * (xt.T @ (p - yt)) / cut
        b -= 0.5 * float(np.mean(p - yt))
    ms = (time.perf_counter() - t) * 1000
    p = 1.0 / (1.0 + np.exp(-(xt @ w + b)))
    loss = float(-np.mean(yt * np.log(p + 1e-12) + (1 - yt) * np.log(1 - p + 1e-12)))
    accuracy = float(np.mean(((xv @ w + b) > 0) == (yv == 1)))
    return {"body": {"samples": samples, "features": features, "epochs": epochs, "loss": loss,
                     "test_accuracy": accuracy, "ms": round(ms, 3)}}
