"""Idle models hold no thread (issue 25): a model whose queue stays empty parks its runner,
completer and supervisor; the next request brings them back, and nothing is lost on the
way — many threads across many park/unpark cycles, timeouts after a park, close while
parked, and an engine of many idle models whose thread count does not grow with them."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from core import Engine, EngineConfig
from core.batching import Batcher
from core.batching.parking import ParkingMixin
from core.config import BatchConfig
from core.errors import RequestTimeoutError
from core.models import build_demo_model
from tests.helpers import WAIT_S, GatedRun, rows


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.name == f"batcher-{name}" or t.name.startswith(f"batcher-{name}-")]


def _until(cond, what: str) -> None:
    """Wait for a state of the batcher (not for a time): fail loudly if it never comes."""
    deadline = time.monotonic() + WAIT_S
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def _parked(b: Batcher, parks: int) -> None:
    _until(lambda: b.queue.parks >= parks and not _threads(b.name),
           f"model {b.name} did not park (parks={b.queue.parks}, "
           f"threads={[t.name for t in _threads(b.name)]})")


def test_an_idle_model_parks_its_threads_and_the_next_request_brings_them_back():
    b = Batcher("idle", GatedRun(), ["y"], BatchConfig(max_batch_size=8, max_wait_ms=0))
    b.queue.park_after_s = 0.05
    try:
        assert len(_threads("idle")) == 3           # runner, completer, supervisor
        assert b.submit((rows(1),), 1).result(WAIT_S).outputs["y"][0, 0] == 0.0
        _parked(b, 1)                               # all three left
        out = b.submit((rows(2, start=5),), 2).result(WAIT_S).outputs["y"]
        np.testing.assert_array_equal(out[:, 0], [10.0, 12.0])   # doubled: served
        assert {t.name for t in _threads("idle")} == {
            "batcher-idle", "batcher-idle-done", "batcher-idle-watch"}
        _parked(b, 2)
        assert b.restarts == 0 and b.loop_errors == 0   # parking is not a crash
    finally:
        b.close()
    assert not _threads("idle")


def test_many_threads_across_many_parks_lose_no_request():
    """Eight clients send bursts; between rounds the model parks (waited for). Every
    request of every round is answered with its own rows."""
    b = Batcher("churn", GatedRun(), ["y"], BatchConfig(max_batch_size=4, max_wait_ms=1))
    b.queue.park_after_s = 0.01
    errors: list[BaseException] = []
    go = [threading.Event() for _ in range(6)]
    done = threading.Barrier(9)

    def client(k: int) -> None:
        try:
            for rnd in range(6):
                assert go[rnd].wait(WAIT_S)
                futs = [(v, b.submit((rows(1, start=v),), 1))
                        for v in range(1000 * k + 100 * rnd, 1000 * k + 100 * rnd + 5)]
                for v, f in futs:
                    assert f.result(WAIT_S).outputs["y"][0, 0] == 2.0 * v
                done.wait(WAIT_S)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            errors.append(err)
            done.abort()

    clients = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in clients:
        t.start()
    try:
        for rnd in range(6):
            go[rnd].set()
            done.wait(WAIT_S)
            _parked(b, rnd + 1)
    finally:
        for e in go:
            e.set()
        for t in clients:
            t.join(WAIT_S)
        b.close()
    assert not errors, errors[:3]
    assert b.metrics.snapshot().success_count == 8 * 6 * 5 and b.pending() == 0


def test_after_a_park_timeouts_still_fire_and_close_ends_a_parked_model():
    run = GatedRun(gated=True)
    b = Batcher("hang", run, ["y"], BatchConfig(max_batch_size=1, max_wait_ms=0), start=False)
    b.queue.park_after_s = 0.02
    b.start()
    try:
        _parked(b, 1)
        fut = b.submit((rows(1),), 1, timeout_ms=50)   # the run hangs: the supervisor,
        with pytest.raises(RequestTimeoutError):       # started again, fails it
            fut.result(WAIT_S)
        run.gate.set()
        _parked(b, 2)
    finally:
        t0 = time.monotonic()
        b.close(timeout_s=WAIT_S)
    assert time.monotonic() - t0 < WAIT_S and not _threads("hang")


def test_more_instances_while_parked_start_every_runner_and_serve():
    b = Batcher("wide", GatedRun(), ["y"], BatchConfig(max_batch_size=2, max_wait_ms=0),
                start=False)
    b.queue.park_after_s = 0.02
    b.start()
    try:
        _parked(b, 1)
        b.configure(BatchConfig(max_batch_size=2, max_wait_ms=0, instances=2))
        assert {t.name for t in _threads("wide")} >= {"batcher-wide", "batcher-wide-1",
                                                       "batcher-wide-done",
                                                       "batcher-wide-watch"}
        futs = [b.submit((rows(1, start=v),), 1) for v in range(6)]
        assert [f.result(WAIT_S).outputs["y"][0, 0] for f in futs] == [0, 2, 4, 6, 8, 10]
        assert b.queue.parks == 1          # two runners: it stays up (only one parks)
    finally:
        b.close()


def test_an_engine_of_many_idle_models_holds_no_thread_per_model(monkeypatch):
    monkeypatch.setattr(ParkingMixin, "park_after_s", 0.05)
    with Engine(EngineConfig(demo_models=False)) as engine:
        model = build_demo_model("tiny")
        engine.load_model(model, name="m0")
        _until(lambda: not _threads("m0"), "m0 did not park")
        base = threading.active_count()
        for k in range(1, 40):
            engine.load_model(model, name=f"m{k}", probe=False)
        _until(lambda: not any(_threads(f"m{k}") for k in range(40)), "models did not park")
        assert threading.active_count() <= base + 2, [t.name for t in threading.enumerate()]
        x = np.ones((1, 4), np.float32)
        want = engine.predict("m0", x).outputs
        for k in (7, 39):                       # a parked model answers at once, as before
            got = engine.predict(f"m{k}", x).outputs
            for name in want:
                np.testing.assert_array_equal(got[name], want[name])


def test_a_put_and_a_configure_waking_a_parked_model_start_one_runner():
    """A request and a configure() woke a parked model at once: the configure started
    runner 0 (the parked one had gone) and the request's wake-up started another over it,
    so a model of one instance ran two batches at once (an adversary, 17 % of tries). The
    two are run here in that order, by hand."""
    b = Batcher("wake", GatedRun(), ["y"], BatchConfig(max_batch_size=4, max_wait_ms=0))
    b.queue.park_after_s = 0.01
    try:
        assert b.submit((rows(1),), 1).result(WAIT_S).rows == 1
        _parked(b, 1)
        with b.queue.lock:
            assert b.queue.unpark()       # the request's put: the model is awake...
        b._start_runners()                # ...configure() starts the missing runner 0...
        b._unpark()                       # ...and the put's wake-up comes after it
        runners = [t for t in _threads("wake") if t.name == "batcher-wake"]
        assert len(runners) == 1, runners
        assert b.submit((rows(2),), 2).result(WAIT_S).rows == 2
    finally:
        b.close()
