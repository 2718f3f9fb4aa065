"""Long work as jobs: sweeps, warm-ups, memory probes and cost profiles that run in the
engine's process, report progress, can be cancelled, and keep their result after the page
(or notebook cell) that started them is gone.

A job is a function ``work(job)`` run on its own named thread; it calls
``job.progress(fraction, message)`` as it goes and checks ``job.stop`` (a
``threading.Event``) between steps. Its return value is the job's result. Every page, tab
and client sees the same jobs through ``engine.jobs()``.

Example:
    >>> jobs = JobManager()
    >>> status = jobs.start("count", "demo", lambda job: 42)
    >>> jobs.wait(status.job_id).result
    42
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.errors import ConfigError, JobNotFoundError

__all__ = ["JobStatus", "Job", "JobManager"]

log = logging.getLogger("batchlab.jobs")

@dataclass(frozen=True)
class JobStatus:
    """What a job is doing or did. ``result`` is set once ``state == "done"``."""

    job_id: int
    kind: str
    target: str
    state: str            # running -> done | failed | cancelled
    progress: float
    message: str
    started_s_ago: float
    duration_s: float
    params: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: str | None = None
    partial: list[Any] = field(default_factory=list)
    #: the history run its results are saved in, point by point (sweeps, searches)
    run_id: int | None = None

    @property
    def finished(self) -> bool:
        return self.state != "running"


#: A listing's parameters: sequences longer than this are said by their length.
BRIEF_ITEMS = 1000   # (a grid never has that many values to a setting: only arrivals)


def _brief(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as a job listing carries them: a long sequence (a replay's 200,000
    arrivals) as ``'<200,000 values>'``. Every kept job's inputs went out whole on each
    listing, which pages poll: 50 kept replays took a listing 21 s and the engine server
    +600 MB (an adversary); :meth:`JobManager.get` still gives them whole."""
    def brief(v: Any) -> Any:
        n = len(v) if isinstance(v, (list, tuple)) or (
            hasattr(v, "__array__") and getattr(v, "ndim", 0)) else 0
        return f"<{n:,} values>" if n > BRIEF_ITEMS else v
    return {k: brief(v) for k, v in params.items()}


class Job:
    """The handle a job's work function gets: report progress, watch for cancellation."""

    def __init__(self, job_id: int, kind: str, target: str, params: dict[str, Any]) -> None:
        self.job_id, self.kind, self.target, self.params = job_id, kind, target, params
        self.stop = threading.Event()
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._state = "running"
        self._progress = 0.0
        self._message = "starting"
        self._t0 = time.monotonic()
        self._t1: float | None = None
        self._result: Any = None
        self._error: str | None = None
        #: rows a job has produced so far (a sweep's points), shown while it runs
        self.partial: list[Any] = []
        #: the history run holding its results so far (kept if the job is cut short)
        self.run_id: int | None = None
        #: why its results are not (all) in the history, when they are not
        self.history_note: str | None = None
        #: called with the final state before ``done`` is set (the manager's hook)
        self.on_finish: Callable[[str], None] | None = None
        #: the thread running its work (``threading.get_ident()``), once it runs
        self.thread: int | None = None

    def progress(self, fraction: float, message: str = "") -> None:
        with self._lock:
            self._progress = min(max(float(fraction), 0.0), 1.0)
            if message:
                self._message = message

    def _finish(self, state: str, result: Any = None, error: str | None = None,
                message: str | None = None) -> None:
        with self._lock:
            self._state, self._result, self._error = state, result, error
            self._t1 = time.monotonic()
            if state == "done":
                self._progress = 1.0
            if message:
                self._message = message
        if self.on_finish is not None:
            self.on_finish(state)
        self.done.set()

    def status(self, with_result: bool = True) -> JobStatus:
        with self._lock:
            now = time.monotonic()
            return JobStatus(job_id=self.job_id, kind=self.kind, target=self.target,
                             state=self._state, progress=self._progress,
                             message=self._message, started_s_ago=now - self._t0,
                             duration_s=(self._t1 or now) - self._t0,
                             params=self.params if with_result else _brief(self.params),
                             result=self._result if with_result else None, error=self._error,
                             # (a finished job's points are in its result: a listing
                             # carried a 401-point sweep's, 326 kB a call; an adversary)
                             partial=list(self.partial) if with_result
                             or self._state == "running" else [],
                             run_id=self.run_id if (self.run_id or 0) > 0 else None)


