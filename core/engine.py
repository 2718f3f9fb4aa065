"""The engine: one facade over models, batchers, metrics and warm-up.

This is the contract used by the dashboard, notebooks, outside scripts and tests; names
here stay stable (extend, don't rename). One ``Engine`` owns one batcher thread per model.

Example:
    >>> from core import Engine
    >>> with Engine() as engine:                       # demo models are registered
    ...     engine.configure("mlp", max_batch_size=32, max_wait_ms=2.0)
    ...     pred = engine.predict("mlp", np.zeros((1, 256), np.float32))
    ...     pred.outputs["logits"].shape
    (1, 10)
"""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import Future, TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .batcher import Batcher, Prediction
from .config import BatchConfig, EngineConfig, SessionConfig
from .loadgen import TrafficGenerator, TrafficStatus
from .router import ABExperiment, ABReport
from .demo_models import DEMO_MODELS, build_demo_model, demo_description
from .errors import (BatchlabError, ConfigError, EngineClosedError, ModelNotFoundError,
                     RequestTimeoutError)
from .metrics import MetricsSnapshot, ModelMetrics
from .models import (CacheEntry, LoadedModel, ModelInfo, SessionCache, load_model_bytes,
                     read_model_source, sample_input)
from .validation import RequestValidator
from .warmup import ProgressFn, WarmupReport, run_warmup, warmup_batch_sizes

__all__ = ["Engine"]

log = logging.getLogger("batchlab.engine")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class _Entry:
    """Everything the engine keeps for one registered model."""

    loaded: LoadedModel
    validator: RequestValidator
    batcher: Batcher
    metrics: ModelMetrics
    warmed_sizes: set[int] = field(default_factory=set)
    last_warmup: WarmupReport | None = None

    @property
    def info(self) -> ModelInfo:
        return self.loaded.info


