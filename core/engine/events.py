"""The engine's event log: what happened to each model and experiment (settings changed, a
hot swap, jobs and traffic started and ended, metrics reset, inputs changed, an A/B split
changed), for marks on the Monitor's charts and for notebooks.

Example:
    >>> engine.configure("mlp", max_batch_size=16)
    >>> engine.events("mlp")[["kind", "text"]].values.tolist()[-1]
    ['settings', 'max_batch_size 32 → 16']
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator, TypeVar

import pandas as pd

from core.errors import ConfigError
from core.metrics.events import EventLog

__all__ = ["EventMethods", "call_hooks"]

log = logging.getLogger("batchlab.engine")
T = TypeVar("T")


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
    _lock: Any
    _events: EventLog
    settings_guards: list[Callable[[str, str], None]]

    def _guard(self, name: str, what: str) -> None:
        for guard in list(self.settings_guards):
            guard(name, what)

    def _guard_use(self, name: str, what: str) -> None:
        """Ask the guards that hold ``name`` whole (``guard.holds_use``: a replay's private
        copy) before something that leaves its settings as they are but skews what it
        measures: a reset of its metrics, making it an A/B arm. A sweep's guard lets these
        through (a reset during it is counted as a disturbance, and said)."""
        for guard in list(self.settings_guards):
            if getattr(guard, "holds_use", False):
                guard(name, what)

    def _held(self, name: str) -> bool:
        """Whether a guard holds ``name`` whole against this thread (see :meth:`_guard_use`)."""
        try:
            self._guard_use(name, "reset its metrics")
        except ConfigError:
            return True
        return False

    @contextlib.contextmanager
    def _busy(self, name: str, what: str, doing: str) -> Iterator[None]:
        """``what`` (a warm-up; a change sent to a remote model's server) goes on with
        ``name`` while the block runs: the guards are asked (``doing``) and the mark made
        under the engine's lock, the one a sweep starts under (:meth:`_settings_locked`),
        so either the sweep refuses it or it refuses the sweep (:meth:`_busy_with`)."""
        with self._lock:
            self._guard(name, doing)
            marks = self.__dict__.setdefault("_busy_marks", {})
            marks.setdefault(name, []).append(what)
        try:
            yield
        finally:
            with self._lock:
                marks[name].remove(what)
                if not marks[name]:
                    del marks[name]

    def _busy_with(self, name: str) -> str | None:
        """What is going on with ``name`` that a sweep must not start during (it would
        measure the warm-up's runs, or restore settings a server is being sent), e.g. "a
        warm-up"; None when nothing is."""
        with self._lock:
            marks = self.__dict__.get("_busy_marks", {}).get(name)
            return marks[0] if marks else None

    def _settings_locked(self, start: Callable[[], T]) -> T:
        """``start()`` under the lock the settings guards are asked under (configure,
        warm-up, replace, unload, inputs): a job that changes a model's settings and puts
        them back starts in it, so a change is either refused or made before the job
        reads what it restores."""
        with self._lock:
            return start()

    def events(self, name: str | None = None, since_s: float | None = None) -> pd.DataFrame:
        """What happened to ``name`` (for an A/B experiment: to it and to both its arms), or
        to everything when None, in the last ``since_s`` seconds (all kept when None):
        columns ``time`` (UTC, like the metrics' series), ``target``, ``kind`` (settings,
        swap, job, traffic, reset, inputs, ab) and ``text``, oldest first. The newest 2,000
        events are kept; changes of a model's settings within a second of the last join it
        (a slider's steps: one event, from the first values to the last)."""
        targets: tuple[str, ...] | None = None
        if name is not None:
            entry, exp = self._ns.resolve(name)
            targets = (name,) if exp is None else (name, exp.a, exp.b)
        return self._events.frame(targets, since_s)

    def _event(self, target: str, kind: str, text: str) -> None:
        self._events.add(target, kind, text)
