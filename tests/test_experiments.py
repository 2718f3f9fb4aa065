"""Load generation and batching experiments: schedules, coordinated omission, sweeps,
recommendation, cost model, simulator (against analytic cases), exports and history."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import re
import threading
from concurrent.futures import Future

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from core import BatchConfig, Engine, EngineConfig, build_demo_model
from core.batching import Batcher
from core.errors import BatchlabError, ConfigError, EngineClosedError
from core.protocol import WireCodec
from core.lab import (MLSERVER_BATCHLAB_RUNTIME, SWEEP_COLUMNS, CostModel,
                              ExperimentStore, fit_cost_model, kserve_inference_service,
                              kserve_name, mlserver_settings, pareto_frontier, recommend,
                              simulate, sweep, tf_serving_batching, triton_config)
from tests.helpers import WAIT_S, SlowModel, wait_for
from core.lab import LOAD_COLUMNS, arrival_times, closed_loop, open_loop


# -- schedules -----------------------------------------------------------------------------------
def test_constant_schedule_is_exact():
    t = arrival_times("constant", 200.0, 1000, np.random.default_rng(0))
    np.testing.assert_allclose(np.diff(t), 0.005)
    assert t[-1] == pytest.approx(5.0)


def test_poisson_schedule_has_exponential_gaps_at_the_rate():
    gaps = np.diff(arrival_times("poisson", 100.0, 20_000, np.random.default_rng(1)))
    assert gaps.mean() == pytest.approx(0.01, rel=0.03)
    assert stats.kstest(gaps, "expon", args=(0, 0.01)).pvalue > 0.001
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("cv", [2.0, 4.0])
def test_bursty_schedule_keeps_rate_and_sets_variability(cv):
    gaps = np.diff(arrival_times("bursty", 100.0, 200_000, np.random.default_rng(2), cv=cv))
    assert gaps.mean() == pytest.approx(0.01, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.1)


def test_a_run_too_short_for_its_rate_says_so_instead_of_sending_nothing():
    """0.1 req/s for 5 s offers half a request: constant would send its first at 10 s and
    Poisson round(0.5) = 0. It used to return an empty run (nothing served, no error)."""
    from core.errors import ConfigError
    from core.lab.schedule import run_schedule
    for pattern in ("constant", "poisson"):   # (bursty draws: empty only by chance)
        with pytest.raises(ConfigError, match=r"offer 0\.5 requests.*rate x duration is at "
                                              r"least 1"):
            run_schedule(pattern, 0.1, 5.0, None, np.random.default_rng(0))
        with pytest.raises(ValueError, match="raise the rate or the duration"):
            open_loop(lambda x: None, lambda r: 0, 0.1, pattern=pattern, duration_s=5.0)
    assert len(run_schedule("constant", 1.0, 1.0, None, np.random.default_rng(0))) == 1
    # What is asked decides, not a draw: a bursty window that comes out empty by chance
    # (10 % of them at 3 req/s for 1 s) is an empty window, not a refusal mid-sweep
    empty = sum(len(run_schedule("bursty", 3.0, 1.0, None, np.random.default_rng(s))) == 0
                for s in range(300))
    assert empty > 0


def test_a_bounded_run_offers_the_nominal_load_in_every_window():
    """A bounded Poisson run sends round(rate x duration) requests at uniform times (a
    Poisson process conditioned on its count): its gaps are still exponential, but a short
    window offers what was asked, not 20 % more (which read as throughput above the offered
    load in a sweep); constant sends rate x duration; bursty draws gaps to the end."""
    from core.lab.schedule import run_schedule
    rng = np.random.default_rng(5)
    for seed in range(20):     # 20 short windows of 0.17 s at 200 req/s: 34 each
        t = run_schedule("poisson", 200.0, 0.17, None, np.random.default_rng(seed))
        assert len(t) == 34 and (np.diff(t) >= 0).all() and 0 <= t[0] and t[-1] <= 0.17
    long = run_schedule("poisson", 100.0, 200.0, None, rng)
    assert len(long) == 20_000
    assert stats.kstest(np.diff(long), "expon", args=(0, 0.01)).pvalue > 0.001
    assert len(run_schedule("constant", 200.0, 0.5, None, rng)) == 100
    bursty = run_schedule("bursty", 100.0, 5.0, None, rng, cv=4.0)
    assert bursty[-1] <= 5.0 and bursty[-1] > 4.0    # its gaps did not run out early
    assert len(run_schedule("poisson", 100.0, 1.0, 30, rng)) == 30
    done0 = Future()
    done0.set_result(None)
    # A run that count ends early is measured over its own schedule, not the duration
    quick = open_loop(lambda x: done0, lambda r: 0, 1000.0, pattern="constant", count=100)
    assert quick.duration_s < 1.0 and quick.summary()["achieved_rps"] > 500
    # Served at once, a run's achieved rate is at most what it offered.
    done = Future()
    done.set_result(None)
    for pattern in ("constant", "poisson"):
        for seed in range(5):
            res = open_loop(lambda x: done, lambda r: 0, 200.0, pattern=pattern,
                            duration_s=0.17, seed=seed)
            assert res.summary()["achieved_rps"] <= 200.0 * 1.001, (pattern, seed)


# -- open and closed loop against a deliberately slow fake model ---------------------------------


def _slow_batcher(per_batch_s: float) -> Batcher:
    return Batcher("slow", SlowModel(per_batch_s), ["y"],
                   BatchConfig(max_batch_size=1, max_wait_ms=0, max_queue=100_000,
                               timeout_ms=60_000))


def test_open_loop_latency_includes_queueing_when_the_engine_stalls():
    b = _slow_batcher(0.02)  # capacity 50 req/s; offered 200 req/s for 0.5 s
    try:
        res = open_loop(lambda x: b.submit((x,), 1), lambda rng: np.zeros((1, 1), np.float32),
                        rate_rps=200, pattern="constant", duration_s=0.5)
    finally:
        b.close()
    f = res.frame
    assert list(f.columns) == LOAD_COLUMNS and len(f) == 100 and f["ok"].all()
    # The sender kept its schedule (it never waits for answers) ...
    assert f["intended_s"].diff().dropna().round(6).eq(0.005).all()
    # ... so the last requests waited behind all the others: ~100 x 20 ms of service.
    assert f["latency_ms"].max() > 1500
    assert (f["latency_ms"] >= f["engine_ms"] - 1e-6).all()
    assert res.summary()["p99_ms"] > 1000


def test_closed_loop_clients_wait_for_answers():
    b = _slow_batcher(0.01)
    try:
        res = closed_loop(lambda x: b.submit((x,), 1), lambda rng: np.zeros((1, 1), np.float32),
                          concurrency=3, count=30)
    finally:
        b.close()
    f = res.frame
    assert len(f) == 30 and f["ok"].all() and set(f["client"]) == {0, 1, 2}
    # Each client has one request in flight: its sends are spaced by its latencies.
    for _, g in f.groupby("client"):
        g = g.sort_values("sent_s")
        assert (g["sent_s"].iloc[1:].to_numpy() >= g["done_s"].iloc[:-1].to_numpy() - 1e-3).all()


def test_load_runs_drive_any_system_that_returns_futures():
    """Benchmarks drive peers (the seed port, Ray Serve) with the same generator: results
    that are not engine Predictions count as successes without engine timings, and a
    failure or a refusal at submit is recorded by its type."""
    calls = []

    def submit(x):
        calls.append(x)
        if len(calls) == 3:
            raise OverflowError("refused")
        fut: Future = Future()
        if len(calls) == 5:
            fut.set_exception(ValueError("bad"))
        else:
            fut.set_result(x * 2)
        return fut

    res = open_loop(submit, lambda rng: np.ones((1, 2), np.float32), rate_rps=1000,
                    pattern="constant", count=20, duration_s=None)
    f = res.frame
    assert len(f) == 20 and f["ok"].sum() == 18
    assert list(f.loc[~f["ok"], "error"]) == ["OverflowError", "ValueError"]
    assert f.loc[f["ok"], "engine_ms"].isna().all() and (f["batch_rows"] == 0).all()
    s = res.summary()
    assert s["failed"] == 2 and np.isnan(s["mean_batch_rows"]) and s["p50_ms"] >= 0


def test_open_loop_sends_bursts_instead_of_sleeping_below_the_minimum():
    """Above 1 / _MIN_SLEEP_S requests/s the sender wakes at most every _MIN_SLEEP_S and
    sends what is due; latency still counts from each request's intended time."""
    from core.lab import schedule

    sent_at = []

    def submit(x):
        sent_at.append(x)
        fut: Future = Future()
        fut.set_result(x)
        return fut

    res = open_loop(submit, lambda rng: np.ones((1, 1), np.float32), rate_rps=20_000,
                    pattern="constant", count=400, duration_s=None)
    f = res.frame
    assert len(f) == 400 and f["ok"].all()
    assert f["intended_s"].diff().dropna().round(7).eq(0.00005).all()  # the schedule itself
    # Fewer distinct send instants than requests: several requests went per wake-up ...
    bursts = (f["sent_s"].diff().dropna() > schedule._MIN_SLEEP_S / 2).sum()
    assert bursts < 400 * 0.00005 / schedule._MIN_SLEEP_S * 3
    # ... and each one's latency includes how late its burst was.
    assert (f["latency_ms"] >= (f["sent_s"] - f["intended_s"]) * 1000 - 1e-9).all()


def test_open_loop_is_stoppable_and_reports_progress():
    b = _slow_batcher(0.0)
    stop = threading.Event()
    seen = []

    def progress(f):
        seen.append(f)
        if f > 0.2:
            stop.set()

    try:
        res = open_loop(lambda x: b.submit((x,), 1), lambda rng: np.zeros((1, 1), np.float32),
                        rate_rps=100, pattern="constant", duration_s=60, stop=stop,
                        progress=progress)
    finally:
        b.close()
    assert res.stopped and len(res.frame) < 6000 and seen[-1] == 1.0


def test_refusals_are_recorded_not_raised():
    def refuse(x) -> Future:
        raise RuntimeError("full")

    res = open_loop(refuse, lambda rng: 0, rate_rps=100, pattern="constant", count=5,
                    duration_s=None)
    assert (~res.frame["ok"]).all() and set(res.frame["error"]) == {"RuntimeError"}


def test_a_refused_send_lets_go_of_the_gil_now_and_then(monkeypatch):
    """Past capacity a sender refusing in a loop held the GIL until a forced switch and
    starved the engine in its process (the CNN offered 100k served 24k, not 53k:
    benchmarks/flood_inprocess.py). After a refusal the open loop and live traffic now let
    go of the GIL (sleep(0)), at most once per YIELD_GAP_S of their schedule, so a flood of
    refusals does not make the sender fall behind either (benchmarks/overload.py); an
    accepted send never yields. The closed loop's clients, with no schedule, yield after
    every refusal."""
    import core.lab.loadgen as loadgen
    import core.lab.traffic as traffic
    from core.lab.schedule import YIELD_GAP_S
    real_sleep = loadgen.time.sleep
    zeros = []

    def counting_sleep(s):
        if s == 0:
            zeros.append(threading.get_ident())
        real_sleep(s)

    monkeypatch.setattr(loadgen.time, "sleep", counting_sleep)  # the time module: all three
    assert traffic.time is loadgen.time
    # 40 sends 0.1 ms apart on the sender's clock, every other one refused (at 0.1, 0.3,
    # ... 3.9 ms): a yield at the first refusal at least 0.5 ms after the last yield, i.e.
    # at 0.1, 0.7, 1.3, 1.9, 2.5, 3.1, 3.7 ms: 7, not 20
    times = [(i * 1e-4, i * 1e-4) for i in range(40)]
    monkeypatch.setattr(loadgen, "paced", lambda due, stop: iter(times))
    n = itertools.count()

    def every_other(x) -> Future:
        if next(n) % 2:
            raise RuntimeError("full")
        fut = Future()
        fut.set_result(None)
        return fut

    res = open_loop(every_other, lambda rng: 0, rate_rps=2000, pattern="constant", count=40,
                    duration_s=None)
    assert (~res.frame["ok"]).sum() == 20
    assert YIELD_GAP_S == 0.0005 and len(zeros) == 7
    zeros.clear()
    res = open_loop(lambda x: _done_future(), lambda rng: 0,
                    rate_rps=2000, pattern="constant", count=40, duration_s=None)
    assert res.frame["ok"].all() and zeros == []   # nothing refused: never
    res = closed_loop(lambda x: (_ for _ in ()).throw(RuntimeError("full")), lambda rng: 0,
                      concurrency=1, count=30, duration_s=None)
    assert len(res.frame) == 30 and len(zeros) == 30
    zeros.clear()
    from core.lab import TrafficGenerator

    def refuse(target, x, **kw) -> Future:
        raise RuntimeError("full")

    gen = TrafficGenerator(refuse, "m", lambda rng: 0, rate_rps=400, duration_s=0.1).start()
    assert gen.wait(10)
    refused = gen.status().refused
    # 2.5 ms apart on its schedule: each refusal may yield; never more than one each
    assert refused > 10 and 0 < len(zeros) <= refused


def test_traffic_behind_its_schedule_stops_with_its_duration(monkeypatch):
    """1M req/s for 3 s flooded on past 17 s: the sender, behind its schedule, went on until
    it had sent every request due in the 3 s (a newcomer). A sender held past its duration
    (its first send blocked) stops then, says so in its end mark, and sends no backlog."""
    import time as _time

    from core.lab import TrafficGenerator
    from core.lab.traffic import LATE_GRACE_S
    ended: list = []
    holder: dict = {}

    def slow(target, x, **kw) -> Future:   # the first send is held past the duration
        gen = holder["gen"]
        while _time.perf_counter() < gen._t_start + 0.2 + LATE_GRACE_S + 0.05:
            _time.sleep(0.01)
        return _done_future()

    gen = holder["gen"] = TrafficGenerator(slow, "m", lambda rng: 0, rate_rps=1000,
                                           duration_s=0.2, on_end=lambda t, w: ended.append(w))
    gen.start()
    assert gen.wait(30)
    assert gen.status().sent == 1                        # (200 were due in the 0.2 s)
    assert gen.status().unsent == 199                    # (and its status says so)
    assert ended and "the sender fell behind its schedule: about 199 requests due in the " \
        "0.2 s were not sent" in ended[0], ended
    # on schedule, every request due is sent (the grace made long: a machine that holds
    # the sender past it would cut this one too, as it should)
    import core.lab.traffic as traffic
    monkeypatch.setattr(traffic, "LATE_GRACE_S", 600.0)
    gen = TrafficGenerator(lambda t, x, **kw: _done_future(), "m", lambda rng: 0,
                           rate_rps=200, duration_s=0.1, on_end=lambda t, w: ended.append(w))
    gen.start()
    from core.lab import arrival_stream
    due = len(list(arrival_stream("constant", 200, np.random.default_rng(0), 0.0, 0.1)))
    assert gen.wait(30) and gen.status().sent == due and "fell behind" not in ended[-1]
    assert gen.status().unsent == 0


