"""Does looking move what is looked at? One model's latency under steady traffic, in the
engine server, with nobody reading, with a Monitor-like reader of the whole 10 s timeline
once a second (what the Monitor's "where the time goes" chart asked before), and with one
reading ``breakdown`` instead (what it asks now).

The server's own traffic generator sends ``--rate`` one-row requests a second to ``mlp``
for the whole run; the phases (``off``, ``timeline``, ``breakdown``) take turns,
``--seconds`` each, the order rotating, ``--rounds`` times. Each phase's latency is the
engine's own (``metrics(model, window_s=...)`` at its end, the phase's seconds only); each
read's time and size are measured at the client (``RemoteEngine``, as the dashboard).

Last, in-process: the CPU of one read of each (and of the chart's figure) over a trace
of 25,000 requests.

Run: ``python -m benchmarks.looking [--rate 2000] [--seconds 8] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from core import Engine
from core.serving import RemoteEngine, ServerProcess
from core.ui import charts

PHASES = ("off", "timeline", "breakdown")


def phase(engine: RemoteEngine, model: str, kind: str, seconds: float) -> dict:
    took, sizes = [], []
    start = time.monotonic()
    while time.monotonic() - start < seconds - 0.5:
        t = time.perf_counter()
        if kind == "timeline":
            frame = engine.timeline(model, last_s=10.0)
            charts.breakdown_figure(frame)           # (what the page did with it)
            sizes.append(len(frame))
        elif kind == "breakdown":
            charts.breakdown_figure(engine.breakdown(model, last_s=10.0))
            sizes.append(3)
        took.append(time.perf_counter() - t)
        time.sleep(max(0.0, 1.0 - (time.perf_counter() - t)))
    time.sleep(max(0.0, seconds - (time.monotonic() - start)))
    snap = engine.metrics(model, window_s=seconds - 1.0)   # (the phase's whole seconds)
    return {"phase": kind, "p50_ms": snap.p50_ms, "p99_ms": snap.p99_ms, "p95_ms": snap.p95_ms,
            "served": snap.success_count, "errors": snap.error_count,
            "read_ms": statistics.median(took) * 1e3 if took else 0.0,
            "rows_read": statistics.median(sizes) if sizes else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    server = ServerProcess(args=["--no-probe"]).start()
    rows = []
    try:
        engine = RemoteEngine(server.url, token=server.token, timeout_s=60)
        engine.configure("mlp", max_batch_size=32, max_wait_ms=2.0)
        total = args.seconds * len(PHASES) * args.rounds + 15
        engine.start_traffic("mlp", rate_rps=args.rate, duration_s=total)
        time.sleep(11.0)   # (the trace holds 10 s of requests before the first read)
        for r in range(args.rounds):
            order = PHASES[r % 3:] + PHASES[:r % 3]
            for kind in order:
                row = phase(engine, "mlp", kind, args.seconds)
                rows.append({"round": r + 1, **row})
                print(f"round {r + 1} {kind:>9}: p50 {row['p50_ms']:6.2f} ms  p99 "
                      f"{row['p99_ms']:7.2f} ms  p95 {row['p95_ms']:6.2f} ms  served "
                      f"{row['served']:,}  errors {row['errors']}  read "
                      f"{row['read_ms']:6.1f} ms ({row['rows_read']:,.0f} rows)", flush=True)
        engine.stop_traffic("mlp")
        engine.close()
    finally:
        server.stop()
    print("\nmedians over the rounds:")
    for kind in PHASES:
        mine = [r for r in rows if r["phase"] == kind]
        each = ", ".join(f"{r['p99_ms']:.1f}" for r in mine)
        print(f"  {kind:>9}: p99 {statistics.median(r['p99_ms'] for r in mine):7.2f} ms "
              f"(rounds {each}), p95 "
              f"{statistics.median(r['p95_ms'] for r in mine):6.2f} ms, read "
              f"{statistics.median(r['read_ms'] for r in mine):6.1f} ms")
    in_process()


def in_process(requests: int = 25_000, reads: int = 10) -> None:
    engine = Engine()
    try:
        engine.configure("tiny", max_batch_size=4, max_wait_ms=0.5)
        for _ in range(requests // 1000):
            futs = [engine.submit("tiny", np.ones((1, 4), np.float32)) for _ in range(1000)]
            for f in futs:
                f.result(30)
        print(f"\nin-process, a trace of {requests:,} requests, CPU per read:")
        for name, read in (
                ("timeline", lambda: engine.timeline("tiny", last_s=None)),
                ("breakdown", lambda: engine.breakdown("tiny", last_s=None)),
                ("breakdown + chart", lambda: charts.breakdown_figure(
                    engine.breakdown("tiny", last_s=None)))):
            read()
            t = time.thread_time()
            for _ in range(reads):
                read()
            print(f"  {name:>18}: {(time.thread_time() - t) / reads * 1e3:6.1f} ms")
    finally:
        engine.close()


if __name__ == "__main__":
    main()
