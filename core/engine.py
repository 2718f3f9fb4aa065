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
        data, where = read_model_source(source, self.config.max_model_bytes)
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

    # -- requests ------------------------------------------------------------------
    def submit(self, name: str, x: Any, timeout_ms: float | None = None) -> Future:
        """Queue one request; returns a ``concurrent.futures.Future`` of :class:`Prediction`.

        ``x`` is an array for a one-input model, else a mapping of input name to array,
        rows on the leading axis. Bad input, an unknown model, a full queue or a closed
        engine raise here, at once; nothing is queued then.
        """
        entry = self._models.get(name)
        if entry is None:
            raise self._not_found(name)
        try:
            arrays, rows = entry.validator(x)
            return entry.batcher.submit(arrays, rows, timeout_ms)
        except EngineClosedError:
            # A hot swap may have retired this batcher between lookup and submit.
            current = self._models.get(name)
            if current is not None and current is not entry and not self._closed:
                return self.submit(name, x, timeout_ms)
            if self._closed:
                raise EngineClosedError("the engine is closed and accepts no more requests; "
                                        "create a new Engine") from None
            raise
        except BatchlabError as err:
            entry.metrics.record_refused(type(err).__name__, str(err))
            raise

    def predict(self, name: str, x: Any, timeout: float | None = None) -> Prediction:
        """``submit(name, x).result(timeout)``; ``timeout`` in seconds defaults to the
        model's ``timeout_ms``. Raises :class:`RequestTimeoutError` when it runs out."""
        entry = self._models.get(name)
        if timeout is None and entry is not None:
            t_ms = entry.batcher.config.timeout_ms
            timeout = t_ms / 1000.0 if t_ms is not None else None
        fut = self.submit(name, x, timeout_ms=timeout * 1000.0 if timeout is not None else None)
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
        for n in ([name] if name is not None else list(self._models)):
            self._entry(n).metrics.reset()

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
            "closed": self._closed,
            "uptime_s": time.monotonic() - self._t0,
            "queue_depth": sum(s.queue_depth for s in snaps.values()),
            "throughput_rps": sum(s.throughput_rps for s in snaps.values()),
            "total_requests": sum(s.total_requests for s in snaps.values()),
            "error_count": sum(s.error_count for s in snaps.values()),
        }

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
