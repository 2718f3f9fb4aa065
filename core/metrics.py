"""Live, bounded-memory metrics of one model (or, later, one A/B arm).

Latencies go into HdrHistograms (1 µs .. 1 h at 2 significant digits: ~1% precision, a
few KiB each) instead of lists that grow and get sorted. The per-second time series is a
ring of at most ``timeseries_seconds`` rows, each with its own small histogram for that
second's percentiles, so memory is flat however long the engine runs.

The collector thread records once per batch (``record_batch``); submit-time refusals are
recorded by the submitting thread (``record_refused``). Reads take a consistent snapshot.

Example:
    >>> m = ModelMetrics()
    >>> m.record_batch(rows=2, reason="full", compute_s=0.001, queue_s=[0.002, 0.001],
    ...                failed={}, depth=0)
    >>> m.snapshot().to_dict()["total_requests"]
    2
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd
from hdrh.histogram import HdrHistogram

__all__ = ["ModelMetrics", "MetricsSnapshot", "TIMESERIES_COLUMNS", "record_many"]

_LOW_US, _HIGH_US, _DIGITS = 1, 3_600_000_000, 2

TIMESERIES_COLUMNS = [
    "second", "time", "requests", "successes", "errors", "error_rate", "throughput_rps",
    "rows", "batches", "mean_batch_rows", "p50_ms", "p95_ms", "p99_ms", "max_ms",
    "mean_queue_ms", "mean_compute_ms", "queue_depth",
]


def _hist() -> HdrHistogram:
    return HdrHistogram(_LOW_US, _HIGH_US, _DIGITS)


def _us(seconds: float) -> int:
    v = int(seconds * 1e6)
    return _LOW_US if v < _LOW_US else (_HIGH_US if v > _HIGH_US else v)


def _us_array(seconds: np.ndarray) -> np.ndarray:
    us = (seconds * 1e6).astype(np.int64)
    np.maximum(us, _LOW_US, out=us)
    np.minimum(us, _HIGH_US, out=us)
    return us


# Latencies wait in a small buffer and enter the histograms in vectorised flushes (when
# the buffer fills, the second changes, or someone reads): recording a batch is then a
# couple of array copies instead of three histogram updates per request.
_PENDING = 4096


_VECTOR_MIN = 8


def record_many(hist: HdrHistogram, values: np.ndarray) -> None:
    """Record many values at once: ``record_value`` for each, vectorised with numpy.

    ``HdrHistogram.record_value`` costs about a microsecond per value in pure Python (it
    finds the bucket through ``bin()``); a batch of latencies is recorded here with the
    same bucket arithmetic on a numpy view of its counts. Equivalence with
    ``record_value`` is checked by the tests; if the library's internals ever change
    shape, this falls back to the one-by-one loop.
    """
    n = len(values)
    if n == 0:
        return
    counts = _counts_view(hist) if n > _VECTOR_MIN else None
    if counts is None:  # few values (cheaper one by one), or unknown internals
        for v in values.tolist():
            hist.record_value(v)
        return
    v = values.astype(np.int64, copy=False)
    # bit_length of (v | sub_bucket_mask), exact through frexp for values below 2**53
    bit_length = np.frexp((v | hist.sub_bucket_mask).astype(np.float64))[1].astype(np.int64)
    bucket = bit_length - hist.unit_magnitude - (hist.sub_bucket_half_count_magnitude + 1)
    sub = v >> (bucket + hist.unit_magnitude)
    index = ((bucket + 1) << hist.sub_bucket_half_count_magnitude) + (sub - hist.sub_bucket_half_count)
    keep = (v > 0) & (index >= 0) & (index < hist.counts_len)
    if not keep.all():  # record_value ignores values outside the histogram's range
        index, v = index[keep], v[keep]
        if len(v) == 0:
            return
    np.add.at(counts, index, 1)
    hist.total_count += len(v)
    hist.min_value = min(hist.min_value, int(v.min()))
    hist.max_value = max(hist.max_value, int(v.max()))


def _counts_view(hist: HdrHistogram) -> np.ndarray | None:
    view = getattr(hist, "_np_counts", None)
    if view is not None:
        return view
    try:
        view = np.ctypeslib.as_array(hist.counts)
        needed = ("sub_bucket_mask", "unit_magnitude", "sub_bucket_half_count_magnitude",
                  "sub_bucket_half_count", "counts_len", "total_count", "min_value",
                  "max_value")
        if view.shape != (hist.counts_len,) or not all(hasattr(hist, a) for a in needed):
            return None
    except (TypeError, ValueError, AttributeError):
        return None
    hist._np_counts = view
    return view


class _HistCopy:
    """A frozen copy of a histogram's counts, read with numpy.

    ``HdrHistogram.get_value_at_percentile`` walks the counts in a Python loop (about a
    millisecond per call at this precision); here a copy of the counts is taken (a memcpy,
    cheap enough to do under a lock) and percentiles are found with one cumulative sum,
    with the library's own index-to-value arithmetic, so the values are identical.
    """

    __slots__ = ("hist", "counts", "total", "max_value")

    def __init__(self, hist: HdrHistogram) -> None:
        self.hist = hist  # only its (immutable) bucket layout is used after this
        view = _counts_view(hist)
        self.counts = view.copy() if view is not None else None
        self.total = hist.total_count
        self.max_value = hist.max_value
        if self.counts is None:  # unknown internals: keep a real copy and use the library
            copy = _hist()
            copy.add(hist)
            self.hist = copy

    def percentiles(self, ps: tuple[float, ...]) -> list[float]:
        """Values (ms) at percentiles ``ps``, as ``get_value_at_percentile`` gives them."""
        if not self.total:
            return [0.0] * len(ps)
        h = self.hist
        if self.counts is None:
            return [h.get_value_at_percentile(p) / 1000.0 for p in ps]
        cum = np.cumsum(self.counts)
        out = []
        for p in ps:
            target = max(int(min(p, 100.0) * self.total / 100 + 0.5), 1)
            idx = int(np.searchsorted(cum, target))
            value = h.get_value_from_index(min(idx, len(cum) - 1))
            out.append((h.get_highest_equivalent_value(value) if p
                        else h.get_lowest_equivalent_value(value)) / 1000.0)
        return out

    def max_ms(self) -> float:
        if not self.total or not self.max_value:
            return 0.0
        return self.hist.get_highest_equivalent_value(self.max_value) / 1000.0


def _sparse(hist: Any) -> Any:
    """The non-zero buckets of a histogram as (indices, counts), or None."""
    if hist is None:
        return None
    view = _counts_view(hist)
    if view is None:
        return None
    nz = np.flatnonzero(view)
    return (nz, view[nz].copy()) if len(nz) else None


def _merged(parts: list[Any]) -> _HistCopy:
    """One frozen histogram from the sparse buckets of several seconds."""
    layout = _hist()
    copy = _HistCopy(layout)
    if copy.counts is None:  # unknown internals: no windows (percentiles read as zero)
        return copy
    counts = np.zeros_like(copy.counts)
    for part in parts:
        if part is not None:
            np.add.at(counts, part[0], part[1])
    copy.counts = counts
    copy.total = int(counts.sum())
    nz = np.flatnonzero(counts)
    copy.max_value = int(layout.get_value_from_index(int(nz[-1]))) if len(nz) else 0
    return copy


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


class ModelMetrics:
    """Counters, latency histograms and a per-second series for one model. Thread-safe."""

    def __init__(self, timeseries_seconds: int = 600, clock=time.monotonic,
                 wall_clock=time.time, keep_samples: int = 0) -> None:
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._seconds = timeseries_seconds
        # The most recent total latencies (ms), kept only where a test needs raw samples
        # (A/B arms): bounded, so memory stays flat.
        self._keep_samples = keep_samples
        self.reset()

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            # Buckets start on whole wall-clock seconds, so the series of different models
            # (and A/B arms) line up second for second in charts.
            t0, wall0 = self._clock(), self._wall()
            frac = wall0 % 1.0
            self._t0 = t0 - frac
            self._wall0 = wall0 - frac
            self._total = _hist()
            self._queue = _hist()
            self._compute = _hist()
            self._requests = self._successes = self._errors = 0
            self._rows = self._batches = 0
            self._sum_queue_s = self._sum_compute_s = self._sum_total_s = 0.0
            self._batch_sizes: Counter[int] = Counter()
            self._reasons: Counter[str] = Counter()
            self._errors_by_type: Counter[str] = Counter()
            self._incidents: Counter[str] = Counter()
            self._recent_errors: deque[dict[str, Any]] = deque(maxlen=50)
            self._series: deque[_Second] = deque(maxlen=self._seconds)
            self._cur = _Second(0)
            self._depth_now = 0
            self._pend_queue = np.empty(_PENDING, np.float64)
            self._pend_total = np.empty(_PENDING, np.float64)
            self._pend_n = 0
            self._samples: deque[float] = deque(maxlen=max(1, self._keep_samples))

    # -- recording -----------------------------------------------------------------
    def _bucket(self, now: float) -> _Second:
        sec = int(now - self._t0)
        cur = self._cur
        # A timestamp from before the current second (a caller's clock read that lost a
        # race for the lock) counts in the current second: reopening an earlier one would
        # put two rows for one second in the series.
        if sec > cur.second:
            self._flush()  # pending latencies belong to the second that is ending
            cur.seal()
            self._series.append(cur)
            cur = self._cur = _Second(sec)
        return cur

    def _flush(self) -> None:
        """Move buffered latencies into the histograms (caller holds the lock)."""
        n = self._pend_n
        if not n:
            return
        total_us = _us_array(self._pend_total[:n])
        cur = self._cur
        if cur.hist is None:
            cur.hist = _hist()
        queue_us = _us_array(self._pend_queue[:n])
        if cur.qhist is None:
            cur.qhist = _hist()
        record_many(self._total, total_us)
        record_many(cur.hist, total_us)
        record_many(self._queue, queue_us)
        record_many(cur.qhist, queue_us)
        self._pend_n = 0

    def record_batch(self, rows: int, reason: str, compute_s: float, queue_s: Iterable[float],
                     failed: dict[str, list[str]] | None = None, depth: int = 0,
                     now: float | None = None, total_s: Iterable[float] | None = None) -> None:
        """One executed batch: ``queue_s`` holds the queue time of each successful request
        and ``total_s`` its time from submit to settlement (default: queue + compute).

        ``failed`` maps an error type to the messages of requests of this batch that failed
        (their latency is not in the histograms). ``depth`` is the queue depth after it left.
        """
        q = np.asarray(queue_s, dtype=np.float64)
        n_ok = len(q)
        tot = q + compute_s if total_s is None else np.asarray(total_s, dtype=np.float64)
        sum_q = float(q.sum()) if n_ok else 0.0
        sum_t = float(tot.sum()) if n_ok else 0.0
        with self._lock:
            # Read the clock under the lock: records then reach the series in time order.
            cur = self._bucket(self._clock() if now is None else now)
            if n_ok:
                if self._pend_n + n_ok > _PENDING:
                    self._flush()
                if n_ok > _PENDING:  # a gigantic batch: record it directly
                    self._pend_queue, self._pend_total = (np.empty(n_ok, np.float64),
                                                          np.empty(n_ok, np.float64))
                k = self._pend_n
                self._pend_queue[k:k + n_ok] = q
                self._pend_total[k:k + n_ok] = tot
                self._pend_n = k + n_ok
                self._compute.record_value(_us(compute_s), n_ok)
                if cur.chist is None:
                    cur.chist = _hist()
                cur.chist.record_value(_us(compute_s), n_ok)
                if self._keep_samples:
                    self._samples.extend((tot * 1000.0).tolist())
            n_failed = 0
            if failed:
                for etype, messages in failed.items():
                    n_failed += len(messages)
                    self._errors_by_type[etype] += len(messages)
                    if cur.errs is None:
                        cur.errs = Counter()
                    cur.errs[etype] += len(messages)
                    for msg in messages[-5:]:
                        self._recent_errors.append({"time": self._wall(), "type": etype,
                                                    "message": msg})
            n = n_ok + n_failed
            self._requests += n
            self._successes += n_ok
            self._errors += n_failed
            self._rows += rows
            self._batches += 1
            self._sum_queue_s += sum_q
            self._sum_compute_s += compute_s * n_ok
            self._sum_total_s += sum_t
            self._batch_sizes[rows] += 1
            self._reasons[reason] += 1
            cur.requests += n
            cur.successes += n_ok
            cur.errors += n_failed
            cur.rows += rows
            cur.batches += 1
            cur.queue_s += sum_q
            cur.compute_s += compute_s * n_ok
            cur.total_s += sum_t
            cur.sizes[rows] += 1
            cur.reasons[reason] += 1
            if depth > cur.depth:
                cur.depth = depth
            self._depth_now = depth

    def record_refused(self, error_type: str, message: str, count: int = 1,
                       now: float | None = None) -> None:
        """Requests that failed without running (refused at submit, timed out in queue...)."""
        with self._lock:
            cur = self._bucket(self._clock() if now is None else now)
            self._requests += count
            self._errors += count
            self._errors_by_type[error_type] += count
            self._recent_errors.append({"time": self._wall(), "type": error_type,
                                        "message": message})
            cur.requests += count
            cur.errors += count
            if cur.errs is None:
                cur.errs = Counter()
            cur.errs[error_type] += count

    def samples_ms(self) -> list[float]:
        """The most recent successful requests' total latencies (ms), oldest first."""
        with self._lock:
            return list(self._samples) if self._keep_samples else []

    def record_incident(self, kind: str, message: str) -> None:
        """Something that went wrong outside any one request (e.g. a thread restarted):
        listed with the recent errors and counted by kind, but not as a failed request."""
        with self._lock:
            self._incidents[kind] += 1
            self._recent_errors.append({"time": self._wall(), "type": kind, "message": message})

    # -- reading -------------------------------------------------------------------
    def totals(self) -> dict[str, Any]:
        """The plain counters only (no percentiles, no frame): cheap enough for a status
        bar that polls every model."""
        with self._lock:
            return {"total_requests": self._requests, "success_count": self._successes,
                    "error_count": self._errors, "queue_depth": self._depth_now,
                    "batches": self._batches}

    def counters(self) -> dict[str, Any]:
        """Every cumulative counter, summed times (successful requests) in seconds, batch
        sizes and release reasons; no percentiles, so cheap enough for every scrape."""
        with self._lock:
            return {"total_requests": self._requests, "success_count": self._successes,
                    "error_count": self._errors, "queue_depth": self._depth_now,
                    "batches": self._batches, "rows": self._rows,
                    "sum_queue_s": self._sum_queue_s, "sum_compute_s": self._sum_compute_s,
                    "sum_total_s": self._sum_total_s,
                    "batch_sizes": dict(self._batch_sizes),
                    "release_reasons": dict(self._reasons)}

    def recent_rps(self, window_s: int = 5) -> float:
        """Successes per second over the last ``window_s`` full seconds, as in
        ``snapshot().throughput_rps`` but without building a snapshot."""
        with self._lock:
            self._bucket(self._clock())
            return _recent_rps(self._series, self._cur.second, window_s)

    def snapshot(self, queue_depth: int | None = None, now: float | None = None,
                 rate_window_s: float = 5.0, window_s: float | None = None) -> MetricsSnapshot:
        """A consistent snapshot. Under the lock only counters and histogram counts are
        copied (a few microseconds); percentiles and the frame are computed after, so a
        reader never holds up the collector that records batches.

        ``window_s``: counts, latencies, batch sizes, release reasons and error types over
        the last ``window_s`` seconds only (the current second included), instead of since
        the start or the last reset; ``recent_errors``, ``incidents`` and ``timeseries``
        are the same either way."""
        if window_s is not None:
            if not window_s > 0:
                raise ValueError(f"window_s must be > 0 seconds, got {window_s!r}")
            return self._window(queue_depth, now, rate_window_s, float(window_s))
        with self._lock:
            now = self._clock() if now is None else now
            self._bucket(now)  # roll the series forward so idle seconds show as zeros
            self._flush()
            total, queue, compute = (_HistCopy(self._total), _HistCopy(self._queue),
                                     _HistCopy(self._compute))
            seconds = list(self._series) + [self._cur.copy()]
            c = dict(requests=self._requests, ok=self._successes, errors=self._errors,
                     sum_q=self._sum_queue_s, sum_c=self._sum_compute_s,
                     sum_t=self._sum_total_s, batches=self._batches, rows=self._rows,
                     batch_sizes=dict(self._batch_sizes), reasons=dict(self._reasons),
                     by_type=dict(self._errors_by_type), incidents=dict(self._incidents),
                     depth=self._depth_now, recent=list(self._recent_errors))
            t0, wall0 = self._t0, self._wall0
        rows = _series_rows(seconds, now, t0, wall0, self._seconds)
        ok = c["ok"]
        rps = _recent_rps(seconds, int(now - t0), rate_window_s)
        tp50, tp95, tp99 = total.percentiles((50, 95, 99))
        qp50, qp99 = queue.percentiles((50, 99))
        cp50, cp99 = compute.percentiles((50, 99))
        return MetricsSnapshot(
            total_requests=c["requests"], success_count=ok, error_count=c["errors"],
            error_rate=c["errors"] / c["requests"] if c["requests"] else 0.0,
            avg_latency_ms=c["sum_t"] * 1000.0 / ok if ok else 0.0,
            p50_ms=tp50, p95_ms=tp95, p99_ms=tp99, max_latency_ms=total.max_ms(),
            avg_queue_ms=c["sum_q"] * 1000.0 / ok if ok else 0.0,
            p50_queue_ms=qp50, p99_queue_ms=qp99,
            avg_compute_ms=c["sum_c"] * 1000.0 / ok if ok else 0.0,
            p50_compute_ms=cp50, p99_compute_ms=cp99,
            batches=c["batches"], rows_total=c["rows"],
            avg_batch_rows=c["rows"] / c["batches"] if c["batches"] else 0.0,
            batch_sizes=dict(sorted(c["batch_sizes"].items())),
            release_reasons=c["reasons"], errors_by_type=c["by_type"],
            incidents=c["incidents"],
            queue_depth=c["depth"] if queue_depth is None else queue_depth,
            throughput_rps=rps, uptime_s=now - t0, recent_errors=c["recent"],
            timeseries=pd.DataFrame(rows, columns=TIMESERIES_COLUMNS),
        )

    def _window(self, queue_depth: int | None, now: float | None, rate_window_s: float,
                window_s: float) -> MetricsSnapshot:
        full = self.snapshot(queue_depth, now, rate_window_s)
        with self._lock:
            now = self._clock() if now is None else now
            self._bucket(now)
            self._flush()
            current = int(now - self._t0)
            first = current - int(np.ceil(window_s)) + 1
            parts = [b for b in self._series if b.second >= first] + [self._cur.copy()]
        return _window_snapshot(full, parts, window_s)


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


def _recent_rps(seconds: Iterable[_Second], current: int, window_s: float) -> float:
    """Successes per second over the last ``window_s`` full seconds before ``current``
    (idle seconds count as zeros; none before the oldest second recorded)."""
    done = [b for b in seconds if b.second < current]
    if not done:
        return 0.0
    first = max(done[0].second, current - int(window_s))
    span = current - first
    return sum(b.successes for b in done if b.second >= first) / span if span > 0 else 0.0


def _series_rows(seconds: list[_Second], now: float, t0: float, wall0: float,
                 keep: int) -> list[dict[str, Any]]:
    """Finished seconds plus the current one, with idle seconds filled in as zeros."""
    out: list[dict[str, Any]] = []
    last_sec = int(now - t0)
    first_sec = max(0, last_sec - keep + 1)
    by_sec = {b.second: b for b in seconds}
    if seconds:
        first_sec = max(first_sec, min(by_sec))
    for s in range(first_sec, last_sec + 1):
        b = by_sec.get(s) or _Second(s)
        out.append(b.row(wall0))
    return out
