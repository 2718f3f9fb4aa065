"""Built-in traffic: open-loop generators that are clients of ``submit``, one per target.

The engine only offers ``submit``; this module keeps the generators (at most one per
target), so the engine itself knows nothing about load generation.

Example:
    >>> traffic = TrafficManager(engine.submit)
    >>> traffic.start("mlp", sample=lambda rng: x, rate_rps=200)
    >>> traffic.stop("mlp")
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np

from .errors import ModelNotFoundError
from .loadgen import SubmitFn, TrafficGenerator, TrafficStatus

__all__ = ["TrafficManager"]


class TrafficManager:
    """Traffic generators by target. Thread-safe."""

    def __init__(self, submit: SubmitFn) -> None:
        self._submit = submit
        self._lock = threading.Lock()
        self._gens: dict[str, TrafficGenerator] = {}

    def start(self, target: str, sample: Callable[[np.random.Generator], Any],
              **options: Any) -> TrafficStatus:
        """Start sending to ``target`` (replacing traffic already going there)."""
        gen = TrafficGenerator(self._submit, target, sample, **options)
        with self._lock:
            old = self._gens.pop(target, None)
            self._gens[target] = gen
        if old is not None:
            old.stop()
        gen.start()
        return gen.status()

    def stop(self, target: str | None = None) -> None:
        """Stop the traffic to ``target`` (or to every target)."""
        with self._lock:
            gens = ([self._gens[target]] if target in self._gens else
                    (list(self._gens.values()) if target is None else []))
        for g in gens:
            g.stop()

    def wait(self, target: str, timeout_s: float | None = None) -> TrafficStatus:
        """Block until the bounded run to ``target`` ends (or ``timeout_s``), and until
        every request it sent has an answer; returns its final status."""
        gen = self._gens.get(target)
        if gen is None:
            raise ModelNotFoundError(f"no traffic was started to {target!r}; start it with "
                                     "engine.start_traffic(target, ...)")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        gen.wait(timeout_s)
        while gen.status().in_flight > 0 and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.01)
        return gen.status()

    def statuses(self) -> list[TrafficStatus]:
        return [g.status() for g in list(self._gens.values())]

    def running(self) -> bool:
        return any(g.running for g in list(self._gens.values()))
