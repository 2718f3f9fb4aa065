"""``core.Engine``: the engine with its lab — the contract used by the dashboard, notebooks,
outside scripts and tests (names stay stable: extend, don't rename).

:class:`~core.engine.EngineCore` serves models; :class:`~core.lab.lab.Lab` adds built-in
traffic, jobs and the history, attached through the engine's hooks.

Example:
    >>> from core import Engine
    >>> with Engine() as engine:                       # demo models are registered
    ...     engine.configure("mlp", max_batch_size=32, max_wait_ms=2.0)
    ...     engine.start_traffic("mlp", rate_rps=200, duration_s=2)
    ...     engine.wait_traffic("mlp").succeeded
"""

from __future__ import annotations

from typing import Any

from core.config import EngineConfig, check_wait_s
from core.engine import EngineCore
from .history import ExperimentStore
from .jobs import JobStatus
from .lab import Lab
from .traffic import TrafficStatus

__all__ = ["Engine"]


class Engine(EngineCore):
    """Dynamic-batching inference engine on ONNX Runtime, with its lab.

    Built-in demo models are registered at start-up unless ``demo_models=False``.
    Every public method is thread-safe; ``submit`` is the hot path and takes no engine lock.

    Example:
        >>> engine = Engine(demo_models=False)
        >>> info = engine.load_model("model.onnx", name="resnet")
        >>> fut = engine.submit("resnet", x)            # Future[Prediction]
        >>> fut.result().outputs
        >>> engine.close()
    """

    def __init__(self, config: EngineConfig | None = None, *,
                 demo_models: bool | None = None) -> None:
        super().__init__(config, demo_models=demo_models)
        self._lab = Lab(self)

    def status(self) -> dict[str, Any]:
        """Engine-wide summary for a status bar: models, queue depth, requests/s now, and
        whether built-in traffic runs. Cheap: counters only."""
        out = super().status()
        # A job started or ended elsewhere changes what a page shows (a sweep's progress,
        # its result): in the hash an open page watches, like settings.
        jobs = tuple((j.job_id, j.state) for j in self._lab.jobs.list())
        out["settings"] = hash((out["settings"], jobs))
        return {**out, "traffic_running": self.traffic_running()}

    # -- built-in traffic -------------------------------------------------------------
    def start_traffic(self, target: str, rate_rps: float = 100.0, pattern: str = "constant",
                      rows_per_request: int = 1, duration_s: float | None = None,
                      seed: int | None = 0, high_share: float | None = None,
                      priority: int | None = None, agents: int = 0,
                      ray_address: str | None = None) -> TrafficStatus:
        """Send open-loop traffic to ``target`` from a background thread (replacing any
        traffic already going there in the same class); stop it with :meth:`stop_traffic`.
        ``priority``: every request in that class (1 high, 2 or 0 normal), a generator per
        class with its own rate and pattern beside the others; or ``high_share``: one
        generator, that share of its requests in the high class (``priority=1``), the rest
        with ``priority=2`` (two independent streams under Poisson arrivals). See
        :meth:`class_metrics`.

        ``agents``: the requests leave from that many load agents on the Ray cluster at
        ``ray_address`` (None: the one connected, else a local Ray) instead of this
        process, for a rate one process can't offer; they send over HTTP to a remote
        model's server or this engine's own (an engine no server exposes is refused), and
        the status counts their requests as their answers come back
        (:mod:`core.lab.agent_traffic`)."""
        self._check_open()
        return self._lab.start_traffic(target, rate_rps, pattern, rows_per_request,
                                       duration_s, seed, high_share, priority, agents,
                                       ray_address)

    def stop_traffic(self, target: str | None = None, priority: int | None | str = "any"
                     ) -> None:
        """Stop the built-in traffic to ``target`` (or to every target): all of its
        classes, or the generator of one ``priority`` (None: the one sending none)."""
        self._lab.traffic.stop(target, priority)

    def wait_traffic(self, target: str, timeout_s: float | None = None,
                     priority: int | None | str = "any") -> TrafficStatus:
        """Block until the bounded traffic run to ``target`` ends (or ``timeout_s``), and
        until every request it sent has an answer; returns its final status. With a
        generator per class: the one of ``priority``, or by default every one of them (the
        status returned is then the last started's)."""
        return self._lab.traffic.wait(target, check_wait_s(timeout_s), priority)

    def traffic(self) -> list[TrafficStatus]:
        """Status of every built-in traffic generator started (running or finished)."""
        return self._lab.traffic.statuses()

    def traffic_running(self) -> bool:
        return self._lab.traffic.running()

    # -- jobs: long work that outlives the page that started it ---------------------
    @property
    def store(self) -> ExperimentStore:
        """The experiment history (:class:`~core.lab.ExperimentStore`, opened on first use
        at ``$BATCHLAB_DATA_DIR/experiments.sqlite``)."""
        return self._lab.store

    def start_job(self, kind: str, target: str, **params: Any) -> JobStatus:
        """Start long work on model ``target`` in the background: ``"sweep"`` (the
        arguments of :func:`core.lab.sweep`, plus ``slo_p99_ms``; the result is saved to
        :attr:`store`), ``"warmup"``, ``"measure_memory"``, ``"profile_cost"`` or
        ``"replay"``. Watch it with :meth:`job` / :meth:`jobs`, stop it with
        :meth:`cancel_job`."""
        self._check_open()
        return self._lab.start_job(kind, target, **params)

    def jobs(self, kind: str | None = None, target: str | None = None,
             with_results: bool = False) -> list[JobStatus]:
        """Every job kept (running and the last finished), newest first."""
        return self._lab.jobs.list(kind, target, with_results)

    def job(self, job_id: int) -> JobStatus:
        """One job's status, with its result once done."""
        return self._lab.jobs.get(job_id)

    def cancel_job(self, job_id: int) -> JobStatus:
        """Ask a job to stop; it ends at its next step (a sweep keeps its finished points)."""
        return self._lab.jobs.cancel(job_id)

    def wait_job(self, job_id: int, timeout_s: float | None = None) -> JobStatus:
        """Block until the job ends (or ``timeout_s``); returns its status."""
        return self._lab.jobs.wait(job_id, check_wait_s(timeout_s))
