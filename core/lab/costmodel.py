"""The cost model: t(n) = a + b*n per batch fitted to warm runs, and the engine's own
per-request overhead measured and calibrated (the what-if simulator that uses it:
:mod:`core.lab.whatif`).

Example:
    >>> cost = fit_cost_model(profile_cost(engine, "mlp"))
    >>> cost.a_ms, cost.b_ms, cost.r2
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from core.config import _shown, as_list
from core.errors import BatchlabError, ConfigError

if TYPE_CHECKING:
    from core.engine import EngineCore

__all__ = ["ENGINE_BOUND_RPS", "profile_cost", "profile_cost_frame", "CostModel", "fit_cost_model",
           "measure_overhead", "measure_capacity", "with_capacity", "with_capacities"]

#: A cautious bound on the one-row load a load generator drives the engine to in one
#: process here (it once served ~20k; now 30-90k, docs/benchmarks.md): loads for
#: calibration stay below it only when the capacity was not measured
#: (:func:`measure_capacity`), since a cost model of a very cheap model predicts millions.
ENGINE_BOUND_RPS = 20_000.0


def profile_cost(engine: EngineCore, model: str, batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32),
                 iterations: int = 20) -> pd.DataFrame:
    """Median compute time per batch size (warm runs, outside the metrics)."""
    report = engine.warmup(model, iterations=iterations,
                           batch_sizes=as_list("batch_sizes", batch_sizes, "[1, 8, 32]"),
                           purpose="cost profile")
    return profile_cost_frame(report)


def profile_cost_frame(report: Any) -> pd.DataFrame:
    """A warm-up report as the cost profile :func:`fit_cost_model` takes."""
    return report.frame[["batch_size", "warm_p50_ms"]].rename(columns={"warm_p50_ms": "compute_ms"})


@dataclass(frozen=True)
class CostModel:
    """t(n) = a + b * n milliseconds for a batch of n rows, plus ``overhead_ms`` that every
    request spends in the engine outside the model run (waking the collector, splitting the
    batch, settling and handing the answer over), measured by :func:`measure_overhead`."""

    a_ms: float
    b_ms: float
    r2: float
    overhead_ms: float = 0.0
    #: how the overhead grows with load (ms per 1,000 req/s): at rate r a request spends
    #: overhead_ms + overhead_per_krps_ms * r / 1000 outside its batch's wait and run
    #: (see :func:`calibrate_overhead`)
    overhead_per_krps_ms: float = 0.0
    #: the engine's serial work per request (ms): the Python that submits, batches and
    #: settles it, one interpreter for all requests, so one request's at a time. It is
    #: 1 / the capacity measured at a backlog (:func:`measure_capacity`); the simulator
    #: passes each request through it before the batching queue, so no load past
    #: :meth:`capacity_rps` is served: on a cheap model it, not the runs, sets capacity.
    per_request_ms: float = 0.0
    #: the max batch size ``per_request_ms`` was measured at (0: not measured).
    capacity_batch: int = 0
    #: the engine's serial work per batch (ms), told apart from ``per_request_ms`` when the
    #: capacity was measured at two or more batch sizes (:func:`with_capacities`): at max
    #: batch size k a request costs ``per_request_ms + per_batch_ms / k`` (:meth:`work_ms`).
    #: 0 with one size measured: then at other sizes the ceiling is rougher (the
    #: Experiments page says so).
    per_batch_ms: float = 0.0
    #: every max batch size the capacity was measured at (empty: one, or none).
    capacity_batches: tuple[int, ...] = ()
    #: why the overhead is not calibrated when :func:`calibrate_overhead` measured
    #: nothing ("": calibrated, or never asked); the overhead is then as it was.
    overhead_note: str = ""

    def work_ms(self, max_batch_size: int) -> float:
        """The engine's serial work per one-row request at ``max_batch_size`` (full
        batches, as at a backlog): ``per_request_ms + per_batch_ms / k``."""
        return self.per_request_ms + self.per_batch_ms / max(1, int(max_batch_size))

    def capacity_rps(self, max_batch_size: int) -> float:
        """The most one-row requests per second this model serves: full batches back to
        back (``k / t(k)``), or the engine's own work per request, whichever is less."""
        k = max(1, int(max_batch_size))
        runs = k / self(k) * 1000.0 if self(k) > 0 else float("inf")
        work = self.work_ms(k)
        return min(runs, 1000.0 / work) if work > 0 else runs

    def overhead_at(self, rate_rps: float) -> float:
        return self.overhead_ms + self.overhead_per_krps_ms * rate_rps / 1000.0

    def __call__(self, n: int | np.ndarray) -> Any:
        return self.a_ms + self.b_ms * n

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def measure_overhead(engine: EngineCore, model: str, bursts: int = 40) -> float:
    """What a request spends in the engine besides its batch's wait and run (ms): the
    median hand-off (from the end of the run to the answer: splitting the batch and
    settling the requests before it) plus the median lateness of deadline releases (the
    collector wakes a little after the deadline). Measured with small bursts of one-row
    requests under the model's current settings (as the engine times them, so an engine
    behind HTTP is measured without the network)."""
    cfg = engine.batch_config(model)
    burst = max(1, min(4, cfg.max_batch_size - 1))  # below max_batch_size: deadline batches
    x = engine.sample_input(model, rows=1)
    handoff: list[float] = []
    late: list[float] = []
    for k in range(bursts):
        preds = [f.result(60) for f in [engine.submit(model, x) for _ in range(burst)]]
        if k < bursts // 4:
            continue  # warming up
        handoff += [p.total_ms - p.queue_ms - p.compute_ms for p in preds]
        if preds[0].release_reason == "deadline":
            late.append(max(p.queue_ms for p in preds) - cfg.max_wait_ms)
    return float(np.median(handoff) + (np.median(late) if late else 0.0))


