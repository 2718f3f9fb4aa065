"""One way out for every request: the ledger settles each request exactly once, records
it before its future resolves, and ``close()`` leaves nothing pending.

Races are provoked with ``sys.setswitchinterval(1e-6)`` (a thread switch every few
bytecodes) and paced by events, never by sleeps.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any
from concurrent.futures import CancelledError, as_completed

import numpy as np
import pandas as pd
import pytest

from core import Engine
from core.batching import Batcher
from core.config import BatchConfig
from core.errors import (ConfigError, EngineClosedError, InferenceError, ModelNotFoundError,
                         RequestTimeoutError)
from core.metrics import ModelMetrics
from core.policies import ReleasePolicy, register
from core.policies.base import _REGISTRY
from tests.helpers import WAIT_S, GatedRun, identity_model, rows


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tiny_switch_interval():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def make(run, **cfg) -> Batcher:
    return Batcher("fake", run, ["y"], BatchConfig(**cfg))


# -- recorded before resolved ----------------------------------------------------------
def test_every_result_is_counted_before_its_caller_sees_it(tiny_switch_interval):
    """After ``fut.result()`` returns, the metrics already count that request, on the
    inline path and through the completer thread (slow runs with work waiting)."""
    slow = threading.Event()

    def run(arrays):
        slow.wait(0.0005)  # long enough that settling is handed to the completer
        return [arrays[0] * 2.0]

    b = make(run, max_batch_size=4, max_wait_ms=0)
    try:
        futs = [b.submit((rows(1, start=i),), 1) for i in range(400)]
        seen = 0
        for f in as_completed(futs, timeout=WAIT_S * 3):
            f.result()
            seen += 1
            assert b.metrics.totals()["success_count"] >= seen
        assert b.metrics.snapshot().success_count == 400
    finally:
        b.close()


def test_failures_are_counted_before_the_caller_sees_them(tiny_switch_interval):
    run = GatedRun(fail_on=-7.0)
    b = make(run, max_batch_size=8, max_wait_ms=0)
    try:
        for i in range(50):
            bad = b.submit((np.full((1, 3), -7.0, np.float32),), 1)
            with pytest.raises(InferenceError):
                bad.result(WAIT_S)
            assert b.metrics.totals()["error_count"] == i + 1
    finally:
        b.close()


def test_timeout_and_completion_racing_count_each_request_once(tiny_switch_interval):
    """Requests whose timeout expires about when their batch completes end either way,
    but are counted exactly once, in the way their caller saw them."""
    gate = threading.Event()

    def run(arrays):
        gate.wait(WAIT_S)  # the first run holds until everything is queued
        threading.Event().wait(0.002)
        return [arrays[0]]

    b = make(run, max_batch_size=2, max_wait_ms=0)
    b.watch_interval_s = 0.001
    try:
        # Queued before any run was timed, so admission by deadline cannot refuse them.
        futs = [b.submit((rows(1, start=i),), 1, timeout_ms=5.0 + 3 * (i % 7))
                for i in range(300)]
        gate.set()
        ok = err = 0
        for f in futs:
            try:
                f.result(WAIT_S)
                ok += 1
            except RequestTimeoutError:
                err += 1
        snap = b.metrics.snapshot()
        assert ok + err == 300
        assert (snap.success_count, snap.error_count, snap.total_requests) == (ok, err, 300)
        assert err > 0  # the race was really provoked
    finally:
        b.close()


def test_total_ms_is_measured_when_the_request_is_settled():
    ticks = iter(range(10**9))

    def clock():  # every read is 1 ms later than the one before
        return next(ticks) / 1000.0

    b = Batcher("fake", lambda a: [a[0]], ["y"], BatchConfig(max_batch_size=1, max_wait_ms=0),
                clock=clock)
    try:
        p = b.submit((rows(1),), 1).result(WAIT_S)
        assert p.total_ms > p.queue_ms + p.compute_ms
        assert b.metrics.snapshot().avg_latency_ms == pytest.approx(p.total_ms)
    finally:
        b.close()


# -- timeouts in deadline order --------------------------------------------------------
def test_timeouts_expire_in_deadline_order_not_queue_order():
    now = [0.0]
    run = GatedRun(gated=True)
    b = Batcher("slow", run, ["y"], BatchConfig(max_batch_size=1, max_wait_ms=0),
                clock=lambda: now[0], start=False)
    b.start()
    try:
        first = b.submit((rows(1),), 1, timeout_ms=60_000)
        assert run.started.wait(WAIT_S)
        t500 = b.submit((rows(1),), 1, timeout_ms=500)
        t15k = b.submit((rows(1),), 1, timeout_ms=15_000)
        t100 = b.submit((rows(1),), 1, timeout_ms=100)
        now[0] = 0.2
        assert b.expire_overdue() == 1
        with pytest.raises(RequestTimeoutError, match="waited 200.0 ms in the queue"):
            t100.result(0)
        assert not t500.done() and not t15k.done()
        assert b.queue_depth() == 2  # the expired request no longer counts as queued
        now[0] = 0.6
        assert b.expire_overdue() == 1 and t500.done() and not t15k.done()
        run.gate.set()
        now[0] = 1.0
        assert first.result(WAIT_S).rows == 1 and t15k.result(WAIT_S).rows == 1
    finally:
        run.gate.set()
        b.close()


def test_short_timeout_behind_a_long_one_fails_on_time_with_a_real_clock():
    run = GatedRun(gated=True)
    b = make(run, max_batch_size=1, max_wait_ms=0)
    try:
        b.submit((rows(1),), 1, timeout_ms=60_000)
        assert run.started.wait(WAIT_S)
        long_one = b.submit((rows(1),), 1, timeout_ms=60_000)
        short = b.submit((rows(1),), 1, timeout_ms=100)
        # Head-of-queue expiry would fail it only after 60 s; WAIT_S is 10 s.
        with pytest.raises(RequestTimeoutError):
            short.result(WAIT_S)
        assert not long_one.done()
    finally:
        run.gate.set()
        b.close()


def test_configured_and_own_timeouts_expire_together_in_deadline_order():
    """Requests on the configured timeout wait on the lane (arrival order), requests with a
    timeout of their own on the heap; expiry takes both, by deadline, and a changed
    timeout keeps the old requests' deadlines."""
    now = [0.0]
    run = GatedRun(gated=True)
    b = Batcher("slow", run, ["y"], BatchConfig(max_batch_size=1, max_wait_ms=0,
                                                 timeout_ms=1_000),
                clock=lambda: now[0], start=False)
    b.start()
    try:
        b.submit((rows(1),), 1, timeout_ms=60_000)
        assert run.started.wait(WAIT_S)
        d1000 = b.submit((rows(1),), 1)                   # lane, deadline 1.0
        now[0] = 0.1
        own300 = b.submit((rows(1),), 1, timeout_ms=300)  # heap, deadline 0.4
        d1100 = b.submit((rows(1),), 1)                   # lane, deadline 1.1
        assert len(b.queue.lane) == 2 and len(b.queue.deadlines) == 2
        b.configure(b.config.replace(timeout_ms=200))   # the lane moves to the heap
        assert len(b.queue.lane) == 0
        d300 = b.submit((rows(1),), 1)                    # new lane, deadline 0.3
        now[0] = 0.35
        assert b.expire_overdue() == 1 and d300.done() and not own300.done()
        now[0] = 1.05
        assert b.expire_overdue() == 2 and own300.done() and d1000.done()
        assert not d1100.done()
        now[0] = 1.2
        assert b.expire_overdue() == 1 and d1100.done()
        for f in (d300, own300, d1000, d1100):
            with pytest.raises(RequestTimeoutError):
                f.result(0)
    finally:
        run.gate.set()
        b.close()


