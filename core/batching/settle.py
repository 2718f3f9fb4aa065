"""Settlement: the one way a request ends.

Every accepted request is a :class:`Request` (a ``concurrent.futures.Future`` that also
carries its inputs and timestamps) registered in its model's :class:`Ledger`. Whatever
ends it — its batch completing, a re-run alone, a timeout, SLO shedding, the caller
cancelling, ``close()``, a collector restart — goes through the ledger, which

1. **claims** the request (an atomic ``dict.pop`` on the set of live requests, so of two
   threads racing to end one request exactly one wins and the other does nothing);
2. **records** it in the model's metrics and, for A/B traffic, in its arm's metrics;
3. only then **resolves** the future.

So a request is counted exactly once, and once ``fut.result()`` returns, ``metrics()``
already includes it. A request that is never claimed by anyone else is failed by
``Ledger.fail_all`` at close: after ``close()`` nothing is pending.

Example:
    >>> ledger = Ledger("m", ModelMetrics())
    >>> r = Request(ledger, (np.ones((1, 2)),), rows=1, t_submit=0.0, deadline=1.0)
    >>> ledger.admit(r)
    >>> ledger.fail([r], RequestTimeoutError("too slow"))
    1
    >>> r.exception()
    RequestTimeoutError('too slow')
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

from core.metrics import ModelMetrics
from .checks import drop_late, errors_by_type, run_checks
from .prediction import Prediction
from .request import (DEAD, DROPPED, QUEUED, TAKEN, Request, _reject_each,
                      _resolve_leftovers, _set_result)
from .sinks import record_failed_run, record_sinks

__all__ = ["Prediction", "Request", "Ledger", "QUEUED", "TAKEN", "DROPPED", "DEAD"]


class Ledger:
    """The live requests of one model, and the only code that resolves their futures.

    ``on_dead(request)`` is called (outside any lock) after a request that may still be in
    the queue was settled by someone other than the executor, so the queue can stop
    counting it.
    """

    def __init__(self, model: str, metrics: ModelMetrics,
                 clock: Callable[[], float] = time.perf_counter,
                 on_dead: Callable[[Request], None] | None = None,
                 trace: Any = None) -> None:
        self.model = model
        self.metrics = metrics
        self.trace = trace  # core.metrics.Trace: each ending, for the batch timeline
        self._clock = clock
        self._on_dead = on_dead
        # Live requests. ``dict.pop`` is atomic, so claiming needs no lock.
        self.live: dict[Request, bool] = {}
        #: Whether any request of this model ever came with a ``check`` (the batches of a
        #: model without one never look).
        self.checking = False
        #: The model's batch axis is fixed at 1: a batch of n rows ran as n runs of one
        #: row, and is counted (metrics, trace, each answer's ``batch_rows``) as such.
        self.row_runs = False

    def admit(self, r: Request) -> None:
        self.live[r] = True

    def claim(self, r: Request) -> bool:
        """Take the right to settle ``r``; True for exactly one caller."""
        return self.live.pop(r, False)

    def pending(self) -> int:
        return len(self.live)

    # -- success -----------------------------------------------------------------------
    def succeed(self, batch: Sequence[Request], outs: Sequence[Any], names: Sequence[str],
                batch_id: int, rows: int, reason: str, t0: float, t1: float,
                depth: int, spent: float = 0.0) -> None:
        """Settle a batch that ran: give each live request its rows, record, resolve.
        (``spent``: a retry's seconds in the failed batch before it: its requests'
        compute, not their queue wait, and not this run's time.)

        The predictions are built before anything is claimed, so if the outputs cannot be
        split (a broken run function) this raises with every request still live, for the
        caller to fail them.
        """
        compute_s = t1 - t0 + spent
        compute_ms = compute_s * 1000.0
        model = self.model
        runs = 1
        if self.row_runs and rows > 1:
            runs, rows = rows, 1
        if len(batch) == 1:
            r = batch[0]
            built = [(r, dict(zip(names, outs)), r._rows)]
        elif len(names) == 1:  # the common case: one output, one dict entry per request
            name, out = names[0], outs[0]
            built = []
            start = 0
            for r in batch:
                stop = start + r._rows
                built.append((r, {name: out[start:stop]}, r._rows))
                start = stop
        else:
            built = []
            start = 0
            for r in batch:
                stop = start + r._rows
                built.append((r, {n: o[start:stop] for n, o in zip(names, outs)}, r._rows))
                start = stop
        pop = self.live.pop
        won = [b for b in built if pop(b[0], False)]
        refused: list[tuple[Request, BaseException]] = []
        try:
            t_done = self._clock()
            queue_s = [t0 - spent - r._t_submit for r, _, _ in won]
            total_s = [t_done - r._t_submit for r, _, _ in won]
            if self.checking:   # answers a request's check refuses leave won, with reasons
                refused = run_checks(model, won, queue_s, total_s, batch_id, rows, reason,
                                     compute_ms)
            if won and min(r._deadline for r, _, _ in won) < t_done:   # (answered too late)
                refused += drop_late(model, won, queue_s, total_s, t_done, rows, compute_ms)
            ok_rows = (rows * runs if len(won) == len(batch)
                       else sum(b[2] for b in won))   # (some were settled or refused)
            self.metrics.record_batch(rows * runs, reason, compute_s, queue_s,
                                      errors_by_type(refused) if refused else None, depth,
                                      total_s=total_s, runs=runs,
                                      run_s=t1 - t0 if spent else None, ok_rows=ok_rows)
            raised = None
            if refused:
                try:
                    self._fail_refused(refused, t0, t_done, t1, batch_id, rows, reason)
                except BaseException as err:   # (a callback's: raised once the rest end)
                    raised = err
            if any(r._sink is not None for r, _, _ in won):
                record_sinks([r for r, _, _ in won], rows * runs, reason, compute_s,
                             queue_s, total_s, runs)
            if self.trace is not None:
                self.trace.record_batch([r for r, _, _ in won], t0, t_done, batch_id, rows,
                                        reason, True, ran_until=t1)
            for (r, out, n), q, tot in zip(won, queue_s, total_s):
                try:
                    _set_result(r, Prediction(out, model, batch_id, rows, reason, q * 1000.0,
                                              compute_ms, tot * 1000.0, n, r._arm))
                except BaseException as err:   # a caller's done-callback (SystemExit):
                    raised = raised or err     # the rest of the batch still gets answers
            if raised is not None:
                raise raised
        except BaseException:
            _resolve_leftovers([r for r, _, _ in won] + [r for r, _ in refused], model)
            raise

    def _fail_refused(self, refused: list[tuple[Request, BaseException]], t0: float,
                      t_done: float, t1: float, batch_id: int, rows: int, reason: str) -> None:
        """Requests of a batch that ran whose ``check`` refused the answer: counted as
        failures by their A/B arm's and class's metrics and by the trace, then failed."""
        for r, err in refused:
            for m in r._sink or ():
                m.record_refused(type(err).__name__, str(err))
        if self.trace is not None:
            self.trace.record_batch([r for r, _ in refused], t0, t_done, batch_id, rows,
                                    reason, False, ran_until=t1)
        _reject_each(refused)   # (a callback's error: the batch's answers still follow)

    # -- failure -----------------------------------------------------------------------
    def fail(self, requests: Iterable[Request], err: BaseException, *,
             batch: tuple[int, str, float, int] | None = None, notify_queue: bool = True
             ) -> int:
        """Settle ``requests`` with ``err`` (those nobody settled yet); returns how many.

        ``batch=(rows, reason, compute_s, depth)`` counts the failure as an executed batch
        (a run that raised); otherwise the requests failed without running.
        """
        pop = self.live.pop
        won = [r for r in requests if pop(r, False)]
        try:
            if batch is not None:
                rows, reason, compute_s, depth = batch
                runs = rows if self.row_runs and rows > 1 else 1
                self.count_failed_run(won, rows, reason, compute_s, depth, runs, err)
            elif won:
                self.metrics.record_refused(type(err).__name__, str(err), count=len(won))
            if self.trace is not None and won:
                now = self._clock()
                if batch is not None:
                    self.trace.record_batch(won, now - batch[2], now, -1, rows // runs,
                                            batch[1], False)
                else:
                    self.trace.record_unrun(won, now, type(err).__name__)
            if batch is None:
                for r in won:
                    for m in r._sink or ():
                        m.record_refused(type(err).__name__, str(err))
            if notify_queue and self._on_dead is not None:
                for r in won:
                    self._on_dead(r)
            _reject_each((r, err) for r in won)
        except BaseException:
            _resolve_leftovers(won, self.model, err)
            raise
        return len(won)

    def count_failed_run(self, requests: Sequence[Request], rows: int, reason: str,
                         compute_s: float, depth: int, runs: int = 1,
                         err: BaseException | None = None) -> None:
        """A run that raised, in the model's batches and in those of every metrics object
        its ``requests`` are counted in (A/B arms); with ``err``, their failures too
        (without: they are re-run alone). One place, so the two paths cannot drift apart
        (an arm's batches once left a failed run out)."""
        failed = None if err is None else {type(err).__name__: [str(err)] * len(requests)}
        self.metrics.record_batch(rows, reason, compute_s, (), failed, depth, runs=runs,
                                  run_ok=False)
        record_failed_run(requests, rows, reason, compute_s, runs, err)

    def cancel(self, r: Request) -> bool:
        if not self.claim(r):
            return False
        msg = f"request to model {self.model!r} was cancelled by its caller"
        try:
            self.metrics.record_refused("CancelledError", msg)
            if self.trace is not None:
                self.trace.record_unrun([r], self._clock(), "CancelledError")
            if r._sink is not None:
                for m in r._sink:
                    m.record_refused("CancelledError", msg)
            if self._on_dead is not None:
                self._on_dead(r)
        finally:
            # Straight to CANCELLED_AND_NOTIFIED: what concurrent.futures.wait and
            # as_completed listen for (only an executor's worker would do it otherwise).
            r._set_cancelled()
        return True

    def fail_all(self, err: BaseException) -> int:
        """Fail every request still live (the last resort of ``close``)."""
        return self.fail(list(self.live), err)
