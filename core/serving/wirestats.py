"""What the engine server answered, counted where the engine cannot see it: every answer
by route and status, the refusals by their type (a 503 for the parse queue, a 413, a 401
never reach a model, so no model's metrics count them), and the connections the server
closed itself (a head that never ended, a client that never read its answer, one shed past
the connection limit). Exported on ``/metrics`` beside the engine's counters:

==============================================  ========================================
``batchlab_http_responses_total{route,code}``   answers sent, by route kind and status
``batchlab_http_errors_total{route,code,type}`` answers that were errors, by error type
``batchlab_http_closed_total{reason}``          connections the server closed itself
``batchlab_http_open_connections``              connections open now
``batchlab_http_body_bytes``                    request body bytes held now
``batchlab_http_parsing_bytes``                 large JSON bodies' bytes queued to parse
==============================================  ========================================

Reasons a connection is closed: ``head_timeout`` (a request head that never ended),
``bad_head`` (one past its size bound or malformed), ``shed`` (waiting for a head past the
connection limit), ``write_stall`` (a client that took none of its answer for the stall
time), ``after_error`` (an answer that closes it: a body not read, a 408, a 413, a 503
for the bodies held).

Route kinds (never the path: a label per URL would grow without bound): ``infer``,
``metadata`` (a model's or the server's), ``health``, ``metrics``, ``control`` (the
control API and the repository extension) and ``other``.

Counted on the event loop; read by a scrape on another thread, under a lock taken for a
few dictionary increments (a copy while the loop resized the dictionary would raise).

Example:
    >>> w = WireStats()
    >>> w.answered("POST", "/v2/models/mlp/infer", 503, "ServerBusyError")
    >>> w.counts()["responses"]
    {('infer', 503): 1}
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Callable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["WireStats", "route_kind"]


def route_kind(method: str, path: str) -> str:
    """The kind of route ``path`` is, for a label (a handful of values, whatever is sent)."""
    if path.startswith("/v2/models/"):
        return "infer" if method == "POST" and path.endswith("/infer") else "metadata"
    if path.startswith("/v2/health/"):
        return "health"
    if path == "/metrics":
        return "metrics"
    if path.startswith(("/v1/", "/v2/repository")):
        return "control"
    return "metadata" if path == "/v2" else "other"


class WireStats(Collector):
    """The server's own counters (see the module). ``gauges``: name -> reader of a
    figure now (the app's and the server's), read at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._responses: Counter[tuple[str, int]] = Counter()
        self._errors: Counter[tuple[str, int, str]] = Counter()
        self._closed: Counter[str] = Counter()
        self.gauges: dict[str, Callable[[], float]] = {}

    def answered(self, method: str, path: str, status: int, error: str | None = None) -> None:
        """One answer sent; ``error``: its error's type when it was one."""
        kind = route_kind(method, path)
        with self._lock:
            self._responses[kind, status] += 1
            if error is not None:
                self._errors[kind, status, error] += 1

    def closed(self, reason: str) -> None:
        """A connection the server closed itself (``reason``: a fixed word)."""
        with self._lock:
            self._closed[reason] += 1

    def counts(self) -> dict[str, dict[Any, int]]:
        """A copy of the counters: ``responses``, ``errors`` and ``closed``."""
        with self._lock:
            return {"responses": dict(self._responses), "errors": dict(self._errors),
                    "closed": dict(self._closed)}

    def collect(self) -> Any:
        c = self.counts()
        responses = CounterMetricFamily("batchlab_http_responses", "Answers sent, by route "
                                        "kind and status", labels=["route", "code"])
        for (kind, status), n in sorted(c["responses"].items()):
            responses.add_metric([kind, str(status)], n)
        errors = CounterMetricFamily("batchlab_http_errors", "Answers that were errors, by "
                                     "route kind, status and error type",
                                     labels=["route", "code", "type"])
        for (kind, status, etype), n in sorted(c["errors"].items()):
            errors.add_metric([kind, str(status), etype], n)
        closed = CounterMetricFamily("batchlab_http_closed", "Connections the server closed "
                                     "itself, by reason", labels=["reason"])
        for reason, n in sorted(c["closed"].items()):
            closed.add_metric([reason], n)
        yield from (responses, errors, closed)
        for name, help_text in _GAUGES.items():
            read = self.gauges.get(name)
            value = None if read is None else read()
            if value is not None:   # (None: the host does not know it)
                yield GaugeMetricFamily(name, help_text, value=float(value))


_GAUGES = {  # name -> help; their readers are set by the server (``gauges``)
    "batchlab_http_open_connections": "Connections open now",
    "batchlab_http_body_bytes": "Request body bytes held now (read or being read)",
    "batchlab_http_parsing_bytes": "Large JSON request bodies' bytes queued for the parser "
                                   "or parsing",
}
