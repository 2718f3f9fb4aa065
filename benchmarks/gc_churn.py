"""How often the garbage collector runs in the engine's process, and what it costs the tail.

An untuned process (CPython's default thresholds: a young collection after 700 net new
container objects) runs the closed loop of issue 22 (MLP, ``max_batch_size=32``,
``max_wait_ms=5``, 64 client threads, one-row requests) and counts collections per
request and the time spent in them (``gc.callbacks``); then Poisson arrivals at
``--rate`` for ``--seconds`` (``core.lab.open_loop``): achieved rate, errors, p50/p99.

Only the engine's public contract is used, so another tree can run it:
``cd OTHER_TREE && python /path/to/benchmarks/gc_churn.py``.

Usage:
    .venv/bin/python -m benchmarks.gc_churn [--rate 20000] [--seconds 8]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.getcwd())  # the tree it is run from

from core import Engine, EngineConfig, build_demo_model  # noqa: E402
from core.lab import open_loop  # noqa: E402


def closed_loop_gc(engine: Engine, x, seconds: float, clients: int = 64) -> dict:
    stats = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
    started: list[float] = []

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            s = stats[info["generation"]]
            s[0] += 1
            s[1] += time.perf_counter() - started.pop()

    stop = threading.Event()
    counts = [0] * clients

    def client(i: int) -> None:
        n = 0
        while not stop.is_set():
            engine.submit("mlp", x).result()
            n += 1
        counts[i] = n

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    gc.collect()
    gc.callbacks.append(on_gc)
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    gc.callbacks.remove(on_gc)
    n = sum(counts)
    return {"requests": n, "req_per_s": n / wall,
            "collections_per_1k_requests": sum(s[0] for s in stats.values()) / n * 1000,
            "gc_ms_per_s": sum(s[1] for s in stats.values()) / wall * 1000,
            "full_collections": stats[2][0],
            "full_collection_ms_mean": None if not stats[2][0] else stats[2][1] / stats[2][0] * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=20000.0)
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    kw = {"probe_models": False} if "probe_models" in EngineConfig.__dataclass_fields__ else {}
    engine = Engine(EngineConfig(demo_models=False, **kw))
    engine.load_model(build_demo_model("mlp"), name="mlp")
    engine.configure("mlp", max_batch_size=32, max_wait_ms=5.0)
    x = engine.sample_input("mlp", rows=1)
    for _ in range(300):
        engine.submit("mlp", x).result()
    out = {"tree": os.getcwd(), "closed": closed_loop_gc(engine, x, args.seconds)}
    r = open_loop(lambda a: engine.submit("mlp", a), lambda rng: x, args.rate,
                  pattern="poisson", duration_s=args.seconds)
    s = r.summary()
    out["open"] = {"rate": args.rate, **{k: s[k] for k in
                                         ("achieved_rps", "error_rate", "p50_ms", "p99_ms")}}
    engine.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