def test_the_deadline_lane_stays_bounded_behind_a_request_that_never_ends():
    """Settled requests behind a live head cannot leave the lane's front; the lane is
    rebuilt so it never holds more than about twice what is live."""
    run = GatedRun(gated=True)
    b = make(run, max_batch_size=1, max_wait_ms=0, max_queue=100_000)
    try:
        b.submit((rows(1),), 1)
        assert run.started.wait(WAIT_S)
        b.submit((rows(1),), 1)                           # queued for ever: the lane's head
        for _ in range(3_000):
            assert b.submit((rows(1),), 1).cancel()      # settled at once
        assert b.pending() == 2
        assert len(b.queue.lane) <= 2 * b.pending() + 256 + 1
    finally:
        run.gate.set()
        b.close()


def test_a_served_request_is_let_go_when_its_caller_drops_it():
    """Once served, the only reference to a request is its caller's: the deadline lane
    lets settled requests go as new ones arrive, two per put, not hundreds at a time
    (freed in bulk, they made the garbage collector run ~40x as often)."""
    import weakref
    b = make(GatedRun(), max_batch_size=1, max_wait_ms=0)
    try:
        refs = []
        for _ in range(300):
            f = b.submit((rows(1),), 1)
            f.result(WAIT_S)
            refs.append(weakref.ref(f))
            del f
        alive = sum(r() is not None for r in refs)
        assert alive <= 3, f"{alive} of 300 served requests still held by the engine"
        assert len(b.queue.lane) <= 3
    finally:
        b.close()