def test_a_second_start_traffic_says_what_it_replaced(engine):
    """A second start_traffic to the same target and class stopped the first unsaid (a
    notebook newcomer): its returned status says what it replaced; a first start, or one
    after the last ended, says nothing."""
    first = engine.start_traffic("tiny", rate_rps=50, duration_s=None)
    try:
        assert first.replaced is None
        second = engine.start_traffic("tiny", rate_rps=80, pattern="poisson",
                                      duration_s=None)
        assert second.replaced is not None and second.replaced.startswith(
            "replaced the traffic already going to tiny: 50 req/s constant, 1 row(s) a "
            "request, "), second.replaced
        assert second.rate_rps == 80 and second.running
        assert [s.rate_rps for s in engine.traffic()] == [80]
        other = engine.start_traffic("tiny", rate_rps=10, priority=1, duration_s=None)
        assert other.replaced is None                    # (another class: beside it)
    finally:
        engine.stop_traffic("tiny")
    assert engine.start_traffic("tiny", rate_rps=50, duration_s=0.05).replaced is None


def _done_future() -> Future:
    fut = Future()
    fut.set_result(None)
    return fut


# -- sweep, pareto, recommendation --------------------------------------------------------------------
def test_sweep_returns_a_complete_typed_frame_and_restores_config():
    with Engine() as engine:
        engine.configure("tiny", max_batch_size=5, max_wait_ms=1.5)
        seen = []
        frame = sweep(engine, "tiny", [4, 16], [0.0, 1.0], rates_rps=[200],
                      concurrencies=[2], duration_s=0.3,
                      progress=lambda d, t, row: seen.append((d, t)))
        cfg = engine.batch_config("tiny")
    assert list(frame.columns) == SWEEP_COLUMNS and len(frame) == 10
    assert seen[-1] == (10, 10)
    # the model's own settings (5 / 1.5 ms) are measured too, at every load, as the baseline
    base = frame[frame["baseline"]]
    assert len(base) == 2 and set(zip(base["max_batch_size"], base["max_wait_ms"])) == {(5, 1.5)}
    assert frame["max_batch_size"].dtype.kind == "i" and frame["p99_ms"].dtype.kind == "f"
    assert (frame["achieved_rps"] > 0).all() and (frame["error_rate"] == 0).all()
    assert set(frame["load_kind"]) == {"rate", "clients"}
    assert (cfg.max_batch_size, cfg.max_wait_ms) == (5, 1.5)


FRAME = pd.DataFrame({
    "max_batch_size": [1, 8, 32, 32, 64], "max_wait_ms": [0.0, 1.0, 2.0, 5.0, 10.0],
    "achieved_rps": [1000.0, 3000.0, 5000.0, 5200.0, 5100.0],
    "p99_ms": [2.0, 3.0, 8.0, 20.0, 40.0], "error_rate": [0.0] * 5})


def _frame(rows: list[tuple]) -> pd.DataFrame:
    """(batch, wait, load, achieved, p99, ci_low, ci_high) -> a sweep frame."""
    return pd.DataFrame([{"max_batch_size": b, "max_wait_ms": w, "load_kind": "rate",
                          "load": load, "achieved_rps": got, "p99_ms": p99,
                          "p99_ci_low_ms": lo, "p99_ci_high_ms": hi, "error_rate": 0.0,
                          "measurements": 1}
                         for b, w, load, got, p99, lo, hi in rows])


def test_a_sweep_refuses_a_rate_its_windows_are_too_short_for_before_it_starts():
    """Rate 1 in windows of 2 s / 3 would send nothing at that point: refused up front,
    with the lowest rate that works, before the model's settings are touched."""
    from core.errors import ConfigError
    with Engine() as engine:
        engine.configure("tiny", max_batch_size=5)
        with pytest.raises(ConfigError, match=r"rate 1 req/s sends no request in a measuring "
                                              r"window of 0\.667 s.*at least 1\.5 req/s"):
            sweep(engine, "tiny", [4], [0.0], rates_rps=[100, 1], duration_s=2.0)
        with pytest.raises(ConfigError, match=r"window of 0\.5 s"):
            sweep(engine, "tiny", [4], [0.0], rates_rps=[1], duration_s=0.5, stability=False)
        assert engine.batch_config("tiny").max_batch_size == 5


def test_sweep_with_several_rows_per_request():
    with Engine() as engine:
        frame = sweep(engine, "tiny", [8], [0.0], rates_rps=[100], duration_s=0.3,
                      rows_per_request=3)
    assert (frame["mean_batch_rows"] >= 3).all()
    # the largest batch a request rode in: at least the mean, at most the limit
    assert ((frame["max_batch_rows"] >= frame["mean_batch_rows"])
            & (frame["max_batch_rows"] <= frame["max_batch_size"])).all(), frame


def test_pareto_frontier():
    front = pareto_frontier(FRAME)
    assert front["achieved_rps"].tolist() == [1000.0, 3000.0, 5000.0, 5200.0]  # 64 is dominated


def test_recommendation_is_not_decided_by_noise():
    """Issue 14: 32/0 'won' at 2,068 req/s with p99 2.6 ms over 8/0 at 2,021 with 1.72 ms,
    at the same offered load: the achieved rate is the load plus noise."""
    frame = _frame([(32, 0.0, 2000, 2068, 2.6, 2.2, 3.1), (8, 0.0, 2000, 2021, 1.72, 1.5, 2.0),
                    (32, 0.0, 500, 500, 1.1, 1.0, 1.3), (8, 0.0, 500, 498, 0.9, 0.8, 1.0)])
    rec = recommend(frame, p99_slo_ms=10)
    assert (rec.max_batch_size, rec.max_wait_ms, rec.load) == (8, 0.0, 2000)
    assert "at 2,000 req/s" in rec.reason and "1.50-2.00 ms" in rec.reason
    # 2.6 ms is 0.9 ms past the best, its interval apart from the best's: not a tie (its
    # interval's low end within 0.5 ms of the best's high end had made it one)
    assert rec.ties == ()


def test_a_setting_clearly_worse_is_not_a_tie_within_noise():
    """An adversary's frame: 1/0 at p99 1.90 ms (1.50-2.30) against 8/2 at 1.00 (0.95-1.05)
    was called "as well within noise" and chosen, the smaller setting. The margin (10 %,
    0.5 ms) is for the p99s; the intervals are apart."""
    frame = _frame([(8, 2.0, 1000, 1000, 1.00, 0.95, 1.05), (1, 0.0, 1000, 1000, 1.90, 1.50, 2.30)])
    rec = recommend(frame, p99_slo_ms=3)
    assert (rec.max_batch_size, rec.max_wait_ms) == (8, 2.0) and rec.ties == ()
    assert "within noise" not in rec.reason
    # Within the margin (1.45 ms, 0.45 ms past 1.00) or overlapping (1.04-3.0): ties, and
    # the smaller setting is chosen.
    for p99, lo, hi in ((1.45, 1.40, 1.50), (2.0, 1.04, 3.0)):
        frame = _frame([(8, 2.0, 1000, 1000, 1.00, 0.95, 1.05), (1, 0.0, 1000, 1000, p99, lo, hi)])
        rec = recommend(frame, p99_slo_ms=3)
        assert (rec.max_batch_size, rec.ties) == (1, ((8, 2.0),)), (p99, rec.reason)


def test_ties_within_noise_go_to_the_smaller_settings():
    frame = _frame([(32, 2.0, 2000, 2010, 1.70, 1.5, 2.2), (8, 0.0, 2000, 1990, 1.80, 1.5, 2.0),
                    (64, 5.0, 2000, 2000, 6.0, 5.5, 6.6)])
    rec = recommend(frame, p99_slo_ms=10)
    assert (rec.max_batch_size, rec.max_wait_ms) == (8, 0.0)  # 32/2 is no better, provably
    assert rec.ties == ((32, 2.0),) and "1 other setting(s) did as well within noise" in rec.reason


def test_settings_whose_batch_limit_never_acted_are_ties_and_the_smaller_is_chosen():
    """A newcomer's sweep recommended 32 over 8 at a load where no batch reached 8 rows:
    the two ran alike and 32's lower p99 (past the noise margin, on a disturbed point) was
    the machine's. Counted as a tie, said why, and the smaller chosen; a limit that did act
    (a batch of 8 rows) keeps them apart, as does a different wait."""
    def sweep_of(rows_8: int, rows_32: int, wait_32: float = 2.0) -> pd.DataFrame:
        return _frame([(32, wait_32, 1000, 1000, 1.00, 0.95, 1.05),
                       (8, 2.0, 1000, 1000, 1.90, 1.50, 1.95)]).assign(
            max_batch_rows=[rows_32, rows_8])
    rec = recommend(sweep_of(6, 7), p99_slo_ms=3)
    assert (rec.max_batch_size, rec.max_wait_ms, rec.ties) == (8, 2.0, ((32, 2.0),)), rec.reason
    assert ("8/2 ms (p99 1.90 ms, largest batch 6 rows) ran as 32/2 ms (p99 1.00 ms, largest "
            "batch 7) did: one more request fitted every batch under the smaller limit, so "
            "the limits never acted") in rec.reason
    assert "within noise" not in rec.reason and "of them this one waits least" in rec.reason
    # requests of 3 rows: a batch of 6 under a limit of 8 was full (a third did not fit)
    rec = recommend(sweep_of(3, 3).assign(rows_per_request=3), p99_slo_ms=3)
    assert rec.max_batch_size == 8 and "largest batch 3 rows" in rec.reason
    # several: each said with its own figures; one whose limit acted (a batch of 16 rows
    # under 16) is not one
    three = [sweep_of(6, 7), _frame([(16, 2.0, 1000, 1000, 1.90, 1.50, 1.95)])]
    for rows_16, alike in ((16, False), (12, True)):
        rec = recommend(pd.concat([three[0], three[1].assign(max_batch_rows=rows_16)],
                                  ignore_index=True), p99_slo_ms=3)
        assert rec.max_batch_size == 8, rec.reason
        assert rec.ties == (((32, 2.0), (16, 2.0)) if alike else ((32, 2.0),)), rec.reason
        assert ("; 16/2 ms (p99 1.90 ms, largest batch 12 rows) ran as 32/2 ms" in rec.reason
                ) is alike, rec.reason
    # errors apart: a limit that acted on failed batches is not seen in the answered ones
    errs = sweep_of(6, 7).assign(error_rate=[0.0, 0.009])
    assert recommend(errs, p99_slo_ms=3, max_error_rate=0.01).max_batch_size == 32
    for apart in (sweep_of(8, 7), sweep_of(6, 12), sweep_of(6, 7, wait_32=1.0),
                  sweep_of(6, 3).assign(rows_per_request=3),
                  sweep_of(6, 7).drop(columns="max_batch_rows"),
                  sweep_of(6, 7).assign(max_batch_rows=[np.nan, 6])):
        rec = recommend(apart, p99_slo_ms=3)
        assert rec.max_batch_size == 32 and rec.ties == (), rec.reason
        assert "limits never acted" not in rec.reason


def test_the_highest_load_met_decides_and_unserved_loads_do_not_count():
    frame = _frame([(8, 0.0, 500, 500, 0.9, 0.8, 1.0), (32, 2.0, 500, 500, 2.5, 2.3, 2.7),
                    (8, 0.0, 4000, 3000, 2.0, 1.8, 2.2),    # a quarter refused: not served
                    (32, 2.0, 4000, 3990, 4.0, 3.7, 4.4)])
    frame.loc[2, "error_rate"] = 0.25
    rec = recommend(frame, p99_slo_ms=10)
    assert (rec.max_batch_size, rec.load) == (32, 4000) and "highest load tried" in rec.reason
    none = recommend(frame, p99_slo_ms=0.5)
    assert none.max_batch_size is None and "lowest p99 measured was 0.9 ms" in none.reason
    assert "must hold at every lower load" not in none.reason   # (none met it anywhere)


def test_no_setting_met_says_when_one_met_it_higher_up_but_missed_below():
    """'No setting met p99 <= 10 ms' beside a table row at 4.4 ms read as a contradiction:
    the refusal names the miss at the lower load that rules it out."""
    frame = _frame([(32, 0.0, 300, 300, 36.0, 30.0, 40.0), (32, 0.0, 600, 600, 4.4, 4.0, 4.8)])
    rec = recommend(frame, p99_slo_ms=10)
    assert rec.max_batch_size is None
    assert ("max_batch_size=32, max_wait_ms=0 met it at load 600 but missed at 300 (p99 "
            "36.0 ms): a setting must hold at every lower load too") in rec.reason, rec.reason


def test_p99_interval_covers_the_p99_and_narrows_with_more_requests():
    from core.lab import p99_interval
    rng = np.random.default_rng(0)
    small, large = rng.exponential(1.0, 500), rng.exponential(1.0, 20_000)
    lo_s, hi_s = p99_interval(small)
    lo_l, hi_l = p99_interval(large)
    assert lo_l <= np.quantile(large, 0.99) <= hi_l
    assert hi_l - lo_l < hi_s - lo_s
    assert all(np.isnan(v) for v in p99_interval(small[:5]))


