"""A flood must fail fast, not make everyone wait: 10x overload with admission by deadline.

A model whose every batch costs ~20 ms (an ONNX ``Loop`` calibrated at start; up to 32
rows per batch) is first driven closed-loop to measure its capacity, then open-loop at
``--factor`` (10) times that for ``--seconds`` (10) with ``timeout_ms=500`` and a queue
bounded only by ``max_queue=100000`` (so what limits the queue is the deadline rule, not
the count). Reported: how many requests were refused at once (and how fast), how many of
the accepted ones succeeded within their timeout, and the goodput against the capacity.
The bars of issue #12: >= 95 % of accepted requests succeed, goodput >= 0.9x capacity.

``--busy N`` keeps N more processes spinning on the CPU from before the capacity is measured
to the end (issue #23's bar on a crowded machine: the same two figures).

Run: ``python -m benchmarks.overload [--busy 1]``; JSON in
``benchmarks/results/overload[-busy1].json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

from benchmarks.common import RESULTS, machine_info
from core import BatchConfig, Engine
from core.models import build_loop_model
from core.lab import closed_loop, open_loop
from core.serving import tune_for_serving


def calibrate(target_ms: float) -> tuple[int, float]:
    trips = 10_000
    for _ in range(4):
        s = ort.InferenceSession(build_loop_model(trips), providers=["CPUExecutionProvider"])
        x = np.zeros((32, 1), np.float32)
        s.run(None, {"x": x})
        t = time.perf_counter()
        for _ in range(5):
            s.run(None, {"x": x})
        ms = (time.perf_counter() - t) / 5 * 1000.0
        trips = max(100, int(trips * target_ms / ms))
    return trips, ms


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-ms", type=float, default=20.0)
    ap.add_argument("--factor", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--timeout-ms", type=float, default=500.0)
    ap.add_argument("--busy", type=int, default=0,
                    help="processes that keep a core busy from before the capacity is "
                         "measured until the end (issue #23: a crowded machine)")
    args = ap.parse_args(argv)
    tune_for_serving()
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.busy)]
    try:
        return _run(args)
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def _run(args: argparse.Namespace) -> dict:
    trips, ms = calibrate(args.batch_ms)
    print(f"model: Loop of {trips} trips, {ms:.1f} ms per batch of 32", flush=True)
    x = np.zeros((1, 1), np.float32)
    with Engine(demo_models=False) as engine:
        engine.load_model(build_loop_model(trips), name="slow", batch=BatchConfig(
            max_batch_size=32, max_wait_ms=2.0, max_queue=100_000,
            timeout_ms=args.timeout_ms))

        def submit(v):
            return engine.submit("slow", v)

        closed_loop(submit, lambda rng: x, 64, duration_s=2.0)  # warm, learn the cost
        cap = closed_loop(submit, lambda rng: x, 128, duration_s=5.0).summary()
        capacity = cap["achieved_rps"]
        print(f"capacity (closed loop, 128 clients): {capacity:.0f} req/s, "
              f"p99 {cap['p99_ms']:.0f} ms", flush=True)
        rate = capacity * args.factor
        res = open_loop(submit, lambda rng: x, rate, pattern="constant",
                        duration_s=args.seconds, seed=0, drain_s=30.0)
    f = res.frame
    refused = f[f["error"] == "OverloadedError"]
    accepted = f[f["error"] != "OverloadedError"]
    ok = accepted[accepted["ok"] & (accepted["latency_ms"] <= args.timeout_ms)]
    timed_out = accepted[accepted["error"] == "RequestTimeoutError"]
    refuse_ms = (refused["done_s"] - refused["sent_s"]) * 1000.0
    out = {
        "machine": machine_info(0), "args": vars(args), "trips": trips, "batch_ms": ms,
        "capacity_rps": capacity, "offered_rps": rate, "sent": len(f),
        "accepted": len(accepted), "refused": len(refused),
        "succeeded_in_time": len(ok), "timed_out": len(timed_out),
        "other_failures": int((~accepted["ok"]).sum()) - len(timed_out),
        "accepted_ok_share": len(ok) / len(accepted) if len(accepted) else float("nan"),
        "goodput_rps": len(ok) / res.duration_s,
        "refusal_p99_ms": float(refuse_ms.quantile(0.99)) if len(refused) else float("nan"),
        "accepted_p50_ms": float(ok["latency_ms"].quantile(0.5)) if len(ok) else float("nan"),
        "accepted_p99_ms": float(ok["latency_ms"].quantile(0.99)) if len(ok) else float("nan"),
    }
    out["goodput_over_capacity"] = out["goodput_rps"] / capacity if capacity else float("nan")
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=1, default=float))
    RESULTS.mkdir(exist_ok=True)
    name = "overload" + (f"-busy{args.busy}" if args.busy else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=1, default=float))
    return out


if __name__ == "__main__":
    main()
