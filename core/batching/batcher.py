"""Dynamic batching for one model: the rooms behind ``Engine.submit``.

A :class:`Batcher` ties together, for one model:

* the **admission queue** (:mod:`core.batching.admission`): bounded FIFO, the hot path of
  ``submit``, and the release policy (:mod:`core.policies`) that says when a batch leaves;
* the **executor** (:mod:`core.batching.executor`): runs a batch once, splits its outputs into each
  request's rows, re-runs a failed batch request by request;
* the **supervisor** (:mod:`core.batching.supervisor`): timeouts in deadline order, collector
  restart;
* the **ledger** (:mod:`core.batching.settle`): the one way a request ends. It records the request
  in the metrics (and its A/B arm's) before the future resolves, exactly once, on every
  path: batch completion, retry alone, timeout, SLO shedding, cancel, close, restart.

Threads (named after the model, daemon, stopped by ``close()``): the collector
(``batcher-NAME``: wait for a batch, execute it), the completer (``batcher-NAME-done``:
settles batches when that can overlap the next run) and the supervisor
(``batcher-NAME-watch``). All three leave once the queue has been empty 30 s, and the next
request starts them again (:mod:`.parking`): an idle model holds no thread.

Policies (``deadline``, the Triton / TF Serving / Ray Serve rule, by default; ``fixed_window``,
``adaptive``, ``aimd``...) are switchable live with :meth:`Batcher.configure`, one module
each in ``core/policies/``, each described there.

Guarantees: a full queue refuses at once (:class:`OverloadedError`); a failing batch is
re-run request by request so only the bad request fails; ``close()`` drains every accepted
request, or fails it, and never leaves a future pending.

Example:
    >>> b = Batcher("double", run=lambda arrays: [arrays[0] * 2], output_names=["y"])
    >>> b.submit((np.ones((2, 3), np.float32),), rows=2).result().outputs["y"].shape
    (2, 3)
    >>> b.close()
"""

from __future__ import annotations

import logging
import queue as _queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Sequence

import numpy as np

from .admission import AdmissionQueue
from core.config import BatchConfig, check_timeout_ms
from core.errors import EngineClosedError, InferenceError, RequestTooLargeError
from .executor import Executor, RunFn
from .parking import PARK, weakly
from core.metrics import ModelMetrics, PriorityClasses
from .settle import Ledger, Request
from .supervisor import Supervisor

__all__ = ["Batcher", "RELEASE_REASONS", "REMOTE_REASON"]

log = logging.getLogger("batchlab.batcher")

#: The release reason of a remote model's request: its server batches, out of sight.
REMOTE_REASON = "remote"

#: Why a batch left the queue. ``retry``: a request re-run alone after its batch failed;
#: ``adaptive``: the adaptive policy judged waiting longer not worth it; ``remote``: sent
#: as it came to the server of a remote model, which batches it.
RELEASE_REASONS = ("full", "deadline", "drain", "retry", "adaptive", REMOTE_REASON)

_perf = time.perf_counter

# How long close() waits in total, past its deadline, for threads to leave a stopped run.
_JOIN_GRACE_S = 0.5


