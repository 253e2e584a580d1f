# FunctionBench "compression": generated text compressed and decompressed with zlib (gzip's
# algorithm), bz2 and lzma (standard library); each round trip is checked.
# Arguments: size_kb (default 256), seed (default 1).
import bz2
import lzma
import random
import time
import zlib


def text(size, seed):
    rnd = random.Random(seed)
    vocabulary = [("".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))))
                  for _ in range(500)]
    out, total = [], 0
    while total < size:
        word = rnd.choice(vocabulary)
        out.append(word)
        total += len(word) + 1
    return " ".join(out).encode()[:size]


def main(args):
    size_kb = int(args.get("size_kb", 256))
    if size_kb < 1 or size_kb > 65536:
        raise ValueError("size_kb must be in 1..65536, got %d" % size_kb)
    data = text(size_kb * 1024, int(args.get("seed", 1)))
    out = {}
    for name, (compress, decompress) in {"zlib": (zlib.compress, zlib.decompress),
                                         "bz2": (bz2.compress, bz2.decompress),
                                         "lzma": (lzma.compress, lzma.decompress)}.items():
        t = time.perf_counter()
        packed = compress(data)
        ok = decompress(packed) == data
        out[name] = {"bytes": len(packed), "ratio": round(len(data) / len(packed), 3), "ok": ok,
                     "ms": round((time.perf_counter() - t) * 1000, 3)}
    return {"body": {"input_bytes": len(data), "algorithms": out}}
