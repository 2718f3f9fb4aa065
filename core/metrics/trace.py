"""The trace: what happened to each recent request, for the batch timeline.

A bounded ring (``capacity`` requests, oldest dropped) filled where a request ends: the
ledger (``core/batching/settle.py``) records each settled request before resolving its future, on
every path. Per request: when it arrived, when its batch started running, when it was
settled, its batch (id, rows), why the batch left, its A/B arm and experiment, and whether
it succeeded.
Times are ``time.perf_counter()`` seconds, the clock the engine uses for requests.

Recording costs one entry per batch (the batch's fields once, and three short lists of its
requests' arrival times, rows and arms); reading copies the ring and builds the frame,
column by column, outside the engine's path.

Example:
    >>> frame = engine.timeline("mlp", last_s=2.0)
    >>> frame[["request_id", "arrived_s", "started_s", "done_s", "batch_id"]].head()
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = ["Trace", "TIMELINE_COLUMNS"]

TIMELINE_COLUMNS = ["request_id", "arrived_s", "started_s", "done_s", "batch_id", "rows",
                    "batch_rows", "release_reason", "arm", "ok", "wait_ms", "compute_ms",
                    "handoff_ms", "high", "experiment", "shadow_copy"]

_NAN = math.nan

# Request ids, unique in the process (a timeline of an A/B experiment joins two models'
# traces): a batch takes a block of them under this lock.
_id_lock = threading.Lock()
_next_id = [1]


def _take_ids(n: int) -> int:
    with _id_lock:
        first = _next_id[0]
        _next_id[0] = first + n
    return first


def last_settled(frame: pd.DataFrame, limit: int) -> pd.DataFrame:
    """The last ``limit`` requests of a timeline to be settled (ids are taken in that
    order), still in order of arrival."""
    if len(frame) <= limit:
        return frame
    keep = frame["request_id"] >= np.partition(frame["request_id"].to_numpy(), -limit)[-limit]
    return frame[keep].reset_index(drop=True)


class Trace:
    """The last ``capacity`` settled requests of one model. Thread-safe.

    Recorded per batch, not per request: one entry holds the batch's fields once and the
    requests' own (arrival, rows, arm) as three lists; the frame expands them when it is
    read, outside the engine's path.
    """

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._ring: deque[tuple] = deque()
        self._held = 0            # requests in the ring
        self._lock = threading.Lock()
        #: Set once the model has seen a high-priority request: from then on each entry
        #: also keeps which of its requests were (nothing per request before).
        self.classes = False
        #: The model's own views begin here (``reset``); an experiment's on the model begin
        #: at its own reset, so a model's reset leaves an experiment's timeline whole.
        self.since = -math.inf

    def _append(self, entry: tuple, n: int) -> None:
        with self._lock:
            ring = self._ring
            ring.append(entry)
            self._held += n
            over = self._held - self.capacity
            while over > 0:
                old = ring[0]
                n_old = len(old[1])
                if n_old <= over:
                    ring.popleft()
                else:  # keep the newest of this batch's requests
                    ring[0] = (old[0] + over, old[1][over:], old[2][over:], old[3][over:],
                               *old[4:11], None if old[11] is None else old[11][over:])
                    n_old = over
                self._held -= n_old
                over -= n_old

    def record_batch(self, requests: Sequence[Any], started: float, done: float,
                     batch_id: int, batch_rows: int, reason: str, ok: bool,
                     ran_until: float | None = None) -> None:
        """Requests of one batch that ran (``ok`` False: the run raised). ``ran_until``:
        when the run ended (default ``done``)."""
        n = len(requests)
        if not n:
            return
        end = done if ran_until is None else ran_until
        self._append((_take_ids(n), [r._t_submit for r in requests],
                      [r._rows for r in requests], [r._arm for r in requests],
                      started, end, done, batch_id, batch_rows, reason, ok,
                      [r._high for r in requests] if self.classes else None), n)

    def record_unrun(self, requests: Sequence[Any], done: float, reason: str) -> None:
        """Requests that ended without running (timed out, shed, refused, cancelled)."""
        n = len(requests)
        if not n:
            return
        self._append((_take_ids(n), [r._t_submit for r in requests],
                      [r._rows for r in requests], [r._arm for r in requests],
                      _NAN, _NAN, done, -1, 0, reason, False,
                      [r._high for r in requests] if self.classes else None), n)

    def _entries(self, last_s: float | None, now: float | None,
                 limit: int | None = None, since: float | None = None) -> list[tuple]:
        """The entries settled in the window, newest last (``since``: from then on; None:
        since the model's reset)."""
        with self._lock:
            if limit is None:
                entries = list(self._ring)
            else:   # the newest batches holding ``limit`` requests (not a copy of the ring)
                entries, held, k = [], 0, len(self._ring)
                while k and held < limit:
                    k -= 1
                    entries.append(self._ring[k])
                    held += len(self._ring[k][1])
                entries.reverse()
        since = self.since if since is None else since
        if last_s is not None:
            since = max(since, (time.perf_counter() if now is None else now) - last_s)
        if since > -math.inf:
            # Newest last: walk back from the end and stop at the window's start, so a short
            # window costs what it holds, not what the ring holds.
            k = len(entries)
            while k and entries[k - 1][6] >= since:
                k -= 1
            entries = entries[k:]
        return entries

    def parts(self, last_s: float | None = 10.0, now: float | None = None,
              experiment: str | None = None, since: float | None = None,
              arms: bool = True) -> tuple[dict[str, np.ndarray], list[Any]]:
        """The requests that ran in the last ``last_s`` seconds (of ``experiment`` only, and
        settled from ``since`` on: None, since the model's reset): their ``wait_ms``,
        ``compute_ms`` and ``handoff_ms``, and their arms. What
        :func:`core.metrics.breakdown.breakdown_table` takes, without the timeline's frame
        (a third of its cost; ``arms=False``: no arms, an empty list)."""
        entries = [e for e in self._entries(last_s, now, since=since) if e[7] >= 0]
        if experiment is not None:   # (an experiment's rows: its arms' labels name it)
            kept = []
            for e in entries:
                mine = [i for i, a in enumerate(e[3])
                        if getattr(a, "experiment", None) == experiment]
                if len(mine) == len(e[3]):
                    kept.append(e)
                elif mine:
                    kept.append((e[0], [e[1][i] for i in mine], None,
                                 [e[3][i] for i in mine], *e[4:]))
            entries = kept
        sizes = np.fromiter((len(e[1]) for e in entries), dtype=np.int64, count=len(entries))
        total = int(sizes.sum())
        arrived = np.fromiter(itertools.chain.from_iterable(e[1] for e in entries),
                              dtype=np.float64, count=total)

        def per_batch(i: int) -> np.ndarray:
            return np.repeat(np.fromiter((e[i] for e in entries), dtype=np.float64,
                                         count=len(entries)), sizes)
        started, ran_until, done = per_batch(4), per_batch(5), per_batch(6)
        return ({"wait_ms": (started - arrived) * 1000.0,
                 "compute_ms": (ran_until - started) * 1000.0,
                 "handoff_ms": (done - ran_until) * 1000.0},
                list(itertools.chain.from_iterable(e[3] for e in entries)) if arms else [])

    def frame(self, last_s: float | None = 2.0, now: float | None = None,
              limit: int | None = None, since: float | None = None) -> pd.DataFrame:
        """Requests settled in the last ``last_s`` seconds (all kept if None) and since
        ``since`` (None: the model's reset), oldest first; with ``limit``, the last ``limit``
        of them to be settled (a chart that draws 120 need not read 20,000), read from the
        newest batches only."""
        entries = self._entries(last_s, now, limit, since)
        sizes = np.fromiter((len(e[1]) for e in entries), dtype=np.int64, count=len(entries))
        total = int(sizes.sum())

        def per_batch(i: int, dtype: Any) -> np.ndarray:
            return np.repeat(np.fromiter((e[i] for e in entries), dtype=dtype,
                                         count=len(entries)), sizes)

        def per_request(i: int, dtype: Any) -> np.ndarray:
            return np.fromiter(itertools.chain.from_iterable(e[i] for e in entries),
                               dtype=dtype, count=total)

        first = per_batch(0, np.int64)
        offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        data: dict[str, Any] = {
            "request_id": first + offsets,
            "arrived_s": per_request(1, np.float64),
            "started_s": per_batch(4, np.float64),
            "ran_until_s": per_batch(5, np.float64),
            "done_s": per_batch(6, np.float64),
            "batch_id": per_batch(7, np.int64),
            "rows": per_request(2, np.int64),
            "batch_rows": per_batch(8, np.int64),
            "release_reason": list(itertools.chain.from_iterable(
                [e[9]] * len(e[1]) for e in entries)),
            "arm": list(itertools.chain.from_iterable(e[3] for e in entries)),
            # (whose arm: an experiment's label names it, core.ab.routing.ArmLabel)
            "experiment": [getattr(arm, "experiment", None) for e in entries for arm in e[3]],
            # (B's copies of A's requests in shadow mode: not requests a caller sent to B)
            "shadow_copy": np.fromiter((getattr(arm, "copy", False) for e in entries
                                        for arm in e[3]), dtype=bool, count=total),
            "ok": per_batch(10, bool),
            "high": np.fromiter(itertools.chain.from_iterable(
                e[11] if e[11] is not None else (False,) * len(e[1]) for e in entries),
                dtype=bool, count=total),
        }
        data["wait_ms"] = (data["started_s"] - data["arrived_s"]) * 1000.0
        data["compute_ms"] = (data["ran_until_s"] - data["started_s"]) * 1000.0
        data["handoff_ms"] = (data["done_s"] - data["ran_until_s"]) * 1000.0
        f = pd.DataFrame({c: data[c] for c in TIMELINE_COLUMNS})
        if not total:   # (text columns as text: empty lists made them float64)
            f = f.astype({"release_reason": "str", "arm": object, "experiment": object})
        order = np.argsort(data["arrived_s"], kind="stable")
        f = f.iloc[order].reset_index(drop=True)
        return f if limit is None else last_settled(f, limit)

    def reset(self) -> None:
        """The model's own views begin now; its requests stay in the ring for the views of
        the experiments it is an arm of (which begin at their own reset)."""
        self.since = time.perf_counter()

    def clear(self) -> None:
        with self._lock:
            self._ring.clear()
            self._held = 0