def measure_capacity(engine: EngineCore, model: str, bursts: int = 5, size: int = 2000,
                     max_burst_s: float = 0.2, stop: Any = None) -> float | None:
    """The one-row requests per second the engine serves ``model`` at a backlog, at its
    current ``max_batch_size``: bursts of requests submitted at once from one thread, each
    timed from its first submit to its last answer; the median of ``bursts`` (after a
    small one to warm up and size them). A burst is a whole number of full batches (a
    last partial one would wait out max_wait), at most ``size`` requests, half the
    model's ``max_queue`` (room for other traffic) and ``max_burst_s`` of the warm-up's
    pace. It counts the engine's Python per request (submitting, batching, settling: one
    interpreter for all) and the runs; not a load generator's pacing. None when it could
    not be measured: the engine refused or failed a request, an answer took over 10
    minutes, or ``stop`` (an Event) was set; a burst of 2,000 takes 20-100 ms on the demo
    models here."""
    cfg = engine.batch_config(model)
    k = max(1, cfg.max_batch_size)
    room = max(k, min(size, cfg.max_queue // 2)) // k * k
    x = engine.sample_input(model, rows=1)
    timeout_ms = 600_000.0  # waiting behind the burst is the point: no deadline admission

    def burst(n: int) -> float:
        t0 = time.perf_counter()
        futures = [engine.submit(model, x, timeout_ms=timeout_ms) for _ in range(n)]
        for f in futures:
            f.result(600)
        return n / (time.perf_counter() - t0)

    try:
        pace = burst(min(room, 2 * k))
        n = max(min(room, 2 * k), min(room, int(pace * max_burst_s) // k * k))
        rates = []
        for _ in range(bursts):
            if stop is not None and stop.is_set():
                return None
            rates.append(burst(n))
    except (BatchlabError, TimeoutError):  # refused, failed, or an answer 10 min late
        return None
    return float(np.median(rates)) if rates else None


def with_capacity(cost: CostModel, capacity_rps: float | None,
                  max_batch_size: int = 0) -> CostModel:
    """``cost`` with the engine's work per request from a capacity measured at a backlog
    (:func:`measure_capacity`, at ``max_batch_size``): ``1 / capacity``."""
    if not capacity_rps or not capacity_rps > 0:
        return cost
    return dataclasses.replace(cost, per_request_ms=1000.0 / capacity_rps,
                               capacity_batch=int(max_batch_size), per_batch_ms=0.0,
                               capacity_batches=())


def with_capacities(cost: CostModel, capacities: dict[int, float | None],
                    max_batch_size: int) -> CostModel:
    """``cost`` with the engine's work told apart per request and per batch, from
    capacities measured at several max batch sizes (``{size: req/s}``, each by
    :func:`measure_capacity`): the work per request at size k, 1 / capacity, fitted as
    ``p + q / k`` (least squares; p, q >= 0). ``max_batch_size`` is the model's own size;
    with fewer than two sizes measured this is :func:`with_capacity` at it."""
    points = {int(k): float(c) for k, c in capacities.items() if c and c > 0 and k >= 1}
    if len(points) < 2:
        return with_capacity(cost, points.get(int(max_batch_size)), max_batch_size)
    inv = np.array([1.0 / k for k in points])
    work = np.array([1000.0 / c for c in points.values()])
    q, p = np.polyfit(inv, work, 1)
    if q < 0:   # bigger batches no cheaper a request: no work per batch to tell apart
        own = points.get(int(max_batch_size))
        p, q = (1000.0 / own if own else float(work.mean())), 0.0
    elif p < 0:  # all of it per batch: the line through the origin
        p, q = 0.0, float((inv * work).sum() / (inv * inv).sum())
    return dataclasses.replace(cost, per_request_ms=float(p), per_batch_ms=float(q),
                               capacity_batch=int(max_batch_size),
                               capacity_batches=tuple(sorted(points)))


def fit_cost_model(profile: pd.DataFrame, overhead_ms: float = 0.0) -> CostModel:
    """Least-squares fit of compute_ms = a + b * batch_size (a, b clipped at >= 0);
    ``overhead_ms`` (see :func:`measure_overhead`) is added to every request's latency."""
    if not isinstance(profile, pd.DataFrame) or not {"batch_size", "compute_ms"} <= set(profile):
        raise ConfigError("fit_cost_model takes profile_cost's frame (columns batch_size and "
                          "compute_ms; a warm-up report: profile_cost_frame(report)), got "
                          f"{_shown(profile)}")
    n = profile["batch_size"].to_numpy(dtype=float)
    t = profile["compute_ms"].to_numpy(dtype=float)
    if (not (np.isfinite(n).all() and np.isfinite(t).all()) or len(set(n)) < 2
            or (n < 1).any() or (n != np.round(n)).any() or (t < 0).any()):
        # (batch sizes 0 and -1, and negative times, fitted a=b=0 with r2=-9; an adversary)
        # (one NaN made a model of zero cost with r2 = 1; one row, a line through it)
        raise ConfigError(f"fit_cost_model needs finite compute_ms >= 0 at two whole batch "
                          f"sizes >= 1 or more, got batch_size {n.tolist()!r:.80} and compute_ms {t.tolist()!r:.80}")
    b, a = np.polyfit(n, t, 1)
    if a < 0:     # the best line with a = 0 (through the origin), not the clipped one
        a, b = 0.0, max(0.0, float((n * t).sum() / (n * n).sum()))
    elif b < 0:   # the best flat line
        a, b = float(t.mean()), 0.0
    pred = a + b * n
    ss_res = float(((t - pred) ** 2).sum())
    ss_tot = float(((t - t.mean()) ** 2).sum())
    # (r2 of the line returned: it was the unclipped line's, 0.981 for a model of 0.926)
    return CostModel(float(a), float(b), 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0,
                     float(overhead_ms))
