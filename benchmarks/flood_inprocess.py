"""Past capacity with the load generator in the engine's process: does serving collapse?

The lab's own open-loop generator shares the engine's interpreter. Past capacity the engine
refuses what its queue cannot hold (~5 µs a refusal); a sender behind schedule then refuses
in a loop, holding the GIL until the interpreter forces a switch, and the engine's runner
back from each run waits that long. This measures what is served at rates below and past
capacity on the CNN and the MLP (max batch 32, wait 2 ms, default max_queue), this tree
against a baseline commit, each measurement a fresh child process (``git worktree`` for the
baseline), the trees alternating round by round.

Run: ``python -m benchmarks.flood_inprocess --baseline d3d5282 [--rounds 3]``; a Markdown
table on stdout, JSON in ``benchmarks/results/flood_inprocess.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from benchmarks.common import RESULTS, machine_info
from benchmarks.regress import ROOT, _worktree

RATES = {"cnn": (50_000, 75_000, 100_000), "mlp": (30_000, 45_000, 60_000)}

# Run from either tree: the public contract only.
_PROBE = r"""
import json, sys
from core import Engine, EngineConfig
from core.lab import open_loop
from core.serving import tune_for_serving
tune_for_serving()
model, seconds, seed, rates = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with Engine(EngineConfig(demo_models=False)) as engine:
    from core import build_demo_model
    engine.load_model(build_demo_model(model), name=model)
    engine.configure(model, max_batch_size=32, max_wait_ms=2.0)
    x = engine.sample_input(model, rows=1)
    for _ in range(200):
        engine.submit(model, x).result()
    out = []
    for rate in map(float, rates.split(",")):
        s = open_loop(lambda v: engine.submit(model, v), lambda rng: x, rate,
                      pattern="poisson", duration_s=seconds, seed=seed).summary()
        out.append({"rate": rate, "served": s["achieved_rps"], "refused": s["error_rate"],
                    "p99_ms": s["p99_ms"], "max_lag_ms": s["max_lag_ms"]})
print(json.dumps(out))
"""


def _measure(tree, model: str, seconds: float, seed: int) -> list[dict]:
    out = subprocess.run([sys.executable, "-c", _PROBE, model, str(seconds), str(seed),
                          ",".join(map(str, RATES[model]))], cwd=tree,
                         env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"measurement in {tree} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", required=True, help="commit to compare against")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    base = _worktree(rev)
    trees = {"this tree": ROOT, f"baseline {rev}": base}
    got: dict = {}
    try:
        for r in range(args.rounds):
            order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
            for model in RATES:
                for label, tree in order:
                    for row in _measure(tree, model, args.seconds, r):
                        got.setdefault((model, row["rate"], label), []).append(row)
                        print(f"round {r + 1} {model} {row['rate']:>9,.0f} {label:18s} served "
                              f"{row['served']:9,.0f} refused {row['refused']:5.0%}",
                              flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT,
                       capture_output=True)
    this, old = trees
    print(f"\n| model | offered req/s | served, this tree | served, {rev} | ratio | refused "
          f"(this / {rev}) |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = []
    for model, rates in RATES.items():
        for rate in rates:
            a = [x["served"] for x in got[(model, float(rate), this)]]
            b = [x["served"] for x in got[(model, float(rate), old)]]
            ra = statistics.median(x["refused"] for x in got[(model, float(rate), this)])
            rb = statistics.median(x["refused"] for x in got[(model, float(rate), old)])
            ratio = statistics.median(a) / statistics.median(b)
            rows.append({"model": model, "rate": rate, "this": a, "baseline": b,
                         "ratio": ratio, "refused": [ra, rb]})
            print(f"| {model} | {rate:,} | {statistics.median(a):,.0f} | "
                  f"{statistics.median(b):,.0f} | {ratio:.2f} | {ra:.0%} / {rb:.0%} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "flood_inprocess.json").write_text(json.dumps(
        {"benchmark": "flood_inprocess", "baseline": rev, "machine": machine_info(1),
         "args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