def test_p99_interval_holds_its_level_in_memory_proportional_to_the_requests():
    """A bootstrap of 400 resamples took 1.4 GB for one sweep point's 150,000 latencies (an
    adversary): the interval is now read off the order statistics; it covers the true p99
    about as often as its level says (seeded draws), and the same every time."""
    import tracemalloc
    from core.lab import p99_interval
    rng = np.random.default_rng(1)
    true_p99 = np.log(100.0)                       # of an exponential with mean 1
    covered = sum(lo <= true_p99 <= hi for lo, hi in
                  (p99_interval(rng.exponential(1.0, 2_000)) for _ in range(300)))
    assert 0.92 <= covered / 300 <= 0.98, covered
    x = rng.exponential(1.0, 150_000)
    tracemalloc.start()
    try:
        first = p99_interval(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * x.nbytes, peak               # (the bootstrap: 400 x 16 x the input)
    assert p99_interval(x) == first


# -- cost model and simulator --------------------------------------------------------------------------
def test_cost_model_fit_recovers_a_line():
    profile = pd.DataFrame({"batch_size": [1, 2, 4, 8, 16, 32]})
    profile["compute_ms"] = 0.3 + 0.05 * profile["batch_size"]
    cost = fit_cost_model(profile)
    assert cost.a_ms == pytest.approx(0.3) and cost.b_ms == pytest.approx(0.05)
    assert cost.r2 == pytest.approx(1.0) and cost(10) == pytest.approx(0.8)


def test_a_clipped_cost_line_is_the_best_line_of_its_kind_with_its_own_r2():
    """A profile whose line crosses zero below batch 1: a was clipped to 0 and the r2
    reported was the unclipped line's (0.981 for a model of 0.926; an adversary)."""
    n = np.array([1, 2, 4, 8, 16, 32], float)
    t = np.array([0.05, 0.06, 0.08, 0.5, 1.5, 4.0])
    cost = fit_cost_model(pd.DataFrame({"batch_size": n, "compute_ms": t}))
    b = (n * t).sum() / (n * n).sum()             # least squares through the origin
    assert cost.a_ms == 0.0 and cost.b_ms == pytest.approx(b)
    r2 = 1 - ((t - b * n) ** 2).sum() / ((t - t.mean()) ** 2).sum()
    assert cost.r2 == pytest.approx(r2)
    flat = fit_cost_model(pd.DataFrame({"batch_size": [1, 2, 4], "compute_ms": [3.0, 2.0, 1.0]}))
    assert (flat.a_ms, flat.b_ms, flat.r2) == (pytest.approx(2.0), 0.0, pytest.approx(0.0))


def test_simulator_matches_analytic_case_lone_requests():
    # Arrivals every 10 ms, service 2 ms, no wait: every request alone, latency = 2 ms.
    arr = np.arange(1, 1001) * 0.010
    r = simulate(CostModel(2.0, 0.0, 1.0), max_batch_size=32, max_wait_ms=0.0, rate_rps=100,
                 arrivals_s=arr)
    assert r["p50_ms"] == pytest.approx(2.0) and r["p99_ms"] == pytest.approx(2.0)
    assert r["mean_batch_rows"] == 1.0 and r["utilisation"] == pytest.approx(0.2, rel=0.01)


def test_simulator_matches_analytic_case_batches_fill_before_the_deadline():
    # Arrivals every 1 ms, batches of 4 fill 3 ms after their first request (before the
    # 5 ms deadline); service t(4) = 1 + 0.25 * 4 = 2 ms < 4 ms between batches.
    # Latencies within a batch: 3+2, 2+2, 1+2, 0+2 = 5, 4, 3, 2 ms.
    arr = np.arange(0, 4000) * 0.001
    r = simulate(CostModel(1.0, 0.25, 1.0), max_batch_size=4, max_wait_ms=5.0, rate_rps=1000,
                 arrivals_s=arr)
    assert r["mean_batch_rows"] == 4.0
    assert r["mean_ms"] == pytest.approx(3.5) and r["p50_ms"] == pytest.approx(3.5)
    assert r["throughput_rps"] == pytest.approx(1000, rel=0.01)


def test_the_what_if_serves_below_capacity_what_is_offered():
    """2,000 req/s offered, far below capacity: the prediction read '1,970/s' (a draw of
    5,000 Poisson arrivals runs 1.4 % off its rate). Poisson arrivals are now offered at
    the rate asked, as a bounded run offers them."""
    for seed in range(5):
        r = simulate(CostModel(0.5, 0.01, 1.0), 32, 2.0, 2000.0, n_requests=5000, seed=seed)
        assert r["throughput_rps"] == pytest.approx(2000.0, rel=0.005), (seed, r)


def test_simulator_deadline_releases_partial_batches():
    # Arrivals every 10 ms, wait 3 ms, batch 8: each request alone after its 3 ms wait.
    arr = np.arange(1, 501) * 0.010
    r = simulate(CostModel(1.0, 0.0, 1.0), max_batch_size=8, max_wait_ms=3.0, rate_rps=100,
                 arrivals_s=arr)
    assert r["p50_ms"] == pytest.approx(4.0) and r["mean_batch_rows"] == 1.0


# -- exports ---------------------------------------------------------------------------------------------
def _parse_pbtxt(text: str) -> dict:
    """A minimal protobuf text-format reader (nested blocks, repeated scalar fields)."""
    tokens = re.findall(r"[A-Za-z_]+|\{|\}|:|-?\d+(?:\.\d+)?", text)
    pos = 0

    def block() -> dict:
        nonlocal pos
        out: dict = {}
        while pos < len(tokens) and tokens[pos] != "}":
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
                value = float(tokens[pos]) if "." in tokens[pos] else int(tokens[pos])
                pos += 1
            else:
                assert tokens[pos] == "{"
                pos += 1
                value = block()
                assert tokens[pos] == "}"
                pos += 1
            out.setdefault(key, []).append(value)
        return out

    return block()


def test_triton_config_parses_and_carries_values():
    cfg = _parse_pbtxt(triton_config(32, 2.5, preferred_batch_sizes=[16, 32], max_queue=128))
    assert cfg["max_batch_size"] == [32]
    db = cfg["dynamic_batching"][0]
    assert db["preferred_batch_size"] == [16, 32]
    assert db["max_queue_delay_microseconds"] == [2500]
    assert db["default_queue_policy"][0]["max_queue_size"] == [128]


def test_tf_serving_batching_parses_and_carries_values():
    cfg = _parse_pbtxt(tf_serving_batching(64, 5.0, num_batch_threads=2))
    assert cfg["max_batch_size"][0]["value"] == [64]
    assert cfg["batch_timeout_micros"][0]["value"] == [5000]
    assert cfg["num_batch_threads"][0]["value"] == [2]



@pytest.mark.parametrize("wait_ms", [0.5, 2.0, 2.5, 7.3, 1000.0])
def test_mlserver_settings_carries_the_batching_in_seconds(wait_ms):
    settings = json.loads(mlserver_settings("mlp", 32, wait_ms))
    assert settings == {"name": "mlp", "implementation": MLSERVER_BATCHLAB_RUNTIME,
                        "platform": "onnxruntime", "max_batch_size": 32,
                        "max_batch_time": wait_ms / 1000, "parameters": {"uri": "./model.onnx"}}
    assert MLSERVER_BATCHLAB_RUNTIME == "batchlab_onnx_runtime.OnnxRuntimeModel"


def test_mlserver_settings_keeps_batching_on_with_a_zero_wait():
    """MLServer turns adaptive batching off at max_batch_time 0; Batchlab's wait of 0 still
    batches what is queued, so the file carries a tiny positive time instead."""
    on = json.loads(mlserver_settings("mlp", 8, 0))
    assert on["max_batch_size"] == 8 and 0 < on["max_batch_time"] <= 1e-5
    off = json.loads(mlserver_settings("mlp", 1, 0))  # max_batch_size 1: no batching anyway
    assert (off["max_batch_size"], off["max_batch_time"]) == (1, 0.0)


def test_mlserver_settings_takes_another_runtime_and_uri():
    settings = json.loads(mlserver_settings("m", 4, 1.0, implementation="my_pkg.MyOnnx",
                                            uri="/models/m.onnx"))
    assert settings["implementation"] == "my_pkg.MyOnnx"
    assert settings["parameters"] == {"uri": "/models/m.onnx"}


def test_mlserver_settings_writes_the_keys_batchlabs_mlserver_peer_writes(tmp_path):
    """The export and core.peers.mlserver (which tests/test_mlserver.py runs against a real
    MLServer) agree on every field they both write, batching included."""
    from core.models import build_demo_model
    from core.peers import MLServerProcess

    peer = MLServerProcess({"tiny": build_demo_model("tiny")}, max_batch_size=16,
                           max_batch_time_s=0.005)
    peer._write_repository(tmp_path)  # the files only; nothing is started
    written = json.loads((tmp_path / "tiny" / "model-settings.json").read_text())
    exported = json.loads(mlserver_settings("tiny", 16, 5.0))
    assert set(exported) <= set(written)
    assert {k: written[k] for k in exported if k != "parameters"} == {
        k: v for k, v in exported.items() if k != "parameters"}
    assert written["parameters"]["uri"] == exported["parameters"]["uri"]


@pytest.mark.parametrize("call, field", [
    (lambda: mlserver_settings("mlp", 0, 1.0), "max_batch_size"),
    (lambda: mlserver_settings("mlp", 2.5, 1.0), "max_batch_size"),
    (lambda: mlserver_settings("mlp", True, 1.0), "max_batch_size"),
    (lambda: mlserver_settings("mlp", 8, -1.0), "max_wait_ms"),
    (lambda: mlserver_settings("mlp", 8, float("nan")), "max_wait_ms"),
    (lambda: mlserver_settings("", 8, 1.0), "name"),
    (lambda: mlserver_settings("mlp", 8, 1.0, implementation="OnnxModel"), "implementation"),
    (lambda: mlserver_settings("mlp", 8, 1.0, uri=""), "uri"),
    (lambda: kserve_inference_service("mlp", 0, 1.0), "max_batch_size"),
    (lambda: kserve_inference_service("mlp", 8, -0.1), "max_wait_ms"),
    (lambda: kserve_inference_service("My_Model", 8, 1.0), "name"),
    (lambda: kserve_inference_service("3d-unet", 8, 1.0), "name"),
    (lambda: kserve_inference_service("a" * 64, 8, 1.0), "name"),
    (lambda: kserve_inference_service("mlp", 8, 1.0, storage_uri="bucket/model"), "storage_uri"),
    (lambda: kserve_inference_service("mlp", 8, 1.0, runtime="Triton Server"), "runtime"),
])
def test_exports_refuse_bad_settings_naming_the_field(call, field):
    with pytest.raises(ConfigError, match=rf"^{field} must"):
        call()


def test_a_bad_kserve_name_error_suggests_a_valid_one():
    with pytest.raises(ConfigError, match="try 'resnet-50-v2'"):
        kserve_inference_service("ResNet_50.v2", 8, 1.0)
    assert kserve_name("3d_unet") == "model-3d-unet"
    assert kserve_name("___") == "model"
    assert len(kserve_name("a" * 100)) == 63
    for raw in ("mlp", "ResNet_50.v2", "3d_unet", "x." * 40, "-a-"):
        kserve_inference_service(kserve_name(raw), 8, 1.0)  # always accepted


def _parse_yaml_mappings(text: str) -> dict:
    """A minimal YAML reader for nested mappings of scalars (all an InferenceService here
    needs): comments skipped, two-space indentation, ints, JSON-quoted or bare strings."""
    root: dict = {}
    stack = [(-1, root)]
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        key, sep, value = line.strip().partition(":")
        assert sep and indent % 2 == 0, f"not a mapping line: {line!r}"
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        assert key not in parent, f"duplicate key {key!r}"
        value = value.strip()
        if not value:
            parent[key] = {}
            stack.append((indent, parent[key]))
        elif value.startswith('"'):
            parent[key] = json.loads(value)
        elif re.fullmatch(r"-?\d+", value):
            parent[key] = int(value)
        else:
            parent[key] = value
    return root


def test_kserve_inference_service_carries_the_batcher_and_the_model():
    doc = _parse_yaml_mappings(kserve_inference_service(
        "mlp", 32, 4.0, storage_uri="s3://models/mlp", runtime="kserve-tritonserver"))
    assert doc == {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "mlp"},
        "spec": {"predictor": {
            "batcher": {"maxBatchSize": 32, "maxLatency": 4},
            "model": {"modelFormat": {"name": "onnx"}, "protocolVersion": "v2",
                      "runtime": "kserve-tritonserver", "storageUri": "s3://models/mlp"}}}}


@pytest.mark.parametrize("wait_ms, latency_ms", [(0, 1), (0.4, 1), (0.5, 1), (1.49, 1),
                                                 (2.5, 3), (20, 20)])
def test_kserve_max_latency_is_whole_milliseconds_and_never_zero(wait_ms, latency_ms):
    """KServe's batcher reads maxLatency in whole ms, and 0 as its default of 5000 ms."""
    text = kserve_inference_service("mlp", 8, wait_ms)
    batcher = _parse_yaml_mappings(text)["spec"]["predictor"]["batcher"]
    assert batcher == {"maxBatchSize": 8, "maxLatency": latency_ms}
    assert "runtime" not in _parse_yaml_mappings(text)["spec"]["predictor"]["model"]
    assert "v1 :predict requests only" in text  # the caveat travels with the file


def test_kserve_storage_uri_is_quoted_safely():
    uri = 'gs://b/a path: with "quotes" # and a hash'
    doc = _parse_yaml_mappings(kserve_inference_service("mlp", 8, 1.0, storage_uri=uri))
    assert doc["spec"]["predictor"]["model"]["storageUri"] == uri


@pytest.mark.timeout(180)
def test_a_real_mlserver_batches_with_the_exported_model_settings():
    """MLServer itself reads the exported file: started with it (and nothing else configuring
    batching), it merges a burst of concurrent one-row requests into fewer session runs."""
    from core.models import build_demo_model
    from core.peers import MLServerProcess
    from tests.test_mlserver import _burst, _require_mlserver, _run_rows, _sample

    class ExportedSettings(MLServerProcess):
        """Batchlab's MLServer peer with its model-settings.json replaced by the export."""

        def __init__(self, models, settings: dict[str, str]) -> None:
            super().__init__(models)  # no batching of its own
            self.exported = settings

        def _write_repository(self, folder) -> None:
            super()._write_repository(folder)
            for name, text in self.exported.items():
                (folder / name / "model-settings.json").write_text(text)

    _require_mlserver()
    import onnxruntime as ort

    data = build_demo_model("tiny")
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    # A 100 ms window: the burst's requests all arrive inside it, even on a busy machine.
    settings = mlserver_settings("tiny", 16, 100.0, uri="./model.onnx")
    with ExportedSettings({"tiny": data}, {"tiny": settings}).start() as srv:
        n = 32
        feeds = [_sample(session, rows=1, seed=seed) for seed in range(n)]
        before = _run_rows(srv, "tiny")
        answers = _burst(srv, "tiny", feeds)
        count, rows = (a - b for a, b in zip(_run_rows(srv, "tiny"), before))
    for f, answer in zip(feeds, answers):
        np.testing.assert_allclose(answer["y"], session.run(None, f)[0], rtol=1e-5)
    assert rows == n
    assert n / 16 <= count < n, f"{count:g} session runs for {n} requests"

# -- history ---------------------------------------------------------------------------------------------
def test_history_round_trips_through_sqlite(tmp_path):
    store = ExperimentStore(tmp_path / "data" / "experiments.sqlite")
    rid = store.save("first", {"model": "mlp", "duration_s": 3}, FRAME)
    rid2 = store.save("second", {"model": "tiny"}, FRAME.head(2))
    runs = store.list()
    assert runs["id"].tolist() == [rid2, rid] and runs["points"].tolist() == [2, 5]
    got = store.get(rid)
    pd.testing.assert_frame_equal(got["results"], FRAME, check_dtype=False)
    assert got["config"] == {"model": "mlp", "duration_s": 3}
    assert {"onnxruntime", "python", "cpus"} <= set(got["environment"])
    both = store.compare([rid, rid2])
    assert len(both) == 7 and set(both["run"]) == {"first", "second"}
    csv_path = tmp_path / "run.csv"
    store.export_csv(rid, csv_path)
    assert pd.read_csv(csv_path).shape == FRAME.shape
    assert store.delete(rid) and not store.delete(rid)
    with pytest.raises(KeyError, match=f"no experiment run with id {rid}"):
        store.get(rid)
    # A fresh store on the same file sees what was saved (it is a real file).
    assert ExperimentStore(tmp_path / "data" / "experiments.sqlite").list()["id"].tolist() == [rid2]


