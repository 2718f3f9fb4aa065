"""A load run as histograms instead of rows: what a long run from load agents returns.

A load agent that returns one row per request sends ~100 B a request to the driver: 50k req/s
for a minute is 3 M rows. :func:`digest_frame` folds an agent's rows, where they were
measured, into a digest of a few KB a second: one HdrHistogram of the answered requests'
latencies (µs, 3 significant digits), one per second of the schedule (by intended send
time, so every agent's second ``s`` is the same second), the counts of sends and answers a
second, the failures by type, and the sums the summary's means need. :class:`LoadDigest` adds
digests up on the driver, losslessly: the merged histograms hold every value at their
precision, so the percentiles of the whole run and of each second are those of all the
agents' requests together (unlike averaged percentiles). Each second's histograms are kept
encoded (a KB or two each) and merged when the series is read.

A histogram's percentile is HdrHistogram's: the recorded value at or above the rank (at 3
significant digits), where the rows' summary (pandas) interpolates linearly between the two
values around it. Over many requests the two agree within the histogram's precision; over a
handful they differ (latencies 10 and 100 ms: p50 10.0 from a histogram, 55.0 from rows).

Example:
    >>> d = LoadDigest()
    >>> d.add(digest_frame(result.frame))         # doctest: +SKIP
    >>> d.summary_fields()["p99_ms"], d.per_second()   # doctest: +SKIP
"""

from __future__ import annotations

import base64
import math
from collections import Counter
from typing import Any

import numpy as np

__all__ = ["HIST_RANGE", "digest_frame", "LoadDigest", "histogram_of", "encode_histogram"]

#: HdrHistogram range of latencies: 1 µs .. 1 h at 3 significant digits (the engine's own
#: metrics use 2).
HIST_RANGE = (1, 3_600_000_000, 3)
# Percentiles in each second's row of the series.
_SECOND_PCTS = (50.0, 99.0)


def histogram_of(latency_ms: Any) -> Any:
    """An HdrHistogram (µs) of these latencies (ms), values below 1 µs counted as 1 µs."""
    from hdrh.histogram import HdrHistogram
    hist = HdrHistogram(*HIST_RANGE)
    us = np.asarray(latency_ms, dtype=np.float64)
    us = us[np.isfinite(us)]
    if len(us):
        values, counts = np.unique(np.clip(np.rint(us * 1000.0), 1, HIST_RANGE[1]),
                                   return_counts=True)
        for v, c in zip(values.astype(np.int64).tolist(), counts.tolist()):
            hist.record_value(v, c)
    return hist


def encode_histogram(hist: Any) -> str:
    """The histogram as base64 text ("" when it holds nothing)."""
    return base64.b64encode(hist.encode()).decode() if hist.get_total_count() else ""


def digest_frame(frame: Any) -> dict[str, Any]:
    """The digest of a load run's rows (:data:`~core.lab.loadgen.LOAD_COLUMNS`): picklable,
    a few KB a second of schedule."""
    ok = frame["ok"].to_numpy(bool)
    lat = frame["latency_ms"].to_numpy(np.float64)
    second = np.floor(np.nan_to_num(frame["intended_s"].to_numpy(np.float64), nan=0.0)
                      ).astype(np.int64)
    errors = frame["error"].to_numpy(object)
    # each second's rows, by one sort (not a pass over every row for every second)
    order = np.argsort(second, kind="stable")
    secs, starts = np.unique(second[order], return_index=True)
    series = []
    for s, lo, hi in zip(secs.tolist(), starts.tolist(), [*starts[1:].tolist(), len(order)]):
        mine = order[lo:hi]
        good = mine[ok[mine]]
        series.append({"second": int(s), "sent": len(mine), "succeeded": len(good),
                       "histogram": encode_histogram(histogram_of(lat[good]))})
    rows = frame["batch_rows"].to_numpy(np.int64)
    engine_side = ok & (rows > 0)
    done = frame["done_s"].to_numpy(np.float64)
    queue = frame["queue_ms"].to_numpy(np.float64)[ok]
    compute = frame["compute_ms"].to_numpy(np.float64)[ok]
    return {
        "sent": int(len(frame)), "succeeded": int(ok.sum()),
        "errors": dict(Counter(str(e) or "Error" for e in errors[~ok])),
        "histogram": encode_histogram(histogram_of(lat[ok])),
        "series": series,
        # sums for the summary's means (answered requests; batch rows where the answer said)
        "batch_rows_sum": int(rows[engine_side].sum()), "batch_rows_n": int(engine_side.sum()),
        "batch_rows_max": int(rows[engine_side].max()) if engine_side.any() else 0,
        "queue_ms_sum": float(np.nansum(queue)), "queue_ms_n": int(np.isfinite(queue).sum()),
        "compute_ms_sum": float(np.nansum(compute)),
        "compute_ms_n": int(np.isfinite(compute).sum()),
        "last_done_s": float(np.nanmax(done)) if np.isfinite(done).any() else math.nan,
    }


