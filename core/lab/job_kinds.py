"""The lab's kinds of job: sweep and quick search (saved to the history), warm-up, memory probe, cost profile
(with the overhead calibrated), and replay. Each is ``work(engine, job, target, **params)``.

Example:
    >>> engine.start_job("sweep", "mlp", max_batch_sizes=[8, 32], max_waits_ms=[0, 2],
    ...                  rates_rps=[500])
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

import pandas as pd

from core.errors import BatchlabError
from .costmodel import (ENGINE_BOUND_RPS, fit_cost_model, measure_capacity, profile_cost_frame,
                        with_capacities)
from .agents import agent_endpoint, check_ray_address
from .grid import put_back
from .jobs import Job
from .replay import DEFAULT_SLO_MS, check_replay, check_replay_rows, replay
from .search import Constraints, quick_search
from .sweeps import PINNED_DEFAULTS, sweep
from .traffic import experiments_with_arm
from .whatif import calibrate_overhead

__all__ = ["JOB_KINDS", "PASSED_ON", "JOB_WORDS"]

log = logging.getLogger("batchlab.jobs")


def _keep(engine: Any, job: Job, name: str, config: dict[str, Any], frame: pd.DataFrame,
          save: bool, final: bool) -> int | None:
    """Save the job's run in the history (the first time) or bring it up to date: a long
    job is saved point by point (``complete: False``, ``partial: True`` until it ends), so
    what it measured is kept if it is cancelled, fails or the server dies under it."""
    if not save or frame.empty or job.run_id == _LET_GO:
        return None if job.run_id == _LET_GO else job.run_id
    config = {**config, "complete": final and not job.stop.is_set(), "partial": not final}
    try:
        if job.run_id is None:
            job.run_id = engine.store.save(name, config, frame)
        else:
            engine.store.update(job.run_id, config, frame)
        job.history_note = None
    except KeyError:   # (its run deleted from the history meanwhile: the job failed, its
        # result lost; an adversary) - let go, as whoever deleted it meant
        job.history_note = (f"its run {job.run_id} was deleted from the history while it "
                            "ran, and is not saved again: its points are in the job's "
                            "result only")
        job.run_id = _LET_GO
        return None
    except (BatchlabError, OSError, sqlite3.Error) as err:   # (a locked file: the job
        # failed after 2 of 3 points; an adversary) - it goes on, and says so
        log.warning("could not keep %s's points in the history: %s", name, err)
        job.history_note = (f"the history could not keep its points ({type(err).__name__}: "
                            f"{err})" + (": what was saved before is there, the rest is in "
                                         "the job's result only" if final else ""))
    return job.run_id


#: A job's run_id once its run was deleted from the history while it ran: not saved again.
_LET_GO = -1


def _noted(job: Job, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with why the history does not hold it all (``history_note``), if so."""
    return {**result, "history_note": job.history_note} if job.history_note else result


def _grid_name(what: str, sizes: list[int], waits: list[float], loads: list[float],
               unit: str, policy: str | None = None) -> str:
    """A run's name that tells it from the model's other runs in the history and its
    comparison chart: ``'mlp sweep: batch 8, 32 · wait 0, 2 ms · 200, 800 req/s'``, the
    values measured (past four, their range and count) and a policy other than deadline
    (two runs of one grid under deadline and adaptive were named alike; a newcomer)."""
    def values(vals: list[float]) -> str:
        v = sorted(set(vals))
        return (", ".join(f"{x:,g}" for x in v) if len(v) <= 4
                else f"{v[0]:,g}-{v[-1]:,g} ({len(v)} values)")
    parts = [f"batch {values(sizes)}" if sizes else "",
             f"wait {values(waits)} ms" if waits else "",
             f"{values(loads)} {unit}" if loads else "",
             f"{policy}" if policy and policy != "deadline" else ""]
    return f"{what}: {' · '.join(p for p in parts if p)}" if any(parts) else what


