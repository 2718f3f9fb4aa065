"""Batching trade-off experiments: sweeps, the Pareto frontier, a recommendation, a cost
model with a what-if simulator, exports to production servers, and a history in SQLite.

Example:
    >>> frame = sweep(engine, "mlp", max_batch_sizes=[8, 32], max_waits_ms=[0, 2],
    ...               rates_rps=[500, 2000], duration_s=2)
    >>> recommend(frame, p99_slo_ms=10).reason
    'max_batch_size=32, max_wait_ms=2 serves 1,990 req/s with p99 7.9 ms, the most ...'
    >>> cost = fit_cost_model(profile_cost(engine, "mlp"))
    >>> simulate(cost, max_batch_size=32, max_wait_ms=2, rate_rps=2000)["p99_ms"]
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import platform
import re
import sqlite3
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from .errors import ConfigError
from .loadgen import arrival_times, closed_loop, open_loop
from .peers.mlserver import RUNTIME_MODULE

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["SWEEP_COLUMNS", "sweep", "p99_interval", "replay", "REPLAY_POLICIES", "pareto_frontier", "Recommendation", "recommend",
           "profile_cost", "profile_cost_frame", "CostModel", "fit_cost_model", "measure_overhead", "calibrate_overhead", "simulate", "triton_config",
           "tf_serving_batching", "mlserver_settings", "MLSERVER_BATCHLAB_RUNTIME",
           "kserve_inference_service", "kserve_name", "ExperimentStore", "environment",
           "default_store", "what_if_curve"]

SWEEP_COLUMNS = ["max_batch_size", "max_wait_ms", "load_kind", "load", "achieved_rps",
                 "p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_batch_rows", "error_rate",
                 "mean_queue_ms", "mean_compute_ms", "sent", "p99_ci_low_ms",
                 "p99_ci_high_ms", "measurements"]

#: Roughly what the engine serves in one process on this 2-core machine (one-row requests,
#: docs/benchmarks.md): a cost model of a very cheap model predicts far more, so loads for
#: calibration are taken below this.
ENGINE_BOUND_RPS = 20_000.0

# A point whose p99 is this many times the median p99 of the points at its load is measured
# again (twice) and the median run kept: one stall (a GC pause, a noisy neighbour) must not
# decide a sweep.
_OUTLIER_FACTOR = 3.0


def p99_interval(latency_ms: np.ndarray, seed: int = 0, resamples: int = 400,
                 level: float = 0.95) -> tuple[float, float]:
    """A bootstrap confidence interval of the p99 of ``latency_ms`` (seeded)."""
    x = np.asarray(latency_ms, dtype=np.float64)
    if len(x) < 20:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(resamples, len(x)))
    p99s = np.quantile(x[idx], 0.99, axis=1)
    lo, hi = np.quantile(p99s, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def sweep(engine: Engine, model: str, max_batch_sizes: Sequence[int],
          max_waits_ms: Sequence[float], rates_rps: Sequence[float] | None = None,
          concurrencies: Sequence[int] | None = None, duration_s: float = 3.0,
          pattern: str = "poisson", seed: int = 0, rows_per_request: int = 1,
          progress: Callable[[int, int, dict[str, Any]], None] | None = None,
          stop: Any = None) -> pd.DataFrame:
    """Measure every (max batch size, max wait, load) point; one row per point.

    Loads are open-loop rates (``rates_rps``) and/or closed-loop client counts
    (``concurrencies``); every request carries ``rows_per_request`` rows. The model's
    configuration is restored afterwards.
    ``progress(done, total, row)`` is called after each point.
    """
    loads = [("rate", float(r)) for r in (rates_rps or [])] + [
        ("clients", int(c)) for c in (concurrencies or [])]
    if not loads:
        raise ValueError("give rates_rps and/or concurrencies: the loads to sweep")
    points = list(itertools.product(max_batch_sizes, max_waits_ms, loads))
    before = engine.batch_config(model)
    submit = lambda x: engine.submit(model, x)  # noqa: E731
    sample = lambda rng: engine.sample_input(  # noqa: E731
        model, rows=rows_per_request, seed=int(rng.integers(2**31)))

    def measure(k: int, bs: int, wait: float, kind: str, load: float) -> dict[str, Any]:
        engine.configure(model, max_batch_size=int(bs), max_wait_ms=float(wait))
        if kind == "rate":
            res = open_loop(submit, sample, load, pattern=pattern, duration_s=duration_s,
                            seed=seed + k)
        else:
            res = closed_loop(submit, sample, int(load), duration_s=duration_s, seed=seed + k)
        s = res.summary()
        lo, hi = p99_interval(res.frame.loc[res.frame["ok"], "latency_ms"].to_numpy(), seed=k)
        return {"max_batch_size": int(bs), "max_wait_ms": float(wait), "load_kind": kind,
                "load": load, **{c: s[c] for c in SWEEP_COLUMNS[4:13]}, "sent": s["sent"],
                "p99_ci_low_ms": lo, "p99_ci_high_ms": hi, "measurements": 1}

    rows: list[dict[str, Any]] = []
    total = len(points)
    try:
        for k, (bs, wait, (kind, load)) in enumerate(points):
            if stop is not None and stop.is_set():
                break
            row = measure(k, bs, wait, kind, load)
            rows.append(row)
            if progress is not None:
                progress(k + 1, total, row)
        # Outliers are measured again: the median of three runs is kept.
        frame = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
        for i, row in enumerate(rows):
            if stop is not None and stop.is_set():
                break
            peers = frame[(frame["load_kind"] == row["load_kind"])
                          & (frame["load"] == row["load"])]["p99_ms"]
            if len(peers) < 3 or not row["p99_ms"] > _OUTLIER_FACTOR * peers.median():
                continue
            runs = [row] + [measure(len(points) + 2 * i + j, row["max_batch_size"],
                                    row["max_wait_ms"], row["load_kind"], row["load"])
                            for j in range(2)]
            runs.sort(key=lambda r: r["p99_ms"])
            rows[i] = {**runs[1], "measurements": 3}
            if progress is not None:
                progress(total, total, {**rows[i], "remeasured": True})
    finally:
        engine.configure(model, max_batch_size=before.max_batch_size,
                         max_wait_ms=before.max_wait_ms, policy=before.policy)
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def pareto_frontier(frame: pd.DataFrame, x: str = "achieved_rps", y: str = "p99_ms") -> pd.DataFrame:
    """Rows no other row beats on both higher ``x`` and lower ``y``, sorted by ``x``."""
    f = frame.dropna(subset=[x, y]).sort_values([x, y], ascending=[False, True])
    keep, best_y = [], float("inf")
    for idx, row in f.iterrows():
        if row[y] < best_y:
            keep.append(idx)
            best_y = row[y]
    return frame.loc[keep].sort_values(x)


@dataclass(frozen=True)
class Recommendation:
    """The chosen configuration for an SLO, the evidence for it, and how sure it is.

    ``load`` is the highest load (req/s, or clients) at which the choice met the target;
    ``ties`` are the other settings that met it at that load with a p99 within the noise
    (overlapping 95 % intervals) of the choice's."""

    max_batch_size: int | None
    max_wait_ms: float | None
    achieved_rps: float | None
    p99_ms: float | None
    reason: str
    load: float | None = None
    p99_ci_ms: tuple[float, float] | None = None
    ties: tuple[tuple[int, float], ...] = ()


