"""Metrics per priority class: the requests sent with ``priority=1`` ("high") and with
``priority=0`` or ``2`` ("normal") each recorded in a :class:`ModelMetrics` of their own,
besides the model's (a request's *sink*). Made on first use, so a model nobody sends a
priority to keeps none.

Example:
    >>> classes = PriorityClasses(600)
    >>> sink = classes.sink(1, None)            # (ModelMetrics of "high",)
    >>> classes.snapshots()["high"].total_requests
    0
"""

from __future__ import annotations

import numbers
from typing import Any

from core.errors import InputValidationError
from .model import ModelMetrics
from .snapshot import MetricsSnapshot

__all__ = ["PriorityClasses", "class_name", "check_priority", "PRIORITIES"]

#: The priorities a request may carry (Triton's ``priority_levels=2``): 1 is the high class;
#: 2 the normal one, and 0 the default (normal).
PRIORITIES = (0, 1, 2)


#: Latency samples kept per class, for comparing the classes (as for A/B arms).
_SAMPLES = 20_000


def class_name(priority: int) -> str:
    return "high" if priority == 1 else "normal"


class PriorityClasses:
    """The per-class metrics of one model (thread-safe: dict operations only)."""

    def __init__(self, timeseries_seconds: int = 600) -> None:
        self._seconds = timeseries_seconds
        self._metrics: dict[str, ModelMetrics] = {}

    def sink(self, priority: int, sink: tuple[ModelMetrics, ...] | None
             ) -> tuple[ModelMetrics, ...]:
        """``sink`` with the metrics of ``priority``'s class added."""
        name = class_name(priority)
        m = self._metrics.get(name)
        if m is None:
            m = self._metrics.setdefault(name, ModelMetrics(self._seconds,
                                                            keep_samples=_SAMPLES))
        return (m,) if not sink else (*sink, m)

    def snapshots(self, window_s: float | None = None) -> dict[str, MetricsSnapshot]:
        return {k: m.snapshot(window_s=window_s) for k, m in list(self._metrics.items())}

    def samples_ms(self, name: str) -> list[float]:
        m = self._metrics.get(name)
        return m.samples_ms() if m is not None else []

    def reset(self) -> None:
        for m in list(self._metrics.values()):
            m.reset()

    def __bool__(self) -> bool:
        return bool(self._metrics)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"PriorityClasses({sorted(self._metrics)})"


def check_priority(priority: Any) -> int | None:
    """``priority`` if it is one of :data:`PRIORITIES` (or None); else an
    :class:`InputValidationError` (a ValueError) that says what is expected."""
    if priority is None or (isinstance(priority, numbers.Integral)   # (numpy's too)
                            and not isinstance(priority, bool) and priority in PRIORITIES):
        return None if priority is None else int(priority)
    shown = repr(priority)   # (a 400-digit number is not echoed whole)
    raise InputValidationError(f"priority must be 1 (the high class), 2 or 0 (the normal class; 0 is "
                     f"the default), or None; got {shown[:40]}{'…' if len(shown) > 40 else ''}")
