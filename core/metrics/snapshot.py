"""A snapshot of one model's metrics, and the same over a window of recent seconds.

Example:
    >>> snap = engine.metrics("mlp", window_s=30)
    >>> snap.window_s, snap.p99_ms
    (30, 4.2)
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .histograms import _merged
from .seconds import _Second

__all__ = ["MetricsSnapshot", "TIMESERIES_COLUMNS"]

TIMESERIES_COLUMNS = [
    "second", "time", "requests", "successes", "errors", "error_rate", "throughput_rps",
    "rows", "batches", "mean_batch_rows", "p50_ms", "p95_ms", "p99_ms", "max_ms",
    "mean_queue_ms", "mean_compute_ms", "queue_depth",
]


@dataclass(frozen=True)
class MetricsSnapshot:
    """A consistent, immutable view of one model's metrics at one moment.

    ``to_dict()`` has the seed's keys (``total_requests``, ``success_count``,
    ``error_count``, ``avg_latency_ms``, ``error_rate``) and many more; ``timeseries`` is a
    per-second DataFrame with :data:`TIMESERIES_COLUMNS` for charts.

    Example:
        >>> snap = engine.metrics("mlp")
        >>> snap.p99_ms, snap.error_rate
        (4.2, 0.0)
    """

    total_requests: int
    success_count: int
    error_count: int
    error_rate: float
    avg_latency_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_latency_ms: float
    avg_queue_ms: float
    p50_queue_ms: float
    p99_queue_ms: float
    avg_compute_ms: float
    p50_compute_ms: float
    p99_compute_ms: float
    batches: int
    rows_total: int
    avg_batch_rows: float
    batch_sizes: dict[int, int]
    release_reasons: dict[str, int]
    errors_by_type: dict[str, int]
    incidents: dict[str, int]
    queue_depth: int
    #: successes a second over the last 5 whole seconds (the live rate, whatever
    #: ``window_s``: a window's own rate is its ``success_count / window_s``)
    throughput_rps: float
    uptime_s: float
    recent_errors: list[dict[str, Any]] = field(default_factory=list)
    timeseries: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TIMESERIES_COLUMNS))
    #: None: since the start or the last reset; else the figures cover the last window_s s
    window_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every figure as plain Python values (no DataFrame), JSON-serialisable."""
        d = {k: v for k, v in self.__dict__.items() if k != "timeseries"}
        d["batch_sizes"] = dict(self.batch_sizes)
        return d


def _window_snapshot(full: MetricsSnapshot, parts: list[_Second], window_s: float,
                     ) -> MetricsSnapshot:
    """``full`` with its counts and distributions replaced by those of ``parts``."""
    req = sum(b.requests for b in parts)
    ok = sum(b.successes for b in parts)
    err = sum(b.errors for b in parts)
    rows = sum(b.rows for b in parts)
    batches = sum(b.batches for b in parts)
    sizes: Counter[int] = Counter()
    reasons: Counter[str] = Counter()
    errs: Counter[str] = Counter()
    for b in parts:
        sizes.update(b.sizes)
        reasons.update(b.reasons)
        if b.errs:
            errs.update(b.errs)
    total, queue, compute = (_merged([b.sparse[k] for b in parts]) for k in range(3))
    tp50, tp95, tp99 = total.percentiles((50, 95, 99))
    qp50, qp99 = queue.percentiles((50, 99))
    cp50, cp99 = compute.percentiles((50, 99))
    ms = lambda attr: sum(getattr(b, attr) for b in parts) * 1000.0 / ok if ok else 0.0  # noqa: E731
    return dataclasses.replace(
        full, total_requests=req, success_count=ok, error_count=err,
        error_rate=err / req if req else 0.0, avg_latency_ms=ms("total_s"),
        p50_ms=tp50, p95_ms=tp95, p99_ms=tp99, max_latency_ms=total.max_ms(),
        avg_queue_ms=ms("queue_s"), p50_queue_ms=qp50, p99_queue_ms=qp99,
        avg_compute_ms=ms("compute_s"), p50_compute_ms=cp50, p99_compute_ms=cp99,
        batches=batches, rows_total=rows, avg_batch_rows=rows / batches if batches else 0.0,
        batch_sizes=dict(sorted(sizes.items())), release_reasons=dict(reasons),
        errors_by_type=dict(errs), window_s=window_s)
