"""Warm a model up at every batch size it will see, and show what that buys.

The first ``session.run`` at a new shape pays for memory planning, kernel selection and
cache misses; a user whose first real batch of 32 pays that sees a latency spike. Warm-up
runs each batch size (powers of two up to ``max_batch_size``, and the max itself) a few
times directly on the session, so it is *not* counted as traffic in the metrics, and
reports the first (cold) run against the median of the rest (warm).

Example:
    >>> report = engine.warmup("mlp", iterations=5)
    >>> report.frame[["batch_size", "cold_ms", "warm_p50_ms"]]  # doctest: +SKIP
    >>> engine.is_warm("mlp")
    True
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from core.config import _check_float, _shown, as_list, plain
from core.errors import (BatchlabError, ConfigError, EngineClosedError, InferenceError,
                         ResourceLimitError)
from core.models import ModelInfo, ids_refused, interface

__all__ = ["WarmupReport", "warmup_batch_sizes", "run_warmup", "WARMUP_COLUMNS", "WarmupMethods",
           "check_batchable_sizes", "WARMUP_PURPOSES"]

WARMUP_COLUMNS = ["batch_size", "cold_ms", "warm_p50_ms", "warm_p95_ms", "warm_min_ms",
                  "cold_over_warm", "iterations"]

#: What may run a warm-up (``WarmupReport.purpose``): the Warm-up page's own, or a cost
#: profile timing a model's batch sizes (the Experiments page's, or profile_cost()).
WARMUP_PURPOSES = ("warm-up", "cost profile")

#: progress(done_runs, total_runs, batch_size)
ProgressFn = Callable[[int, int, int], None]


@dataclass(frozen=True)
class WarmupReport:
    """Cold vs warm latency per batch size for one model.

    Example:
        >>> report.frame.columns.tolist()
        ['batch_size', 'cold_ms', 'warm_p50_ms', 'warm_p95_ms', 'warm_min_ms', 'cold_over_warm', 'iterations']
    """

    model: str
    frame: pd.DataFrame
    duration_s: float
    #: what ran it: "warm-up", or the job that timed the model's sizes through warm-up (a
    #: "cost profile"): the Warm-up page shows the last report whoever asked for it
    purpose: str = "warm-up"

    @property
    def batch_sizes(self) -> list[int]:
        return [int(b) for b in self.frame["batch_size"]]

    @property
    def disturbed_sizes(self) -> list[int]:
        """Batch sizes whose warm runs took clearly longer than their cold one (by a fifth
        and 0.05 ms): something else had the cores while they ran (a first run is not
        faster than warm ones on its own; on a size run before, the two are about equal and
        noise alone tips them, hence the margin)."""
        f = self.frame
        slow = (f["warm_p50_ms"] > 1.2 * f["cold_ms"]) & (f["warm_p50_ms"] > f["cold_ms"] + 0.05)
        return [int(b) for b in f.loc[slow, "batch_size"]]

    @property
    def spiky_sizes(self) -> list[int]:
        """Batch sizes whose warm p95 is over five times their warm median (and a
        millisecond above it): a few warm runs were interrupted (another program, the
        garbage collector, the VM), so a latency objective set from the median alone
        would be missed now and then (a newcomer's 10 ms p95 beside a 0.18 ms median)."""
        f = self.frame
        spiky = ((f["warm_p95_ms"] > 5 * f["warm_p50_ms"])
                 & (f["warm_p95_ms"] > f["warm_p50_ms"] + 1.0))
        return [int(b) for b in f.loc[spiky, "batch_size"]]


def warmup_batch_sizes(max_batch_size: int, batchable: bool = True) -> list[int]:
    """Powers of two up to ``max_batch_size``, plus ``max_batch_size`` itself.

    >>> warmup_batch_sizes(24)
    [1, 2, 4, 8, 16, 24]
    """
    if not batchable:
        return [1]
    sizes = []
    b = 1
    while b < max_batch_size:
        sizes.append(b)
        b *= 2
    sizes.append(max_batch_size)
    return sizes


class _RunGuard:
    """Stops ONNX Runtime runs (``RunOptions.terminate``) once ``time_limit_s`` has passed
    or ``stop`` is set; checked every 50 ms by a small named thread."""

    def __init__(self, model: str, time_limit_s: float | None,
                 stop: threading.Event | None) -> None:
        self.model = model
        self.limit_s = time_limit_s
        self.stop = stop
        self.tripped: str | None = None
        self._ro = None
        self._done = threading.Event()
        self._t_end = None if time_limit_s is None else time.monotonic() + time_limit_s
        self._thread = threading.Thread(target=self._watch, name=f"warmup-guard-{model}",
                                        daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(0.05):
            if self.stop is not None and self.stop.is_set():
                self.tripped = "cancelled"
            elif self._t_end is not None and time.monotonic() > self._t_end:
                self.tripped = "time"
            if self.tripped:
                ro = self._ro
                if ro is not None:
                    ro.terminate = True
                return

    def options(self):
        import onnxruntime as ort

        ro = ort.RunOptions()
        self._ro = ro
        if self.tripped:
            ro.terminate = True
        return ro

    def check(self, runs: tuple[int, int]) -> None:
        """Raise if tripped; ``runs``: (finished, total) so far."""
        if self.tripped == "cancelled":
            raise ResourceLimitError(f"warm-up of model {self.model!r} was cancelled")
        if self.tripped == "time" and runs[0] > 0:   # (runs finish: not hung; 10**9 of
            # them were told "a run did not finish; the model may be hung")
            raise ResourceLimitError(
                f"warm-up of model {self.model!r} reached its time limit of {self.limit_s:g} s "
                f"after {runs[0]:,} of its {runs[1]:,} runs: give fewer iterations or batch "
                "sizes, or raise time_limit_s")
        if self.tripped == "time":
            raise ResourceLimitError(
                f"warm-up of model {self.model!r} was stopped after its time limit of "
                f"{self.limit_s:g} s (a run did not finish); the model may be hung or far too "
                "slow: warm it up at smaller batch sizes or raise time_limit_s")

    def close(self) -> None:
        self._done.set()


def run_warmup(model: str, run: Callable[..., object],
               make_input: Callable[[int], Sequence[np.ndarray]], batch_sizes: Sequence[int],
               iterations: int = 10, progress: ProgressFn | None = None,
               clock: Callable[[], float] = time.perf_counter,
               time_limit_s: float | None = None,
               stop: threading.Event | None = None, purpose: str = "warm-up") -> WarmupReport:
    """Run ``run`` ``iterations`` times at each batch size; first run cold, the rest warm.

    With ``time_limit_s`` or ``stop``, a run still going when the limit passes or ``stop``
    is set is stopped (when ``run`` is terminable: it takes ONNX Runtime ``RunOptions``)
    and :class:`~core.errors.ResourceLimitError` is raised.
    """
    iterations = plain(iterations)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 2:
        raise ConfigError(f"iterations must be an int >= 2 (one cold run, then warm runs), "
                          f"got {iterations!r}")
    if not batch_sizes:
        raise ConfigError("batch_sizes must name at least one batch size")
    terminable = getattr(run, "terminable", False)
    guard = _RunGuard(model, time_limit_s, stop) if (time_limit_s or stop) else None
    total = iterations * len(batch_sizes)
    done = 0
    rows = []
    t_start = clock()
    try:
        for bs in batch_sizes:
            arrays = make_input(bs)
            times_ms = []
            for _ in range(iterations):
                if guard is not None:
                    guard.check((done, total))
                t0 = clock()
                try:
                    if terminable and guard is not None:
                        run(arrays, guard.options())
                    else:
                        run(arrays)
                except Exception as err:
                    if guard is not None:
                        guard.check((done, total))
                    if isinstance(err, BatchlabError):
                        raise
                    raise InferenceError(f"warm-up of {model!r} failed at batch size {bs}: "
                                         f"{type(err).__name__}: {err}") from err
                times_ms.append((clock() - t0) * 1000.0)
                done += 1
                if progress is not None:
                    progress(done, total, bs)
            warm = np.asarray(times_ms[1:])
            cold = times_ms[0]
            p50 = float(np.median(warm))
            rows.append({
                "batch_size": int(bs), "cold_ms": cold, "warm_p50_ms": p50,
                "warm_p95_ms": float(np.percentile(warm, 95)), "warm_min_ms": float(warm.min()),
                "cold_over_warm": cold / p50 if p50 > 0 else float("nan"),
                "iterations": iterations,
            })
        if guard is not None:
            guard.check((done, total))
    finally:
        if guard is not None:
            guard.close()
    return WarmupReport(model=model, frame=pd.DataFrame(rows, columns=WARMUP_COLUMNS),
                        duration_s=clock() - t_start, purpose=purpose)


def checked_batch_sizes(batch_sizes: Any) -> list[int]:
    """``batch_sizes`` as a list of Python ints >= 1; a ConfigError naming it otherwise (8 for
    [8] was a TypeError, and [0] was refused as "rows")."""
    sizes = [plain(b) for b in as_list("batch_sizes", batch_sizes, "[1, 8, 32]")]
    bad = [b for b in sizes if isinstance(b, bool) or not isinstance(b, int) or b < 1]
    if bad or not sizes:
        raise ConfigError(f"batch_sizes must be whole numbers of rows >= 1, such as [1, 8, 32]; "
                          f"got {_shown(bad[0])} in it" if bad else
                          "batch_sizes must name at least one batch size, such as [1, 8, 32]")
    return sizes


def check_batchable_sizes(name: str, info: ModelInfo, batch_sizes: Sequence[int]) -> None:
    if not info.runs_any_rows and any(b != 1 for b in batch_sizes):
        raise ConfigError(f"model {name!r} is not batchable ({info.batch_reason}); "
                          "warm it up at batch size 1 only")


_STOP_LOCK = threading.Lock()


class _Either:
    """Set when either event is (a caller's stop, or the engine closing)."""

    def __init__(self, a: threading.Event | None, b: threading.Event) -> None:
        self._a, self._b = a, b

    def is_set(self) -> bool:
        return self._b.is_set() or (self._a is not None and self._a.is_set())


class WarmupMethods:
    """The engine's warm-up methods (mixed into :class:`~core.engine.EngineCore`, whose
    namespace ``_ns`` and ``config`` they use)."""

    _ns: Any
    config: Any
    on_close: list
    _check_open: Callable[[], None]
    _guard: Callable[[str, str], None]
    _busy: Callable[..., Any]
    _ab: Any

    def warmup(self, name: str, iterations: int = 10, batch_sizes: Sequence[int] | None = None,
               progress: ProgressFn | None = None, *, time_limit_s: float | None = None,
               stop: threading.Event | None = None,
               inputs_of: str | None = None, purpose: str = "warm-up") -> WarmupReport:
        """Run ``name`` at each batch size it will see (``iterations`` times each) outside
        the metrics; returns cold vs warm latency per batch size.

        Bounded: past ``time_limit_s`` (default ``EngineConfig.warmup_time_limit_s``) or
        once ``stop`` is set, the run going on is stopped and
        :class:`~core.errors.ResourceLimitError` is raised. ``inputs_of``: another model
        with the same inputs whose samples (its real inputs) to run with (a replay's copy).
        ``purpose``: what the report says ran it (a cost profile times sizes this way)."""
        if purpose not in WARMUP_PURPOSES:   # (shown on the Warm-up page: not free text)
            raise ConfigError(f"purpose must be one of {', '.join(map(repr, WARMUP_PURPOSES))}"
                              f", got {purpose!r:.60}")
        entry = self._ns.entry(name)
        self._guard(name, "warm it up")
        info = entry.info
        if inputs_of is not None and interface(self._ns.entry(inputs_of).info) != interface(info):
            raise ConfigError(f"warm-up of {name!r} with the inputs of {inputs_of!r}: their "
                              "inputs differ; give a model with the same inputs")
        real = self._inputs.get(inputs_of) if inputs_of is not None else None
        if real is not None and (bad := ids_refused(real.arrays, info)):
            raise ConfigError(f"warm-up of {name!r} with the real inputs of {inputs_of!r}: "
                              f"{bad}")
        source = name if inputs_of is None else inputs_of
        self._ns.check_inputs_known(source, self._ns.entry(source))
        if batch_sizes is None:
            batch_sizes = warmup_batch_sizes(entry.served.config.max_batch_size,
                                             info.runs_any_rows)
        else:
            batch_sizes = checked_batch_sizes(batch_sizes)
            check_batchable_sizes(name, info, batch_sizes)

        def make_input(bs: int) -> list[np.ndarray]:
            x = self.sample_input(source, rows=bs, seed=bs,   # real inputs when it has them
                                  valid_for=() if source == name else (name,))
            return list(x.values()) if isinstance(x, dict) else [x]

        if time_limit_s is not None:   # (-1 and "5" were taken; inf never stopped)
            _check_float("time_limit_s", plain(time_limit_s), 0.01, 86_400.0)
        limit = self.config.warmup_time_limit_s if time_limit_s is None else time_limit_s
        closing = self._warmups_stop()
        self._check_open()   # (after the hook is in: a close from now on sets ``closing``)
        try:   # (marked: a sweep starting now would measure its runs; asked again under
            with self._busy(name, "a warm-up", "warm it up"):   # the lock a sweep starts in)
                report = run_warmup(name, entry.runner, make_input, list(batch_sizes),
                                    iterations, progress, time_limit_s=limit,
                                    stop=_Either(stop, closing), purpose=purpose)
        except ResourceLimitError:
            if closing.is_set():   # (not "cancelled", a 413 that says to ask smaller)
                raise EngineClosedError(f"the engine closed during the warm-up of {name!r}; "
                                        "create a new Engine to warm it up") from None
            raise
        except InferenceError as err:   # (an embedding's ids past its table, from noise)
            if self.input_source(source).startswith("real"):
                raise
            raise InferenceError(f"{err}. It ran generated inputs; a model that takes values "
                                 "in a range (ids, indices) needs real ones: give it real "
                                 "inputs (Models page, engine.set_inputs)") from err
        entry.last_warmup = report
        self._ab.arm_warmed(name)
        return report

    def _warmups_stop(self) -> threading.Event:
        """Set when the engine closes: a warm-up going on then stops (a server asked to
        stop waited for one of 10**9 runs, past SIGTERM)."""
        with _STOP_LOCK:
            if getattr(self, "_warmups_closing", None) is None:
                self._warmups_closing = threading.Event()
                self.on_close.append(self._warmups_closing.set)
            return self._warmups_closing

    def is_warm(self, name: str) -> bool:
        """True when every batch size warm-up would run for the current configuration has
        run on this session already, by warm-up or by traffic (a model run one row at a
        time: batch size 1)."""
        entry = self._ns.entry(name)
        needed = warmup_batch_sizes(entry.served.config.max_batch_size,
                                    entry.info.runs_any_rows)
        return set(needed) <= entry.sizes_run

    def warm_sizes(self, name: str) -> list[int]:
        """The batch sizes ``name``'s session has run since it was loaded (traffic and
        warm-up alike), sorted."""
        return sorted(self._ns.entry(name).sizes_run)

    def last_warmup(self, name: str) -> WarmupReport | None:
        return self._ns.entry(name).last_warmup