def _sustained(frame: pd.DataFrame, p99_slo_ms: float, max_error_rate: float) -> pd.Series:
    ok = (frame["p99_ms"] <= p99_slo_ms) & (frame["error_rate"] <= max_error_rate)
    rate = frame["load_kind"] == "rate"
    # An open-loop point counts only if the load was served, not queued up or refused.
    return ok & (~rate | (frame["achieved_rps"] >= 0.95 * frame["load"]))


def recommend(frame: pd.DataFrame, p99_slo_ms: float, max_error_rate: float = 0.0) -> Recommendation:
    """The settings that meet ``p99_slo_ms`` at the highest load, decided by evidence.

    For each setting (max batch size, max wait) the highest load it sustains within the
    target is found (an open-loop point counts when >= 95 % of its rate was served). Among
    the settings that reach the highest such load, those whose p99 there is within noise of
    the lowest (overlapping bootstrap intervals) are ties; of the ties the smallest settings
    are chosen (shortest max wait, then smallest batch): no latency is paid for waiting that
    the evidence does not show to help. Achieved throughput at the same offered load is not
    compared: it is the load plus noise."""
    f = frame.copy()
    for col in ("p99_ci_low_ms", "p99_ci_high_ms"):
        if col not in f:
            f[col] = f["p99_ms"]
    f["pass"] = _sustained(f, p99_slo_ms, max_error_rate)
    ok = f[f["pass"]]
    if ok.empty:
        best = f.sort_values("p99_ms").head(1)
        hint = ""
        if not best.empty:
            r = best.iloc[0]
            hint = (f"; the lowest p99 measured was {r.p99_ms:.1f} ms (max_batch_size="
                    f"{int(r.max_batch_size)}, max_wait_ms={r.max_wait_ms:g}, load "
                    f"{r.load:g})")
        return Recommendation(None, None, None, None,
                              f"No setting met p99 <= {p99_slo_ms:g} ms with every request "
                              f"served{hint}: relax the target, lower the load, or use a "
                              "faster model or machine")
    kind = "rate" if (ok["load_kind"] == "rate").any() else "clients"
    ok = ok[ok["load_kind"] == kind]
    top = ok["load"].max()
    at_top = ok[ok["load"] == top].sort_values("p99_ms")
    best = at_top.iloc[0]
    ties = at_top[at_top["p99_ci_low_ms"].fillna(at_top["p99_ms"])
                  <= (best["p99_ci_high_ms"] if not np.isnan(best["p99_ci_high_ms"])
                      else best["p99_ms"])]
    chosen = ties.sort_values(["max_wait_ms", "max_batch_size"]).iloc[0]
    unit = "req/s" if kind == "rate" else "clients"
    settings = f"max_batch_size={int(chosen.max_batch_size)}, max_wait_ms={chosen.max_wait_ms:g}"
    ci = (float(chosen.p99_ci_low_ms), float(chosen.p99_ci_high_ms))
    ci_text = (f" (95% interval {ci[0]:.2f}-{ci[1]:.2f} ms)" if not np.isnan(ci[0]) else "")
    highest_tried = f["load"][f["load_kind"] == kind].max()
    reason = (f"{settings} meets p99 <= {p99_slo_ms:g} ms at {top:,.0f} {unit}"
              + (" (the highest load tried: capacity may be higher)" if top == highest_tried
                 else f" (the highest load at which any setting did; {highest_tried:,.0f} "
                 f"was too much)")
              + f", p99 {chosen.p99_ms:.2f} ms{ci_text}.")
    others = [(int(r.max_batch_size), float(r.max_wait_ms)) for _, r in ties.iterrows()
              if (r.max_batch_size, r.max_wait_ms) != (chosen.max_batch_size, chosen.max_wait_ms)]
    if others:
        reason += (f" {len(others)} other setting(s) did as well within noise ("
                   + ", ".join(f"{b}/{w:g} ms" for b, w in others[:4])
                   + "); this one is the smallest: no waiting that the evidence does not "
                   "show to help.")
    remeasured = int((f.get("measurements", pd.Series(1, index=f.index)) > 1).sum())
    if remeasured:
        reason += f" {remeasured} outlier point(s) were measured three times (median kept)."
    return Recommendation(int(chosen.max_batch_size), float(chosen.max_wait_ms),
                          float(chosen.achieved_rps), float(chosen.p99_ms), reason,
                          load=float(top), p99_ci_ms=ci, ties=tuple(others))


