"""What happened to a model, for marks on its charts: settings changed, a hot swap, a job or
traffic started or ended, metrics reset, inputs changed. A bounded log (the newest
``keep``), cheap to write (a deque append under a lock) and read as a frame.

Example:
    >>> log = EventLog(); log.add("mlp", "settings", "max_batch_size 32 → 16")
    >>> log.frame("mlp")[["target", "kind", "text"]].values.tolist()
    [['mlp', 'settings', 'max_batch_size 32 → 16']]
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Iterable

import pandas as pd

__all__ = ["EventLog", "EVENT_COLUMNS", "EVENT_KINDS", "describe_changes"]

EVENT_COLUMNS = ("time", "target", "kind", "text")
#: The kinds of event, each a mark of its own on the charts.
EVENT_KINDS = ("settings", "swap", "job", "traffic", "reset", "inputs", "ab")


class EventLog:
    """The newest ``keep`` events of an engine, oldest first."""

    def __init__(self, keep: int = 2000, clock: Callable[[], float] = time.time) -> None:
        self._events: deque[tuple[float, str, str, str]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._clock = clock

    def add(self, target: str, kind: str, text: str) -> None:
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}; expected one of "
                             f"{', '.join(EVENT_KINDS)}")
        with self._lock:
            self._events.append((self._clock(), target, kind, text))

    def frame(self, targets: str | Iterable[str] | None = None,
              since_s: float | None = None) -> pd.DataFrame:
        """Events of ``targets`` (a name or several; all when None) in the last ``since_s``
        seconds (all kept when None), oldest first; ``time`` as a UTC timestamp like the
        metrics' time series."""
        if isinstance(targets, str):
            targets = (targets,)
        wanted = None if targets is None else set(targets)
        since = None if since_s is None else self._clock() - float(since_s)
        with self._lock:
            rows = [e for e in self._events
                    if (wanted is None or e[1] in wanted) and (since is None or e[0] >= since)]
        # (the same dtypes with no rows as with some: empty, they were object and [s])
        frame = pd.DataFrame(rows, columns=list(EVENT_COLUMNS)).astype(
            {"time": "float64", "target": "str", "kind": "str", "text": "str"})
        frame["time"] = pd.to_datetime(frame["time"], unit="s").astype("datetime64[ns]")
        return frame

    def forget(self, target: str) -> None:
        """Drop the events of ``target`` (a model unloaded, an experiment deleted)."""
        with self._lock:
            kept = [e for e in self._events if e[1] != target]
            self._events.clear()
            self._events.extend(kept)


def describe_changes(before: object, after: object) -> str:
    """``"max_batch_size 32 → 16, policy deadline → adaptive"``: the fields of two
    dataclasses of one type that differ."""
    fields = getattr(before, "__dataclass_fields__", {})
    parts = [f"{f} {getattr(before, f)} → {getattr(after, f)}" for f in fields
             if getattr(before, f) != getattr(after, f)]
    return ", ".join(parts) or "no change"
