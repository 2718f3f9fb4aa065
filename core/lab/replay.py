"""Replay: the same recorded arrivals sent to a model once under each release policy, on
the engine, so the policies are compared on one trace.

The replay runs on a private copy of the model (loaded from the same file, with the same
batch settings, under a name of its own, warmed up first, unloaded after): live traffic to
the model does not mix into the replay's batches (it still shares the cores: the Batching
page offers to stop it), and the live model's settings and metrics are never touched.

Example:
    >>> out = replay(engine, "mlp", engine.timeline("mlp", 2.0)["arrived_s"])
    >>> out["summary"][["policy", "p99_ms"]]
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from core.config import _check_int, as_list, plain
from core.errors import ConfigError
from core.policies import POLICIES, registered
from .agents import agent_endpoint, agents_for, check_ray_address
# (the replay's names from before the arrivals files had a module of their own: kept)
from .arrivals import (MAX_ARRIVALS_FILE_BYTES, MAX_REPLAY_ARRIVALS, MAX_REPLAY_SPAN_S,
                       _in_time_order, arrivals_from_csv, arrivals_to_csv, check_arrivals,
                       read_arrivals_csv)
from .disturbance import _Disturbance, _node_ip, agents_cpu_s
from .grid import hold_copy
from .loadgen import open_loop

if TYPE_CHECKING:
    from core.engine import EngineCore

log = logging.getLogger("batchlab.replay")

__all__ = ["REPLAY_POLICIES", "DEFAULT_SLO_MS", "replay_policies", "replay", "arrivals_from_csv",
           "arrivals_to_csv", "read_arrivals_csv", "MAX_REPLAY_ARRIVALS", "MAX_REPLAY_SPAN_S",
           "MAX_ARRIVALS_FILE_BYTES", "check_replay"]

#: The policies a replay compares unless told otherwise: every registered one (a policy
#: module added to ``core/policies/``, or registered in a notebook, is replayed too).
REPLAY_POLICIES = POLICIES
#: The latency objective a replay counts goodput against, unless given one (ms).
DEFAULT_SLO_MS = 50.0


def replay_policies() -> tuple[str, ...]:
    """Every release policy registered now, in menu order."""
    return tuple(registered())


def check_replay(arrivals_s: Sequence[float], policies: Sequence[str] | None,
                 slo_ms: float) -> tuple[tuple[str, ...], np.ndarray]:
    """The policies (default: every registered one) and sorted arrivals a replay takes, or
    ValueError saying what is wrong (before anything is loaded, or any traffic stopped)."""
    if isinstance(policies, str):   # (read letter by letter: "unknown policy 'd'")
        raise ConfigError(f"policies must be a list of policy names, such as [{policies!r}], "
                          f"got the string {policies!r}")
    policies = tuple(policies) if policies else replay_policies()
    unknown = [p for p in policies if p not in registered()]
    if unknown:
        raise ConfigError(f"unknown policy {unknown[0]!r}; registered: "
                          f"{', '.join(registered())}")
    if not (isinstance(slo_ms, (int, float)) and 0 < slo_ms < float("inf")):
        raise ConfigError(f"slo_ms must be a positive number of milliseconds, got {slo_ms!r}")
    try:
        arr = np.asarray(arrivals_s, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.asarray([np.nan])
    if arr.ndim != 1:   # (one number: numpy's AxisError)
        raise ConfigError(f"arrivals_s must be a list of arrival times in seconds (e.g. "
                          f"engine.timeline(...)['arrived_s'].tolist()), got {arrivals_s!r:.60}")
    arr = np.sort(arr)
    if len(arr) == 0:
        raise ConfigError("no arrivals to replay: run some traffic first")
    if not np.isfinite(arr).all():
        raise ConfigError("arrival times must be finite numbers of seconds")
    check_arrivals(arr)
    return policies, arr


def _warm(engine: EngineCore, model: str, copy: str, stop: Any) -> str | None:
    """The copy's session is new: warm-up runs it at the batch sizes its settings produce
    before the first policy (which would otherwise pay for the cold runs alone), on the
    session itself (outside its queue: no policy or estimator learns from it, no max wait is
    waited) and with the model's own samples (its real inputs: the copy has none, and random
    values can be out of a real model's range). Returns why it could not, or None."""
    try:
        engine.warmup(copy, iterations=3, stop=stop, inputs_of=model)
    except Exception as err:  # noqa: BLE001 - the replay goes on cold, and says so
        log.info("replay: warming %s failed (%s); replayed cold", copy, err)
        return f"the copy could not be warmed up ({err}): the first policy ran it cold"
    return None