# -- replay: the same arrivals under each policy ------------------------------------------------
REPLAY_POLICIES = ("deadline", "fixed_window", "adaptive")


def replay(engine: Engine, model: str, arrivals_s: Sequence[float],
           policies: Sequence[str] = REPLAY_POLICIES, stop: Any = None,
           progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Send the same arrivals (seconds, as recorded in ``engine.timeline``) to ``model``
    once under each policy, on the engine (real runs, one after the other), keeping the
    model's max batch size and max wait; settings are restored after.

    Returns ``{"summary": DataFrame (policy, requests, p50_ms, p99_ms, mean_batch_rows,
    batches), "timelines": {policy: DataFrame}}`` with each run's timeline."""
    arr = np.sort(np.asarray(arrivals_s, dtype=np.float64))
    if len(arr) == 0:
        raise ValueError("no arrivals to replay: run some traffic first")
    offsets = arr - arr[0]
    before = engine.batch_config(model)
    sample_x = engine.sample_input(model, rows=1)
    rows, timelines = [], {}
    try:
        for k, policy in enumerate(policies):
            if stop is not None and stop.is_set():
                break
            engine.configure(model, policy=policy, latency_slo_ms=None)
            engine.queue_depth(model)
            t_start = time.perf_counter()
            res = open_loop(lambda v: engine.submit(model, v), lambda rng: sample_x, 1.0,
                            offsets_s=offsets, seed=k)
            span = time.perf_counter() - t_start + 0.5
            tl = engine.timeline(model, last_s=span)
            tl = tl[tl["arrived_s"] >= t_start].reset_index(drop=True)
            timelines[policy] = tl
            s = res.summary()
            rows.append({"policy": policy, "requests": s["sent"], "p50_ms": s["p50_ms"],
                         "p99_ms": s["p99_ms"], "mean_batch_rows": s["mean_batch_rows"],
                         "batches": int(tl["batch_id"][tl["batch_id"] >= 0].nunique())})
            if progress is not None:
                progress(k + 1, len(policies), policy)
    finally:
        engine.configure(model, policy=before.policy, latency_slo_ms=before.latency_slo_ms)
    return {"summary": pd.DataFrame(rows), "timelines": timelines}


# -- cost model and what-if simulation -----------------------------------------------------------
def profile_cost(engine: Engine, model: str, batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32),
                 iterations: int = 20) -> pd.DataFrame:
    """Median compute time per batch size (warm runs, outside the metrics)."""
    report = engine.warmup(model, iterations=iterations, batch_sizes=list(batch_sizes))
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

    def overhead_at(self, rate_rps: float) -> float:
        return self.overhead_ms + self.overhead_per_krps_ms * rate_rps / 1000.0

    def __call__(self, n: int | np.ndarray) -> Any:
        return self.a_ms + self.b_ms * n

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def measure_overhead(engine: Engine, model: str, bursts: int = 40) -> float:
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


