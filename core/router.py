"""A/B traffic split between two models (basic weighted random routing).

An experiment has a name (used like a model name in ``submit``/``predict``), arms ``a``
and ``b`` naming registered models, and ``b_share``, the probability a request goes to B.
Routing is a seedable ``random.Random`` draw; each arm has its own metrics, recorded
before the caller's future resolves, so reports always agree with what callers saw.

Example:
    >>> exp = ABExperiment("exp", a="clf-v1", b="clf-v2", b_share=0.2, seed=0)
    >>> exp.route()
    ('a', 'clf-v1')
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any

from .config import _check_choice, _check_float
from .errors import ConfigError
from .metrics import MetricsSnapshot, ModelMetrics

__all__ = ["ABExperiment", "ABReport", "AB_MODES"]

#: Routing modes. Only "random" exists so far; sticky and shadow routing are planned.
AB_MODES = ("random",)


class ABExperiment:
    """Routes each request to arm A or B; holds per-arm metrics. Thread-safe."""

    def __init__(self, name: str, a: str, b: str, b_share: float = 0.5, mode: str = "random",
                 seed: int | None = None, timeseries_seconds: int = 600) -> None:
        if a == b:
            raise ConfigError(f"arms a and b must be two different models, got {a!r} twice")
        _check_float("b_share", b_share, 0.0, 1.0)
        _check_choice("mode", mode, AB_MODES)
        self.name = name
        self.a = a
        self.b = b
        self.b_share = float(b_share)
        self.mode = mode
        self.seed = seed
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.metrics = {"a": ModelMetrics(timeseries_seconds), "b": ModelMetrics(timeseries_seconds)}

    def route(self, key: Any = None) -> tuple[str, str]:
        """(arm, model name) for one request."""
        if self._rng.random() < self.b_share:
            return "b", self.b
        return "a", self.a

    def update(self, b_share: float | None = None, a: str | None = None,
               b: str | None = None) -> None:
        with self._lock:
            if b_share is not None:
                _check_float("b_share", b_share, 0.0, 1.0)
            new_a = a if a is not None else self.a
            new_b = b if b is not None else self.b
            if new_a == new_b:
                raise ConfigError(f"arms a and b must be two different models, got {new_a!r} twice")
            self.a, self.b = new_a, new_b
            if b_share is not None:
                self.b_share = float(b_share)

    def reset_metrics(self) -> None:
        for m in self.metrics.values():
            m.reset()

    def report(self) -> ABReport:
        snaps = {arm: m.snapshot() for arm, m in self.metrics.items()}
        return ABReport(self.name, self.a, self.b, self.b_share, self.mode, snaps)


@dataclass(frozen=True)
class ABReport:
    """Per-arm figures of an experiment.

    Example:
        >>> engine.ab_report("exp").to_dict()["arms"]["b"]["share_served"]
        0.21
    """

    name: str
    a: str
    b: str
    b_share: float
    mode: str
    arms: dict[str, MetricsSnapshot]

    def to_dict(self) -> dict[str, Any]:
        total = sum(s.total_requests for s in self.arms.values())
        arms = {}
        for arm, s in self.arms.items():
            arms[arm] = {
                "model": self.a if arm == "a" else self.b,
                "requests": s.total_requests, "successes": s.success_count,
                "errors": s.error_count, "error_rate": s.error_rate,
                "p50_ms": s.p50_ms, "p95_ms": s.p95_ms, "p99_ms": s.p99_ms,
                "avg_latency_ms": s.avg_latency_ms,
                "mean_batch_rows": s.avg_batch_rows,
                "share_served": s.total_requests / total if total else 0.0,
            }
        return {"name": self.name, "a": self.a, "b": self.b, "b_share": self.b_share,
                "mode": self.mode, "total_requests": total, "arms": arms}
