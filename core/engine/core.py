"""The engine: the contract's model-side methods, each a resolve-and-delegate over the rooms.

Rooms (one module each): :class:`~.registry.ModelRegistry` (models, hot swap, sessions),
:class:`~.namespace.Namespace` (names), :class:`~.loading.Loader` (files, remote models),
:class:`~.requests.Router` (submit, predict), :class:`~.experiments.ExperimentRoom` (A/B),
:mod:`.settings` (live batch settings) and :mod:`.warmup`.

:class:`EngineCore` never builds the lab (traffic, jobs, sweeps): :class:`core.Engine`
adds it, attached through two hooks — ``on_removed(name)`` when a model or experiment
goes, and ``on_close()`` before the models close — the way MLServer's registry takes
``on_model_load`` callbacks.

Example:
    >>> with EngineCore() as engine:                   # demo models are registered
    ...     engine.configure("mlp", max_batch_size=32, max_wait_ms=2.0)
    ...     engine.predict("mlp", np.zeros((1, 256), np.float32)).outputs["logits"].shape
    (1, 10)
"""

from __future__ import annotations

import atexit
import logging
import time
import weakref
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from core.ab import ExperimentRegistry
from core.batching import Prediction
from core.config import BatchConfig, EngineConfig, SessionConfig, as_list
from core.errors import ConfigError, EngineClosedError
from core.metrics import MetricsSnapshot
from core.metrics.events import EventLog, describe_changes
from core.models import (DEMO_MODELS, CacheEntry, ModelInfo, build_demo_model,
                         default_memory_budget, demo_description, install_memory_budget,
                         narrowed, sample_input, swap_differences)
from .experiments import ExperimentMethods, ExperimentRoom
from .loading import Loader
from .namespace import Namespace
from .registry import ModelRegistry
from .requests import Router
from .settings import configure
from .events import EventMethods, call_hooks as _call_hooks
from .policy import PolicyMethods
from .inputs import InputMethods
from .remotes import RemoteMethods
from .state import StateMethods
from .tracing import TraceMethods
from .warmup import WarmupMethods, check_batchable_sizes, warmup_batch_sizes

__all__ = ["EngineCore"]

log = logging.getLogger("batchlab.engine")

# Engines still open at interpreter exit are closed then, so no thread is left inside
# ONNX Runtime while the interpreter tears down (that aborts the process).
_OPEN_ENGINES: weakref.WeakSet[EngineCore] = weakref.WeakSet()


@atexit.register
def _close_open_engines() -> None:
    for engine in list(_OPEN_ENGINES):
        try:
            engine.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            log.exception("closing an engine at exit failed")