def calibrate_overhead(engine: Engine, model: str, cost: CostModel,
                       rates_rps: Sequence[float], duration_s: float = 2.0,
                       seed: int = 0) -> CostModel:
    """``cost`` with its overhead fitted to measurements: open-loop Poisson traffic at each
    of ``rates_rps`` (two or more, below capacity; the model's current settings), the
    measured p50 (from each request's intended send time, as sweeps measure it) against the
    simulator's without overhead; the differences are fitted as a line in the rate. It
    captures what the engine's own timing cannot see: the load generator sharing the
    interpreter, collector wake-ups, hand-offs. Check it at other loads than these."""
    cfg = engine.batch_config(model)
    x = engine.sample_input(model, rows=1)
    bare = CostModel(cost.a_ms, cost.b_ms, cost.r2)
    gaps = []
    for k, rate in enumerate(rates_rps):
        res = open_loop(lambda v: engine.submit(model, v), lambda rng: x, float(rate),
                        pattern="poisson", duration_s=duration_s, seed=seed + k)
        measured = res.summary()["p50_ms"]
        predicted = simulate(bare, cfg.max_batch_size, cfg.max_wait_ms, float(rate),
                             n_requests=20_000, seed=seed)["p50_ms"]
        gaps.append(measured - predicted)
    if len(gaps) >= 2:
        k_ms, o_ms = np.polyfit(np.asarray(rates_rps, float) / 1000.0, gaps, 1)
    else:
        k_ms, o_ms = 0.0, gaps[0]
    return dataclasses.replace(cost, overhead_ms=max(0.0, float(o_ms)),
                               overhead_per_krps_ms=max(0.0, float(k_ms)))


def fit_cost_model(profile: pd.DataFrame, overhead_ms: float = 0.0) -> CostModel:
    """Least-squares fit of compute_ms = a + b * batch_size (a, b clipped at >= 0);
    ``overhead_ms`` (see :func:`measure_overhead`) is added to every request's latency."""
    n = profile["batch_size"].to_numpy(dtype=float)
    t = profile["compute_ms"].to_numpy(dtype=float)
    b, a = np.polyfit(n, t, 1)
    pred = a + b * n
    ss_res = float(((t - pred) ** 2).sum())
    ss_tot = float(((t - t.mean()) ** 2).sum())
    return CostModel(max(0.0, float(a)), max(0.0, float(b)),
                     1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0, float(overhead_ms))


