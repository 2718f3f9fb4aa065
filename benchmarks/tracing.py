"""What tracing costs: the engine's capacity with the trace on and off (issue 15's bar: the
trace on by default costs <= 3 % of capacity).

Two engines in one process, one with ``EngineConfig(trace_requests=0)``, serve the MLP
(max batch 32, max wait 2 ms) to 64 closed-loop clients (one-row requests, each client
sending its next request when the last is answered: the engine's saturated throughput);
trials alternate on/off ``--pairs`` times so both see the same machine. Reported: the
median throughput of each and their ratio, and p50 under saturation.

Run: ``python -m benchmarks.tracing [--seconds 3] [--pairs 5]``; JSON to
``benchmarks/results/tracing.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np

from benchmarks.common import RESULTS, closed_trial, machine_info
from core import Engine, EngineConfig
from core.serving import tune_for_serving


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--clients", type=int, default=64)
    args = ap.parse_args()
    tune_for_serving()
    engines = {"on": Engine(), "off": Engine(EngineConfig(trace_requests=0))}
    rows = []
    try:
        for e in engines.values():
            e.configure("mlp", max_batch_size=32, max_wait_ms=2.0)
            e.warmup("mlp", iterations=5)
        x = engines["on"].sample_input("mlp", rows=1)
        for k in range(args.pairs):
            for name in (("on", "off") if k % 2 == 0 else ("off", "on")):
                e = engines[name]
                s = closed_trial(lambda v, e=e: e.submit("mlp", v), x, args.clients,
                                 args.seconds)
                rows.append({"trace": name, "achieved_rps": s["achieved_rps"],
                             "p50_ms": s["p50_ms"], "failed": s["failed"]})
                print(f"pair {k + 1}, trace {name:>3}: {s['achieved_rps']:9,.0f} req/s, "
                      f"p50 {s['p50_ms']:.2f} ms", flush=True)
        kept = len(engines["on"].timeline("mlp", last_s=None))
        # Scheduling slack at low load (deadline policy): how long after its max wait a
        # deadline batch actually started, from the trace.
        e = engines["on"]
        e.configure("mlp", max_batch_size=32, max_wait_ms=5.0, policy="deadline")
        t_start = __import__("time").perf_counter()
        e.start_traffic("mlp", rate_rps=50, pattern="poisson", duration_s=6.0, seed=1)
        e.wait_traffic("mlp", timeout_s=60)
        tl = e.timeline("mlp", last_s=None)
        tl = tl[(tl["arrived_s"] >= t_start) & (tl["release_reason"] == "deadline")]
        first = tl.groupby("batch_id").agg(arrived=("arrived_s", "min"),
                                           started=("started_s", "first"))
        slack_ms = ((first["started"] - first["arrived"]) * 1000.0 - 5.0).to_numpy()
        slack = {"batches": int(len(slack_ms)), "p50_ms": float(np.percentile(slack_ms, 50)),
                 "p99_ms": float(np.percentile(slack_ms, 99)), "max_ms": float(slack_ms.max()),
                 "min_ms": float(slack_ms.min())}
        print(f"deadline slack at 50 req/s, max wait 5 ms: p50 {slack['p50_ms']:.3f} ms, "
              f"p99 {slack['p99_ms']:.3f} ms, max {slack['max_ms']:.3f} ms, min "
              f"{slack['min_ms']:.3f} ms over {slack['batches']} batches")
    finally:
        for e in engines.values():
            e.close()
    on = statistics.median(r["achieved_rps"] for r in rows if r["trace"] == "on")
    off = statistics.median(r["achieved_rps"] for r in rows if r["trace"] == "off")
    out = {"benchmark": "tracing", "machine": machine_info(1), "args": vars(args),
           "rows": rows, "median_rps_on": on, "median_rps_off": off, "ratio": on / off,
           "trace_rows_kept": kept, "deadline_slack": slack}
    print(f"median: trace on {on:,.0f} req/s, off {off:,.0f} req/s -> on/off {on / off:.3f} "
          "(bar: >= 0.97)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tracing.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