# -- cancellation ----------------------------------------------------------------------
def test_cancel_goes_through_the_ledger():
    run = GatedRun(gated=True)
    b = make(run, max_batch_size=8, max_wait_ms=0)
    try:
        running = b.submit((rows(1, start=-1),), 1)
        assert run.started.wait(WAIT_S)
        queued = b.submit((rows(1),), 1)
        assert queued.cancel() and queued.cancelled()
        assert b.metrics.totals()["error_count"] == 1  # counted before cancel() returned
        assert b.queue_depth() == 0
        assert running.cancel()  # a running request can be abandoned too
        run.gate.set()
        with pytest.raises(CancelledError):
            running.result(WAIT_S)
        done = b.submit((rows(1),), 1)
        assert done.result(WAIT_S).rows == 1
        assert not done.cancel()  # settled: too late to cancel
        snap = b.metrics.snapshot()
        assert snap.errors_by_type == {"CancelledError": 2} and snap.success_count == 1
    finally:
        run.gate.set()
        b.close()


# -- close -----------------------------------------------------------------------------
def test_close_after_hot_swap_resolves_the_retired_versions_requests():
    with Engine() as engine:
        engine.configure("mlp", max_batch_size=64, max_wait_ms=60_000)
        futs = [engine.submit("mlp", np.zeros((1, 256), np.float32)) for _ in range(10)]
        from core.models import build_demo_model
        engine.load_model(build_demo_model("mlp"), name="mlp", replace=True)
    assert all(f.done() for f in futs)
    assert {f.result().release_reason for f in futs} == {"drain"}


def test_unload_beside_close_leaves_nothing_pending(tiny_switch_interval):
    engine = Engine()
    engine.configure("mlp", max_batch_size=64, max_wait_ms=60_000)
    futs = [engine.submit("mlp", np.zeros((1, 256), np.float32)) for _ in range(10)]
    go = threading.Barrier(2)

    def unload():
        go.wait(WAIT_S)
        try:
            engine.unload_model("mlp")
        except ModelNotFoundError:
            pass

    t = threading.Thread(target=unload)
    t.start()
    go.wait(WAIT_S)
    engine.close()
    t.join(WAIT_S)
    assert not t.is_alive()
    assert all(f.done() for f in futs)
    assert all(f.exception() is None for f in futs)


def test_close_timeout_is_shared_and_fails_what_is_left():
    run = GatedRun(gated=True)  # hangs until the test opens the gate
    engine = Engine(demo_models=False)
    engine.load_model(identity_model(), name="id")
    try:
        for name in ("hung-a", "hung-b"):
            engine.load_model(identity_model(), name=name)
            engine._registry.models[name].served._run = run
        futs = [engine.submit(n, rows(1)) for n in ("hung-a", "hung-b") for _ in range(3)]
        assert run.started.wait(WAIT_S)
        object.__setattr__(engine.config, "close_timeout_s", 0.2)
        engine.close()
        assert all(f.done() for f in futs)
        errors = [f.exception() for f in futs]
        assert all(isinstance(e, EngineClosedError) for e in errors)
        assert "close timeout" in str(errors[0])
    finally:
        run.gate.set()


def test_close_is_one_deadline_for_the_labs_traffic_and_jobs_and_the_models(monkeypatch):
    """close_timeout_s bounds the whole close, the lab's part included: it could wait up
    to 5 s per traffic generator and 5 s for jobs before the models' own budget began. Now
    the traffic and the jobs are stopped within the first half of the engine's budget, and
    the models drain in what is left of it."""
    import time
    from core import EngineConfig
    engine = Engine(EngineConfig(demo_models=False, close_timeout_s=0.3))
    seen: dict = {}
    stop, cancel_all, close = (engine._lab.traffic.stop, engine._lab.jobs.cancel_all,
                               engine._registry.close)

    def spy_stop(*a, **kw):
        seen["hook_at"], seen["traffic"] = time.monotonic(), kw.get("timeout_s")
        return stop(*a, **kw)

    def spy_cancel(timeout_s):
        seen["jobs"] = timeout_s
        return cancel_all(timeout_s)

    def spy_close(deadline):
        seen["deadline"] = deadline
        return close(deadline)
    monkeypatch.setattr(engine._lab.traffic, "stop", spy_stop)
    monkeypatch.setattr(engine._lab.jobs, "cancel_all", spy_cancel)
    monkeypatch.setattr(engine._registry, "close", spy_close)
    engine.close()
    assert seen["traffic"] == 0.15 and 0 <= seen["jobs"] <= 0.15   # half the budget
    assert seen["deadline"] <= seen["hook_at"] + 0.3   # set before the lab's hook ran


