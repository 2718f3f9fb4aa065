"""The types the engine server and its client exchange, by stable name: one table for both
ends, so a dashboard and a server of the same version agree whatever module a class lives
in, and nothing else is ever built from a payload.

Example:
    >>> WIRE.decode(WIRE.encode(BatchConfig(max_batch_size=8))).max_batch_size
    8
"""

from __future__ import annotations

from core.ab import ABReport, ErrorComparison, LatencyComparison
from core.batching import Prediction
from core.config import BatchConfig, EngineConfig, SessionConfig
from core.engine import WarmupReport
from core.lab import CostModel, JobStatus, LoadResult, Recommendation, TrafficStatus
from core.metrics import MetricsSnapshot
from core.models import CacheEntry, ModelInfo, TensorSpec
from core.protocol import WireCodec
from core.remote import RemoteInfo, ServerBatching

__all__ = ["WIRE", "WIRE_TYPES"]

#: Every type that travels between an engine server and its clients.
WIRE_TYPES: tuple[type, ...] = (
    BatchConfig, SessionConfig, EngineConfig, ModelInfo, TensorSpec, CacheEntry,
    MetricsSnapshot, Prediction, WarmupReport, ABReport, LatencyComparison, ErrorComparison,
    TrafficStatus, JobStatus, LoadResult, Recommendation, CostModel, RemoteInfo,
    ServerBatching)

WIRE = WireCodec(WIRE_TYPES)
