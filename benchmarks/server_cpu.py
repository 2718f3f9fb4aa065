"""CPU per request of the engine server at a fixed load: this tree vs a baseline commit.

A capacity search moves in steps (250 req/s near 5k) and a few percent hide between them.
This measures what the server's process spends per one-row request at a constant rate
below capacity (``--rps``), from ``/proc/<pid>/stat`` (every thread: the event loop, the
route's pool, the batcher), for this tree and for ``--baseline REV`` (a ``git worktree``),
alternating, ``--rounds`` times, with batching on (max batch 32, 2 ms) and off. The server
is pinned to core 0, the client (``Engine.add_remote``, binary tensors) to core 1.

Run: ``python -m benchmarks.server_cpu --baseline REV [--rps 1500] [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from benchmarks.common import baseline_tree, open_trial
from core import Engine
from core.models import build_demo_model
from benchmarks.servers import CLIENT_CORE, MODEL, start_batchlab
from core.serving import tune_for_serving


def process_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(engine: Engine, data: bytes, batching: bool, rps: float, seconds: float,
        root: Path | None) -> dict:
    srv = start_batchlab(engine, data, batching, root)
    try:
        x = engine.sample_input("target", rows=1)
        for _ in range(300):
            engine.predict("target", x)
        submit = lambda v: engine.submit("target", v)  # noqa: E731
        open_trial(submit, x, rps, 1.0)   # warm at the rate
        c0 = process_cpu_s(srv.pid)
        s = open_trial(submit, x, rps, seconds)
        cpu = process_cpu_s(srv.pid) - c0
        return {"us_per_request": 1e6 * cpu / max(1, s["succeeded"]),
                "achieved_rps": s["achieved_rps"], "p50_ms": s["p50_ms"],
                "p99_ms": s["p99_ms"], "failed": s["failed"]}
    finally:
        if "target" in engine.model_names():
            engine.unload_model("target")
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", required=True, metavar="REV")
    ap.add_argument("--rps", type=float, default=1500.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batching", choices=("on", "off", "both"), default="both")
    args = ap.parse_args()
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {CLIENT_CORE})
    tune_for_serving()
    data = build_demo_model(MODEL)
    engine = Engine(demo_models=False)
    try:
        with baseline_tree(args.baseline) as base:
            for batching in {"on": (True,), "off": (False,)}.get(args.batching, (True, False)):
                got: dict[str, list[float]] = {"this tree": [], args.baseline: []}
                for k in range(args.rounds):
                    order = (("this tree", None), (args.baseline, base))[::1 - 2 * (k % 2)]
                    for name, root in order:
                        r = one(engine, data, batching, args.rps, args.seconds, root)
                        got[name].append(r["us_per_request"])
                        print(f"batching {'on' if batching else 'off'}, round {k + 1}, "
                              f"{name}: {r['us_per_request']:.1f} µs/request "
                              f"({r['achieved_rps']:,.0f} req/s, p50 {r['p50_ms']:.2f} ms, "
                              f"p99 {r['p99_ms']:.2f} ms, failed {r['failed']})", flush=True)
                new, old = np.median(got["this tree"]), np.median(got[args.baseline])
                print(f"==> batching {'on' if batching else 'off'}: this tree {new:.1f} / "
                      f"{args.baseline} {old:.1f} µs per request = {new / old:.3f} "
                      "(lower is better)", flush=True)
    finally:
        engine.close()

if __name__ == "__main__":
    main()
