"""Quick search against the whole grid (issue #23): does the hill-climb find within 5 % of
the grid's best goodput in at most 40 % of its measurement time?

For each demo model (``--models``, default mlp, tiny, clf-v1) in one in-process engine: the
grid (``sweep`` over max batch size × max wait × ONNX Runtime threads × loads, every point
stability-gated) and the quick search (``quick_search`` over the same axes, loads and
constraint), alternating which goes first. The grid's best goodput is its best setting's
score by the same rule the search climbs by (``setting_scores``: goodput within the p99
target at the highest load sustained with every lower load sustained too). Reported per
model: both best settings and goodputs, their ratio, the points and wall seconds of each,
and the time ratio.

Run: ``python -m benchmarks.quick_search [--models mlp,tiny,clf-v1] [--duration 1.2]
[--p99 10]``; JSON to ``benchmarks/results/quick_search.json``. Each model's requests time
out at 10× the target while measured. ~30 minutes on 2 cores; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks.common import RESULTS, machine_info
from core import Engine, EngineConfig
from core.lab import Constraints, quick_search, setting_scores, sweep
from core.models import build_demo_model
from core.serving import tune_for_serving

BATCHES = [1, 4, 16, 64]
WAITS = [0.0, 1.0, 5.0]
THREADS = [1, 2]
LOADS = {"mlp": [4000, 12000, 20000, 28000],
         "tiny": [5000, 15000, 25000, 35000],
         "clf-v1": [5000, 15000, 25000, 35000]}
#: Each model's request timeout while measured (10x the p99 target by default): an
#: overloaded point then refuses at once what it cannot serve in time, instead of draining
#: a backlog of seconds after every window (both the grid and the search have it).
TIMEOUT_FACTOR = 10.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mlp,tiny,clf-v1")
    ap.add_argument("--duration", type=float, default=1.2, help="seconds per point (3 windows)")
    ap.add_argument("--p99", type=float, default=10.0, help="the p99 target (ms)")
    args = ap.parse_args()
    tune_for_serving()
    rows = []
    c = Constraints(p99_ms=args.p99)
    with Engine(EngineConfig(demo_models=False)) as engine:
        for i, name in enumerate(m.strip() for m in args.models.split(",") if m.strip()):
            engine.load_model(build_demo_model(name), name=name)
            engine.configure(name, timeout_ms=TIMEOUT_FACTOR * args.p99)
            engine.warmup(name, batch_sizes=BATCHES)
            loads = LOADS.get(name, [1000, 4000, 8000, 16000])
            out: dict = {"model": name, "loads": loads}

            def grid() -> None:
                t0 = time.monotonic()
                frame = sweep(engine, name, BATCHES, WAITS, rates_rps=loads,
                              duration_s=args.duration, slo_ms=args.p99,
                              session_threads=THREADS, baseline=False)
                wall = time.monotonic() - t0
                s = setting_scores(frame, c)
                best = s[s["feasible"]].sort_values("goodput_rps").iloc[-1]
                out["grid"] = {"points": len(frame), "seconds": wall,
                               "best": [int(best.max_batch_size), float(best.max_wait_ms),
                                        int(best.session_threads)],
                               "goodput_rps": float(best.goodput_rps),
                               "unstable_points": int(frame["stable"].eq(False).sum())}

            def quick() -> None:
                t0 = time.monotonic()
                res = quick_search(engine, name, BATCHES, WAITS, loads, c,
                                   session_threads=THREADS, duration_s=args.duration)
                wall = time.monotonic() - t0
                best = res.scores[res.scores["feasible"]].sort_values("goodput_rps").iloc[-1]
                out["quick"] = {"points": res.points, "seconds": wall,
                                "best": [int(best.max_batch_size), float(best.max_wait_ms),
                                         int(best.session_threads)],
                                "goodput_rps": float(best.goodput_rps),
                                "path": [list(p) for p in res.path], "reason": res.reason}

            for step in ((quick, grid) if i % 2 == 0 else (grid, quick)):
                step()
            out["goodput_ratio"] = out["quick"]["goodput_rps"] / out["grid"]["goodput_rps"]
            out["time_ratio"] = out["quick"]["seconds"] / out["grid"]["seconds"]
            out["points_ratio"] = out["quick"]["points"] / out["grid"]["points"]
            print(json.dumps(out, indent=1), flush=True)
            rows.append(out)
            engine.unload_model(name)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quick_search.json").write_text(json.dumps(
        {"benchmark": "quick_search", "machine": machine_info(1), "args": vars(args),
         "axes": {"max_batch_sizes": BATCHES, "max_waits_ms": WAITS, "threads": THREADS},
         "models": rows}, indent=2))
    print(f"wrote {RESULTS / 'quick_search.json'}")


if __name__ == "__main__":
    main()