class Batcher:
    """Queue, executor, supervisor and ledger of one model (see the module docstring).

    ``run`` executes one batch; ``batchable=False`` makes every batch a single request
    (models with a fixed or absent batch axis). Outputs whose leading axis is not the
    batch's rows make the executor re-run the requests one by one.
    """

    def __init__(self, name: str, run: RunFn, output_names: Sequence[str],
                 config: BatchConfig | None = None, metrics: ModelMetrics | None = None,
                 batchable: bool = True, clock: Callable[[], float] = _perf,
                 start: bool = True, trace: Any = None) -> None:
        self.name = name
        self.batchable = batchable
        self.metrics = metrics or ModelMetrics()
        #: Metrics of the requests sent with a priority, per class (made on first use).
        self.classes = PriorityClasses(self.metrics._seconds)
        self._clock = clock
        self.ledger = Ledger(name, self.metrics, clock, on_dead=weakly(self._forget), trace=trace)
        self.queue = AdmissionQueue(name, self.ledger, config or BatchConfig(), batchable, clock)
        self.executor = Executor(name, run, output_names, self.ledger, self.queue, clock)
        self.supervisor = Supervisor(name, self.queue, self.ledger, self.executor, clock,
                                     weakly(self._dead_runners, []), weakly(self.restart_collector))
        # The runner threads (``config.instances`` of them), by index; runner 0 is "the
        # collector". Each waits for a batch, executes it, and waits again.
        self._runners: dict[int, threading.Thread] = {}
        self._runners_lock = threading.Lock()
        self._completer = threading.Thread(target=self.executor.completer_loop,
                                           name=f"batcher-{name}-done", daemon=True)
        self._close_lock = threading.Lock()
        self._started = False
        self._parked_runner: threading.Thread | None = None   # (the runner that parked)
        # Idle: the threads leave, and the next request brings them back (parking.py).
        self.queue.call_back(self._park, self._unpark)
        if start:
            self.start()

    def start(self) -> None:
        """Start the runner, completer and supervisor threads (done by the constructor
        unless ``start=False``)."""
        self._started = True
        self._start_runners()
        self._completer.start()
        self.supervisor.start()

    def _start_runners(self) -> None:
        """Start a runner for each index below ``instances`` that has none alive."""
        with self._runners_lock:
            for i in range(self.queue.instances):
                t = self._runners.get(i)
                if t is None or not t.is_alive():
                    t = self._runners[i] = self._new_collector(i)
                    t.start()

    @property
    def _thread(self) -> threading.Thread | None:
        """Runner 0, "the collector"."""
        return self._runners.get(0)

    # -- public API ----------------------------------------------------------------
    @property
    def config(self) -> BatchConfig:
        return self.queue.config

    @property
    def closed(self) -> bool:
        return self.queue.closed

    @property
    def cost(self):
        """The learned batch cost t(n) = a + b*n (:class:`core.policies.estimators.CostEstimator`)."""
        return self.queue.cost

    @property
    def rate(self):
        """The learned arrival rate (:class:`core.policies.estimators.RateEstimator`)."""
        return self.queue.rate

    def learned_cost(self) -> dict[str, float] | None:
        """What this batcher has learned online: t(n) = a + b*n (ms), the arrival rate (rows/s;
        learned by the adaptive policy only: None under another, where it said 0.0), and
        whether a and b are separately known (``identified``: sizes 4x apart were timed;
        ``min_rows``/``max_rows`` behind the line); None before a batch was timed."""
        cost = (q := self.queue).cost
        if not cost.ready:
            return None
        return {"a_ms": cost.a_s * 1000.0, "b_ms": cost.b_s * 1000.0, "identified": cost.identified,
                "rate_rps": q.rate.rate_rps if q.policy.name == "adaptive" else None,
                "min_rows": cost.sizes[0], "max_rows": cost.sizes[1]}

    def policy_state(self) -> dict[str, Any] | None:
        """What the release policy keeps live (:meth:`ReleasePolicy.state`)."""
        return self.queue.policy.state(self.queue.config)

    @property
    def restarts(self) -> int:
        return self.supervisor.restarts

    @property
    def loop_errors(self) -> int:
        return self.executor.loop_errors

    @property
    def watch_interval_s(self) -> float:
        return self.supervisor.watch_interval_s

    @watch_interval_s.setter
    def watch_interval_s(self, value: float) -> None:
        self.supervisor.watch_interval_s = value

    def configure(self, config: BatchConfig) -> None:
        """Swap the configuration live; queued requests stay queued and keep their order.
        More ``instances`` start runners now; fewer let the extra ones leave after their
        current batch."""
        self.queue.configure(config)
        with self.queue.lock:
            wake = self.queue.unpark()
        if wake:   # parked: its completer and supervisor come back with the runners
            self._unpark()
        if self._started and not self.queue.closed:
            self._start_runners()

    def _park(self) -> None:
        """(Queue lock held; its runner is leaving.) The completer and the supervisor
        end too: an idle model holds no thread."""
        self.executor.completions.put(None)
        self.supervisor.park()
        self._parked_runner = threading.current_thread()

    def _unpark(self) -> None:
        """The parked model's first request (or a new configuration): a runner, a
        completer (on a queue of its own: the old one may still be ending on the old
        queue) and a supervisor again."""
        with self._runners_lock:
            if not self._started:
                return
            ex = self.executor
            ex.completions = done = _queue.SimpleQueue()
            self._completer = threading.Thread(target=ex.completer_loop, args=(done,),
                                               name=f"batcher-{self.name}-done", daemon=True)
            self._completer.start()
            self.supervisor.restart()
            # (runner 0 may still be ending: its entry is replaced, never waited for; one
            # a configure() started meanwhile is kept: two ran batches at once, an adversary)
            t = self._runners.get(0)
            if t is None or not t.is_alive() or t is self._parked_runner:
                self._runners[0] = t = self._new_collector(0)
                t.start()

    def queue_depth(self) -> int:
        """Requests waiting (not yet in a running batch)."""
        return self.queue.depth()

    def pending(self) -> int:
        """Requests accepted and not yet settled (queued or running)."""
        return self.ledger.pending()

    def submit(self, arrays: Sequence[np.ndarray], rows: int,
               timeout_ms: float | None = None, arm: str | None = None,
               sink: tuple[ModelMetrics, ...] | None = None,
               priority: int | None = None, check: Any = None) -> Future:
        """Queue one validated request; returns a Future of :class:`Prediction`.
        ``priority=1``: the high class (served first; :meth:`AdmissionQueue.put`); ``check``:
        :mod:`.checks`. Raises at once (nothing queued): :class:`EngineClosedError` after
        ``close()``, :class:`RequestTooLargeError` for more rows than ``max_batch_size``,
        :class:`OverloadedError` when the queue holds ``max_queue`` requests."""
        q = self.queue
        if rows > q.max_request_rows:
            raise RequestTooLargeError(
                f"request has {rows} rows but model {self.name!r} takes at most "
                f"max_batch_size={q.config.max_batch_size} rows per batch; split it, or "
                "raise max_batch_size (engine.configure(), or the Batching page)")
        if isinstance(sink, ModelMetrics):
            sink = (sink,)
        if timeout_ms is not None:
            check_timeout_ms(timeout_ms)
        if priority is not None:
            sink = self.classes.sink(priority, sink)
        now = self._clock()
        default = timeout_ms is None  # the configured timeout: put() sets the deadline
        req = Request(self.ledger, arrays, rows, now,
                      now if default else now + timeout_ms / 1000.0, arm, sink)
        if check is not None:
            req._check = check
            self.ledger.checking = True
        q.put(req, default, priority == 1)
        return req

    def expire_overdue(self) -> int:
        """Fail queued and running requests whose timeout has passed; returns how many."""
        return self.supervisor.expire_overdue()

    # -- shutdown --------------------------------------------------------------------
    def begin_close(self) -> None:
        """Stop accepting; the collector drains what is queued. Returns at once."""
        self.queue.close()

    def finish_close(self, deadline: float | None) -> int:
        """Wait (until ``deadline``, a ``time.monotonic()`` value; None: for ever) for the
        queue to drain, then fail whatever is still pending; returns how many were failed.

        After this returns no request of this batcher is pending.
        """
        self.wait_drained(deadline)
        failed = self.abort()
        self.join_threads(time.monotonic() + _JOIN_GRACE_S)
        return failed

    def _own_thread(self) -> bool:
        me = threading.current_thread()
        return me is self._completer or any(me is t for t in list(self._runners.values()))

    def wait_drained(self, deadline: float | None) -> None:
        """(Close, phase 1.) Wait until the collector has drained the queue and the
        completer has settled what it was handed, or until ``deadline``."""
        if not self._started or self._own_thread():
            return  # close() from a done-callback: the collector cannot wait for itself

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        for t in list(self._runners.values()):
            t.join(left())
        if not any(t.is_alive() for t in list(self._runners.values())):
            # Every runner has drained the queue: the completer ends after what it was
            # handed.
            self.executor.completions.put(None)
            self._completer.join(left())

    def abort(self) -> int:
        """(Close, phase 2.) Fail every request still pending, stop a run nobody waits for
        (so its thread leaves ONNX Runtime and the CPU comes back) and release the
        completer. Returns how many requests were failed."""
        if self._own_thread():
            why = ("close() was called from the model's own thread (a done-callback), "
                   "which cannot wait for the queue to drain")
        else:
            why = "the model did not finish its queue within the close timeout"
        failed = self.ledger.fail_all(EngineClosedError(
            f"model {self.name!r} was closed before this request finished ({why})"))
        self.executor.stop_orphaned_run()
        self.executor.completions.put(None)  # the completer ends once its jobs are done
        return failed

    def join_threads(self, until: float) -> None:
        """(Close, phase 3.) Give the threads until ``until`` to end (a stopped run takes
        milliseconds to leave ONNX Runtime), then stop the supervisor."""
        me = threading.current_thread()
        for t in [*self._runners.values(), self._completer]:
            if self._started and t.is_alive() and t is not me:
                t.join(max(0.0, until - time.monotonic()))
        self.supervisor.stop(max(0.0, until - time.monotonic()))

    def close(self, timeout_s: float | None = 10.0) -> None:
        """Stop accepting, run every queued request, stop the threads.

        Requests still queued or running after ``timeout_s`` (a hung model) are failed with
        :class:`EngineClosedError`; no future is left pending.
        """
        self.begin_close()
        self.finish_close(None if timeout_s is None else time.monotonic() + timeout_s)

    # -- runners -------------------------------------------------------------------
    def _new_collector(self, index: int = 0) -> threading.Thread:
        name = f"batcher-{self.name}" + (f"-{index}" if index else "")
        return threading.Thread(target=self._loop, args=(index,), name=name, daemon=True)

    def _dead_runners(self) -> list[int]:
        """Runners below ``instances`` whose thread died (not retired, not drained)."""
        if not self._started:
            return []
        with self._runners_lock:
            return [i for i in range(self.queue.instances)
                    if (t := self._runners.get(i)) is not None
                    and (not t.is_alive() or i in self.queue.dying)]

    def restart_collector(self, index: int = 0) -> None:
        """Start a new thread for runner ``index`` (the supervisor does this when one
        died)."""
        with self._runners_lock:
            self.queue.dying.discard(index)
            self._runners[index] = t = self._new_collector(index)
            t.start()
        if not self._completer.is_alive():
            self._completer = threading.Thread(target=self.executor.completer_loop,
                                               name=f"batcher-{self.name}-done", daemon=True)
            self._completer.start()

    def _loop(self, index: int = 0) -> None:
        try:
            self._serve(index)
        except BaseException:   # dying: the supervisor, maybe asleep, restarts it now
            with self.queue.lock:
                self.queue.dying.add(index)
                self.queue.sup_cv.notify_all()
            raise

    def _serve(self, index: int) -> None:
        while True:
            reason = self._collect(index)
            with self._runners_lock:
                q = self.queue
                if reason == PARK:
                    if self._runners.get(index) is threading.current_thread():
                        del self._runners[index]   # (unless a put replaced it already)
                    return
                if not q.closed and index < q.instances:
                    continue  # retired, but instances was raised again meanwhile
                if not q.closed and self._runners.get(index) is threading.current_thread():
                    del self._runners[index]  # retired: a later raise starts a new one
                return

    def _collect(self, index: int = 0) -> str:
        execute = self.executor.execute
        next_batch = self.queue.next_batch
        slot = self.executor.slot(index)
        while True:
            batch: list[Request] = []
            try:
                batch, reason = next_batch(index)
                if not batch:
                    return reason  # drained at close, retired (fewer instances), or parked
                execute(batch, reason, slot)
            except BaseException as err:  # one bad batch must never kill the collector
                self.executor.loop_errors += 1
                log.exception("batcher %s: unexpected error in collector loop", self.name)
                self.ledger.fail(batch, InferenceError(
                    f"internal error while serving model {self.name!r}: "
                    f"{type(err).__name__}: {err}"), notify_queue=False)

    def _forget(self, r: Request) -> None:
        """``r`` ended before its batch did (cancelled, timed out, failed): out of the queue,
        and a run left with nobody waiting for it (its callers gone) is stopped."""
        self.queue.forget(r)
        self.executor.stop_orphaned_run()

    # Kept for code that patched the run function of a live batcher (tests, notebooks).
    @property
    def _run(self) -> RunFn:
        return self.executor.run_fn

    @_run.setter
    def _run(self, fn: RunFn) -> None:
        self.executor.run_fn = fn
