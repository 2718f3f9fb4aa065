"""The engine: one facade over the model registry, A/B experiments and built-in traffic.

This is the contract used by the dashboard, notebooks, outside scripts and tests; names
here stay stable (extend, don't rename). The rooms behind it:

* :mod:`core.registry`: models (load, hot swap, unload, session cache, warm-up state),
  each with its :class:`~core.batcher.Batcher` (queue, executor, supervisor, ledger);
* :mod:`core.router`: A/B experiments (the table, routing, shadow copies, per-arm metrics);
* :mod:`core.traffic`: built-in traffic generators, clients of :meth:`Engine.submit`.

Models and experiments share one namespace: a name is either, never both, and every
method that takes a name resolves it the same way.

Example:
    >>> from core import Engine
    >>> with Engine() as engine:                       # demo models are registered
    ...     engine.configure("mlp", max_batch_size=32, max_wait_ms=2.0)
    ...     pred = engine.predict("mlp", np.zeros((1, 256), np.float32))
    ...     pred.outputs["logits"].shape
    (1, 10)
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import inspect
import logging
import re
import threading
import time
import weakref
from concurrent.futures import Future, TimeoutError as FuturesTimeout
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .batcher import Prediction
from .config import BatchConfig, EngineConfig, SessionConfig, check_timeout_ms
from .demo_models import DEMO_MODELS, build_demo_model, demo_description
from .errors import (BatchlabError, ConfigError, EngineClosedError, ModelLoadError,
                     ModelNotFoundError, RequestTimeoutError)
from .jobs import JOB_KINDS, JobManager, JobStatus
from .loadgen import TrafficStatus
from .memory import default_memory_budget, format_bytes, install_memory_budget
from .metrics import MetricsSnapshot
from .models import CacheEntry, ModelInfo, read_model_source, sample_input
from .registry import ModelEntry, ModelRegistry, check_batchable_sizes
from .probe import probe_model
from .router import ABExperiment, ABReport, ExperimentRegistry, arm_differences
from .settle import Request
from .traffic import TrafficManager
from .warmup import ProgressFn, WarmupReport, run_warmup, warmup_batch_sizes

__all__ = ["Engine"]

log = logging.getLogger("batchlab.engine")

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# Engines still open at interpreter exit are closed then, so no thread is left inside
# ONNX Runtime while the interpreter tears down (that aborts the process).
_OPEN_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


@atexit.register
def _close_open_engines() -> None:
    for engine in list(_OPEN_ENGINES):
        try:
            engine.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            log.exception("closing an engine at exit failed")


# Kept for code that imported it from here.
_Entry = ModelEntry


def _interface(info: ModelInfo) -> list[tuple[str, str, Any]]:
    return [(t.name, t.dtype, t.shape) for t in info.inputs]


class Engine:
    """Dynamic-batching inference engine on ONNX Runtime.

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
        self.config = config or EngineConfig()
        if demo_models is None:
            demo_models = self.config.demo_models
        budget = self.config.memory_budget_bytes or default_memory_budget()
        #: The memory budget in force (process-wide: the first engine's).
        self.memory_budget_bytes = install_memory_budget(budget)
        self._registry = ModelRegistry(self.config)
        self._cache = self._registry.cache
        # One lock for the namespace (models and experiments); submit() reads the
        # copy-on-write tables without it.
        self._lock = self._registry.lock
        self._ab = ExperimentRegistry()
        self._closed = False
        self._t0 = time.monotonic()
        self._traffic = TrafficManager(self.submit)
        self._jobs = JobManager()
        self._store: Any = None
        #: (host, port) pairs an engine server serves this engine on (core.server).
        self.served_at: set[tuple[str, int]] = set()
        _OPEN_ENGINES.add(self)
        if demo_models:
            for name in DEMO_MODELS:
                self.load_model(build_demo_model(name), name=name,
                                description=demo_description(name), source_label="demo")

    @property
    def _models(self) -> dict[str, ModelEntry]:
        return self._registry.models

    @property
    def _experiments(self) -> dict[str, ABExperiment]:  # kept for code that read it
        return self._ab.table

    # -- the namespace -------------------------------------------------------------------
    def _check_new_name(self, name: Any, kind: str) -> None:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ConfigError(f"{kind} name must be 1-64 characters of letters, digits, '.', "
                              f"'_' or '-', starting with a letter or digit; got {name!r}")

    def _kind_of(self, name: str) -> str | None:
        if name in self._registry:
            return "model"
        if name in self._ab:
            return "experiment"
        return None

    # -- models --------------------------------------------------------------------
    def load_model(self, source: str | Path | bytes | bytearray | memoryview,
                   name: str | None = None, *, replace: bool = False,
                   session: SessionConfig | None = None, batch: BatchConfig | None = None,
                   description: str = "", source_label: str | None = None,
                   probe: bool | None = None) -> ModelInfo:
        """Validate and register a model from a path or bytes; returns its :class:`ModelInfo`.

        ``probe=True`` (default ``EngineConfig.probe_models``) first runs the model once in
        a child process under the memory budget and a time limit (:mod:`core.probe`); a
        model whose trial run fails there is refused with :class:`ModelLoadError` and never
        runs in this process.

        ``replace=True`` hot-swaps a model already registered under ``name``: new requests
        go to the new version, requests already queued finish on the old one, the batch
        configuration and metrics carry over. The name must not be an A/B experiment's.
        """
        self._check_open()
        # Built-in demo models are trusted and exempt from the upload size limit.
        limit = 2**62 if source_label == "demo" else self.config.max_model_bytes
        data, where = read_model_source(source, limit)
        if name is None:
            name = Path(where).stem if where != "upload" else None
        if name is None:
            name = "model-" + hashlib.sha256(data).hexdigest()[:8]
        self._check_new_name(name, "model")
        self._check_name_free(name, "model", replace)
        loaded = self._registry.build(data, name, session, source_label or where, description)
        profile = None
        if probe is None:  # built-in demo models are trusted, like for the size limit
            probe = self.config.probe_models and source_label != "demo"
        if probe:
            profile = self._probe(data, [1], session)
            bad = profile["error"].dropna()
            if len(bad):
                raise ModelLoadError(
                    f"model {name!r} failed its trial run (one row, in a separate process, "
                    f"memory budget {format_bytes(self.memory_budget_bytes)}): {bad.iloc[0]}. "
                    "It was not loaded")
        with self._lock:
            self._check_open()
            self._check_name_free(name, "model", replace)
            old = self._registry.get(name)
            if old is not None:
                self._check_arm_compatible(name, loaded.info)
            self._registry.install(name, loaded, batch, data, profile)
        return loaded.info

    def add_remote(self, name: str, url: str, model: str, version: str | None = None,
                   headers: dict[str, str] | None = None, *, inputs: Any = None,
                   outputs: Any = None, timeout_s: float = 10.0, max_connections: int = 64,
                   binary: bool | None = None, replace: bool = False,
                   batch: BatchConfig | None = None) -> ModelInfo:
        """Register ``name``: model ``model`` served by an Open Inference Protocol (KServe
        v2) HTTP endpoint at ``url`` (Triton, KServe, MLServer, Seldon, a Batchlab server).

        The server's metadata gives the inputs and outputs (checked at submit as for a local
        model); where it declares none, pass ``inputs``/``outputs`` as
        ``[{"name": ..., "datatype": "FP32", "shape": [-1, 4]}]`` or let the first request
        that succeeds define them. ``headers`` go with every request (e.g.
        ``{"Authorization": "Bearer ..."}``; a ``user:password@`` in the URL becomes Basic
        auth and is not kept in the URL). ``timeout_s`` bounds each of ``add_remote``'s own
        calls (metadata, readiness, config); a request's timeout is ``timeout_ms``
        (``batch=`` or :meth:`configure`), and the time it has left is passed on to Triton
        and Batchlab servers. Requests are sent as they come over up to
        ``max_connections`` keep-alive connections, with binary tensors (``binary=None``:
        unless the server is MLServer, which takes JSON only); the server batches. Latency is measured here, at the client.

        The server's batch settings are read where it reports them (``GET .../config``:
        Triton, a Batchlab server); for a server that does not (MLServer), ``batch`` says how
        it is deployed (shown as given, used by sweeps over load). ``timeout_ms`` and
        ``max_queue`` of ``batch`` are the client's.

        An unreachable or wrong endpoint raises :class:`~core.errors.RemoteTargetError`
        saying what was tried; nothing is registered then.
        """
        from .remote import connect_remote, points_at
        self._check_open()
        self._check_new_name(name, "model")
        if points_at(url, self.served_at):
            raise ConfigError(f"{url} is this engine's own server: a remote model of itself "
                              "would send every request back to itself. Use the model "
                              f"{model!r} directly")
        self._check_name_free(name, "model", replace)
        remote = connect_remote(name, url, model, version, headers, inputs=inputs,
                                outputs=outputs, timeout_s=timeout_s,
                                max_connections=max_connections, binary=binary)
        cfg = batch or self.config.batch
        known = {k: remote.batching[k] for k in ("max_batch_size", "max_wait_ms")
                 if isinstance(remote.batching.get(k), (int, float))
                 and not isinstance(remote.batching.get(k), bool)}
        if not known and batch is not None:
            # The server does not report them: the caller says how it is deployed.
            remote.batching.update(max_batch_size=batch.max_batch_size,
                                   max_wait_ms=batch.max_wait_ms,
                                   source="given to add_remote (the server does not report "
                                          "them)")
        if known.get("max_batch_size") is not None and known["max_batch_size"] < 1:
            known["max_batch_size"] = 1
        try:
            cfg = cfg.replace(**known)
        except ConfigError:
            pass  # a server value outside Batchlab's ranges: keep ours for display
        try:
            with self._lock:
                self._check_open()
                self._check_name_free(name, "model", replace)
                if self._registry.get(name) is not None:
                    self._check_arm_compatible(name, remote.info)
                self._registry.install_remote(name, remote, cfg)
        except BaseException:
            remote.target.close()
            raise
        return remote.info

    def remote_info(self, name: str) -> dict[str, Any] | None:
        """For a remote model (:meth:`add_remote`): its URL, server, model name, whether the
        server declared its tensors, its batch settings as the server reports them and
        whether Batchlab can change them (``configurable``); None for a local model."""
        remote = self._entry(name).remote
        return remote.describe() if remote is not None else None

    def _probe(self, data: bytes, batch_sizes: Sequence[int],
               session: SessionConfig | None = None,
               time_limit_s: float | None = None) -> pd.DataFrame:
        opts = session or self.config.session
        return probe_model(data, batch_sizes, self.memory_budget_bytes,
                           time_limit_s or self.config.probe_time_limit_s,
                           threads=opts.intra_op_threads)

    def measure_memory(self, name: str, batch_sizes: Sequence[int] | None = None,
                       time_limit_s: float | None = None) -> pd.DataFrame:
        """Peak memory and run time of ``name`` per batch size, measured in a child process
        (columns ``batch_size, peak_mib, run_ms, error``); kept for :meth:`memory_profile`.
        Default sizes: those warm-up uses for the current ``max_batch_size``."""
        entry = self._entry(name)
        if entry.remote is not None:
            raise ConfigError(f"model {name!r} is remote ({entry.remote.target.url}): its "
                              "memory is its server's; measure it there")
        if batch_sizes is None:
            batch_sizes = warmup_batch_sizes(entry.batcher.config.max_batch_size,
                                             entry.info.batchable)
        else:
            check_batchable_sizes(name, entry.info, batch_sizes)
        frame = self._probe(entry.data, batch_sizes, time_limit_s=time_limit_s)
        entry.memory_profile = frame
        return frame

    def memory_profile(self, name: str) -> pd.DataFrame | None:
        """The last :meth:`measure_memory` (or load-time probe) of ``name``, if any."""
        return self._entry(name).memory_profile

    def _check_name_free(self, name: str, kind: str, replace: bool) -> None:
        """Models and A/B experiments share one namespace: ``name`` must be free, or
        (with ``replace``) already be a ``kind`` ("model" or "experiment")."""
        have = self._kind_of(name)
        if have is None:
            return
        if have != kind:
            what = "an A/B experiment" if have == "experiment" else "a model"
            raise ConfigError(f"{name!r} is the name of {what}; give the {kind} another "
                              "name (models and experiments share one namespace)")
        if not replace:
            hint = ("pass replace=True to hot-swap it" if kind == "model" else
                    "use update_ab() to change it, or pass replace=True")
            raise ConfigError(f"a {kind} named {name!r} is already loaded; {hint}, or choose "
                              "another name")

    def _check_arm_compatible(self, model: str, info: ModelInfo) -> None:
        """A hot swap must keep the interface of a model that is an A/B arm."""
        for exp in self._ab.with_arm(model):
            other = exp.b if model == exp.a else exp.a
            other_entry = self._registry.get(other)
            if other_entry is not None and _interface(other_entry.info) != _interface(info):
                raise ConfigError(
                    f"model {model!r} is an arm of A/B experiment {exp.name!r}, and the new "
                    f"version's inputs ({'; '.join(t.describe() for t in info.inputs)}) "
                    f"differ from arm {other!r}'s; delete or update the experiment first")

    def unload_model(self, name: str) -> None:
        """Unregister ``name`` and stop its built-in traffic; its queued requests finish
        first (up to ``close_timeout_s``, then they are failed)."""
        with self._lock:
            self._entry(name)
            arms = self._ab.with_arm(name)
            if arms:
                raise ConfigError(f"model {name!r} is an arm of A/B experiment "
                                  f"{arms[0].name!r}; delete the experiment first "
                                  "(engine.delete_ab) or give it another arm")
            entry = self._registry.remove(name)
        self._traffic.stop(name)
        self._registry.finish_retire(entry.batcher)

    def models(self) -> list[ModelInfo]:
        """Info of every registered model, in registration order."""
        return [e.info for e in self._registry.models.values()]

    def model_names(self) -> list[str]:
        return self._registry.names()

    def model_info(self, name: str) -> ModelInfo:
        return self._entry(name).info

    def model_bytes(self, name: str) -> bytes:
        """The ONNX file ``name`` was loaded from (to save it, or to load it again)."""
        entry = self._entry(name)
        if entry.remote is not None:
            raise ConfigError(f"model {name!r} is remote ({entry.remote.target.url}): its "
                              "file is on that server")
        return entry.data

    def sample_input(self, name: str, rows: int = 1,
                     seed: int | None = 0) -> np.ndarray | dict[str, np.ndarray]:
        """Random valid input for ``name`` with ``rows`` rows (exact shape if not batchable)."""
        entry = self._entry(name)
        self._check_inputs_known(name, entry)
        return sample_input(entry.info, rows=rows, seed=seed)

    @staticmethod
    def _check_inputs_known(name: str, entry: ModelEntry) -> None:
        if not entry.info.inputs:
            raise ConfigError(
                f"the server of remote model {name!r} declares no input tensors, so Batchlab "
                "cannot make inputs for it (sample input, traffic, warm-up): send one request "
                "yourself (its tensors are learned from it), or add the model again with "
                "inputs=[{'name': ..., 'datatype': 'FP32', 'shape': [-1, 4]}]")

    def cache_entries(self) -> list[CacheEntry]:
        """Sessions in the content-addressed cache, most recently used first."""
        return self._cache.entries()

    def evict_cache(self, sha256: str | None = None) -> int:
        """Drop cached sessions (by sha256 prefix, or all); loaded models keep working."""
        return self._cache.evict(sha256)

    # -- batching configuration -----------------------------------------------------
    def configure(self, name: str, **changes: Any) -> BatchConfig:
        """Change ``max_batch_size``, ``max_wait_ms``, ``policy``, ``max_queue``,
        ``timeout_ms`` or ``latency_slo_ms`` of ``name`` live; queued requests are kept.
        Returns the new config."""
        entry = self._entry(name)
        remote = entry.remote
        if remote is not None:
            # The server is called without the engine's lock (it may take seconds); two
            # configures of one remote model at once end with the last one's answer.
            cfg = self._configure_remote(name, remote, entry.batcher.config, changes)
            with self._lock:
                entry.batcher.configure(cfg)
            return cfg
        with self._lock:
            entry = self._entry(name)
            cfg = entry.batcher.config.replace(**changes)
            entry.batcher.configure(cfg)
        return cfg

    @staticmethod
    def _configure_remote(name: str, remote: Any, old: BatchConfig,
                          changes: dict[str, Any]) -> BatchConfig:
        """A remote model's settings: queue and timeout are the client's; batch size and
        wait are the server's (changed there where it allows); the policy is the server's."""
        server_side = {k: v for k, v in changes.items()
                       if k in ("max_batch_size", "max_wait_ms") and getattr(old, k) != v}
        other = sorted(k for k in changes if k in ("policy", "latency_slo_ms")
                       and getattr(old, k) != changes[k])
        if other:
            raise ConfigError(f"{', '.join(other)} of remote model {name!r} belong to its "
                              f"server ({remote.target.url}); Batchlab can change only "
                              "max_batch_size and max_wait_ms there (where the server "
                              "allows), and max_queue and timeout_ms here")
        if server_side:
            got = remote.apply_batch(server_side.get("max_batch_size"),
                                     server_side.get("max_wait_ms"))
            changes = {**changes, **{k: got[k] for k in ("max_batch_size", "max_wait_ms")
                                     if isinstance(got.get(k), (int, float))}}
        return old.replace(**changes)

    def batch_config(self, name: str) -> BatchConfig:
        return self._entry(name).batcher.config

    def learned_cost(self, name: str) -> dict[str, float] | None:
        """What the batcher has learned online: t(n) = a + b*n (ms) and the arrival rate
        (rows/s); ``None`` before the first batch has been timed."""
        b = self._entry(name).batcher
        if not b.cost.ready:
            return None
        return {"a_ms": b.cost.a_s * 1000.0, "b_ms": b.cost.b_s * 1000.0,
                "rate_rps": b.rate.rate_rps}

    # -- requests ------------------------------------------------------------------
    def submit(self, name: str, x: Any, timeout_ms: float | None = None,
               key: Any = None) -> Future:
        """Queue one request; returns a ``concurrent.futures.Future`` of :class:`Prediction`.

        ``x`` is an array for a one-input model, else a mapping of input name to array,
        rows on the leading axis. Bad input, an unknown model, a full queue or a closed
        engine raise here, at once; nothing is queued then. ``name`` may also be an A/B
        experiment (see :meth:`create_ab`); ``key`` is the routing key for sticky modes.
        ``timeout_ms`` (default: the model's ``timeout_ms``) bounds queue + compute; past
        it the future fails with :class:`RequestTimeoutError`.
        """
        entry = self._registry.models.get(name)
        if entry is not None:
            return self._submit_model(name, entry, x, timeout_ms, None, None)
        exp = self._ab.get(name)
        if exp is None:
            raise self._not_found(name)
        arm, model = exp.route(key)
        fut = self._submit_model(model, None, x, timeout_ms, arm, exp.sinks[arm],
                                 experiment=name)
        if exp.mode == "shadow":
            self._shadow_copy(exp, x, fut)
        return fut

    def _submit_model(self, model: str, entry: ModelEntry | None, x: Any,
                      timeout_ms: float | None, arm: str | None, sink: Any,
                      experiment: str | None = None) -> Future:
        for _ in range(8):
            if entry is None:
                entry = self._registry.models.get(model)
                if entry is None:
                    err = ModelNotFoundError(
                        f"A/B experiment {experiment!r} routes arm {arm} to model {model!r}, "
                        "which is not loaded; load it or update the experiment with "
                        "engine.update_ab()")
                    self._record_refused(None, sink, err)
                    raise err
            try:
                arrays, rows = entry.validator(x)
                return entry.batcher.submit(arrays, rows, timeout_ms, arm, sink)
            except EngineClosedError:
                # A hot swap may have retired this batcher between lookup and submit:
                # go to the model's current version.
                current = self._registry.models.get(model)
                if self._closed or current is None or current is entry:
                    err = EngineClosedError(
                        "the engine is closed and accepts no more requests; create a new "
                        "Engine" if self._closed else
                        f"model {model!r} was unloaded and accepts no more requests")
                    self._record_refused(None, sink, err)
                    raise err from None
                entry = current
            except BatchlabError as err:
                self._record_refused(entry, sink, err)
                raise
        raise EngineClosedError(f"model {model!r} was replaced too many times during one "
                                "submit; try again")

    @staticmethod
    def _record_refused(entry: ModelEntry | None, sink: Any, err: BaseException) -> None:
        if entry is not None:
            entry.metrics.record_refused(type(err).__name__, str(err))
        for m in sink or ():
            m.record_refused(type(err).__name__, str(err))

    def predict(self, name: str, x: Any, timeout: float | None = None,
                key: Any = None, *, timeout_ms: float | None = None) -> Prediction:
        """``submit(name, x, timeout_ms).result()``: the prediction, or the request's error.

        ``timeout_ms`` defaults to the model's ``timeout_ms``; past it the request is
        settled with :class:`RequestTimeoutError` (and counted as such). ``timeout`` in
        seconds is the older spelling of the same limit.
        """
        if timeout is not None:
            if timeout_ms is not None:
                raise ConfigError("pass timeout_ms (milliseconds) or timeout (seconds), "
                                  "not both")
            timeout_ms = timeout * 1000.0
        if timeout_ms is not None:
            check_timeout_ms(timeout_ms)
        fut = self.submit(name, x, timeout_ms=timeout_ms, key=key)
        if timeout_ms is None:
            entry = self._registry.models.get(name)
            t_ms = entry.batcher.config.timeout_ms if entry is not None else None
        else:
            t_ms = timeout_ms
        # The supervisor settles the request at its deadline; waiting a little longer
        # here only covers a supervisor that is late (a busy machine).
        wait_s = None if t_ms is None else t_ms / 1000.0 + 1.0
        try:
            return fut.result(wait_s)
        except FuturesTimeout:
            err = RequestTimeoutError(
                f"request to model {name!r} did not complete within {t_ms:.0f} ms; raise "
                "timeout_ms, lower the load, or check the model's latency on the Monitor page")
            if isinstance(fut, Request) and fut.fail(err):
                raise err from None
            return fut.result(0)

    # -- metrics and warm-up -----------------------------------------------------------
    def metrics(self, name: str, window_s: float | None = None) -> MetricsSnapshot:
        """A snapshot of ``name``'s metrics (``.to_dict()``, ``.timeseries``). For an A/B
        experiment: every request its callers sent, whichever arm served it.

        ``window_s=30`` gives counts, percentiles, batch sizes and release reasons over the
        last 30 seconds (``snapshot.window_s`` says so) instead of since the last reset."""
        entry = self._registry.models.get(name)
        if entry is not None:
            return entry.metrics.snapshot(queue_depth=entry.batcher.queue_depth(),
                                          window_s=window_s)
        exp = self._ab.get(name)
        if exp is not None:
            return exp.callers.snapshot(window_s=window_s)
        raise self._not_found(name)

    def counters(self, name: str) -> dict[str, Any]:
        """``name``'s cumulative counters (requests, successes, errors, batches, rows, summed
        queue/compute/total seconds, batch sizes, release reasons), without percentiles:
        what ``/metrics`` exports on every scrape."""
        entry = self._registry.models.get(name)
        if entry is not None:
            out = entry.metrics.counters()
            out["queue_depth"] = entry.batcher.queue_depth()
            return out
        exp = self._ab.get(name)
        if exp is not None:
            return exp.callers.counters()
        raise self._not_found(name)

    def timeline(self, name: str, last_s: float | None = 2.0) -> pd.DataFrame:
        """What happened to each request settled in the last ``last_s`` seconds: columns
        ``request_id, arrived_s, started_s, done_s, batch_id, rows, batch_rows,
        release_reason, arm, ok, wait_ms, compute_ms, handoff_ms`` (``time.perf_counter``
        seconds; a request that never ran has no start and batch -1, and its
        ``release_reason`` names why it ended). For an A/B experiment: its requests on
        both arms' models."""
        if last_s is not None and not last_s > 0:
            raise ConfigError(f"last_s must be > 0 seconds (or None for all kept), got {last_s!r}")
        entry = self._registry.models.get(name)
        exp = self._ab.get(name)
        if entry is None and exp is None:
            raise self._not_found(name)
        if self.config.trace_requests == 0:
            raise ConfigError("tracing is off (EngineConfig.trace_requests=0): no timeline")
        if entry is not None:
            return entry.trace.frame(last_s)
        parts = [self._entry(m).trace.frame(last_s) for m in dict.fromkeys((exp.a, exp.b))]
        f = pd.concat(parts, ignore_index=True)
        return f[f["arm"].notna()].sort_values("arrived_s", kind="stable").reset_index(drop=True)

    def reset_metrics(self, name: str | None = None) -> None:
        """Zero the metrics of a model or experiment (or of everything)."""
        if name is not None and name in self._ab:
            self._ab.table[name].reset_metrics()
            return
        for n in ([name] if name is not None else self._registry.names()):
            self._entry(n).metrics.reset()
        if name is None:
            for exp in self._ab.all():
                exp.reset_metrics()

    def queue_depth(self, name: str) -> int:
        return self._entry(name).batcher.queue_depth()

    def warmup(self, name: str, iterations: int = 10, batch_sizes: Sequence[int] | None = None,
               progress: ProgressFn | None = None, *, time_limit_s: float | None = None,
               stop: threading.Event | None = None) -> WarmupReport:
        """Run ``name`` at each batch size it will see (``iterations`` times each) outside
        the metrics; returns cold vs warm latency per batch size.

        Bounded: past ``time_limit_s`` (default ``EngineConfig.warmup_time_limit_s``) or
        once ``stop`` is set, the run going on is stopped and
        :class:`~core.errors.ResourceLimitError` is raised."""
        entry = self._entry(name)
        self._check_inputs_known(name, entry)
        info = entry.info
        if batch_sizes is None:
            batch_sizes = warmup_batch_sizes(entry.batcher.config.max_batch_size,
                                             info.batchable)
        else:
            check_batchable_sizes(name, info, batch_sizes)

        def make_input(bs: int) -> list[np.ndarray]:
            x = sample_input(info, rows=bs, seed=bs)
            return list(x.values()) if isinstance(x, dict) else [x]

        limit = self.config.warmup_time_limit_s if time_limit_s is None else time_limit_s
        report = run_warmup(name, entry.runner, make_input, list(batch_sizes), iterations,
                            progress, time_limit_s=limit, stop=stop)
        entry.last_warmup = report
        return report

    def is_warm(self, name: str) -> bool:
        """True when every batch size warm-up would run for the current configuration has
        run on this session already, by warm-up or by traffic (a model run one row at a
        time: batch size 1)."""
        entry = self._entry(name)
        needed = warmup_batch_sizes(entry.batcher.config.max_batch_size, entry.info.batchable)
        return set(needed) <= entry.sizes_run

    def warm_sizes(self, name: str) -> list[int]:
        """The batch sizes ``name``'s session has run since it was loaded (traffic and
        warm-up alike), sorted."""
        return sorted(self._entry(name).sizes_run)

    def last_warmup(self, name: str) -> WarmupReport | None:
        return self._entry(name).last_warmup

    def status(self) -> dict[str, Any]:
        """Engine-wide summary for a status bar: models, queue depth, requests/s now.

        Cheap: counters only (no percentiles, no frames), so polling it does not load the
        engine."""
        totals = [e.metrics.totals() for e in self._registry.models.values()]
        depth = sum(e.batcher.queue_depth() for e in self._registry.models.values())
        rps = sum(e.metrics.recent_rps() for e in self._registry.models.values())
        return {
            "models": len(totals),
            "traffic_running": self.traffic_running(),
            "closed": self._closed,
            "uptime_s": time.monotonic() - self._t0,
            "queue_depth": depth,
            "throughput_rps": rps,
            "total_requests": sum(t["total_requests"] for t in totals),
            "error_count": sum(t["error_count"] for t in totals),
        }

    # -- A/B experiments --------------------------------------------------------------
    def create_ab(self, name: str, a: str, b: str, b_share: float = 0.5, mode: str = "random",
                  seed: int | None = None, replace: bool = False) -> ABReport:
        """Create an A/B experiment ``name`` splitting traffic between models ``a`` and ``b``;
        submit to ``name`` like to a model. Returns its (empty) report."""
        self._check_open()
        self._check_new_name(name, "experiment")
        with self._lock:
            self._check_name_free(name, "experiment", replace)
            self._check_arms(a, b)
            exp = self._ab.add(ABExperiment(name, a, b, b_share, mode, seed,
                                            self.config.timeseries_seconds))
        return exp.report()

    def _check_arms(self, a: str, b: str) -> None:
        for model in (a, b):
            if model in self._ab:
                raise ConfigError(f"{model!r} is an A/B experiment; an arm must be a model")
            self._entry(model)
        ia, ib = self._entry(a).info, self._entry(b).info
        if _interface(ia) != _interface(ib):
            raise ConfigError(f"models {a!r} and {b!r} have different inputs "
                              f"({'; '.join(t.describe() for t in ia.inputs)} vs "
                              f"{'; '.join(t.describe() for t in ib.inputs)}); an A/B test "
                              "needs two models with the same interface")

    def update_ab(self, name: str, b_share: float | None = None, a: str | None = None,
                  b: str | None = None, mode: str | None = None) -> ABReport:
        """Change an experiment's split (``b_share=1.0`` promotes B), arms or mode, live.
        New arms are checked like at creation: loaded models with the same inputs."""
        with self._lock:
            exp = self._experiment(name)
            if a is not None or b is not None:
                self._check_arms(a if a is not None else exp.a, b if b is not None else exp.b)
            exp.update(b_share=b_share, a=a, b=b, mode=mode)
        return exp.report()

    def _shadow_copy(self, exp: ABExperiment, x: Any, a_fut: Future) -> None:
        """Send a copy of a request to arm B; nothing about it can reach the caller."""
        sinks = exp.shadow_sinks
        try:
            b_fut = self._submit_model(exp.b, None, x, None, "b", sinks, experiment=exp.name)
        except BatchlabError:
            exp.shadow.failed()
            return
        exp.watch_shadow(a_fut, b_fut)

    def delete_ab(self, name: str) -> None:
        with self._lock:
            self._experiment(name)
            self._ab.remove(name)
        self._traffic.stop(name)

    def ab_arms(self, name: str) -> tuple[str, str]:
        """The models behind arms A and B of experiment ``name`` (cheap: no statistics)."""
        exp = self._experiment(name)
        return exp.a, exp.b

    def ab_experiments(self) -> list[str]:
        return self._ab.names()

    def ab_report(self, name: str, detect_ms: float | None = None) -> ABReport:
        """Per-arm figures, statistics and verdict of experiment ``name`` (``.to_dict()``).
        ``detect_ms``: the latency difference worth detecting (for the sample size).
        ``.warnings`` names every difference between the arms other than the model (batch
        settings, session options, warm state, an uneven split)."""
        exp = self._experiment(name)
        report = exp.report(detect_ms)
        entries = {arm: self._registry.get(model) for arm, model in (("a", report.a),
                                                                      ("b", report.b))}
        if any(e is None for e in entries.values()):
            return report  # an arm is being swapped out: no comparison of settings now
        warnings = arm_differences(
            report, {k: e.batcher.config for k, e in entries.items()},
            {k: e.loaded.session_config for k, e in entries.items()},
            {k: self.is_warm(m) for k, m in (("a", report.a), ("b", report.b))})
        where = {k: (e.remote.target.url if e.remote is not None else None)
                 for k, e in entries.items()}
        if where["a"] != where["b"]:
            arms = "; ".join(f"{k.upper()} by {u or 'this engine'}" for k, u in where.items())
            warnings.append(f"The arms are served in different places ({arms}): a remote "
                            "arm's latency includes the network and its server's HTTP and "
                            "batching, measured at this client.")
        return dataclasses.replace(report, warnings=warnings)

    def ab_match_settings(self, name: str) -> BatchConfig:
        """Give arm B's model arm A's batch settings (all of them), so that a comparison is
        of the models alone; returns B's new configuration."""
        with self._lock:
            exp = self._experiment(name)
            a_cfg = self._entry(exp.a).batcher.config
            self._entry(exp.b).batcher.configure(a_cfg)
        return a_cfg

    def ab_metrics(self, name: str, arm: str, window_s: float | None = None) -> MetricsSnapshot:
        """What arm ``arm`` ("a" or "b") of experiment ``name`` served (see :meth:`metrics`
        for ``window_s``)."""
        exp = self._experiment(name)
        if arm not in exp.metrics:
            raise ConfigError(f"arm must be 'a' or 'b', got {arm!r}")
        return exp.metrics[arm].snapshot(window_s=window_s)

    def _experiment(self, name: str) -> ABExperiment:
        exp = self._ab.get(name)
        if exp is None:
            have = ", ".join(self._ab.names()) or "none"
            hint = (f" ({name!r} is a model)" if name in self._registry else "")
            raise ModelNotFoundError(f"no A/B experiment named {name!r}{hint}; experiments: "
                                     f"{have}. Create one with engine.create_ab(name, a=..., "
                                     "b=...)")
        return exp

    # -- built-in traffic -------------------------------------------------------------
    def start_traffic(self, target: str, rate_rps: float = 100.0, pattern: str = "constant",
                      rows_per_request: int = 1, duration_s: float | None = None,
                      seed: int | None = 0) -> TrafficStatus:
        """Send open-loop traffic to ``target`` from a background thread (replacing any
        traffic already going there); stop it with :meth:`stop_traffic`."""
        self._check_open()
        exp = self._ab.get(target)
        first = self._entry(exp.a if exp is not None else target)
        self._check_inputs_known(target, first)
        info = first.info
        if not info.batchable and info.batch_mode == "exact" and rows_per_request != 1:
            raise ConfigError(f"model {target!r} takes requests of exactly its declared "
                              f"shape ({info.batch_reason}); use rows_per_request=1")

        def sample(rng: np.random.Generator) -> Any:
            return sample_input(info, rows=rows_per_request, seed=int(rng.integers(2**31)))

        # Keys for every experiment, like traffic from 1,000 users: the experiment may be
        # switched to sticky routing (which needs them) while the traffic runs.
        keys = 1000 if exp is not None else None
        models = (exp.a, exp.b) if exp is not None else (target,)
        client_cpu = None
        if any(self._entry(m).remote is not None for m in models):
            from .remote import client_cpu_s
            client_cpu = client_cpu_s
        return self._traffic.start(target, sample, rate_rps=rate_rps, pattern=pattern,
                                   rows_per_request=rows_per_request, duration_s=duration_s,
                                   seed=seed, key_pool=keys, client_cpu=client_cpu)

    def stop_traffic(self, target: str | None = None) -> None:
        """Stop the built-in traffic to ``target`` (or to every target)."""
        self._traffic.stop(target)

    def wait_traffic(self, target: str, timeout_s: float | None = None) -> TrafficStatus:
        """Block until the bounded traffic run to ``target`` ends (or ``timeout_s``), and
        until every request it sent has an answer; returns its final status."""
        return self._traffic.wait(target, timeout_s)

    def traffic(self) -> list[TrafficStatus]:
        """Status of every built-in traffic generator started (running or finished)."""
        return self._traffic.statuses()

    def traffic_running(self) -> bool:
        return self._traffic.running()

    # -- jobs: long work that outlives the page that started it ---------------------
    @property
    def store(self) -> Any:
        """The experiment history (:class:`~core.experiments.ExperimentStore`, opened on
        first use at ``$BATCHLAB_DATA_DIR/experiments.sqlite``)."""
        if self._store is None:
            from .experiments import default_store
            self._store = default_store()
        return self._store

    def start_job(self, kind: str, target: str, **params: Any) -> JobStatus:
        """Start long work on model ``target`` in the background: ``"sweep"`` (the
        arguments of :func:`core.experiments.sweep`, plus ``slo_p99_ms``; the result is
        saved to :attr:`store`), ``"warmup"``, ``"measure_memory"`` or ``"profile_cost"``.
        Watch it with :meth:`job` / :meth:`jobs`, stop it with :meth:`cancel_job`."""
        self._check_open()
        spec = JOB_KINDS.get(kind)
        if spec is None:
            raise ConfigError(f"unknown job kind {kind!r}; expected one of "
                              f"{', '.join(JOB_KINDS)}")
        self._entry(target)
        work, exclusive = spec
        try:
            inspect.signature(work).bind(self, None, target, **params)
        except TypeError as err:
            raise ConfigError(f"{kind} job: {err}") from None
        return self._jobs.start(kind, target, lambda job: work(self, job, target, **params),
                                params=params, exclusive=exclusive)

    def jobs(self, kind: str | None = None, target: str | None = None,
             with_results: bool = False) -> list[JobStatus]:
        """Every job kept (running and the last finished), newest first."""
        return self._jobs.list(kind, target, with_results)

    def job(self, job_id: int) -> JobStatus:
        """One job's status, with its result once done."""
        return self._jobs.get(job_id)

    def cancel_job(self, job_id: int) -> JobStatus:
        """Ask a job to stop; it ends at its next step (a sweep keeps its finished points)."""
        return self._jobs.cancel(job_id)

    def wait_job(self, job_id: int, timeout_s: float | None = None) -> JobStatus:
        """Block until the job ends (or ``timeout_s``); returns its status."""
        return self._jobs.wait(job_id, timeout_s)

    # -- lifecycle -----------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop accepting requests and finish every accepted one — of current models, of
        versions retired by a hot swap and of models being unloaded — within
        ``close_timeout_s`` in total; what is still pending then is failed with
        :class:`EngineClosedError`. After ``close()`` no future is pending."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._traffic.stop()
        self._jobs.cancel_all(min(5.0, self.config.close_timeout_s))
        failed = self._registry.close(time.monotonic() + self.config.close_timeout_s)
        if failed:
            log.warning("engine closed with %d request(s) failed: the models did not finish "
                        "within close_timeout_s=%g s", failed, self.config.close_timeout_s)
        _OPEN_ENGINES.discard(self)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Engine(models={self._registry.names()}, closed={self._closed})"

    # -- helpers -------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError("the engine is closed; create a new Engine")

    def _entry(self, name: str) -> ModelEntry:
        entry = self._registry.models.get(name)
        if entry is None:
            raise self._not_found(name)
        return entry

    def _not_found(self, name: object) -> ModelNotFoundError:
        if isinstance(name, str) and name in self._ab:
            return ModelNotFoundError(f"{name!r} is an A/B experiment, not a model; use "
                                      "ab_report / ab_metrics for it, or name one of its arms")
        have = ", ".join(self._registry.names()) or "none"
        exps = ", ".join(self._ab.names())
        return ModelNotFoundError(
            f"no model named {name!r}; loaded models: {have}"
            + (f"; A/B experiments: {exps}" if exps else "")
            + f". Load it with engine.load_model(path_or_bytes, name={name!r})")
