"""Online estimates behind the ``adaptive`` batching policy.

The policy needs two numbers it cannot know in advance: what a batch costs, and how fast
rows arrive. :class:`CostEstimator` fits t(n) = a + b*n by least squares over the most
recent batches; :class:`RateEstimator` keeps an exponentially weighted arrival rate.
:func:`adaptive_decision` turns them into "release now" or "wait this long", in the
spirit of BentoML's adaptive dispatcher: waiting for one more row costs every queued row
the time until it arrives (n / rate) and saves a separate run's fixed cost ``a``, so the
policy waits only while n / rate < a, and never past ``max_wait_ms``. At low load that
means no pointless waiting; at high load batches fill.

Example:
    >>> adaptive_decision(queued_rows=2, max_rows=32, waited_s=0.0, max_wait_s=0.005,
    ...                   fixed_cost_s=0.0004, rate_rps=100.0)
    ('adaptive', 0.0)
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

__all__ = ["CostEstimator", "RateEstimator", "adaptive_decision"]


class CostEstimator:
    """t(n) = a + b*n seconds, refitted from the last ``window`` batches."""

    def __init__(self, window: int = 64, refit_every: int = 8) -> None:
        self._obs: deque[tuple[int, float]] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._refit_every = refit_every
        self._since = 0
        self.a_s = 0.0
        self.b_s = 0.0
        self.ready = False

    def observe(self, rows: int, seconds: float) -> None:
        with self._lock:
            self._obs.append((rows, seconds))
            self._since += 1
            if self._since >= self._refit_every or not self.ready:
                self._since = 0
                self._fit()

    def _fit(self) -> None:
        n = np.array([o[0] for o in self._obs], dtype=float)
        t = np.array([o[1] for o in self._obs], dtype=float)
        if len(set(n.tolist())) >= 2:
            b, a = np.polyfit(n, t, 1)
            self.a_s, self.b_s = max(0.0, float(a)), max(0.0, float(b))
        else:  # one batch size seen so far: all of it counts as fixed cost
            self.a_s, self.b_s = float(t.mean()), 0.0
        self.ready = True

    def predict(self, rows: int) -> float:
        return self.a_s + self.b_s * rows


class RateEstimator:
    """Rows per second, an exponentially weighted average over ``half_life_s``."""

    def __init__(self, half_life_s: float = 0.1) -> None:
        self.half_life_s = half_life_s
        self.rate_rps = 0.0
        self._last_t: float | None = None
        self._last_rows = 0

    def observe(self, total_rows: int, now: float) -> float:
        if self._last_t is None:
            self._last_t, self._last_rows = now, total_rows
            return self.rate_rps
        dt = now - self._last_t
        if dt < 0.002:  # too short to measure; keep the estimate
            return self.rate_rps
        inst = (total_rows - self._last_rows) / dt
        weight = 1.0 - 0.5 ** (dt / self.half_life_s)
        self.rate_rps += weight * (inst - self.rate_rps)
        self._last_t, self._last_rows = now, total_rows
        return self.rate_rps


def adaptive_decision(queued_rows: int, max_rows: int, waited_s: float, max_wait_s: float,
                      fixed_cost_s: float, rate_rps: float,
                      idle_s: float = 0.0) -> tuple[str | None, float]:
    """``(reason, 0)`` to release now, or ``(None, seconds to wait)`` before looking again.

    ``idle_s`` is the time since the newest queued row arrived: no arrival for that long
    caps the rate at ``1 / idle_s``, so a rate learned during a burst that has ended cannot
    keep requests waiting (the wait is then bounded by about ``fixed_cost_s``, as in the
    ski-rental rule: stop waiting once waiting has cost what a separate run costs).
    """
    if queued_rows >= max_rows:
        return "full", 0.0
    left = max_wait_s - waited_s
    if left <= 0:
        return "deadline", 0.0
    if idle_s > 0:
        rate_rps = min(rate_rps, 1.0 / idle_s)
    if rate_rps <= 0 or queued_rows / rate_rps >= fixed_cost_s:
        return "adaptive", 0.0
    # Look again when the next row is expected (bounded by the deadline).
    return None, min(left, 1.0 / rate_rps)
