"""Online estimates behind the ``adaptive`` batching policy.

The policy needs two numbers it cannot know in advance: what a batch costs, and how fast
rows arrive. :class:`CostEstimator` fits t(n) = a + b*n to the fastest recent run of each
batch size; :class:`RateEstimator` keeps an exponentially weighted arrival rate.
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
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["CostEstimator", "RateEstimator", "adaptive_decision", "choose_within_slo",
           "MAX_SLOWDOWN"]

#: The most a backlogged queue's cycle is taken to exceed the fitted run time (see
#: ``CostEstimator.observe_cycle``).
MAX_SLOWDOWN = 20.0
#: Admission predicts a queue's drain at this quantile of the last backlogged cycles'
#: slowdowns (issue #23: the mean admitted requests that timed out on a crowded machine).
SLOWDOWN_QUANTILE = 0.9
_RATIO_WINDOW = 64
_RATIO_TTL_S = 10.0


class CostEstimator:
    """t(n) = a + b*n seconds, fitted to the fastest run of each batch size among the last
    ``window`` batches."""

    def __init__(self, window: int = 64, refit_every: int = 8) -> None:
        self._obs: deque[tuple[int, float]] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._refit_every = refit_every
        self._since = 0
        self._fits = 0
        self.a_s = 0.0
        self.b_s = 0.0
        self.ready = False
        self._has_line = False
        # Batch sizes behind the current line (smallest, largest); see ``identified``.
        self.sizes: tuple[int, int] = (0, 0)
        # Backlogged cycle time / predicted run time (see observe_cycle): the line is fitted
        # to the fastest runs, right for deciding whether to wait, but a queue drains at
        # the speed of whole cycles.
        self.slowdown = 1.0
        # The recent backlogged cycles' slowdowns, and a high percentile of them: what
        # admission predicts a queue's wait with. On a crowded machine cycles are slowed
        # unevenly (the engine's threads share a core with others part of the time), and a
        # typical slowdown admits requests that time out when a slow stretch comes.
        self._ratios: deque[float] = deque(maxlen=_RATIO_WINDOW)
        self._since_q = 0
        self.slowdown_high = 1.0
        self._last_ratio_t = 0.0

    def observe(self, rows: int, seconds: float) -> bool:
        """Record one run; True when the line was refitted (its figures changed)."""
        with self._lock:
            self._obs.append((rows, seconds))
            self._since += 1
            if self._since >= self._refit_every or not self.ready:
                self._since = 0
                self._fit()
                return True
            return False

    def _fit(self) -> None:
        # The lower envelope: per batch size, the fastest run in the window. Timing noise
        # is one-sided (a run's measured time includes waiting for the GIL afterwards, or
        # being preempted), and a least-squares line through it put the fixed cost at
        # several times its real value in a busy process.
        fastest: dict[int, float] = {}
        for rows, seconds in self._obs:
            if seconds < fastest.get(rows, float("inf")):
                fastest[rows] = seconds
        n = np.array(list(fastest), dtype=float)
        t = np.array(list(fastest.values()), dtype=float)
        # Extrapolating to n = 0 from sizes close together (31 and 32) is noise; a line
        # needs sizes at least a factor of two apart, and a cost that grows with n.
        b = a = -1.0
        if len(n) >= 2 and n.max() >= 2 * n.min():
            b, a = (float(v) for v in np.polyfit(n, t, 1))
        if b >= 0:
            self.a_s, self.b_s = max(0.0, a), b
            self._has_line = True
            self.sizes = (int(n.min()), int(n.max()))
        elif not self._has_line:
            # No line yet (one batch size, or sizes too close): all of it counts as fixed
            # cost, until batches of other sizes separate the two.
            self.a_s, self.b_s = float(t.mean()), 0.0
            self.sizes = (int(n.min()), int(n.max()))
        # else: a window that cannot separate fixed from per-row cost (say, a burst of full
        # batches only) keeps the last line fitted: it says more than "all fixed", which
        # would make the policy wait far too long once the burst is over.
        self.ready = True
        self._fits += 1

    @property
    def identified(self) -> bool:
        """Whether a and b are each known, not just their sum: the line was fitted to batch
        sizes at least 4x apart. With every batch of one row (a light load), a + b is all
        that can be measured."""
        lo, hi = self.sizes
        return self._has_line and lo > 0 and hi >= 4 * lo

    def predict(self, rows: int) -> float:
        return self.a_s + self.b_s * rows

    def observe_cycle(self, rows: int, seconds: float) -> None:
        """One full cycle of a backlogged queue (batch start to the next batch start: the
        run plus the Python work around it, under whatever contention there is): how much
        slower than the fitted line the queue really drains."""
        if not self.ready:
            return
        pred = self.a_s + self.b_s * rows
        if pred > 0:
            ratio = min(max(seconds / pred, 1.0), MAX_SLOWDOWN)
            self.slowdown += 0.1 * (ratio - self.slowdown)
            self._ratios.append(ratio)
            self._last_ratio_t = time.monotonic()
            self._since_q += 1
            if self._since_q >= 8:  # a percentile per 8 batches, not per request
                self._since_q = 0
                ordered = sorted(self._ratios)  # 64 floats: cheaper than numpy here
                self.slowdown_high = ordered[int(SLOWDOWN_QUANTILE * (len(ordered) - 1))]

    def relax(self) -> None:
        """A batch that was not back to back (no backlog): forget the slowdown gradually,
        and the slow cycles behind the high percentile once none came for
        :data:`_RATIO_TTL_S` (a crowded spell must not refuse the next burst)."""
        if self.slowdown > 1.0:
            self.slowdown += 0.1 * (1.0 - self.slowdown)
        if self._ratios and time.monotonic() - self._last_ratio_t > _RATIO_TTL_S:
            self._ratios.clear()
            self.slowdown_high = 1.0

    @property
    def confident(self) -> bool:
        """Refitted at least once after the first run (whose time includes one-time work
        such as allocating what later runs reuse): good enough to predict a queue's wait."""
        return self._fits >= 2

    def drain_s(self, rows: int, batches: int, high: bool = False) -> float:
        """Typical time to run ``rows`` rows in ``batches`` runs (0 before any run);
        ``high``: at the :data:`SLOWDOWN_QUANTILE` of recent slowdowns instead (admission:
        a wait that holds on a crowded machine, not just on average)."""
        if not self.ready:
            return 0.0
        slow = max(self.slowdown, self.slowdown_high) if high else self.slowdown
        return (self.a_s * batches + self.b_s * rows) * max(1.0, slow)


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


