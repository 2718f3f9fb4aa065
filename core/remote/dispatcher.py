"""The dispatcher: a remote model's place where a local model has its batcher. Each request
is sent as it comes (the *server* batches) from the shared client loop; every ending goes
through the same :class:`~core.batching.Ledger` as a local request, so metrics, the
timeline, A/B arms, traffic and sweeps work unchanged; latency is measured at the client.

Failures are typed: :class:`~core.errors.RemoteServerError` (an HTTP error answer, with the
server's words), :class:`~core.errors.RemoteConnectionError` (refused, dropped, TLS) and
:class:`~core.errors.RequestTimeoutError` past the request's timeout.

Example:
    >>> d = RemoteDispatcher("m", remote, BatchConfig(), ModelMetrics())
    >>> d.submit((x,), rows=1).result().total_ms          # measured at the client
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from core.batching import REMOTE_REASON, Ledger, Request
from core.config import BatchConfig, check_timeout_ms
from core.errors import (EngineClosedError, InputValidationError, OverloadedError,
                         RemoteConnectionError, RemoteServerError, RequestTimeoutError,
                         RequestTooLargeError)
from core.metrics import ModelMetrics, PriorityClasses
from core.models import (ModelInfo, RequestValidator, TensorSpec, oip_datatype, onnx_type,
                         owned)
from .model import RemoteModel

__all__ = ["RemoteDispatcher", "RemoteValidator"]

log = logging.getLogger("batchlab.remote")

_perf = time.perf_counter

# How long after its deadline a remote request is failed if its call has not ended by then
# (aiohttp's own timeout normally ends it at the deadline).
_BACKSTOP_S = 1.0


class RemoteValidator:
    """Checks a remote model's requests against the tensors the server declared (as for a
    local model). While none are known, a single array is sent as ``input-0`` (MLServer's
    default name) and the tensors are learned from the first request that succeeds."""

    def __init__(self, remote: RemoteModel) -> None:
        self.remote = remote
        self._for: ModelInfo | None = None
        self._check: Any = None

    def __call__(self, x: Any) -> tuple[tuple[np.ndarray, ...], int]:
        info = self.remote.info
        if info.inputs:
            if self._for is not info:
                self._check, self._for = RequestValidator(info), info
            return self._check(x)
        if not isinstance(x, np.ndarray) or x.ndim == 0 or x.dtype == object:
            raise InputValidationError(
                f"the server of remote model {info.name!r} declares no input tensors: send one "
                "numpy array (rows on the leading axis; it goes as 'input-0'), or add the "
                "model again with inputs=[{'name': ..., 'datatype': 'FP32', 'shape': [-1, 4]}]")
        if not x.shape[0]:
            raise InputValidationError("a request needs at least one row")
        return (owned(x),), x.shape[0]   # (what was sent)


class RemoteDispatcher:
    """Sends each request of a remote model as it comes; the Batcher's interface for the
    engine (submit, config, queue depth, close), the ledger's endings for everything else.

    At most ``config.max_queue`` requests are outstanding; more are refused at once with
    :class:`OverloadedError` (a client never queues without bound). A request's timeout
    (``timeout_ms``, default the config's) bounds its HTTP call.
    """

    def __init__(self, name: str, remote: RemoteModel, config: BatchConfig,
                 metrics: ModelMetrics, trace: Any = None) -> None:
        self.name = name
        self.remote = remote
        self.metrics = metrics
        self.classes = PriorityClasses(metrics._seconds)
        self.ledger = Ledger(name, metrics, _perf, trace=trace)
        self.config = config
        self.batch_ids = itertools.count(1)   # (a hot swap's successor numbers on)
        self._loop = remote.target._loop
        self._sending = 0          # requests on the wire (loop thread only)
        self._closed = False
        # submit admits and clears, endings check and set, under one lock: "drained" can
        # never be seen while a request is admitted
        self._lock = threading.Lock()
        self._drained = threading.Event()
        self._drained.set()
        self._tasks: set[Any] = set()   # asyncio keeps tasks only weakly

    @property
    def closed(self) -> bool:
        return self._closed

    def configure(self, config: BatchConfig) -> None:
        self.config = config

    def queue_depth(self) -> int:
        """Requests accepted and not yet answered beyond the connections in use."""
        return max(0, self.ledger.pending() - self.remote.target.max_connections)

    def pending(self) -> int:
        return self.ledger.pending()

    def learned_cost(self) -> dict[str, float] | None:
        """Nothing is learned here: the server batches, out of sight."""
        return None

    def policy_state(self) -> dict[str, Any] | None:
        """The server's policy keeps its state out of sight."""
        return None

    def submit(self, arrays: Sequence[np.ndarray], rows: int,
               timeout_ms: float | None = None, arm: str | None = None,
               sink: Any = None, priority: int | None = None, check: Any = None) -> Future:
        cfg = self.config
        mbs = self.remote.batching.enforced_max_batch_size
        if mbs is not None and rows > mbs:
            raise RequestTooLargeError(
                f"request has {rows} rows but {self.remote.target.url} takes at most "
                f"max_batch_size={mbs} rows for model {self.remote.target.model!r}; split it")
        # In flight: requests not yet answered, and calls still ending (cancelled ones).
        outstanding = max(self.ledger.pending(), len(self._tasks))
        if outstanding >= cfg.max_queue:
            raise OverloadedError(
                f"remote model {self.name!r} has {outstanding} requests outstanding "
                f"(max_queue={cfg.max_queue}); the server is slower than the traffic: send "
                "less, or raise max_queue with engine.configure()")
        if isinstance(sink, ModelMetrics):
            sink = (sink,)
        if timeout_ms is not None:
            check_timeout_ms(timeout_ms)
        if priority is not None:
            sink = self.classes.sink(priority, sink)
        t_ms = cfg.timeout_ms if timeout_ms is None else timeout_ms
        now = _perf()
        deadline = now + (t_ms / 1000.0 if t_ms is not None else self.remote.target.timeout_s)
        r = Request(self.ledger, arrays, rows, now, deadline, arm, sink)
        if check is not None:   # (see core/batching/checks.py)
            r._check = check
            self.ledger.checking = True
        if priority is not None:
            r._priority = priority     # sent on as the OIP request's priority parameter
        with self._lock:
            if self._closed:
                raise EngineClosedError(f"remote model {self.name!r} is closed and accepts "
                                        "no more requests")
            self.ledger.admit(r)
            self._drained.clear()
        try:
            self._loop.loop.call_soon_threadsafe(self._start, r)
        except RuntimeError:  # the loop is gone (interpreter exit)
            self.ledger.fail([r], EngineClosedError("the remote client's loop has stopped"))
        return r

    def _start(self, r: Request) -> None:
        loop = self._loop.loop
        # A backstop: whatever happens to the call, the request ends soon after its deadline
        # (the call cancels it when it ends, which also drops its references).
        holder: list[Any] = []
        backstop = loop.call_at(loop.time() + max(0.0, r._deadline - _perf()) + _BACKSTOP_S,
                                self._expire, r, holder)
        task = loop.create_task(self._send(r, backstop))
        holder.append(task)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # A caller's cancel() ends the HTTP call too (its connection, task and arrays).
        r.add_done_callback(lambda fut: fut.cancelled() and loop.call_soon_threadsafe(
            task.cancel))

    def _expire(self, r: Request, holder: list[Any]) -> None:
        if r in self.ledger.live:
            for task in holder:
                task.cancel()
            self.ledger.fail([r], RequestTimeoutError(
                f"remote model {self.name!r} ({self.remote.target.url}) did not answer "
                f"within {(r._deadline - r._t_submit) * 1000.0:.0f} ms"))
            self._check_drained()

    async def _send(self, r: Request, backstop: Any) -> None:
        ledger = self.ledger
        if r not in ledger.live:           # cancelled or failed before it was sent
            backstop.cancel()
            self._check_drained()
            return
        remote = self.remote
        names = [s.name for s in remote.info.inputs] or (
            ["input-0"] if len(r._arrays) == 1 else [f"input-{i}" for i in range(len(r._arrays))])
        t0 = _perf()
        remaining = r._deadline - t0
        self._sending += 1
        depth = self._sending
        try:
            if remaining <= 0:
                raise asyncio.TimeoutError
            outs = await remote.target.infer_async(dict(zip(names, r._arrays)), remaining,
                                                   getattr(r, "_priority", None))
            t1 = _perf()
            out_names = remote.output_names or list(outs)
            missing = [n for n in out_names if n not in outs]
            if missing:
                raise RemoteServerError(f"{remote.target.url} answered without output(s) "
                                        f"{missing} of model {remote.target.model!r}", 502)
            self._check_rows(outs, r._rows)
            self._check_types(outs)
            ledger.succeed([r], [outs[n] for n in out_names], out_names, next(self.batch_ids),
                           r._rows, REMOTE_REASON, t0, t1, depth)
            remote.sizes_run.add(r._rows)
            if not remote.info.inputs:
                self._learn(names, r._arrays, outs)
        except asyncio.CancelledError:
            return                       # the backstop ended it
        except (asyncio.TimeoutError, TimeoutError):
            t_ms = (r._deadline - r._t_submit) * 1000.0
            ledger.fail([r], RequestTimeoutError(
                f"remote model {self.name!r} ({remote.target.url}) did not answer within "
                f"{t_ms:.0f} ms; raise timeout_ms, send less, or check the server"),
                batch=(r._rows, REMOTE_REASON, _perf() - t0, depth))
        except Exception as err:  # typed remote errors, and anything unexpected
            if not isinstance(err, (RemoteServerError, RemoteConnectionError,
                                    InputValidationError)):
                log.exception("remote request to %s failed unexpectedly", remote.target)
                err = RemoteConnectionError(f"request to {remote.target.url} failed: "
                                            f"{type(err).__name__}: {err}")
            ledger.fail([r], err, batch=(r._rows, REMOTE_REASON, _perf() - t0, depth))
        finally:
            backstop.cancel()
            self._sending -= 1
            self._check_drained()

    def _check_rows(self, outs: dict[str, Any], rows: int) -> None:
        """Outputs the server declares with a dynamic leading axis must have the request's
        rows: an answer for another request (or a broken batcher) is not handed over."""
        if self.remote.info.batch_mode != "dynamic":
            return
        for spec in self.remote.info.outputs:
            a = outs.get(spec.name)
            if (isinstance(a, np.ndarray) and spec.shape and spec.shape[0] == "N"
                    and (a.ndim == 0 or a.shape[0] != rows)):
                raise RemoteServerError(
                    f"{self.remote.target.url} answered {a.shape[0] if a.ndim else 0} rows of "
                    f"output {spec.name!r} for a request of {rows} row(s) (model "
                    f"{self.remote.target.model!r})", 502)

    def _check_types(self, outs: dict[str, Any]) -> None:
        """Outputs must have the datatype the server's metadata declares."""
        for spec in self.remote.info.outputs:
            a = outs.get(spec.name)
            if spec.dtype is not None and spec.dtype != np.dtype(object) and isinstance(
                    a, np.ndarray) and a.dtype != spec.dtype:
                raise RemoteServerError(
                    f"{self.remote.target.url} answered output {spec.name!r} as {a.dtype}, but "
                    f"its metadata declares {spec.dtype} (model {self.remote.target.model!r})",
                    502)

    def _learn(self, names: list[str], arrays: Sequence[np.ndarray],
               outs: dict[str, Any]) -> None:
        """An undeclared model's tensors, from its first request that succeeded."""
        remote = self.remote
        with remote.lock:
            if remote.info.inputs:
                return
            def spec(n: str, a: Any) -> TensorSpec:
                a = np.asarray(a)
                tail = tuple(a.shape[1:])
                dt = a.dtype if a.dtype != object else None
                kind = onnx_type(oip_datatype(a.dtype)) or "tensor(string)"
                return TensorSpec(n, kind, dt, ("N",) + tail)

            remote.info = replace(
                remote.info, inputs=tuple(spec(n, a) for n, a in zip(names, arrays)),
                outputs=tuple(spec(n, a) for n, a in outs.items()),
                batch_reason="the server declares no tensors: these were learned from the "
                             "first request that succeeded")
            remote.output_names = list(outs)

    def _check_drained(self) -> None:
        with self._lock:
            if not self.ledger.pending():
                self._drained.set()

    # -- closing (the registry's calls) ------------------------------------------------------
    def begin_close(self) -> None:
        with self._lock:
            self._closed = True
        self._check_drained()

    def wait_drained(self, deadline: float | None) -> bool:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self._drained.wait(left) or not self.ledger.pending()

    def abort(self) -> int:
        n = self.ledger.fail_all(EngineClosedError(
            f"remote model {self.name!r} was closed before its server answered"))
        self.remote.target.close()
        return n

    def join_threads(self, deadline: float) -> None:
        pass

    def finish_close(self, deadline: float | None) -> int:
        self.begin_close()
        self.wait_drained(deadline)
        return self.abort()