def test_history_keeps_results_exactly_and_reads_runs_saved_before(tmp_path):
    path = tmp_path / "experiments.sqlite"
    store = ExperimentStore(path)
    frame = pd.DataFrame({"cpu": [3e-12, 0.1 + 0.2, float("nan")], "p99": [1.0, np.inf, -np.inf],
                          "rate": [1, 2, 3], "ok": [True, False, True], "name": ["a", None, "c"]})
    got = store.get(store.save("exact", {}, frame))["results"]
    pd.testing.assert_frame_equal(got, frame)  # dtypes too; 3e-12 is not rounded to 0
    assert got["cpu"][1] == 0.1 + 0.2
    # a run written by the earlier store (pandas' JSON) is still listed and read
    import sqlite3
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO runs (name, created, config, environment, results) VALUES "
                   "(?,?,?,?,?)", ("old", 1.0, "{}", "{}", FRAME.to_json(orient="split")))
    runs = ExperimentStore(path).list()
    assert runs["name"].tolist() == ["old", "exact"] and runs["points"].tolist() == [5, 3]
    old_id = int(runs["id"][0])
    pd.testing.assert_frame_equal(store.get(old_id)["results"], FRAME, check_dtype=False)


def test_history_drops_the_oldest_runs_past_its_bound_and_refuses_a_run_too_large(tmp_path):
    path = tmp_path / "experiments.sqlite"
    big = pd.DataFrame({"x": np.arange(3000, dtype=np.float64) / 7})  # ~60 KB as JSON
    one = len(json.dumps(WireCodec([]).encode(big)))
    store = ExperimentStore(path, max_bytes=3 * one + 5000)
    ids = [store.save(f"run {i}", {"i": i}, big) for i in range(6)]
    runs = store.list()
    assert runs["id"].tolist() == ids[:2:-1]  # the three newest, newest first
    usage = store.usage()
    assert usage["runs"] == 3 and usage["dropped"] == 3
    assert usage["bytes"] <= usage["max_bytes"] == 3 * one + 5000
    # the file gives the dropped runs' pages back (it does not grow with every run)
    size = path.stat().st_size
    for i in range(6):
        store.save(f"more {i}", {}, big)
    assert path.stat().st_size < size * 1.5
    assert store.usage()["dropped"] == 9
    with pytest.raises(ConfigError, match="more than the whole history's bound"):
        store.save("huge", {}, pd.DataFrame({"x": np.arange(60_000) / 7}))
    assert store.usage()["runs"] == 3
    # the bound from the environment, in MiB; a bad value is named
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BATCHLAB_HISTORY_MAX_MB", "1.5")
        assert ExperimentStore(path).max_bytes == int(1.5 * 2**20)
        mp.setenv("BATCHLAB_HISTORY_MAX_MB", "lots")
        with pytest.raises(ConfigError, match="BATCHLAB_HISTORY_MAX_MB .* got 'lots'"):
            ExperimentStore(path)


def test_a_sweep_that_could_measure_nothing_is_refused_and_a_point_given_twice_runs_once(
        engine):
    """rows_per_request=1000 at max batch size 8 ended "done" with every request refused
    and advice to relax the target; stability="x" failed with an AttributeError; [8, 8]
    measured one point twice (an adversary)."""
    for kw, words in (({"rows_per_request": 1000}, "rows_per_request=1000 is more than max "
                       "batch size 8: every request of those points would be refused"),
                      ({"stability": "x"}, "stability must be True (the default rule), "
                       "False (one window) or a StabilityRule"),
                      ({"rows_per_request": "x"}, "rows_per_request must be an int")):
        with pytest.raises(ConfigError, match=re.escape(words)):
            sweep(engine, "tiny", [8], [0.0], rates_rps=[50.0], duration_s=0.1, **kw)
        job = engine.start_job("sweep", "tiny", max_batch_sizes=[8], max_waits_ms=[0.0],
                               rates_rps=[50.0], duration_s=0.1, save=False, **kw)
        done = engine.wait_job(job.job_id, timeout_s=60)
        assert done.state == "failed" and words in done.error, done.error
        assert done.partial == []                                   # nothing measured
    frame = sweep(engine, "tiny", [8, 8], [0.0, 0.0], rates_rps=[50.0, 50.0],
                  duration_s=0.1, stability=False, baseline=False)
    assert len(frame) == 1


def test_history_bound_keeps_the_run_being_written_and_runs_still_running(tmp_path):
    """A sweep's own run, saved point by point, was the oldest: runs saved beside it made
    the bound drop it, and the sweep failed with "no experiment run with id 5"; a run
    growing past the bound dropped every run, itself too (an adversary). Finished runs go
    first, the run being written never, and an update past the whole bound is refused."""
    big = pd.DataFrame({"x": np.arange(3000, dtype=np.float64) / 7})
    one = len(json.dumps(WireCodec([]).encode(big)))
    store = ExperimentStore(tmp_path / "experiments.sqlite", max_bytes=3 * one + 5000)
    running = store.save("a sweep, running", {"partial": True}, big)
    store.running_runs = lambda: {running}            # (the engine's jobs say which run)
    dead = store.save("a sweep cut by a stop", {"partial": True}, big)   # ended: goes first
    done = [store.save(f"run {i}", {"partial": False}, big) for i in range(4)]
    assert store.list()["id"].tolist() == [done[3], done[2], running]   # finished ones went
    assert dead not in store.list()["id"].tolist()
    store.update(running, {"partial": True}, big)
    assert running in store.list()["id"].tolist()
    store.update(done[3], {}, pd.DataFrame({"x": np.arange(3500) / 7}))   # grows: others go
    assert done[3] in store.list()["id"].tolist()
    with pytest.raises(ConfigError, match=f"run {running} now takes over .* more than the "
                                          "whole history's bound"):
        store.update(running, {"partial": True}, pd.DataFrame({"x": np.arange(60_000) / 7}))
    assert running in store.list()["id"].tolist()


def test_a_sweep_goes_on_when_the_history_loses_or_locks_its_run(engine, tmp_path,
                                                                 monkeypatch):
    """A sweep failed with KeyError when its run was deleted from the history while it ran
    (the History's Delete on its partial row), and with "database is locked" when another
    process held the file: the points measured were lost (an adversary). The sweep ends
    done with every point in its result, and says why the history lacks them."""
    import sqlite3

    monkeypatch.setenv("BATCHLAB_DATA_DIR", str(tmp_path))
    store = engine.store
    assert store.running_runs == engine._lab.jobs.running_runs   # (the bound keeps them)
    seen: dict = {}

    def delete_first(run_id, config, results=None, _real=store.update):
        if "deleted" not in seen:   # (the run deleted once its first point was kept)
            seen["deleted"] = run_id
            store.delete(run_id)
        return _real(run_id, config, results)

    monkeypatch.setattr(store, "update", delete_first)
    job = engine.start_job("sweep", "tiny", max_batch_sizes=[2, 4, 8], max_waits_ms=[0.0],
                           rates_rps=[100.0], duration_s=0.2)
    done = engine.wait_job(job.job_id, timeout_s=120)
    assert done.state == "done", done.error
    assert done.run_id is None and done.result["run_id"] is None
    assert {2, 4, 8} <= set(done.result["frame"]["max_batch_size"])   # every point
    assert done.result["history_note"].startswith(
        f"its run {seen['deleted']} was deleted from the history while it ran, and is not "
        "saved again"), done.result
    assert store.list().empty                                       # not saved again

    def locked(*args, **kw):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "update", locked)
    job = engine.start_job("sweep", "tiny", max_batch_sizes=[2, 4], max_waits_ms=[0.0],
                           rates_rps=[100.0], duration_s=0.2)
    done = engine.wait_job(job.job_id, timeout_s=120)
    assert done.state == "done", done.error
    assert {2, 4} <= set(done.result["frame"]["max_batch_size"])
    assert done.result["history_note"] == (
        "the history could not keep its points (OperationalError: database is locked): what "
        "was saved before is there, the rest is in the job's result only"), done.result
    # a listing leaves a finished job's points out (they are in its result; 326 kB a call
    # after a 401-point sweep; an adversary)
    assert [j.partial for j in engine.jobs()] == [[], []]
    assert len(engine.job(job.job_id).partial) >= 2


class _StallOnceEngine:
    """Answers every request after 1 ms, except during the first measurement of
    max_batch_size=16, when every answer takes 60 ms (a stall)."""

    def __init__(self) -> None:
        from core import BatchConfig
        self.cfg = BatchConfig(max_batch_size=8, max_wait_ms=0.0)
        self.seen16 = 0

    def batch_config(self, model):
        return self.cfg

    def configure(self, model, **changes):
        self.cfg = self.cfg.replace(**changes)
        if changes.get("max_batch_size") == 16:
            self.seen16 += 1

    def sample_input(self, model, rows=1, seed=0):
        return np.zeros((rows, 4), np.float32)

    def submit(self, model, x):
        from concurrent.futures import Future
        fut = Future()
        delay = 0.06 if (self.cfg.max_batch_size == 16 and self.seen16 == 1) else 0.001
        threading.Timer(delay, fut.set_result, [None]).start()
        return fut


def test_an_outlier_point_is_measured_again_and_the_median_kept():
    engine = _StallOnceEngine()
    frame = sweep(engine, "m", [1, 4, 8, 16], [0.0], rates_rps=[100], duration_s=0.3)
    row = frame[frame["max_batch_size"] == 16].iloc[0]
    assert row["measurements"] == 3 and engine.seen16 == 3
    assert row["p99_ms"] < 30, "the stall was not kept"
    rec = recommend(frame, p99_slo_ms=100)
    assert "outlier point(s) were measured three times (median kept)" in rec.reason


def test_simulator_adds_the_overhead_at_the_rate():
    arr = np.arange(1, 1001) * 0.010  # 100 req/s, every request alone
    cost = CostModel(2.0, 0.0, 1.0, overhead_ms=1.0, overhead_per_krps_ms=0.5)
    r = simulate(cost, max_batch_size=32, max_wait_ms=0.0, rate_rps=100, arrivals_s=arr)
    assert r["p50_ms"] == pytest.approx(2.0 + 1.0 + 0.05)
    assert cost.overhead_at(4000) == pytest.approx(3.0)


def test_the_simulator_serves_no_more_than_the_engines_work_per_request_allows():
    """A cheap model: runs of 0.01 ms, but 30 us of engine work per request. Its capacity
    is ~33k req/s, not the 3.2M its runs alone allow: offered 100k, the simulator serves
    ~33k and the latency grows with the queue (before, it stayed flat past capacity);
    below capacity the work adds about itself to the latency, not a batch's worth."""
    from core.lab import with_capacity
    cost = CostModel(0.01, 0.0, 1.0, per_request_ms=0.03)
    assert cost.capacity_rps(32) == pytest.approx(1000 / 0.03)
    assert CostModel(1.0, 0.0, 1.0, per_request_ms=0.001).capacity_rps(32) == 32_000  # runs
    over = simulate(cost, 32, 1.0, 100_000.0, n_requests=20_000)
    assert over["throughput_rps"] == pytest.approx(cost.capacity_rps(32), rel=0.02)
    assert over["utilisation"] > 0.99 and over["p99_ms"] > 100
    bare = CostModel(0.01, 0.0, 1.0)
    for rate in (2_000.0, 10_000.0):
        under = simulate(cost, 32, 1.0, rate, n_requests=20_000)
        alone = simulate(bare, 32, 1.0, rate, n_requests=20_000)
        assert under["throughput_rps"] == pytest.approx(rate, rel=0.05)
        assert 0 <= under["p50_ms"] - alone["p50_ms"] < 0.1  # ~30 us, not 32 x 30 us
    assert simulate(bare, 32, 1.0, 100_000.0, n_requests=20_000)["p99_ms"] < 5  # the old flat
    # Lone requests every 10 ms: the run's 2 ms plus the 0.5 ms of work, exactly.
    arr = np.arange(1, 1001) * 0.010
    r = simulate(CostModel(2.0, 0.0, 1.0, per_request_ms=0.5), 32, 0.0, 100, arrivals_s=arr)
    assert r["p50_ms"] == pytest.approx(2.5) and r["throughput_rps"] == pytest.approx(100, rel=0.01)
    # From a measured capacity: the work per request is its inverse.
    assert with_capacity(bare, 20_000.0).per_request_ms == pytest.approx(0.05)
    assert with_capacity(bare, None) is bare


def test_the_engines_work_is_told_apart_per_request_and_per_batch():
    """Measured on tiny here: 61k req/s at max batch size 8 and 105k at 32, 45k at 4. From
    32 alone the what-if put the ceiling at 4 at 105k (2.3x what the engine served); the
    line through two sizes, p + q / k, predicts the sizes between and around them."""
    from core.lab import with_capacities, with_capacity
    bare = CostModel(0.001, 0.0001, 1.0)
    cost = with_capacities(bare, {32: 1000 / 0.0095, 8: 1000 / 0.0163}, 32)
    q = (0.0163 - 0.0095) / (1 / 8 - 1 / 32)
    assert cost.per_batch_ms == pytest.approx(q) and cost.per_request_ms == pytest.approx(0.0095 - q / 32)
    assert cost.capacity_batches == (8, 32) and cost.capacity_batch == 32
    for k, measured in ((8, 1000 / 0.0163), (32, 1000 / 0.0095)):   # through both points
        assert cost.capacity_rps(k) == pytest.approx(measured)
    assert cost.capacity_rps(4) == pytest.approx(1000 / (cost.per_request_ms + q / 4))
    assert cost.capacity_rps(4) < 0.5 * with_capacity(bare, 1000 / 0.0095, 32).capacity_rps(4)
    # the simulator serves what the work at its batch size allows
    sim = simulate(cost, 4, 1.0, 3 * cost.capacity_rps(4), n_requests=20_000)
    assert sim["throughput_rps"] == pytest.approx(cost.capacity_rps(4), rel=0.03)
    # bigger batches not cheaper a request (noise, or the runs set it): no work per batch,
    # the model's own size's figure; all of it per batch: a line through the origin
    flat = with_capacities(bare, {32: 20_000.0, 8: 21_000.0}, 32)
    assert flat.per_batch_ms == 0 and flat.capacity_rps(8) == pytest.approx(20_000.0)
    from core.ui.whatif import whatif_work_words
    assert "50.0 µs per request, the same at every batch size" in \
        whatif_work_words(flat) and "per batch (" not in whatif_work_words(flat)
    assert "µs per batch (from the capacity" in whatif_work_words(cost)
    # under the table of predicted against measured: the reassurance only when it holds
    from core.ui.whatif import whatif_accuracy
    holds, words = whatif_accuracy(cost, [0.05, -0.12])
    assert holds and "predicts well" in words
    holds, words = whatif_accuracy(cost, [1.3078, 2.2063, float("nan")])
    assert not holds and "off by up to 221%" in words and "predicts well" not in words
    steep = with_capacities(bare, {32: 40_000.0, 8: 5_000.0}, 32)
    assert steep.per_request_ms == 0 and steep.per_batch_ms > 0
    assert "engine work all of it per batch: " in whatif_work_words(steep)
    # fewer than two sizes measured: one point, as with_capacity
    one = with_capacities(bare, {32: 20_000.0, 8: None}, 32)
    assert one == with_capacity(bare, 20_000.0, 32) and one.capacity_batches == ()
    assert with_capacities(bare, {}, 32) is bare