def choose_within_slo(waited_s: Sequence[float], rows: Sequence[int],
                      predict_s: Callable[[int], float], slo_s: float
                      ) -> tuple[list[int], list[int], list[int]]:
    """Which requests of a released batch run now, go back to the queue, or are shed.

    ``waited_s`` and ``rows`` describe the batch's requests oldest first; ``predict_s(n)``
    is the learned run time of n rows. A request that cannot finish within ``slo_s`` even
    alone is shed. The others run in the largest batch, oldest first, that the oldest of
    them can still wait for (its wait plus the batch's run time within the SLO: the
    younger ones have waited less); those that do not fit go back to the front of the
    queue for the next batch. So a tight SLO gets smaller batches, not shed requests that
    could still make it. Returns index lists (run, back, shed).

    >>> choose_within_slo([1e-4] * 4, [1] * 4, lambda n: 0.0005 + 0.0005 * n, 0.002)
    ([0, 1], [2, 3], [])
    """
    run: list[int] = []
    back: list[int] = []
    shed: list[int] = []
    total = 0
    for i, (w, n) in enumerate(zip(waited_s, rows)):
        if w + predict_s(n) > slo_s:
            shed.append(i)
        elif not run or waited_s[run[0]] + predict_s(total + n) <= slo_s:
            run.append(i)
            total += n
        else:
            back.append(i)
    return run, back, shed
