"""Every release policy on the same arrivals: p50/p99, goodput within an SLO, mean batch.

For each demo model (mlp, tiny, clf-v1) and two loads, one seeded Poisson trace is
replayed (``core.lab.replay``: a private copy of the model, each registered policy in turn,
real runs) and each policy's p50, p99, share and rate of requests answered within
``--slo-ms`` (goodput) and mean batch size are reported. The loads are fractions
(``--loads``, default 0.25 and 0.5) of the model's raw batch-32 ``session.run`` rate on this
machine, or of ``--engine-bound`` (30k one-row req/s, what one engine serves in process
here) where that is lower: the engine serves about half the raw rate, so 0.5 is near its
capacity.

``aimd`` runs at its objective: the model's ``latency_slo_ms`` when the model is set to
``aimd`` (``--aimd-objective-ms``; default: the measured run time of half a batch, at least
0.25 ms, so its cap has something to find), since the default (10 ms) is never missed by these models'
sub-millisecond runs and AIMD would be ``deadline``.

Run: ``python -m benchmarks.policies [--seconds 4] [--slo-ms 10]``; JSON to
``benchmarks/results/policies.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, machine_info, make_session, raw_items_per_s
from core import Engine, EngineConfig
from core.lab import arrival_times
from core.lab.replay import replay
from core.policies import registered
from core.serving import tune_for_serving

MODELS = ("mlp", "tiny", "clf-v1")
#: A run in the engine costs ~0.1 ms beyond ONNX Runtime's own time (Python, the GIL): an
#: objective below that is missed by every run, whatever its size (see core/policies/aimd.py).
MIN_OBJECTIVE_MS = 0.25


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--loads", default="0.25,0.5",
                    help="fractions of the raw batch-32 rate, comma-separated")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--slo-ms", type=float, default=10.0)
    ap.add_argument("--aimd-objective-ms", type=float, default=None)
    ap.add_argument("--engine-bound", type=float, default=30_000.0,
                    help="loads are fractions of min(raw rate, this): what one engine "
                         "serves in process here, one-row requests (the cheap model's raw "
                         "rate is ~100x that)")
    args = ap.parse_args()
    tune_for_serving()
    out: dict = {"machine": machine_info(1), "args": vars(args), "rows": []}
    engine = Engine(EngineConfig(demo_models=True))
    try:
        for model in args.models.split(","):
            data = engine.model_file(model)
            x32 = engine.sample_input(model, rows=32)
            feed = x32 if isinstance(x32, dict) else {engine.model_info(model).inputs[0].name: x32}
            raw, _ = raw_items_per_s(make_session(data, 1), feed, 1.0)
            half = {k: v[:16] for k, v in feed.items()}
            _, ms16 = raw_items_per_s(make_session(data, 1), half, 0.5)
            objective = args.aimd_objective_ms or round(max(ms16, MIN_OBJECTIVE_MS), 3)
            engine.configure(model, max_batch_size=32, max_wait_ms=5.0, policy="aimd",
                             latency_slo_ms=objective)
            print(f"{model}: raw batch 32 {raw:,.0f} rows/s; aimd objective {objective} ms "
                  "(a half batch's run)", flush=True)
            base = min(raw, args.engine_bound)
            for frac in map(float, args.loads.split(",")):
                rate = frac * base
                arrivals = arrival_times("poisson", rate, int(rate * args.seconds),
                                         np.random.default_rng(7))
                res = replay(engine, model, arrivals, slo_ms=args.slo_ms)
                for row in res["summary"].to_dict("records"):
                    row.update(model=model, load=frac, rate_rps=rate,
                               aimd_objective_ms=objective)
                    out["rows"].append(row)
                    print(f"  {frac:.2f} x {base:,.0f} = {rate:,.0f} req/s  {row['policy']:<13}"
                          f" p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
                          f"within {args.slo_ms:g} ms {100 * row['within_slo']:6.2f} %  "
                          f"goodput {row['goodput_rps']:8,.0f}/s  "
                          f"mean batch {row['mean_batch_rows']:5.1f}", flush=True)
            engine.configure(model, policy="deadline", latency_slo_ms=None)
    finally:
        engine.close()
    out["policies"] = list(registered())
    path = Path(RESULTS) / "policies.json"
    path.write_text(json.dumps(out, indent=2, default=float))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
