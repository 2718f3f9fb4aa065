"""Engine overhead on the compute-bound demo MLP (256->1024->1024->10), one run, one process.

Measures side by side:
  1. raw ``session.run`` items/s at batch 1 and at batch 32 (the limit batching can reach);
  2. no batching: each request run alone from a small thread pool;
  3. the seed design, ported faithfully (``benchmarks/seed_port.py``);
  4. Batchlab's engine (deadline policy, and the adaptive policy);
as capacity with one-row requests under open-loop load (latency from the intended send
time), plus the latency each adds at low load.

Usage:
    .venv/bin/python -m benchmarks.engine_overhead            # full run, ~2-3 minutes
    .venv/bin/python -m benchmarks.engine_overhead --quick    # shorter trials
Writes benchmarks/results/engine_overhead.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.openloop import find_capacity, run_open_loop
from benchmarks.seed_port import SeedBatcher
from core import BatchConfig, Engine, EngineConfig, SessionConfig, build_demo_model
from core.config import default_intra_op_threads

RESULTS = Path(__file__).parent / "results"


def raw_items_per_s(session: ort.InferenceSession, batch: int, seconds: float) -> tuple[float, float]:
    x = np.random.default_rng(0).standard_normal((batch, 256)).astype(np.float32)
    for _ in range(50):
        session.run(None, {"x": x})
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        session.run(None, {"x": x})
        n += 1
    elapsed = time.perf_counter() - t0
    return n * batch / elapsed, elapsed / n * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter trials (noisier)")
    ap.add_argument("--threads", type=int, default=default_intra_op_threads(),
                    help="ONNX Runtime intra-op threads of every system under test "
                         "(default: the engine's, all cores but one)")
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--max-batch", type=int, default=32)
    args = ap.parse_args()
    trial_s = 1.0 if args.quick else 2.0
    p99_limit_ms = 50.0
    log = print

    data = build_demo_model("mlp")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    x1 = np.random.default_rng(1).standard_normal((1, 256)).astype(np.float32)

    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "onnxruntime": ort.__version__, "platform": platform.platform(),
                                 "intra_op_threads": args.threads},
                     "settings": {"max_batch_size": args.max_batch, "max_wait_ms": args.max_wait_ms,
                                  "trial_s": trial_s, "p99_limit_ms": p99_limit_ms}}
    log("raw session.run ...")
    raw1, lat1 = raw_items_per_s(session, 1, trial_s * 2)
    raw32, lat32 = raw_items_per_s(session, args.max_batch, trial_s * 2)
    # "The limit" is the best batch-32 rate this machine reaches with any thread count,
    # so no system is flattered by a slow raw baseline.
    limit, limit_threads = raw32, args.threads
    for t in range(1, (os.cpu_count() or 1) + 1):
        if t == args.threads:
            continue
        o = ort.SessionOptions()
        o.intra_op_num_threads = t
        o.inter_op_num_threads = 1
        alt = ort.InferenceSession(data, o, providers=["CPUExecutionProvider"])
        rate, _ = raw_items_per_s(alt, args.max_batch, trial_s * 2)
        log(f"  batch {args.max_batch} with {t} thread(s): {rate:,.0f} items/s")
        if rate > limit:
            limit, limit_threads = rate, t
    results["raw"] = {"batch1_items_s": raw1, "batch1_ms": lat1,
                      "batch32_items_s": raw32, "batch32_ms": lat32,
                      "limit_items_s": limit, "limit_threads": limit_threads}
    log(f"  batch 1: {raw1:,.0f} items/s ({lat1:.3f} ms); batch {args.max_batch}: "
        f"{raw32:,.0f} items/s ({lat32:.3f} ms); limit {limit:,.0f} items/s "
        f"({limit_threads} thread(s))")

    systems = {}

    def direct(x: np.ndarray) -> Future:
        fut: Future = Future()
        fut.set_result(session.run(None, {"x": x}))
        return fut

    # Calling session.run inline from the sender: the latency floor at low load (cold
    # caches and idle CPUs make a lone run slower than in a tight loop).
    systems["direct session.run (inline)"] = (direct, lambda: None)

    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="nobatch")
    systems["no batching (4-thread pool)"] = (
        lambda x: pool.submit(session.run, None, {"x": x}), pool.shutdown)

    seed = SeedBatcher(session, "x", args.max_batch, args.max_wait_ms)
    systems["seed design (port)"] = (seed.submit, seed.close)

    engine = Engine(EngineConfig(session=SessionConfig(intra_op_threads=args.threads),
                                 batch=BatchConfig(max_batch_size=args.max_batch,
                                                   max_wait_ms=args.max_wait_ms,
                                                   max_queue=100_000)),
                    demo_models=False)
    engine.load_model(data, name="mlp")
    systems["Batchlab engine (deadline)"] = (lambda x: engine.submit("mlp", x), engine.close)
    engine.load_model(data, name="mlp-adaptive",
                      batch=BatchConfig(max_batch_size=args.max_batch,
                                        max_wait_ms=args.max_wait_ms, policy="adaptive",
                                        max_queue=100_000))
    systems["Batchlab engine (adaptive)"] = (lambda x: engine.submit("mlp-adaptive", x),
                                             lambda: None)

    rows = {}
    floor_p50 = None
    for name, (submit, _) in systems.items():
        log(f"{name}: low-load latency at 100 rps ...")
        low = run_open_loop(submit, x1, 100.0, trial_s * 2)
        if floor_p50 is None:
            floor_p50 = low.p50_ms
        log(f"  p50 {low.p50_ms:.3f} ms, p99 {low.p99_ms:.3f} ms")
        log(f"{name}: capacity search ...")
        cap, at_cap = find_capacity(submit, x1, 1000.0, trial_s, p99_limit_ms, log=log)
        rows[name] = {"capacity_rps": cap, "low_load_p50_ms": low.p50_ms,
                      "low_load_p99_ms": low.p99_ms,
                      "added_p50_ms": low.p50_ms - floor_p50,
                      "p99_at_capacity_ms": at_cap.p99_ms if at_cap else None}
        log(f"  capacity {cap:,.0f} rps")
    for _, close in systems.values():
        close()
    results["systems"] = rows

    eng = rows["Batchlab engine (deadline)"]
    seed_cap = rows["seed design (port)"]["capacity_rps"]
    results["targets"] = {
        "engine_over_seed": eng["capacity_rps"] / seed_cap if seed_cap else None,
        "engine_over_raw32": eng["capacity_rps"] / limit,
        "added_p50_ms": eng["added_p50_ms"],
        "added_p50_budget_ms": args.max_wait_ms + 0.5,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "engine_overhead.json").write_text(json.dumps(results, indent=2))

    print(f"\nONNX Runtime intra-op threads: {args.threads}; the limit is raw batch-"
          f"{args.max_batch} at {limit_threads} thread(s): {limit:,.0f} items/s")
    print("\n| system | capacity (1-row req/s) | × the limit | low-load p50 | added p50 |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['capacity_rps']:,.0f} | {r['capacity_rps'] / limit:.2f} | "
              f"{r['low_load_p50_ms']:.2f} ms | {r['added_p50_ms']:.2f} ms |")
    print(f"| raw session.run, batch 1 | {raw1:,.0f} items/s | {raw1 / limit:.2f} | "
          f"{lat1:.3f} ms | — |")
    print(f"| raw session.run, batch {args.max_batch} | {raw32:,.0f} items/s | "
          f"{raw32 / limit:.2f} | {lat32:.3f} ms | — |")
    t = results["targets"]
    print(f"\nadded p50 = low-load p50 minus the direct inline call's ({floor_p50:.3f} ms)")
    print(f"engine / seed port: {t['engine_over_seed']:.2f}x (target >= 2)")
    print(f"engine / the limit: {t['engine_over_raw32']:.2f}x (target >= 0.25)")
    print(f"added p50 at low load: {t['added_p50_ms']:.3f} ms "
          f"(target <= max_wait_ms + 0.5 = {t['added_p50_budget_ms']:.1f} ms)")


if __name__ == "__main__":
    main()
