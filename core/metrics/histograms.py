"""Latency histograms: HdrHistograms of microseconds (1 µs .. 1 h at 2 significant digits,
~1 % precision, a few KiB each), vectorised recording, cheap copies and sparse merges.

Example:
    >>> h = _hist(); record_many(h, _us_array(np.array([0.001, 0.002])))
    >>> _HistCopy(h).percentiles((50,))
    [1.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

__all__ = ["record_many"]

_LOW_US, _HIGH_US, _DIGITS = 1, 3_600_000_000, 2


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
    if not len(nz):
        return None
    # Kept for every second of the series: 4-byte indices and counts (a second's count of
    # one bucket is far below 2**32), half what int64 takes.
    counts = view[nz]
    return nz.astype(np.int32), counts.astype(np.uint32 if counts.max() < 2**32 else np.int64)


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
