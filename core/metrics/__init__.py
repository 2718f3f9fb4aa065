"""Metrics: per-model counters and latency histograms with bounded memory, windows over the
per-second series, the request trace (timeline), and CPU accounting of threads.

Example:
    >>> m = ModelMetrics(); m.snapshot().total_requests
    0
"""

from __future__ import annotations

from .classes import PRIORITIES, PriorityClasses, check_priority
from .cpu import cores_busy_s, helpers_cpu_s, process_cpu_s, register_helper, thread_cpu_s
from .histograms import record_many
from .model import ModelMetrics
from .snapshot import TIMESERIES_COLUMNS, MetricsSnapshot
from .trace import TIMELINE_COLUMNS, Trace

__all__ = ["ModelMetrics", "MetricsSnapshot", "TIMESERIES_COLUMNS", "Trace", "TIMELINE_COLUMNS",
           "record_many", "thread_cpu_s", "register_helper", "helpers_cpu_s", "cores_busy_s",
           "process_cpu_s", "PriorityClasses", "PRIORITIES", "check_priority"]