def test_measured_capacity_gives_a_cheap_model_its_real_ceiling():
    """On the real engine: the MLP's capacity measured at a backlog (bursts of requests at
    once) is what an open-loop overload, offered 1.5 times that, serves in the same run
    (the best of three half-second trials, within a factor of three: the two measure the
    same ceiling, not to the percent, and the open loop's sender shares the interpreter
    and, on a busy machine, the one free core, which the bursts, sent before they are
    timed, do not: one trial in a run served 7k of 47k, and two of 2x at once 8.7k of
    44k), and the what-if fitted with it serves no more than that when offered more."""
    from core import EngineConfig, build_demo_model
    from core.lab import fit_cost_model, measure_capacity, profile_cost, with_capacity
    with Engine(EngineConfig(demo_models=False)) as engine:
        engine.load_model(build_demo_model("mlp"), name="mlp")
        engine.configure("mlp", max_batch_size=16, max_wait_ms=1.0, max_queue=4096)
        cost = fit_cost_model(profile_cost(engine, "mlp", batch_sizes=(1, 4, 16), iterations=5))
        got = measure_capacity(engine, "mlp", bursts=3, size=1000)
        x = engine.sample_input("mlp", rows=1)
        # offered more than the bursts measured: what it serves is its capacity
        served = max(open_loop(lambda v: engine.submit("mlp", v), lambda rng: x, 1.5 * got,
                               pattern="poisson", duration_s=0.5, seed=k
                               ).summary()["achieved_rps"] for k in range(3))
    assert got is not None and 0.5 < got / served < 3.0, (got, served)
    fitted = with_capacity(cost, got)
    assert fitted.capacity_rps(16) <= got * 1.0001
    assert simulate(fitted, 16, 1.0, 2 * got, n_requests=5000)["throughput_rps"] < 1.05 * got


class _SlowSubmitEngine:
    """Every submit takes 2 ms of the caller's thread (at most ~500 req/s can be offered)
    and is answered at once: a load generator that cannot keep up with a fast rate."""

    def __init__(self) -> None:
        from core import BatchConfig
        self.cfg = BatchConfig(max_batch_size=8, max_wait_ms=0.0)

    def batch_config(self, model):
        return self.cfg

    def sample_input(self, model, rows=1, seed=0):
        return np.zeros((rows, 4), np.float32)

    def submit(self, model, x, timeout_ms=None):
        import time
        from concurrent.futures import Future
        time.sleep(0.002)
        fut = Future()
        fut.set_result(None)
        return fut


def test_calibration_halves_a_rate_the_load_generator_cannot_offer():
    """At 2,000 req/s the generator here offers ~470 and falls seconds behind: calibrating
    there would fit its lag as the engine's overhead (a line of ~300 ms per 1,000 req/s).
    The rate is halved until 90 % is served on schedule (250 req/s here), and the line is
    fitted at the rates really used; a rate none of whose halvings kept up is left out."""
    from core.lab import calibrate_overhead
    cost = calibrate_overhead(_SlowSubmitEngine(), "m", CostModel(0.1, 0.0, 1.0),
                              [2000.0, 100.0], duration_s=0.3)
    # each answer takes the submit's 2 ms: that overhead, and no line in the rate (the
    # lag fitted would be ~300 ms per 1,000 req/s; bounds wide enough for a busy machine,
    # where a 2 ms sleep takes longer)
    assert 1.0 < cost.overhead_ms < 30 and cost.overhead_per_krps_ms < 30, cost
    hopeless = calibrate_overhead(_SlowSubmitEngine(), "m", CostModel(0.1, 0.0, 1.0),
                                  [20_000.0], duration_s=0.05)
    assert hopeless.overhead_ms == 0.0  # 20k, 10k, 5k, 2.5k: none kept up, nothing fitted


def test_measure_capacity_fits_its_bursts_to_the_queue_and_gives_up_cleanly():
    """Bursts are whole batches within half of max_queue (a burst of 2,000 into a queue of
    64 was refused), a model that fails gives None (the profile goes on without it), and a
    set stop ends it."""
    from core import EngineConfig, build_demo_model
    from core.errors import InferenceError
    from core.lab import measure_capacity
    with Engine(EngineConfig(demo_models=False)) as engine:
        engine.load_model(build_demo_model("tiny"), name="tiny")
        engine.configure("tiny", max_batch_size=16, max_wait_ms=50.0, max_queue=64)
        got = measure_capacity(engine, "tiny", bursts=2)
        after = engine.metrics("tiny")
        assert got is not None and got > 0
        assert after.error_count == 0               # nothing refused by the queue of 64
        assert after.total_requests % 16 == 0       # whole batches: none waited out 50 ms
        assert set(after.batch_sizes) == {16}, after.batch_sizes
        stop = threading.Event()
        stop.set()
        assert measure_capacity(engine, "tiny", stop=stop) is None

    class Failing(_SlowSubmitEngine):
        def submit(self, model, x, timeout_ms=None):
            from concurrent.futures import Future
            fut = Future()
            fut.set_exception(InferenceError("model 'm' failed on this request: boom"))
            return fut

    assert measure_capacity(Failing(), "m") is None


def test_the_what_if_refuses_the_policies_it_does_not_model_saying_why():
    from core.lab import CostModel, simulate, what_if_curve
    from core.lab.whatif import WHAT_IF_REFUSED
    cost = CostModel(a_ms=0.2, b_ms=0.01, r2=1.0)
    assert simulate(cost, 8, 1.0, 500.0, n_requests=500)["p50_ms"] > 0
    from core.policies import POLICIES
    # every policy but the one it models, AIMD too ("unknown policy 'aimd'" before)
    assert set(WHAT_IF_REFUSED) == set(POLICIES) - {"deadline"}
    for policy in WHAT_IF_REFUSED:
        with pytest.raises(ValueError, match="models the deadline policy only") as err:
            simulate(cost, 8, 1.0, 500.0, n_requests=500, policy=policy)
        assert "sweep" in str(err.value) and policy in WHAT_IF_REFUSED
        with pytest.raises(ValueError):
            what_if_curve(cost, 8, 1.0, [100.0], policy=policy)


def test_arrivals_round_trip_through_a_file_and_bad_files_say_why():
    from core.lab import arrivals_from_csv, arrivals_to_csv
    from core.lab.replay import MAX_REPLAY_ARRIVALS
    text = arrivals_to_csv([10.5, 10.0, 10.25])
    assert text.splitlines()[0] == "arrived_s"
    assert arrivals_from_csv(text) == pytest.approx([0.0, 0.25, 0.5])
    assert arrivals_from_csv(b"t\n3\n1\n2\n") == [0.0, 1.0, 2.0]  # a single other column
    assert arrivals_from_csv(b"3\n1\n2\n") == [0.0, 1.0, 2.0]  # no header: row one kept
    for bad, why in ((b"a,b\n1,2\n", "no arrived_s column"),
                     # the wrong lines named (it quoted the first three, good or not; a
                     # newcomer); an empty file is said to be empty, not "not a CSV file"
                     (b"arrived_s\n0.1\nsoon\n", r"1 arrival time\(s\) in the file are not "
                                                  r"finite numbers \(line 3: soon\)"),
                     (b"arrived_s,rows\n0,1\n1,1\n2,1\n3,0\n4,x\n5,1\n6,0\n7,0\n",
                      r"whole numbers >= 1 \(line 5: 0, line 6: x, line 8: 0, and 1 more\)"),
                     (b"", "the arrivals file is empty"), (b"\n \n", "is empty"),
                     (b"arrived_s\n", "no rows"),
                     (b"arrived_s\n0\n5000\n", "are the times in ms")):
        with pytest.raises(ValueError, match=why):
            arrivals_from_csv(bad)
    many = "arrived_s\n" + "\n".join(["0.0"] * (MAX_REPLAY_ARRIVALS + 1))
    with pytest.raises(ValueError, match="at most 200,000"):
        arrivals_from_csv(many)
    # blank lines (pandas skips them) shifted the lines named past them; lines ending in
    # \r alone (an old Mac's) were one long first line (a reviewer)
    for bad, line in ((b"arrived_s\n0\n\n\n0.5\nsoon\n", 6), (b"\n\narrived_s\n0\nsoon\n", 5),
                      (b"\r\n0\r\n\r\nsoon\r\n", 4), (b"arrived_s\r0\rsoon\r", 3)):
        with pytest.raises(ValueError, match=rf"\(line {line}: soon\)"):
            arrivals_from_csv(bad)
    assert arrivals_from_csv(b"arrived_s\r" + b"0.5\r" * 3000) == [0.0] * 3000
    from core.lab import read_arrivals_csv
    notes: list = []
    assert read_arrivals_csv(b"arrived_s,rows\n2,1\n1,2\n3,3\n", notes) == ([0, 1, 2], [2, 1, 3])
    assert notes == ["1 of the file's times came before the one above them (the first on "
                     "line 3): replayed in time order, each with its rows"]
    read_arrivals_csv(b"1\n1\n2\n", notes)    # (ties keep their order: nothing moved)
    assert len(notes) == 1
    read_arrivals_csv(b"5\n1\n2\n3\n4\n", notes)   # (one misplaced line, not five)
    assert notes[-1] == ("1 of the file's times came before the one above them (the first "
                         "on line 2): replayed in time order")
    # lines of spaces are blank lines (refused as "line 3:   " for a moment; a reviewer);
    # a line of empty fields is an empty arrival, said so
    assert read_arrivals_csv(b"arrived_s\n0\n  \n\t\n0.5\n") == ([0.0, 0.5], None)
    assert read_arrivals_csv(b" \n\t\narrived_s\n0\n") == ([0.0], None)
    with pytest.raises(ValueError, match=r"\(line 3: empty\)"):
        read_arrivals_csv(b"arrived_s,rows\n0,1\n,\n0.5,1\n")
    with pytest.raises(ValueError, match="200,002 lines"):
        arrivals_from_csv(b"0\r" * (MAX_REPLAY_ARRIVALS + 2))


def test_a_saved_file_replays_each_arrival_with_its_rows(engine):
    """The Batching page's file kept the arrivals only: 4-row requests replayed from it as
    1-row ones, a mean batch of 1.0 against the live replay's 4.2 and another winner (a
    newcomer). The file keeps each arrival's rows, sorted with it, and a replay of the file
    is the replay of the recording."""
    from core.lab import arrivals_to_csv, read_arrivals_csv, replay
    text = arrivals_to_csv([10.5, 10.0, 10.25], rows=[3, 1, 2])
    assert text.splitlines()[:2] == ["arrived_s,rows", "0.000000,1"]
    assert read_arrivals_csv(text) == (pytest.approx([0.0, 0.25, 0.5]), [1, 2, 3])
    assert read_arrivals_csv(b"arrived_s\n0\n1\n") == ([0.0, 1.0], None)
    for bad in (b"arrived_s,rows\n0,1\n1,0\n", b"arrived_s,rows\n0,1.5\n",
                b"arrived_s,rows\n0,\n"):
        with pytest.raises(ValueError, match="rows column must hold"):
            read_arrivals_csv(bad)
    # what the page does: record 4-row requests, save them, read them back, replay both
    engine.configure("tiny", max_batch_size=16, max_wait_ms=2.0)
    for _ in range(12):
        engine.predict("tiny", np.ones((4, 4), np.float32))
    recorded = engine.timeline("tiny", last_s=None)
    arrivals, rows = read_arrivals_csv(arrivals_to_csv(recorded["arrived_s"], recorded["rows"]))
    assert rows == [4] * 12
    live = replay(engine, "tiny", recorded["arrived_s"].tolist(), policies=["deadline"],
                  rows_per_request=recorded["rows"].tolist())
    filed = replay(engine, "tiny", arrivals, policies=["deadline"], rows_per_request=rows)
    rows_run = [int(t["rows"].sum()) for t in (live["timelines"]["deadline"],
                                               filed["timelines"]["deadline"])]
    assert rows_run == [48, 48]   # (the file's replay without its rows ran 12)


def test_exports_say_what_the_settings_were_measured_under():
    from core.lab import provenance, tf_serving_batching, triton_config
    frame = pd.DataFrame([{"max_batch_size": 16, "max_wait_ms": 2.0, "policy": "adaptive",
                           "latency_slo_ms": float("nan"), "instances": 1,
                           "session_threads": 2.0}])
    where = provenance(frame, 16, 2.0, p99_ms=10.0, load=2000.0, run_id=4)
    assert "chosen by sweep run 4 for p99 <= 10 ms at 2,000 req/s" in where
    assert "policy adaptive, no latency SLO, 1 instance(s), 2 ONNX Runtime thread(s)" in where
    assert "WARNING" in where  # Triton has no adaptive policy: the export says so
    cfg = triton_config(16, 2.0, intra_op_threads=2, comment=where)
    assert cfg.startswith("# Batchlab: max_batch_size=16")
    assert 'key: "intra_op_thread_count"' in cfg and 'string_value: "2"' in cfg
    assert all(line.startswith("#") for line in cfg.splitlines()[:3])
    tf = tf_serving_batching(16, 2.0, comment=where)
    assert tf.startswith("# Batchlab") and "batch_timeout_micros { value: 2000 }" in tf
    deadline = provenance(frame.assign(policy="deadline"), 16, 2.0, None, None)
    assert "WARNING" not in deadline
    # KServe's and Ray Serve's files said nothing of it, and Ray Serve's replicas (Batchlab's
    # engine) would have run deadline (an adversary): KServe's carries the comment, Ray
    # Serve's the policy itself (its comment without the warning: it runs the policy)
    from core.lab import kserve_inference_service, ray_serve_config
    yaml_text = kserve_inference_service("mlp", 16, 2.0, comment=where)
    assert yaml_text.startswith("# Batchlab: max_batch_size=16") and \
        "# WARNING: measured under Batchlab's adaptive policy" in yaml_text
    ray = ray_serve_config("mlp", 16, 2.0, policy="adaptive", latency_slo_ms=20.0,
                           comment=provenance(frame, 16, 2.0, 10.0, 2000.0, run_id=4,
                                              runs_policy=True))
    assert ray.splitlines()[1].startswith("# Batchlab: max_batch_size=16") and \
        "WARNING: measured" not in ray
    assert 'policy: "adaptive"' in ray and "latency_slo_ms: 20" in ray
    with pytest.raises(ConfigError, match="policy must be one of"):
        ray_serve_config("mlp", 16, 2.0, policy="nope")