def test_traffic_stop_tells_every_generator_before_waiting_for_any():
    """Stopping every generator (close, unload) waits for them within one timeout, not
    one timeout each after the other: each is told first, then each waited for in what is
    left."""
    from core.lab.traffic import TrafficManager
    calls = []

    class Gen:
        priority, running = None, True

        def __init__(self, target):
            self.target = target

        def start(self):
            return self

        def status(self):
            return self.target

        def stop(self, timeout_s=5.0):
            calls.append((self.target, timeout_s))

    manager = TrafficManager(lambda *a, **kw: None)
    for t in ("a", "b", "c"):
        manager.add(Gen(t))
    manager.stop(timeout_s=1.0)
    assert [c for c in calls[:3]] == [("a", 0.0), ("b", 0.0), ("c", 0.0)]
    assert [t for t, _ in calls[3:]] == ["a", "b", "c"]
    assert all(0.0 <= w <= 1.0 for _, w in calls[3:])


@pytest.mark.parametrize("script", [
    # the reported case: queued requests, a hot swap, then leaving the with-block
    """
    with Engine() as engine:
        engine.configure("mlp", max_batch_size=64, max_wait_ms=60_000)
        futs = [engine.submit("mlp", x) for _ in range(10)]
        engine.load_model(build_demo_model("mlp"), name="mlp", replace=True)
    assert all(f.done() for f in futs), "pending futures after close"
    """,
    # an engine never closed: the interpreter's exit closes it
    """
    engine = Engine()
    engine.configure("mlp", max_batch_size=64, max_wait_ms=60_000)
    futs = [engine.submit("mlp", x) for _ in range(10)]
    """,
])
def test_interpreter_exits_cleanly(script):
    code = ("import numpy as np\nfrom core import Engine, build_demo_model\n"
            "x = np.zeros((1, 256), np.float32)\n" + textwrap.dedent(script))
    done = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# -- metrics off the hot path ------------------------------------------------------------
def test_series_never_reopens_an_earlier_second():
    now = [10.0]
    m = ModelMetrics(clock=lambda: now[0], wall_clock=lambda: 1000.0)
    m.record_batch(1, "full", 0.001, [0.001], now=11.5)
    m.record_batch(1, "full", 0.001, [0.001], now=10.9)   # lost the race for the lock
    m.record_refused("OverloadedError", "x", now=10.2)
    now[0] = 12.5
    snap = m.snapshot()
    ts = snap.timeseries
    assert ts["second"].is_unique
    assert int(ts["requests"].sum()) == snap.total_requests == 3
    assert int(ts["successes"].sum()) == snap.success_count == 2


def test_snapshot_builds_frames_without_holding_the_lock(monkeypatch):
    """While a reader builds the frame, the collector can still record batches."""
    import core.metrics.model as metrics_mod

    m = ModelMetrics()
    m.record_batch(1, "full", 0.001, [0.001])
    recorded = threading.Event()
    real_frame = pd.DataFrame

    def slow_frame(*args, **kwargs):
        t = threading.Thread(target=lambda: (m.record_batch(2, "full", 0.001, [0.001] * 2),
                                             recorded.set()))
        t.start()
        assert recorded.wait(WAIT_S), "record_batch blocked while a snapshot built its frame"
        return real_frame(*args, **kwargs)

    monkeypatch.setattr(metrics_mod.pd, "DataFrame", slow_frame)
    snap = m.snapshot()
    assert snap.success_count == 1  # the snapshot is of the moment it was taken
    monkeypatch.undo()
    assert m.snapshot().success_count == 3


