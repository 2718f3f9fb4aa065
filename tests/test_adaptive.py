"""The adaptive policy: online cost and rate estimates, its decisions, and SLO shedding."""

from __future__ import annotations


import numpy as np
import pytest

from core import BatchConfig, ConfigError, SLOShedError
from core.policies import CostEstimator, RateEstimator, adaptive_decision
from core.batching import Batcher
from tests.helpers import WAIT_S, rows, SlowModel


def test_decision_releases_at_once_when_waiting_is_not_worth_it():
    # 2 rows queued, 100 rows/s: the next row is ~10 ms away, far more than a 0.4 ms run.
    assert adaptive_decision(2, 32, 0.0, 0.005, 0.0004, 100.0) == ("adaptive", 0.0)


def test_decision_waits_for_the_next_row_under_load():
    reason, wait = adaptive_decision(2, 32, 0.0, 0.005, 0.0004, 20_000.0)
    assert reason is None and wait == pytest.approx(1 / 20_000)


def test_decision_full_and_deadline_win():
    assert adaptive_decision(32, 32, 0.0, 0.005, 0.0004, 20_000.0) == ("full", 0.0)
    assert adaptive_decision(3, 32, 0.006, 0.005, 0.0004, 20_000.0) == ("deadline", 0.0)


def test_no_arrivals_cap_a_stale_rate_so_waiting_stops_after_about_the_fixed_cost():
    """A rate learned in a burst that has ended must not hold a lone request to the
    deadline: after idle_s without an arrival the rate counts as at most 1 / idle_s."""
    stale = 20_000.0  # the burst's rate; the traffic is now 200 rows/s
    reason, _ = adaptive_decision(1, 32, 0.0001, 0.005, 0.0004, stale, idle_s=0.0001)
    assert reason is None  # 0.1 ms without a row: waiting may still pay
    assert adaptive_decision(1, 32, 0.0004, 0.005, 0.0004, stale,
                             idle_s=0.0004) == ("adaptive", 0.0)  # waited what a run costs
    # Under real load the newest row is always recent, so the cap changes nothing.
    assert adaptive_decision(2, 32, 0.0001, 0.005, 0.0004, stale, idle_s=0.00001)[0] is None


def test_rate_estimator_forgets_a_burst_within_a_fraction_of_a_second():
    est = RateEstimator()
    for k in range(500):  # 0.5 s at 20k rows/s
        est.observe(total_rows=k * 100, now=k * 0.005)
    base, t = 500 * 100, 500 * 0.005
    for k in range(1, 101):  # then 200 rows/s
        est.observe(total_rows=base + k, now=t + k * 0.005)
    assert est.rate_rps < 2_000


def test_cost_estimator_learns_the_line():
    est = CostEstimator(window=64, refit_every=4)
    rng = np.random.default_rng(0)
    for _ in range(64):
        n = int(rng.integers(1, 33))
        est.observe(n, 0.0005 + 0.00002 * n + rng.normal(0, 1e-6))
    assert est.ready
    assert est.a_s == pytest.approx(0.0005, rel=0.05)
    assert est.b_s == pytest.approx(0.00002, rel=0.05)
    assert est.predict(10) == pytest.approx(0.0007, rel=0.05)


def test_cost_estimator_keeps_its_line_through_a_burst_of_one_batch_size():
    est = CostEstimator(window=64, refit_every=4)
    for k in range(64):
        n = 1 + k % 32
        est.observe(n, 0.0005 + 0.00002 * n)
    line = (est.a_s, est.b_s)
    for _ in range(64):  # a burst: only full batches, the window holds one size
        est.observe(32, 0.0005 + 0.00002 * 32)
    assert (est.a_s, est.b_s) == pytest.approx(line)
    fresh = CostEstimator(refit_every=1)
    fresh.observe(32, 0.002)  # nothing to separate yet: all of it counts as fixed
    assert (fresh.a_s, fresh.b_s) == (0.002, 0.0)


def test_cost_estimator_fits_the_lower_envelope_of_one_sided_noise():
    """Runs measured in a busy process are only ever slower (GIL waits, preemption)."""
    est = CostEstimator(window=64, refit_every=1)
    rng = np.random.default_rng(3)
    for k in range(64):
        n = (1, 4, 8, 16, 32)[k % 5]
        late = 0.002 * rng.random() if rng.random() < 0.4 else 0.0
        est.observe(n, 0.0003 + 0.00003 * n + late)
    assert est.a_s == pytest.approx(0.0003, rel=0.01)
    assert est.b_s == pytest.approx(0.00003, rel=0.01)


def test_cost_estimator_does_not_extrapolate_from_sizes_close_together():
    est = CostEstimator(refit_every=1)
    est.observe(31, 0.0012)
    est.observe(32, 0.0011)  # noise: a "line" through these has a negative slope
    assert est.b_s == 0.0 and est.a_s == pytest.approx(0.00115)


def test_rate_estimator_converges():
    est = RateEstimator(half_life_s=0.1)
    for k in range(200):
        est.observe(total_rows=k * 5, now=k * 0.01)  # 500 rows/s
    assert est.rate_rps == pytest.approx(500, rel=0.01)


