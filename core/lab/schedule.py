"""When to send: arrival schedules (constant, Poisson, bursty) and the one pacer every
open-loop sender uses (the dashboard's traffic, bounded load runs, replays, sweeps).

The pacer sleeps, never spins (the GIL is shared with the engine being measured), and never
less than ``_MIN_SLEEP_S``: a timed sleep costs 30-40 us of CPU on a VM, which at thousands
of wake-ups a second would be taken from the system under test, so the load goes out in
small bursts instead. Lateness this causes is latency (measured from the intended time) and
shows as the sender's lag.

Example:
    >>> arrival_times("constant", 4.0, 3, np.random.default_rng(0)).tolist()
    [0.25, 0.5, 0.75]
    >>> for due, now in paced([t0 + 0.1, t0 + 0.2], stop):
    ...     send()
"""

from __future__ import annotations

import threading
import time
from typing import Iterable, Iterator

import numpy as np

from core.errors import ConfigError

__all__ = ["ARRIVAL_PATTERNS", "MAX_RUN_REQUESTS", "arrival_times", "run_schedule",
           "arrival_stream", "paced"]

ARRIVAL_PATTERNS = ("constant", "poisson", "bursty")

#: The most requests one bounded run (open_loop, load agents, a sweep's window) schedules:
#: each is recorded (~400 bytes), so 10 million take ~4 GiB. Longer loads: live traffic.
MAX_RUN_REQUESTS = 10_000_000

# The senders' shortest sleep (see the module docstring).
_MIN_SLEEP_S = 0.0005
# The longest, so a stop is seen within it.
_MAX_SLEEP_S = 0.05


def arrival_times(pattern: str, rate_rps: float, n: int, rng: np.random.Generator,
                  cv: float = 3.0) -> np.ndarray:
    """Offsets (s) of ``n`` arrivals from the start at mean rate ``rate_rps``.

    ``constant``: evenly spaced. ``poisson``: exponential gaps (coefficient of variation 1).
    ``bursty``: gamma-distributed gaps with coefficient of variation ``cv`` (> 1 clusters
    arrivals into bursts separated by lulls; the mean rate is unchanged).

    >>> arrival_times("constant", 4.0, 3, np.random.default_rng(0)).tolist()
    [0.25, 0.5, 0.75]
    """
    mean = 1.0 / rate_rps
    if pattern == "constant":
        gaps = np.full(n, mean)
    elif pattern == "poisson":
        gaps = rng.exponential(mean, n)
    elif pattern == "bursty":
        if not cv > 0:
            raise ValueError(f"cv must be > 0, got {cv!r}")
        shape = 1.0 / cv**2
        gaps = rng.gamma(shape, mean / shape, n)
    else:
        raise ValueError(f"pattern must be one of {ARRIVAL_PATTERNS}, got {pattern!r}")
    return np.cumsum(gaps)


def run_schedule(pattern: str, rate_rps: float, duration_s: float | None,
                 count: int | None, rng: np.random.Generator, cv: float = 3.0) -> np.ndarray:
    """The send offsets (s) of a bounded run: ``duration_s`` and/or ``count`` arrivals.

    Over ``duration_s``, the offered load is the nominal one, not a draw of it: ``constant``
    sends ``rate x duration`` requests, 1/rate apart; ``poisson`` sends ``round(rate x
    duration)`` at uniformly random times, sorted (a Poisson process conditioned on its
    count: exponential gaps, but a short window no longer offers 20 % more or less than
    asked, which read as throughput above the offered load); ``bursty`` draws gaps until
    the duration ends (its count is part of its burstiness). ``count`` alone: that many
    arrivals by their gaps; with both, the first ``count`` within the duration.
    """
    caps = [c for c in (count, None if duration_s is None else rate_rps * duration_s)
            if c is not None]
    n = min(caps) if caps else 0
    if n > MAX_RUN_REQUESTS:
        what = (f"count={count:,}" if count is not None and count == n
                else f"{rate_rps:g} req/s for {duration_s:g} s")
        raise ConfigError(
            f"{what} is {n:,.0f} requests; a bounded run records every one (~400 bytes "
            f"each, {n * 400 / 2**30:,.1f} GiB), and its limit is {MAX_RUN_REQUESTS:,}. For "
            "a long soak use engine.start_traffic(model, rate_rps=..., duration_s=...) "
            "(counted per second, in constant memory), or measure it in shorter runs")
    if duration_s is None:
        return arrival_times(pattern, rate_rps, int(count or 0), rng, cv)
    if rate_rps * duration_s < 1 and count != 0:
        # (what is asked, not a draw: a bursty window may come out empty by chance)
        raise ConfigError(
            f"{pattern} arrivals at {rate_rps:g} req/s over {duration_s:g} s offer "
            f"{rate_rps * duration_s:.2g} requests (one every {1.0 / rate_rps:.3g} s): raise "
            f"the rate or the duration so that rate x duration is at least 1")
    if pattern == "poisson":
        offsets = np.sort(rng.uniform(0.0, duration_s, round(rate_rps * duration_s)))
    else:
        n = int(rate_rps * duration_s) + 1
        offsets = arrival_times(pattern, rate_rps, n, rng, cv)
        while offsets[-1] <= duration_s and pattern != "constant":  # gaps ran out early
            more = arrival_times(pattern, rate_rps, n, rng, cv) + offsets[-1]
            offsets = np.concatenate([offsets, more])
        offsets = offsets[offsets <= duration_s + 1e-9]
    return offsets if count is None else offsets[:count]


def arrival_stream(pattern: str, rate_rps: float, rng: np.random.Generator, t0: float,
                   duration_s: float | None = None) -> Iterator[float]:
    """Send times (``time.perf_counter`` seconds from ``t0``) drawn a second of arrivals at
    a time, endless unless ``duration_s`` bounds them."""
    chunk = max(16, int(rate_rps))
    base = 0.0
    while True:
        offsets = arrival_times(pattern, rate_rps, chunk, rng)
        for off in (base + offsets).tolist():
            if duration_s is not None and off > duration_s:
                return
            yield t0 + off
        base += float(offsets[-1])


#: After a refused send, a paced sender lets go of the GIL at most once per this many
#: seconds (see :func:`core.lab.loadgen.open_loop`).
YIELD_GAP_S = 0.0005


def paced(due_times: Iterable[float], stop: threading.Event) -> Iterator[tuple[float, float]]:
    """Yield ``(due, now)`` for each send time once it has come (those already due at once,
    in a burst), until ``stop`` is set; ``now - due`` is the sender's lag."""
    perf, sleep, stopped = time.perf_counter, time.sleep, stop.is_set
    for due in due_times:
        now = perf()
        while now < due:
            if stopped():
                return
            sleep(min(max(due - now, _MIN_SLEEP_S), _MAX_SLEEP_S))
            now = perf()
        if stopped():
            return
        yield due, now
