"""The What-if's ceiling at batch sizes it did not measure: one size against two.

The profile job measures the engine's capacity at a backlog (bursts of one-row requests at
once, :func:`core.lab.measure_capacity`). From one max batch size the engine's work per
request is 1 / that capacity at every size (:func:`core.lab.with_capacity`); from two (the
model's size and a quarter of it, as the profile job now measures) it is told apart per
request and per batch, ``p + q / k`` (:func:`core.lab.with_capacities`). For each demo
model this measures the capacity at max batch sizes 4 ... 128 (deadline, 2 ms wait, one
instance), fits both from the sizes the profile would measure (32, and 32 with 8) and the
runs' t(n) from warm-up timings, and prints each prediction's error against what was
measured at every size, ``--rounds`` times (the sizes' order reversed every other round).

Run: ``python -m benchmarks.whatif_sizes [--rounds 2]``; JSON to
``benchmarks/results/whatif_sizes.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics

from benchmarks.common import RESULTS, machine_info
from core import Engine, EngineConfig, build_demo_model
from core.lab import fit_cost_model, measure_capacity, profile_cost, with_capacities, with_capacity
from core.serving import tune_for_serving

MODELS = ("tiny", "cnn", "mlp")
SIZES = (4, 8, 16, 32, 64, 128)
OWN, QUARTER = 32, 8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    tune_for_serving()
    rows = []
    with Engine(EngineConfig(demo_models=False, probe_models=False)) as engine:
        for model in args.models.split(","):
            engine.load_model(build_demo_model(model), name=model)
            engine.configure(model, max_batch_size=OWN, max_wait_ms=2.0, policy="deadline")
            cost = fit_cost_model(profile_cost(engine, model, batch_sizes=SIZES, iterations=10))
            for rnd in range(args.rounds):
                measured = {}
                for k in (SIZES if rnd % 2 == 0 else SIZES[::-1]):
                    engine.configure(model, max_batch_size=k)
                    measured[k] = measure_capacity(engine, model)
                one = with_capacity(cost, measured[OWN], OWN)
                two = with_capacities(cost, {OWN: measured[OWN], QUARTER: measured[QUARTER]},
                                      OWN)
                for k in SIZES:
                    got = measured[k]
                    rows.append({"model": model, "round": rnd + 1, "max_batch_size": k,
                                 "measured_rps": got, "one_size_rps": one.capacity_rps(k),
                                 "two_sizes_rps": two.capacity_rps(k),
                                 "per_request_us": two.per_request_ms * 1000,
                                 "per_batch_us": two.per_batch_ms * 1000})
    print("| model | round | max batch size | measured req/s | from 32 alone | from 32 and 8 |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        e1 = r["one_size_rps"] / r["measured_rps"] - 1
        e2 = r["two_sizes_rps"] / r["measured_rps"] - 1
        print(f"| {r['model']} | {r['round']} | {r['max_batch_size']} | {r['measured_rps']:,.0f} "
              f"| {r['one_size_rps']:,.0f} ({e1:+.0%}) | {r['two_sizes_rps']:,.0f} ({e2:+.0%}) |")
    print("\nMedian |error| at the sizes not measured (4, 16, 64, 128), per model:")
    for model in args.models.split(","):
        sel = [r for r in rows if r["model"] == model and r["max_batch_size"] not in (OWN, QUARTER)]
        for key, label in (("one_size_rps", "32 alone"), ("two_sizes_rps", "32 and 8")):
            errs = [abs(r[key] / r["measured_rps"] - 1) for r in sel]
            print(f"  {model}, {label}: {statistics.median(errs):.0%} (max {max(errs):.0%})")
        pr = [(r["per_request_us"], r["per_batch_us"]) for r in sel if r["max_batch_size"] == 4]
        print(f"  {model}: per request / per batch (us), by round: "
              + ", ".join(f"{p:.1f} / {q:.1f}" for p, q in pr))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "whatif_sizes.json").write_text(json.dumps(
        {"machine": machine_info(1), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