def _sweep(engine: Any, job: Job, target: str, *, max_batch_sizes: list[int],
           max_waits_ms: list[float], rates_rps: list[float] | None = None,
           concurrencies: list[int] | None = None, duration_s: float = 2.0,
           slo_p99_ms: float | None = None, save: bool = True, **kw: Any) -> dict[str, Any]:
    name = _grid_name(f"{target} sweep", max_batch_sizes, max_waits_ms,
                      rates_rps or concurrencies or [], "req/s" if rates_rps else "clients",
                      kw.get("policy"))
    config = {
        "model": target, "max_batch_sizes": list(max_batch_sizes),
        "max_waits_ms": list(max_waits_ms),
        "load_kind": "rate" if rates_rps else "clients",
        "loads": list(rates_rps or concurrencies or []), "duration_s": duration_s,
        # (both given: the rates above, and these clients; the clients were left out)
        **({"concurrencies": list(concurrencies)} if rates_rps and concurrencies else {}),
        "slo_p99_ms": slo_p99_ms, "policy": kw.get("policy", "deadline"),
        "latency_slo_ms": kw.get("latency_slo_ms"), "instances": kw.get("instances", 1),
        "inputs": engine.input_source(target), **_load_shape(kw), **_agents_config(kw)}

    def progress(done: int, total: int, row: dict[str, Any]) -> None:
        job.partial.append(row)
        job.progress(done / total, f"point {done} of {total}: batch {row['max_batch_size']}, "
                                   f"wait {row['max_wait_ms']:g} ms, load {row['load']:g} -> "
                                   f"p99 {row['p99_ms']:.2f} ms")
        _keep(engine, job, name, config, pd.DataFrame(job.partial), save, final=False)

    frame = sweep(engine, target, max_batch_sizes, max_waits_ms, rates_rps=rates_rps,
                  concurrencies=concurrencies, duration_s=duration_s, progress=progress,
                  stop=job.stop, slo_ms=slo_p99_ms, **kw)
    run_id = _keep(engine, job, name, config, frame, save, final=True)
    return _noted(job, {"run_id": run_id, "frame": frame})


def _search(engine: Any, job: Job, target: str, *, max_batch_sizes: list[int],
            max_waits_ms: list[float], rates_rps: list[float], p99_ms: float,
            min_throughput_rps: float | None = None, max_memory_mib: float | None = None,
            session_threads: list[int] | None = None, duration_s: float = 2.0,
            save: bool = True, **kw: Any) -> dict[str, Any]:
    """The quick search (a hill-climb, :mod:`core.lab.search`), saved to the history with
    the points it measured. Progress counts points against the grid's size (an upper
    bound: the climb measures a fraction of it)."""
    grid = (len(max_batch_sizes) * len(max_waits_ms) * max(1, len(session_threads or []))
            * len(rates_rps))

    name = _grid_name(f"{target} quick search", max_batch_sizes, max_waits_ms, rates_rps,
                      "req/s", kw.get("policy"))
    config = {
        "model": target, "search": "quick", "max_batch_sizes": list(max_batch_sizes),
        "max_waits_ms": list(max_waits_ms), "session_threads": session_threads,
        "load_kind": "rate", "loads": list(rates_rps), "duration_s": duration_s,
        "slo_p99_ms": p99_ms, "min_throughput_rps": min_throughput_rps,
        "max_memory_mib": max_memory_mib, "policy": kw.get("policy", "deadline"),
        "grid_points": grid, "inputs": engine.input_source(target), **_load_shape(kw)}

    def progress(points: int, row: dict[str, Any]) -> None:
        job.partial.append(row)
        job.progress(min(0.95, points / grid),
                     f"point {points} (the grid has {grid}): batch {row['max_batch_size']}, "
                     f"wait {row['max_wait_ms']:g} ms, threads {row['session_threads']}, "
                     f"load {row['load']:g} -> p99 {row['p99_ms']:.2f} ms")
        _keep(engine, job, name, config, pd.DataFrame(job.partial), save, final=False)

    constraints = Constraints(p99_ms=p99_ms, min_throughput_rps=min_throughput_rps,
                              max_memory_mib=max_memory_mib)
    res = quick_search(engine, target, max_batch_sizes, max_waits_ms, rates_rps, constraints,
                       session_threads=session_threads, duration_s=duration_s,
                       progress=progress, stop=job.stop, **kw)
    run_id = _keep(engine, job, name, {
        **config, "best": list(res.best) if res.best else None, "reason": res.reason,
        "points": res.points, "measured_s": res.measured_s}, res.frame, save, final=True)
    return _noted(job, {
        "run_id": run_id, "frame": res.frame, "scores": res.scores,
        "path": [list(p) for p in res.path], "best": list(res.best) if res.best else None,
        "reason": res.reason, "points": res.points, "grid_points": grid,
        "measured_s": res.measured_s,
        "excluded": {f"{b}/{w:g}/{t}": why for (b, w, t), why in res.excluded.items()}})