def test_snapshot_percentiles_equal_the_librarys():
    from hdrh.histogram import HdrHistogram

    rng = np.random.default_rng(3)
    m = ModelMetrics()
    q = rng.exponential(0.003, 5000)
    m.record_batch(5000, "full", 0.002, q)
    ref = HdrHistogram(1, 3_600_000_000, 2)
    for v in q + 0.002:
        ref.record_value(int(v * 1e6))
    snap = m.snapshot()
    for p, got in ((50, snap.p50_ms), (95, snap.p95_ms), (99, snap.p99_ms)):
        assert got == ref.get_value_at_percentile(p) / 1000.0
    assert snap.max_latency_ms == ref.get_max_value() / 1000.0


def test_status_reads_counters_only(engine):
    engine.predict("mlp", engine.sample_input("mlp"))
    st = engine.status()
    assert st["total_requests"] == 1 and st["models"] == len(engine.model_names())


# -- one namespace ---------------------------------------------------------------------
def test_one_namespace_for_models_and_experiments(engine):
    engine.create_ab("exp", a="clf-v1", b="clf-v2")
    with pytest.raises(ConfigError, match="'exp' is the name of an A/B experiment"):
        engine.load_model(identity_model(), name="exp")
    with pytest.raises(ConfigError, match="'mlp' is the name of a model"):
        engine.create_ab("mlp", a="clf-v1", b="clf-v2")
    with pytest.raises(ConfigError, match="different inputs"):
        engine.update_ab("exp", b="mlp")
    with pytest.raises(ConfigError, match="an arm must be a model"):
        engine.create_ab("exp2", a="clf-v1", b="exp")
    with pytest.raises(ConfigError, match="must be 1-64 characters"):
        engine.create_ab("bad\n", a="clf-v1", b="clf-v2")
    with pytest.raises(ConfigError, match="must be 1-64 characters"):
        engine.load_model(identity_model(), name="m\n")
    with pytest.raises(ConfigError, match="arm of A/B experiment"):
        engine.unload_model("clf-v2")
    # metrics() resolves experiments too: what its callers saw
    x = engine.sample_input("clf-v1", rows=1)
    for _ in range(5):
        engine.predict("exp", x)
    assert engine.metrics("exp").success_count == 5
    assert engine.ab_arms("exp") == ("clf-v1", "clf-v2")
    assert engine.ab_report("exp").to_dict()["total_requests"] == 5


def test_hot_swapping_an_arm_under_traffic_fails_no_request(engine, tiny_switch_interval):
    from core.models import build_demo_model

    engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.5, seed=1)
    x = engine.sample_input("clf-v1", rows=1)
    stop = threading.Event()
    futs: list = []
    errors: list = []

    def client():  # closed loop: one request in flight per client
        while not stop.is_set():
            try:
                fut = engine.submit("exp", x)
                futs.append(fut)
                fut.exception(WAIT_S)
            except Exception as err:  # noqa: BLE001 - any refusal fails the test
                errors.append(repr(err))

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(6):
            engine.load_model(build_demo_model("clf-v2"), name="clf-v2", replace=True)
    finally:
        stop.set()
        for t in threads:
            t.join(WAIT_S)
    assert errors == []
    failed = [f.exception(WAIT_S) for f in futs if f.exception(WAIT_S) is not None]
    assert failed == [] and len(futs) > 0


# -- policies are modules ----------------------------------------------------------------
def test_a_new_policy_is_one_class():
    @register
    class Eager(ReleasePolicy):
        name = "test_eager"

        def decide(self, view, max_rows, max_wait_s, now):
            return "eager", 0.0

    try:
        b = Batcher("p", lambda a: [a[0]], ["y"],
                    BatchConfig(max_batch_size=64, max_wait_ms=60_000, policy="test_eager"))
        try:
            assert b.submit((rows(1),), 1).result(WAIT_S).release_reason == "eager"
        finally:
            b.close()
    finally:
        del _REGISTRY["test_eager"]
    with pytest.raises(ConfigError, match="policy must be one of"):
        BatchConfig(policy="test_eager")


# -- found in review -------------------------------------------------------------------------
def test_a_slow_first_run_does_not_lock_admission_into_refusing():
    """The first run is slow (one-time work); requests with a short timeout and nothing
    ahead of them are still admitted, so the learned cost keeps being corrected."""
    calls = []

    def run(arrays):
        calls.append(1)
        if len(calls) == 1:
            threading.Event().wait(0.1)
        return [arrays[0]]

    b = make(run, max_batch_size=4, max_wait_ms=0)
    try:
        b.submit((rows(1),), 1).result(WAIT_S)
        for i in range(50):  # one at a time: nothing is ever ahead
            assert b.submit((rows(1, start=i),), 1, timeout_ms=80).result(WAIT_S).rows == 1
        assert len(calls) == 51
    finally:
        b.close()


