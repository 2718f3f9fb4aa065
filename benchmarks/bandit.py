"""The A/B bandit in simulation: how fast it moves the traffic, and what it costs.

Two arms with exponential latencies (mean ``A`` and ``B`` ms) against an SLO: for each gap,
ten seeds of :func:`core.ab.simulate_bandit` (floor 5 %), and per seed the requests until
the better arm first holds >= 90 % of every later window of 200, the worse arm's share
over the last 1,000 requests, and the regret (requests that all-to-the-better-arm would
have answered within the SLO) next to a fixed 50/50 split's on the same requests.

Run: ``python -m benchmarks.bandit``; JSON to ``benchmarks/results/bandit.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS
from core.ab import simulate_bandit

SLO_MS = 30.0
N = 5000
CASES = [(10.0, 40.0), (10.0, 15.0), (10.0, 11.0)]   # mean latency of A, of B (ms)


def settle_point(chosen: list[str], better: str, window: int = 200) -> int | None:
    """The first request from which the better arm holds >= 90 % of every window."""
    good = np.array([c == better for c in chosen], dtype=float)
    shares = [good[i:i + window].mean() for i in range(0, len(good), window)]
    for k in range(len(shares)):
        if all(s >= 0.9 for s in shares[k:]):
            return k * window
    return None


def main() -> None:
    rows = []
    for mean_a, mean_b in CASES:
        settles, worse, regrets, fixed = [], [], [], []
        for seed in range(10):
            out = simulate_bandit(lambda r, m=mean_a: r.exponential(m),
                                  lambda r, m=mean_b: r.exponential(m),
                                  slo_ms=SLO_MS, n=N, floor=0.05, seed=seed)
            truth = out["truth"]
            better = "a" if truth["a"] >= truth["b"] else "b"
            settles.append(settle_point(out["chosen"], better))
            last = out["chosen"][-1000:]
            worse.append(sum(c != better for c in last) / len(last))
            regrets.append(out["regret"][-1])
            fixed.append(N * 0.5 * abs(truth["a"] - truth["b"]))
        known = [s for s in settles if s is not None]
        row = {"mean_a_ms": mean_a, "mean_b_ms": mean_b,
               "p_within_a": truth["a"], "p_within_b": truth["b"],
               "settled_seeds": len(known),
               "settle_median": float(np.median(known)) if known else None,
               "settle_max": max(known) if known else None,
               "worse_share_last_1000_median": float(np.median(worse)),
               "regret_median": float(np.median(regrets)),
               "fixed_split_regret": float(np.median(fixed))}
        rows.append(row)
        print(f"A {mean_a:g} ms vs B {mean_b:g} ms (within {SLO_MS:g} ms: "
              f"{truth['a']:.3f} vs {truth['b']:.3f}): >= 90 % to the better arm from "
              f"request {row['settle_median']} (median; worst {row['settle_max']}; "
              f"{len(known)}/10 seeds), worse arm's share at the end "
              f"{row['worse_share_last_1000_median']:.3f}, regret {row['regret_median']:.1f} "
              f"vs {row['fixed_split_regret']:.1f} for a fixed 50/50 split", flush=True)
    path = Path(RESULTS) / "bandit.json"
    path.write_text(json.dumps({"slo_ms": SLO_MS, "n": N, "floor": 0.05, "rows": rows},
                               indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
