"""``/metrics``: the engine's counters in Prometheus' text format (``prometheus_client``).

Triton's names where they mean the same thing, so a Grafana dashboard made for Triton
works on Batchlab (labels ``model`` and ``version``; durations are cumulative microseconds
over successful requests, as in Triton):

==========================================  =============================================
``nv_inference_request_success``            requests answered
``nv_inference_request_failure``            requests failed (any reason)
``nv_inference_count``                      rows of successful requests (Triton: inferences)
``nv_inference_exec_count``                 batches whose run succeeded (Triton: executions)
``nv_inference_request_duration_us``        summed submit-to-answer time
``nv_inference_queue_duration_us``          summed time waiting for a batch
``nv_inference_compute_infer_duration_us``  summed batch run time, per request
==========================================  =============================================

These are exported untyped (their values only ever grow, like counters): the client
library appends ``_total`` to a counter's name, and Triton's names have no suffix. Then
Batchlab's own: ``batchlab_batch_size`` (histogram of rows per batch),
``batchlab_batch_release_total{reason}`` (why batches left: full, deadline, ...),
``batchlab_queue_depth`` (requests waiting now), ``batchlab_requests_in_flight`` (accepted
and not answered now: waiting or running), ``batchlab_up``.

Example:
    >>> print(render(engine).decode()[:60])
    # HELP nv_inference_request_success Number of successful ...
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, UnknownMetricFamily)
from prometheus_client.registry import Collector

__all__ = ["EngineCollector", "render", "CONTENT_TYPE"]

#: The text format's content type.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_COUNTERS = (  # name (without _total), help, value from the counters
    ("nv_inference_request_success", "Number of successful inference requests",
     lambda c: c["success_count"]),
    ("nv_inference_request_failure", "Number of failed inference requests",
     lambda c: c["error_count"]),
    ("nv_inference_count", "Number of inferences performed (rows)", lambda c: c["rows_ok"]),
    ("nv_inference_exec_count", "Number of model executions performed (batches)",
     lambda c: c["batches_ok"]),
    ("nv_inference_request_duration_us", "Cumulative inference request duration in "
     "microseconds (successful requests)", lambda c: c["sum_total_s"] * 1e6),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in "
     "microseconds", lambda c: c["sum_queue_s"] * 1e6),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in "
     "microseconds, summed per request", lambda c: c["sum_compute_s"] * 1e6),
)


#: The batch-size histogram's edges are powers of two up to this (or to the next power of
#: two above a larger setting or batch): the same series whatever ``max_batch_size`` is
#: set to (edges that followed it made series vanish and new ones appear already full on
#: a configure, which breaks ``rate()`` and ``histogram_quantile``; an adversary).
_EDGES_TOP = 1024


#: The largest edge each engine's model has had on a scrape: past 1,024 the edges follow
#: the setting or the largest batch, and never go back down (after a reset or a lower
#: setting the le="4096" series vanished; a reviewer).
_TOPS: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()
_TOPS_LOCK = threading.Lock()


def _buckets(max_rows: int) -> list[int]:
    edges, b = [], 1
    while b < max(max_rows, _EDGES_TOP):
        edges.append(b)
        b *= 2
    return edges + [b]


class EngineCollector(Collector):
    """Reads every model's counters at scrape time (no percentiles: cheap)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def collect(self) -> Any:
        engine = self.engine
        # Untyped, not counter: the client library would add "_total" to a counter's name,
        # and Triton's dashboards query the names without it.
        counters = [UnknownMetricFamily(n, h, labels=["model", "version"])
                    for n, h, _ in _COUNTERS]
        sizes = HistogramMetricFamily("batchlab_batch_size", "Rows per batch run",
                                      labels=["model"])
        reasons = CounterMetricFamily("batchlab_batch_release", "Batches by release reason",
                                      labels=["model", "reason"])
        depth = GaugeMetricFamily("batchlab_queue_depth", "Requests waiting for a batch",
                                  labels=["model"])
        flight = GaugeMetricFamily("batchlab_requests_in_flight", "Requests accepted and "
                                   "not answered: waiting or in a batch running",
                                   labels=["model"])
        with _TOPS_LOCK:   # (two scrapes at once across an unload: one KeyError'd)
            names = engine.model_names()   # (read inside: an older list dropped a new mark)
            try:
                tops = _TOPS.setdefault(engine, {})
            except TypeError:   # (an engine that cannot be weakly referenced: no memory)
                tops = {}
            for gone in set(tops) - set(names):   # (unloaded: bounded by the models loaded)
                del tops[gone]
        for name in names:
            try:
                c = engine.counters(name)
                cap = engine.batch_config(name).max_batch_size
            except LookupError:  # unloaded between the listing and the read
                continue
            for fam, (_, _, value) in zip(counters, _COUNTERS):
                fam.add_metric([name, "1"], value(c))
            seen = c["batch_sizes"]
            with _TOPS_LOCK:
                top = tops[name] = max([cap, *seen, tops.get(name, 0)])
            edges = _buckets(top)
            cum, buckets = 0, []
            for edge in edges:
                cum = sum(n for rows, n in seen.items() if rows <= edge)
                buckets.append((str(edge), cum))
            buckets.append(("+Inf", sum(seen.values())))
            sizes.add_metric([name], buckets, sum_value=c["rows"])
            for reason, n in sorted(c["release_reasons"].items()):
                reasons.add_metric([name, reason], n)
            depth.add_metric([name], c["queue_depth"])
            flight.add_metric([name], c.get("in_flight", 0))
        up = GaugeMetricFamily("batchlab_up", "1 while the engine accepts requests")
        up.add_metric([], 0.0 if engine.closed else 1.0)
        yield from counters
        yield from (sizes, reasons, depth, flight, up)


def render(engine: Any, *extra: Collector) -> bytes:
    """The Prometheus text exposition of ``engine`` now (and of ``extra`` collectors: the
    server's own, :mod:`core.serving.wirestats`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine))
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)