def in_process_only(engine: Any, what: str, kind: str) -> None:
    """Refuse work that loads a model into the engine's own process (``what`` says how)
    for an engine's client: over HTTP it said "load_model over HTTP cannot choose whether
    the upload is tried in a child process", about an argument nobody passed."""
    from core.engine import EngineCore
    if not isinstance(engine, EngineCore):
        raise ConfigError(f"{what} in the engine's own process, which a client of its "
                          f"server cannot do from here: run it there "
                          f"as a job, engine.start_job({kind!r}, model, ...), and watch it with "
                          "engine.job(id)")


def check_replay_rows(arrivals_s: Sequence[float], rows_per_request: Sequence[int] | None,
                     agents: Any = 0) -> list[int]:
    """Each arrival's rows in the arrivals' time order (one each when None), or a
    ConfigError: a count that is not a whole number >= 1, a list of another length, or rows
    that vary sent by load agents (they send one request shape)."""
    n = len(arrivals_s) if hasattr(arrivals_s, "__len__") else 0
    if rows_per_request is None:
        return [1] * max(1, n)
    rows = as_list("rows_per_request", rows_per_request, "[1, 4, 4]")
    if len(rows) != n:
        raise ConfigError(f"rows_per_request has {len(rows)} counts for {n} arrivals: give "
                          "one per arrival (timeline(...)['rows'])")
    for r in rows:
        _check_int("rows_per_request", plain(r), 1, 1 << 20)
    order = _in_time_order(arrivals_s)[1]
    rows = [int(rows[i]) for i in order]
    if agents and len(set(rows)) > 1:
        raise ConfigError("load agents send one request shape: these arrivals carry "
                          f"{len(set(rows))} different row counts; replay them from this "
                          "process (no agents)")
    return rows


