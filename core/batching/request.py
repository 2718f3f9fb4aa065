"""A request: the future its caller holds, carrying its inputs and timestamps; ended only
through its model's :class:`~core.batching.settle.Ledger` (its ``cancel``, ``fail`` and
``set_exception`` go there too)."""

from __future__ import annotations

import threading
from _thread import RLock, allocate_lock
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures._base import (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, LOGGER,
                                      PENDING, RUNNING)
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from core.errors import InferenceError
from core.metrics import ModelMetrics
from .prediction import Prediction


# Where a request is, as far as its model's queue knows (guarded by the queue's lock):
QUEUED = 0   # in the queue
TAKEN = 1    # popped by the collector into a batch
DROPPED = 2  # popped by the collector after someone else had settled it
DEAD = 3     # settled by someone else while still in the queue (rows already uncounted)

_DONE = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)
_CANCELLED = (CANCELLED, CANCELLED_AND_NOTIFIED)


def _resolve_leftovers(won: Sequence[Request], model: str,
                       err: BaseException | None = None) -> None:
    """Claimed requests must end even if recording or a caller's done-callback raised
    (``Future`` lets a callback's ``BaseException`` through): fail what is still pending."""
    for r in won:
        if not r.done():
            try:
                _set_exception(r, err if err is not None else InferenceError(
                    f"internal error while settling a request to model {model!r}"))
            except BaseException:  # noqa: BLE001 - resolved meanwhile, or another callback
                pass               # raised: the first error is the one re-raised