def test_close_from_a_done_callback_on_the_models_own_thread():
    run = GatedRun(gated=True)
    b = make(run, max_batch_size=1, max_wait_ms=0)
    closed = threading.Event()
    first = b.submit((rows(1),), 1)
    assert run.started.wait(WAIT_S)
    queued = [b.submit((rows(1, start=i),), 1) for i in range(5)]
    first.add_done_callback(lambda f: (b.close(timeout_s=None), closed.set()))
    run.gate.set()
    assert closed.wait(WAIT_S), "close() from the model's own thread blocked"
    assert first.result(WAIT_S).rows == 1
    # The collector may run some of them before close() fails the rest: each one ends,
    # either way, and none is left pending.
    for f in queued:
        err = f.exception(WAIT_S)
        assert err is None or (isinstance(err, EngineClosedError)
                               and "model's own thread" in str(err))
    assert b.pending() == 0


def _queued_behind_a_held_run(run: GatedRun, b: Batcher, n: int) -> tuple[Any, list]:
    """A request whose run is held on ``run``'s gate, and ``n`` queued behind it."""
    hold = b.submit((rows(1, start=-1),), 1)
    assert run.started.wait(WAIT_S)
    return hold, [b.submit((rows(1, start=i),), 1) for i in range(n)]


def test_a_callback_raising_baseexception_leaves_no_request_pending():
    run = GatedRun(gated=True)
    b = make(run, max_batch_size=8, max_wait_ms=0)
    try:
        hold, futs = _queued_behind_a_held_run(run, b, 3)

        def explode(_):
            raise SystemExit("a caller's callback")

        futs[0].add_done_callback(explode)
        run.gate.set()
        assert hold.result(WAIT_S).rows == 1
        # every one is answered, whatever the first one's callback did (the others were
        # failed with "internal error while settling", and counted as served), and the
        # metrics say what the callers got
        assert [f.result(WAIT_S).rows for f in futs] == [1, 1, 1]
        assert b.pending() == 0
        snap = b.metrics.snapshot()
        assert snap.success_count == 4 and snap.error_count == 0
    finally:
        b.close()


def test_a_caller_ending_its_own_future_ends_only_its_request():
    """``Future.set_exception`` from a caller giving up ended its request behind the
    ledger's back: the batch it shared then failed for everyone, counted as served. It
    goes through the ledger now (counted once, as its error); ``set_result`` is refused."""
    run = GatedRun(gated=True)
    b = make(run, max_batch_size=8, max_wait_ms=0)
    try:
        hold, futs = _queued_behind_a_held_run(run, b, 4)
        futs[0].set_exception(TimeoutError("the caller gave up"))
        with pytest.raises(RuntimeError, match=r"set by the engine.*cancel\(\) or fail"):
            futs[1].set_result("mine")
        run.gate.set()
        assert hold.result(WAIT_S).rows == 1
        with pytest.raises(TimeoutError, match="the caller gave up"):
            futs[0].result(WAIT_S)
        assert [f.result(WAIT_S).rows for f in futs[1:]] == [1, 1, 1]
        from concurrent.futures import InvalidStateError
        with pytest.raises(InvalidStateError):   # settled: Future's contract
            futs[2].set_exception(TimeoutError())
        snap = b.metrics.snapshot()
        assert snap.success_count == 4 and snap.errors_by_type == {"TimeoutError": 1}
        assert b.pending() == 0
    finally:
        run.gate.set()
        b.close()


def test_extra_metrics_record_each_batch_once():
    run = GatedRun(gated=True)
    b = make(run, max_batch_size=8, max_wait_ms=0)
    arm = ModelMetrics()
    try:
        b.submit((rows(1, start=-1),), 1)
        assert run.started.wait(WAIT_S)
        futs = [b.submit((rows(1, start=i),), 1, sink=(arm,)) for i in range(8)]
        run.gate.set()
        assert all(f.result(WAIT_S).batch_rows == 8 for f in futs)
        snap = arm.snapshot()
        assert (snap.batches, snap.success_count, snap.avg_batch_rows) == (1, 8, 8.0)
    finally:
        b.close()