def simulate(cost: CostModel | Callable[[int], float], max_batch_size: int, max_wait_ms: float,
             rate_rps: float, pattern: str = "poisson", n_requests: int = 20_000,
             seed: int = 0, arrivals_s: np.ndarray | None = None) -> dict[str, float]:
    """Predict latency and throughput of the deadline policy for one-row requests.

    A discrete-event model of the engine: one server; a batch starts when the server is
    free and either ``max_batch_size`` requests are queued or the oldest has waited
    ``max_wait_ms``; it takes ``cost(n)`` ms, and every request then spends the cost
    model's ``overhead_ms`` more before its caller has the answer. Returns p50/p95/p99/mean
    latency (ms), throughput (req/s), mean batch rows and server utilisation.
    """
    rng = np.random.default_rng(seed)
    arr = (np.asarray(arrivals_s, dtype=float) if arrivals_s is not None
           else arrival_times(pattern, rate_rps, n_requests, rng)) * 1000.0  # ms
    n = len(arr)
    wait = float(max_wait_ms)
    overhead = float(cost.overhead_at(rate_rps)) if isinstance(cost, CostModel) else 0.0
    lat = np.empty(n)
    q: deque[int] = deque()
    i = 0
    t_free = 0.0
    busy = 0.0
    batches = 0
    served = 0
    while served < n:
        if not q:
            q.append(i)
            i += 1
        oldest = arr[q[0]]
        start = max(t_free, oldest)
        while i < n and arr[i] <= start:
            q.append(i)
            i += 1
        if len(q) >= max_batch_size:
            release = start
        else:
            need = max_batch_size - len(q)
            fill_idx = i + need - 1
            deadline = oldest + wait
            if fill_idx < n and arr[fill_idx] <= deadline:
                release = max(start, arr[fill_idx])
            else:
                release = max(start, deadline)
            while i < n and arr[i] <= release:
                q.append(i)
                i += 1
        k = min(max_batch_size, len(q))
        service = float(cost(k))
        done = release + service
        for _ in range(k):
            j = q.popleft()
            lat[j] = done - arr[j] + overhead
        served += k
        busy += service
        batches += 1
        t_free = done
    span_s = (t_free - arr[0]) / 1000.0 if n > 1 else float("nan")
    return {"p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)), "mean_ms": float(lat.mean()),
            "throughput_rps": float(n / span_s) if span_s > 0 else float("nan"),
            "mean_batch_rows": n / batches,
            "utilisation": float(busy / (t_free - arr[0])) if t_free > arr[0] else float("nan")}


def what_if_curve(cost: CostModel, max_batch_size: int, max_wait_ms: float,
                  rates_rps: Sequence[float], pattern: str = "poisson",
                  n_requests: int = 5000, seed: int = 0) -> pd.DataFrame:
    """Predicted p50/p99/throughput across arrival rates for one configuration."""
    rows = [{"rate_rps": float(r), **simulate(cost, max_batch_size, max_wait_ms, float(r),
                                               pattern, n_requests, seed)} for r in rates_rps]
    return pd.DataFrame(rows)


# -- exports to production servers ---------------------------------------------------------------
def triton_config(max_batch_size: int, max_wait_ms: float,
                  preferred_batch_sizes: Sequence[int] | None = None,
                  max_queue: int | None = None) -> str:
    """A Triton ``config.pbtxt`` fragment: ``max_batch_size`` and a ``dynamic_batching`` block.

    Triton's ``max_queue_delay_microseconds`` is the same deadline rule as Batchlab's
    default policy (the wait starts with the oldest request).
    """
    lines = [f"max_batch_size: {int(max_batch_size)}", "dynamic_batching {"]
    for size in preferred_batch_sizes or [int(max_batch_size)]:
        lines.append(f"  preferred_batch_size: {int(size)}")
    lines.append(f"  max_queue_delay_microseconds: {int(round(max_wait_ms * 1000))}")
    if max_queue is not None:
        lines += ["  default_queue_policy {", f"    max_queue_size: {int(max_queue)}", "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def tf_serving_batching(max_batch_size: int, max_wait_ms: float, num_batch_threads: int = 1,
                        max_enqueued_batches: int = 100) -> str:
    """A TF Serving ``--batching_parameters_file`` (protobuf text format)."""
    return (f"max_batch_size {{ value: {int(max_batch_size)} }}\n"
            f"batch_timeout_micros {{ value: {int(round(max_wait_ms * 1000))} }}\n"
            f"max_enqueued_batches {{ value: {int(max_enqueued_batches)} }}\n"
            f"num_batch_threads {{ value: {int(num_batch_threads)} }}\n")


