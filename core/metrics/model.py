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
import threading
import time
from collections import Counter, deque
from typing import Any, Iterable

import numpy as np
import pandas as pd

from core.config import check_positive_s
from .histograms import _HistCopy, _hist, _us, _us_array, record_many
from .seconds import _recent_rps, _Second, _series_rows
from .snapshot import TIMESERIES_COLUMNS, MetricsSnapshot, _window_snapshot

__all__ = ["ModelMetrics"]

# Latencies wait in a small buffer and enter the histograms in vectorised flushes (when
# the buffer fills, the second changes, or someone reads): recording a batch is then a
# couple of array copies instead of three histogram updates per request.
_PENDING = 4096

#: The longest error message kept among the recent errors (characters): what comes from a
#: caller (an input named with 4 MiB) is kept cut, not whole 50 times per model.
MAX_MESSAGE_CHARS = 1000


def _brief(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return f"{message[:MAX_MESSAGE_CHARS]}… (cut: {len(message):,} characters in all)"


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
            # Where in its first second the measurement began: the part before a reset
            # counted nothing (rates and uptime divide by the time since, not before).
            self._start = frac
            self._wall0 = wall0 - frac
            self._total = _hist()
            self._queue = _hist()
            self._compute = _hist()
            self._requests = self._successes = self._errors = 0
            self._rows = self._batches = 0
            self._rows_ok = self._batches_ok = 0   # of successful requests / runs
            self._sum_queue_s = self._sum_compute_s = self._sum_total_s = 0.0
            self._batch_sizes: Counter[int] = Counter()
            self._batch_compute_s: Counter[int] = Counter()  # run seconds by batch size
            self._last_batch_t: float | None = None  # this clock's time of the last batch
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
            series = self._series
            series.append(cur)
            # Kept by time, not by count: seconds nobody read leave no bucket, and a
            # series kept by count reached further back the less it was looked at
            # (metrics(window_s=60) of 10 s kept: 0 requests polled, 200 not; an adversary).
            while series and series[0].second < sec - self._seconds:
                series.popleft()
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
                     now: float | None = None, total_s: Iterable[float] | None = None,
                     runs: int = 1, run_s: float | None = None, ok_rows: int | None = None,
                     run_ok: bool = True) -> None:
        """One executed batch: ``queue_s`` holds the queue time of each successful request
        and ``total_s`` its time from submit to settlement (default: queue + compute).
        ``runs``: the batch ran as that many equal runs (a model whose batch axis is fixed
        at 1 runs a request's rows one at a time), counted as that many batches. ``run_s``:
        the run's own time when it differs from its requests' ``compute_s`` (a retry's
        requests count the failed batch's run too; the run does not).

        ``failed`` maps an error type to the messages of requests of this batch that failed
        (their latency is not in the histograms). ``depth`` is the queue depth after it left.
        ``ok_rows``: the rows of the successful requests (default: ``rows`` when all
        succeeded, else their share); ``run_ok=False``: the run itself raised. Triton counts
        only successful inferences and executions (``inference_count``,
        ``execution_count``): ``counters()["rows_ok"]``/``["batches_ok"]``.
        """
        q = np.asarray(queue_s, dtype=np.float64)
        n_ok = len(q)
        tot = q + compute_s if total_s is None else np.asarray(total_s, dtype=np.float64)
        sum_q = float(q.sum()) if n_ok else 0.0
        sum_t = float(tot.sum()) if n_ok else 0.0
        with self._lock:
            # Read the clock under the lock: records then reach the series in time order.
            t = self._clock() if now is None else now
            cur = self._bucket(t)
            self._last_batch_t = t
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
                                                    "message": _brief(msg)})
            n = n_ok + n_failed
            self._requests += n
            self._successes += n_ok
            self._errors += n_failed
            size = rows if runs == 1 else rows // runs
            self._rows += rows
            self._batches += runs
            if run_ok:
                self._batches_ok += runs
                if ok_rows is None:
                    ok_rows = rows if n_ok and not n_failed else rows * n_ok // n if n else 0
                self._rows_ok += ok_rows
            self._sum_queue_s += sum_q
            self._sum_compute_s += compute_s * n_ok
            self._sum_total_s += sum_t
            self._batch_sizes[size] += runs
            self._batch_compute_s[size] += compute_s if run_s is None else run_s
            self._reasons[reason] += runs
            cur.requests += n
            cur.successes += n_ok
            cur.errors += n_failed
            cur.rows += rows
            cur.batches += runs
            cur.queue_s += sum_q
            cur.compute_s += compute_s * n_ok
            cur.total_s += sum_t
            cur.sizes[size] += runs
            cur.reasons[reason] += runs
            if depth > cur.depth:
                cur.depth = depth
            self._depth_now = depth

    def note_depth(self, depth: int) -> None:
        """The queue's depth now, from a watcher (the model's supervisor): the depth was
        written only when a batch left, so a stalled run with 40 queued charted 0."""
        with self._lock:
            cur = self._bucket(self._clock())
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
                                        "message": _brief(message)})
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
            self._recent_errors.append({"time": self._wall(), "type": kind,
                                        "message": _brief(message)})

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
                    "batches_ok": self._batches_ok, "rows_ok": self._rows_ok,
                    "sum_queue_s": self._sum_queue_s, "sum_compute_s": self._sum_compute_s,
                    "sum_total_s": self._sum_total_s,
                    "batch_sizes": dict(self._batch_sizes),
                    "batch_compute_s": dict(self._batch_compute_s),
                    "last_batch_wall": None if self._last_batch_t is None
                    else self._wall0 + (self._last_batch_t - self._t0),
                    "release_reasons": dict(self._reasons)}

    def depth_series(self) -> dict[Any, int]:
        """Each kept second's largest queue depth, by its ``time`` as in ``timeseries``
        (seconds with none left out): what an experiment's series reads of its arms'
        models, without a snapshot's percentiles (the Monitor took two whole snapshots of
        each arm's model a refresh for this column; a reviewer)."""
        with self._lock:
            self._bucket(self._clock())
            pairs = [(b.second, b.depth) for b in self._series]
            pairs.append((self._cur.second, self._cur.depth))
            wall0 = self._wall0
        return {pd.Timestamp(wall0 + s, unit="s"): d for s, d in pairs if d}

    def recent_rps(self, window_s: int = 5) -> float:
        """Successes per second over the last ``window_s`` full seconds, as in
        ``snapshot().throughput_rps`` but without building a snapshot."""
        with self._lock:
            self._bucket(self._clock())
            return _recent_rps(self._series, self._cur.second, window_s, self._start,
                               self._seconds)

    def snapshot(self, queue_depth: int | None = None, now: float | None = None,
                 rate_window_s: float = 5.0, window_s: float | None = None) -> MetricsSnapshot:
        """A consistent snapshot. Under the lock only counters and histogram counts are
        copied (a few microseconds); percentiles and the frame are computed after, so a
        reader never holds up the collector that records batches.

        ``window_s``: counts, latencies, batch sizes, release reasons and error types over
        the last ``window_s`` seconds only (the current second included), instead of since
        the start or the last reset; ``recent_errors``, ``incidents`` and ``timeseries``
        are the same either way. The series is kept in whole seconds: the window starts at
        the second whose start is nearest to ``window_s`` ago, and the snapshot's
        ``window_s`` says what it covers (within half a second of what was asked, or the
        current second's part, or less after a reset)."""
        if window_s is not None:
            window_s = check_positive_s("window_s", window_s)
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
            t0, wall0, start = self._t0, self._wall0, self._start
        rows = _series_rows(seconds, now, t0, wall0, self._seconds)
        ok = c["ok"]
        rps = _recent_rps(seconds, int(now - t0), rate_window_s, start, self._seconds)
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
            throughput_rps=rps, uptime_s=now - t0 - start, recent_errors=c["recent"],
            timeseries=pd.DataFrame(rows, columns=TIMESERIES_COLUMNS),
        )

    def _window(self, queue_depth: int | None, now: float | None, rate_window_s: float,
                window_s: float) -> MetricsSnapshot:
        full = self.snapshot(queue_depth, now, rate_window_s)
        with self._lock:
            now = self._clock() if now is None else now
            self._bucket(now)
            self._flush()
            since = now - self._t0
            current = int(since)
            # Whole seconds, the current one's part included: those whose start is nearest
            # to ``window_s`` ago (window_s=1 at 0.1 s into a second covered that 0.1 s, and
            # said 1: 20 requests of 200 a second).
            first = (min(int(np.floor(since - window_s + 0.5)), current)
                     if window_s < since + 1.0 else -1)   # (inf: all)
            parts = [b for b in self._series if b.second >= first] + [self._cur.copy()]
            # What the window covers, as its label: from that second's start, from the
            # reset, or from the oldest second kept once older ones were dropped
            # (window_s=1000 with 60 s kept said 1000 over 60 s of counts).
            origin = max(self._start, current - self._seconds)
        return _window_snapshot(full, parts, since - max(first, origin))