def test_adaptive_does_not_hold_a_lone_request_at_low_load():
    b = Batcher("a", SlowModel(0.002), ["y"],
                BatchConfig(max_batch_size=32, max_wait_ms=200, policy="adaptive"))
    try:
        preds = [b.submit((rows(1),), 1).result(WAIT_S) for _ in range(4)]
        assert {p.release_reason for p in preds} == {"adaptive"}
        assert all(p.queue_ms < 100 for p in preds)  # never held for the 200 ms max wait
        assert b.cost.ready and b.cost.a_s > 0.001
    finally:
        b.close()


def test_slo_sheds_requests_that_cannot_make_it():
    b = Batcher("s", SlowModel(0.01), ["y"],
                BatchConfig(max_batch_size=1, max_wait_ms=0, policy="adaptive",
                            latency_slo_ms=25, max_queue=1000))
    try:
        b.submit((rows(1),), 1).result(WAIT_S)  # teaches the cost: ~10 ms per batch
        futs = [b.submit((rows(1, start=i),), 1) for i in range(12)]
        outcomes = [f.exception(WAIT_S) for f in futs]
    finally:
        b.close()
    shed = [e for e in outcomes if isinstance(e, SLOShedError)]
    served = [e for e in outcomes if e is None]
    assert served and shed and len(served) + len(shed) == 12
    assert "cannot finish within latency_slo_ms=25" in str(shed[0])
    assert b.metrics.snapshot().errors_by_type["SLOShedError"] == len(shed)


def test_adaptive_fills_batches_under_load():
    run = SlowModel(0.004)
    b = Batcher("busy", run, ["y"], BatchConfig(max_batch_size=16, max_wait_ms=50,
                                                policy="adaptive", max_queue=10_000))
    try:
        for _ in range(5):  # learn the ~4 ms cost
            b.submit((rows(1),), 1).result(WAIT_S)
        futs = [b.submit((rows(1, start=i),), 1) for i in range(160)]  # a burst
        preds = [f.result(WAIT_S) for f in futs]
    finally:
        b.close()
    assert max(p.batch_rows for p in preds) == 16
    assert np.mean([p.batch_rows for p in preds]) > 8


def test_slo_needs_the_adaptive_policy():
    with pytest.raises(ConfigError, match="latency_slo_ms works with policies"):
        BatchConfig(latency_slo_ms=10)
    BatchConfig(policy="adaptive", latency_slo_ms=10)


def test_a_tight_slo_gets_smaller_batches_not_shed_requests():
    """Issue 14: with a 2 ms SLO the whole batch of 32 needs ~2.1 ms, and every request
    that had waited at all was shed; those that can make it in a smaller batch now run."""
    from core.policies import choose_within_slo

    def predict(n: int) -> float:  # t(n) = 0.5 ms + 0.05 ms per row
        return 0.0005 + 0.00005 * n

    run, back, shed = choose_within_slo([0.0001] * 32, [1] * 32, predict, 0.002)
    assert (len(run), len(back), shed) == (28, 4, [])  # 0.1 + 0.5 + 0.05*28 = 2.0 ms
    assert run == list(range(28))  # the oldest first
    # One that waited 1.8 ms cannot make it even alone (1.8 + 0.55 > 2): shed; the oldest
    # one left decides the size of the batch.
    run, back, shed = choose_within_slo([0.0018, 0.0009, 0.0001, 0.0001], [1, 4, 1, 1],
                                        predict, 0.002)
    assert shed == [0] and run == [1, 2, 3] and back == []
    run, back, shed = choose_within_slo([0.0012, 0.0001, 0.0001], [1, 8, 1], predict, 0.002)
    assert run == [0, 2] and back == [1] and shed == []  # the 8-row request waits its turn


def test_admission_predicts_with_a_high_percentile_of_recent_slowdowns():
    from core.policies.estimators import SLOWDOWN_QUANTILE, CostEstimator
    est = CostEstimator()
    for rows in (1, 4, 16, 1, 4, 16, 1, 4):
        est.observe(rows, 0.001 + 0.0001 * rows)
    assert est.ready
    # A crowded machine: most backlogged cycles at the fitted cost, one in five 3x slower.
    for k in range(64):
        rows = 16
        slow = 3.0 if k % 5 == 0 else 1.0
        est.observe_cycle(rows, est.predict(rows) * slow)
    assert est.slowdown < 1.6  # the average hides the slow stretches...
    assert est.slowdown_high == 3.0 and SLOWDOWN_QUANTILE == 0.9  # ...the p90 does not
    typical, high = est.drain_s(64, 4), est.drain_s(64, 4, high=True)
    assert high == pytest.approx(typical / est.slowdown * 3.0)


def test_the_high_slowdown_is_forgotten_after_a_quiet_spell():
    from core.policies import estimators
    est = estimators.CostEstimator()
    for rows in (1, 4, 16, 1, 4, 16, 1, 4):
        est.observe(rows, 0.001 + 0.0001 * rows)
    for _ in range(16):
        est.observe_cycle(16, est.predict(16) * 5.0)
    assert est.slowdown_high == 5.0
    est.relax()  # right after the crowded spell: kept
    assert est.slowdown_high == 5.0
    est._last_ratio_t -= estimators._RATIO_TTL_S + 1  # no backlogged cycle for a while
    est.relax()
    assert est.slowdown_high == 1.0 and est.drain_s(16, 1, high=True) == est.drain_s(16, 1)