#: The MLServer runtime Batchlab ships (``core/peers/mlserver_runtime.py``, which
#: ``core.peers.mlserver`` copies next to the models as the module ``batchlab_onnx_runtime``).
#: MLServer has no ONNX runtime of its own, so a ``model-settings.json`` must name one.
MLSERVER_BATCHLAB_RUNTIME = f"{RUNTIME_MODULE}.OnnxRuntimeModel"

# MLServer reads max_batch_time <= 0 as "adaptive batching off" (docs: user-guide/adaptive-
# batching, "0, will disable adaptive batching"; mlserver/batching/hooks.py load_batching). A
# Batchlab wait of 0 still batches what is already queued, and so does MLServer with a tiny
# positive wait: its batcher takes queued requests at once and waits only for an empty queue.
_MLSERVER_MIN_BATCH_TIME_S = 1e-6

# KServe's InferenceService names (its validating webhook's IsvcNameFmt), at most 63
# characters: the name becomes Kubernetes Service and host names (DNS-1035 labels).
_KSERVE_NAME_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_KSERVE_NAME_MAX = 63
_K8S_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# KServe's batcher sidecar reads maxLatency <= 0 as its default, 5000 ms (pkg/batcher/handler.go).
_KSERVE_DEFAULT_MAX_LATENCY_MS = 5000


def _check_batching(max_batch_size: int, max_wait_ms: float) -> None:
    if (isinstance(max_batch_size, bool) or not isinstance(max_batch_size, (int, np.integer))
            or max_batch_size < 1):
        raise ConfigError(f"max_batch_size must be an int >= 1, got {max_batch_size!r}")
    if (isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float, np.number))
            or not math.isfinite(max_wait_ms) or max_wait_ms < 0):
        raise ConfigError(f"max_wait_ms must be a finite number >= 0, got {max_wait_ms!r}")


