"""The engine: the contract's model-side methods (:class:`EngineCore`) over its rooms —
the registry, the namespace, loading, request routing, A/B experiments, live settings and
warm-up. It never imports the lab, the server or the UI.

Example:
    >>> with EngineCore(demo_models=False) as engine:
    ...     engine.load_model("model.onnx", name="resnet")
"""

from __future__ import annotations

from .core import EngineCore
from .registry import ModelEntry, ModelRegistry
from .requests import settle_late, wait_s_for
from .warmup import (WARMUP_COLUMNS, ProgressFn, WarmupReport, check_batchable_sizes, run_warmup,
                     warmup_batch_sizes)

__all__ = ["EngineCore", "ModelEntry", "ModelRegistry", "check_batchable_sizes",
           "WARMUP_COLUMNS", "ProgressFn", "WarmupReport", "run_warmup", "warmup_batch_sizes",
           "settle_late", "wait_s_for"]