class LoadDigest:
    """Digests of several agents (or runs) added up (see the module docstring)."""

    def __init__(self) -> None:
        from hdrh.histogram import HdrHistogram
        self.histogram = HdrHistogram(*HIST_RANGE)
        self.sent = self.succeeded = 0
        self.errors: Counter[str] = Counter()
        self._sums = Counter()
        self.max_batch_rows = 0     # the largest batch an answered request rode in
        self._seconds: dict[int, dict[str, Any]] = {}
        self.last_done_s = math.nan

    def add(self, digest: dict[str, Any]) -> None:
        """Add one agent's digest (its histograms decoded and added: lossless)."""
        from hdrh.histogram import HdrHistogram
        self.sent += digest["sent"]
        self.succeeded += digest["succeeded"]
        self.errors.update(digest["errors"])
        if digest["histogram"]:
            self.histogram.add(HdrHistogram.decode(base64.b64decode(digest["histogram"])))
        for k in ("batch_rows_sum", "batch_rows_n", "queue_ms_sum", "queue_ms_n",
                  "compute_ms_sum", "compute_ms_n"):
            self._sums[k] += digest[k]
        self.max_batch_rows = max(self.max_batch_rows, int(digest.get("batch_rows_max", 0)))
        for row in digest["series"]:
            sec = self._second(row["second"])
            sec["sent"] += row["sent"]
            sec["succeeded"] += row["succeeded"]
            if row["histogram"]:
                sec["histograms"].append(row["histogram"])
        self.last_done_s = float(np.fmax(self.last_done_s, digest["last_done_s"]))

    def _second(self, s: int) -> dict[str, Any]:
        return self._seconds.setdefault(int(s), {"sent": 0, "succeeded": 0, "histograms": []})

    def add_lost(self, intended_s: Any, error: str) -> None:
        """Count sends that no agent made (``intended_s``: their times) as failed."""
        intended = np.asarray(intended_s, dtype=np.float64)
        self.sent += len(intended)
        self.errors[error] += len(intended)
        for s, n in zip(*np.unique(np.floor(intended).astype(np.int64), return_counts=True)):
            self._second(s)["sent"] += int(n)

    @property
    def failed(self) -> int:
        return self.sent - self.succeeded

    def percentile_ms(self, pct: float) -> float:
        if not self.histogram.get_total_count():
            return math.nan
        return self.histogram.get_value_at_percentile(pct) / 1000.0

    def count_within(self, limit_ms: float) -> int:
        """Answered requests with a latency of at most ``limit_ms`` (at the histogram's
        precision)."""
        it = self.histogram.get_recorded_iterator()
        lim = limit_ms * 1000.0
        return int(sum(v.count_at_value_iterated_to for v in it
                       if v.value_iterated_to <= lim))

    def summary_fields(self) -> dict[str, Any]:
        """The latency and count fields of :meth:`LoadResult.summary` (percentiles from the
        merged histogram: 3 significant digits)."""
        s, ok = self._sums, self.succeeded
        return {
            "sent": self.sent, "succeeded": ok, "failed": self.failed,
            "error_rate": self.failed / self.sent if self.sent else 0.0,
            "p50_ms": self.percentile_ms(50.0), "p95_ms": self.percentile_ms(95.0),
            "p99_ms": self.percentile_ms(99.0),
            "max_ms": self.histogram.get_max_value() / 1000.0 if ok else math.nan,
            "mean_batch_rows": s["batch_rows_sum"] / s["batch_rows_n"]
            if s["batch_rows_n"] else math.nan,
            "max_batch_rows": self.max_batch_rows if s["batch_rows_n"] else math.nan,
            "mean_queue_ms": s["queue_ms_sum"] / s["queue_ms_n"] if s["queue_ms_n"] else math.nan,
            "mean_compute_ms": s["compute_ms_sum"] / s["compute_ms_n"]
            if s["compute_ms_n"] else math.nan,
        }

    def per_second(self) -> Any:
        """One row a second of the schedule: sent, succeeded, failed, and the p50 / p99 of
        that second's answered requests (every agent's merged)."""
        import pandas as pd
        from hdrh.histogram import HdrHistogram
        rows = []
        for s in sorted(self._seconds):
            sec = self._seconds[s]
            row = {"second": s, "sent": sec["sent"], "succeeded": sec["succeeded"],
                   "failed": sec["sent"] - sec["succeeded"]}
            hist = None
            for enc in sec["histograms"]:
                h = HdrHistogram.decode(base64.b64decode(enc))
                if hist is None:
                    hist = h
                else:
                    hist.add(h)
            for p in _SECOND_PCTS:
                row[f"p{p:g}_ms"] = (hist.get_value_at_percentile(p) / 1000.0
                                     if hist is not None else math.nan)
            rows.append(row)
        return pd.DataFrame(rows, columns=["second", "sent", "succeeded", "failed",
                                           *(f"p{p:g}_ms" for p in _SECOND_PCTS)])
