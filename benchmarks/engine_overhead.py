"""Engine overhead on the compute-bound demo MLP (256->1024->1024->10), one run, one process.

Measures side by side:
  1. raw ``session.run`` items/s at batch 1 and at batch 32 (the limit batching can reach);
  2. no batching: each request run alone from a small thread pool;
  3. the seed design, ported faithfully (``benchmarks/seed_port.py``);
  4. Batchlab's engine (deadline policy, and the adaptive policy);
as capacity with one-row requests under open-loop load (latency from the intended send
time), plus the latency each adds at low load.

Usage:
    .venv/bin/python -m benchmarks.engine_overhead            # full run, ~5 minutes
    .venv/bin/python -m benchmarks.engine_overhead --quick    # shorter trials
Writes benchmarks/results/engine_overhead.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks.common import (RESULTS, batchlab_systems, direct_system, find_capacity,
                               machine_info, make_session, no_batching_system, open_trial,
                               raw_items_per_s, raw_limit, seed_system)
from core import build_demo_model
from core.config import default_intra_op_threads
from core.serving import tune_for_serving


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter trials (noisier)")
    ap.add_argument("--threads", type=int, default=default_intra_op_threads(),
                    help="ONNX Runtime intra-op threads of every system under test "
                         "(default: the engine's, all cores but one)")
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--no-tune", action="store_true",
                    help="keep CPython's 5 ms GIL switch interval (see docs/benchmarks.md)")
    args = ap.parse_args()
    trial_s = 1.0 if args.quick else 2.0
    p99_limit_ms = 50.0
    log = print
    tuned = None if args.no_tune else tune_for_serving()

    data = build_demo_model("mlp")
    session = make_session(data, args.threads)
    x1 = np.random.default_rng(1).standard_normal((1, 256)).astype(np.float32)
    results: dict = {"machine": machine_info(args.threads),
                     "settings": {"max_batch_size": args.max_batch,
                                  "max_wait_ms": args.max_wait_ms, "trial_s": trial_s,
                                  "p99_limit_ms": p99_limit_ms, "process_tuning": tuned}}
    log("raw session.run ...")
    raw1, lat1 = raw_items_per_s(session, {"x": x1}, trial_s * 2)
    feed32 = {"x": np.repeat(x1, args.max_batch, 0)}
    limit, limit_threads, by_threads = raw_limit(data, feed32, trial_s * 2, log=log)
    # At the systems' own thread count: measured above unless --threads exceeds the cores.
    raw32, lat32 = (by_threads.get(args.threads)
                    or raw_items_per_s(session, feed32, trial_s * 2))
    results["raw"] = {"batch1_items_s": raw1, "batch1_ms": lat1,
                      "batch32_items_s": raw32, "batch32_ms": lat32,
                      "limit_items_s": limit, "limit_threads": limit_threads}
    log(f"  batch 1: {raw1:,.0f} items/s ({lat1:.3f} ms); batch {args.max_batch}: "
        f"{raw32:,.0f} items/s ({lat32:.3f} ms); limit {limit:,.0f} items/s "
        f"({limit_threads} thread(s))")

    # The direct inline call comes first: its low-load latency is the floor that "added
    # latency" is measured from (a lone run after idle time is slower than in a tight loop).
    systems = [direct_system(session, "x"), no_batching_system(session, "x"),
               seed_system(session, "x", args.max_batch, args.max_wait_ms),
               *batchlab_systems(data, args.threads, args.max_batch, args.max_wait_ms,
                                 policies=("deadline", "adaptive"))]
    rows = {}
    floor_p50 = None
    for sysm in systems:
        name, submit = sysm.name, sysm.submit
        log(f"{name}: low-load latency at 100 rps ...")
        low = open_trial(submit, x1, 100.0, trial_s * 2)
        if floor_p50 is None:
            floor_p50 = low["p50_ms"]
        log(f"  p50 {low['p50_ms']:.3f} ms, p99 {low['p99_ms']:.3f} ms")
        log(f"{name}: capacity search ...")
        cap, at_cap = find_capacity(submit, x1, 1000.0, trial_s, p99_limit_ms, log=log)
        rows[name] = {"capacity_rps": cap, "low_load_p50_ms": low["p50_ms"],
                      "low_load_p99_ms": low["p99_ms"],
                      "added_p50_ms": low["p50_ms"] - floor_p50,
                      "p99_at_capacity_ms": at_cap["p99_ms"] if at_cap else None}
        log(f"  capacity {cap:,.0f} rps")
    for sysm in systems:
        sysm.close()
    results["systems"] = rows

    eng = rows["Batchlab engine (deadline)"]
    seed_cap = rows["seed design (port)"]["capacity_rps"]
    results["targets"] = {
        "engine_over_seed": eng["capacity_rps"] / seed_cap if seed_cap else None,
        "engine_over_raw32": eng["capacity_rps"] / limit,
        "added_p50_ms": eng["added_p50_ms"],
        "added_p50_budget_ms": args.max_wait_ms + 0.5,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
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
