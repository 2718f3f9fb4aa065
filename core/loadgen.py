"""Background open-loop traffic for the dashboard and notebooks.

A :class:`TrafficGenerator` sends requests to one engine target on a schedule (constant
or Poisson arrivals at ``rate_rps``) from its own named thread, whatever the engine does:
open loop, so a slow engine shows up as queueing, not as a politely slower client. It keeps
no futures; done callbacks count outcomes, so memory stays flat however long it runs.

Example:
    >>> gen = TrafficGenerator(engine.submit, "mlp", sample=lambda rng: x, rate_rps=200)
    >>> gen.start(); ...; gen.stop()
    >>> gen.status().sent
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .config import _check_choice, _check_float, _check_int

__all__ = ["TrafficGenerator", "TrafficStatus", "ARRIVAL_PATTERNS", "arrival_times"]

ARRIVAL_PATTERNS = ("constant", "poisson")

SubmitFn = Callable[..., Future]


@dataclass(frozen=True)
class TrafficStatus:
    """Counts of one generator's traffic so far."""

    target: str
    running: bool
    rate_rps: float
    pattern: str
    rows_per_request: int
    sent: int
    refused: int
    succeeded: int
    failed: int
    elapsed_s: float
    max_lag_ms: float
    refused_by_type: dict[str, int] = field(default_factory=dict)

    @property
    def in_flight(self) -> int:
        return self.sent - self.refused - self.succeeded - self.failed


def arrival_times(pattern: str, rate_rps: float, n: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Offsets (s) of ``n`` arrivals from the start: evenly spaced, or exponential gaps.

    >>> arrival_times("constant", 4.0, 3, np.random.default_rng(0)).tolist()
    [0.25, 0.5, 0.75]
    """
    if pattern == "constant":
        gaps = np.full(n, 1.0 / rate_rps)
    else:
        gaps = rng.exponential(1.0 / rate_rps, n)
    return np.cumsum(gaps)


class TrafficGenerator:
    """Open-loop sender to ``target`` via ``submit(target, x)`` (see module docstring)."""

    def __init__(self, submit: SubmitFn, target: str, sample: Callable[[np.random.Generator], Any],
                 rate_rps: float = 100.0, pattern: str = "constant", rows_per_request: int = 1,
                 duration_s: float | None = None, seed: int | None = 0,
                 submit_kwargs: dict[str, Any] | None = None,
                 key_pool: int | None = None) -> None:
        _check_float("rate_rps", rate_rps, 0.1, 1_000_000.0)
        _check_choice("pattern", pattern, ARRIVAL_PATTERNS)
        _check_int("rows_per_request", rows_per_request, 1, 65536)
        if duration_s is not None:
            _check_float("duration_s", duration_s, 0.01, 86_400.0)
        self.target = target
        self.rate_rps = float(rate_rps)
        self.pattern = pattern
        self.rows_per_request = rows_per_request
        self.duration_s = duration_s
        self._submit = submit
        self._submit_kwargs = submit_kwargs or {}
        # With a key pool, each request carries key="user-<k>" for k drawn from the pool
        # (sticky A/B routing): like traffic from that many users.
        self._key_pool = key_pool
        self._rng = np.random.default_rng(seed)
        # A small pool of inputs, reused round-robin: sampling per request would cost more
        # than the engine's own per-request work.
        self._pool = [sample(self._rng) for _ in range(16)]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sent = self._refused = self._ok = self._failed = 0
        self._refused_by_type: Counter[str] = Counter()
        self._max_lag = 0.0
        self._t_start: float | None = None
        self._t_end: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"traffic-{target}", daemon=True)

    def start(self) -> TrafficGenerator:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until a bounded run ends (or ``timeout_s``); True when it has ended."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def status(self) -> TrafficStatus:
        now = time.perf_counter()
        start = self._t_start or now
        end = self._t_end or now
        with self._lock:
            return TrafficStatus(
                target=self.target, running=self.running, rate_rps=self.rate_rps,
                pattern=self.pattern, rows_per_request=self.rows_per_request, sent=self._sent,
                refused=self._refused, succeeded=self._ok, failed=self._failed,
                elapsed_s=end - start, max_lag_ms=self._max_lag * 1000.0,
                refused_by_type=dict(self._refused_by_type))

    def _done(self, fut: Future) -> None:
        ok = not fut.cancelled() and fut.exception() is None
        with self._lock:
            if ok:
                self._ok += 1
            else:
                self._failed += 1

    def _run(self) -> None:
        perf = time.perf_counter
        t0 = self._t_start = perf()
        chunk = max(16, int(self.rate_rps))  # schedule a second of arrivals at a time
        offsets = arrival_times(self.pattern, self.rate_rps, chunk, self._rng)
        base = 0.0
        idx = 0
        i = 0
        pool = self._pool
        try:
            while not self._stop.is_set():
                if idx == len(offsets):
                    base += float(offsets[-1])
                    offsets = arrival_times(self.pattern, self.rate_rps, chunk, self._rng)
                    idx = 0
                due = t0 + base + float(offsets[idx])
                if self.duration_s is not None and due - t0 > self.duration_s:
                    break
                now = perf()
                if now < due:
                    # Sleep, never spin: spinning would hold the GIL from the engine.
                    self._stop.wait(min(due - now, 0.05))
                    continue
                lag = now - due
                if lag > self._max_lag:
                    self._max_lag = lag
                x = pool[i % len(pool)]
                i += 1
                idx += 1
                kwargs = self._submit_kwargs
                if self._key_pool:
                    kwargs = {**kwargs, "key": f"user-{i * 7919 % self._key_pool}"}
                try:
                    fut = self._submit(self.target, x, **kwargs)
                except Exception as err:  # noqa: BLE001 - refusals are counted, not fatal
                    with self._lock:
                        self._sent += 1
                        self._refused += 1
                        self._refused_by_type[type(err).__name__] += 1
                    continue
                with self._lock:
                    self._sent += 1
                fut.add_done_callback(self._done)
        finally:
            self._t_end = perf()
            self._stop.set()
