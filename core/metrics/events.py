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

__all__ = ["EventLog", "EVENT_COLUMNS", "EVENT_KINDS", "describe_changes", "merge_changes"]

EVENT_COLUMNS = ("time", "target", "kind", "text")
#: The kinds of event, each a mark of its own on the charts.
EVENT_KINDS = ("settings", "swap", "job", "traffic", "reset", "inputs", "ab")


class EventLog:
    """The newest ``keep`` events of an engine, oldest first."""

    def __init__(self, keep: int = 2000, clock: Callable[[], float] = time.time) -> None:
        self._events: deque[tuple[float, str, str, str]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._clock = clock

    def add(self, target: str, kind: str, text: str, merge_s: float = 0.0) -> None:
        """Log an event. With ``merge_s``, a change (:func:`describe_changes`' words) within
        that many seconds of the target's last event of the same kind joins it: one mark
        from the first value to the last (a slider moved by arrow keys made 34 marks, each
        restarting the "since the settings changed" window; a newcomer); one that undoes
        it takes the mark away."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}; expected one of "
                             f"{', '.join(EVENT_KINDS)}")
        with self._lock:
            now = self._clock()
            last = self._events[-1] if self._events else None
            if merge_s and last is not None and last[1:3] == (target, kind) \
                    and now - last[0] <= merge_s:
                joined = merge_changes(last[3], text)
                if joined is not None:
                    self._events.pop()
                    if joined:
                        self._events.append((now, target, kind, joined))
                    return
            self._events.append((now, target, kind, text))

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


def _changes(text: str) -> dict[str, tuple[str, str]] | None:
    parts = {}
    for part in text.split(", "):
        field, sep, rest = part.partition(" ")
        before, arrow, after = rest.partition(" → ")
        if not (field.isidentifier() and sep and arrow) or field in parts \
                or " " in before or " " in after:   # (values are single words)
            return None
        parts[field] = (before, after)
    return parts


def merge_changes(first: str, then: str) -> str | None:
    """Two :func:`describe_changes` texts as one, from the first values to the last:
    ``"max_batch_size 32 → 31"`` then ``"max_batch_size 31 → 30"`` is ``"max_batch_size
    32 → 30"``; ``""`` when the second undid the first, None when either is not such text."""
    a, b = _changes(first), _changes(then)
    if a is None or b is None:
        return None
    joined = {f: (a[f][0] if f in a else b[f][0], b[f][1] if f in b else a[f][1])
              for f in {**a, **b}}
    return ", ".join(f"{f} {x} → {y}" for f, (x, y) in joined.items() if x != y)
