"""Metrics: counts, percentiles against numpy, per-second series, bounded memory."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.metrics import TIMESERIES_COLUMNS, ModelMetrics


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_empty_metrics_have_zero_error_rate_not_nan():
    d = ModelMetrics().snapshot().to_dict()
    assert d["total_requests"] == 0 and d["error_rate"] == 0.0
    assert d["avg_latency_ms"] == 0.0
    for key in ("total_requests", "success_count", "error_count", "avg_latency_ms",
                "error_rate"):
        assert key in d and not (isinstance(d[key], float) and math.isnan(d[key]))


def test_counts_reasons_batch_sizes_and_errors():
    m = ModelMetrics()
    m.record_batch(rows=4, reason="full", compute_s=0.002, queue_s=[0.001, 0.003])
    m.record_batch(rows=1, reason="deadline", compute_s=0.001, queue_s=[],
                   failed={"InferenceError": ["boom"]})
    m.record_refused("OverloadedError", "queue full", count=3)
    d = m.snapshot().to_dict()
    assert d["total_requests"] == 6 and d["success_count"] == 2 and d["error_count"] == 4
    assert d["error_rate"] == pytest.approx(4 / 6)
    assert d["errors_by_type"] == {"InferenceError": 1, "OverloadedError": 3}
    assert d["release_reasons"] == {"full": 1, "deadline": 1}
    assert d["batch_sizes"] == {1: 1, 4: 1} and d["avg_batch_rows"] == 2.5
    assert d["avg_latency_ms"] == pytest.approx(4.0)  # (1+2 + 3+2) / 2
    assert d["avg_queue_ms"] == pytest.approx(2.0) and d["avg_compute_ms"] == pytest.approx(2.0)
    assert [e["type"] for e in d["recent_errors"]] == ["InferenceError", "OverloadedError"]


def test_percentiles_match_numpy_within_histogram_precision():
    rng = np.random.default_rng(7)
    queue = rng.lognormal(mean=-6, sigma=1.0, size=20_000)  # ~2.5 ms median
    m = ModelMetrics()
    for chunk in np.array_split(queue, 500):
        m.record_batch(rows=len(chunk), reason="full", compute_s=0.0005, queue_s=chunk.tolist())
    snap = m.snapshot()
    total_ms = (queue + 0.0005) * 1000
    for p, got in ((50, snap.p50_ms), (95, snap.p95_ms), (99, snap.p99_ms)):
        assert got == pytest.approx(np.percentile(total_ms, p), rel=0.02)
    assert snap.max_latency_ms == pytest.approx(total_ms.max(), rel=0.01)
    assert snap.avg_latency_ms == pytest.approx(total_ms.mean(), rel=1e-6)


def test_timeseries_per_second_with_idle_seconds_as_zero():
    clock = FakeClock()
    m = ModelMetrics(clock=clock, wall_clock=lambda: 1_000.0)
    m.record_batch(rows=2, reason="full", compute_s=0.001, queue_s=[0.001, 0.002])
    clock.t += 3.2  # three idle-ish seconds
    m.record_batch(rows=1, reason="deadline", compute_s=0.001, queue_s=[0.004], depth=5)
    df = m.snapshot().timeseries
    assert list(df.columns) == TIMESERIES_COLUMNS
    assert df["second"].tolist() == [0, 1, 2, 3]
    assert df["successes"].tolist() == [2, 0, 0, 1]
    assert df["queue_depth"].tolist() == [0, 0, 0, 5]
    assert df.loc[3, "p50_ms"] == pytest.approx(5.0, rel=0.02)
    assert math.isnan(df.loc[1, "p50_ms"])


def test_throughput_is_mean_over_recent_full_seconds():
    clock = FakeClock()
    m = ModelMetrics(clock=clock, wall_clock=lambda: 1_000.0)
    for _ in range(6):
        m.record_batch(rows=10, reason="full", compute_s=0.001, queue_s=[0.001] * 10)
        clock.t += 1.0
    assert m.snapshot().throughput_rps == pytest.approx(10.0)


def test_throughput_does_not_depend_on_who_read_the_metrics_before():
    """The same 200 requests read as 40 req/s on a model a page had polled while it was
    idle and 66.7 on one nobody had looked at: the rate was taken from the oldest second
    the series held, and reads while idle leave more of them (an adversary)."""
    clocks, models = [FakeClock(), FakeClock()], []
    for clock in clocks:
        models.append(ModelMetrics(timeseries_seconds=10, clock=clock,
                                   wall_clock=lambda: 1_000.0))
    for _ in range(24):                      # 12 idle seconds: one model polled, one not
        for clock in clocks:
            clock.t += 0.5
        models[1].snapshot()
    for m in models:
        m.record_batch(rows=200, reason="full", compute_s=0.001, queue_s=[0.001] * 200)
    for clock in clocks:
        clock.t += 3.2
    watched, unwatched = models[1].snapshot(), models[0].snapshot()
    assert watched.throughput_rps == unwatched.throughput_rps == pytest.approx(40.0)
    assert models[0].recent_rps() == models[1].recent_rps() == pytest.approx(40.0)
    # and a measurement younger than the window divides by its own time only
    clock = FakeClock()
    young = ModelMetrics(clock=clock, wall_clock=lambda: 1_000.0)
    young.record_batch(rows=30, reason="full", compute_s=0.001, queue_s=[0.001] * 30)
    clock.t += 3.0
    assert young.snapshot().throughput_rps == pytest.approx(10.0)


def test_memory_stays_bounded_over_long_runs():
    clock = FakeClock()
    m = ModelMetrics(timeseries_seconds=60, clock=clock, wall_clock=lambda: 1_000.0)
    for _ in range(5000):  # 5000 simulated seconds
        m.record_batch(rows=1, reason="deadline", compute_s=0.001, queue_s=[0.001])
        m.record_refused("OverloadedError", "x")
        clock.t += 1.0
    assert len(m._series) <= 60 and len(m._recent_errors) <= 50
    df = m.snapshot().timeseries
    assert len(df) == 60



def test_a_window_past_the_kept_series_gives_the_same_answer_looked_at_or_not():
    """Two models, the same requests; one is read every second, the other never: asked
    metrics(window_s=60) with 10 s kept, the one read said 0 requests over 10 s and the one
    left alone 200 over 15 s (kept by count, its series reached further back the less it
    was read; an adversary). The series is kept by time now."""
    answers = []
    for read_often in (True, False):
        clock = FakeClock()
        m = ModelMetrics(timeseries_seconds=10, clock=clock, wall_clock=lambda: 1_000.0)
        m.record_batch(rows=200, reason="full", compute_s=0.001, queue_s=[0.001] * 200)
        for _ in range(13):
            clock.t += 1.0
            if read_often:
                m.snapshot()
        snap = m.snapshot(window_s=60)
        answers.append((snap.total_requests, snap.window_s, len(snap.timeseries)))
        assert len(m._series) <= 10
    assert answers[0] == answers[1] == (0, pytest.approx(10.0, abs=1.0), 10), answers

def test_buckets_align_to_wall_clock_seconds():
    clock = FakeClock()  # monotonic 100.0 while the wall clock reads 1000.6
    m = ModelMetrics(clock=clock, wall_clock=lambda: 1_000.6)
    clock.t += 0.5  # wall 1001.1: already the second bucket
    m.record_batch(rows=1, reason="full", compute_s=0.001, queue_s=[0.001])
    df = m.snapshot().timeseries
    assert df["successes"].tolist() == [0, 1]
    assert df["time"].iloc[1].timestamp() == 1001.0


def test_reset_clears_everything():
    m = ModelMetrics()
    m.record_batch(rows=1, reason="full", compute_s=0.001, queue_s=[0.001])
    m.reset()
    assert m.snapshot().total_requests == 0


def test_record_many_equals_record_value_one_by_one():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from core.metrics.histograms import _hist, record_many

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.integers(1, 3_600_000_000), min_size=0, max_size=200))
    def check(values):
        fast, slow = _hist(), _hist()
        record_many(fast, np.asarray(values, dtype=np.int64))
        for v in values:
            slow.record_value(v)
        assert list(fast.counts) == list(slow.counts)
        assert fast.total_count == slow.total_count
        if values:
            assert fast.min_value == slow.min_value and fast.max_value == slow.max_value
            for p in (50, 90, 99, 99.9):
                assert fast.get_value_at_percentile(p) == slow.get_value_at_percentile(p)

    check()


def test_record_many_at_power_of_two_boundaries():
    from core.metrics.histograms import _hist, record_many

    values = [2**k + d for k in range(0, 32) for d in (-1, 0, 1) if 2**k + d >= 1] * 3
    fast, slow = _hist(), _hist()
    record_many(fast, np.asarray(values, dtype=np.int64))
    for v in values:
        slow.record_value(v)
    assert list(fast.counts) == list(slow.counts)


def test_a_window_follows_the_settings_and_the_totals_do_not():
    """After a change of settings the last seconds show the new batches; the cumulative
    figures still mix both (issue 14: 'Mean batch' must follow the settings)."""
    t = [100.0]
    m = ModelMetrics(clock=lambda: t[0], wall_clock=lambda: 1e9 + t[0])
    for s in range(10):  # ten seconds of 2-row batches at ~1 ms
        t[0] = 100.0 + s + 0.5
        for _ in range(10):
            m.record_batch(rows=2, reason="deadline", compute_s=0.0005, queue_s=[0.0005] * 2)
    m.record_refused("OverloadedError", "queue full", count=3)  # in second 9
    for s in range(10, 15):  # then five seconds of 8-row batches at ~10 ms
        t[0] = 100.0 + s + 0.5
        for _ in range(10):
            m.record_batch(rows=8, reason="full", compute_s=0.005, queue_s=[0.005] * 8)
    full, last5 = m.snapshot(), m.snapshot(window_s=5)
    # (seconds 10-14, the last one half gone: its label says what its counts cover)
    assert full.window_s is None and last5.window_s == 4.5
    assert full.avg_batch_rows == 4.0 and full.batch_sizes == {2: 100, 8: 50}
    assert last5.avg_batch_rows == 8.0 and last5.batch_sizes == {8: 50}
    assert last5.release_reasons == {"full": 50} and last5.errors_by_type == {}
    assert last5.total_requests == last5.success_count == 400
    assert 9.9 < last5.avg_latency_ms < 10.1 and 9.9 < last5.p50_ms < 10.2
    assert 4.9 < last5.p50_queue_ms < 5.1 and 4.9 < last5.p50_compute_ms < 5.1
    last6 = m.snapshot(window_s=6)  # reaches back into second 9: its batches and refusals
    assert last6.batch_sizes == {2: 10, 8: 50} and last6.errors_by_type == {"OverloadedError": 3}
    assert last6.error_count == 3 and last6.total_requests == 420 + 3
    everything = m.snapshot(window_s=60)  # a window wider than the run: the totals
    for key in ("total_requests", "success_count", "error_count", "batches", "rows_total",
                "batch_sizes", "release_reasons", "p50_ms", "p99_ms", "p50_queue_ms",
                "p99_compute_ms"):
        assert getattr(everything, key) == getattr(full, key), key
    with pytest.raises(ValueError, match="window_s must be > 0"):
        m.snapshot(window_s=0)
    with pytest.raises(ValueError, match="window_s must be > 0 seconds, got True"):
        m.snapshot(window_s=True)   # (was taken as 1 s)


def test_queue_depth_counts_what_was_waiting_when_a_batch_left():
    """Three requests queued behind a running batch leave together: the series says 3
    were waiting (it said 0, read after they had left)."""
    from core.batching import Batcher
    from core.config import BatchConfig
    from tests.helpers import WAIT_S, GatedRun, rows

    run = GatedRun(gated=True)
    b = Batcher("fake", run, ["y"], BatchConfig(max_batch_size=8, max_wait_ms=0))
    try:
        first = b.submit((rows(1),), 1)
        assert run.started.wait(WAIT_S)
        queued = [b.submit((rows(1),), 1) for _ in range(3)]
        run.gate.set()
        for f in [first, *queued]:
            f.result(WAIT_S)
        assert run.batch_rows == [1, 3]
        assert b.metrics.snapshot().timeseries["queue_depth"].max() == 3
    finally:
        run.gate.set()
        b.close()


def test_rates_and_uptime_after_a_reset_count_only_the_time_since_it():
    """A reset 0.9 s into a wall-clock second: its first bucket starts on the whole second
    (the series of models line up), and the 0.9 s before the reset counted as measured time:
    1,000 req/s read 550, uptime 2.95 s for 2.05. Fake clocks, so exact."""
    t = [100.9]
    m = ModelMetrics(clock=lambda: t[0], wall_clock=lambda: t[0])
    m.reset()
    while t[0] < 102.95:
        m.record_batch(rows=1, reason="full", compute_s=0.0005, queue_s=[0.0005], now=t[0])
        t[0] = round(t[0] + 0.001, 6)
    snap = m.snapshot(now=102.95)
    assert snap.throughput_rps == pytest.approx(1000.0, rel=1e-3)
    assert m.recent_rps() == pytest.approx(1000.0, rel=1e-3)
    assert snap.uptime_s == pytest.approx(2.05)


def test_the_series_shows_the_queue_of_a_stalled_model():
    """The depth was written only when a batch left: a run held with 40 requests queued
    charted an empty queue for as long as it was held. The supervisor now writes it."""
    import time

    from core import Engine, EngineConfig, build_demo_model
    from tests.helpers import WAIT_S, hold_runs

    with Engine(EngineConfig(demo_models=False)) as engine:
        engine.load_model(build_demo_model("tiny"), name="m")
        engine.configure("m", max_batch_size=4, max_wait_ms=0)
        gate, started = hold_runs(engine, "m")
        first = engine.submit("m", np.zeros((1, 4), np.float32))
        assert started.wait(WAIT_S)
        queued = [engine.submit("m", np.full((1, 4), i, np.float32)) for i in range(40)]
        try:
            deadline = time.monotonic() + WAIT_S     # (a bound on a hang, not a timing)
            while engine.metrics("m").timeseries["queue_depth"].max() < 40:
                assert time.monotonic() < deadline, "the series never showed the queue"
                time.sleep(0.02)
            assert engine.metrics("m").batches == 0    # nothing left meanwhile
        finally:
            gate.set()
        for f in [first] + queued:
            f.result(WAIT_S)


def test_a_window_longer_than_what_is_kept_says_what_it_covers():
    """window_s=1000 with 60 seconds kept gave 60 s of counts labelled 1000 (a rate read as
    success_count / window_s came out 0.6 req/s for 10), and window_s=inf raised
    OverflowError. Fake clocks: 10 req/s for 120 s."""
    t = [0.0]
    m = ModelMetrics(timeseries_seconds=60, clock=lambda: t[0], wall_clock=lambda: t[0])
    for sec in range(120):
        for k in range(10):
            t[0] = sec + k / 10
            m.record_batch(rows=1, reason="full", compute_s=0.001, queue_s=[0.001], now=t[0])
    for window in (1000.0, float("inf")):
        w = m.snapshot(now=120.0, window_s=window)
        assert w.window_s == pytest.approx(60.0) and w.total_requests == 600
        assert w.success_count / w.window_s == pytest.approx(10.0)
    assert m.snapshot(now=120.0, window_s=30.0).window_s == 30.0   # within: as asked
    fresh = ModelMetrics(clock=lambda: t[0], wall_clock=lambda: t[0])   # 5.5 s after a reset
    t[0] += 5.5
    assert fresh.snapshot(window_s=30.0).window_s == pytest.approx(5.5)


def test_a_short_window_covers_about_what_it_says():
    """An API user's window_s=1 at 0.1 s into a second covered that 0.1 s and said 1: 20
    requests of 200 a second. The window is whole seconds, the one whose start is nearest
    to window_s ago, and labelled with what it covers. Fake clocks: 100 req/s."""
    t = [0.0]
    m = ModelMetrics(clock=lambda: t[0], wall_clock=lambda: t[0])
    k = 0
    for now, window in ((3.1, 1.0), (4.9, 1.0), (6.5, 2.0), (8.05, 5.0), (9.3, 0.2)):
        while k / 100 < now:                     # recorded up to now, then read
            t[0] = k / 100
            m.record_batch(rows=1, reason="full", compute_s=0.001, queue_s=[0.001], now=t[0])
            k += 1
        w = m.snapshot(now=now, window_s=window)
        assert abs(w.window_s - window) <= 0.5 + 1e-9, (now, window, w.window_s)
        assert w.success_count / w.window_s == pytest.approx(100.0, rel=0.1), (now, window)
