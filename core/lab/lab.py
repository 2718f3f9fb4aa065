"""The lab attached to an engine: built-in traffic, long work as jobs, and the experiment
history. It is a client of the engine's contract (``submit``, ``model_info``,
``remote_info``...) and hooks into its lifecycle (``on_removed``, ``on_close``); the engine
never builds it.

Example:
    >>> lab = Lab(engine)                       # engine: an EngineCore
    >>> lab.start_traffic("mlp", rate_rps=200)
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from core.config import plain_types
from core.errors import ConfigError
from core.models import ids_refused
from core.metrics import helpers_cpu_s
from .history import ExperimentStore, default_store
from .job_kinds import JOB_KINDS, JOB_WORDS, PASSED_ON
from .jobs import JobManager, JobStatus
from .agent_traffic import AgentTraffic
from .traffic import TrafficManager, TrafficStatus, generated_refused

if TYPE_CHECKING:
    from core.engine import EngineCore

__all__ = ["Lab"]


class Lab:
    """Traffic generators, jobs and the history of one engine."""

    def __init__(self, engine: EngineCore) -> None:
        self.engine = engine
        self.traffic = TrafficManager(engine.submit, on_end=lambda target, text: (
            engine._event(target, "traffic", text)))
        self.jobs = JobManager(on_change=lambda job, what: engine._event(
            job.target, "job", f"{job.kind} (job {job.job_id}) {what}"))
        self._store: ExperimentStore | None = None
        engine.on_removed.append(self.traffic.stop)
        engine.on_close.append(self._close)
        engine.settings_guards.append(self._check_not_measured)

    def _check_not_measured(self, name: str, what: str) -> None:
        """Refuse to change a model a sweep, search or cost profile is measuring, but from
        that job's own thread (a slider moved in another tab went into the point under
        way, recorded as the sweep's setting, and was put back unsaid at its end)."""
        job = self.jobs.running_on(name, _PINNING_JOBS)
        if job is None or job.thread == threading.get_ident():
            return
        raise ConfigError(
            f"model {name!r} is being measured by a {JOB_WORDS[job.kind]} (job "
            f"{job.job_id}), which sets its batch settings for each point and puts the "
            f"model's own back when it ends: to {what} now, cancel the job first "
            f"(engine.cancel_job({job.job_id}), or Cancel where it shows), or wait for it")

    def _close(self) -> None:
        """The engine's close: traffic and jobs stopped within the first half of its
        ``close_timeout_s`` (at most 5 s), so the models keep the rest to drain."""
        budget = min(5.0, self.engine.config.close_timeout_s / 2)
        deadline = time.monotonic() + budget
        self.traffic.stop(timeout_s=budget)
        self.jobs.cancel_all(max(0.0, deadline - time.monotonic()))

    @property
    def store(self) -> ExperimentStore:
        if self._store is None:
            self._store = default_store()
            self._store.running_runs = self.jobs.running_runs   # (never dropped by the bound)
        return self._store

    def start_traffic(self, target: str, rate_rps: float, pattern: str, rows_per_request: int,
                      duration_s: float | None, seed: int | None,
                      high_share: float | None = None,
                      priority: int | None = None, agents: int = 0,
                      ray_address: str | None = None) -> TrafficStatus:
        engine = self.engine
        is_exp = target in engine.ab_experiments()
        models = engine.ab_arms(target) if is_exp else (target,)
        for m in models:   # (a replay's copy: its traffic would skew the replay; a reviewer)
            engine._guard_use(m, "send it traffic")
        first = models[0]
        info = engine.model_info(first)
        if not info.batchable and info.batch_mode == "exact" and rows_per_request != 1:
            raise ConfigError(f"model {target!r} takes requests of exactly its declared "
                              f"shape ({info.batch_reason}); use rows_per_request=1")
        # What is sent is the first arm's (its real inputs, else generated for every arm).
        real = engine.real_inputs(first)
        if is_exp and real is not None and (
                bad := ids_refused(real.arrays, engine.model_info(models[1]))):
            raise ConfigError(f"arm A's real inputs ({real.describe()}) are sent to both arms, "
                              f"and arm B, {models[1]!r}, cannot take them: {bad}. Give "
                              f"{first!r} inputs both arms take (Models page, set_inputs)")
        for m in models if real is None else ():
            if why := generated_refused(engine, m):
                raise ConfigError(f"{m!r} refused generated inputs in its trial run ({why}): "
                                  f"give {first!r} real inputs first (Models page, set_inputs)")

        def arms() -> tuple[str, ...]:   # (now: an experiment's arms may change meanwhile)
            return tuple(engine.ab_arms(target)) if is_exp else (target,)

        def sample(rng: np.random.Generator) -> Any:   # (valid for every arm it reaches)
            a, *rest = arms()
            return engine.sample_input(a, rows=rows_per_request,
                                       seed=int(rng.integers(2**31)), valid_for=rest)

        def inputs_key() -> tuple:   # (the same objects until they change: Engine's own)
            a, *rest = arms()
            return (engine.real_inputs(a), engine.model_info(a),
                    *(engine.model_info(m) for m in rest))

        # Keys for every experiment, like traffic from 1,000 users: the experiment may be
        # switched to sticky routing (which needs them) while the traffic runs.
        remote = any(engine.remote_info(m) is not None for m in models)
        if agents:
            if priority is not None or high_share is not None:
                raise ConfigError("load agents send without a priority class: leave priority "
                                  "and high_share unset, or agents at 0")
            status = self.traffic.add(AgentTraffic(
                engine, target, sample, agents, ray_address, rate_rps=rate_rps,
                pattern=pattern, rows_per_request=rows_per_request, duration_s=duration_s,
                seed=seed, on_end=self.traffic.on_end, inputs_key=inputs_key))
            engine._event(target, "traffic", f"traffic started: {rate_rps:g} req/s {pattern}"
                          f" from {agents} load agent(s) on Ray"
                          + (f" for {duration_s:g} s" if duration_s else ""))
            return status
        status = self.traffic.start(target, sample, rate_rps=rate_rps, pattern=pattern,
                                    rows_per_request=rows_per_request, duration_s=duration_s,
                                    seed=seed, key_pool=1000 if is_exp else None,
                                    client_cpu=helpers_cpu_s if remote else None,
                                    high_share=high_share, priority=priority,
                                    inputs_key=inputs_key)
        engine._event(target, "traffic", f"traffic started: {rate_rps:g} req/s {pattern}"
                      + (f" × {rows_per_request} rows" if rows_per_request != 1 else "")
                      + (f" for {duration_s:g} s" if duration_s else "")
                      + (f", {high_share:.0%} high priority" if high_share is not None else "")
                      + (f", priority {priority}" if priority is not None else ""))
        return status

    def start_job(self, kind: str, target: str, **params: Any) -> JobStatus:
        spec = JOB_KINDS.get(kind)
        if spec is None:
            raise ConfigError(f"unknown job kind {kind!r}; expected one of "
                              f"{', '.join(JOB_KINDS)}")
        self.engine.model_info(target)  # a model of this engine, or ModelNotFoundError
        if kind == "warmup":   # (refused now, not a job started to fail; every guard: a
            self.engine._guard(target, "warm it up")   # notebook's sweep holds it too)
        work, exclusive = spec
        sig = inspect.signature(work)
        # (a name it does not take, said before a missing one: max_wait_ms for max_waits_ms
        # read only "missing a required argument: 'max_waits_ms'"; a notebook newcomer)
        if kind in PASSED_ON:    # (the names its **kw hands on: refused now, not in the job)
            inner, own = PASSED_ON[kind]
            takes = sorted((set(sig.parameters) | set(inspect.signature(inner).parameters))
                           - set(own) - {"engine", "job", "target", "kw"})
            for name in params:
                if name not in takes:
                    near = difflib.get_close_matches(name, takes, n=1)
                    raise ConfigError(f"{kind} job: no parameter {name!r}"
                                      + (f" ({own[name]})" if own.get(name) else
                                         f" (did you mean {near[0]!r}?)" if near else "")
                                      + f"; it takes {', '.join(takes)}")
        try:
            sig.bind(self.engine, None, target, **params)
        except TypeError as err:
            raise ConfigError(f"{kind} job: {err}") from None
        for name, value in params.items():   # (quiet="no" over HTTP stopped the traffic)
            want = sig.parameters[name].annotation if name in sig.parameters else None
            # scalars only: a notebook's numpy array of arrivals is the list it stands for
            kinds = None if any(w in str(want) for w in ("list", "dict")) else plain_types(want)
            if kinds is not None and not isinstance(value, kinds):
                raise ConfigError(f"{kind} job: {name} must be {want}, got "
                                  f"{type(value).__name__} {repr(value)[:60]}")
        if kind not in _PINNING_JOBS:
            return self._start(kind, target, work, params, exclusive)
        # A pinning job starts under the engine's lock, the one configure() asks its guard
        # under: a change of the model's settings is refused, or made before the job reads
        # the settings it restores (it was lost at the restore).
        return self.engine._settings_locked(
            lambda: self._start(kind, target, work, params, exclusive))

    def _start(self, kind: str, target: str, work: Callable[..., Any],
               params: dict[str, Any], exclusive: bool) -> JobStatus:
        if kind in _PINNING_JOBS:
            if busy := self.engine._busy_with(target):   # (it would measure a warm-up's
                raise ConfigError(                        # runs beside its own)
                    f"{JOB_WORDS[kind]} of {target!r} not started: {busy} is going on with "
                    "it; start it again when that has ended (a warm-up stops at its time "
                    "limit)")
            # a notebook's sweep of it holds it too: refused now, not a job that fails at
            # its first point (a reviewer); a job's says "already running" below
            if self.jobs.running_on(target, _PINNING_JOBS) is None:
                self.engine._guard(target, "measure it")
        shown = params
        if kind in _PINNING_JOBS:   # the settings it changes while it runs, as they were
            try:   # (all of them: a restart meanwhile brings these back, not the job's)
                shown = {**params, "own_settings": dataclasses.asdict(
                    self.engine.batch_config(target))}
                session = self.engine.session_config(target)
                if session is not None:
                    shown["own_session"] = dataclasses.asdict(session)
            except Exception:  # noqa: BLE001 - e.g. an A/B experiment: no settings of its own
                pass
        return self.jobs.start(kind, target,
                               lambda job: work(self.engine, job, target, **params),
                               params=shown, exclusive=exclusive,
                               conflicts=_PINNING_JOBS if kind in _PINNING_JOBS else ())


#: Jobs that change their model's batch settings while they run (and restore them).
_PINNING_JOBS = ("sweep", "search", "profile_cost")
