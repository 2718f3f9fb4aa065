"""Whether warm-up's powers of two warm the sizes between them: after ``warmup`` (powers of
two up to ``max_batch_size`` and the max), the first run at each size between them against
its warm runs, and the same for sizes warm-up ran (a size's first run after another size)
and for warm-up's own sizes on the new session ("fresh").

If a size between powers of two paid for memory planning or cold caches, its first run
would cost far more than a warmed size's first run; the page's word "warm" rests on this.

Usage:
    .venv/bin/python -m benchmarks.warm_sizes [--models mlp,cnn] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.getcwd())  # the tree it is run from

from core import Engine, EngineConfig  # noqa: E402

BETWEEN = [3, 5, 9, 17, 25, 31]
WARMED = [4, 16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--rounds", type=int, default=5, help="fresh engines per model")
    args = ap.parse_args()
    for model in args.models.split(","):
        extra: dict[str, list[float]] = {}   # first run minus warm p50 (ms), by size
        ratio: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            with Engine(EngineConfig(demo_models=True)) as engine:
                fresh = engine.warmup(model, iterations=5).frame   # a new session's sizes
                extra.setdefault("fresh", []).extend(fresh["cold_ms"] - fresh["warm_p50_ms"])
                ratio.setdefault("fresh", []).extend(fresh["cold_over_warm"])
                assert engine.is_warm(model)
                for kind, sizes in (("between", BETWEEN), ("warmed", WARMED)):
                    rep = engine.warmup(model, iterations=9, batch_sizes=sizes)
                    f = rep.frame
                    extra.setdefault(kind, []).extend(f["cold_ms"] - f["warm_p50_ms"])
                    ratio.setdefault(kind, []).extend(f["cold_over_warm"])
        for kind in ("fresh", "between", "warmed"):
            e, r = extra[kind], ratio[kind]
            print(f"{model:4s} {kind:8s} first run over warm: median +{statistics.median(e):.3f} "
                  f"ms (max +{max(e):.3f}), x{statistics.median(r):.2f} "
                  f"(x{min(r):.2f}-x{max(r):.2f}), {len(e)} sizes x rounds")


if __name__ == "__main__":
    main()