def _row_runner(loaded: LoadedModel) -> Callable[[Sequence[np.ndarray]], list[Any]]:
    """For models whose batch axis is fixed at 1: run a request's rows one at a time."""

    def run(arrays: Sequence[np.ndarray]) -> list[Any]:
        rows = arrays[0].shape[0]
        if rows == 1:
            return loaded.run(arrays)
        parts = [loaded.run([a[i:i + 1] for a in arrays]) for i in range(rows)]
        out: list[Any] = []
        for k in range(len(parts[0])):
            pieces = [p[k] for p in parts]
            if isinstance(pieces[0], np.ndarray):
                out.append(np.concatenate(pieces))
            else:
                out.append([item for piece in pieces for item in piece])
        return out

    return run


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
        self._cache = SessionCache(self.config.cache_size)
        self._lock = threading.RLock()
        # Copy-on-write: submit() reads this dict without a lock.
        self._models: dict[str, _Entry] = {}
        self._closed = False
        self._t0 = time.monotonic()
        self._traffic: dict[str, TrafficGenerator] = {}
        self._experiments: dict[str, ABExperiment] = {}
        if demo_models:
            for name in DEMO_MODELS:
                self.load_model(build_demo_model(name), name=name,
                                description=demo_description(name), source_label="demo")

    # -- models --------------------------------------------------------------------
    def load_model(self, source: str | Path | bytes | bytearray | memoryview,
                   name: str | None = None, *, replace: bool = False,
                   session: SessionConfig | None = None, batch: BatchConfig | None = None,
                   description: str = "", source_label: str | None = None) -> ModelInfo:
        """Validate and register a model from a path or bytes; returns its :class:`ModelInfo`.

        ``replace=True`` hot-swaps a model already registered under ``name``: new requests
        go to the new version, requests already queued finish on the old one, the batch
        configuration and metrics carry over.
        """
        self._check_open()
        # Built-in demo models are trusted and exempt from the upload size limit.
        limit = 2**62 if source_label == "demo" else self.config.max_model_bytes
        data, where = read_model_source(source, limit)
        if name is None:
            name = Path(where).stem if where != "upload" else None
        if name is None:
            import hashlib
            name = "model-" + hashlib.sha256(data).hexdigest()[:8]
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(f"model name must be 1-64 characters of letters, digits, '.', "
                              f"'_' or '-', starting with a letter or digit; got {name!r}")
        with self._lock:
            old = self._models.get(name)
            if old is not None and not replace:
                raise ConfigError(f"a model named {name!r} is already loaded; pass "
                                  "replace=True to hot-swap it, or choose another name")
        loaded = load_model_bytes(data, name, cache=self._cache,
                                  options=session or self.config.session,
                                  source=source_label or where, description=description)
        info = loaded.info
        with self._lock:
            self._check_open()
            old = self._models.get(name)
            if old is not None and not replace:
                raise ConfigError(f"a model named {name!r} is already loaded; pass "
                                  "replace=True to hot-swap it, or choose another name")
            metrics = old.metrics if old is not None else ModelMetrics(
                self.config.timeseries_seconds)
            cfg = batch or (old.batcher.config if old is not None else self.config.batch)
            run = _row_runner(loaded) if info.batch_mode == "rows" else loaded.run
            batcher = Batcher(name, run, loaded.output_names, cfg, metrics,
                              batchable=info.batchable)
            entry = _Entry(loaded, RequestValidator(info), batcher, metrics)
            models = dict(self._models)
            models[name] = entry
            self._models = models
        if old is not None:
            # Drain the old version off the caller's thread: queued requests still finish.
            threading.Thread(target=old.batcher.close, args=(self.config.close_timeout_s,),
                             name=f"retire-{name}", daemon=True).start()
        return info

    def unload_model(self, name: str) -> None:
        """Unregister ``name``; its queued requests finish first."""
        with self._lock:
            entry = self._entry(name)
            models = dict(self._models)
            del models[name]
            self._models = models
        entry.batcher.close(self.config.close_timeout_s)

    def models(self) -> list[ModelInfo]:
        """Info of every registered model, in registration order."""
        return [e.info for e in self._models.values()]

    def model_names(self) -> list[str]:
        return list(self._models)

    def model_info(self, name: str) -> ModelInfo:
        return self._entry(name).info

    def sample_input(self, name: str, rows: int = 1,
                     seed: int | None = 0) -> np.ndarray | dict[str, np.ndarray]:
        """Random valid input for ``name`` with ``rows`` rows (exact shape if not batchable)."""
        return sample_input(self._entry(name).info, rows=rows, seed=seed)

    def cache_entries(self) -> list[CacheEntry]:
        """Sessions in the content-addressed cache, most recently used first."""
        return self._cache.entries()

    def evict_cache(self, sha256: str | None = None) -> int:
        """Drop cached sessions (by sha256 prefix, or all); loaded models keep working."""
        return self._cache.evict(sha256)

    # -- batching configuration -----------------------------------------------------
    def configure(self, name: str, **changes: Any) -> BatchConfig:
        """Change ``max_batch_size``, ``max_wait_ms``, ``policy``, ``max_queue`` or
        ``timeout_ms`` of ``name`` live; queued requests are kept. Returns the new config."""
        with self._lock:
            entry = self._entry(name)
            cfg = entry.batcher.config.replace(**changes)
            entry.batcher.configure(cfg)
        return cfg

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
        """
        entry = self._models.get(name)
        arm = sink = exp = None
        if entry is None:
            exp = self._experiments.get(name)
            if exp is None:
                raise self._not_found(name)
            arm, model = exp.route(key)
            sink = exp.metrics[arm]
            entry = self._models.get(model)
            if entry is None:
                raise ModelNotFoundError(f"A/B experiment {name!r} routes arm {arm} to model "
                                         f"{model!r}, which is not loaded; load it or update "
                                         "the experiment with engine.update_ab()")
        try:
            arrays, rows = entry.validator(x)
            fut = entry.batcher.submit(arrays, rows, timeout_ms, arm, sink)
            if sink is not None and exp.mode == "shadow":
                self._shadow_copy(exp, x, fut)
            return fut
        except EngineClosedError:
            # A hot swap may have retired this batcher between lookup and submit.
            current = self._models.get(name)
            if current is not None and current is not entry and not self._closed:
                return self.submit(name, x, timeout_ms, key)
            if self._closed:
                raise EngineClosedError("the engine is closed and accepts no more requests; "
                                        "create a new Engine") from None
            raise
        except BatchlabError as err:
            entry.metrics.record_refused(type(err).__name__, str(err))
            if sink is not None:
                sink.record_refused(type(err).__name__, str(err))
            raise

    def predict(self, name: str, x: Any, timeout: float | None = None,
                key: Any = None) -> Prediction:
        """``submit(name, x).result(timeout)``; ``timeout`` in seconds defaults to the
        model's ``timeout_ms``. Raises :class:`RequestTimeoutError` when it runs out."""
        entry = self._models.get(name)
        if entry is None and name in self._experiments:
            entry = self._models.get(self._experiments[name].a)
        if timeout is None and entry is not None:
            t_ms = entry.batcher.config.timeout_ms
            timeout = t_ms / 1000.0 if t_ms is not None else None
        fut = self.submit(name, x, timeout_ms=timeout * 1000.0 if timeout is not None else None,
                          key=key)
        try:
            return fut.result(timeout)
        except FuturesTimeout:
            fut.cancel()
            raise RequestTimeoutError(
                f"request to model {name!r} did not complete within {timeout:.3f} s; raise the "
                "timeout, lower the load, or check the model's latency on the Monitor page"
            ) from None

    # -- metrics and warm-up -----------------------------------------------------------
    def metrics(self, name: str) -> MetricsSnapshot:
        """A snapshot of ``name``'s metrics (``.to_dict()``, ``.timeseries``)."""
        entry = self._entry(name)
        return entry.metrics.snapshot(queue_depth=entry.batcher.queue_depth())

    def reset_metrics(self, name: str | None = None) -> None:
        """Zero the metrics of a model or experiment (or of everything)."""
        if name is not None and name in self._experiments:
            self._experiments[name].reset_metrics()
            return
        for n in ([name] if name is not None else list(self._models)):
            self._entry(n).metrics.reset()
        if name is None:
            for exp in self._experiments.values():
                exp.reset_metrics()

    def queue_depth(self, name: str) -> int:
        return self._entry(name).batcher.queue_depth()

    def warmup(self, name: str, iterations: int = 10, batch_sizes: Sequence[int] | None = None,
               progress: ProgressFn | None = None) -> WarmupReport:
        """Run ``name`` at each batch size it will see (``iterations`` times each) outside
        the metrics; returns cold vs warm latency per batch size."""
        entry = self._entry(name)
        info = entry.info
        if batch_sizes is None:
            batch_sizes = warmup_batch_sizes(entry.batcher.config.max_batch_size,
                                             info.batchable)
        elif not info.batchable and any(b != 1 for b in batch_sizes):
            raise ConfigError(f"model {name!r} is not batchable ({info.batch_reason}); "
                              "warm it up at batch size 1 only")
        run = _row_runner(entry.loaded) if info.batch_mode == "rows" else entry.loaded.run

        def make_input(bs: int) -> list[np.ndarray]:
            x = sample_input(info, rows=bs, seed=bs)
            return list(x.values()) if isinstance(x, dict) else [x]

        report = run_warmup(name, run, make_input, list(batch_sizes), iterations, progress)
        entry.warmed_sizes.update(report.batch_sizes)
        entry.last_warmup = report
        return report

    def is_warm(self, name: str) -> bool:
        """True when every batch size the current configuration can produce was warmed."""
        entry = self._entry(name)
        needed = warmup_batch_sizes(entry.batcher.config.max_batch_size, entry.info.batchable)
        return set(needed) <= entry.warmed_sizes

    def last_warmup(self, name: str) -> WarmupReport | None:
        return self._entry(name).last_warmup

    def status(self) -> dict[str, Any]:
        """Engine-wide summary for a status bar: models, queue depth, requests/s now."""
        snaps = {n: e.metrics.snapshot(queue_depth=e.batcher.queue_depth())
                 for n, e in self._models.items()}
        return {
            "models": len(snaps),
            "traffic_running": self.traffic_running(),
            "closed": self._closed,
            "uptime_s": time.monotonic() - self._t0,
            "queue_depth": sum(s.queue_depth for s in snaps.values()),
            "throughput_rps": sum(s.throughput_rps for s in snaps.values()),
            "total_requests": sum(s.total_requests for s in snaps.values()),
            "error_count": sum(s.error_count for s in snaps.values()),
        }

    # -- A/B experiments --------------------------------------------------------------
    def create_ab(self, name: str, a: str, b: str, b_share: float = 0.5, mode: str = "random",
                  seed: int | None = None, replace: bool = False) -> ABReport:
        """Create an A/B experiment ``name`` splitting traffic between models ``a`` and ``b``;
        submit to ``name`` like to a model. Returns its (empty) report."""
        self._check_open()
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ConfigError(f"experiment name must be 1-64 characters of letters, digits, "
                              f"'.', '_' or '-'; got {name!r}")
        with self._lock:
            if name in self._models:
                raise ConfigError(f"{name!r} is a model name; give the experiment another name")
            if name in self._experiments and not replace:
                raise ConfigError(f"an experiment named {name!r} exists; use update_ab() to "
                                  "change it, or pass replace=True")
            for model in (a, b):
                self._entry(model)
            ia, ib = self._entry(a).info, self._entry(b).info
            if [(t.name, t.dtype, t.shape) for t in ia.inputs] != [
                    (t.name, t.dtype, t.shape) for t in ib.inputs]:
                raise ConfigError(f"models {a!r} and {b!r} have different inputs "
                                  f"({'; '.join(t.describe() for t in ia.inputs)} vs "
                                  f"{'; '.join(t.describe() for t in ib.inputs)}); an A/B test "
                                  "needs two models with the same interface")
            exp = ABExperiment(name, a, b, b_share, mode, seed, self.config.timeseries_seconds)
            experiments = dict(self._experiments)
            experiments[name] = exp
            self._experiments = experiments
        return exp.report()

    def update_ab(self, name: str, b_share: float | None = None, a: str | None = None,
                  b: str | None = None, mode: str | None = None) -> ABReport:
        """Change an experiment's split (``b_share=1.0`` promotes B), arms or mode, live."""
        exp = self._experiment(name)
        for model in (a, b):
            if model is not None:
                self._entry(model)
        exp.update(b_share=b_share, a=a, b=b, mode=mode)
        return exp.report()

    def _shadow_copy(self, exp: ABExperiment, x: Any, a_fut: Future) -> None:
        """Send a copy of a request to arm B; nothing about it can reach the caller."""
        sink_b = exp.metrics["b"]
        entry_b = self._models.get(exp.b)
        try:
            if entry_b is None:
                raise ModelNotFoundError(f"shadow arm model {exp.b!r} is not loaded")
            arrays, rows = entry_b.validator(x)
            b_fut = entry_b.batcher.submit(arrays, rows, None, "b", sink_b)
        except BatchlabError as err:
            sink_b.record_refused(type(err).__name__, f"shadow copy: {err}")
            exp.shadow.failed()
            return
        exp.watch_shadow(a_fut, b_fut)

    def delete_ab(self, name: str) -> None:
        with self._lock:
            self._experiment(name)
            experiments = dict(self._experiments)
            del experiments[name]
            self._experiments = experiments

    def ab_experiments(self) -> list[str]:
        return list(self._experiments)

    def ab_report(self, name: str, detect_ms: float | None = None) -> ABReport:
        """Per-arm figures, statistics and verdict of experiment ``name`` (``.to_dict()``).
        ``detect_ms``: the latency difference worth detecting (for the sample size)."""
        return self._experiment(name).report(detect_ms)

    def ab_metrics(self, name: str, arm: str) -> MetricsSnapshot:
        exp = self._experiment(name)
        if arm not in exp.metrics:
            raise ConfigError(f"arm must be 'a' or 'b', got {arm!r}")
        return exp.metrics[arm].snapshot()

    def _experiment(self, name: str) -> ABExperiment:
        exp = self._experiments.get(name)
        if exp is None:
            have = ", ".join(self._experiments) or "none"
            raise ModelNotFoundError(f"no A/B experiment named {name!r}; experiments: {have}. "
                                     "Create one with engine.create_ab(name, a=..., b=...)")
        return exp

    # -- built-in traffic -------------------------------------------------------------
    def start_traffic(self, target: str, rate_rps: float = 100.0, pattern: str = "constant",
                      rows_per_request: int = 1, duration_s: float | None = None,
                      seed: int | None = 0) -> TrafficStatus:
        """Send open-loop traffic to ``target`` from a background thread (replacing any
        traffic already going there); stop it with :meth:`stop_traffic`."""
        self._check_open()
        if target in self._experiments and target not in self._models:
            info = self._entry(self._experiments[target].a).info
        else:
            info = self._entry(target).info
        if not info.batchable and info.batch_mode == "exact" and rows_per_request != 1:
            raise ConfigError(f"model {target!r} takes requests of exactly its declared "
                              f"shape ({info.batch_reason}); use rows_per_request=1")

        def sample(rng: np.random.Generator) -> Any:
            return sample_input(info, rows=rows_per_request, seed=int(rng.integers(2**31)))

        exp = self._experiments.get(target)
        keys = 1000 if exp is not None and exp.mode == "sticky" else None
        gen = TrafficGenerator(self.submit, target, sample, rate_rps=rate_rps, pattern=pattern,
                               rows_per_request=rows_per_request, duration_s=duration_s,
                               seed=seed, key_pool=keys)
        with self._lock:
            old = self._traffic.pop(target, None)
            self._traffic[target] = gen
        if old is not None:
            old.stop()
        gen.start()
        return gen.status()

    def stop_traffic(self, target: str | None = None) -> None:
        """Stop the built-in traffic to ``target`` (or to every target)."""
        with self._lock:
            gens = [self._traffic[target]] if target in self._traffic else (
                list(self._traffic.values()) if target is None else [])
        for g in gens:
            g.stop()

    def wait_traffic(self, target: str, timeout_s: float | None = None) -> TrafficStatus:
        """Block until the bounded traffic run to ``target`` ends (or ``timeout_s``), and
        until every request it sent has an answer; returns its final status."""
        gen = self._traffic.get(target)
        if gen is None:
            raise ModelNotFoundError(f"no traffic was started to {target!r}; start it with "
                                     "engine.start_traffic(target, ...)")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        gen.wait(timeout_s)
        while gen.status().in_flight > 0 and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.01)
        return gen.status()

    def traffic(self) -> list[TrafficStatus]:
        """Status of every built-in traffic generator started (running or finished)."""
        return [g.status() for g in list(self._traffic.values())]

    def traffic_running(self) -> bool:
        return any(g.running for g in list(self._traffic.values()))

    # -- lifecycle -----------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop accepting requests, finish every accepted one, stop all threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            entries = list(self._models.values())
            gens = list(self._traffic.values())
        for g in gens:
            g.stop()
        for e in entries:
            e.batcher.close(self.config.close_timeout_s)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Engine(models={list(self._models)}, closed={self._closed})"

    # -- helpers -------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError("the engine is closed; create a new Engine")

    def _entry(self, name: str) -> _Entry:
        entry = self._models.get(name)
        if entry is None:
            raise self._not_found(name)
        return entry

    def _not_found(self, name: object) -> ModelNotFoundError:
        have = ", ".join(self._models) or "none"
        return ModelNotFoundError(f"no model named {name!r}; loaded models: {have}. Load it "
                                  f"with engine.load_model(path_or_bytes, name={name!r})")
