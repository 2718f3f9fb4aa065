"""Dynamic batching: a bounded queue and one collector thread per model.

Hot path, per request: ``submit`` takes one lock to append to a deque (and wakes the
collector only when it sleeps and the batch it waits for is now full); the collector pops
a whole batch under one lock, concatenates each input once, runs the model once, and hands
each request a dict of *views* into the batch outputs. Per-request Python work is a few
microseconds, so batching pays off even on models whose batch-1 compute is ~100 µs.

Policies (switchable live with :meth:`Batcher.configure`):

* ``deadline``: a batch is released when it holds ``max_batch_size`` rows or when its
  oldest request has waited ``max_wait_ms`` (the Triton / TF Serving / Ray Serve rule).
  ``max_wait_ms=0`` still takes whatever is already queued.
* ``fixed_window``: the seed design: a free-running window of ``max_wait_ms`` restarted
  after each flush; a request waits for the current window to end wherever it arrived.

Guarantees: a full queue refuses at once (:class:`OverloadedError`); a failing batch is
re-run request by request so only the bad request fails; ``close()`` drains every accepted
request and never leaves a future pending.

Example:
    >>> b = Batcher("double", run=lambda arrays: [arrays[0] * 2], output_names=["y"])
    >>> b.submit((np.ones((2, 3), np.float32),), rows=2).result().outputs["y"].shape
    (2, 3)
    >>> b.close()
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from typing import Any, Callable, Sequence

import numpy as np

from .adaptive import CostEstimator, RateEstimator, adaptive_decision
from .config import BatchConfig
from .errors import (EngineClosedError, InferenceError, OverloadedError,
                     RequestTimeoutError, RequestTooLargeError, SLOShedError)
from .metrics import ModelMetrics

__all__ = ["Batcher", "Prediction", "RunFn", "RELEASE_REASONS", "release_decision"]

log = logging.getLogger("batchlab.batcher")

#: Why a batch left the queue. ``retry``: a request re-run alone after its batch failed;
#: ``adaptive``: the adaptive policy judged waiting longer not worth it.
RELEASE_REASONS = ("full", "deadline", "drain", "retry", "adaptive")

#: Runs one batch: input arrays in declared order -> outputs in ``output_names`` order.
RunFn = Callable[[Sequence[np.ndarray]], Sequence[Any]]

_perf = time.perf_counter

# The collector's timed wait ends this long before a deadline; the rest is a yield loop.
_EARLY_WAKE_S = 0.0003
# About what completing one request costs (Prediction, views, set_result, metrics); see
# the hand-off in Batcher._run_batch and docs/benchmarks.md.
_COMPLETE_COST_S = 5e-6

# How often the watchdog looks for requests past their timeout and for a dead collector.
_WATCH_INTERVAL_S = 0.05


class Prediction:
    """What happened to one request: its outputs and how it was served.

    ``outputs`` maps each output name to this request's rows (views into the batch's
    output arrays; lists for non-tensor outputs). Times are in milliseconds: ``queue_ms``
    from submit until its batch started running, ``compute_ms`` the batch's run time,
    ``total_ms`` from submit until the result was ready.

    Example:
        >>> pred = engine.predict("mlp", x)
        >>> pred.outputs["logits"].shape, pred.batch_rows, pred.release_reason
        ((1, 10), 17, 'deadline')
    """

    __slots__ = ("outputs", "model", "arm", "batch_id", "batch_rows", "release_reason",
                 "queue_ms", "compute_ms", "total_ms", "rows")

    def __init__(self, outputs: dict[str, Any], model: str, batch_id: int, batch_rows: int,
                 release_reason: str, queue_ms: float, compute_ms: float, total_ms: float,
                 rows: int, arm: str | None = None) -> None:
        self.outputs = outputs
        self.model = model
        self.arm = arm
        self.batch_id = batch_id
        self.batch_rows = batch_rows
        self.release_reason = release_reason
        self.queue_ms = queue_ms
        self.compute_ms = compute_ms
        self.total_ms = total_ms
        self.rows = rows

    def __getitem__(self, name: str) -> Any:
        return self.outputs[name]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self) -> str:
        outs = ", ".join(f"{k}: {getattr(v, 'shape', type(v).__name__)}"
                         for k, v in self.outputs.items())
        return (f"Prediction(model={self.model!r}, arm={self.arm!r}, rows={self.rows}, "
                f"batch_id={self.batch_id}, batch_rows={self.batch_rows}, "
                f"reason={self.release_reason!r}, queue_ms={self.queue_ms:.3f}, "
                f"compute_ms={self.compute_ms:.3f}, total_ms={self.total_ms:.3f}, "
                f"outputs={{{outs}}})")


class _Request:
    __slots__ = ("arrays", "rows", "future", "t_submit", "deadline", "arm", "sink")

    def __init__(self, arrays: Sequence[np.ndarray], rows: int, future: Future,
                 t_submit: float, deadline: float, arm: str | None = None,
                 sink: ModelMetrics | None = None) -> None:
        self.arrays = arrays
        self.rows = rows
        self.future = future
        self.t_submit = t_submit
        self.deadline = deadline
        self.arm = arm          # A/B arm label carried into the Prediction
        self.sink = sink        # extra metrics (an A/B arm's), recorded before resolving


def _set_exception(fut: Future, err: BaseException) -> None:
    try:
        fut.set_exception(err)
    except InvalidStateError:  # cancelled or already resolved (e.g. failed by close())
        pass


def _fail(r: _Request, err: BaseException) -> None:
    """Fail one request, counting it in its A/B arm's metrics first."""
    if r.sink is not None and not r.future.done():
        r.sink.record_refused(type(err).__name__, str(err))
    _set_exception(r.future, err)