def _warmup(engine: Any, job: Job, target: str, *, iterations: int = 10,
            batch_sizes: list[int] | None = None) -> Any:
    def progress(done: int, total: int, batch_size: int) -> None:
        job.progress(done / total, f"batch size {batch_size}: run {done} of {total}")

    return engine.warmup(target, iterations=iterations, batch_sizes=batch_sizes,
                         progress=progress, stop=job.stop)


def _measure_memory(engine: Any, job: Job, target: str, *,
                    batch_sizes: list[int] | None = None) -> Any:
    job.progress(0.0, "running the model in a child process at each batch size")

    def progress(done: int, total: int, size: int) -> None:
        job.progress(done / total, f"batch size {size} measured ({done} of {total})")

    return engine.measure_memory(target, batch_sizes=batch_sizes, stop=job.stop,
                                 progress=progress)


def _profile_cost(engine: Any, job: Job, target: str, *,
                  batch_sizes: list[int] | None = None, iterations: int = 10,
                  calibrate_s: float = 2.0) -> Any:
    """Compute per batch size, the fitted cost model, and its overhead calibrated with
    traffic at two loads below capacity (in the engine's process, as sweeps measure)."""
    def progress(done: int, total: int, batch_size: int) -> None:
        job.progress(0.5 * done / total, f"timing batch size {batch_size}")

    info = engine.model_info(target)
    sizes = batch_sizes or ([1, 2, 4, 8, 16, 32, 64] if info.runs_any_rows else [1])
    report = engine.warmup(target, iterations=iterations, batch_sizes=sizes,
                           progress=progress, stop=job.stop, purpose="cost profile")
    profile = profile_cost_frame(report)
    # (sizes whose warm runs took clearly longer than the cold one: the cores were busy,
    # and the fit is too high; the page said nothing of it; a newcomer)
    disturbed = report.disturbed_sizes
    if len(profile) < 2:
        return {"profile": profile, "cost": None, "disturbed": disturbed}
    cost = fit_cost_model(profile)
    cfg = engine.batch_config(target)
    # What the what-if models (the deadline policy, one batch at a time, nothing shed: a
    # sweep's pinned settings) is what is measured, whatever the model has now (an SLO shed the capacity bursts: 704
    # errors and a ceiling of nothing); the model's own settings come back after.
    own = {k: getattr(cfg, k) for k in (*PINNED_DEFAULTS, "max_batch_size")}
    remote = engine.remote_info(target) is not None
    pin = not remote and any(own[k] != v for k, v in PINNED_DEFAULTS.items())
    if pin:
        engine.configure(target, **PINNED_DEFAULTS)
    k = cfg.max_batch_size
    # The engine's work per batch told apart from its work per request: the capacity at
    # the model's size and at a quarter of it (or four times, from below 4); a remote
    # target's batching is not ours to move.
    # (nor an A/B arm's: each change of its settings starts the experiment's evidence again)
    arm = bool(experiments_with_arm(engine, target))
    sizes = [k] if remote or arm or not info.batchable else [k, k // 4 if k >= 4 else 4 * k]
    try:
        capacities: dict[int, float | None] = {}
        for i, size in enumerate(sizes):
            if job.stop.is_set():
                break
            if size != k:
                try:
                    engine.configure(target, max_batch_size=size)
                except BatchlabError:  # refused here (a budget...): one size, as before
                    break
            job.progress(0.5 + 0.05 * i, f"measuring capacity at max batch size {size}: "
                                         "bursts of one-row requests at once")
            capacities[size] = measure_capacity(engine, target, stop=job.stop)
        if len(sizes) > 1 and engine.batch_config(target).max_batch_size != k:
            engine.configure(target, max_batch_size=k)
        cost = with_capacities(cost, capacities, k)
        # Calibrated at 10 % and 35 % of the measured capacity (so the overhead's line
        # spans the loads asked about: docs/benchmarks.md, the what-if's checks);
        # unmeasured, below the engine's rough bound on this machine.
        capacity = cost.capacity_rps(cfg.max_batch_size)
        if not cost.work_ms(k):
            capacity = min(capacity, ENGINE_BOUND_RPS)
        job.progress(0.6, f"calibrating the overhead with traffic at {0.1 * capacity:,.0f} "
                          f"and {0.35 * capacity:,.0f} req/s")
        cost = calibrate_overhead(engine, target, cost, [0.1 * capacity, 0.35 * capacity],
                                  duration_s=calibrate_s, stop=job.stop)
    finally:
        now = engine.batch_config(target) if not remote else cfg
        if pin or now.max_batch_size != k:
            put_back(engine, target, **own)
    return {"profile": profile, "cost": cost, "disturbed": disturbed}


def _load_shape(kw: dict[str, Any]) -> dict[str, Any]:
    """What a run records of the load it sent, to send it again: its arrivals' pattern and
    seed and each request's rows (a run in the history could not be repeated exactly; a
    notebook newcomer). The defaults are the measuring functions' own."""
    return {"pattern": kw.get("pattern", "poisson"), "seed": kw.get("seed", 0),
            "rows_per_request": kw.get("rows_per_request", 1)}


def _agents_config(kw: dict[str, Any]) -> dict[str, Any]:
    """What a run records of its load agents (none: from the engine's own process)."""
    n = kw.get("agents") or 0
    if not n:
        return {}
    return {"agents": n if isinstance(n, int) else len(getattr(n, "actors", [])),
            "ray_address": kw.get("ray_address")}


def _replay(engine: Any, job: Job, target: str, *, arrivals_s: list[float],
            policies: list[str] | None = None, slo_ms: float | None = None,
            agents: int = 0, ray_address: str | None = None, quiet: bool = False,
            recorded_lag_ms: float = 0.0, recorded_burst: int = 0,
            rows_per_request: list[int] | None = None) -> Any:
    """``quiet``: stop every traffic generator first (the replay's runs share the cores with
    them); the result's ``traffic_stopped`` names what was stopped. ``recorded_lag_ms`` and
    ``recorded_burst``: how far behind its schedule the traffic the arrivals were recorded
    from was, and how many requests it then sent at once (returned with the result, which
    they explain)."""
    def progress(done: int, total: int, policy: str) -> None:
        job.progress(done / total, f"replayed under {policy} ({done} of {total})")

    slo_ms = DEFAULT_SLO_MS if slo_ms is None else slo_ms
    # Everything that can refuse it, before any traffic is stopped (and in the model's name,
    # not its copy's): arrivals and policies, a model served here, a server for the agents.
    check_replay(arrivals_s, policies or None, slo_ms)
    check_replay_rows(arrivals_s, rows_per_request, agents)
    engine.model_file(target)
    if agents:
        agent_endpoint(engine, target)
        check_ray_address(engine, ray_address)
    stopped = [f"{t.label} at {t.rate_rps:,.0f} req/s" for t in engine.traffic()
               if t.running] if quiet else []
    if stopped:
        engine.stop_traffic()
    job.progress(0.0, f"replaying {len(arrivals_s)} arrivals under each policy"
                 + (f" (stopped the traffic: {', '.join(stopped)})" if stopped else ""))
    out = replay(engine, target, arrivals_s, policies or None, stop=job.stop,
                 progress=progress, slo_ms=slo_ms, agents=agents, ray_address=ray_address,
                 rows_per_request=rows_per_request)
    return {**out, "traffic_stopped": stopped, "recorded_lag_ms": float(recorded_lag_ms),
            "recorded_burst": int(recorded_burst)}


#: What a job's ``**kw`` is handed to, and the parameters of that function the job sets
#: itself (with what to give instead): ``start_job`` refuses any other name up front, where a
#: name handed on used to start a job that failed with a TypeError (slo_ms=, a typo).
PASSED_ON: dict[str, tuple[Callable[..., Any], dict[str, str]]] = {
    "sweep": (sweep, {"engine": "", "model": "", "progress": "", "stop": "",
                      "slo_ms": "give slo_p99_ms"}),
    "search": (quick_search, {"engine": "", "model": "", "constraints": "give p99_ms, "
                              "min_throughput_rps, max_memory_mib", "progress": "", "stop": ""}),
}

#: How a page names each kind (the sidebar said "measure_memory of cnn"; a newcomer).
JOB_WORDS = {"sweep": "sweep", "search": "quick search", "warmup": "warm-up",
             "measure_memory": "memory measurement", "profile_cost": "cost profile",
             "replay": "replay"}

#: kind -> (work(engine, job, target, **params), exclusive per target)
JOB_KINDS: dict[str, tuple[Callable[..., Any], bool]] = {
    "sweep": (_sweep, True),
    "search": (_search, True),
    "warmup": (_warmup, True),
    "measure_memory": (_measure_memory, True),
    "profile_cost": (_profile_cost, True),
    "replay": (_replay, True),
}
