"""Priority classes under 2x overload: the high class's p99 against its own unloaded p99.

On the MLP (requests of ``--rows`` rows, ``max_batch_size=32``, ``max_wait_ms=2``, timeout
``--timeout-ms``), in one process and one run:

1. the capacity C (req/s) of one class, by the same search as the peers benchmark;
2. the high class alone at ``--high-share`` x C (Poisson): its unloaded p50/p99;
3. the same high traffic plus normal traffic bringing the total to ``--overload`` x C:
   the high class's p50/p99 (bar: p99 within 1.5x of step 2) and what became of the normal
   class (served, refused at once, timed out);
4. the same two streams without priorities (both in the one class), to show what the
   classes changed.

Run: ``python -m benchmarks.priority``; JSON to ``benchmarks/results/priority.json``.
"""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

from benchmarks.common import RESULTS, find_capacity, machine_info
from core import Engine, EngineConfig
from core.lab import open_loop
from core.serving import tune_for_serving

MODEL = "mlp"


def run(engine: Engine, x, streams: list[tuple[str, float, int | None]], seconds: float
        ) -> dict[str, dict]:
    """Open-loop Poisson streams at once: (label, rate, priority) -> each one's summary
    (latency from the intended send time)."""
    out: dict[str, dict] = {}

    def one(label: str, rate: float, priority: int | None, seed: int) -> None:
        submit = (lambda v: engine.submit(MODEL, v, priority=priority)) if priority \
            else (lambda v: engine.submit(MODEL, v))
        res = open_loop(submit, lambda rng: x, rate, pattern="poisson", duration_s=seconds,
                        seed=seed, drain_s=10.0)
        s = res.summary()
        errs = res.frame.loc[~res.frame["ok"], "error"].value_counts().to_dict() \
            if "error" in res.frame else {}
        s["errors_by_type"] = {str(k): int(v) for k, v in errs.items()}
        s["offered_rps"] = rate
        out[label] = s

    threads = [threading.Thread(target=one, args=(*s, k)) for k, s in enumerate(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def line(label: str, s: dict) -> str:
    errs = ", ".join(f"{k} {v:,}" for k, v in s["errors_by_type"].items()) or "none"
    return (f"  {label:<22} offered {s['offered_rps']:8,.0f}/s  served {s['succeeded']:7,} of "
            f"{s['sent']:7,}  p50 {s['p50_ms']:8.2f} ms  p99 {s['p99_ms']:8.2f} ms  "
            f"failed: {errs}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--high-share", type=float, default=0.25)
    ap.add_argument("--overload", type=float, default=2.0)
    ap.add_argument("--timeout-ms", type=float, default=1000.0)
    args = ap.parse_args()
    tune_for_serving()
    engine = Engine(EngineConfig(demo_models=True))
    try:
        engine.configure(MODEL, max_batch_size=32, max_wait_ms=2.0,
                         timeout_ms=args.timeout_ms)
        x = engine.sample_input(MODEL, rows=args.rows)
        engine.warmup(MODEL, iterations=3)
        cap, _ = find_capacity(lambda v: engine.submit(MODEL, v), x, 500.0, 3.0, 50.0,
                               steps=4)
        high, total = args.high_share * cap, args.overload * cap
        print(f"capacity {cap:,.0f} req/s of {args.rows} rows; high class {high:,.0f}/s, "
              f"total offered {total:,.0f}/s", flush=True)
        alone = run(engine, x, [("high alone", high, 1)], args.seconds)
        print(line("high alone", alone["high alone"]), flush=True)
        classes = run(engine, x, [("high", high, 1), ("normal", total - high, 2)],
                      args.seconds)
        for k in ("high", "normal"):
            print(line(f"{k}, with classes", classes[k]), flush=True)
        plain = run(engine, x, [("high", high, None), ("normal", total - high, None)],
                    args.seconds)
        for k in ("high", "normal"):
            print(line(f"{k}, no classes", plain[k]), flush=True)
        ratio = classes["high"]["p99_ms"] / alone["high alone"]["p99_ms"]
        print(f"==> high class p99 under {args.overload:g}x overload / alone: {ratio:.2f} "
              f"(bar <= 1.5); without classes: "
              f"{plain['high']['p99_ms'] / alone['high alone']['p99_ms']:.2f}", flush=True)
        out = {"machine": machine_info(1), "args": vars(args), "capacity_rps": cap,
               "alone": alone, "classes": classes, "no_classes": plain, "ratio": ratio}
        path = Path(RESULTS) / "priority.json"
        path.write_text(json.dumps(out, indent=2, default=float))
        print(f"wrote {path}")
    finally:
        engine.close()


if __name__ == "__main__":
    main()
