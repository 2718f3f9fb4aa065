"""The Open Inference Protocol's model repository extension, as Triton serves it.

``POST /v2/repository/index`` lists the models (loaded ones ``READY``, unloaded ones
``UNAVAILABLE``); ``POST /v2/repository/models/{name}/load`` loads or reloads a model,
``.../unload`` unloads it. Like Triton, a load may carry:

* ``parameters.config``: a JSON string of model configuration. Batchlab reads Triton's
  batching fields — ``max_batch_size`` (0: no batching, one row at a time),
  ``dynamic_batching.max_queue_delay_microseconds`` (max wait),
  ``dynamic_batching.default_queue_policy.max_queue_size`` and
  ``.default_timeout_microseconds`` (:mod:`core.protocol.triton`) — so a tool that tunes Triton's batching tunes
  Batchlab's. Without ``dynamic_batching`` requests are not held to form batches
  (``max_wait_ms=0``). Other fields are accepted and ignored, and named in the answer.
* ``parameters["file:1/model.onnx"]``: the model file, base64 (Triton's file override):
  loads a new model, or hot-swaps a loaded one.

An unloaded model keeps its file and batch settings, so ``load`` brings it back as it was.

Example:
    >>> repo = Repository(engine)
    >>> repo.load("mlp", {"config": json.dumps({"max_batch_size": 16,
    ...     "dynamic_batching": {"max_queue_delay_microseconds": 2000}})})
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import threading
from typing import Any

from core.config import BatchConfig
from core.errors import ConfigError, ModelNotFoundError
from core.protocol import jsontext, triton
from .timeouts import check_timeout

__all__ = ["Repository"]

_FILE_KEY = "file:1/model.onnx"


class Repository:
    """Load, unload and list models of an engine the way Triton's repository API does."""

    def __init__(self, engine: Any, keep_models: int = 16,
                 keep_bytes: int | None = None) -> None:
        self.engine = engine
        # Unloaded models' files, oldest first; bounded (by count and bytes, default an
        # eighth of the memory budget): past it the oldest are forgotten.
        self._unloaded: dict[str, tuple[bytes, BatchConfig]] = {}
        self._keep_models = keep_models
        self._keep_bytes = keep_bytes if keep_bytes is not None else \
            engine.memory_budget_bytes // 8
        self._lock = threading.Lock()

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        loaded = self.engine.model_names()
        out = [{"name": n, "version": "1", "state": "READY", "reason": ""} for n in loaded]
        if not ready_only:
            with self._lock:
                out += [{"name": n, "version": "1", "state": "UNAVAILABLE",
                         "reason": "unloaded"} for n in self._unloaded if n not in loaded]
        return out

    def load(self, name: str, parameters: Any = None,
             max_timeout_ms: float | None = None) -> dict[str, Any]:
        params = parameters or {}
        if not isinstance(params, dict):
            raise ConfigError("'parameters' must be an object")
        changes: dict[str, Any] = {}
        ignored: list[str] = []
        if params.get("config") is not None:
            raw = params["config"]
            try:   # (strict, and 100,000 "[" a 400, not a 500 RecursionError)
                cfg = jsontext.loads(raw) if isinstance(raw, str) else raw
            except ValueError as err:
                raise ConfigError(f"parameters.config is not valid JSON: {err}; send a Triton "
                                  "model configuration object") from None
            changes, ignored = triton.batch_changes(cfg)
        data = None
        if params.get(_FILE_KEY) is not None:
            try:
                data = base64.b64decode(params[_FILE_KEY], validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise ConfigError(f"parameters[{_FILE_KEY!r}] must be the model file in "
                                  "base64") from None
        engine = self.engine
        with self._lock:
            kept = self._unloaded.get(name)
        loaded = name in engine.model_names()
        if not loaded and data is None and kept is None:
            raise ModelNotFoundError(
                f"no model named {name!r} in the repository (loaded: "
                f"{', '.join(engine.model_names()) or 'none'}); send its ONNX file as "
                f"parameters[{_FILE_KEY!r}] (base64) to add it")
        # The settings it will have, checked before anything is loaded: a load refused
        # for its configuration leaves the repository as it was.
        base = engine.batch_config(name) if loaded else kept[1] if kept is not None \
            else engine.config.batch
        batch = base.replace(**changes) if changes else base
        if "timeout_ms" in changes:  # a Triton queue policy over the wire: within the cap
            check_timeout(changes["timeout_ms"], max_timeout_ms, "the model's queue policy")
        if data is not None:
            engine.load_model(data, name=name, replace=loaded, batch=batch)
        elif not loaded:
            engine.load_model(kept[0], name=name, batch=batch)
        elif changes:
            engine.configure(name, **changes)
        with self._lock:
            self._unloaded.pop(name, None)
        return {"name": name, "batch": dataclasses.asdict(engine.batch_config(name)),
                "ignored": ignored}

    def unload(self, name: str) -> None:
        engine = self.engine
        if name in engine.ab_experiments():
            raise ConfigError(f"{name!r} is an A/B experiment, not a model in the repository; "
                              "delete it with the control API (delete_ab)")
        data, cfg = engine.model_bytes(name), engine.batch_config(name)
        engine.unload_model(name)
        with self._lock:
            self._unloaded.pop(name, None)
            if len(data) <= self._keep_bytes:
                self._unloaded[name] = (data, cfg)
            while self._unloaded and (
                    len(self._unloaded) > self._keep_models
                    or sum(len(d) for d, _ in self._unloaded.values()) > self._keep_bytes):
                del self._unloaded[next(iter(self._unloaded))]
