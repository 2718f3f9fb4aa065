"""The executor of one model: run a released batch, split its outputs, settle its requests.

Runs on the collector thread. Per batch: drop requests already past their deadline (or,
with an SLO, too late to make it), concatenate each input once, run the model once, check
that every output has the batch's rows, and settle each request with *views* of its rows
through the :class:`~core.batching.Ledger`. A batch that raises (or whose outputs cannot be
split) is re-run request by request, so only a bad request fails.

When runs are long enough to hide it, settling is handed to a second thread (the
completer) so that Python work overlaps the next ``session.run`` (which releases the GIL).

Example:
    >>> ex = Executor("m", run, ["y"], ledger, queue)
    >>> ex.execute(batch, "full")      # every request of ``batch`` is settled
"""

from __future__ import annotations

import itertools
import logging
import math
import queue as _queue
from typing import Any, Callable, Sequence

import numpy as np
import onnxruntime as ort

from .admission import AdmissionQueue
from core.policies import choose_within_slo
from core.errors import InferenceError, RequestTimeoutError, SLOShedError
from .runerrors import run_error
from .settle import Ledger, Request

__all__ = ["Executor", "RunFn", "Slot", "queue_timeout_message"]

log = logging.getLogger("batchlab.executor")

#: Runs one batch: input arrays in declared order -> outputs in ``output_names`` order.
RunFn = Callable[[Sequence[np.ndarray]], Sequence[Any]]

# About what settling one request costs (Prediction, views, set_result, metrics); see the
# hand-off in Executor._run and docs/benchmarks.md.
_COMPLETE_COST_S = 5e-6


def queue_timeout_message(model: str, waited_s: float, timeout_s: float | None = None,
                          max_wait_s: float | None = None, stuck_s: float | None = None) -> str:
    """Why a request timed out in the queue, and what to do. ``stuck_s``: seconds since a
    run of the model was stopped (none of its callers waiting) that still goes on."""
    limit = f" of {timeout_s * 1000:g} ms" if timeout_s is not None else ""
    if stuck_s is not None:   # (not the load: "lower the load" sent a user the wrong way)
        return (f"request to model {model!r} waited {waited_s * 1000:.1f} ms in the queue, "
                f"past its timeout{limit}, behind a run that was stopped {stuck_s:.1f} s ago "
                "(none of its callers was waiting) and still goes on: ONNX Runtime stops a "
                "run between operators, and one of this model's operators is running long on "
                "the inputs that started it; it ends when that operator does (restart the "
                "engine to get its core back sooner)")
    if timeout_s is not None and max_wait_s is not None and timeout_s <= max_wait_s:
        # (no load needed: a request alone waits max_wait for others to join it)
        return (f"request to model {model!r} waited {waited_s * 1000:.1f} ms in the queue, "
                f"past its timeout{limit}, which is not above max_wait_ms="
                f"{max_wait_s * 1000:g} (a batch waits up to that long for requests to fill "
                "it); give a timeout_ms above max_wait_ms, or lower max_wait_ms")
    return (f"request to model {model!r} waited {waited_s * 1000:.1f} ms in the queue, past "
            f"its timeout{limit}; raise timeout_ms or lower the load")