def replay(engine: EngineCore, model: str, arrivals_s: Sequence[float],
           policies: Sequence[str] | None = None, stop: Any = None,
           progress: Callable[[int, int, str], None] | None = None,
           slo_ms: float = DEFAULT_SLO_MS, agents: Any = 0,
           ray_address: str | None = None,
           rows_per_request: Sequence[int] | None = None) -> dict[str, Any]:
    """Send the same arrivals (seconds, as recorded in ``engine.timeline``) to a private
    copy of ``model`` once under each policy (default: every registered one), on the
    engine (real runs, one after the other), with the model's max batch size and max wait;
    the copy is unloaded after. ``aimd`` sizes batches by the model's ``latency_slo_ms``
    if the model runs aimd, else by ``slo_ms``; the other policies run without an SLO.

    Returns ``{"summary": DataFrame (policy, requests, p50_ms, p99_ms, mean_batch_rows,
    batches, slo_ms, within_slo: the share of requests answered within ``slo_ms``,
    goodput_rps: those per second of the run; other_cpu_cores, foreign_requests and
    disturbed: what else the machine and the engine did meanwhile, as a sweep's points
    say it, "" when nothing), "timelines": {policy: DataFrame}, "copy":
    its name, "cold": why the copy could not be warmed up, or None, "timeline_note": what
    the timelines leave out when a run outran the trace, or None}`` with each run's
    timeline (batches and mean batch are counted by the copy's metrics: all of them).

    ``agents``: the arrivals are sent by that many load agents on the Ray cluster at
    ``ray_address`` (or a :class:`~core.lab.agents.LoadAgents` given), shared out at their
    recorded times, to this engine's server (an engine no server exposes is refused).

    ``rows_per_request``: each arrival's rows, as recorded (``timeline(...)["rows"]``;
    default: one each). Traffic of 4 rows a request was replayed as one-row requests, its
    batches then 9 and 7 rows where 28 had left (a newcomer)."""
    policies, arr = check_replay(arrivals_s, policies, slo_ms)
    sizes = check_replay_rows(arrivals_s, rows_per_request, agents)
    in_process_only(engine, "replay loads a private copy of the model", "replay")
    offsets = arr - arr[0]
    before = engine.batch_config(model)
    # (a sweep measuring the model holds its own settings: replayed under the sweep's point
    # of the moment, 2 / 0 ms for a model of 32 / 5 ms, unsaid; an adversary)
    jobs = getattr(engine, "jobs", None) or (lambda **_: [])
    own = next((j.params["own_settings"] for j in jobs(target=model)
                if not j.finished and isinstance(j.params.get("own_settings"), dict)), None)
    if own:
        before = before.replace(**own)
    if max(sizes) > before.max_batch_size:   # (each refused at submit, unsaid; a reviewer)
        raise ConfigError(f"these arrivals carry requests of up to {max(sizes)} rows, and "
                          f"{model} takes at most max_batch_size={before.max_batch_size} "
                          "rows a request now: raise it (engine.configure) to replay them")
    data = engine.model_file(model)
    inputs = {r: engine.sample_input(model, rows=r) for r in sorted(set(sizes))}
    sample_x = inputs[sizes[0]]
    copy = f"{model}-replay-{uuid.uuid4().hex[:6]}"
    rows, timelines = [], {}
    traced: dict[str, tuple[int, int]] = {}   # policy: (in its timeline, sent)
    with contextlib.ExitStack() as stack:
        stack.callback(hold_copy(engine, model, copy))   # (held from before it exists)
        engine.load_model(data, name=copy, batch=before.replace(latency_slo_ms=None),
                          description=f"private copy of {model} for a replay (unloaded "
                          "after)", source_label=f"replay of {model}", probe=False,
                          # batched as the model is (its row check's verdict, or its owner's)
                          check_rows=engine.model_info(model).batch_mode == "alone")
        stack.callback(engine.unload_model, copy)   # (before the hold is let go)
        cold = _warm(engine, model, copy, stop)
        ep = agent_endpoint(engine, copy) if agents else None   # (refused before Ray)
        if agents:
            check_ray_address(engine, ray_address)
        team = stack.enter_context(agents_for(agents, ray_address))
        here = _node_ip() if team is not None else None   # (agents here: the replay's load)
        if team is not None:    # (again, with Ray connected: the address nodes reach)
            ep = agent_endpoint(engine, copy)
        for k, policy in enumerate(policies):
            if stop is not None and stop.is_set():
                break
            # aimd sizes batches by an objective: the model's own if it runs aimd, else the
            # replay's SLO (its default, 10 ms, would judge it by another target).
            keep = ((before.latency_slo_ms or slo_ms) if policy == before.policy == "aimd"
                    else slo_ms if policy == "aimd" else None)
            engine.configure(copy, policy=policy, latency_slo_ms=keep)
            engine.reset_metrics(copy)
            look = _Disturbance(engine)   # (the machine is shared: said, as a sweep's points)
            t_start = time.perf_counter()
            if team is not None:
                res = team.run(ep["url"], ep["model"], sample_x, 1.0, 1.0, offsets_s=offsets,
                               headers=ep["headers"])
            else:
                order = iter([inputs[r] for r in sizes])   # (sent in order, one thread)
                res = open_loop(lambda v: engine.submit(copy, next(order)),
                                lambda rng: sample_x, 1.0, offsets_s=offsets, seed=k,
                                stop=stop)
            span = time.perf_counter() - t_start + 0.5
            tl = engine.timeline(copy, last_s=span)
            tl = tl[tl["arrived_s"] >= t_start].reset_index(drop=True)
            timelines[policy] = tl
            s = res.summary()
            f = res.frame
            within = int((f["ok"] & (f["latency_ms"] <= slo_ms)).sum())
            # batches from the copy's counters (every batch of the copy is the replay's):
            # the timeline is the trace's last trace_requests, which a long replay outruns
            counts = engine.counters(copy)
            if len(tl) < s["sent"] and len(tl) >= engine.config.trace_requests:
                traced[policy] = (len(tl), int(s["sent"]))   # (the trace full: not refusals)
            rows.append({"policy": policy, "requests": s["sent"], "p50_ms": s["p50_ms"],
                         "p99_ms": s["p99_ms"],
                         "mean_batch_rows": counts["rows"] / counts["batches"]
                         if counts["batches"]
                         else float("nan"),
                         "batches": int(counts["batches"]),
                         "slo_ms": float(slo_ms),
                         "within_slo": within / s["sent"] if s["sent"] else float("nan"),
                         "goodput_rps": within / res.duration_s if res.duration_s > 0
                         else float("nan"),
                         **look.verdict(int(s["sent"]), float(s.get("max_lag_ms") or 0.0),
                                        agents_cpu_s(res, here), measured="the replay")})
            if progress is not None:
                progress(k + 1, len(policies), policy)
    note = None if not traced else (
        "the timelines hold each run's last " + ", ".join(
            f"{n:,} of {sent:,} requests ({p})" for p, (n, sent) in traced.items())
        + ": the trace keeps the last EngineConfig.trace_requests; the table counts them all")
    return {"summary": pd.DataFrame(rows), "timelines": timelines, "copy": copy, "cold": cold,
            "timeline_note": note, "max_batch_size": before.max_batch_size,
            "max_wait_ms": before.max_wait_ms}   # (what it ran with: the charts' marks)