def _check_text(field: str, value: object, example: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{field} must be a non-empty string such as {example!r}, got {value!r}")


def mlserver_settings(name: str, max_batch_size: int, max_wait_ms: float, *,
                      implementation: str = MLSERVER_BATCHLAB_RUNTIME,
                      uri: str = "./model.onnx") -> str:
    """MLServer's ``model-settings.json`` (indented JSON text) serving ``uri`` with adaptive
    batching at these settings.

    Fields (MLServer's ModelSettings reference and its adaptive-batching guide):
    ``max_batch_size`` is the most *requests* MLServer merges (Batchlab counts rows; the same
    for one-row requests), and 0 or 1 turns adaptive batching off; ``max_batch_time`` is in
    **seconds** (``max_wait_ms / 1000``), and 0 turns it off too, so a wait of 0 with
    ``max_batch_size > 1`` is written as 1e-6 s (MLServer then merges what is already queued,
    as Batchlab does with a wait of 0). ``parameters.uri`` is resolved relative to the folder
    of ``model-settings.json``.

    ``implementation`` is the Python path of the MLServer runtime that loads the model.
    MLServer ships no ONNX runtime; the default is Batchlab's
    (:data:`MLSERVER_BATCHLAB_RUNTIME`, ``batchlab_onnx_runtime.OnnxRuntimeModel``): copy
    ``core/peers/mlserver_runtime.py`` as ``batchlab_onnx_runtime.py`` into the folder given
    to ``mlserver start`` (what ``core.peers.mlserver.MLServerProcess`` does). To use your own
    runtime, pass its path (``my_package.MyOnnxModel``).

    Example:
        >>> print(mlserver_settings("mlp", 32, 2.0))
        {
          "name": "mlp",
          "implementation": "batchlab_onnx_runtime.OnnxRuntimeModel",
          "platform": "onnxruntime",
          "max_batch_size": 32,
          "max_batch_time": 0.002,
          "parameters": {
            "uri": "./model.onnx"
          }
        }
    """
    _check_batching(max_batch_size, max_wait_ms)
    _check_text("name", name, "mlp")
    _check_text("implementation", implementation, MLSERVER_BATCHLAB_RUNTIME)
    module, _, cls = implementation.strip().rpartition(".")
    if not module or not cls.isidentifier():
        raise ConfigError("implementation must be the Python path of an MLServer runtime class "
                          f"('package.module.ClassName', e.g. {MLSERVER_BATCHLAB_RUNTIME!r}), "
                          f"got {implementation!r}")
    _check_text("uri", uri, "./model.onnx")
    batch_time_s = float(max_wait_ms) / 1000.0
    if max_batch_size > 1 and batch_time_s == 0.0:
        batch_time_s = _MLSERVER_MIN_BATCH_TIME_S
    settings = {"name": name, "implementation": implementation.strip(), "platform": "onnxruntime",
                "max_batch_size": int(max_batch_size), "max_batch_time": batch_time_s,
                "parameters": {"uri": uri}}
    return json.dumps(settings, indent=2) + "\n"


def kserve_name(name: str) -> str:
    """``name`` made a valid KServe InferenceService name: lowercase letters, digits and '-',
    starting with a letter, ending with a letter or digit, at most 63 characters.

    Example:
        >>> kserve_name("ResNet_50.v2"), kserve_name("3d_unet")
        ('resnet-50-v2', 'model-3d-unet')
    """
    out = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")
    if not out:
        return "model"
    if not out[0].isalpha():  # KServe names start with a letter
        out = f"model-{out}"
    return out[:_KSERVE_NAME_MAX].rstrip("-")


def kserve_inference_service(name: str, max_batch_size: int, max_wait_ms: float, *,
                             storage_uri: str = "s3://bucket/path/to/model",
                             runtime: str | None = None) -> str:
    """A KServe ``InferenceService`` (YAML text) serving the ONNX model at ``storage_uri``
    over the Open Inference Protocol, with KServe's batcher at these settings.

    ``name`` must already be a valid InferenceService name (KServe's rule: lowercase letters,
    digits and '-', starting with a letter, at most 63 characters); :class:`ConfigError` says
    so and suggests one, and :func:`kserve_name` makes one from any model name.

    How KServe batches (its Inference Batcher guide and ``pkg/batcher/handler.go``): the
    predictor's ``batcher`` block (``maxBatchSize``: instances, i.e. rows; ``maxLatency``:
    whole **milliseconds**, the wait from the first request of a batch) runs in the model
    agent sidecar. ``max_wait_ms`` is rounded to whole milliseconds, at least 1, because
    KServe reads ``maxLatency`` 0 as its default of 5000 ms. The sidecar batches only v1
    ``:predict`` requests; Open Inference Protocol (v2) requests pass through it unbatched,
    so with ``protocolVersion: v2`` the model server's own batching is what counts: put
    :func:`triton_config`'s ``config.pbtxt`` (Triton, KServe's default runtime for
    ``onnx`` + v2) or :func:`mlserver_settings`'s ``model-settings.json`` (an MLServer-based
    ServingRuntime) next to the model at ``storage_uri``. The YAML says this in a comment.

    ``runtime`` pins a ServingRuntime by name (e.g. ``kserve-tritonserver``, or one of your
    own); None lets KServe choose one that supports ``onnx`` over v2.

    Example:
        >>> print(kserve_inference_service("mlp", 32, 2.0, storage_uri="s3://models/mlp"))
    """
    _check_batching(max_batch_size, max_wait_ms)
    if not isinstance(name, str) or not (
            _KSERVE_NAME_RE.fullmatch(name) and len(name) <= _KSERVE_NAME_MAX):
        raise ConfigError(f"name must be a KServe InferenceService name (lowercase letters, "
                          f"digits and '-', starting with a letter, ending with a letter or "
                          f"digit, at most {_KSERVE_NAME_MAX} characters), got {name!r}; "
                          f"try {kserve_name(name if isinstance(name, str) else '')!r}")
    _check_text("storage_uri", storage_uri, "s3://bucket/path/to/model")
    if "://" not in storage_uri:
        raise ConfigError("storage_uri must be a URI with a scheme, such as 's3://bucket/"
                          f"path/to/model' or 'pvc://claim/path', got {storage_uri!r}")
    if runtime is not None and not (isinstance(runtime, str) and _K8S_LABEL_RE.fullmatch(runtime)
                                    and len(runtime) <= 63):
        raise ConfigError("runtime must be None (KServe chooses) or a ServingRuntime name such "
                          f"as 'kserve-tritonserver', got {runtime!r}")
    latency_ms = max(1, int(math.floor(float(max_wait_ms) + 0.5)))
    lines = [
        f"# From Batchlab: max_batch_size={int(max_batch_size)}, "
        f"max_wait_ms={float(max_wait_ms):g}.",
        "# batcher: maxBatchSize counts instances (rows); maxLatency is whole milliseconds,",
        f"# at least 1 (KServe reads 0 as its default, {_KSERVE_DEFAULT_MAX_LATENCY_MS} ms).",
        "# KServe's batcher batches v1 :predict requests only; v2 (Open Inference Protocol)",
        "# requests pass through it unbatched. So also put the server's own batching next",
        "# to the model at storageUri: Batchlab's Triton config.pbtxt or MLServer",
        "# model-settings.json.",
        "apiVersion: serving.kserve.io/v1beta1",
        "kind: InferenceService",
        "metadata:",
        f"  name: {name}",
        "spec:",
        "  predictor:",
        "    batcher:",
        f"      maxBatchSize: {int(max_batch_size)}",
        f"      maxLatency: {latency_ms}",
        "    model:",
        "      modelFormat:",
        "        name: onnx",
        "      protocolVersion: v2",
    ]
    if runtime is not None:
        lines.append(f"      runtime: {runtime}")
    # A JSON string is a valid YAML double-quoted scalar: any URI is quoted safely.
    lines.append(f"      storageUri: {json.dumps(storage_uri)}")
    return "\n".join(lines) + "\n"


# -- history ------------------------------------------------------------------------------------------
def environment() -> dict[str, Any]:
    """Where a run was measured: machine and library versions."""
    import os

    import onnxruntime

    return {"machine": platform.machine(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "pandas": pd.__version__}


def default_store() -> ExperimentStore:
    """The history file: ``$BATCHLAB_DATA_DIR/experiments.sqlite`` (default ``data/``)."""
    import os

    return ExperimentStore(Path(os.environ.get("BATCHLAB_DATA_DIR", "data")) / "experiments.sqlite")


class ExperimentStore:
    """Experiment runs in one SQLite file: configuration, environment and results.

    Example:
        >>> store = ExperimentStore("data/experiments.sqlite")
        >>> run_id = store.save("mlp sweep", {"model": "mlp"}, frame)
        >>> store.list()[["id", "name", "points"]]
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("""CREATE TABLE IF NOT EXISTS runs (
                id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
                created REAL NOT NULL, config TEXT NOT NULL, environment TEXT NOT NULL,
                results TEXT NOT NULL)""")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def save(self, name: str, config: dict[str, Any], results: pd.DataFrame,
             env: dict[str, Any] | None = None) -> int:
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO runs (name, created, config, environment, results) VALUES (?,?,?,?,?)",
                (name, time.time(), json.dumps(config, default=str),
                 json.dumps(env or environment()), results.to_json(orient="split")))
            return int(cur.lastrowid)

    def list(self) -> pd.DataFrame:
        with self._connect() as db:
            rows = db.execute("SELECT id, name, created, config, results FROM runs "
                              "ORDER BY id DESC").fetchall()
        return pd.DataFrame([{"id": r[0], "name": r[1], "created": pd.Timestamp(r[2], unit="s"),
                              "config": json.loads(r[3]),
                              "points": len(json.loads(r[4])["data"])} for r in rows],
                            columns=["id", "name", "created", "config", "points"])

    def get(self, run_id: int) -> dict[str, Any]:
        with self._connect() as db:
            r = db.execute("SELECT id, name, created, config, environment, results FROM runs "
                           "WHERE id = ?", (run_id,)).fetchone()
        if r is None:
            raise KeyError(f"no experiment run with id {run_id}")
        from io import StringIO
        return {"id": r[0], "name": r[1], "created": r[2], "config": json.loads(r[3]),
                "environment": json.loads(r[4]),
                "results": pd.read_json(StringIO(r[5]), orient="split")}

    def delete(self, run_id: int) -> bool:
        with self._connect() as db:
            return db.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount > 0

    def compare(self, run_ids: Sequence[int]) -> pd.DataFrame:
        """The runs' result rows side by side, tagged with run id and name."""
        frames = []
        for rid in run_ids:
            run = self.get(rid)
            frames.append(run["results"].assign(run_id=rid, run=run["name"]))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def export_csv(self, run_id: int, path: str | Path | None = None) -> str:
        csv = self.get(run_id)["results"].to_csv(index=False)
        if path is not None:
            Path(path).write_text(csv)
        return csv