class JobManager:
    """Runs jobs on threads and keeps the last ``keep`` finished ones."""

    def __init__(self, keep: int = 50,
                 on_change: Callable[[Job, str], None] | None = None) -> None:
        self._jobs: OrderedDict[int, Job] = OrderedDict()
        #: Called with a job and "started", then with its final state.
        self._on_change = on_change
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._keep = keep

    def start(self, kind: str, target: str, work: Callable[[Job], Any],
              params: dict[str, Any] | None = None,
              exclusive: bool = False, conflicts: tuple[str, ...] = ()) -> JobStatus:
        """Start ``work`` as a job. With ``exclusive``, refuse while another job of the
        same kind, or of a kind in ``conflicts``, runs on the same target (two sweeps, or a
        sweep and a profile, would fight over its settings and restore each other's)."""
        with self._lock:
            if exclusive:
                for other in self._jobs.values():
                    if ((other.kind == kind or other.kind in conflicts)
                            and other.target == target and not other.done.is_set()):
                        why = ("" if other.kind == kind else
                               f": both change {target}'s batch settings while they run")
                        raise ConfigError(f"a {other.kind.replace('_', ' ')} of {target!r} is "
                                          f"already running (job {other.job_id}){why}; wait "
                                          "for it or cancel it first")
            job = Job(next(self._ids), kind, target, dict(params or {}))
            job.on_finish = lambda state: self._tell(job, state)
            self._jobs[job.job_id] = job
            self._trim()
        self._tell(job, "started")
        threading.Thread(target=self._run, args=(job, work), name=f"job-{job.job_id}-{kind}",
                         daemon=True).start()
        return job.status()

    def _trim(self) -> None:
        finished = [j for j in self._jobs.values() if j.done.is_set()]
        for j in finished[: max(0, len(finished) - self._keep)]:
            del self._jobs[j.job_id]

    def _tell(self, job: Job, what: str) -> None:
        if self._on_change is not None:
            try:
                self._on_change(job, what)
            except Exception:  # noqa: BLE001 - a mark must not fail a job
                log.exception("job event hook failed")

    @staticmethod
    def _run(job: Job, work: Callable[[Job], Any]) -> None:
        job.thread = threading.get_ident()
        try:
            result = work(job)
        except BaseException as err:  # noqa: BLE001 - a job's failure is its status
            if job.stop.is_set():
                job._finish("cancelled", message="cancelled")
            else:
                log.warning("job %d (%s of %s) failed: %s", job.job_id, job.kind, job.target,
                            err)
                job._finish("failed", error=f"{type(err).__name__}: {err}",
                            message="failed")
            return
        if job.stop.is_set():
            job._finish("cancelled", result=result, message="cancelled (partial result kept)")
        else:
            job._finish("done", result=result, message="finished")

    def _get(self, job_id: int) -> Job:
        with self._lock:
            job = self._jobs.get(int(job_id))
        if job is None:
            raise JobNotFoundError(f"no job {job_id}; jobs kept: "
                                     f"{', '.join(map(str, self._jobs)) or 'none'}")
        return job

    def running_on(self, target: str, kinds: tuple[str, ...]) -> Job | None:
        """The job of one of ``kinds`` running on ``target``, if any."""
        with self._lock:
            return next((j for j in self._jobs.values() if j.kind in kinds
                         and j.target == target and not j.done.is_set()), None)

    def running_runs(self) -> set[int]:
        """The history runs of jobs still running (being saved point by point)."""
        with self._lock:
            return {j.run_id for j in self._jobs.values()
                    if not j.done.is_set() and (j.run_id or 0) > 0}

    def get(self, job_id: int) -> JobStatus:
        return self._get(job_id).status()

    def list(self, kind: str | None = None, target: str | None = None,
             with_results: bool = False) -> list[JobStatus]:
        """Newest first; results only when asked (they can be large), and a finished job's
        ``partial`` points then too (its result holds them; ``job(id)`` has them always)."""
        with self._lock:
            jobs = list(self._jobs.values())
        out = [j.status(with_results) for j in reversed(jobs)
               if (kind is None or j.kind == kind) and (target is None or j.target == target)]
        return out

    def cancel(self, job_id: int) -> JobStatus:
        job = self._get(job_id)
        job.stop.set()
        return job.status(False)

    def wait(self, job_id: int, timeout_s: float | None = None) -> JobStatus:
        job = self._get(job_id)
        job.done.wait(timeout_s)
        return job.status()

    def cancel_all(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for j in jobs:
            j.stop.set()
        deadline = time.monotonic() + timeout_s
        for j in jobs:
            j.done.wait(max(0.0, deadline - time.monotonic()))
