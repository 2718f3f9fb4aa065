"""Batchlab core: a dynamic-batching inference engine on ONNX Runtime.

Example:
    >>> from core import Engine
    >>> with Engine() as engine:
    ...     pred = engine.predict("mlp", engine.sample_input("mlp", rows=2))
"""

from __future__ import annotations

from .batcher import RELEASE_REASONS, Batcher, Prediction
from .config import POLICIES, BatchConfig, EngineConfig, SessionConfig
from .demo_models import DEMO_MODELS, build_demo_model
from .engine import Engine
from .jobs import JobStatus
from .trace import TIMELINE_COLUMNS, Trace
from .errors import (BatchlabError, ConfigError, EngineClosedError, InferenceError,
                     InputValidationError, ModelLoadError, ModelNotFoundError, OverloadedError,
                     RequestTimeoutError, RequestTooLargeError, ResourceLimitError,
                     SLOShedError, EngineUnavailableError, RemoteConnectionError,
                     RemoteServerError, RemoteTargetError)
from .metrics import TIMESERIES_COLUMNS, MetricsSnapshot, ModelMetrics
from .models import (CacheEntry, ModelInfo, SessionCache, TensorSpec, available_providers,
                     sample_input)
from .loadgen import ARRIVAL_PATTERNS, TrafficGenerator, TrafficStatus
from .router import AB_MODES, ABExperiment, ABReport
from .warmup import WARMUP_COLUMNS, WarmupReport, warmup_batch_sizes

__all__ = [
    "Engine", "Prediction", "Batcher", "RELEASE_REASONS",
    "BatchConfig", "EngineConfig", "SessionConfig", "POLICIES",
    "DEMO_MODELS", "build_demo_model",
    "BatchlabError", "ConfigError", "EngineClosedError", "InferenceError",
    "InputValidationError", "ModelLoadError", "ModelNotFoundError", "OverloadedError",
    "RequestTimeoutError", "RequestTooLargeError", "SLOShedError", "ResourceLimitError",
    "EngineUnavailableError", "RemoteTargetError", "RemoteServerError",
    "RemoteConnectionError", "JobStatus", "TIMELINE_COLUMNS", "Trace",
    "MetricsSnapshot", "ModelMetrics", "TIMESERIES_COLUMNS",
    "CacheEntry", "ModelInfo", "SessionCache", "TensorSpec", "available_providers",
    "sample_input",
    "WarmupReport", "WARMUP_COLUMNS", "warmup_batch_sizes",
    "ARRIVAL_PATTERNS", "TrafficGenerator", "TrafficStatus",
    "AB_MODES", "ABExperiment", "ABReport",
]
