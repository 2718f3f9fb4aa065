"""The engine's event log: what happened to each model and experiment (settings changed, a
hot swap, jobs and traffic started and ended, metrics reset, inputs changed, an A/B split
changed), for marks on the Monitor's charts and for notebooks.

Example:
    >>> engine.configure("mlp", max_batch_size=16)
    >>> engine.events("mlp")[["kind", "text"]].values.tolist()[-1]
    ['settings', 'max_batch_size 32 → 16']
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from core.metrics.events import EventLog

__all__ = ["EventMethods"]


class EventMethods:
    """Mixed into the engine: uses its namespace (``self._ns``) and log (``self._events``)."""

    _ns: Any
    _events: EventLog

    def events(self, name: str | None = None, since_s: float | None = None) -> pd.DataFrame:
        """What happened to ``name`` (for an A/B experiment: to it and to both its arms), or
        to everything when None, in the last ``since_s`` seconds (all kept when None):
        columns ``time`` (UTC, like the metrics' series), ``target``, ``kind`` (settings,
        swap, job, traffic, reset, inputs, ab) and ``text``, oldest first. The newest 2,000
        events are kept."""
        targets: tuple[str, ...] | None = None
        if name is not None:
            entry, exp = self._ns.resolve(name)
            targets = (name,) if exp is None else (name, exp.a, exp.b)
        return self._events.frame(targets, since_s)

    def _event(self, target: str, kind: str, text: str) -> None:
        self._events.add(target, kind, text)
