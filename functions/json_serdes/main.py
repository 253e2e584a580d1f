# FunctionBench "JSON serialisation": a generated nested document dumped to text and loaded back
# (standard library). Arguments: records (default 2000), seed (default 1).
import json
import random
import time


def document(records, seed):
    rnd = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "ünïcødé", "\"quoted\""]
    return {
        "generated": True,
        "records": [
            {
                "id": i,
                "name": " ".join(rnd.choice(words) for _ in range(3)),
                "score": rnd.random() * 100,
                "tags": rnd.sample(words, 3),
                "nested": {"level": i % 7, "flags": [rnd.random() < 0.5 for _ in range(4)], "none": None},
            }
            for i in range(records)
        ],
    }


def main(args):
    records = int(args.get("records", 2000))
    if records < 0 or records > 1_000_000:
        raise ValueError("records must be in 0..1000000, got %d" % records)
    doc = document(records, int(args.get("seed", 1)))
    t = time.perf_counter()
    text = json.dumps(doc)
    back = json.loads(text)
    ms = (time.perf_counter() - t) * 1000
    return {"body": {"records": len(back["records"]), "bytes": len(text.encode()), "equal": back == doc,
                     "ms": round(ms, 3)}}