def test_a_bounded_run_past_its_request_limit_is_refused_before_anything_is_drawn():
    """30k req/s for an hour is 108 million requests: recorded one by one (~400 bytes
    each) that is ~40 GiB, which would take the process (and the engine in it) down. It is
    refused at once, naming the streamed alternative; the limit itself is allowed."""
    from core.errors import ConfigError
    from core.lab.schedule import MAX_RUN_REQUESTS, run_schedule
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=r"30000 req/s for 3600 s is 108,000,000 requests.*"
                                          r"40\.2 GiB.*engine\.start_traffic"):
        open_loop(lambda x: None, lambda r: 0, 30_000.0, duration_s=3600.0)
    with pytest.raises(ConfigError, match=r"count=20,000,000 is"):
        run_schedule("poisson", 1_000_000.0, None, 20_000_000, rng)
    with pytest.raises(ConfigError, match=r"1e\+06 req/s for 11 s"):   # the smaller bound
        run_schedule("constant", 1_000_000.0, 11.0, 50_000_000, rng)
    assert len(run_schedule("constant", 1_000_000.0, 1.0, None, rng)) == 1_000_000
    assert MAX_RUN_REQUESTS == 10_000_000


def test_a_closed_loop_at_its_limit_ends_there_and_says_so(monkeypatch):
    """A closed loop records each request in room made for the run (at most
    CLOSED_LOOP_MAX): a count past it is refused, and a run that fills the room before its
    duration ends is marked stopped with a warning instead of silently coming back
    shorter (it used to cap a count of 5 million at 2 million without a word)."""
    from core.errors import ConfigError
    from core.lab import loadgen
    done = Future()
    done.set_result(None)
    with pytest.raises(ConfigError, match=r"count=2,000,001 is past a closed loop's limit"):
        closed_loop(lambda x: done, lambda r: 0, 2, count=2_000_001)
    monkeypatch.setattr(loadgen, "CLOSED_LOOP_MAX", 500)
    with pytest.warns(RuntimeWarning, match=r"sent its limit of 500 requests after .* of the "
                                            r"30 s asked"):
        res = closed_loop(lambda x: done, lambda r: 0, 4, duration_s=30.0)
    assert res.stopped and len(res.frame) == 500 and res.duration_s < 30.0
    quiet = closed_loop(lambda x: done, lambda r: 0, 4, count=500)   # a count: no warning
    assert not quiet.stopped and len(quiet.frame) == 500


def test_the_profile_measures_under_what_the_what_if_models_and_gives_the_settings_back():
    """A model left on adaptive with a tight latency SLO and two instances: the profile's
    capacity bursts were shed (704 SLOShedErrors, 'engine work 0.0 µs'). It now pins the
    deadline policy, no SLO and one instance while it measures, and restores the model's."""
    with Engine(EngineConfig(demo_models=False)) as engine:
        engine.load_model(build_demo_model("tiny"), name="tiny")
        engine.configure("tiny", max_batch_size=16, policy="adaptive", latency_slo_ms=0.05,
                         instances=2)
        status = engine.start_job("profile_cost", "tiny", batch_sizes=[1, 4, 16],
                                  iterations=3, calibrate_s=0.5)
        done = engine.wait_job(status.job_id, timeout_s=120)
        assert done.state == "done", done.error
        cost = done.result["cost"]
        assert cost.per_request_ms > 0 and cost.capacity_batch == 16
        # the sizes its warm-up saw disturbed, as that warm-up's report says (for the page)
        assert done.result["disturbed"] == engine.last_warmup("tiny").disturbed_sizes
        assert cost.capacity_batches == (4, 16)   # the model's size and a quarter of it
        assert engine.batch_config("tiny").max_batch_size == 16   # given back too
        # (nothing shed; on a busy machine the calibration's traffic may still meet a full
        # queue now and then, which is not what this is about)
        assert "SLOShedError" not in engine.metrics("tiny").errors_by_type
        cfg = engine.batch_config("tiny")
        assert (cfg.policy, cfg.latency_slo_ms, cfg.instances) == ("adaptive", 0.05, 2)


def test_calibrating_a_slow_model_skips_rates_that_would_send_nothing():
    """10 % of a 2.5 req/s capacity for 2 s is half a request: the profile job failed with
    the empty-run refusal; such a rate is now left out like one the generator could not
    offer."""
    from core.lab import CostModel, calibrate_overhead
    with Engine(EngineConfig(demo_models=False)) as engine:
        engine.load_model(build_demo_model("tiny"), name="tiny")
        cost = CostModel(0.05, 0.001, 0.99)
        skipped = calibrate_overhead(engine, "tiny", cost, [0.25, 0.3], duration_s=2.0)
        assert skipped == dataclasses.replace(cost, overhead_note=skipped.overhead_note)
        assert skipped.overhead_note == (   # (not "give lower rates"; a reviewer)
            "no rate of 0.25, 0.3 req/s sends a request in 2 s: the overhead is not "
            "calibrated; give rates of at least 0.5 req/s or more seconds a rate")
        fitted = calibrate_overhead(engine, "tiny", cost, [0.25, 20.0], duration_s=1.0)
        assert fitted.overhead_per_krps_ms == 0.0 and fitted.overhead_ms >= 0.0


def test_a_calibration_stops_at_its_stop_event():
    """A cost profile's Cancel did not reach its calibration (two rates, each up to four
    runs; an adversary): a stop set during it ends it, the cost model uncalibrated."""
    import threading

    from core.lab import CostModel, calibrate_overhead
    with Engine(EngineConfig(demo_models=False)) as engine:
        engine.load_model(build_demo_model("tiny"), name="tiny")
        stop = threading.Event()
        sent: list = []
        real = engine.submit

        def submit(name, x, **kw):
            sent.append(1)
            stop.set()                       # (Cancel, at the first request)
            return real(name, x, **kw)

        engine.submit = submit
        cost = CostModel(0.05, 0.001, 0.99)
        out = calibrate_overhead(engine, "tiny", cost, [200.0, 400.0], duration_s=2.0,
                                 stop=stop)
        assert out.overhead_note == "the calibration was stopped"
        assert (out.overhead_ms, out.overhead_per_krps_ms) == (cost.overhead_ms,
                                                               cost.overhead_per_krps_ms)
        assert len(sent) < 50                # (200 req/s for 2 s, then 400: 1,200 sent)


def test_profiling_an_ab_arm_measures_one_size_and_leaves_the_experiment_alone():
    """Measuring the capacity at a second batch size reconfigures the model twice, and each
    change of an arm's settings starts its experiment's evidence again: an A/B arm is
    measured at its own size only (its work per batch not told apart, as the page says)."""
    with Engine(EngineConfig(demo_models=False)) as engine:
        for m in ("clf-v1", "clf-v2"):
            engine.load_model(build_demo_model(m), name=m)
        engine.configure("clf-v1", max_batch_size=16)
        engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.5, seed=0)
        before = engine.ab_report("exp").segment
        status = engine.start_job("profile_cost", "clf-v1", batch_sizes=[1, 4, 16],
                                  iterations=3, calibrate_s=0.5)
        done = engine.wait_job(status.job_id, timeout_s=120)
        assert done.state == "done", done.error
        cost = done.result["cost"]
        assert cost.capacity_batch == 16 and cost.capacity_batches == ()
        assert engine.ab_report("exp").segment == before
        assert engine.batch_config("clf-v1").max_batch_size == 16


def test_closed_loop_clients_are_whole_numbers_said_before_a_sweep():
    """A sweep took 2.5 clients as 2 without a word; the page checked rates, not clients."""
    from core.lab import check_clients
    assert check_clients([1, 8.0, np.int64(64)]) == [1, 8, 64]
    for bad in (2.5, 0, 10_001, float("nan"), True, "8", 10**400):
        with pytest.raises(ConfigError, match="whole numbers from 1 to 10,000"):
            check_clients([4, bad])
    with Engine(EngineConfig(demo_models=False)) as engine:
        engine.load_model(build_demo_model("tiny"), name="tiny")
        with pytest.raises(ConfigError, match=r"2\.5 clients"):
            sweep(engine, "tiny", [8], [0.0], concurrencies=[2.5], duration_s=0.5)


def test_a_model_a_sweep_measures_refuses_other_changes_until_it_ends(tmp_path):
    """A newcomer moved Max batch size to 256 in another tab during a sweep: the change
    went into the point under way (recorded as the sweep's 8), and the sweep put the
    model's own back at its end, the change lost unsaid. Changes, warm-ups, replacing and
    unloading from anyone but the job are refused while it runs; the job itself goes on."""
    from tests.helpers import WAIT_S
    with Engine() as engine:
        gate, inside = threading.Event(), []
        engine.load_model(build_demo_model("tiny"), name="tiny2")
        engine.create_ab("e", a="tiny2", b="tiny")
        stem = tmp_path / "tiny.onnx"
        stem.write_bytes(build_demo_model("tiny"))
        engine.set_inputs("tiny", engine.sample_input("tiny", rows=4))

        def work(job):   # a pinning job's thread: it sets the model's settings itself
            inside.append(engine.configure("tiny", max_batch_size=8).max_batch_size)
            assert gate.wait(WAIT_S)
            engine.configure("tiny", max_batch_size=32)    # (its restore)

        status = engine._lab.jobs.start("sweep", "tiny", work, params={
            "own_settings": {"max_batch_size": 32, "max_wait_ms": 5.0}}, exclusive=True)
        words = rf"model 'tiny' is being measured by a sweep \(job {status.job_id}\)"
        for what, call in (
                ("change its batch settings", lambda: engine.configure("tiny", max_batch_size=256)),
                ("warm it up", lambda: engine.warmup("tiny", iterations=2)),
                ("replace it", lambda: engine.load_model(build_demo_model("tiny"), name="tiny",
                                                         replace=True)),
                ("unload it", lambda: engine.unload_model("tiny")),
                # (a reviewer: these two went past the guard)
                ("change its batch settings", lambda: engine.ab_match_settings("e")),
                # (named by its file: the name came after the guard looked; an adversary)
                ("replace it", lambda: engine.load_model(stem, replace=True, probe=False)),
                ("replace it", lambda: engine.add_remote("tiny", "http://127.0.0.1:9", "m",
                                                         replace=True)),
                # (what the sweep's next points send)
                ("give it other inputs", lambda: engine.set_inputs(
                    "tiny", engine.sample_input("tiny", rows=2))),
                ("give it generated inputs", lambda: engine.clear_inputs("tiny"))):
            with pytest.raises(ConfigError, match=words + rf".*to {what} now, cancel the job"):
                call()
        engine.configure("mlp", max_batch_size=4)       # another model: free
        gate.set()
        assert engine.wait_job(status.job_id, WAIT_S).state == "done" and inside == [8]
        assert engine.configure("tiny", max_batch_size=16).max_batch_size == 16   # free again
        assert engine.input_source("tiny").endswith("(4 samples)")   # (kept through it)


def test_a_change_racing_a_sweep_s_start_is_refused_or_kept(monkeypatch):
    """configure() asked the guard, then a sweep started (reading the settings it restores
    at its end), then the change was made: it went into the sweep's point and was undone at
    the restore. The guard is asked under the lock a sweep starts under now: the change is
    made before the sweep reads its settings (kept at the restore), or refused."""
    import core.lab.lab as lab_mod
    from tests.helpers import WAIT_S
    gate, started = threading.Event(), []

    def fake_sweep(engine, job, target):   # reads what it restores, waits, restores it
        before = engine.batch_config(target)
        assert gate.wait(WAIT_S)
        engine.configure(target, max_batch_size=before.max_batch_size)

    monkeypatch.setitem(lab_mod.JOB_KINDS, "sweep", (fake_sweep, True))
    with Engine() as engine:
        engine.configure("tiny", max_batch_size=8)
        me = threading.get_ident()

        def start_a_sweep_meanwhile(name, what):   # (after the lab's guard passed)
            if threading.get_ident() == me and not started:
                t = threading.Thread(target=lambda: started.append(
                    engine.start_job("sweep", "tiny")))
                t.start()
                t.join(0.3)   # (it waits for the lock now: it cannot start meanwhile)

        engine.settings_guards.append(start_a_sweep_meanwhile)
        try:
            engine.configure("tiny", max_batch_size=64)
            refused = False
        except ConfigError:
            refused = True
        for _ in range(int(WAIT_S * 100)):
            if started:
                break
            gate.wait(0.01)
        assert started
        params = engine.job(started[0].job_id).params
        gate.set()
        assert engine.wait_job(started[0].job_id, WAIT_S).state == "done"
        final = engine.batch_config("tiny").max_batch_size
        # made before the sweep read its settings (kept), or refused (8 restored)
        assert (final, params["own_settings"]["max_batch_size"]) == (
            (8, 8) if refused else (64, 64))


def test_a_recommendation_says_when_its_p99_is_of_a_few_requests_or_a_disturbed_sweep():
    """A sweep at 5 req/s sent 9 requests a point: its "p99" was the slowest of nine, with
    no interval, and the verdict said nothing of it; a cancelled sweep of one disturbed
    point said "use a faster model or machine" (a newcomer)."""
    few = _frame([(4, 2.0, 5, 5, 3.18, np.nan, np.nan)]).assign(sent=9, disturbed="")
    rec = recommend(few, p99_slo_ms=10)
    assert rec.max_batch_size == 4
    assert "That p99 is of 9 request(s): under 100 it is about the slowest" in rec.reason
    plenty = few.assign(sent=5_000)
    assert "That p99 is of" not in recommend(plenty, p99_slo_ms=10).reason
    slow = _frame([(8, 0.0, 200, 200, 40.5, 30.0, 50.0)]).assign(
        sent=2_000, disturbed="other processes used 0.42 of the engine's cores")
    rec = recommend(slow, p99_slo_ms=10)
    assert rec.max_batch_size is None and "faster model" not in rec.reason
    assert ("1 of the 1 point(s) were measured while something else used the machine "
            "(marked in the table): measure again before concluding") in rec.reason


def test_a_table_s_missing_values_are_explained_in_their_column_s_help():
    """A newcomer read "None" in the p99 interval of a point of a few requests, and in a
    quick search's load and p99 where no load met the limits, with nothing saying why:
    every column of the sweep's and search's tables that can be missing says what None
    means in its header's help."""
    from core.lab.search import Constraints, setting_scores
    from core.ui.fmt import COLUMN_HELP, SEARCH_TABLE_LABELS, sweep_table_columns
    few = _frame([(4, 2.0, 5, 5, 3.18, np.nan, np.nan), (8, 2.0, 5, 0, np.nan, np.nan, np.nan)])
    search = setting_scores(few.assign(session_threads=None), Constraints(p99_ms=1.0))
    shown = [(few, sweep_table_columns(few)),
             (search, [c for c in SEARCH_TABLE_LABELS if c in search.columns])]
    missing = {c for frame, cols in shown for c in cols if frame[c].isna().any()}
    assert {"p99_ci_low_ms", "p99_ci_high_ms", "p99_ms", "load"} <= missing
    assert all("None:" in COLUMN_HELP.get(c, "") for c in missing), missing


