"""Stability-gated measurement: measure in windows until the last few agree, or say the
point is unstable.

A point measured once, for a fixed time, is whatever the machine did meanwhile: a GC
pause, a noisy neighbour, a page redrawing. perf_analyzer's rule is used instead: measure
window after window until the last ``windows`` (3) agree within ``tolerance_pct`` (10 %)
of their mean on throughput and on p99, at most ``max_windows`` (10) windows; a point that
never settles is reported **unstable**, with its spread, never silently averaged.

p99 at a few milliseconds moves by more than 10 % with the scheduler's jitter alone, so
p99s within ``p99_floor_ms`` of their mean also agree.

Example:
    >>> rule = StabilityRule(window_s=1.0)
    >>> m = measure_stable(lambda k: open_loop(submit, sample, 500, duration_s=1.0,
    ...                                        seed=k), rule)
    >>> m.stable, m.summary()["p99_ms"], len(m.windows)
    (True, 4.1, 3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import stats

from core.config import _check_float, _check_int, _plain_fields
from .loadgen import LoadResult

__all__ = ["StabilityRule", "Measurement", "measure_stable", "p99_interval"]


@dataclass(frozen=True)
class StabilityRule:
    """When a point counts as measured (perf_analyzer's defaults: 3 windows within 10 %,
    at most 10 windows)."""

    window_s: float = 1.0
    tolerance_pct: float = 10.0
    windows: int = 3
    max_windows: int = 10
    p99_floor_ms: float = 0.5

    def __post_init__(self) -> None:
        _plain_fields(self)   # (numpy numbers as Python's, as the configs take them)
        _check_float("window_s", self.window_s, 0.05, 3600.0)
        _check_float("tolerance_pct", self.tolerance_pct, 0.1, 100.0)
        _check_int("windows", self.windows, 1, 100)
        _check_int("max_windows", self.max_windows, self.windows, 1000)
        _check_float("p99_floor_ms", self.p99_floor_ms, 0.0, 1000.0)


def _spread_pct(values: list[float]) -> float:
    """The largest distance of a value from the mean, in % of the mean."""
    mean = sum(values) / len(values)
    if not mean > 0:
        return 0.0 if all(v == 0 for v in values) else math.inf
    return 100.0 * max(abs(v - mean) for v in values) / mean


@dataclass(frozen=True)
class Measurement:
    """A point measured in windows: the windows' summaries, whether the last ones agreed,
    and the merged result of those last windows (what the point reports)."""

    result: LoadResult
    windows: tuple[dict[str, Any], ...]
    stable: bool
    spread_rps_pct: float
    spread_p99_pct: float
    rule: StabilityRule = field(default_factory=StabilityRule)

    def summary(self) -> dict[str, Any]:
        """The merged windows' summary, with the verdict and spread."""
        s = self.result.summary()
        s.update(stable=self.stable, windows=len(self.windows),
                 spread_rps_pct=self.spread_rps_pct, spread_p99_pct=self.spread_p99_pct)
        return s

    @property
    def verdict(self) -> str:
        n = self.rule.windows
        if self.stable:
            return (f"stable: the last {n} windows of {self.rule.window_s:g} s agreed within "
                    f"{max(self.spread_rps_pct, self.spread_p99_pct):.1f} % "
                    f"(tolerance {self.rule.tolerance_pct:g} %)")
        return (f"unstable: after {len(self.windows)} windows of {self.rule.window_s:g} s the "
                f"last {n} still differed by {self.spread_rps_pct:.1f} % in throughput and "
                f"{self.spread_p99_pct:.1f} % in p99 (tolerance {self.rule.tolerance_pct:g} %)")


def _agree(last: list[dict[str, Any]], rule: StabilityRule) -> tuple[bool, float, float]:
    rps = [w["achieved_rps"] for w in last]
    p99 = [w["p99_ms"] for w in last]
    spread_rps = _spread_pct(rps)
    if any(not math.isfinite(p) for p in p99):
        return False, spread_rps, math.inf
    spread_p99 = _spread_pct(p99)
    mean_p99 = sum(p99) / len(p99)
    p99_ok = (spread_p99 <= rule.tolerance_pct
              or max(abs(p - mean_p99) for p in p99) <= rule.p99_floor_ms)
    return spread_rps <= rule.tolerance_pct and p99_ok, spread_rps, spread_p99


def _merge(results: list[LoadResult]) -> LoadResult:
    """One result from consecutive windows: requests renumbered, times shifted so the
    windows follow each other."""
    frames, span = [], 0.0
    for res in results:
        f = res.frame.copy()
        for col in ("intended_s", "sent_s", "done_s"):
            f[col] = f[col] + span
        frames.append(f)
        span += res.duration_s
    frame = pd.concat(frames, ignore_index=True)
    frame["request"] = range(len(frame))
    first = results[0]
    cpu = sum(r.client_cpu_pct * r.duration_s for r in results) / span if span > 0 else 0.0
    return LoadResult(first.mode, frame, span, max(r.max_lag_ms for r in results),
                      stopped=any(r.stopped for r in results), client_cpu_pct=cpu)


def measure_stable(run_window: Callable[[int], LoadResult], rule: StabilityRule,
                   stop: Any = None) -> Measurement:
    """Call ``run_window(k)`` (one window of load, ``k`` = 0, 1, ...) until the last
    ``rule.windows`` agree or ``rule.max_windows`` have run (or ``stop`` is set); the
    point is the merge of the last ``rule.windows`` windows."""
    results: list[LoadResult] = []
    summaries: list[dict[str, Any]] = []
    stable, spread_rps, spread_p99 = False, math.inf, math.inf
    for k in range(rule.max_windows):
        res = run_window(k)
        results.append(res)
        summaries.append(res.summary())
        if len(results) >= rule.windows:
            stable, spread_rps, spread_p99 = _agree(summaries[-rule.windows:], rule)
            if stable:
                break
        if stop is not None and stop.is_set():
            break
    last = results[-rule.windows:]
    return Measurement(_merge(last), tuple(summaries), stable, spread_rps, spread_p99, rule)


def p99_interval(latency_ms: np.ndarray, seed: int = 0, resamples: int = 400,
                 level: float = 0.95) -> tuple[float, float]:
    """A ``level`` confidence interval of the p99 of ``latency_ms``: the order statistics
    whose ranks a binomial(n, 0.99) count puts at the interval's two ends (distribution
    free; at the top, the largest latency). Exact and the same every time, in memory
    proportional to the latencies: a bootstrap of 400 resamples took 1.4 GB and 4.5 s for
    150,000 latencies (an adversary). ``seed`` and ``resamples`` are kept for callers;
    nothing is drawn."""
    x = np.asarray(latency_ms, dtype=np.float64)
    n = len(x)
    if n < 20:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    lo_rank = max(int(stats.binom.ppf(tail, n, 0.99)), 1)           # 1-based ranks
    hi_rank = min(int(stats.binom.ppf(1.0 - tail, n, 0.99)) + 1, n)
    lo, hi = np.partition(x, (lo_rank - 1, hi_rank - 1))[[lo_rank - 1, hi_rank - 1]]
    return float(lo), float(hi)