def test_cancelled_requests_are_seen_by_concurrent_futures_wait(engine):
    """cancel() moves the future to CANCELLED_AND_NOTIFIED: wait() and as_completed() see
    it (they listen for that state only)."""
    import concurrent.futures as cf
    engine.configure("clf-v1", max_batch_size=64, max_wait_ms=60_000.0)
    futs = [engine.submit("clf-v1", engine.sample_input("clf-v1")) for _ in range(20)]
    assert all(f.cancel() for f in futs)
    done, pending = cf.wait(futs, timeout=10)
    assert len(done) == 20 and not pending
    assert len(list(cf.as_completed(futs, timeout=10))) == 20


def test_an_answer_refused_by_its_check_fails_and_is_counted_as_that_error():
    """``submit(..., check=fn)``: ``fn(prediction)`` runs before the request is settled as a
    success; a request whose answer it refuses fails with what it raised and is counted as
    that error (by the model, an A/B experiment and its arm), in the same batch as the
    rest, which are served (the server refuses NaN in a JSON answer this way)."""

    def odd_refused(pred):
        if int(pred.outputs["y"][0, 0]) % 2:
            raise ValueError(f"odd answer {pred.outputs['y'][0, 0]:g}")

    with Engine(demo_models=False) as engine:
        engine.load_model(identity_model(), name="n")
        engine.load_model(identity_model(), name="n2")
        engine.configure("n", max_batch_size=8, max_wait_ms=10_000)  # one full batch
        futs = [engine.submit("n", np.full((1, 3), i, np.float32), check=odd_refused)
                for i in range(8)]
        for i, f in enumerate(futs):
            if i % 2:
                with pytest.raises(ValueError, match=f"odd answer {i}"):
                    f.result(WAIT_S)
            else:
                assert f.result(WAIT_S).outputs["y"][0, 0] == i
        m = engine.metrics("n")
        assert (m.total_requests, m.success_count, m.error_count) == (8, 4, 4)
        assert m.errors_by_type == {"ValueError": 4} and m.batch_sizes == {8: 1}
        # Through an A/B experiment: the experiment and the arm count it as an error.
        engine.configure("n", max_batch_size=8, max_wait_ms=0)
        engine.create_ab("e", a="n", b="n2", b_share=0.0)
        with pytest.raises(ValueError, match="odd answer 3"):
            engine.submit("e", np.full((1, 3), 3, np.float32), check=odd_refused).result(WAIT_S)
        assert engine.submit("e", np.full((1, 3), 2, np.float32),
                             check=odd_refused).result(WAIT_S).arm == "a"
        exp = engine.metrics("e")
        assert (exp.success_count, exp.error_count) == (1, 1)
        arm_a = engine.ab_report("e").to_dict()["arms"]["a"]
        assert arm_a["requests"] == 2 and arm_a["errors"] == 1, arm_a

        # A check that raises past Exception fails its own request only, counted too.
        class Stop(BaseException):
            pass

        def stop_on_5(pred):
            if int(pred.outputs["y"][0, 0]) == 5:
                raise Stop("stopped")

        engine.configure("n2", max_batch_size=4, max_wait_ms=10_000)
        futs = [engine.submit("n2", np.full((1, 3), i, np.float32), check=stop_on_5)
                for i in range(4, 8)]
        with pytest.raises(Stop):
            futs[1].result(WAIT_S)
        assert [futs[i].result(WAIT_S).outputs["y"][0, 0] for i in (0, 2, 3)] == [4, 6, 7]
        m2 = engine.metrics("n2")
        assert (m2.success_count, m2.error_count, m2.errors_by_type) == (3, 1, {"Stop": 1})


def test_an_answer_past_the_requests_timeout_is_a_timeout_not_a_late_success():
    """Successes arrived 4.8 ms after a 3 ms timeout (the watcher had not failed them yet;
    an adversary): past its timeout a request fails, counted as a timeout, and no success
    is slower than its timeout. The watcher is kept out here; the run is held past the
    deadline by a gate (the clock is waited for, not slept on)."""
    import time
    run = GatedRun(gated=True)
    b = make(run, max_batch_size=8, max_wait_ms=0)
    b.supervisor.expire_overdue = lambda: 0
    try:
        late = b.submit((rows(1),), 1, timeout_ms=50)
        on_time = b.submit((rows(1, start=1),), 1, timeout_ms=60_000)
        assert run.started.wait(WAIT_S)
        while time.perf_counter() <= late._deadline:
            run.gate.wait(0.005)
        run.gate.set()
        with pytest.raises(RequestTimeoutError, match=r"was answered .* ms after it was sent, "
                           r"past its timeout of 50 ms .*too late and was dropped"):
            late.result(WAIT_S)
        assert on_time.result(WAIT_S).rows == 1
        snap = b.metrics.snapshot()
        assert snap.errors_by_type == {"RequestTimeoutError": 1} and snap.success_count == 1
        assert snap.max_latency_ms < 60_000 and b.pending() == 0
    finally:
        run.gate.set()
        b.close()


