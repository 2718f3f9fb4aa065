"""The model registry: load, hot swap, unload, the session cache and warm-up state.

Each registered model is a :class:`ModelEntry`: its backend (a local session or a remote
server) and info, the request validator, what serves it (a
:class:`~core.batching.Batcher`, or a :class:`~core.remote.RemoteDispatcher`) and its
metrics, and which batch sizes it has been warmed at. The table of entries is copy-on-write, so ``Engine.submit`` reads
it without a lock.

A hot swap (``replace=True``) or an unload *retires* the old batcher: it stops accepting,
drains what it had accepted, and is tracked until it has, so ``close()`` can finish (or
fail) those requests too; no request is ever left behind on an untracked thread.

Example:
    >>> reg = ModelRegistry(EngineConfig())
    >>> entry = reg.add("mlp", data)          # bytes -> ModelEntry
    >>> reg.get("mlp").served.submit(...)
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from core.batching import Backend, Batcher, ModelRunner, ServedModel
from core.config import BatchConfig, EngineConfig, SessionConfig
from core.metrics import ModelMetrics, Trace
from core.models import (LoadedModel, ModelInfo, RequestValidator, SessionCache,
                         load_model_bytes)
from core.remote import RemoteDispatcher, RemoteModel, RemoteValidator
from .warmup import WarmupReport

__all__ = ["ModelRegistry", "ModelEntry"]

log = logging.getLogger("batchlab.registry")

# Past the close deadline, how long in total threads get to leave runs that were stopped.
_JOIN_GRACE_S = 0.5


@dataclass
class ModelEntry:
    """Everything the engine keeps for one registered model: what runs it (``backend``: a
    local session or a remote server) and what serves it (``served``: a batcher or a remote
    dispatcher), through the :mod:`core.batching.backend` protocols."""

    backend: Backend
    validator: Callable[[Any], tuple[tuple[np.ndarray, ...], int]]
    served: ServedModel
    metrics: ModelMetrics
    #: the remote model's own record (server, its batch settings), None for a local model
    remote: RemoteModel | None = None
    last_warmup: WarmupReport | None = None
    data: bytes = b""                       # the model file (for probes in a child process)
    memory_profile: Any = None              # pandas frame from core.models.probe, once measured
    trace: Trace | None = None              # the last requests' timeline (core.metrics.trace)
    check_rows: bool = True                 # load_model's: False kept across a restart

    @property
    def info(self) -> ModelInfo:
        return self.backend.info

    @property
    def runner(self) -> ModelRunner:
        return ModelRunner(self.backend)

    @property
    def sizes_run(self) -> set[int]:
        """Batch sizes this model has run (traffic and warm-up), as its backend saw them
        (1 for a model run a row at a time)."""
        return self.backend.sizes_run

    def reset_metrics(self) -> None:
        """Zero its metrics, its classes' and its timeline (the timeline had kept the
        requests from before a reset while the totals read 0). The timeline is the model's
        view of its trace: an experiment's on the same model keeps its requests (they were
        gone from its timeline while its counts still had them; an adversary)."""
        self.metrics.reset()
        self.served.classes.reset()
        if self.trace is not None:
            self.trace.reset()


class ModelRegistry:
    """Registered models and the batchers being retired. Thread-safe.

    The caller (the engine) checks names against its whole namespace; the registry only
    keeps the table.
    """

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.cache = SessionCache(config.cache_size)
        self.lock = threading.RLock()
        self.models: dict[str, ModelEntry] = {}   # copy-on-write: read without the lock
        self._retiring: set[ServedModel] = set()

    # -- reading -----------------------------------------------------------------------
    def get(self, name: str) -> ModelEntry | None:
        return self.models.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.models

    def names(self) -> list[str]:
        return list(self.models)

    def queue_depth(self, entry: ModelEntry) -> int:
        """Requests waiting for ``entry``'s model: in its batcher, and in the version a hot
        swap replaced while they were queued (they drain there: still the model's)."""
        depth = entry.served.queue_depth()
        if self._retiring:
            name = entry.served.name
            depth += sum(b.queue_depth() for b in list(self._retiring) if b.name == name)
        return depth

    def in_flight(self, entry: ModelEntry) -> int:
        """Requests ``entry``'s model accepted and has not settled: waiting or in a batch
        being run (in a version a hot swap replaced too)."""
        n = entry.served.pending()
        if self._retiring:
            name = entry.served.name
            n += sum(b.pending() for b in list(self._retiring) if b.name == name)
        return n

    # -- changing ----------------------------------------------------------------------
    def build(self, data: bytes, name: str, session: SessionConfig | None, source: str,
              description: str) -> LoadedModel:
        """Validate and create (or reuse from the cache) the session; nothing registered."""
        return load_model_bytes(data, name, cache=self.cache,
                                options=session or self.config.session, source=source,
                                description=description)

    def install(self, name: str, loaded: LoadedModel, batch: BatchConfig | None,
                data: bytes = b"", memory_profile: Any = None) -> ModelEntry:
        """Register ``loaded`` under ``name`` (caller holds ``lock`` and has checked the
        name). An existing model of that name is hot-swapped: its batch configuration and
        metrics carry over, and its batcher is retired (drains on its own thread)."""
        old, metrics, trace = self._carried_over(name)
        info = loaded.info
        cfg = batch or (old.served.config if old is not None else self.config.batch)
        batcher = Batcher(name, ModelRunner(loaded), loaded.output_names, cfg, metrics,
                          batchable=info.batchable, trace=trace)
        _number_on(old, batcher)
        return self._publish(name, old, ModelEntry(
            loaded, RequestValidator(info), batcher, metrics, data=data,
            memory_profile=memory_profile, trace=trace))

    def install_remote(self, name: str, remote: RemoteModel, batch: BatchConfig) -> ModelEntry:
        """Register a remote model under ``name`` (caller holds ``lock`` and has checked the
        name); a model of that name is replaced and its batcher (or dispatcher) retired, as
        in :meth:`install`."""
        old, metrics, trace = self._carried_over(name)
        dispatcher = RemoteDispatcher(name, remote, batch, metrics, trace)
        _number_on(old, dispatcher)
        return self._publish(name, old, ModelEntry(
            remote, RemoteValidator(remote), dispatcher, metrics, remote=remote, trace=trace))

    def _carried_over(self, name: str) -> tuple[ModelEntry | None, ModelMetrics, Trace | None]:
        """The entry ``name`` replaces (if any), and the metrics and trace the new one
        keeps: the old ones on a hot swap, new ones otherwise."""
        old = self.models.get(name)
        if old is not None:
            return old, old.metrics, old.trace
        trace = Trace(self.config.trace_requests) if self.config.trace_requests else None
        return None, ModelMetrics(self.config.timeseries_seconds), trace

    def _publish(self, name: str, old: ModelEntry | None, entry: ModelEntry) -> ModelEntry:
        """Make ``entry`` the one of ``name`` (copy-on-write) and retire the old batcher.
        A hot swap keeps the per-class metrics too, as it keeps the model's (they were
        wiped unsaid: a sweep's thread counts swapped them away twice), and admission's
        memory of the high class (its reserve held for the class's CLASS_MEMORY_S)."""
        if old is not None:
            entry.served.classes = old.served.classes
            was, now = getattr(old.served, "queue", None), getattr(entry.served, "queue", None)
            if hasattr(was, "high_seen") and hasattr(now, "high_seen"):   # (and the high
                now.high_seen, now.classes = was.high_seen, was.classes   # class's reserve)
        models = dict(self.models)
        models[name] = entry
        self.models = models
        if old is not None:
            self._retire(old.served, wait=False)
        return entry

    def remove(self, name: str) -> ModelEntry:
        """Unregister ``name`` (caller holds ``lock``); its batcher drains, tracked."""
        models = dict(self.models)
        entry = models.pop(name)
        self.models = models
        self._retiring.add(entry.served)
        entry.served.begin_close()
        return entry

    def finish_retire(self, batcher: ServedModel) -> None:
        """Wait for a removed model's batcher to drain (up to ``close_timeout_s``)."""
        try:
            batcher.finish_close(time.monotonic() + self.config.close_timeout_s)
        finally:
            with self.lock:
                self._retiring.discard(batcher)

    def _retire(self, batcher: ServedModel, wait: bool) -> None:
        self._retiring.add(batcher)
        batcher.begin_close()
        if wait:
            self.finish_retire(batcher)
        else:
            threading.Thread(target=self.finish_retire, args=(batcher,),
                             name=f"retire-{batcher.name}", daemon=True).start()

    # -- closing -----------------------------------------------------------------------
    def close(self, deadline: float) -> int:
        """Close every batcher, current and retiring, sharing one ``deadline``
        (``time.monotonic()``): all stop accepting first, then each drains in the time
        left; whatever is still pending after that is failed. Returns how many failed."""
        with self.lock:
            batchers = [e.served for e in self.models.values()] + list(self._retiring)
        for b in batchers:
            b.begin_close()
        for b in batchers:  # each drains in what is left of the one deadline
            b.wait_drained(deadline)
        failed = sum(b.abort() for b in batchers)  # then every model's leftovers fail at once
        grace = time.monotonic() + _JOIN_GRACE_S
        for b in batchers:
            b.join_threads(grace)
        with self.lock:
            self._retiring.difference_update(batchers)
        return failed


def _number_on(old: ModelEntry | None, served: Batcher | RemoteDispatcher) -> None:
    """A hot swap's new version numbers its batches on from the one it replaces, local or
    remote (they share the trace: a timeline merged two batches 1)."""
    if old is not None:
        ids = getattr(old.served, "executor", old.served).batch_ids
        getattr(served, "executor", served).batch_ids = ids
