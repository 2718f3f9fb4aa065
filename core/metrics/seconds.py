"""The per-second series: one small accumulator per second (counts, sizes, reasons, its own
histograms, sealed to their non-zero buckets), and the rate and rows read from them.

Example:
    >>> s = _Second(0); s.seal(); s.row(wall0=0.0)["requests"]
    0
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

import pandas as pd
from hdrh.histogram import HdrHistogram

from .histograms import _HistCopy, _sparse

__all__: list[str] = []


class _Second:
    """Accumulator for one second of the time series."""

    __slots__ = ("second", "requests", "successes", "errors", "rows", "batches",
                 "queue_s", "compute_s", "total_s", "depth", "hist", "qhist", "chist", "pcts",
                 "sizes", "reasons", "errs", "sparse")

    def __init__(self, second: int) -> None:
        self.second = second
        self.requests = self.successes = self.errors = self.rows = self.batches = 0
        self.queue_s = self.compute_s = self.total_s = 0.0
        self.depth = 0
        # This second's histograms of total, queue and compute time while it is current;
        # once sealed, only their non-zero buckets are kept (``sparse``), for windows.
        self.hist: HdrHistogram | None = None
        self.qhist: HdrHistogram | None = None
        self.chist: HdrHistogram | None = None
        self.pcts: tuple[float, float, float, float] | None = None
        self.sizes: Counter[int] = Counter()
        self.reasons: Counter[str] = Counter()
        self.errs: Counter[str] | None = None
        self.sparse: tuple[Any, Any, Any] = (None, None, None)

    def seal(self) -> None:
        """The second is over: keep its percentiles and the non-zero buckets of its
        histograms (a few hundred bytes), drop the histograms (~26 KiB each)."""
        h = self.hist
        if h is not None and h.total_count:
            self.pcts = self._percentiles()
        self.sparse = tuple(_sparse(x) for x in (self.hist, self.qhist, self.chist))
        self.hist = self.qhist = self.chist = None

    def copy(self) -> _Second:
        """A copy whose histograms are frozen copies (for a snapshot taken mid-second)."""
        c = _Second(self.second)
        for name in ("requests", "successes", "errors", "rows", "batches", "queue_s",
                     "compute_s", "total_s", "depth", "pcts", "sparse"):
            setattr(c, name, getattr(self, name))
        c.sizes, c.reasons = Counter(self.sizes), Counter(self.reasons)
        c.errs = Counter(self.errs) if self.errs else None
        if self.hist is not None:
            c.hist = _HistCopy(self.hist)
        c.sparse = tuple(_sparse(x) for x in (self.hist, self.qhist, self.chist))
        return c

    def _percentiles(self) -> tuple[float, float, float, float]:
        if self.pcts is not None:
            return self.pcts
        h = self.hist
        if h is None or not (h.total if isinstance(h, _HistCopy) else h.total_count):
            nan = float("nan")
            return nan, nan, nan, nan
        hc = h if isinstance(h, _HistCopy) else _HistCopy(h)
        p50, p95, p99 = hc.percentiles((50, 95, 99))
        return p50, p95, p99, hc.max_ms()

    def row(self, wall0: float) -> dict[str, Any]:
        done = self.successes
        p50, p95, p99, pmax = self._percentiles()
        return {
            "second": self.second,
            "time": pd.Timestamp(wall0 + self.second, unit="s"),
            "requests": self.requests, "successes": done, "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else 0.0,
            "throughput_rps": float(done),
            "rows": self.rows, "batches": self.batches,
            "mean_batch_rows": self.rows / self.batches if self.batches else float("nan"),
            "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "max_ms": pmax,
            "mean_queue_ms": self.queue_s * 1000.0 / done if done else float("nan"),
            "mean_compute_ms": self.compute_s * 1000.0 / done if done else float("nan"),
            "queue_depth": self.depth,
        }


def _recent_rps(seconds: Iterable[_Second], current: int, window_s: float,
                start: float = 0.0, keep: int | None = None) -> float:
    """Successes per second over the last ``window_s`` full seconds before ``current``
    (idle seconds count as zeros; none before ``start``, where in second 0 the
    measurement began: a reset 0.9 s into it, nor past the ``keep`` seconds the series
    holds). Not from the oldest second recorded: a series read while idle has more of
    them, and the same 200 requests read as 40 req/s there and 66.7 on a model nobody
    had looked at (an adversary)."""
    done = [b for b in seconds if b.second < current]
    if not done:
        return 0.0
    first = current - int(window_s if keep is None else min(window_s, keep))
    span = current - max(first, start)
    return sum(b.successes for b in done if b.second >= first) / span if span > 0 else 0.0


def _series_rows(seconds: list[_Second], now: float, t0: float, wall0: float,
                 keep: int) -> list[dict[str, Any]]:
    """Finished seconds plus the current one, with idle seconds filled in as zeros."""
    out: list[dict[str, Any]] = []
    last_sec = int(now - t0)
    # (Every second since the reset, within what is kept: not from the oldest bucket, which
    # a series nobody read leaves further back or nearer than one read every second.)
    first_sec = max(0, last_sec - keep + 1)
    by_sec = {b.second: b for b in seconds}
    for s in range(first_sec, last_sec + 1):
        b = by_sec.get(s) or _Second(s)
        out.append(b.row(wall0))
    return out
