"""Memory of the Monitor's history: bytes per kept second of a model's per-second series.

A fake clock drives :class:`core.metrics.ModelMetrics` through ``--seconds`` seconds of busy
traffic (``--batches`` batches of 16 a second, latencies spread over a log-normal, so each
second's histograms fill many buckets: a worst case for the sparse copy each sealed second
keeps); memory is read with tracemalloc after a warm-up of 100 seconds, so the figure is the
growth per second kept. With the default 900 seconds kept, a model's history is that figure
× 900 at most.

Usage:
    .venv/bin/python -m benchmarks.history_memory            # ~10 s
"""

from __future__ import annotations

import argparse
import tracemalloc

import numpy as np

from core.metrics import ModelMetrics


def measure(seconds: int, batches: int, keep: int) -> dict[str, float]:
    now = [0.0]
    metrics = ModelMetrics(timeseries_seconds=keep, clock=lambda: now[0])
    rng = np.random.default_rng(0)
    tracemalloc.start()
    warm = 100
    start = 0
    for s in range(seconds):
        for b in range(batches):
            now[0] = s + b / batches
            metrics.record_batch(16, "full", float(rng.lognormal(-6, 0.5)),
                                 rng.lognormal(-6, 1, size=16), depth=3)
        if s == warm:
            start = tracemalloc.get_traced_memory()[0]
    metrics.snapshot(window_s=60)
    end = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_s = (end - start) / (min(seconds, keep) - warm)
    return {"bytes_per_second": per_s, "history_mib": per_s * keep / 2**20,
            "requests_per_second": batches * 16}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=900)
    ap.add_argument("--batches", type=int, default=50, help="batches of 16 per second")
    ap.add_argument("--keep", type=int, default=900, help="seconds kept (timeseries_seconds)")
    args = ap.parse_args()
    r = measure(args.seconds, args.batches, args.keep)
    print(f"{r['requests_per_second']:,} req/s: {r['bytes_per_second']:,.0f} bytes per kept "
          f"second; {r['history_mib']:.1f} MiB for {args.keep} s")


if __name__ == "__main__":
    main()
