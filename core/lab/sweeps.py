"""Sweeps: measure every (max batch size, max wait, load) point of a model on the engine,
each until it is stable (:mod:`core.lab.stability`) or marked unstable, remeasure outliers,
and keep each point's p99 interval.

Every setting that shapes the answer is pinned by the sweep and named in each row: the
release policy (``deadline`` unless asked), the latency SLO (none unless asked), the
instances; the model's own settings are restored afterwards, all of them.

Example:
    >>> frame = sweep(engine, "mlp", max_batch_sizes=[8, 32], max_waits_ms=[0, 2],
    ...               rates_rps=[500, 2000], duration_s=2)
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from .loadgen import closed_loop, open_loop
from .stability import StabilityRule, measure_stable

if TYPE_CHECKING:
    from core.engine import EngineCore

__all__ = ["SWEEP_COLUMNS", "PINNED_DEFAULTS", "sweep", "p99_interval"]

SWEEP_COLUMNS = ["max_batch_size", "max_wait_ms", "load_kind", "load", "achieved_rps",
                 "p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_batch_rows", "error_rate",
                 "mean_queue_ms", "mean_compute_ms", "sent", "p99_ci_low_ms",
                 "p99_ci_high_ms", "measurements", "stable", "windows", "spread_rps_pct",
                 "spread_p99_pct", "policy", "latency_slo_ms", "instances", "slo_ms",
                 "goodput_rps", "baseline"]

#: The settings a sweep pins for every point unless told otherwise (and names per row).
PINNED_DEFAULTS = {"policy": "deadline", "latency_slo_ms": None, "instances": 1}

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


def sweep(engine: EngineCore, model: str, max_batch_sizes: Sequence[int],
          max_waits_ms: Sequence[float], rates_rps: Sequence[float] | None = None,
          concurrencies: Sequence[int] | None = None, duration_s: float = 3.0,
          pattern: str = "poisson", seed: int = 0, rows_per_request: int = 1,
          progress: Callable[[int, int, dict[str, Any]], None] | None = None,
          stop: Any = None, policy: str = "deadline", latency_slo_ms: float | None = None,
          instances: int = 1, stability: StabilityRule | bool = True,
          slo_ms: float | None = None, baseline: bool = True) -> pd.DataFrame:
    """Measure every (max batch size, max wait, load) point; one row per point.

    Loads are open-loop rates (``rates_rps``) and/or closed-loop client counts
    (``concurrencies``); every request carries ``rows_per_request`` rows.

    Each point is measured in windows of ``duration_s / 3`` until the last three agree
    within 10 % on throughput and p99 (``stability``: a :class:`StabilityRule`, True for
    that default, False for one window of ``duration_s``); a point that never agrees is
    kept with ``stable=False`` and its spread. ``policy``, ``latency_slo_ms`` and
    ``instances`` are set for every point (not inherited from whatever the model had) and
    named in each row; a remote model's are its server's, and are only recorded. The
    model's configuration is restored afterwards. ``progress(done, total, row)`` is called
    after each point.

    ``slo_ms``: a latency target; each row then has ``goodput_rps``, the requests per
    second answered within it (GenAI-Perf's goodput). ``baseline``: the model's own batch
    settings (as they were before the sweep) are measured at every load too, even if not in
    the grid, and marked ``baseline`` — what a recommendation is compared with.
    """
    loads = [("rate", float(r)) for r in (rates_rps or [])] + [
        ("clients", int(c)) for c in (concurrencies or [])]
    if not loads:
        raise ValueError("give rates_rps and/or concurrencies: the loads to sweep")
    rule = (StabilityRule(window_s=max(0.05, duration_s / 3.0)) if stability is True
            else stability or None)
    before = engine.batch_config(model)
    own = (int(before.max_batch_size), float(before.max_wait_ms))
    grid = list(itertools.product(max_batch_sizes, max_waits_ms))
    if baseline and own not in {(int(b), float(w)) for b, w in grid}:
        grid.append(own)
    points = [(b, w, load) for b, w in grid for load in loads]
    pinned = {"policy": policy, "latency_slo_ms": latency_slo_ms, "instances": int(instances)}
    remote = engine.remote_info(model) is not None if hasattr(engine, "remote_info") else False
    if remote:  # the server's: recorded, not set
        pinned = {k: getattr(before, k) for k in pinned}
    submit = lambda x: engine.submit(model, x)  # noqa: E731
    sample = lambda rng: engine.sample_input(  # noqa: E731
        model, rows=rows_per_request, seed=int(rng.integers(2**31)))

    def window(k: int, kind: str, load: float, seconds: float):
        if kind == "rate":
            return open_loop(submit, sample, load, pattern=pattern, duration_s=seconds,
                             seed=seed + k, stop=stop)
        return closed_loop(submit, sample, int(load), duration_s=seconds, seed=seed + k,
                           stop=stop)

    def measure(k: int, bs: int, wait: float, kind: str, load: float) -> dict[str, Any]:
        changes = {"max_batch_size": int(bs), "max_wait_ms": float(wait)}
        if not remote:
            changes.update(pinned)
        engine.configure(model, **changes)
        if rule is None:
            res = window(k, kind, load, duration_s)
            s = res.summary()
            verdict = {"stable": None, "windows": 1, "spread_rps_pct": float("nan"),
                       "spread_p99_pct": float("nan")}
        else:
            m = measure_stable(lambda j: window(1000 * k + j, kind, load, rule.window_s),
                               rule, stop=stop)
            res = m.result
            s = m.summary()
            verdict = {"stable": m.stable, "windows": len(m.windows),
                       "spread_rps_pct": m.spread_rps_pct, "spread_p99_pct": m.spread_p99_pct}
        ok_ms = res.frame.loc[res.frame["ok"], "latency_ms"].to_numpy()
        lo, hi = p99_interval(ok_ms, seed=k)
        goodput = (float((ok_ms <= slo_ms).sum()) / res.duration_s
                   if slo_ms is not None and res.duration_s > 0 else float("nan"))
        return {"max_batch_size": int(bs), "max_wait_ms": float(wait), "load_kind": kind,
                "load": load, **{c: s[c] for c in SWEEP_COLUMNS[4:13]}, "sent": s["sent"],
                "p99_ci_low_ms": lo, "p99_ci_high_ms": hi, "measurements": 1, **verdict,
                **pinned, "slo_ms": slo_ms, "goodput_rps": goodput,
                "baseline": (int(bs), float(wait)) == own}

    rows: list[dict[str, Any]] = []
    total = len(points)
    try:
        for k, (bs, wait, (kind, load)) in enumerate(points):
            if stop is not None and stop.is_set():
                break
            row = measure(k, bs, wait, kind, load)
            if stop is not None and stop.is_set():
                break  # cut short by the cancel: not a finished point
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
            if stop is not None and stop.is_set():
                break  # a remeasure cut short: keep the point as it was
            runs.sort(key=lambda r: r["p99_ms"])
            rows[i] = {**runs[1], "measurements": 3}
            if progress is not None:
                progress(total, total, {**rows[i], "remeasured": True})
    finally:
        restore = {"max_batch_size": before.max_batch_size, "max_wait_ms": before.max_wait_ms}
        if not remote:
            restore.update({k: getattr(before, k) for k in PINNED_DEFAULTS})
        engine.configure(model, **restore)
    frame = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    for col in ("latency_slo_ms", "slo_ms"):  # None -> NaN: the same after the history
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    return frame
