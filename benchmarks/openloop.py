"""A small open-loop driver shared by the benchmarks.

Requests are sent on a fixed schedule (constant rate) whatever the system does, and each
latency is measured from the request's *intended* send time, so a system that stalls
cannot hide its queueing (coordinated omission). Completion times are taken by a done
callback, the same for every system under test.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class OpenLoopResult:
    offered_rps: float
    sent: int
    completed: int
    failed: int
    achieved_rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_lag_ms: float  # how far the generator fell behind its own schedule

    def sustained(self, p99_limit_ms: float) -> bool:
        return (self.failed == 0 and self.completed == self.sent
                and self.achieved_rps >= 0.95 * self.offered_rps
                and self.p99_ms <= p99_limit_ms)


def run_open_loop(submit: Callable[[np.ndarray], Future], x: np.ndarray, rate_rps: float,
                  duration_s: float, drain_s: float = 5.0) -> OpenLoopResult:
    n = max(1, int(rate_rps * duration_s))
    intended = np.empty(n)
    done_at = np.full(n, np.nan)
    failed = [0]
    perf = time.perf_counter
    interval = 1.0 / rate_rps
    max_lag = 0.0
    # Futures are not kept: a driver holding every future (and its result) would make the
    # garbage collector's full passes, and so everyone's latency, grow with the run.
    finished = [0]
    count_lock = threading.Lock()
    all_done = threading.Event()

    def make_cb(i: int):
        def cb(f: Future) -> None:
            t = perf()
            ok = f.exception() is None
            with count_lock:
                if ok:
                    done_at[i] = t
                else:
                    failed[0] += 1
                finished[0] += 1
                if finished[0] >= n:
                    all_done.set()
        return cb

    t0 = perf() + 0.01
    i = 0
    while i < n:
        now = perf()
        due = t0 + i * interval
        if now < due:
            # Sleep, never spin: a spinning sender would hold the GIL from the system
            # under test for up to the 5 ms switch interval.
            time.sleep(due - now)
            continue
        lag = now - due
        if lag > max_lag:
            max_lag = lag
        # Send every request whose intended time has come (a burst when we woke late).
        while i < n and t0 + i * interval <= now:
            intended[i] = t0 + i * interval
            try:
                fut = submit(x)
            except Exception:  # noqa: BLE001 - refused at submit: count as failed
                with count_lock:
                    failed[0] += 1
                    finished[0] += 1
                i += 1
                continue
            fut.add_done_callback(make_cb(i))
            i += 1
    if finished[0] >= n:
        all_done.set()
    all_done.wait(drain_s)
    ok = ~np.isnan(done_at)
    lat_ms = (done_at[ok] - intended[ok]) * 1000.0
    completed = int(ok.sum())
    span = (np.nanmax(done_at) - t0) if completed else float("inf")
    pct = (lambda p: float(np.percentile(lat_ms, p))) if completed else (lambda p: float("inf"))
    return OpenLoopResult(offered_rps=rate_rps, sent=n, completed=completed, failed=failed[0],
                          achieved_rps=completed / span, p50_ms=pct(50), p95_ms=pct(95),
                          p99_ms=pct(99), max_lag_ms=max_lag * 1000.0)


def find_capacity(submit: Callable[[np.ndarray], Future], x: np.ndarray, start_rps: float,
                  duration_s: float, p99_limit_ms: float, steps: int = 5,
                  log: Callable[[str], None] = print) -> tuple[float, OpenLoopResult | None]:
    """Highest constant rate sustained (all served, >= 95% achieved, p99 under the limit),
    doubling from ``start_rps`` until a rate fails twice, then bisecting."""
    lo, hi = 0.0, None
    best: OpenLoopResult | None = None
    rate = start_rps
    def trial(rate: float) -> OpenLoopResult:
        # A rate counts as sustained if one of two tries sustains it: a single GC pause or
        # a noisy neighbour on a shared VM should not decide a system's capacity.
        r = run_open_loop(submit, x, rate, duration_s)
        if not r.sustained(p99_limit_ms):
            log(f"    {rate:9.0f} rps -> achieved {r.achieved_rps:9.0f}, p99 {r.p99_ms:8.2f} ms, "
                "retry")
            time.sleep(0.2)
            r = run_open_loop(submit, x, rate, duration_s)
        log(f"    {rate:9.0f} rps -> achieved {r.achieved_rps:9.0f}, p99 {r.p99_ms:8.2f} ms, "
            f"{'ok' if r.sustained(p99_limit_ms) else 'FAIL'}")
        return r

    while hi is None:  # grow geometrically until a rate fails
        r = trial(rate)
        if r.sustained(p99_limit_ms):
            lo, best = rate, r
            rate *= 2
        else:
            hi = rate
        time.sleep(0.2)
    for _ in range(steps):  # then bisect
        rate = (lo + hi) / 2
        r = trial(rate)
        if r.sustained(p99_limit_ms):
            lo, best = rate, r
        else:
            hi = rate
        time.sleep(0.2)
    return lo, best
