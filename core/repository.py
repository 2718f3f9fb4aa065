"""The Open Inference Protocol's model repository extension, as Triton serves it.

``POST /v2/repository/index`` lists the models (loaded ones ``READY``, unloaded ones
``UNAVAILABLE``); ``POST /v2/repository/models/{name}/load`` loads or reloads a model,
``.../unload`` unloads it. Like Triton, a load may carry:

* ``parameters.config``: a JSON string of model configuration. Batchlab reads Triton's
  batching fields — ``max_batch_size`` (0: no batching, one row at a time),
  ``dynamic_batching.max_queue_delay_microseconds`` (max wait),
  ``dynamic_batching.default_queue_policy.max_queue_size`` and
  ``.default_timeout_microseconds`` — so a tool that tunes Triton's batching tunes
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
import json
import threading
from typing import Any

from .config import BatchConfig
from .errors import ConfigError, ModelNotFoundError

__all__ = ["Repository", "triton_batch_changes"]

_FILE_KEY = "file:1/model.onnx"
_KNOWN = {"max_batch_size", "dynamic_batching", "name", "platform", "backend", "input",
          "output", "instance_group"}


def triton_batch_changes(config: Any) -> tuple[dict[str, Any], list[str]]:
    """Batchlab ``configure`` changes from a Triton model configuration (a dict), and the
    names of fields that have no meaning here (ignored)."""
    if not isinstance(config, dict):
        raise ConfigError("parameters.config must be a JSON object (Triton's model "
                          f"configuration), got {type(config).__name__}")
    changes: dict[str, Any] = {}
    ignored = sorted(k for k in config if k not in _KNOWN)
    if "max_batch_size" in config:
        mbs = config["max_batch_size"]
        if not isinstance(mbs, int) or isinstance(mbs, bool) or mbs < 0:
            raise ConfigError(f"config.max_batch_size must be an integer >= 0, got {mbs!r}")
        changes["max_batch_size"] = max(1, mbs)
    db = config.get("dynamic_batching")
    if db is None:
        changes["max_wait_ms"] = 0.0
    elif not isinstance(db, dict):
        raise ConfigError("config.dynamic_batching must be an object, e.g. "
                          '{"max_queue_delay_microseconds": 2000}')
    else:
        delay = db.get("max_queue_delay_microseconds", 0)
        if not isinstance(delay, (int, float)) or delay < 0:
            raise ConfigError("dynamic_batching.max_queue_delay_microseconds must be a number "
                              f">= 0, got {delay!r}")
        changes["max_wait_ms"] = float(delay) / 1000.0
        policy = db.get("default_queue_policy") or {}
        if "max_queue_size" in policy and int(policy["max_queue_size"]) > 0:
            changes["max_queue"] = int(policy["max_queue_size"])
        if "default_timeout_microseconds" in policy:
            us = float(policy["default_timeout_microseconds"])
            changes["timeout_ms"] = us / 1000.0 if us > 0 else None
        ignored += [f"dynamic_batching.{k}" for k in db
                    if k not in ("max_queue_delay_microseconds", "default_queue_policy")]
    return changes, ignored


def triton_model_config(name: str, cfg: Any, info: Any = None) -> dict[str, Any]:
    """A model's batch settings as Triton's model configuration (``GET .../config``): the
    inverse of :func:`triton_batch_changes` for the fields both have."""
    out: dict[str, Any] = {"name": name, "platform": "onnxruntime_onnx",
                           "max_batch_size": cfg.max_batch_size if info is None or
                           info.batchable else 0}
    if cfg.max_wait_ms > 0 or cfg.max_batch_size > 1:
        policy: dict[str, Any] = {"max_queue_size": cfg.max_queue}
        if cfg.timeout_ms is not None:
            policy["default_timeout_microseconds"] = int(round(cfg.timeout_ms * 1000))
        out["dynamic_batching"] = {
            "max_queue_delay_microseconds": int(round(cfg.max_wait_ms * 1000)),
            "default_queue_policy": policy}
    return out


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

    def load(self, name: str, parameters: Any = None) -> dict[str, Any]:
        params = parameters or {}
        if not isinstance(params, dict):
            raise ConfigError("'parameters' must be an object")
        changes: dict[str, Any] = {}
        ignored: list[str] = []
        if params.get("config") is not None:
            raw = params["config"]
            try:
                cfg = json.loads(raw) if isinstance(raw, str) else raw
            except ValueError as err:
                raise ConfigError(f"parameters.config is not valid JSON: {err}") from None
            changes, ignored = triton_batch_changes(cfg)
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
        if data is not None:
            engine.load_model(data, name=name, replace=loaded)
        elif not loaded:
            if kept is None:
                raise ModelNotFoundError(
                    f"no model named {name!r} in the repository (loaded: "
                    f"{', '.join(engine.model_names()) or 'none'}); send its ONNX file as "
                    f"parameters[{_FILE_KEY!r}] (base64) to add it")
            engine.load_model(kept[0], name=name, batch=kept[1])
        with self._lock:
            self._unloaded.pop(name, None)
        if changes:
            engine.configure(name, **changes)
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
