"""Does looking perturb the numbers? Engine p99 with and without a metrics poller.

The same open-loop load (MLP demo model, 300 req/s Poisson by default, max batch 32,
max wait 5 ms, deadline policy) is run with no reader, then with a thread that calls
``engine.metrics("mlp")`` and reads its per-second ``timeseries`` 20 times a second (what
a dashboard does), alternating ``--pairs`` times in one process so that both conditions
see the same machine. Reported: the median p99 (and p50) of each condition and their
ratio; the bar of issue #11 is a ratio within 1.2.

Run: ``python -m benchmarks.polling [--seconds 15] [--pairs 3] [--rate 300]``; the JSON
goes to ``benchmarks/results/polling.json``. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import numpy as np

from benchmarks.common import RESULTS, machine_info
from core import Engine
from core.lab import open_loop
from core.serving import tune_for_serving


def poller(engine: Engine, name: str, hz: float, stop: threading.Event, counts: list) -> None:
    period = 1.0 / hz
    while not stop.wait(period):
        snap = engine.metrics(name)
        _ = snap.timeseries["p99_ms"].tail(60).tolist()  # what a chart reads
        engine.status()
        counts[0] += 1


def trial(engine: Engine, rate: float, seconds: float, poll_hz: float | None, seed: int) -> dict:
    x = engine.sample_input("mlp", rows=1)
    stop = threading.Event()
    counts = [0]
    t = None
    if poll_hz:
        t = threading.Thread(target=poller, args=(engine, "mlp", poll_hz, stop, counts),
                             name="poller", daemon=True)
        t.start()
    cpu0 = time.process_time()
    res = open_loop(lambda v: engine.submit("mlp", v), lambda rng: x, rate, pattern="poisson",
                    duration_s=seconds, seed=seed, drain_s=10.0)
    cpu = time.process_time() - cpu0
    stop.set()
    if t is not None:
        t.join(5)
    s = res.summary()
    return {"poll_hz": poll_hz or 0, "polls": counts[0], "p50_ms": s["p50_ms"],
            "p99_ms": s["p99_ms"], "achieved_rps": s["achieved_rps"], "failed": s["failed"],
            "process_cpu_s": cpu}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--hz", type=float, default=20.0)
    args = ap.parse_args(argv)
    tune_for_serving()
    runs = []
    with Engine() as engine:
        engine.configure("mlp", max_batch_size=32, max_wait_ms=5.0, policy="deadline")
        engine.warmup("mlp", iterations=5)
        open_loop(lambda v: engine.submit("mlp", v), lambda rng: engine.sample_input("mlp"),
                  args.rate, duration_s=2.0, seed=0)  # settle in
        for i in range(args.pairs):
            for hz in (None, args.hz):
                r = trial(engine, args.rate, args.seconds, hz, seed=i)
                runs.append(r)
                print(f"pair {i + 1}: poll {r['poll_hz']:>4} Hz ({r['polls']} polls): "
                      f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
                      f"{r['achieved_rps']:.0f} req/s, CPU {r['process_cpu_s']:.1f} s", flush=True)
    quiet = [r for r in runs if not r["poll_hz"]]
    polled = [r for r in runs if r["poll_hz"]]
    out = {
        "machine": machine_info(0), "args": vars(args), "runs": runs,
        "p99_quiet_ms": statistics.median(r["p99_ms"] for r in quiet),
        "p99_polled_ms": statistics.median(r["p99_ms"] for r in polled),
        "p50_quiet_ms": statistics.median(r["p50_ms"] for r in quiet),
        "p50_polled_ms": statistics.median(r["p50_ms"] for r in polled),
        "cpu_quiet_s": statistics.median(r["process_cpu_s"] for r in quiet),
        "cpu_polled_s": statistics.median(r["process_cpu_s"] for r in polled),
    }
    out["p99_ratio"] = out["p99_polled_ms"] / out["p99_quiet_ms"]
    print(f"median p99: quiet {out['p99_quiet_ms']:.2f} ms, polled {out['p99_polled_ms']:.2f} ms"
          f" -> ratio {out['p99_ratio']:.2f} (bar: <= 1.2)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "polling.json").write_text(json.dumps(out, indent=1, default=float))
    return out


if __name__ == "__main__":
    main()
