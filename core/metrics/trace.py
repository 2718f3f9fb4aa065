"""The trace: what happened to each recent request, for the batch timeline.

A bounded ring (``capacity`` requests, oldest dropped) filled where a request ends: the
ledger (``core/batching/settle.py``) records each settled request before resolving its future, on
every path. Per request: when it arrived, when its batch started running, when it was
settled, its batch (id, rows), why the batch left, its A/B arm, and whether it succeeded.
Times are ``time.perf_counter()`` seconds, the clock the engine uses for requests.

Recording costs one tuple per request appended to a ``deque`` (a few hundred nanoseconds);
reading copies the ring and builds the frame outside any lock the engine needs.

Example:
    >>> frame = engine.timeline("mlp", last_s=2.0)
    >>> frame[["request_id", "arrived_s", "started_s", "done_s", "batch_id"]].head()
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from typing import Any, Iterable

import numpy as np
import pandas as pd

__all__ = ["Trace", "TIMELINE_COLUMNS"]

TIMELINE_COLUMNS = ["request_id", "arrived_s", "started_s", "done_s", "batch_id", "rows",
                    "batch_rows", "release_reason", "arm", "ok", "wait_ms", "compute_ms",
                    "handoff_ms"]

_ids = itertools.count(1)  # request ids, unique in the process
_NAN = math.nan


class Trace:
    """The last ``capacity`` settled requests of one model. Thread-safe (deque appends)."""

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._ring: deque[tuple] = deque(maxlen=capacity)

    def record_batch(self, requests: Iterable[Any], started: float, done: float,
                     batch_id: int, batch_rows: int, reason: str, ok: bool,
                     ran_until: float | None = None) -> None:
        """Requests of one batch that ran (``ok`` False: the run raised). ``ran_until``:
        when the run ended (default ``done``)."""
        end = done if ran_until is None else ran_until
        append = self._ring.append
        for r in requests:
            append((next(_ids), r._t_submit, started, end, done, batch_id, r._rows,
                    batch_rows, reason, r._arm, ok))

    def record_unrun(self, requests: Iterable[Any], done: float, reason: str) -> None:
        """Requests that ended without running (timed out, shed, refused, cancelled)."""
        append = self._ring.append
        for r in requests:
            append((next(_ids), r._t_submit, _NAN, _NAN, done, -1, r._rows, 0, reason,
                    r._arm, False))

    def frame(self, last_s: float | None = 2.0, now: float | None = None) -> pd.DataFrame:
        """Requests settled in the last ``last_s`` seconds (all kept if None), oldest first."""
        if last_s is None:
            rows = list(self._ring)
        else:
            # Newest last: walk back from the end and stop at the window's start, so a short
            # window costs what it holds, not what the ring holds.
            since = (time.perf_counter() if now is None else now) - last_s
            rows = []
            for r in reversed(self._ring.copy()):
                if r[4] < since:
                    break
                rows.append(r)
            rows.reverse()
        names = ["request_id", "arrived_s", "started_s", "ran_until_s", "done_s", "batch_id",
                 "rows", "batch_rows", "release_reason", "arm", "ok"]
        # Column by column (numpy for the numbers): several times cheaper than a frame
        # built from records, and this runs in the engine's process.
        cols = list(zip(*rows)) if rows else [()] * len(names)
        data: dict[str, Any] = {}
        for name, col in zip(names, cols):
            if name in ("release_reason", "arm"):
                data[name] = list(col)
            elif name == "ok":
                data[name] = np.fromiter(col, dtype=bool, count=len(col))
            elif name in ("request_id", "batch_id", "rows", "batch_rows"):
                data[name] = np.fromiter(col, dtype=np.int64, count=len(col))
            else:
                data[name] = np.fromiter(col, dtype=np.float64, count=len(col))
        data["wait_ms"] = (data["started_s"] - data["arrived_s"]) * 1000.0
        data["compute_ms"] = (data["ran_until_s"] - data["started_s"]) * 1000.0
        data["handoff_ms"] = (data["done_s"] - data["ran_until_s"]) * 1000.0
        f = pd.DataFrame({c: data[c] for c in TIMELINE_COLUMNS})
        order = np.argsort(data["arrived_s"], kind="stable")
        return f.iloc[order].reset_index(drop=True)

    def clear(self) -> None:
        self._ring.clear()