@pytest.mark.parametrize("where", ["answered late", "expired in the queue"])
def test_a_callback_raising_on_a_failed_request_leaves_the_rest_of_its_batch_served(where):
    """A reviewer's cases: a request that fails inside a batch (answered past its deadline,
    or found expired as its batch leaves the queue) whose caller's done-callback raises
    SystemExit failed the on-time request beside it with an internal error (and, answered,
    counted it as served). The others are settled first; the callback's error is logged."""
    import time
    run = GatedRun(gated=True)
    together = where == "answered late"     # late and ok run in one batch, held past 50 ms
    b = make(run, max_batch_size=2 if together else 8, max_wait_ms=10_000 if together else 0)
    b.supervisor.expire_overdue = lambda: 0   # (the watcher kept out: the batch finds it)

    def explode(_):
        raise SystemExit("a caller's callback")

    try:
        hold = None if together else b.submit((rows(1, start=-1),), 1, timeout_ms=60_000)
        if hold is not None:
            assert run.started.wait(WAIT_S)   # late and ok queue behind the held run
        late = b.submit((rows(1),), 1, timeout_ms=50)
        ok = b.submit((rows(1, start=1),), 1, timeout_ms=60_000)
        late.add_done_callback(explode)
        assert run.started.wait(WAIT_S)
        while time.perf_counter() <= late._deadline:
            run.gate.wait(0.005)
        run.gate.set()
        assert ok.result(WAIT_S).rows == 1
        if hold is not None:   # (settled on the completer thread: waited for, then counted)
            assert hold.result(WAIT_S).rows == 1
        assert isinstance(late.exception(WAIT_S), RequestTimeoutError)
        assert [len(x) for x in run.batches] == ([2] if together else [1, 1])
        snap = b.metrics.snapshot()
        assert snap.success_count == (1 if together else 2)
        assert snap.errors_by_type == {"RequestTimeoutError": 1}
    finally:
        run.gate.set()
        b.close()


@pytest.mark.parametrize("whose", ["shed", "answered"])
def test_a_callback_raising_beside_an_slo_split_leaves_the_requests_put_back_to_run(
        whose, monkeypatch):
    """A batch split under a latency SLO (one shed, one run, one back to the queue) where
    the shed or the answered request's caller's done-callback raises SystemExit: the
    collector failed the whole batch it had popped, so the request put back in the queue
    ended with an internal error instead of running."""
    import core.batching.executor as executor_mod
    splits = []

    def split_three(waited, rows_, predict, slo):   # shed the 1st, run the 2nd, 3rd back
        splits.append(len(rows_))
        n = len(rows_)
        return ([1], [2], [0]) if n == 3 and len(splits) == 1 else (list(range(n)), [], [])

    monkeypatch.setattr(executor_mod, "choose_within_slo", split_three)
    # (the answers settled by the runner itself, not handed to the completer thread)
    monkeypatch.setattr(executor_mod, "_COMPLETE_COST_S", 1e9)
    run = GatedRun(gated=True)
    b = make(run, max_batch_size=8, max_wait_ms=0, policy="adaptive",
             latency_slo_ms=60_000)

    def explode(_):
        raise SystemExit("a caller's callback")

    try:
        hold, (shed, ran, back) = _queued_behind_a_held_run(run, b, 3)
        (shed if whose == "shed" else ran).add_done_callback(explode)
        run.gate.set()
        assert hold.result(WAIT_S).rows == 1
        assert type(shed.exception(WAIT_S)).__name__ == "SLOShedError"
        assert ran.result(WAIT_S).rows == 1
        assert back.result(WAIT_S).rows == 1   # it ran, after the others (was: failed)
        assert [len(x) for x in run.batches] == [1, 1, 1] and splits[0] == 3
        snap = b.metrics.snapshot()
        assert snap.success_count == 3 and snap.errors_by_type == {"SLOShedError": 1}
    finally:
        run.gate.set()
        b.close()
