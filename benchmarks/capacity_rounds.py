"""Issue 22's open-loop bars, measured in rounds: capacity of each system, several times.

One capacity search (``benchmarks.common.find_capacity``: constant rates, every request
served, >= 95 % achieved, p99 under the limit) says little on a shared 2-core VM: the same
system's figure moved by 20-30 % between searches minutes apart (docs/benchmarks.md). So
here every system is searched ``--rounds`` times, the systems taking turns within each
round (the order rotating round by round), and the bars are judged on the per-round ratios
and their median: Batchlab / seed port (bar 1.5x) and Batchlab / Ray Serve's
``@serve.batch`` (bar 4x), for Batchlab with one and with two instances. Then Poisson
arrivals at 85 % of Batchlab's median capacity, ``--poisson`` times (bar: >= 99 % served,
p99 <= 50 ms). Each round also times a raw batch-32 ``session.run`` (one thread), so a
round on a slower machine shows as such.

Usage:
    .venv/bin/python -m benchmarks.capacity_rounds                 # 5 rounds, ~8 minutes
    .venv/bin/python -m benchmarks.capacity_rounds --rounds 3 --model mlp
Writes benchmarks/results/capacity_rounds.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from benchmarks.common import (RESULTS, batchlab_systems, find_capacity, make_session,
                               open_trial, raw_items_per_s, ray_serve_system, seed_system)
from core import build_demo_model
from core.serving import tune_for_serving

SEED, RAY = "seed port", "Ray Serve"
BL1, BL2 = "Batchlab (1 instance)", "Batchlab (2 instances)"


def build(data: bytes, max_batch: int, max_wait_ms: float) -> tuple[dict, list]:
    session = make_session(data, 1)
    name = session.get_inputs()[0].name
    one, two = batchlab_systems(data, 1, max_batch, max_wait_ms, policies=("deadline",),
                                instances=(2,))
    systems = {BL1: one, BL2: two, SEED: seed_system(session, name, max_batch, max_wait_ms)}
    ray = ray_serve_system(session, name, max_batch, max_wait_ms)
    if ray is not None:
        systems[RAY] = ray
    return systems, [session, name]


def ratio_rows(caps: dict[str, list[float]]) -> dict[str, list[float]]:
    """Per-round ratios of Batchlab's capacity to each baseline's (same round)."""
    out: dict[str, list[float]] = {}
    for mine in (BL1, BL2):
        for base in (SEED, RAY):
            if base in caps:
                out[f"{mine} / {base}"] = [m / b for m, b in zip(caps[mine], caps[base])
                                           if b > 0]
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--trial-s", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=4, help="bisections after the doubling")
    ap.add_argument("--start-rps", type=float, default=4000.0)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--p99-limit-ms", type=float, default=50.0)
    ap.add_argument("--poisson", type=int, default=3, help="Poisson trials at 85 %%")
    args = ap.parse_args(argv)
    tune_for_serving()
    systems, (session, name) = build(build_demo_model(args.model), args.max_batch,
                                     args.max_wait_ms)
    x = np.random.default_rng(1).standard_normal(
        [1] + list(session.get_inputs()[0].shape[1:])).astype(np.float32)
    x.flags.writeable = False   # one array for every system, never written: Batchlab's
    # submit takes a read-only array as it is (it copies a writable one, a caller's buffer)
    feed = {name: np.repeat(x, args.max_batch, axis=0)}
    caps: dict[str, list[float]] = {k: [] for k in systems}
    raw_ms: list[float] = []
    order = list(systems)
    quiet = lambda line: None   # noqa: E731 - the search's own lines are not wanted here
    try:
        for k in systems.values():          # warm every system once
            open_trial(k.submit, x, 2000, 0.5)
        for rnd in range(args.rounds):
            raw_ms.append(raw_items_per_s(session, feed, 0.5)[1])
            turn = order[rnd % len(order):] + order[:rnd % len(order)]
            for label in turn:
                cap, _ = find_capacity(systems[label].submit, x, args.start_rps,
                                       args.trial_s, args.p99_limit_ms, steps=args.steps,
                                       log=quiet)
                caps[label].append(cap)
                time.sleep(0.3)
            print(f"round {rnd + 1}: raw batch {args.max_batch} {raw_ms[-1]:.3f} ms; "
                  + ", ".join(f"{k} {caps[k][-1]:,.0f}" for k in turn), flush=True)
        best = BL2 if statistics.median(caps[BL2]) >= statistics.median(caps[BL1]) else BL1
        rate = 0.85 * statistics.median(caps[best])
        poisson = []
        for _ in range(args.poisson):
            s = open_trial(systems[best].submit, x, rate, 2 * args.trial_s, "poisson")
            poisson.append({"served": s["succeeded"] / max(s["sent"], 1),
                            "p99_ms": s["p99_ms"], "p50_ms": s["p50_ms"]})
    finally:
        for k in systems.values():
            k.close()
    ratios = ratio_rows(caps)
    print(f"\n### Capacity in {args.rounds} rounds ({args.model}, max_batch_size="
          f"{args.max_batch}, max_wait_ms={args.max_wait_ms:g}, {args.trial_s:g} s trials, "
          f"p99 <= {args.p99_limit_ms:g} ms)\n")
    print("| system | median req/s | rounds |\n|---|---:|---|")
    for k, v in caps.items():
        print(f"| {k} | {statistics.median(v):,.0f} | {', '.join(f'{c:,.0f}' for c in v)} |")
    print("\n| ratio | median | rounds |\n|---|---:|---|")
    for k, v in ratios.items():
        print(f"| {k} | **{statistics.median(v):.2f}** | {', '.join(f'{r:.2f}' for r in v)} |")
    print(f"\nPoisson at 85 % of {best}'s median ({rate:,.0f} req/s), {args.poisson} trials: "
          + "; ".join(f"served {p['served'] * 100:.2f} %, p99 {p['p99_ms']:.1f} ms"
                      for p in poisson))
    out = {"settings": vars(args), "raw_batch_ms": raw_ms, "capacity_rps": caps,
           "ratios": ratios, "poisson_85": {"system": best, "rate_rps": rate,
                                            "trials": poisson}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "capacity_rounds.json").write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
