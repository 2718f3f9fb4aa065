"""What idle models cost: process CPU and threads with N loaded, idle models, and a busy
model's latency beside them against alone (issue 25).

Loads ``--models`` copies of the demo ``tiny`` model (distinct names), waits for start-up to
settle (and their threads to park), then measures the process's CPU over ``--idle-s``
seconds with nothing sent, and its threads; then a
closed loop of 4 client threads on ``mlp`` for ``--busy-s`` seconds, beside the idle models
and (in the same run, before loading them) alone. Uses the engine's public contract only,
so another tree can run it: ``cd OTHER_TREE && python /path/to/benchmarks/idle_models.py``.

Usage:
    .venv/bin/python -m benchmarks.idle_models [--models 1000] [--idle-s 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.getcwd())  # the tree it is run from

from core import Engine, EngineConfig, build_demo_model  # noqa: E402


def busy_p50(engine: Engine, seconds: float) -> float:
    x = engine.sample_input("mlp")
    lat: list[float] = []
    stop = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < stop:
            t = time.perf_counter()
            engine.predict("mlp", x)
            lat.append((time.perf_counter() - t) * 1000)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statistics.median(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--idle-s", type=float, default=30.0)
    ap.add_argument("--busy-s", type=float, default=5.0)
    args = ap.parse_args()
    engine = Engine(EngineConfig(demo_models=False, cache_size=1024))
    engine.load_model(build_demo_model("mlp"), name="mlp")
    alone = busy_p50(engine, args.busy_s)
    data = build_demo_model("tiny")
    t0 = time.monotonic()
    for i in range(args.models):
        engine.load_model(data, name=f"idle-{i}")
    loaded_s = time.monotonic() - t0
    threads_loaded = threading.active_count()
    # Idle models park their threads after 30 s (core/batching/parking.py): the steady
    # idle state is measured once they have (the parking itself is a one-off).
    t1 = time.monotonic()
    while threading.active_count() > 50 and time.monotonic() - t1 < 120:
        time.sleep(0.5)
    parked_after_s = time.monotonic() - t0
    time.sleep(2.0)
    c0, w0 = time.process_time(), time.monotonic()
    time.sleep(args.idle_s)
    cpu = (time.process_time() - c0) / (time.monotonic() - w0)
    beside = busy_p50(engine, args.busy_s)
    out = {"models": args.models, "load_s": round(loaded_s, 1),
           # (idle models park their threads after 30 s: core/batching/parking.py)
           "threads_just_loaded": threads_loaded, "threads": threading.active_count(),
           "parked_after_s": round(parked_after_s, 1),
           "idle_cpu_pct_of_a_core": round(100 * cpu, 2),
           "busy_p50_alone_ms": round(alone, 3), "busy_p50_beside_ms": round(beside, 3),
           "p50_ratio": round(beside / alone, 3)}
    print(json.dumps(out))
    engine.close()


if __name__ == "__main__":
    main()