class EngineCore(ExperimentMethods, WarmupMethods, StateMethods, RemoteMethods,
                 InputMethods, EventMethods, PolicyMethods, TraceMethods):
    """Dynamic-batching inference engine on ONNX Runtime: models, requests, metrics,
    warm-up and A/B experiments (the lab is added by :class:`core.Engine`).

    Built-in demo models are registered at start-up unless ``demo_models=False``.
    Every public method is thread-safe; ``submit`` is the hot path and takes no engine lock.
    """

    def __init__(self, config: EngineConfig | None = None, *,
                 demo_models: bool | None = None) -> None:
        self.config = config or EngineConfig()
        if demo_models is None:
            demo_models = self.config.demo_models
        budget = self.config.memory_budget_bytes or default_memory_budget()
        #: The memory budget in force (process-wide: the first engine's).
        self.memory_budget_bytes = install_memory_budget(budget)
        self._registry = ModelRegistry(self.config)
        # One lock for the namespace (models and experiments); submit() reads the
        # copy-on-write tables without it.
        self._lock = self._registry.lock
        self._ns = Namespace(self._registry, ExperimentRegistry())
        self._events = EventLog()  # marks for the charts (core/engine/events.py)
        self._ab = ExperimentRoom(self.config, self._ns, self.is_warm, self._events)
        #: (host, port) pairs an engine server serves this engine on (core.serving).
        self.served_at: set[tuple[str, int]] = set()
        #: The bearer token of that server's data plane (inference, metadata, /metrics;
        #: not the control API; None: none asked), for clients the engine sends to itself
        #: (load agents on a Ray cluster, core.lab.agents).
        self.served_token: str | None = None
        self._loader = Loader(self.config, self._ns, self.memory_budget_bytes,
                              self._check_open, self._ab.check_arm_compatible, self.served_at)
        self._loader.guard = self._guard
        self._closed = False
        self._inputs: dict[str, Any] = {}  # real inputs by model (core/engine/inputs.py)
        self._router = Router(self._ns, lambda: self._closed)
        self._t0 = time.monotonic()
        #: Called with a name after a model is unloaded or an experiment deleted.
        self.on_removed: list[Callable[[str], None]] = []
        #: Called when the engine starts closing, before its models drain.
        self.on_close: list[Callable[[], None]] = []
        self.settings_guards = []   # (see EventMethods)
        _OPEN_ENGINES.add(self)
        if demo_models:
            for name in DEMO_MODELS:
                self.load_model(build_demo_model(name), name=name,
                                description=demo_description(name), source_label="demo")

    # -- models --------------------------------------------------------------------
    def load_model(self, source: str | Path | bytes | bytearray | memoryview,
                   name: str | None = None, *, replace: bool = False,
                   session: SessionConfig | None = None, batch: BatchConfig | None = None,
                   description: str = "", source_label: str | None = None,
                   probe: bool | None = None, check_rows: bool | None = None) -> ModelInfo:
        """Validate and register a model from a path or bytes; returns its :class:`ModelInfo`.

        ``probe=True`` (default ``EngineConfig.probe_models``) first runs the model once in
        a child process under the memory budget and a time limit (:mod:`core.models.probe`);
        a model whose trial run fails there is refused with :class:`ModelLoadError` and never
        runs in this process. ``check_rows=False`` skips the row check of a dynamic batch
        axis (:mod:`core.models.rowcheck`): batched on your word, said in a warning (None:
        checked, or as the version a hot swap replaces was).

        ``replace=True`` hot-swaps a model already registered under ``name``: new requests
        go to the new version, requests already queued finish on the old one, the batch
        configuration and metrics carry over. The name must not be an A/B experiment's."""
        before = self._registry.models   # (copy-on-write: the table as it was)
        info = self._loader.load_model(source, name, replace=replace, session=session,
                                       batch=batch, description=description,
                                       source_label=source_label, probe=probe,
                                       check_rows=check_rows)
        if replace:
            old = before.get(info.name)
            changed = swap_differences(old.info, info) if old is not None else []
            self._event(info.name, "swap", f"hot swap to {info.sha256[:12] or 'a new version'} "
                        f"({info.source})" + (
                            f"; what callers send or read changed: {'; '.join(changed)}"
                            if changed else ""))
            self._ab.arm_changed(info.name, "was replaced (a new version, or other session "
                                 "options)")
            self._refit_inputs(info.name)
        return info

    def measure_memory(self, name: str, batch_sizes: Sequence[int] | None = None,
                       time_limit_s: float | None = None, stop: Any = None,
                       progress: Any = None) -> pd.DataFrame:
        """Peak memory and run time of ``name`` per batch size, measured in a child process
        (columns ``batch_size, peak_mib, run_ms, error``); kept for :meth:`memory_profile`.
        Default sizes: those warm-up uses for the current ``max_batch_size``. With ``stop``
        (an Event) each size has a child of its own, and the sizes measured when it is set
        are returned; ``progress(done, total, batch_size)`` after each."""
        entry = self._local_entry(name, "its memory is its server's; measure it there")
        if batch_sizes is None:
            batch_sizes = warmup_batch_sizes(entry.served.config.max_batch_size,
                                             entry.info.runs_any_rows)
        else:
            check_batchable_sizes(name, entry.info, batch_sizes)
        frame = (self._loader.probe(entry.data, batch_sizes, time_limit_s=time_limit_s)
                 if stop is None else self._loader.probe_each(
                     entry.data, batch_sizes, time_limit_s, stop, progress))
        entry.memory_profile = frame
        return frame

    @property
    def outbound_policy(self) -> Any:
        """Where remote models may be (:class:`~core.remote.OutboundPolicy`; an engine
        server sets one); None: anywhere."""
        return self._loader.outbound_policy

    @outbound_policy.setter
    def outbound_policy(self, policy: Any) -> None:
        self._loader.outbound_policy = policy

    def session_config(self, name: str) -> SessionConfig:
        """The ONNX Runtime session options ``name`` runs with (what a sweep over
        ``session_threads`` swaps and puts back). A remote model has none here."""
        entry = self._local_entry(name, "its session is on its server")
        return entry.backend.session_config or self.config.session

    def memory_profile(self, name: str) -> pd.DataFrame | None:
        """The last :meth:`measure_memory` (or load-time probe) of ``name``, if any."""
        return self._ns.entry(name).memory_profile

    def unload_model(self, name: str) -> None:
        """Unregister ``name`` (and stop what the lab sends it); its queued requests finish
        first (up to ``close_timeout_s``, then they are failed)."""
        self._guard(name, "unload it")
        with self._lock:   # (asked again: a sweep starts under this lock)
            self._guard(name, "unload it")
            self._ns.entry(name)
            self._ab.check_not_an_arm(name)
            entry = self._registry.remove(name)
        self._removed(name)
        self._registry.finish_retire(entry.served)

    def models(self) -> list[ModelInfo]:
        """Info of every registered model, in registration order."""
        return [e.info for e in self._registry.models.values()]

    def model_names(self) -> list[str]:
        return self._registry.names()

    def model_info(self, name: str) -> ModelInfo:
        return self._ns.entry(name).info

    def model_bytes(self, name: str) -> bytes:
        """The ONNX file ``name`` was loaded from (to save it, or to load it again)."""
        return self._local_entry(name, "its file is on that server").data

    model_file = model_bytes    # (the name a replay's and a probe's copy use)

    def sample_input(self, name: str, rows: int = 1, seed: int | None = 0,
                     valid_for: Sequence[str] = ()) -> np.ndarray | dict[str, np.ndarray]:
        """Valid input for ``name`` with ``rows`` rows (exact shape if not batchable): its real
        inputs (:meth:`set_inputs`), else random and valid for ``valid_for`` too (A/B arms:
        ids below the smallest table); read-only, so submit need not copy it."""
        entry, real = self._ns.entry(name), self._inputs.get(name)
        if real is not None:  # the model's real inputs (set_inputs)
            return real.draw(rows, seed)
        self._ns.check_inputs_known(name, entry)
        also = [valid_for] if isinstance(valid_for, str) else as_list("valid_for", valid_for, "[b]")
        return sample_input(narrowed(entry.info, [self._ns.entry(m).info for m in also]),
                            rows=rows, seed=seed)

    def cache_entries(self) -> list[CacheEntry]:
        """Sessions in the content-addressed cache, most recently used first."""
        return self._registry.cache.entries()

    def evict_cache(self, sha256: str | None = None) -> int:
        """Drop cached sessions (by sha256 prefix, or all); loaded models keep working."""
        return self._registry.cache.evict(sha256)

    # -- batching configuration -----------------------------------------------------
    def configure(self, name: str, **changes: Any) -> BatchConfig:
        """Change any :class:`BatchConfig` field of ``name`` live (``max_batch_size``,
        ``max_wait_ms``, ``policy``, ``instances``...); queued requests are kept; returns
        the new config."""
        self._check_open()   # (a change after close() was taken, unsaid; a newcomer)
        doing, sent = "change its batch settings", "a change of its settings sent to its server"
        before, cfg = configure(name, lambda: self._ns.entry(name), self._lock, changes,
                                lambda: self._guard(name, doing),
                                lambda: self._busy(name, sent, doing))
        if cfg != before:
            # (steps of one slider within a second: one mark, see EventLog.add)
            self._events.add(name, "settings", describe_changes(before, cfg), merge_s=1.0)
            self._ab.arm_changed(name, "had its batch settings changed")
        return cfg

    def batch_config(self, name: str) -> BatchConfig:
        return self._ns.entry(name).served.config

    # -- requests ------------------------------------------------------------------
    def submit(self, name: str, x: Any, timeout_ms: float | None = None,
               key: Any = None, priority: int | None = None, *,
               check: Callable[[Prediction], None] | None = None) -> Future:
        """Queue one request; returns a ``concurrent.futures.Future`` of :class:`Prediction`.

        ``x`` is an array for a one-input model, else a mapping of input name to array,
        rows on the leading axis (copied here if writable). Bad input, an unknown model, a
        full queue or a closed engine raise at once; nothing is queued. ``name`` may be an A/B
        experiment (see :meth:`create_ab`); ``key`` is the routing key for sticky modes.
        ``timeout_ms`` (default: the model's ``timeout_ms``) bounds queue + compute; past
        it the future fails with :class:`RequestTimeoutError`. ``priority=1`` sends it in
        the high class (served first, refused last; ``class_metrics`` per class); 2 or 0
        (the default) in the normal class. ``check(prediction)`` runs before the request is
        settled as a success: what it raises fails and is counted instead (the server's
        check: the answer fits the form its caller asked for).
        """
        return self._router.submit(name, x, timeout_ms, key, priority, check)

    def predict(self, name: str, x: Any, timeout: float | None = None,
                key: Any = None, *, timeout_ms: float | None = None,
                priority: int | None = None, check: Any = None) -> Prediction:
        """``submit(name, x, timeout_ms).result()``: the prediction, or the request's error.

        ``timeout_ms`` defaults to the model's ``timeout_ms``; past it the request is
        settled with :class:`RequestTimeoutError` (and counted as such). ``timeout`` in
        seconds is the older spelling of the same limit (the third argument, in seconds
        here where ``submit``'s is in milliseconds: name it).
        """
        return self._router.predict(name, x, timeout, key, timeout_ms=timeout_ms,
                                    priority=priority, check=check)

    # -- metrics -----------------------------------------------------------------------
    def metrics(self, name: str, window_s: float | None = None) -> MetricsSnapshot:
        """A snapshot of ``name``'s metrics (``.to_dict()``, ``.timeseries``). For an A/B
        experiment: every request its callers sent, whichever arm served it.

        ``window_s=30`` gives counts, percentiles, batch sizes and release reasons over the
        last 30 seconds (``snapshot.window_s`` says so) instead of since the last reset."""
        entry, exp = self._ns.resolve(name)
        if entry is not None:
            return entry.metrics.snapshot(queue_depth=self._registry.queue_depth(entry),
                                          window_s=window_s)
        return self._ab.snapshot(exp, None, window_s)

    def counters(self, name: str) -> dict[str, Any]:
        """``name``'s cumulative counters (requests, successes, errors, batches, rows, summed
        queue/compute/total seconds, batch sizes, release reasons), without percentiles:
        what ``/metrics`` exports on every scrape. ``queue_depth``: waiting now;
        ``in_flight``: accepted and not settled now (waiting or running; an experiment's:
        its arms' models')."""
        entry, exp = self._ns.resolve(name)
        if entry is not None:
            out = entry.metrics.counters()
            out["queue_depth"] = self._registry.queue_depth(entry)
            out["in_flight"] = self._registry.in_flight(entry)
            return out
        return {**exp.callers.counters(), "queue_depth": self._ab.arms_depth(exp),
                "in_flight": self._ab.arms_in_flight(exp)}

    def reset_metrics(self, name: str | None = None) -> None:
        """Zero the metrics of a model or experiment (or of everything but what a replay
        holds: its private copy's are its verdict's)."""
        if name is not None:
            entry, exp = self._ns.resolve(name)
            self._guard_use(name, "reset its metrics")
            self._event(name, "reset", "metrics reset")
            if entry is not None:
                entry.reset_metrics()
            else:
                exp.reset_metrics()
            return
        for model, entry in self._registry.models.items():
            if not self._held(model):
                entry.reset_metrics()
        for exp in self._ns.experiments.all():
            exp.reset_metrics()

    def queue_depth(self, name: str) -> int:
        return self._registry.queue_depth(self._ns.entry(name))

    def status(self) -> dict[str, Any]:
        """Engine-wide summary for a status bar: models, queue depth, requests/s now.

        Cheap: counters only (no percentiles, no frames), so polling it does not load the
        engine."""
        entries = list(self._registry.models.values())
        totals = [e.metrics.totals() for e in entries]
        return {
            "models": len(totals),
            "closed": self._closed,
            "uptime_s": time.monotonic() - self._t0,
            "queue_depth": sum(self._registry.queue_depth(e) for e in entries),
            "in_flight": sum(self._registry.in_flight(e) for e in entries),
            "throughput_rps": sum(e.metrics.recent_rps() for e in entries),
            "total_requests": sum(t["total_requests"] for t in totals),
            "error_count": sum(t["error_count"] for t in totals),
            # trial runs of uploads and memory measurements, one at a time
            "loads": self._loader.loads(),
            # changes with any model's settings, version, warm-up, memory profile or real
            # inputs, or any experiment: a page drawn before (another tab's change) redraws
            "settings": hash((tuple((e.info.sha256, e.served.config, id(e.last_warmup),
                                     id(e.memory_profile)) for e in entries),
                              tuple((n, x.source, x.count) for n, x in self._inputs.items()),
                              tuple((x.name, x.a, x.b, x.b_share, x.mode)
                                    for x in self._ns.experiments.all()))),
        }

    # -- lifecycle -----------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the lab's traffic and jobs (in at most half of ``close_timeout_s``), stop
        accepting requests and finish every accepted one (of current models, of versions
        retired by a hot swap and of models being unloaded), all within ``close_timeout_s``;
        what is then pending fails with :class:`EngineClosedError`. None is left pending."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + self.config.close_timeout_s  # (on_close hooks' too)
        _call_hooks(self.on_close)
        failed = self._registry.close(deadline)
        if failed:
            log.warning("engine closed with %d request(s) failed: not finished within "
                        "close_timeout_s=%g s (with traffic and jobs stopped first)", failed,
                        self.config.close_timeout_s)
        _OPEN_ENGINES.discard(self)

    def __enter__(self) -> EngineCore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(models={self._registry.names()}, closed={self._closed})"

    # -- helpers -------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError("the engine is closed; create a new Engine")

    def _local_entry(self, name: str, why: str) -> Any:
        if (entry := self._ns.entry(name)).remote is not None:
            raise ConfigError(f"model {name!r} is remote ({entry.remote.target.url}): {why}")
        return entry

    def _removed(self, name: str) -> None:
        self._inputs.pop(name, None)
        self._events.forget(name)
        _call_hooks(self.on_removed, name)