class Batcher:
    """Queue + collector thread for one model. See the module docstring for semantics.

    ``run`` executes one batch; ``batchable=False`` makes every batch a single request
    (models with a fixed or absent batch axis). ``split_check`` rejects outputs whose
    leading axis is not the batch's rows, which then re-runs the requests one by one.
    """

    def __init__(self, name: str, run: RunFn, output_names: Sequence[str],
                 config: BatchConfig | None = None, metrics: ModelMetrics | None = None,
                 batchable: bool = True, clock: Callable[[], float] = _perf,
                 start: bool = True) -> None:
        self.name = name
        self._run = run
        self._output_names = tuple(output_names)
        self.batchable = batchable
        self._apply(config or BatchConfig())
        self.metrics = metrics or ModelMetrics()
        self._clock = clock
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self._sleeping = False
        self._want_rows = 1
        self._closed = False
        self._window_start = clock()
        self._batch_ids = itertools.count(1)
        self._run_floor_s = math.inf  # lower envelope of run times (see _run_batch)
        self._in_flight: list[_Request] = []
        self._arrived_rows = 0
        self.cost = CostEstimator()      # learned t(n) = a + b*n, for the adaptive policy
        self.rate = RateEstimator()      # learned arrival rate (rows/s)
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._completions: queue.SimpleQueue = queue.SimpleQueue()
        self._completer = threading.Thread(target=self._completer_loop,
                                           name=f"batcher-{name}-done", daemon=True)
        self._stop_watch = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name=f"batcher-{name}-watch",
                                          daemon=True)
        self.watch_interval_s = _WATCH_INTERVAL_S
        self.loop_errors = 0
        self.restarts = 0
        if start:
            self.start()

    def start(self) -> None:
        """Start the collector, completer and watchdog threads (done by the constructor
        unless ``start=False``)."""
        self._thread.start()
        self._completer.start()
        self._watchdog.start()

    # -- public API ----------------------------------------------------------------
    @property
    def config(self) -> BatchConfig:
        return self._config

    @property
    def closed(self) -> bool:
        return self._closed

    def configure(self, config: BatchConfig) -> None:
        """Swap the configuration live; queued requests stay queued and keep their order."""
        with self._cv:
            self._apply(config)
            if self._sleeping:
                self._cv.notify()

    def _apply(self, config: BatchConfig) -> None:
        # Values the submit path needs, precomputed so a submit reads plain attributes.
        self._config = config
        self._max_request_rows = config.max_batch_size if self.batchable else math.inf
        self._max_queue = config.max_queue
        self._timeout_s = config.timeout_ms / 1000.0 if config.timeout_ms is not None else math.inf

    def queue_depth(self) -> int:
        """Requests waiting (not yet in a running batch)."""
        return len(self._queue)

    def submit(self, arrays: Sequence[np.ndarray], rows: int,
               timeout_ms: float | None = None, arm: str | None = None,
               sink: ModelMetrics | None = None) -> Future:
        """Queue one validated request; returns a Future of :class:`Prediction`.

        Raises at once (nothing queued): :class:`EngineClosedError` after ``close()``,
        :class:`RequestTooLargeError` for more rows than ``max_batch_size``,
        :class:`OverloadedError` when the queue holds ``max_queue`` requests.
        """
        if rows > self._max_request_rows:
            raise RequestTooLargeError(
                f"request has {rows} rows but model {self.name!r} takes at most "
                f"max_batch_size={self._config.max_batch_size} rows per batch; split the "
                "request or raise max_batch_size with engine.configure()")
        fut: Future = Future()
        now = self._clock()
        if timeout_ms is None:
            deadline = now + self._timeout_s
        else:
            deadline = now + timeout_ms / 1000.0
        req = _Request(arrays, rows, fut, now, deadline, arm, sink)
        with self._lock:
            if self._closed:
                raise EngineClosedError(f"model {self.name!r} is closed and accepts no more "
                                        "requests; create a new Engine or reload the model")
            if len(self._queue) >= self._max_queue:
                raise OverloadedError(
                    f"model {self.name!r} is overloaded: its queue holds {len(self._queue)} "
                    f"requests (max_queue={self._max_queue}); retry later, send less "
                    "traffic, or raise max_queue / max_batch_size with engine.configure()")
            self._queue.append(req)
            self._queued_rows += rows
            self._arrived_rows += rows
            if self._sleeping and self._queued_rows >= self._want_rows:
                self._cv.notify()
        return fut

    def close(self, timeout_s: float | None = 10.0) -> None:
        """Stop accepting, run every queued request, stop the thread.

        If the thread does not finish within ``timeout_s`` (a hung model), every request
        still queued or running is failed with :class:`EngineClosedError`.
        """
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._stop_watch.set()
        start = time.monotonic()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        if self._completer.is_alive() and self._completer is not threading.current_thread():
            left = None if timeout_s is None else max(0.0, timeout_s - (time.monotonic() - start))
            self._completer.join(left)
        if self._thread.is_alive() or not self._thread.ident:
            err = EngineClosedError(f"model {self.name!r} was closed before this request "
                                    f"finished (the model did not finish within {timeout_s} s)")
            with self._lock:
                leftovers = list(self._queue) + list(self._in_flight)
                self._queue.clear()
                self._queued_rows = 0
            for r in leftovers:
                _fail(r, err)
        if self._watchdog.is_alive() and self._watchdog is not threading.current_thread():
            self._watchdog.join(1.0)

    # -- watchdog ------------------------------------------------------------------
    def _watch(self) -> None:
        """Every ``watch_interval_s``: fail requests past their timeout even when the model
        hangs, and restart the collector thread if it ever died."""
        while not self._stop_watch.wait(self.watch_interval_s):
            try:
                self.expire_overdue()
                self._revive()
            except Exception:  # the watchdog itself must keep watching
                log.exception("batcher %s: watchdog error", self.name)

    def expire_overdue(self) -> int:
        """Fail queued and running requests whose timeout has passed; returns how many."""
        now = self._clock()
        queued: list[_Request] = []
        with self._lock:
            q = self._queue
            while q and q[0].deadline < now:
                r = q.popleft()
                self._queued_rows -= r.rows
                queued.append(r)
        running = [r for r in list(self._in_flight) if r.deadline < now and not r.future.done()]
        for r in queued:
            msg = self._queue_timeout_message(r, now)
            _fail(r, RequestTimeoutError(msg))
            self.metrics.record_refused("RequestTimeoutError", msg)
        for r in running:
            msg = (f"request to model {self.name!r} was still running after "
                   f"{(now - r.t_submit) * 1000:.1f} ms, past its timeout: the model may be "
                   "hung or far too slow for this timeout")
            _fail(r, RequestTimeoutError(msg))
            self.metrics.record_refused("RequestTimeoutError", msg)
        return len(queued) + len(running)

    def _queue_timeout_message(self, r: _Request, now: float) -> str:
        return (f"request to model {self.name!r} waited {(now - r.t_submit) * 1000:.1f} ms "
                "in the queue, past its timeout; raise timeout_ms or lower the load")

    def _revive(self) -> None:
        if self._closed or self._thread.is_alive() or self._thread.ident is None:
            return
        self.restarts += 1
        msg = (f"the collector thread of model {self.name!r} died and was restarted "
               f"(restart {self.restarts}); requests it was running were failed")
        log.error("batcher %s: %s", self.name, msg)
        self.metrics.record_incident("CollectorRestarted", msg)
        err = InferenceError(f"model {self.name!r}: {msg}")
        for r in list(self._in_flight):
            _fail(r, err)
        self._in_flight = []
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{self.name}",
                                        daemon=True)
        self._thread.start()
        if not self._completer.is_alive():
            self._completer = threading.Thread(target=self._completer_loop,
                                               name=f"batcher-{self.name}-done", daemon=True)
            self._completer.start()

    # -- collector -----------------------------------------------------------------
    def _loop(self) -> None:
        self._collect()
        # Only a normal end (closed and drained) stops the completer; if the collector
        # died instead, the watchdog restarts it and the completer keeps its work.
        self._completions.put(None)

    def _collect(self) -> None:
        while True:
            batch: list[_Request] = []
            try:
                batch, reason = self._next_batch()
                if not batch:
                    return
                self._execute(batch, reason)
            except BaseException as err:  # one bad batch must never kill the collector
                self.loop_errors += 1
                log.exception("batcher %s: unexpected error in collector loop", self.name)
                failure = InferenceError(f"internal error while serving model {self.name!r}: "
                                         f"{type(err).__name__}: {err}")
                for r in batch:
                    _fail(r, failure)
            finally:
                self._in_flight = []

    def _next_batch(self) -> tuple[list[_Request], str]:
        """Block until a batch should be released; pop and return it with its reason."""
        clock = self._clock
        q = self._queue
        with self._cv:
            while True:
                if not q:
                    if self._closed:
                        return [], "drain"
                    self._want_rows = 1
                    self._sleeping = True
                    self._cv.wait()
                    self._sleeping = False
                    continue
                cfg = self._config
                max_rows = cfg.max_batch_size if self.batchable else 1
                if self._closed:
                    reason = "drain"
                    break
                if cfg.policy == "adaptive":
                    now = clock()
                    rate = self.rate.observe(self._arrived_rows, now)
                    # Until a batch has been timed there is no evidence that waiting pays:
                    # release at once (batches still form under load) and learn the cost.
                    fixed = self.cost.a_s if self.cost.ready else 0.0
                    reason, remaining = adaptive_decision(
                        self._queued_rows, max_rows, now - q[0].t_submit,
                        cfg.max_wait_ms / 1000.0, fixed, rate, idle_s=now - q[-1].t_submit)
                else:
                    reason, remaining = release_decision(
                        cfg, max_rows, self._queued_rows, q[0].t_submit, clock(),
                        self._window_start)
                if reason is not None:
                    break
                if remaining > _EARLY_WAKE_S:
                    self._want_rows = max_rows
                    self._sleeping = True
                    self._cv.wait(remaining - _EARLY_WAKE_S)
                    self._sleeping = False
                else:
                    # A timed wait overshoots by 0.1-0.2 ms; for the last stretch yield the
                    # lock and the GIL in a short loop instead, so deadlines are kept closely.
                    self._lock.release()
                    try:
                        time.sleep(0)
                    finally:
                        self._lock.acquire()
            batch = []
            rows = 0
            while q:
                r = q[0]
                if batch and rows + r.rows > max_rows:
                    break
                q.popleft()
                batch.append(r)
                rows += r.rows
                if rows >= max_rows:
                    break
            self._queued_rows -= rows
            self._in_flight = batch
            return batch, reason

    def _execute(self, batch: list[_Request], reason: str) -> None:
        now = self._clock()
        live = []
        timed_out = []
        slo_ms = self._config.latency_slo_ms
        shed_after = batch_cost_s = None
        if slo_ms is not None and self.cost.ready:
            # A request that has waited this long cannot finish within the SLO.
            batch_cost_s = self.cost.predict(sum(r.rows for r in batch))
            shed_after = slo_ms / 1000.0 - batch_cost_s
        shed = []
        for r in batch:
            if now > r.deadline:
                timed_out.append(r)
                continue
            if shed_after is not None and now - r.t_submit > shed_after:
                shed.append(r)
                continue
            try:
                if r.future.set_running_or_notify_cancel():
                    live.append(r)
            except RuntimeError:  # already failed (by the watchdog or close): skip it
                pass
        failed: dict[str, list[str]] = {}
        for r in timed_out:
            msg = self._queue_timeout_message(r, now)
            if not r.future.done():
                _fail(r, RequestTimeoutError(msg))
                failed.setdefault("RequestTimeoutError", []).append(msg)
        for r in shed:
            msg = (f"request to model {self.name!r} was shed: it had waited "
                   f"{(now - r.t_submit) * 1000:.1f} ms and its batch needs about "
                   f"{batch_cost_s * 1000:.1f} ms, so it cannot finish within "
                   f"latency_slo_ms={slo_ms:g}; lower the load or relax the SLO")
            if not r.future.done():
                _fail(r, SLOShedError(msg))
                failed.setdefault("SLOShedError", []).append(msg)
        depth = len(self._queue)
        if not live:
            if failed:
                self.metrics.record_batch(0, reason, 0.0, (), failed, depth)
            self._after_flush()
            return
        self._run_batch(live, reason, failed, depth)
        self._after_flush()

    def _after_flush(self) -> None:
        self._window_start = self._clock()

    def _run_batch(self, live: list[_Request], reason: str,
                   failed: dict[str, list[str]], depth: int) -> None:
        if len(live) == 1:
            arrays = live[0].arrays
            rows = live[0].rows
        else:
            n_inputs = len(live[0].arrays)
            try:
                arrays = [np.concatenate([r.arrays[i] for r in live]) for i in range(n_inputs)]
            except ValueError:
                # Requests differ in a dynamic non-batch dim: serve them one by one.
                self._run_each(live, reason, failed, depth)
                return
            rows = sum(r.rows for r in live)
        batch_id = next(self._batch_ids)
        t0 = self._clock()
        try:
            outs = self._run(arrays)
            t1 = self._clock()
            if len(live) > 1:
                for name, out in zip(self._output_names, outs):
                    if len(out) != rows:
                        raise _SplitError(f"output {name!r} has {len(out)} rows for a batch "
                                          f"of {rows} rows")
        except Exception as err:
            if len(live) > 1:
                log.info("batcher %s: batch %d failed (%s); re-running its %d requests alone",
                         self.name, batch_id, err, len(live))
                self._run_each(live, reason, failed, depth)
                return
            msg = _run_error_message(self.name, err)
            _fail(live[0], InferenceError(msg))
            failed.setdefault("InferenceError", []).append(msg)
            self.metrics.record_batch(rows, reason, self._clock() - t0, (), failed, depth)
            return
        self.cost.observe(rows, t1 - t0)
        # The lower envelope of recent run times: a run's measured time includes waiting for
        # the GIL afterwards, which says nothing about how much work a run can hide.
        self._run_floor_s = floor = min(t1 - t0, self._run_floor_s * 1.05)
        if self._queue and floor > len(live) * _COMPLETE_COST_S:
            # More work is waiting and a run is long enough to hide this batch's completion
            # (split, resolve, record): hand that to the completer thread and start the next
            # batch, so the Python work runs while ONNX Runtime computes (it releases the
            # GIL). On a cheap model the hand-off itself (a third thread contending for the
            # GIL) costs more than it hides, so completion stays inline.
            self._completions.put((live, outs, t0, t1, batch_id, rows, reason, failed, depth))
        else:
            self._complete(live, outs, t0, t1, batch_id, rows, reason, failed, depth)

    def _complete(self, live: list[_Request], outs: Sequence[Any], t0: float, t1: float,
                  batch_id: int, rows: int, reason: str, failed: dict[str, list[str]],
                  depth: int) -> None:
        """Give each request its rows (views into the batch outputs) and record metrics."""
        compute_s = t1 - t0
        compute_ms = compute_s * 1000.0
        names = self._output_names
        model = self.name
        queue_s = []
        if len(live) == 1:
            r = live[0]
            q = t0 - r.t_submit
            if r.sink is not None and not r.future.done():
                r.sink.record_batch(rows, reason, compute_s, (q,))
            try:
                r.future.set_result(Prediction(dict(zip(names, outs)), model, batch_id, rows,
                                               reason, q * 1000.0, compute_ms,
                                               (t1 - r.t_submit) * 1000.0, rows, r.arm))
                queue_s.append(q)
            except InvalidStateError:  # failed meanwhile (past its timeout, or close())
                pass
        else:
            start = 0
            append = queue_s.append
            for r in live:
                stop = start + r.rows
                q = t0 - r.t_submit
                if r.sink is not None and not r.future.done():
                    r.sink.record_batch(rows, reason, compute_s, (q,))
                try:
                    r.future.set_result(Prediction(
                        {n: o[start:stop] for n, o in zip(names, outs)}, model, batch_id,
                        rows, reason, q * 1000.0, compute_ms, (t1 - r.t_submit) * 1000.0,
                        r.rows, r.arm))
                    append(q)
                except InvalidStateError:  # failed meanwhile (past its timeout, or close())
                    pass
                start = stop
        self.metrics.record_batch(rows, reason, compute_s, queue_s, failed, depth)

    def _completer_loop(self) -> None:
        while True:
            job = self._completions.get()
            if job is None:
                return
            try:
                self._complete(*job)
            except BaseException as err:  # never leave a future pending
                self.loop_errors += 1
                log.exception("batcher %s: unexpected error completing a batch", self.name)
                failure = InferenceError(f"internal error while serving model {self.name!r}: "
                                         f"{type(err).__name__}: {err}")
                for r in job[0]:
                    _fail(r, failure)

    def _run_each(self, live: list[_Request], reason: str, failed: dict[str, list[str]],
                  depth: int) -> None:
        """Re-run requests alone after their batch failed, so only a bad request fails."""
        first = True
        for r in live:
            self._run_batch([r], "retry" if len(live) > 1 else reason,
                            failed if first else {}, depth)
            first = False