class Request(Future):
    """One accepted request, and the future its caller holds.

    The request *is* the future (no cycle between two objects, nothing extra to allocate
    on the hot path). ``cancel()`` goes through the ledger like every other ending: it
    wins only if nobody has settled the request yet, and then the request is counted as
    cancelled before the future says so. ``fail(err)`` ends it with ``err`` the same way.

    A ``concurrent.futures.Future`` in every way callers see (``result``, ``exception``,
    ``add_done_callback``, ``cancel``, ``concurrent.futures.wait``/``as_completed``,
    ``asyncio.wrap_future``), built lighter: ``Future.__init__`` makes a
    ``threading.Condition`` (an RLock and a wait written in Python) per request, and its
    ``result()`` waits through it; here two C locks do that work — a mutex for the state
    and the callbacks (a C RLock), and a gate (a C lock), held until the request is
    settled, that ``result()`` waits on. The ``Condition`` that ``wait()``/``as_completed()`` take is made on the
    mutex only when one of them asks for it.
    """

    #: The high priority class (``priority=1``): set on such requests only.
    _high = False
    #: ``submit(..., check=fn)``: ``fn(prediction)`` before the request is settled as a
    #: success; what it raises fails the request instead (set on such requests only).
    _check: Callable[[Prediction], None] | None = None

    def __init__(self, ledger: Any, arrays: Sequence[np.ndarray], rows: int,
                 t_submit: float, deadline: float, arm: str | None = None,
                 sink: tuple[ModelMetrics, ...] | None = None) -> None:
        # Future's own fields, without Future.__init__ (see the class docstring).
        # Reentrant, like Future's: stdlib helpers (as_completed's cleanup, run by the GC
        # at any allocation) may take it again on a thread that holds it.
        self._mutex = RLock()
        self._gate = gate = allocate_lock()
        gate.acquire()
        self._state = PENDING
        self._result = None
        self._exception = None
        self._waiters = []
        self._done_callbacks = []
        self._ledger = ledger
        self._arrays = arrays
        self._rows = rows
        self._t_submit = t_submit
        self._deadline = deadline
        self._arm = arm          # A/B arm label carried into the Prediction
        self._sink = sink        # more metrics (an A/B arm's...), recorded before resolving
        self._where = QUEUED

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        """What ``concurrent.futures.wait``/``as_completed`` and ``Future``'s helpers lock:
        a Condition on the request's mutex, made on first use."""
        cond = self.__dict__.get("_cond")
        if cond is None:
            cond = self.__dict__.setdefault("_cond", threading.Condition(self._mutex))
        return cond

    # -- what callers see ----------------------------------------------------------------
    def cancel(self) -> bool:
        """Cancel the request unless it is already being settled; True if cancelled."""
        if self._ledger.cancel(self):
            return True
        return self.cancelled()

    def fail(self, err: BaseException) -> bool:
        """End the request with ``err`` unless it is already settled; True if it did."""
        return self._ledger.fail([self], err) == 1

    def cancelled(self) -> bool:
        return self._state in _CANCELLED

    def running(self) -> bool:
        return self._state == RUNNING

    def done(self) -> bool:
        return self._state in _DONE

    def _wait(self, timeout: float | None) -> None:
        gate = self._gate
        if timeout is None:
            got = gate.acquire()
        elif timeout <= 0:
            got = gate.acquire(False)
        else:
            got = gate.acquire(True, timeout)
        if got:
            gate.release()  # the gate stays open for every other waiter

    def result(self, timeout: float | None = None) -> Any:
        if self._state not in _DONE:
            self._wait(timeout)
        state = self._state
        if state == FINISHED:
            if self._exception is not None:
                try:
                    raise self._exception
                finally:
                    self = None  # noqa: PLW0642 - break the cycle through the traceback
            return self._result
        if state in _CANCELLED:
            raise CancelledError()
        raise TimeoutError()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state not in _DONE:
            self._wait(timeout)
        state = self._state
        if state == FINISHED:
            return self._exception
        if state in _CANCELLED:
            raise CancelledError()
        raise TimeoutError()

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        with self._mutex:
            if self._state not in _DONE:
                self._done_callbacks.append(fn)
                return
        try:
            fn(self)
        except Exception:
            LOGGER.exception("exception calling callback for %r", self)

    def __repr__(self) -> str:  # Future's takes the lock; a state read needs none
        return (f"<Request at {id(self):#x} state={self._state.lower()}"
                f"{' raised ' + type(self._exception).__name__ if self._exception else ''}>")

    def set_result(self, result: Any) -> None:
        """Refused: a request's answer is the engine's to give (one set by a caller ended
        its request behind the ledger's back, and the batch it shared then failed)."""
        raise RuntimeError("a request's result is set by the engine that runs it; to end "
                           "a request, call its cancel() or fail(err)")

    def set_exception(self, exception: BaseException) -> None:
        """End the request with ``exception`` (as :meth:`fail`): counted once, as that
        error, and the other requests of its batch get their answers. InvalidStateError
        if it is already settled (or being settled by its batch), as ``Future`` says."""
        if not self.fail(exception):
            raise InvalidStateError("the request is already settled, or its batch is "
                                    "settling it")

    # -- settling (the ledger's, through the module functions below) --------------------
    def _resolve(self, result: Any) -> None:
        self._finish(result, None, FINISHED, "add_result")

    def _reject(self, exception: BaseException) -> None:
        self._finish(None, exception, FINISHED, "add_exception")

    def _set_cancelled(self) -> None:
        """Cancelled and notified (``wait()`` and ``as_completed()`` see it at once)."""
        self._finish(None, None, CANCELLED_AND_NOTIFIED, "add_cancelled")

    def _finish(self, result: Any, exception: BaseException | None, state: str,
                notify: str) -> None:
        with self._mutex:
            if self._state in _DONE:
                raise InvalidStateError(self._state)  # no repr here: it would take the lock
            self._result = result
            self._exception = exception
            self._state = state
            try:
                for waiter in self._waiters:
                    getattr(waiter, notify)(self)
            finally:
                self._gate.release()
        if self._done_callbacks:
            self._invoke_callbacks()


_set_result = Request._resolve
_set_exception = Request._reject


def _reject_each(failed: Iterable[tuple[Request, BaseException]]) -> None:
    """Fail each request with its error. A caller's done-callback that raises
    (``SystemExit``) does not keep the rest from theirs: the first such error is raised
    once every one has ended."""
    raised = None
    for r, err in failed:
        try:
            _set_exception(r, err)
        except BaseException as e:   # noqa: BLE001 - raised again below
            raised = raised or e
    if raised is not None:
        raise raised
