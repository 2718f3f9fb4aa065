"""The engine's event log: what happened to each model and experiment (settings changed, a
hot swap, jobs and traffic started and ended, metrics reset, inputs changed, an A/B split
changed), for marks on the Monitor's charts and for notebooks.

Example:
    >>> engine.configure("mlp", max_batch_size=16)
    >>> engine.events("mlp")[["kind", "text"]].values.tolist()[-1]
    ['settings', 'max_batch_size 32 → 16']
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import pandas as pd

from core.metrics.events import EventLog

__all__ = ["EventMethods", "call_hooks"]

log = logging.getLogger("batchlab.engine")


def call_hooks(hooks: list[Callable[..., None]], *args: Any) -> None:
    """Call each hook; one that fails is logged, and the others (and close) go on."""
    for hook in list(hooks):
        try:
            hook(*args)
        except Exception:  # noqa: BLE001
            log.exception("hook %r failed", hook)


class EventMethods:
    """Mixed into the engine: uses its namespace (``self._ns``) and log (``self._events``).
    ``settings_guards``: called with a model's name and what a caller is about to do to it
    (change its settings, warm it up, replace or unload it) before it is done; one that
    raises refuses it (the lab's: a sweep measuring the model)."""

    _ns: Any
    _events: EventLog
    settings_guards: list[Callable[[str, str], None]]

    def _guard(self, name: str, what: str) -> None:
        for guard in list(self.settings_guards):
            guard(name, what)

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