def test_recommend_says_what_frame_it_needs():
    """``recommend(pd.DataFrame(), ...)`` raised a bare KeyError: 'p99_ms' (a newcomer); a
    frame with the columns it named still raised KeyError: 'error_rate', an empty sweep
    read as "no setting met the target: relax it", and a target of NaN or -5 ms was taken
    (an adversary)."""
    from core.lab.sweeps import frame_of
    with pytest.raises(ConfigError, match=r"recommend needs a sweep's frame .*this one has "
                                          r"no max_batch_size, max_wait_ms, load_kind, load, "
                                          r"achieved_rps, p99_ms, error_rate \(it is empty\)"):
        recommend(pd.DataFrame(), p99_slo_ms=10)
    with pytest.raises(ConfigError, match=r"this one has no load_kind, achieved_rps, p99_ms, "
                                          r"error_rate$"):
        recommend(pd.DataFrame({"max_batch_size": [8], "max_wait_ms": [1.0], "load": [10]}),
                  p99_slo_ms=10)
    with pytest.raises(ConfigError, match=r"the sweep measured no point .*measure first"):
        recommend(frame_of([]), p99_slo_ms=10)
    good = _frame([(8, 1.0, 500, 500, 3.0, 2.5, 3.5)])
    for bad in (float("nan"), -5, 0):
        with pytest.raises(ConfigError, match="p99_slo_ms must be a number >= 0.001"):
            recommend(good, p99_slo_ms=bad)
    for bad in (float("nan"), -1, 2):
        with pytest.raises(ConfigError, match="max_error_rate must be a number >= 0 and <= 1"):
            recommend(good, p99_slo_ms=10, max_error_rate=bad)
    assert recommend(good, p99_slo_ms=10).max_batch_size == 8


def test_a_recommendation_does_not_depend_on_row_order_and_ties_take_fewest_threads():
    """Two rows of equal p99 gave other ties when the frame was permuted (the unstable sort
    chose the best, whose interval bounds the ties), and a setting on 1 thread within noise
    of the same on 2 was neither chosen nor listed (an adversary)."""
    rows = _frame([(16, 0.0, 1000, 1000, 2.0, 1.9, 2.1), (4, 1.0, 1000, 1000, 2.0, 1.5, 2.5),
                   (32, 2.0, 1000, 1000, 9.0, 8.5, 9.5)])
    answers = {(r.max_batch_size, r.max_wait_ms, r.ties)
               for r in (recommend(rows.iloc[list(p)].reset_index(drop=True), 10)
                         for p in itertools.permutations(range(3)))}
    assert len(answers) == 1, answers
    threads = _frame([(8, 0.0, 1000, 1000, 2.0, 1.9, 2.1),
                      (8, 0.0, 1000, 1000, 2.05, 1.95, 2.15)]).assign(session_threads=[2, 1])
    rec = recommend(threads, 10)
    assert "1 ONNX Runtime thread(s)" in rec.reason and rec.ties == ((8, 0.0),)
    assert "then uses fewest threads" in rec.reason
    # the model's own size and wait chosen: measured under the sweep's policy, said so
    own = _frame([(8, 0.0, 1000, 1000, 2.0, 1.9, 2.1)]).assign(baseline=True, policy="deadline")
    assert ("These are the model's own batch size and wait (measured under deadline, as "
            "every point): the sweep found nothing better.") in recommend(own, 10).reason


@contextlib.contextmanager
def _warming_up(engine, model):
    """A warm-up of ``model`` held at its first run for the block (then let finish)."""
    inside, gate = threading.Event(), threading.Event()

    def progress(done, total, bs):
        inside.set()
        assert gate.wait(WAIT_S)

    warm = threading.Thread(target=lambda: engine.warmup(model, iterations=2,
                                                         progress=progress))
    warm.start()
    try:
        assert inside.wait(WAIT_S)
        yield
    finally:
        gate.set()
        warm.join(WAIT_S)


def _racing_sweep(monkeypatch, engine, gate):
    """A fake sweep (reads what it restores, waits for ``gate``) and a settings guard that,
    the first time the test's thread asks it, starts that sweep from another thread
    (which then waits for the engine's lock, or starts at once where nothing holds it)."""
    import core.lab.lab as lab_mod
    started, me = [], threading.get_ident()

    def fake_sweep(engine, job, target):
        engine.batch_config(target)
        assert gate.wait(WAIT_S)

    def start_a_sweep_meanwhile(name, what):
        if threading.get_ident() == me and not started:
            def start():
                try:
                    started.append(engine.start_job("sweep", name))
                except BatchlabError as err:
                    started.append(err)
            t = threading.Thread(target=start)
            t.start()
            # (asked first outside the engine's lock: the sweep starts now, whatever the
            # machine's load, and the change must then be refused under the lock)
            t.join(WAIT_S)

    monkeypatch.setitem(lab_mod.JOB_KINDS, "sweep", (fake_sweep, True))
    engine.settings_guards.append(start_a_sweep_meanwhile)
    return started


@pytest.mark.parametrize("change", ["unload", "replace"])
def test_an_unload_or_replace_racing_a_sweep_s_start_is_refused_or_refuses_it(
        monkeypatch, change):
    """unload_model and a replacing load asked the guard once, before they took the lock:
    a sweep starting just after measured a model that was then unloaded or swapped under
    it. They ask it again under the lock a sweep starts under: one of the two is refused."""
    with Engine() as engine:
        gate = threading.Event()
        started = _racing_sweep(monkeypatch, engine, gate)
        try:
            if change == "unload":
                engine.unload_model("tiny")
            else:
                engine.load_model(build_demo_model("tiny"), name="tiny", replace=True,
                                  probe=False)
            done = True
        except ConfigError as err:
            assert "being measured by a sweep" in str(err)
            done = False
        assert not done, "the sweep started first: the change is refused under the lock"
        for _ in range(int(WAIT_S * 100)):
            if started:
                break
            gate.wait(0.01)
        gate.set()
        sweep_ran = not isinstance(started[0], BatchlabError)
        if sweep_ran:
            engine.wait_job(started[0].job_id, WAIT_S)
        assert done != sweep_ran, (done, started)


def test_a_sweep_does_not_start_while_a_warm_up_runs_on_its_model(monkeypatch):
    """A sweep started during a warm-up (a job, or a notebook's engine.warmup) measured the
    warm-up's batches beside its own; a warm-up refuses to start during a sweep, and now a
    sweep refuses to start during a warm-up, saying what to wait for."""
    import core.lab.lab as lab_mod
    monkeypatch.setitem(lab_mod.JOB_KINDS, "sweep", (lambda engine, job, target: None, True))
    with Engine() as engine:
        with _warming_up(engine, "tiny"):
            with pytest.raises(ConfigError, match=r"sweep of 'tiny' not started: a warm-up is "
                                                  r"going on with it; start it again when"):
                engine.start_job("sweep", "tiny")
            status = engine.start_job("sweep", "mlp")      # another model: free
            assert engine.wait_job(status.job_id, WAIT_S).state == "done"
        assert engine._busy_with("tiny") is None
        status = engine.start_job("sweep", "tiny")     # after it: free again
        assert engine.wait_job(status.job_id, WAIT_S).state == "done"


def test_a_sweep_cut_short_by_close_keeps_its_points_and_says_cancelled():
    """configure() after close() is refused now: a sweep (or cost profile) putting its
    model's settings back while the engine closes must not fail on it and lose the
    points it measured."""
    engine = Engine()
    try:
        status = engine.start_job("sweep", "tiny", max_batch_sizes=[1, 2, 4, 8],
                                  max_waits_ms=[0.0], rates_rps=[200.0], duration_s=1.0,
                                  save=False)
        wait_for(lambda: len(engine.job(status.job_id).partial) >= 1)
    finally:
        engine.close()
    job = engine.job(status.job_id)
    assert job.state == "cancelled", (job.state, job.error)
    assert job.message == "cancelled (partial result kept)"
    assert 1 <= len(job.result) < 4


def test_a_cost_profile_cut_short_by_close_is_cancelled_not_failed():
    """The cost profile puts the model's settings back as a sweep does (``put_back``):
    closed while it measures capacity (its policy pinned to the deadline), nothing is put
    back and the job says it was cancelled, not that configure() failed."""
    for stage in (0.5, 0.6):   # measuring capacity; calibrating the overhead
        engine = Engine()
        try:
            engine.configure("tiny", policy="adaptive")
            status = engine.start_job("profile_cost", "tiny")
            wait_for(lambda: engine.job(status.job_id).progress >= stage)
        finally:
            engine.close()
        wait_for(lambda: engine.job(status.job_id).finished)
        job = engine.job(status.job_id)
        assert (job.state, job.error) == ("cancelled", None), (stage, job.state, job.error)
        assert job.message == "cancelled (partial result kept)"
        assert len(job.result["profile"]) >= 2   # the warm-up's profile, kept


def test_a_sweep_run_from_a_notebook_refuses_other_threads_changes_until_it_ends():
    """sweep() called directly (a notebook's, not a job) was not guarded: a configure()
    from another thread went into the point under way, recorded with the sweep's settings,
    and was undone at the restore, unsaid (an adversary). Other threads are refused now,
    in words, until the sweep has put the model's own settings back."""
    from core.lab import sweep
    with Engine() as engine:
        engine.configure("tiny", max_batch_size=32, max_wait_ms=5.0)
        tried: list[str] = []

        def progress(done, total, row):   # between points, from another thread
            def change():
                try:
                    engine.configure("tiny", max_batch_size=4, max_wait_ms=3.0)
                    tried.append("accepted")
                except ConfigError as err:
                    tried.append(str(err))
            t = threading.Thread(target=change)
            t.start()
            t.join(WAIT_S)

        frame = sweep(engine, "tiny", [8], [0.0, 1.0], rates_rps=[200.0], duration_s=0.3,
                      stability=False, baseline=False, progress=progress)
        assert len(frame) == 2 and len(tried) == 2
        assert all("is being measured by a sweep or quick search run from this process"
                   in t and "to change its batch settings now" in t for t in tried), tried
        cfg = engine.batch_config("tiny")
        assert (cfg.max_batch_size, cfg.max_wait_ms) == (32, 5.0)
        engine.configure("tiny", max_batch_size=4)          # after it: free again
        assert engine.settings_guards == [engine._lab._check_not_measured]


def test_a_calibration_that_measured_nothing_says_so():
    """calibrate_overhead returned the cost model unchanged, unsaid, when it measured
    nothing (negative rates, none, no rate that kept up): a reader took it for a
    calibration of no overhead; fit_cost_model fitted batch sizes 0 and -1 (an adversary)."""
    from core.lab import calibrate_overhead, fit_cost_model
    from core.lab import whatif as whatif_mod
    cost = CostModel(0.1, 0.01, 1.0)
    with Engine() as engine:
        for rates, words in (([], "give rates_rps, two or more rates"),
                             ([-100, -200], "a rate is a number above 0")):
            with pytest.raises(ConfigError, match=words):
                calibrate_overhead(engine, "tiny", cost, rates, duration_s=0.3)
        with pytest.raises(ConfigError, match="duration_s must be a number >= 0.05"):
            calibrate_overhead(engine, "tiny", cost, [100, 200], duration_s=-1)
        # no rate kept up: every open loop reports a lag past the limit
        real = whatif_mod.open_loop

        class Lagging:   # (the real run's summary, its sends 1,000 s behind)
            def __init__(self, res):
                self.res = res

            def summary(self):
                return {**self.res.summary(), "max_lag_ms": 1e6}

        def lagging(*args, **kw):
            return Lagging(real(*args, **kw))
        whatif_mod.open_loop = lagging
        try:
            with pytest.warns(RuntimeWarning, match="the overhead is not calibrated"):
                got = calibrate_overhead(engine, "tiny", cost, [100, 200], duration_s=0.3)
        finally:
            whatif_mod.open_loop = real
    assert (got.overhead_ms, got.overhead_per_krps_ms) == (0.0, 0.0)
    assert got.overhead_note.startswith("no rate of 100, 200 req/s kept up")
    # rates halved below one request in the run did not keep up: not "too low" (a reviewer)
    with Engine() as engine:
        whatif_mod.open_loop = lagging
        try:
            with pytest.warns(RuntimeWarning):
                halved = calibrate_overhead(engine, "tiny", cost, [4, 6], duration_s=1.0)
        finally:
            whatif_mod.open_loop = real
    assert halved.overhead_note.startswith("no rate of 4, 6 req/s kept up")
    with pytest.raises(ConfigError, match="whole batch sizes >= 1"):
        fit_cost_model(pd.DataFrame({"batch_size": [0, -1, 4], "compute_ms": [1.0, 1.0, 2.0]}))
    with pytest.raises(ConfigError, match="compute_ms >= 0"):
        fit_cost_model(pd.DataFrame({"batch_size": [1, 4], "compute_ms": [-3.0, 2.0]}))


def test_a_request_unanswered_when_the_run_stops_waiting_is_named_not_a_blank_failure():
    """open_loop counted requests still unanswered after its drain as failed with no error
    (the engine later counted them as successes); they are named and counted apart."""
    futures: list[Future] = []

    def submit(x):
        f = Future()
        futures.append(f)
        return f

    res = open_loop(submit, lambda rng: 0, rate_rps=100, duration_s=0.2, drain_s=0.05)
    s = res.summary()
    assert s["sent"] == len(futures) > 0 and s["succeeded"] == 0
    assert s["failed"] == s["unanswered"] == s["sent"]
    assert set(res.frame["error"]) == {"Unanswered"}
    for f in futures:
        f.set_result(None)
    answered = open_loop(lambda x: _answered(), lambda rng: 0, rate_rps=100, duration_s=0.1)
    assert answered.summary()["unanswered"] == 0


def _answered() -> Future:
    f = Future()
    f.set_result(None)
    return f


def test_loads_and_clients_past_their_limits_are_written_as_people_write_numbers():
    """"load 1000000000.0 req/s" and "100000.0 clients" (a newcomer)."""
    from core.lab import check_clients, check_rates
    with pytest.raises(ConfigError, match=r"^load 1,000,000,000 req/s: a rate is a number"):
        check_rates([1e9], 2.0, True)
    with pytest.raises(ConfigError, match=r"^100,000 clients: a closed loop's clients"):
        check_clients([100000.0])
    with pytest.raises(ConfigError, match=r"^2.5 clients"):
        check_clients([2.5])
    with pytest.raises(ConfigError, match=r"^load 1000000.*\(401 characters\) req/s"):
        check_rates([10**400], 2.0, True)    # (OverflowError; a reviewer)
    # (1e300 was written with all its 301 digits; an adversary)
    with pytest.raises(ConfigError, match=r"^load 1e\+300 req/s: a rate is a number"):
        check_rates([1e300], 2.0, True)
    with pytest.raises(ConfigError, match=r"^1e\+300 clients: a closed loop's"):
        check_clients([10**300])
    with pytest.raises(ConfigError, match=r"^True clients: a closed loop's"):
        check_clients([True])    # (not "1 clients: ... from 1 to"; a reviewer)
    # a word and True were a TypeError and 1 req/s; calibrate_overhead says it in the same
    # words (it kept its own copy of the check)
    for rate, shown in (("abc", "'abc'"), (True, "True"), (None, "None"), ("5", "'5'")):
        with pytest.raises(ConfigError, match=rf"^load {shown} req/s: a rate is a number"):
            check_rates([rate], 2.0, True)
    from core.lab import calibrate_overhead
    with pytest.raises(ConfigError, match=r"^calibrate_overhead: load 'abc' req/s: a rate"):
        calibrate_overhead(None, "m", CostModel(0.1, 0.0, 1.0), [100, "abc"])


