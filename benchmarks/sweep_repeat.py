"""Do sweeps give one answer when asked twice? (issue 23)

The two sweeps of the issue, on the demo MLP (256->1024->1024->10) in one engine, each
repeated ``--repeats`` times while another process keeps a core busy (``--busy``, on by
default: a ``yes > /dev/null`` child), recommending for the same target each time:

* A: max batch 8/32 x max wait 0/2 ms x 500/2,000 req/s, 2 s per point, p99 <= 10 ms;
* B: max batch 8/16/32 x max wait 0/1/2 ms x 400/1,200 req/s, 2 s per point, p99 <= 50 ms.

Prints each repeat's recommendation, how many points were unstable, and whether the
repeats agree; writes benchmarks/results/sweep_repeat.json.

Usage:
    .venv/bin/python -m benchmarks.sweep_repeat              # ~5-10 minutes
    .venv/bin/python -m benchmarks.sweep_repeat --repeats 2 --no-busy
    .venv/bin/python -m benchmarks.sweep_repeat --no-stability   # one window per point
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from core import Engine, EngineConfig
from core.lab import recommend, sweep
from core.serving import tune_for_serving

RESULTS = Path(__file__).resolve().parent / "results"

SWEEPS = {
    "A": dict(max_batch_sizes=[8, 32], max_waits_ms=[0.0, 2.0], rates_rps=[500, 2000],
              slo=10.0),
    "B": dict(max_batch_sizes=[8, 16, 32], max_waits_ms=[0.0, 1.0, 2.0], rates_rps=[400, 1200],
              slo=50.0),
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per point")
    ap.add_argument("--no-busy", action="store_true", help="no process keeping a core busy")
    ap.add_argument("--sweeps", default="A,B")
    ap.add_argument("--no-stability", action="store_true",
                    help="one window per point, as before issue 23 (for comparison)")
    args = ap.parse_args(argv)
    tune_for_serving()
    busy = None if args.no_busy else subprocess.Popen(
        ["sh", "-c", "exec yes > /dev/null"])
    out: dict = {"busy_core": busy is not None, "seconds_per_point": args.seconds,
                 "stability": not args.no_stability,
                 "sweeps": {}}
    try:
        with Engine(EngineConfig(demo_models=False)) as engine:
            from core import build_demo_model
            engine.load_model(build_demo_model("mlp"), name="mlp")
            for name in args.sweeps.split(","):
                spec = dict(SWEEPS[name])
                slo = spec.pop("slo")
                runs = []
                for rep in range(args.repeats):
                    t0 = time.perf_counter()
                    frame = sweep(engine, "mlp", duration_s=args.seconds, seed=rep,
                                  stability=not args.no_stability, **spec)
                    rec = recommend(frame, slo)
                    pick = (rec.max_batch_size, rec.max_wait_ms, rec.load)
                    unstable = int(frame["stable"].eq(False).sum())
                    runs.append({"pick": pick, "unstable": unstable, "points": len(frame),
                                 "seconds": time.perf_counter() - t0, "reason": rec.reason})
                    print(f"sweep {name} repeat {rep + 1}: {pick[0]} / {pick[1]} ms at "
                          f"{pick[2]} req/s; {unstable}/{len(frame)} points unstable; "
                          f"{runs[-1]['seconds']:.0f} s", flush=True)
                picks = {tuple(r["pick"]) for r in runs}
                out["sweeps"][name] = {"runs": runs, "one_answer": len(picks) == 1}
                print(f"sweep {name}: {'one answer' if len(picks) == 1 else 'DIFFERENT answers'}"
                      f" in {args.repeats} repeats", flush=True)
    finally:
        if busy is not None:
            busy.kill()
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "sweep_repeat" + ("_no_stability" if args.no_stability else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    main()
