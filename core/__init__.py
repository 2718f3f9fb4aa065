"""Batchlab core: a dynamic-batching inference engine on ONNX Runtime, and its lab.

This module exports the contract only: the engine, what it returns, its configuration and
its errors. Everything else is importable from its package (``core.models``,
``core.batching``, ``core.lab``, ``core.serving``...; see docs/architecture.md).

Example:
    >>> from core import Engine
    >>> with Engine() as engine:
    ...     pred = engine.predict("mlp", engine.sample_input("mlp", rows=2))
"""

from __future__ import annotations

from core.ab import AB_MODES, ABExperiment, ABReport
from core.batching import RELEASE_REASONS, Batcher, Prediction
from core.config import POLICIES, BatchConfig, EngineConfig, SessionConfig
from core.engine import WARMUP_COLUMNS, EngineCore, WarmupReport, warmup_batch_sizes
from core.errors import (BatchlabError, ConfigError, EngineClosedError, EngineUnavailableError,
                         InferenceError, InputValidationError, JobNotFoundError,
                         ModelLoadError, ModelNotFoundError, OverloadedError, RemoteConnectionError,
                         RemoteServerError, RemoteTargetError, RequestTimeoutError,
                         RequestTooLargeError, ResourceLimitError, SLOShedError,
                         TrafficNotFoundError)
from core.lab import ARRIVAL_PATTERNS, Engine, JobStatus, TrafficGenerator, TrafficStatus
from core.metrics import TIMELINE_COLUMNS, TIMESERIES_COLUMNS, MetricsSnapshot, ModelMetrics, Trace
from core.models import (DEMO_MODELS, CacheEntry, ModelInfo, SessionCache, TensorSpec,
                         available_providers, build_demo_model, sample_input)
from core.remote import BatchingSource, RemoteInfo, ServerBatching

__all__ = [
    "Engine", "EngineCore", "Prediction", "Batcher", "RELEASE_REASONS",
    "BatchConfig", "EngineConfig", "SessionConfig", "POLICIES",
    "DEMO_MODELS", "build_demo_model",
    "BatchlabError", "ConfigError", "EngineClosedError", "InferenceError",
    "InputValidationError", "ModelLoadError", "ModelNotFoundError", "OverloadedError",
    "JobNotFoundError", "TrafficNotFoundError",
    "RequestTimeoutError", "RequestTooLargeError", "SLOShedError", "ResourceLimitError",
    "EngineUnavailableError", "RemoteTargetError", "RemoteServerError",
    "RemoteConnectionError", "JobStatus", "TIMELINE_COLUMNS", "Trace",
    "MetricsSnapshot", "ModelMetrics", "TIMESERIES_COLUMNS",
    "CacheEntry", "ModelInfo", "SessionCache", "TensorSpec", "available_providers",
    "sample_input", "RemoteInfo", "ServerBatching", "BatchingSource",
    "WarmupReport", "WARMUP_COLUMNS", "warmup_batch_sizes",
    "ARRIVAL_PATTERNS", "TrafficGenerator", "TrafficStatus",
    "AB_MODES", "ABExperiment", "ABReport",
]

# Module paths from before the packages (core.experiments, core.loadgen, core.charts...)
# keep working for code outside this repository: core/_aliases.py.
from core._aliases import install as _install_aliases  # noqa: E402

_install_aliases()