def test_a_notebooks_sweep_and_a_job_on_one_model_refuse_each_other_at_the_start():
    """A job started during a notebook's sweep (and a notebook's sweep during a job) went
    ahead; the two refused each other's points and restores, and the model was left at a
    point's settings (a reviewer). Each now refuses the other before anything runs; a
    notebook's sweep does not start during a warm-up."""
    from core.lab import sweep
    with Engine() as engine:
        engine.configure("tiny", max_batch_size=32, max_wait_ms=5.0)
        inside, gate, out = threading.Event(), threading.Event(), []

        def progress(done, total, row):
            inside.set()
            assert gate.wait(WAIT_S)

        t = threading.Thread(target=lambda: out.append(sweep(
            engine, "tiny", [8, 16], [0.0], rates_rps=[200.0], duration_s=0.3,
            stability=False, baseline=False, progress=progress)))
        t.start()
        assert inside.wait(WAIT_S)
        held = "being measured by a sweep or quick search run from this process"
        for kind in ("sweep", "search", "warmup"):
            params = {"sweep": {"max_batch_sizes": [4], "max_waits_ms": [0.0]},
                      "search": {"max_batch_sizes": [4], "max_waits_ms": [0.0],
                                 "rates_rps": [100.0], "p99_ms": 50.0},
                      "warmup": {}}[kind]
            with pytest.raises(ConfigError, match=held):
                engine.start_job(kind, "tiny", **params)
        assert not engine.jobs(target="tiny")
        gate.set()
        t.join(WAIT_S)
        assert len(out[0]) == 2
        cfg = engine.batch_config("tiny")
        assert (cfg.max_batch_size, cfg.max_wait_ms) == (32, 5.0)
        # a job measuring it: a notebook's sweep is refused at once, naming the job
        job_gate = threading.Event()
        status = engine._lab.jobs.start("sweep", "tiny", lambda job: job_gate.wait(WAIT_S),
                                        params={"own_settings": {}}, exclusive=True)
        try:
            with pytest.raises(ConfigError, match=rf"sweep \(job {status.job_id}\).*to "
                                                  r"measure it now, cancel the job"):
                sweep(engine, "tiny", [8], [0.0], rates_rps=[200.0], duration_s=0.3)
        finally:
            job_gate.set()
            engine.wait_job(status.job_id, WAIT_S)
        # a warm-up going on: not started, said
        with _warming_up(engine, "tiny"):
            with pytest.raises(ConfigError, match="measuring 'tiny' not started: a warm-up "
                                                  "is going on with it"):
                sweep(engine, "tiny", [8], [0.0], rates_rps=[200.0], duration_s=0.3)
        assert engine.settings_guards == [engine._lab._check_not_measured]


def test_matching_an_arm_s_settings_is_refused_after_close_and_during_a_sweep_of_it(
        monkeypatch):
    """ab_match_settings asked the sweep guard once, outside the lock (a sweep of B
    starting meanwhile put B's settings back at its end), and worked after close()."""
    with Engine() as engine:
        engine.configure("clf-v1", max_batch_size=16, max_wait_ms=3.0)
        engine.configure("clf-v2", max_batch_size=4, max_wait_ms=0.0)
        engine.create_ab("e", a="clf-v1", b="clf-v2")
        gate = threading.Event()
        started = _racing_sweep(monkeypatch, engine, gate)
        with pytest.raises(ConfigError, match="being measured by a sweep"):
            engine.ab_match_settings("e")
        gate.set()
        engine.wait_job(started[0].job_id, WAIT_S)
        assert engine.batch_config("clf-v2").max_batch_size == 4
    with pytest.raises(EngineClosedError, match="the engine is closed"):
        engine.ab_match_settings("e")


def test_requests_unanswered_on_an_agent_are_counted_apart_in_the_merged_summary():
    """The summary of load agents' histograms counts the Unanswered too (a reviewer)."""
    from core.lab.digest import LoadDigest, digest_frame
    from core.lab.loadgen import LoadResult

    futures: list[Future] = []

    def submit(x):
        futures.append(Future())
        return futures[-1]

    res = open_loop(submit, lambda rng: 0, rate_rps=100, duration_s=0.1, drain_s=0.02)
    merged = LoadDigest()
    merged.add(digest_frame(res.frame))
    summary = LoadResult("open", res.frame.iloc[:0], res.duration_s, 0.0,
                         digest=merged).summary()
    assert summary["unanswered"] == summary["failed"] == len(futures) > 0


def test_a_recommendation_says_why_a_setting_that_met_a_higher_load_was_passed_over():
    """8 / 0 ms met the target at 1,500 req/s, the star went elsewhere, and only a sweep
    with no passing setting said why (a newcomer): it is said beside the choice too."""
    f = _frame([(8, 0.0, 300, 300, 18.65, 17.0, 20.0), (8, 0.0, 1500, 1499, 2.3, 2.1, 2.5),
                (32, 2.0, 300, 300, 3.0, 2.8, 3.2), (32, 2.0, 1500, 1500, 5.86, 5.5, 6.2)])
    rec = recommend(f, p99_slo_ms=10)
    assert (rec.max_batch_size, rec.max_wait_ms) == (32, 2.0)
    assert ("max_batch_size=8, max_wait_ms=0 met the target at 1,500 req/s but missed it "
            "at 300 (p99 18.6 ms), so it does not count: a setting must hold at every lower "
            "load too") in rec.reason, rec.reason
    # a miss by errors is said as errors, not as a p99 within the target (a reviewer)
    errs = f.copy()
    errs.loc[0, ["p99_ms", "error_rate"]] = [3.0, 0.02]
    assert "missed it at 300 (2.0% errors)" in recommend(errs, p99_slo_ms=10).reason
    alone = recommend(f[f["max_batch_size"] == 32], p99_slo_ms=10)
    assert "does not count" not in alone.reason
    # the model's own settings: said once, by the baseline's words (twice in one paragraph;
    # a newcomer)
    own = f.assign(baseline=f["max_batch_size"] == 8)
    rec = recommend(own, p99_slo_ms=10)
    assert "The model's own settings (max_batch_size=8, max_wait_ms=0) met the target at that " \
        "load" in rec.reason and "does not count" not in rec.reason, rec.reason


def test_a_recommendation_whose_interval_reaches_past_the_target_says_so():
    """"meets p99 <= 10 ms ... p99 7.83 ms (95% interval 7.06-13.01 ms)" read as a sure
    pass (a newcomer)."""
    f = _frame([(8, 2.0, 800, 800, 7.83, 7.06, 13.01)])
    assert ("Its interval reaches past the target (13.01 ms): the p99 met it here, another "
            "measurement may not") in recommend(f, p99_slo_ms=10).reason
    assert "reaches past" not in recommend(f, p99_slo_ms=14).reason


def test_a_notebooks_sweep_cut_short_by_close_says_so():
    """A job's sweep closed between points keeps its points, cancelled; a notebook's has
    no stop to say so with, and returned its partial frame as if complete (a reviewer):
    it raises that the engine closed."""
    from core.lab import sweep
    engine, out = Engine(), []
    first = threading.Event()

    def progress(done, total, row):
        first.set()
        if done == 1:
            closer.start()
            closer.join(WAIT_S)    # (closed before the next point: its configure refused)

    closer = threading.Thread(target=engine.close)

    def run():
        try:
            out.append(sweep(engine, "tiny", [1, 2, 4], [0.0], rates_rps=[200.0],
                             duration_s=0.3, stability=False, baseline=False,
                             progress=progress))
        except EngineClosedError as err:
            out.append(err)
    t = threading.Thread(target=run)
    t.start()
    t.join(WAIT_S * 3)
    assert first.is_set() and len(out) == 1
    assert isinstance(out[0], EngineClosedError), out[0]


def test_an_arrivals_file_past_the_limits_is_refused_before_it_is_parsed(monkeypatch):
    """A 190 MiB file of ``0`` lines was parsed whole (+4 GB per browser tab, on every
    rerun) to be refused for its count (an adversary): refused by its size or its lines
    first, and a timeline export's other columns are not parsed."""
    import pandas as pd

    import sys

    from core.lab import read_arrivals_csv
    from core.lab.replay import MAX_ARRIVALS_FILE_BYTES, MAX_REPLAY_ARRIVALS
    parsed: list = []   # (what each parse was told to read)
    real = pd.read_csv
    monkeypatch.setattr(sys.modules["core.lab.replay"].pd, "read_csv",
                        lambda *a, **k: parsed.append(k.get("usecols")) or real(*a, **k))
    with pytest.raises(ValueError, match=r"is 32\.0 MiB; a replay file is at most 32 MiB"):
        read_arrivals_csv(b"0\n" * (MAX_ARRIVALS_FILE_BYTES // 2 + 1))
    lines = b"arrived_s\n" + b"0\n" * (MAX_REPLAY_ARRIVALS + 1)
    with pytest.raises(ValueError, match="200,002 lines; a replay takes at most 200,000"):
        read_arrivals_csv(lines)
    with pytest.raises(ValueError, match="200,002 lines"):
        read_arrivals_csv(lines.decode().rstrip("\n"))    # (text, no last newline)
    assert parsed == []
    export = "request_id,model,arrived_s,rows,queue_ms\n7,m,0.5,2,1.0\n8,m,0.25,1,1.0\n"
    assert read_arrivals_csv(export) == ([0.0, 0.25], [1, 2])
    assert len(parsed) == 1 and [c for c in ("request_id", "model", "arrived_s", "rows",
                                             "queue_ms") if parsed[0](c)] == [
        "request_id", "arrived_s", "rows"]
    assert read_arrivals_csv(b"arrived_s\n" + b"0\n" * MAX_REPLAY_ARRIVALS)[0][-1] == 0.0
    # a header of many columns: pandas names repeated ones in quadratic time (100,000 took
    # 93 s; an adversary): refused unparsed
    for head, why in ((b"arrived_s," + b"a," * 100_000, "is over 4,096 characters"),
                      (b"arrived_s," + b"a," * 64, "is 66 columns")):
        with pytest.raises(ValueError, match=f"first line {why}; a replay file has at most "
                                             "64 columns"):
            read_arrivals_csv(head + b"\n0\n")
    assert len(parsed) == 2


def test_a_replay_runs_with_the_models_own_settings_while_a_sweep_holds_them(engine,
                                                                            monkeypatch):
    """Started while a sweep measured the model, a replay ran the sweep's point of the
    moment (2 rows / 0 ms for a model of 32 / 5 ms), and its charts later followed the
    slider's max wait (an adversary). It runs with the model's own settings, held by the
    sweep, and its result says which it ran with."""
    from types import SimpleNamespace

    from core.lab import replay
    arrivals = [k * 0.002 for k in range(20)]
    engine.configure("tiny", max_batch_size=2, max_wait_ms=0.0)     # (the sweep's point)
    held = SimpleNamespace(finished=False, params={"own_settings": {
        "max_batch_size": 16, "max_wait_ms": 3.0}})
    monkeypatch.setattr(engine, "jobs", lambda **kw: [held] if kw.get("target") == "tiny"
                        else [])
    out = replay(engine, "tiny", arrivals, policies=["deadline"])
    assert (out["max_batch_size"], out["max_wait_ms"]) == (16, 3.0)
    monkeypatch.setattr(engine, "jobs", lambda **kw: [])
    out = replay(engine, "tiny", arrivals, policies=["deadline"])
    assert (out["max_batch_size"], out["max_wait_ms"]) == (2, 0.0)


def test_a_replays_copy_is_held_from_other_threads_and_not_kept_across_a_restart(engine):
    """The copy a replay runs on was a model like any: another tab set its batch size to 1
    (the verdict changed, unsaid), swept or unloaded it (the replay was lost), and a crash
    mid-replay brought it back as a model for good (an adversary). Other threads are
    refused it, in words; the server's state leaves it out."""
    import threading

    from core.lab import replay
    seen: dict = {}

    def during(done: int, total: int, policy: str) -> None:   # (on the replay's thread)
        copy = next(n for n in engine.model_names() if "-replay-" in n)
        seen["kept"] = [m["name"] for m in engine.persistent_state()["models"]]
        before = engine.counters(copy)["total_requests"]
        for what, call in (("configure", lambda: engine.configure(copy, max_batch_size=1)),
                           ("unload", lambda: engine.unload_model(copy)),
                           ("reset", lambda: engine.reset_metrics(copy)),
                           ("arm", lambda: engine.create_ab("ab", "tiny", copy)),
                           ("traffic", lambda: engine.start_traffic(copy, rate_rps=10)),
                           ("reset all", lambda: engine.reset_metrics())):
            errors: list = []
            t = threading.Thread(target=lambda: errors.append(_raised(call)))
            t.start()
            t.join(WAIT_S)
            seen[what] = errors[0]
        seen["copy"] = copy
        seen["requests"] = (before, engine.counters(copy)["total_requests"])

    out = replay(engine, "tiny", [k * 0.002 for k in range(10)], policies=["deadline"],
                 progress=during)
    assert len(out["summary"]) == 1
    for what in ("configure", "unload", "reset", "arm", "traffic"):
        assert f"{seen['copy']!r} is a replay's private copy of 'tiny', unloaded when the " \
            "replay ends" in seen[what], seen[what]
    assert "to reset its metrics," in seen["reset"]
    assert "to make it an arm of an A/B experiment," in seen["arm"]
    assert "to send it traffic," in seen["traffic"]
    assert seen["reset all"] == "nothing raised"       # everything else was reset
    before, after = seen["requests"]
    assert before == after == 10, seen["requests"]     # but the copy's kept its count
    assert "ab" not in engine.ab_experiments()
    assert seen["copy"] not in seen["kept"] and "tiny" in seen["kept"]
    assert seen["copy"] not in engine.model_names()           # let go, then unloaded


def _raised(call) -> str:
    try:
        call()
    except Exception as err:  # noqa: BLE001
        return str(err)
    return "nothing raised"


def test_a_remote_models_sweep_does_not_claim_to_know_its_largest_batch():
    """A remote model's requests travel alone (its server batches): each answer's batch was
    its own row, so every pair of settings read "limits never acted" and tied (a
    reviewer). Its points say the largest batch is not known."""
    from tests.helpers import identity_server
    with identity_server() as (_, server), Engine(demo_models=False) as engine:
        engine.add_remote("r", url=server.url, model="ident")
        frame = sweep(engine, "r", [4, 32], [2.0], rates_rps=[100], duration_s=0.5,
                      stability=False)
    assert len(frame) >= 2 and frame["max_batch_rows"].isna().all(), frame
    faked = frame.assign(p99_ms=[2.0 if b == 4 else 1.0 for b in frame["max_batch_size"]],
                         p99_ci_low_ms=np.nan, p99_ci_high_ms=np.nan)
    rec = recommend(faked, p99_slo_ms=100)
    assert rec.max_batch_size != 4 and "never acted" not in rec.reason, rec.reason