def release_decision(cfg: BatchConfig, max_rows: int, queued_rows: int, oldest_t: float,
                     now: float, window_start: float) -> tuple[str | None, float]:
    """Whether the forming batch goes now: ``(reason, 0)`` or ``(None, seconds to wait)``.

    Pure, so the policies are tested without threads or clocks.

    >>> cfg = BatchConfig(max_batch_size=8, max_wait_ms=10)
    >>> release_decision(cfg, 8, 3, oldest_t=1.000, now=1.004, window_start=0.0)
    (None, 0.006000000000000005)
    >>> release_decision(cfg, 8, 8, oldest_t=1.000, now=1.004, window_start=0.0)
    ('full', 0.0)
    """
    if queued_rows >= max_rows:
        return "full", 0.0
    wait_s = cfg.max_wait_ms / 1000.0
    if cfg.policy == "deadline":
        deadline = oldest_t + wait_s
    else:
        # Free-running windows of wait_s from the end of the last flush: the first request
        # waits for the end of the window it arrived in (the seed design).
        k = max(1, math.ceil((oldest_t - window_start) / wait_s)) if wait_s > 0 else 0
        deadline = window_start + k * wait_s
    remaining = deadline - now
    if remaining <= 0:
        return "deadline", 0.0
    return None, remaining


class _SplitError(Exception):
    pass


def _run_error_message(model: str, err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    text = " ".join(text.split())
    if len(text) > 500:
        text = text[:500] + "..."
    return f"model {model!r} failed on this request: {text}"