class Executor:
    """Runs batches of one model and settles their requests (see the module docstring)."""

    def __init__(self, name: str, run: RunFn, output_names: Sequence[str], ledger: Ledger,
                 queue: AdmissionQueue, clock: Callable[[], float]) -> None:
        self.name = name
        self.run_fn = run
        self.output_names = tuple(output_names)
        self.ledger = ledger
        ledger.row_runs = bool(getattr(run, "by_rows", False))  # ModelRunner's row mode
        self.queue = queue
        self._clock = clock
        # (shared with the version a hot swap replaces: one model, one series of batch ids)
        self.batch_ids = itertools.count(1)
        self._run_floor_s = math.inf  # lower envelope of run times (see _run)
        # One slot per runner thread (``BatchConfig.instances``), by index: the batch it
        # is executing and the run it can stop (see Slot).
        self.slots: dict[int, Slot] = {}
        self.completions: _queue.SimpleQueue = _queue.SimpleQueue()
        self.loop_errors = 0

    def slot(self, index: int = 0) -> Slot:
        """The state of runner ``index`` (made on first use)."""
        slot = self.slots.get(index)
        if slot is None:
            slot = self.slots.setdefault(index, Slot(index))
        return slot

    @property
    def current(self) -> tuple[ort.RunOptions, list[Request]] | None:
        """A stoppable run going on now (the first found), or None."""
        for s in list(self.slots.values()):
            if s.current is not None:
                return s.current
        return None

    # -- one released batch -------------------------------------------------------------
    def execute(self, batch: list[Request], reason: str, slot: Slot | None = None) -> None:
        slot = slot or self.slot(0)
        slot.in_flight = batch
        try:
            self._execute(batch, reason, slot)
        finally:
            self.queue.flushed()
            slot.in_flight = []

    def _execute(self, batch: list[Request], reason: str, slot: Slot) -> None:
        now = self._clock()
        q = self.queue
        cfg = q.config
        shed_after = q.policy.shed_after_s(q, sum(r._rows for r in batch), cfg.latency_slo_ms)
        pending = self.ledger.live
        live = batch
        raised: list[BaseException] = []
        if (shed_after is not None
                or any(now > r._deadline or r not in pending for r in batch)):
            live = []
            for r in batch:
                if r not in pending:  # cancelled or timed out since it was taken: skip it
                    continue
                if now > r._deadline:
                    self._fail_one(r, RequestTimeoutError(
                        queue_timeout_message(self.name, now - r._t_submit,
                                              r._deadline - r._t_submit,
                                              cfg.max_wait_ms / 1000.0)), raised)
                else:
                    live.append(r)
            if shed_after is not None and live:
                live, back = self._within_slo(live, now, cfg.latency_slo_ms, raised)
                if back:   # queued again: out of the collector's batch, which it fails
                    gone = set(back)   # if this raises (a caller's done-callback)
                    batch[:] = [r for r in batch if r not in gone]
        if live:
            self._run(live, reason, slot)
        if raised:   # (a caller's done-callback: after the rest of its batch was served)
            raise raised[0]

    def _fail_one(self, r: Request, err: BaseException, raised: list[BaseException]) -> None:
        """Fail ``r`` with ``err``; what its caller's done-callback raises (SystemExit) is
        kept in ``raised``, so that the others of its batch still run."""
        try:
            self.ledger.fail([r], err, notify_queue=False)
        except BaseException as e:  # noqa: BLE001 - raised again by the caller
            raised.append(e)

    def _within_slo(self, live: list[Request], now: float, slo_ms: float,
                    raised: list[BaseException]) -> tuple[list[Request], list[Request]]:
        """The requests that run now under a latency SLO: a smaller batch when the whole
        one would be late, the rest back to the queue (returned second), only the hopeless
        ones shed."""
        q = self.queue
        slo_s = slo_ms / 1000.0

        def predict_s(n: int) -> float:
            return slo_s - q.policy.shed_after_s(q, n, slo_ms)

        run, back, shed = choose_within_slo([now - r._t_submit for r in live],
                                            [r._rows for r in live], predict_s, slo_s)
        for i in shed:
            r = live[i]
            self._fail_one(r, SLOShedError(
                f"request to model {self.name!r} was shed: it had waited "
                f"{(now - r._t_submit) * 1000:.1f} ms and even alone it needs about "
                f"{predict_s(r._rows) * 1000:.1f} ms, so it cannot finish within "
                f"latency_slo_ms={slo_ms:g}; lower the load or relax the SLO"), raised)
        queued = [live[i] for i in back]
        if queued:
            q.put_back(queued)
        return [live[i] for i in run], queued

    def _run(self, live: list[Request], reason: str, slot: Slot, spent: float = 0.0) -> None:
        """Run ``live`` as one batch and settle it (``spent``: for a retry, the seconds its
        requests spent in the failed batch: theirs in compute, not in the queue)."""
        # The queue as this batch left it, the batch included: what was waiting (after
        # the pop it is almost always 0 at moderate load, and the chart said so).
        depth = self.queue.depth() + len(live)
        if len(live) == 1:
            arrays = live[0]._arrays
            rows = live[0]._rows
        else:
            try:
                arrays = [np.concatenate([r._arrays[i] for r in live])
                          for i in range(len(live[0]._arrays))]
            except ValueError:
                # Requests differ in a dynamic non-batch dim: serve them one by one.
                self._run_each(live, reason, slot)
                return
            rows = sum(r._rows for r in live)
        batch_id = next(self.batch_ids)
        terminable = getattr(self.run_fn, "terminable", False)
        t0 = self._clock()
        q = self.queue
        prev = slot.prev
        if (reason == "full" and prev is not None and prev[0] == "full"
                and len(q.runs) == 0):
            # Back to back under a backlog, nothing else running: the time since this
            # runner's last start is a whole cycle.
            q.cost.observe_cycle(prev[1], t0 - prev[2])
        else:
            q.cost.relax()
        slot.prev = (reason, rows, t0)
        q.run_started(slot.index, rows, t0)
        try:
            if terminable:
                ro = ort.RunOptions()
                slot.current = (ro, live)
                try:
                    outs = self.run_fn(arrays, ro)
                finally:
                    slot.current = slot.stopped = None
                    q.run_ended(slot.index)
                if ro.terminate:
                    raise _Stopped()
            else:
                try:
                    outs = self.run_fn(arrays)
                finally:
                    q.run_ended(slot.index)
            t1 = self._clock()
            if len(live) > 1:
                for name, out in zip(self.output_names, outs):
                    if len(out) != rows:
                        raise _SplitError(f"output {name!r} has {len(out)} rows for a batch "
                                          f"of {rows} rows")
        except _Stopped:
            return  # stopped because none of its requests was still waiting for it
        except Exception as err:
            if terminable and ro.terminate:
                return
            if len(live) > 1:
                log.info("executor %s: batch %d failed (%s); re-running its %d requests "
                         "alone", self.name, batch_id, err, len(live))
                # The failed run counts as a run (it was missing from the batches); its
                # requests' time in it is theirs in compute, not in the queue.
                row_runs = self.ledger.row_runs    # (a run of one row each: rows = runs)
                runs = getattr(self.run_fn, "rows_started", rows) if row_runs else 1
                failed_s = self._clock() - t0
                self.ledger.count_failed_run(live, runs if row_runs else rows, reason,
                                             failed_s, depth, runs)
                self._run_each(live, reason, slot, spent + failed_s)
                return
            ran = getattr(self.run_fn, "rows_started", rows) if self.ledger.row_runs else rows
            self.ledger.fail(live, run_error(self.name, err, rows=rows),
                             batch=(ran, reason, self._clock() - t0, depth),
                             notify_queue=False)
            return
        if q.cost.observe(rows, t1 - t0):
            with q.lock:  # not against a configure() half applied
                q.refresh_admit_bound()
        if q.policy.observes_batches:  # e.g. AIMD: did the run meet the objective?
            self._tell_policy(q.policy, rows, t1 - t0, reason == "full")
        # The lower envelope of recent run times: a run's measured time includes waiting for
        # the GIL afterwards, which says nothing about how much work a run can hide.
        self._run_floor_s = floor = min(t1 - t0, self._run_floor_s * 1.05)
        job = (live, outs, self.output_names, batch_id, rows, reason, t0, t1, depth, spent)
        if self.queue.depth() and floor > len(live) * _COMPLETE_COST_S:
            # More work is waiting and a run is long enough to hide this batch's settling:
            # hand that to the completer thread and start the next batch, so the Python
            # work runs while ONNX Runtime computes. On a cheap model the hand-off itself
            # (a third thread contending for the GIL) costs more than it hides.
            self.completions.put(job)
        else:
            self.ledger.succeed(*job)

    def _tell_policy(self, policy: Any, rows: int, latency_s: float, full: bool) -> None:
        try:
            policy.observe_batch(rows, latency_s, self.queue.config.latency_slo_ms,
                                 self.queue.max_rows, full=full)
        except Exception:  # a policy's bookkeeping must never lose a batch's answers
            log.exception("executor %s: policy %r failed to observe a batch", self.name,
                          getattr(policy, "name", policy))

    def _run_each(self, live: list[Request], reason: str, slot: Slot,
                  spent: float = 0.0) -> None:
        """Re-run requests alone after their batch failed (``spent`` seconds in it), so
        only a bad request fails."""
        pending = self.ledger.live
        for r in live:
            if r in pending:  # not one settled meanwhile (timed out, cancelled)
                self._run([r], "retry" if len(live) > 1 else reason, slot, spent)

    # -- the completer thread -------------------------------------------------------------
    def completer_loop(self, completions: _queue.SimpleQueue | None = None) -> None:
        """Settle batches handed over by ``_run`` until a ``None`` arrives (on
        ``completions``: the queue it was started for; a parked model's new completer has a
        new one)."""
        get = (completions or self.completions).get
        while True:
            job = get()
            if job is None:
                return
            try:
                self.ledger.succeed(*job)
            except BaseException as err:  # never leave a future pending
                self.loop_errors += 1
                log.exception("executor %s: unexpected error settling a batch", self.name)
                self.ledger.fail(job[0], InferenceError(
                    f"internal error while serving model {self.name!r}: "
                    f"{type(err).__name__}: {err}"), notify_queue=False)
            # Let go of the batch (its requests, its outputs) now, not when the next one
            # comes: the callers then hold the last references to their requests.
            job = None


    def stop_orphaned_run(self) -> bool:
        """Stop every current run none of whose requests is still live; True if any."""
        stopped = False
        live = self.ledger.live
        for slot in list(self.slots.values()):
            cur = slot.current
            if cur is None:
                continue
            ro, batch = cur
            if ro.terminate or any(r in live for r in batch):
                continue
            ro.terminate = True
            slot.stopped = (ro, self._clock())   # (with its run: a later run is not it)
            stopped = True
            log.warning("executor %s: stopped a run none of whose %d request(s) was still "
                        "waiting for it", self.name, len(batch))
        return stopped

    def stuck_s(self) -> float | None:
        """Seconds since a run was stopped that still goes on (the longest), or None."""
        now, since = self._clock(), None
        for slot in list(self.slots.values()):
            stopped, current = slot.stopped, slot.current
            if stopped is not None and current is not None and current[0] is stopped[0]:
                since = max(since or 0.0, now - stopped[1])
        return since


class Slot:
    """What one runner thread is doing: the batch it executes (``in_flight``, failed by
    the supervisor if the thread dies), the run it can stop (``current``: ONNX Runtime's
    RunOptions and the run's requests), the run it stopped and when (``stopped``) and its
    last run (``prev``: reason, rows, start)."""

    __slots__ = ("index", "in_flight", "current", "stopped", "prev")

    def __init__(self, index: int) -> None:
        self.index = index
        self.in_flight: list[Request] = []
        self.current: tuple[ort.RunOptions, list[Request]] | None = None
        self.stopped: tuple[ort.RunOptions, float] | None = None
        self.prev: tuple[str, int, float] | None = None


class _SplitError(Exception):
    pass


class _Stopped(Exception):
    pass
