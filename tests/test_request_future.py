"""A request is a concurrent.futures.Future in everything a caller can see, though it is
built lighter (two C locks instead of a Condition per request): results, errors, timeouts,
cancellation, callbacks, many waiters, concurrent.futures.wait/as_completed and asyncio."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import (FIRST_COMPLETED, CancelledError, Future, InvalidStateError,
                                as_completed, wait)

import numpy as np
import pytest

from core.batching import Ledger, Request
from core.errors import RequestTimeoutError
from core.metrics import ModelMetrics
from tests.helpers import WAIT_S


def _request(ledger: Ledger | None = None) -> Request:
    ledger = ledger or Ledger("m", ModelMetrics())
    r = Request(ledger, (np.ones((1, 2), np.float32),), 1, 0.0, 1e9)
    ledger.admit(r)
    return r


def _succeed(r: Request, value: object = "ok") -> None:
    """Settled as the ledger settles a request that ran (``set_result`` is the engine's:
    refused to callers)."""
    assert r._ledger.claim(r)
    r._resolve(value)


def test_a_request_is_a_future_with_its_states():
    r = _request()
    assert isinstance(r, Future)
    assert not r.done() and not r.cancelled() and not r.running()
    with pytest.raises(TimeoutError):
        r.result(timeout=0)
    with pytest.raises(TimeoutError):
        r.exception(timeout=0.01)
    _succeed(r, 42)
    assert r.done() and r.result() == 42 and r.result(0) == 42 and r.exception() is None
    with pytest.raises(InvalidStateError):
        r._resolve(1)
    with pytest.raises(InvalidStateError):    # (a caller's: through the ledger, too late)
        r.set_exception(ValueError("again"))
    with pytest.raises(RuntimeError, match="set by the engine"):
        r.set_result(1)
    assert "finished" in repr(r)


def test_an_error_is_raised_by_result_and_returned_by_exception():
    r = _request()
    assert r.fail(RequestTimeoutError("too slow"))
    assert not r.fail(RequestTimeoutError("twice"))       # the first ending wins
    with pytest.raises(RequestTimeoutError, match="too slow"):
        r.result()
    assert isinstance(r.exception(), RequestTimeoutError)


def test_cancel_wins_only_while_nobody_settled_it():
    r = _request()
    assert r.cancel() and r.cancelled() and r.done() and r.cancel()
    with pytest.raises(CancelledError):
        r.result()
    with pytest.raises(CancelledError):
        r.exception()
    done = _request()
    _succeed(done)
    assert not done.cancel() and not done.cancelled()


def test_callbacks_run_once_in_order_before_and_after_the_ending():
    r = _request()
    seen: list[tuple[str, object]] = []
    r.add_done_callback(lambda f: seen.append(("first", f.result())))
    r.add_done_callback(lambda f: 1 / 0)                  # logged, never propagated
    r.add_done_callback(lambda f: seen.append(("second", f.result())))
    _succeed(r, "v")
    r.add_done_callback(lambda f: seen.append(("late", f.result())))  # runs at once
    assert seen == [("first", "v"), ("second", "v"), ("late", "v")]


def test_many_threads_waiting_on_one_request_all_wake():
    r = _request()
    got: list[object] = []
    start = threading.Barrier(17)

    def waiter():
        start.wait()
        got.append(r.result(timeout=WAIT_S))

    threads = [threading.Thread(target=waiter) for _ in range(16)]
    for t in threads:
        t.start()
    start.wait()
    _succeed(r, "all")
    for t in threads:
        t.join(WAIT_S)
    assert got == ["all"] * 16


def test_results_race_with_waiters_and_callbacks_without_losing_one():
    """Settle from one thread while others wait or attach callbacks: every waiter returns
    and every callback runs exactly once (hundreds of rounds, no sleeps)."""
    for _ in range(300):
        r = _request()
        calls: list[int] = []
        go = threading.Barrier(3)

        def attach():
            go.wait()
            r.add_done_callback(lambda f: calls.append(1))

        def settle():
            go.wait()
            _succeed(r)

        ts = [threading.Thread(target=attach), threading.Thread(target=settle)]
        for t in ts:
            t.start()
        go.wait()
        assert r.result(timeout=WAIT_S) == "ok"
        for t in ts:
            t.join(WAIT_S)
        assert calls == [1]


def test_concurrent_futures_wait_and_as_completed_see_every_ending():
    ledger = Ledger("m", ModelMetrics())
    ok, bad, cancelled, pending = (_request(ledger) for _ in range(4))
    threading.Timer(0.01, _succeed, args=(ok,)).start()
    done, not_done = wait([ok, pending], timeout=WAIT_S, return_when=FIRST_COMPLETED)
    assert done == {ok} and not_done == {pending}
    bad.fail(RequestTimeoutError("slow"))
    cancelled.cancel()
    done, not_done = wait([ok, bad, cancelled, pending], timeout=0.05)
    assert done == {ok, bad, cancelled} and not_done == {pending}
    threading.Timer(0.01, _succeed, args=(pending,)).start()
    assert set(as_completed([ok, bad, cancelled, pending], timeout=WAIT_S)) == \
        {ok, bad, cancelled, pending}


def test_asyncio_wraps_a_request():
    r = _request()

    async def main():
        fut = asyncio.wrap_future(r)
        threading.Timer(0.01, _succeed, args=(r, "async")).start()
        return await asyncio.wait_for(fut, WAIT_S)

    # On a thread of its own: another test's tools (Playwright's sync API) may keep an
    # event loop running on this one.
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(asyncio.run(main())))
    t.start()
    t.join(WAIT_S)
    assert got == ["async"]


def test_admission_still_predicts_for_rows_admitted_under_a_larger_configuration():
    """Skipping the wait prediction is safe only within what its bound assumed: requests
    queued under a larger max_batch_size must still count (a review finding)."""
    from core.batching import AdmissionQueue
    from core.config import BatchConfig
    from core.errors import OverloadedError

    ledger = Ledger("m", ModelMetrics())
    q = AdmissionQueue("m", ledger, BatchConfig(max_batch_size=64, max_queue=20))
    q.cost.a_s, q.cost.b_s, q.cost.ready, q.cost._fits = 0.0002, 0.002, True, 2
    x = (np.ones((64, 2), np.float32),)
    for _ in range(9):
        q.put(Request(ledger, x, 64, 0.0, 1e9))
    q.configure(BatchConfig(max_batch_size=1, max_queue=20))
    # 577 rows ahead at 2.2 ms a row (+20 %): 1.5 s, past a 1.2 s timeout
    late = Request(ledger, (np.ones((1, 2), np.float32),), 1, 0.0, 1.2)
    assert q.admit_bound_s < 1.2
    with pytest.raises(OverloadedError, match="predicted wait"):
        q.put(late)


def test_a_predictions_repr_names_its_attributes():
    """``print(pred)`` showed ``reason='deadline'``; the attribute is ``release_reason``
    (a notebook newcomer's AttributeError): every name in the repr is one to read."""
    import re

    from core import Engine
    with Engine() as engine:
        pred = engine.predict("tiny", engine.sample_input("tiny"))
    names = re.findall(r"(\w+)=", repr(pred))
    assert "release_reason" in names and all(hasattr(pred, n) for n in names), names
