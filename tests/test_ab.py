"""A/B experiments: routing modes, per-arm metrics, statistics and their error rates."""

from __future__ import annotations

import math
import re
import threading
import time

import numpy as np
import pytest
from scipy import stats

from core import ConfigError, Engine, InputValidationError, build_demo_model
from core.ab import (compare_errors, compare_latency, sample_size_means,
                          sample_size_proportions)
from core.ab import ABExperiment
from tests.helpers import WAIT_S


# -- routing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_random_split_proportion_within_tolerance(share):
    exp = ABExperiment("e", "m1", "m2", b_share=share, seed=7)
    n = 20_000
    to_b = sum(exp.route()[0] == "b" for _ in range(n))
    # A two-sided binomial test at a strict level: fails only on a real bias.
    assert stats.binomtest(to_b, n, share).pvalue > 0.001


def test_random_split_is_reproducible_with_a_seed():
    a = [ABExperiment("e", "m1", "m2", 0.3, seed=11).route()[0] for _ in range(1)]
    r1 = ABExperiment("e", "m1", "m2", 0.3, seed=11)
    r2 = ABExperiment("e", "m1", "m2", 0.3, seed=11)
    assert [r1.route()[0] for _ in range(500)] == [r2.route()[0] for _ in range(500)]
    assert a


def test_sticky_keys_are_stable_proportional_and_monotone():
    exp = ABExperiment("e", "m1", "m2", b_share=0.25, mode="sticky")
    keys = [f"user-{i}" for i in range(20_000)]
    first = {k: exp.route(k)[0] for k in keys}
    assert all(exp.route(k)[0] == first[k] for k in keys[:2000])  # stable across calls
    to_b = sum(v == "b" for v in first.values())
    assert stats.binomtest(to_b, len(keys), 0.25).pvalue > 0.001
    exp.update(b_share=0.5)
    after = {k: exp.route(k)[0] for k in keys}
    assert all(after[k] == "b" for k in keys if first[k] == "b")  # B users stay in B
    with pytest.raises(InputValidationError, match="sticky: it routes by key"):
        exp.route(None)
    # one user whatever the type their id came in: 7, 7.0 (a pandas column), numpy's 7,
    # "7" (sent 1 and 1.0 to different arms; an adversary); 7.5 is not 7
    for n in range(200):
        assert len({exp.key_point(k) for k in (n, float(n), np.int64(n), np.float32(n),
                                                str(n))}) == 1, n
    assert exp.key_point(7.5) != exp.key_point(7)


def test_shadow_caller_always_gets_a():
    exp = ABExperiment("e", "m1", "m2", b_share=1.0, mode="shadow")
    assert {exp.route(k) for k in range(100)} == {("a", "m1")}


def test_bad_experiment_settings():
    with pytest.raises(ConfigError, match="b_share must be a number >= 0 and <= 1"):
        ABExperiment("e", "m1", "m2", b_share=1.5)
    with pytest.raises(ConfigError, match="mode must be one of"):
        ABExperiment("e", "m1", "m2", mode="canary")


def test_experiments_with_arm_names_each_and_skips_one_deleted_meanwhile():
    from core.errors import ModelNotFoundError
    from core.lab import experiments_with_arm

    class Engine2:  # the experiment list read before "gone" was deleted in another tab
        arms = {"checkout": ("clf-v1", "clf-v2"), "gone": ("clf-v2", "mlp"),
                "other": ("mlp", "clf-v1")}

        def ab_experiments(self):
            return list(self.arms)

        def ab_arms(self, name):
            if name == "gone":
                raise ModelNotFoundError("no A/B experiment 'gone'")
            return self.arms[name]

    assert experiments_with_arm(Engine2(), "clf-v2") == [("checkout", "B")]
    assert experiments_with_arm(Engine2(), "clf-v1") == [("checkout", "A"), ("other", "B")]
    assert experiments_with_arm(Engine2(), "tiny") == []


# -- engine integration ------------------------------------------------------------------------
def test_engine_ab_contract():
    with Engine() as engine:
        engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.2, mode="random", seed=3)
        x = engine.sample_input("clf-v1", rows=1)
        arms = [engine.predict("exp", x).arm for _ in range(200)]
        assert set(arms) == {"a", "b"}
        pred = engine.predict("exp", x, key="user-42")
        assert pred.arm in ("a", "b") and pred.model == ("clf-v1" if pred.arm == "a" else "clf-v2")
        engine.update_ab("exp", b_share=1.0)  # promote B
        assert {engine.predict("exp", x).arm for _ in range(20)} == {"b"}
        d = engine.ab_report("exp").to_dict()
        # promoting begins a segment: B alone under all the load is not compared with the
        # split before it (a newcomer); the segment before keeps its 201
        assert (d["arms"]["a"]["requests"], d["arms"]["b"]["requests"]) == (0, 20)
        assert d["segment_reason"] == "B's share 0.20 → 1.00"
        assert d["previous_segments"][-1]["report"]["total_requests"] == 201
        assert engine.metrics("exp").total_requests == 221   # the callers' totals go on
        assert {"latency", "errors", "verdict", "confound_warning"} <= set(d)
        with pytest.raises(ConfigError, match="different inputs"):
            engine.create_ab("bad", a="clf-v1", b="mlp")


def test_arms_match_by_meaning_not_by_the_label_of_a_dynamic_dimension():
    """The same model served with its batch dimension named differently ("N" here,
    "batch" or "?" elsewhere: skl2onnx, a remote server's -1) is a valid pair of arms; arms
    that really differ are refused with what differs."""
    from onnx import TensorProto
    from tests.helpers import identity_model
    with Engine(demo_models=False) as engine:
        engine.load_model(identity_model(shape=["N", 3]), name="n")
        engine.load_model(identity_model(shape=["batch", 3]), name="batch")
        engine.load_model(identity_model(shape=[None, 3]), name="none")
        engine.create_ab("same", a="n", b="batch")
        engine.create_ab("same2", a="n", b="none")
        engine.load_model(identity_model(TensorProto.DOUBLE, ["N", 3]), name="f64")
        engine.load_model(identity_model(shape=["N", 4]), name="wide")
        engine.load_model(identity_model(shape=[1, 3]), name="fixed")
        with pytest.raises(ConfigError, match=r"input 'x' is float32 vs float64"):
            engine.create_ab("bad", a="n", b="f64")
        with pytest.raises(ConfigError, match=r"input 'x' has shape \[\?, 3\] vs \[\?, 4\]"):
            engine.create_ab("bad", a="n", b="wide")
        with pytest.raises(ConfigError, match=r"shape \[\?, 3\] vs \[1, 3\]"):
            engine.create_ab("bad", a="n", b="fixed")
        with pytest.raises(ConfigError, match="differ from those of arm .batch.*is float64 vs float32"):
            engine.load_model(identity_model(TensorProto.DOUBLE, ["N", 3]), name="n",
                              replace=True)


def test_sticky_through_engine_keeps_each_user_on_one_model():
    with Engine() as engine:
        engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.5, mode="sticky")
        x = engine.sample_input("clf-v1")
        for user in range(30):
            seen = {engine.predict("exp", x, key=f"u{user}").model for _ in range(3)}
            assert len(seen) == 1


def test_shadow_never_changes_what_the_caller_gets_even_when_b_fails():
    with Engine() as engine:
        engine.create_ab("exp", a="clf-v1", b="clf-v2", mode="shadow")

        def broken(arrays):
            raise RuntimeError("B exploded (injected)")

        engine._registry.models["clf-v2"].served._run = broken
        xs = [engine.sample_input("clf-v1", rows=2, seed=i) for i in range(40)]
        direct = [engine.predict("clf-v1", x).outputs["probs"] for x in xs]
        via = [engine.predict("exp", x) for x in xs]
        for d, p in zip(direct, via):
            assert p.arm == "a" and p.model == "clf-v1"
            np.testing.assert_allclose(p.outputs["probs"], d, rtol=1e-5, atol=1e-6)
        engine.close()  # B's copies run in the background: let them finish first
        rep = engine.ab_report("exp").to_dict()
        assert engine.ab_metrics("exp", "b").error_count == 40  # B failed every copy...
        assert rep["arms"]["a"]["errors"] == 0                   # ...and no caller saw it
        assert rep["shadow"]["b_failed"] == 40


def test_shadow_compares_outputs():
    with Engine() as engine:
        engine.create_ab("exp", a="clf-v1", b="clf-v2", mode="shadow")
        futs = [engine.submit("exp", engine.sample_input("clf-v1", rows=4, seed=i))
                for i in range(50)]
        for f in futs:
            f.result(WAIT_S)
        engine.close()  # drains B's copies too
        shadow = engine.ab_report("exp").to_dict()["shadow"]
    assert shadow["compared_requests"] == 50 and shadow["b_failed"] == 0
    assert 0.5 < shadow["label_agreement"] <= 1.0   # v2 mostly agrees with v1
    assert 0 < shadow["max_abs_diff"]["probs"] < 1


def test_what_a_caller_does_with_its_answer_never_changes_the_shadow_comparison():
    """An adversary (helper): shadow mode between a model and an exact copy, the caller
    taking np.exp of each answer in place: 'max_abs_diff probs 1.18' between two identical
    models (A's outputs were read once B finished, after the caller changed them). A's
    answer is kept as it left the model."""
    import threading as _threading
    with Engine(demo_models=False) as engine:
        engine.load_model(build_demo_model("clf-v1"), name="v1")
        engine.load_model(build_demo_model("clf-v1"), name="same")
        engine.configure("same", max_wait_ms=200.0, max_batch_size=64)   # B answers late
        engine.create_ab("exp", a="v1", b="same", mode="shadow")
        x = engine.sample_input("v1", rows=2, seed=0)
        for _ in range(10):
            pred = engine.predict("exp", x)
            np.exp(pred.outputs["probs"], out=pred.outputs["probs"])   # the caller's own
        pause, waited = _threading.Event(), 0.0
        while engine.ab_report("exp").shadow["compared_requests"] < 10:   # B's copies
            assert waited < WAIT_S, engine.ab_report("exp").shadow
            pause.wait(0.01)
            waited += 0.01
        shadow = engine.ab_report("exp").shadow
    assert shadow["compared_requests"] == 10 and shadow["max_abs_diff"]["probs"] == 0.0
    assert shadow["label_agreement"] == 1.0


def test_update_ab_under_concurrent_traffic_loses_no_request():
    with Engine() as engine:
        engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.5, seed=0)
        x = engine.sample_input("clf-v1")
        futs, errors = [], []
        stop = threading.Event()

        def client():
            while not stop.is_set():
                try:
                    futs.append(engine.submit("exp", x))
                except Exception as err:  # noqa: BLE001
                    errors.append(err)
                stop.wait(0.0005)

        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        for share in [0.1, 0.3, 0.7, 0.9, 0.5] * 4:   # (within one segment: every request)
            engine.update_ab("exp", b_share=share)
            stop.wait(0.02)
        stop.set()
        for t in threads:
            t.join(WAIT_S)
        assert errors == [] and all(f.exception(WAIT_S) is None for f in futs)
        d = engine.ab_report("exp").to_dict()
        assert d["total_requests"] == len(futs) == engine.metrics("exp").total_requests


def test_confound_warning_for_uneven_split():
    with Engine() as engine:
        engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.1, seed=0)
        for i in range(300):
            engine.submit("exp", engine.sample_input("clf-v1", seed=i))
        engine.close()
        report = engine.ab_report("exp")
        warning = report.confound_warning
        seen = report.arms["b"].total_requests / 300   # (the split these requests had)
        assert warning and f"arm B got {seen:.0%} of this segment's arrivals, so" in warning \
            and "shadow" in warning
        # the same data, the split changed since: still said (the warning went away with
        # the configured split; an adversary), and that the split set now is another one
        # ("B sees 10 %" was said with the split at 50 %; a newcomer)
        engine.update_ab("exp", b_share=0.5)
        changed = engine.ab_report("exp").confound_warning
        assert changed == warning.replace(
            "arrivals, so", "arrivals (the split is 50% to B now: it changed during this "
            "segment; Reset to compare at that split alone), so"), changed


def test_a_latency_verdict_says_whether_the_queue_or_the_model_made_the_difference():
    """A newcomer read 'B is slower by 1.61 ms' over an 80/20 split as B's model being
    slower; the verdict now tells the queue's wait from the run, at p50."""
    from core.ab import ABReport
    from core.metrics import ModelMetrics

    def arm(queue_ms: float, compute_ms: float, rows: int):
        m = ModelMetrics()
        for _ in range(50):
            m.record_batch(rows=rows, reason="full", compute_s=compute_ms / 1e3,
                           queue_s=[queue_ms / 1e3] * rows, failed={}, depth=0)
        return m.snapshot()

    rng = np.random.default_rng(2)
    lat = compare_latency(rng.normal(3.0, 0.1, 500), rng.normal(4.6, 0.1, 500), seed=0)
    assert lat.meaningful and lat.diff_p50_ms > 1
    queued = ABReport("e", "m1", "m2", 0.2, "random", {"a": arm(1.0, 2.0, 8),
                                                        "b": arm(2.5, 2.1, 2)}, latency=lat)
    # (the histograms keep ~1 %: 1.5 ms may read 1.51)
    assert re.fullmatch(r"At p50 B waits 1\.5\d ms longer than A in the queue and runs "
                        r"0\.\d\d ms longer than A: the difference is mostly queueing, not the "
                        r"model",
                        queued.latency_parts), queued.latency_parts
    assert queued.latency_parts in queued.verdict and queued.verdict.startswith("B is slower")
    assert queued.to_dict()["latency_parts"] == queued.latency_parts
    model = ABReport("e", "m1", "m2", 0.5, "random", {"a": arm(1.0, 2.0, 8),
                                                       "b": arm(0.9, 3.6, 8)}, latency=lat)
    assert re.search(r"waits 0\.\d\d ms shorter than A in the queue and runs 1\.[56]\d ms "
                     r"longer than A: the difference is mostly the model's run$",
                     model.latency_parts)
    both = ABReport("e", "m1", "m2", 0.5, "random", {"a": arm(1.0, 2.0, 8),
                                                      "b": arm(1.8, 2.8, 8)}, latency=lat)
    assert "mostly" not in both.latency_parts
    level = ABReport("e", "m1", "m2", 0.5, "random", {"a": arm(0.0, 2.0, 8),
                                                       "b": arm(0.0, 3.6, 8)}, latency=lat)
    # ("runs as long than A" read wrong; a newcomer)
    assert level.latency_parts.startswith("At p50 B waits as long as A in the queue and runs 1.")
    even = ABReport("e", "m1", "m2", 0.5, "random", {"a": arm(1.0, 2.0, 8),
                                                      "b": arm(2.6, 2.0, 8)}, latency=lat)
    assert even.latency_parts.startswith("At p50 B waits 1.") and " runs as long as A" in \
        even.latency_parts, even.latency_parts
    same = compare_latency(rng.normal(3.0, 0.1, 500), rng.normal(3.0, 0.1, 500), seed=0)
    quiet = ABReport("e", "m1", "m2", 0.2, "random", {"a": arm(1.0, 2.0, 8),
                                                       "b": arm(2.5, 2.1, 2)}, latency=same)
    assert not same.meaningful and quiet.latency_parts is None   # nothing to explain


# -- statistics ---------------------------------------------------------------------------------
def test_sample_sizes_match_reference_values():
    # Two-sample z approximation: 2 * ((1.95996 + 0.84162) * 10 / 2)^2 = 392.4 -> 393
    assert sample_size_means(10.0, 2.0) == 393
    # Fleiss without continuity correction, p1 = 5%, p2 = 10%: 435 per group
    assert sample_size_proportions(0.05, 0.10) == 435


def test_error_comparison_matches_two_proportion_z_test():
    res = compare_errors(45, 1000, 60, 1000)
    p1, p2 = 45 / 1000, 60 / 1000
    pool = (45 + 60) / 2000
    z = (p2 - p1) / np.sqrt(pool * (1 - pool) * (2 / 1000))
    assert res.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    assert res.p_value == pytest.approx(0.1326, abs=1e-4)
    assert not res.significant and "No significant error-rate difference" in res.verdict
    strong = compare_errors(10, 2000, 80, 2000)
    assert strong.significant and strong.verdict.startswith("B has more errors")


def test_small_error_tables_use_the_exact_test():
    """0/20 against 4/20: chi-square says p = 0.035 (significant), Fisher's exact 0.106."""
    small = compare_errors(0, 20, 4, 20)
    assert small.p_value == pytest.approx(stats.fisher_exact([[0, 20], [4, 16]]).pvalue)
    assert small.p_value == pytest.approx(0.106, abs=1e-3) and not small.significant


def test_a_callers_bad_inputs_are_not_an_arms_errors():
    """Two identical models, sticky; one user pinned to B sends rows of the wrong width:
    15 refusals made "B has more errors, p < 0.001". They are the caller's doing (both arms
    take the same inputs): the test leaves them out and the verdict says so."""
    with Engine() as engine:
        engine.load_model(build_demo_model("clf-v1"), name="clf-copy")
        engine.create_ab("exp", a="clf-v1", b="clf-copy", b_share=0.5, mode="sticky")
        exp = engine._ns.experiment("exp")
        user = next(f"u{i}" for i in range(200) if exp.key_point(f"u{i}") < 0.5)
        x = engine.sample_input("clf-v1")
        for i in range(200):
            engine.predict("exp", x, key=f"good{i}")
        wrong = np.zeros((1, x.shape[1] + 1), np.float32)
        for _ in range(15):
            with pytest.raises(InputValidationError):
                engine.predict("exp", wrong, key=user)
        report = engine.ab_report("exp")
        assert report.arms["b"].errors_by_type == {"InputValidationError": 15}  # shown as is
        err = report.errors
        assert (err.errors_b, err.errors_a, err.significant) == (0, 0, False)
        assert err.n_a + err.n_b == 200
        assert "15 request(s) refused for their inputs (A 0, B 15) are left out" in err.verdict


def test_a_latency_verdict_over_the_latest_requests_only_says_so(monkeypatch):
    """Each arm keeps its latest 20,000 latencies: past that, the verdict's p50 (0.63 ms)
    and the arms table's whole-segment p50 (3.06 ms) disagreed, unexplained. Here with a
    cap of 50, so that 120 requests pass it; the samples are taken before the counts, so
    the verdict never has more latencies than the table has successes."""
    from core.ab import routing
    monkeypatch.setattr(routing, "_SAMPLES_PER_ARM", 50)
    with Engine() as engine:
        engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.5, mode="random", seed=1)
        x = engine.sample_input("clf-v1")
        for _ in range(240):
            engine.predict("exp", x)
        report = engine.ab_report("exp")
        lat, arms = report.latency, report.arms
        assert (lat.n_a, lat.n_b) == (50, 50)
        assert (f"(over each arm's latest requests: 50 of A's {arms['a'].success_count:,}, "
                f"50 of B's {arms['b'].success_count:,})") in lat.verdict, lat.verdict
    with Engine() as engine:   # under the cap: every request, nothing to say
        engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.5, mode="random", seed=1)
        for _ in range(60):
            engine.predict("exp", engine.sample_input("clf-v1"))
        assert "latest requests" not in engine.ab_report("exp").latency.verdict


def test_latency_comparison_finds_a_real_difference():
    rng = np.random.default_rng(1)
    a = rng.lognormal(np.log(5), 0.2, 3000)
    b = rng.lognormal(np.log(5), 0.2, 3000) + 1.0
    res = compare_latency(a, b, seed=0)
    assert res.significant and res.p_value <= 1e-4   # (the least 10,000 draws can say)
    assert res.verdict.startswith("B is slower by")
    assert res.ci_low_ms < res.diff_p50_ms < res.ci_high_ms
    assert 0.8 < res.diff_p50_ms < 1.2
    assert res.meaningful    # 1 ms on 5 ms: past the 0.25 ms worth detecting
    # The exact bootstrap of the medians matches resampling them by hand
    rng = np.random.default_rng(7)
    by_hand = np.median(rng.choice(b, (4000, len(b))), axis=1) - np.median(
        rng.choice(a, (4000, len(a))), axis=1)
    ref_lo, ref_hi = np.quantile(by_hand, [0.025, 0.975])
    width = ref_hi - ref_lo
    assert abs(res.ci_low_ms - ref_lo) < 0.1 * width and abs(res.ci_high_ms - ref_hi) < 0.1 * width


def test_the_bootstrap_medians_match_resampling_by_hand_for_odd_and_even_samples():
    """The order-statistic draws against np.median of real resamples: an even n takes
    the mean of its two middle values, as np.median does (the lower one alone shifted
    the interval by 5-9 % of its width at n = 20)."""
    from core.ab.statistics import _boot_medians
    rng = np.random.default_rng(11)
    for n in (20, 21, 200, 201):
        x = np.sort(rng.lognormal(1.5, 0.4, n))
        drawn = np.quantile(_boot_medians(x, np.random.default_rng(0), 20_000),
                            [0.025, 0.5, 0.975])
        by_hand = np.quantile(np.median(rng.choice(x, (20_000, n)), axis=1),
                              [0.025, 0.5, 0.975])
        width = by_hand[2] - by_hand[0]
        assert np.abs(drawn - by_hand).max() < (0.03 if n < 100 else 0.1) * width, (n, drawn)


def test_a_latency_verdict_never_contradicts_its_interval_and_says_when_it_is_too_small():
    """The page said 'B is slower by 0.06 ms at p50 (95% CI -0.25 to 0.19 ms), p < 0.001':
    a Mann-Whitney test on all samples beside a bootstrap of 2,000 of them. Now both come
    from one bootstrap of the whole samples, and a difference below the one worth
    detecting is called too small to act on."""
    rng = np.random.default_rng(3)
    for shift in (0.0, 0.02, 0.05, 0.1, 0.3, 1.0):
        for n in (50, 500, 20_000):
            a = rng.lognormal(np.log(4.5), 0.3, n)
            b = rng.lognormal(np.log(4.5), 0.3, n) + shift
            res = compare_latency(a, b, seed=0)
            excludes_zero = res.ci_low_ms > 0 or res.ci_high_ms < 0
            assert res.significant == excludes_zero == (res.p_value < 0.05), (shift, n, res)
            assert res.ci_low_ms <= res.diff_p50_ms <= res.ci_high_ms, (shift, n, res)
            assert res.meaningful == (res.significant and abs(res.diff_p50_ms) >= res.detect_ms)
            if res.significant and not res.meaningful:
                # too small to act on only when the whole interval is (a newcomer read "no
                # difference to act on" beside a CI of 0.10 to 0.28 ms, 0.25 worth detecting)
                within = max(abs(res.ci_low_ms), abs(res.ci_high_ms)) <= res.detect_ms
                assert ("by only" in res.verdict and "no difference to act on" in res.verdict
                        ) == within, res
                assert ("but the interval reaches past it" in res.verdict) == (not within)
                assert (res.more_needed_per_arm > 0) == (not within), res
    for seed in range(40):   # quantised (1 ms) latencies pile draws up at 0: still agree
        q = np.random.default_rng(seed)
        res = compare_latency(np.round(q.lognormal(np.log(4.5), 0.3, 300)),
                              np.round(q.lognormal(np.log(4.5), 0.3, 300) + 0.4), seed=seed)
        assert res.significant == (res.ci_low_ms > 0 or res.ci_high_ms < 0) == (
            res.p_value < 0.05), res
    small = compare_latency(rng.lognormal(np.log(4.5), 0.3, 20_000),
                            rng.lognormal(np.log(4.5), 0.3, 20_000) + 0.08, seed=0)
    assert small.significant and not small.meaningful and small.detect_ms == pytest.approx(
        0.05 * small.p50_a_ms)
    assert small.verdict.startswith("B is slower by only")
    # the estimate under the 0.25 ms worth detecting, the interval past it: more requests
    rng = np.random.default_rng(3)
    near = compare_latency(rng.lognormal(np.log(5.0), 0.3, 2000),
                           rng.lognormal(np.log(5.0), 0.3, 2000) + 0.2, detect_ms=0.25, seed=0)
    assert near.significant and not near.meaningful and near.ci_high_ms > 0.25, near
    assert "but the interval reaches past it; about" in near.verdict, near.verdict
    from core.ui.fmt import more_needed
    assert more_needed(near) == f"{near.more_needed_per_arm:,}"
    # a skewed interval (quantised latencies): the far end's reach, not the half-width, says
    # how many more (it said "about 1 more requests" of CI 0.20-1.20, 1 ms worth detecting)
    q = np.random.default_rng(31)
    n = int(q.integers(40, 400))
    skew = compare_latency(np.round(q.lognormal(np.log(4.5), 0.3, n)),
                           np.round(q.lognormal(np.log(4.5), 0.3, n)) + q.choice([0, 0.1, 0.2]),
                           detect_ms=1.0, seed=0)
    reach, room = skew.ci_high_ms - skew.diff_p50_ms, 1.0 - skew.diff_p50_ms
    assert skew.significant and not skew.meaningful and reach > room, skew
    assert skew.more_needed_per_arm == math.ceil(n * (reach / room) ** 2) - n > 100, skew
    # the priority classes' comparison says it in the same words
    from core.ab import too_small_words
    assert skew.verdict.endswith(too_small_words(skew)) and too_small_words(small).endswith(
        "no difference to act on")


def test_no_more_requests_are_asked_for_once_a_difference_is_detected():
    """The page said 'more per arm needed: 2,771' beside p < 0.001: the normal-theory size,
    from a heavy tail's variance, still asked for more of a difference already seen."""
    rng = np.random.default_rng(5)
    a = np.concatenate([rng.normal(5.0, 0.2, 570), rng.uniform(50, 400, 30)])   # a slow tail
    b = np.concatenate([rng.normal(6.0, 0.2, 570), rng.uniform(50, 400, 30)])
    res = compare_latency(a, b, seed=0)
    assert res.meaningful and res.p_value < 0.001
    assert res.n_needed_per_arm > 600        # what the variance alone would ask for
    assert res.more_needed_per_arm == 0
    errs = compare_errors(5, 600, 60, 600)
    assert errs.significant and errs.more_needed_per_arm == 0
    # nothing seen, and the interval does not yet rule out the difference worth detecting
    few = np.random.default_rng(1)
    quiet = compare_latency(few.normal(5, 1, 40), few.normal(5, 1, 40), seed=0)
    assert not quiet.significant and quiet.more_needed_per_arm > 0
    # nothing seen, and the interval rules it out already: none more asked for ("166,844
    # more needed" beside a CI of -0.001 to 0.001 ms, from the tail's variance; an adversary)
    tight = compare_latency(a, a[::-1].copy() + 0.01, seed=0)
    assert not tight.significant and tight.more_needed_per_arm == 0
    assert tight.verdict.endswith("the interval rules out a difference of 0.25 ms or more "
                                  "either way")
    from core.ui.fmt import more_needed   # the page's column
    assert more_needed(tight) == "none: enough to have seen it"
    assert more_needed(res) == more_needed(errs) == "none: detected"
    assert more_needed(quiet) == f"{quiet.more_needed_per_arm:,}"
    # significant but under the difference worth detecting; none either way with enough
    rng2 = np.random.default_rng(3)
    small = compare_latency(rng2.lognormal(np.log(4.5), 0.3, 20_000),
                            rng2.lognormal(np.log(4.5), 0.3, 20_000) + 0.08, seed=0)
    assert small.significant and not small.meaningful
    assert more_needed(small) == "none: only a smaller difference is seen"
    calm = compare_errors(0, 25_000, 0, 25_000)
    assert not calm.significant and calm.more_needed_per_arm == 0
    assert more_needed(calm) == "none: enough to have seen it"
    early = compare_latency([5.0] * 5, [6.0] * 5)              # under 20 a arm: no test yet
    assert early.more_needed_per_arm == 0 and more_needed(early) == "not tested yet"


def test_latency_comparison_needs_data():
    res = compare_latency([1.0] * 5, [2.0] * 5)
    assert not res.significant and res.verdict.startswith("Not enough data")


def test_identical_models_are_not_declared_different_more_often_than_alpha():
    runs, alpha = 300, 0.05
    rng = np.random.default_rng(2026)
    positives = 0
    for _ in range(runs):
        a = rng.lognormal(np.log(4), 0.4, 200)
        b = rng.lognormal(np.log(4), 0.4, 200)
        positives += compare_latency(a, b, seed=1).significant
    # Under the null, positives ~ Binomial(300, 0.05); allow its 99.9% upper bound.
    assert positives <= stats.binom.ppf(0.999, runs, alpha)
    err_pos = sum(compare_errors(rng.binomial(400, 0.05), 400, rng.binomial(400, 0.05),
                                 400).significant for _ in range(runs))
    assert err_pos <= stats.binom.ppf(0.999, runs, alpha)


def test_report_names_every_difference_between_the_arms_besides_the_model(engine):
    """Issue 14: 'B is faster by 4.86 ms at p50' came entirely from B's max_wait_ms=0."""
    engine.create_ab("fair", a="clf-v1", b="clf-v2", b_share=0.5)
    assert not [w for w in engine.ab_report("fair").warnings if "batch settings" in w]
    engine.configure("clf-v1", max_wait_ms=5.0)
    engine.configure("clf-v2", max_wait_ms=0.0, policy="adaptive", instances=2)
    warnings = engine.ab_report("fair").warnings
    batch = next(w for w in warnings if "batch settings" in w)
    assert "max wait (ms): A 5.0, B 0.0" in batch and "release policy: A deadline, B adaptive" \
        in batch and "B can look up to 5 ms faster" in batch
    assert "runs at once (instances): A 1, B 2" in batch   # (an API user: it was not named)
    cfg = engine.ab_match_settings("fair")
    assert engine.batch_config("clf-v2") == engine.batch_config("clf-v1") == cfg
    assert not [w for w in engine.ab_report("fair").warnings if "batch settings" in w]
    # An uneven split is a difference too (seeded routing: B gets some of the 100).
    engine.create_ab("uneven", a="clf-v1", b="clf-v2", b_share=0.1, seed=0)
    for _ in range(100):     # one at a time: every batch one row on both arms
        engine.predict("uneven", engine.sample_input("clf-v1"))
    report = engine.ab_report("uneven")
    assert report.arms["b"].total_requests > 0
    # (a newcomer: "batches fill more slowly (mean 1.0 rows vs 1.0)": not said when not so)
    assert not any("Uneven split" in w for w in report.warnings)
    # (batches that fill on A and not on B: said, with the means; test_confound_warning...)
    from core.ab import ABReport
    from core.metrics import ModelMetrics

    def arm(rows: int, queue_ms: float = 1.0, batches: int = 1):
        m = ModelMetrics()
        for _ in range(batches):
            m.record_batch(rows=rows, reason="full", compute_s=0.001,
                           queue_s=[queue_ms / 1e3] * rows, failed={}, depth=0)
        return m.snapshot()
    # (ten batches each: a split of 10 requests is within the routing's noise)
    report = ABReport("e", "m1", "m2", 0.1, "random", {"a": arm(8, batches=10),
                                                         "b": arm(2, batches=10)})
    assert "so its batches fill more slowly (mean 2.0 rows vs 8.0), for reasons that are " \
        "not the model" in report.confound_warning, report.confound_warning
    # (the waits said only when the small arm's is longer: "and its requests wait longer"
    # was said of 1.06 ms vs 5.05 ms; a newcomer)
    assert "wait longer" not in ABReport("e", "m1", "m2", 0.1, "random", {
        "a": arm(8, 5.0, 10), "b": arm(2, 1.0, 10)}).confound_warning
    assert ABReport("e", "m1", "m2", 0.1, "random", {"a": arm(8), "b": arm(8)}
                    ).confound_warning is None
    # 14 of 20 on B of a 50/50 split is the routing's chance, not an uneven split (it was
    # blamed; a reviewer); the same share of 200 is not
    assert ABReport("e", "m1", "m2", 0.5, "random", {"a": arm(2, batches=3),
                                                     "b": arm(7, batches=2)}
                    ).confound_warning is None
    assert ABReport("e", "m1", "m2", 0.5, "random", {"a": arm(2, batches=30),
                                                     "b": arm(7, batches=20)}
                    ).confound_warning.startswith("Uneven split (30%/70%)")
    # full batches on both arms that take the small arm nine times longer to fill (a
    # reviewer): said, by the queue's wait
    # (nine batches on A to one on B: the split the requests had is what is judged)
    full = ABReport("e", "m1", "m2", 0.1, "random", {"a": arm(8, 0.5, 9), "b": arm(8, 4.5)})
    assert re.search(r"so its requests wait longer in the queue \(4\.5\d ms vs 0\.50 ms at "
                     r"p50\), for reasons", full.confound_warning), full.confound_warning
    assert "fill more slowly" not in full.confound_warning
    assert report.to_dict()["warnings"] == report.warnings


def test_shadow_matches_outputs_by_position_and_kind_and_counts_copies(engine):
    """A classifier naming its labels 'output_label' against one naming them 'label'."""
    from core.ab import matched_outputs
    a = {"output_label": np.array([1, 0, 2]), "output_probability": [{0: 0.1}] * 3}
    b = {"label": np.array([1, 1, 2]), "probabilities": np.zeros((3, 3), np.float32)}
    pairs = matched_outputs(a, b)
    assert [(n, av.tolist(), bv.tolist()) for n, av, bv in pairs] == \
        [("output_label", [1, 0, 2], [1, 1, 2])]
    engine.create_ab("sh", a="clf-v1", b="clf-v2", mode="shadow")
    for s in range(20):
        engine.predict("sh", engine.sample_input("clf-v1", seed=s))
    deadline = threading.Event()
    for _ in range(int(WAIT_S * 100)):  # the copies to B finish after the callers' answers
        if engine.ab_report("sh").shadow["compared_requests"] == 20:
            break
        deadline.wait(0.01)
    rep = engine.ab_report("sh").to_dict()
    assert rep["shadow"]["compared_requests"] == 20
    assert rep["shadow"]["pairs"] == {"probs": "probs", "label": "label"}
    assert rep["arms"]["b"]["share_served"] == 0.0 and rep["arms"]["b"]["shadow_copies"] == 20


def test_a_change_to_an_arm_begins_a_new_segment_and_never_mixes_samples():
    with Engine() as engine:
        engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.5, seed=1)
        x = engine.sample_input("clf-v1")
        for _ in range(40):
            engine.predict("exp", x)
        engine.configure("clf-v2", max_wait_ms=0.5)
        rep = engine.ab_report("exp")
        assert rep.segment == 2 and rep.segment_reason == \
            "arm B (clf-v2) had its batch settings changed"
        assert sum(s.total_requests for s in rep.arms.values()) == 0  # nothing mixed in
        assert rep.previous_segments[0]["report"]["total_requests"] == 40
        assert engine.metrics("exp").total_requests == 40  # the callers' totals go on
        engine.configure("clf-v2", max_wait_ms=0.5)  # no change: no new segment
        assert engine.ab_report("exp").segment == 2
        engine.load_model(build_demo_model("clf-v1"), name="clf-v1", replace=True)
        assert "arm A (clf-v1) was replaced" in engine.ab_report("exp").segment_reason
        engine.update_ab("exp", b_share=0.3)  # the split is not the arms: same segment
        assert engine.ab_report("exp").segment == 3
        for k in range(7):
            engine.configure("clf-v2", max_wait_ms=float(k + 1))
        rep = engine.ab_report("exp")
        assert rep.segment == 10 and len(rep.previous_segments) == 5  # a few are kept
        engine.reset_metrics("exp")
        assert engine.ab_report("exp").segment == 1


def test_no_request_is_lost_between_segments_while_traffic_runs():
    """An adversary (helper): 3 threads sending to an experiment while an arm's settings
    changed 4 times: the arms of all segments summed to 141,666 of 149,198 requests. The
    old segment was reported (tens of ms) and then its metrics reset; requests settled in
    between were in neither. The new segment's metrics are swapped in at once, and a
    request sent before a change that settles after it is counted in its own segment."""
    import threading
    with Engine() as engine:
        engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.5, seed=1)
        x = engine.sample_input("clf-v1")
        stop = threading.Event()
        sent = [0, 0, 0]

        def client(k: int) -> None:
            futs = []
            while not stop.is_set():
                futs.append(engine.submit("exp", x))
                sent[k] += 1
                if len(futs) >= 16:          # (up to 16 in flight, as a caller pipelines)
                    futs.pop(0).result(WAIT_S)
            for f in futs:
                f.result(WAIT_S)
        threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for k in range(4):   # (a bound: WAIT_S for the whole run)
            target = (k + 1) * 300
            while sum(sent) < target:                 # traffic between the changes
                assert all(t.is_alive() for t in threads), "a client ended early"
                stop.wait(0.005)
            engine.configure("clf-v2", max_wait_ms=float(k + 1))
        stop.set()
        for t in threads:
            t.join(WAIT_S)
        rep = engine.ab_report("exp")
        assert rep.segment == 5 and len(rep.previous_segments) == 4
        arms = sum(s.total_requests for s in rep.arms.values()) + sum(
            seg["report"]["total_requests"] for seg in rep.previous_segments)
        assert arms == engine.metrics("exp").total_requests == sum(sent)


def test_an_earlier_segment_is_reported_as_it_was_before_the_change():
    """A reviewer (helper): update_ab changed the mode or the arms before the segment was
    swapped, so the ended segment was reported with the new mode (a shadow segment's 20
    comparisons gone) and the new arms' names, and requests routed to the new arm in
    between were counted in it. The swap happens in the same step as the change."""
    with Engine() as engine:
        engine.create_ab("exp", a="clf-v1", b="clf-v2", mode="shadow")
        x = engine.sample_input("clf-v1")
        for _ in range(20):
            engine.predict("exp", x)
        pause, waited = threading.Event(), 0.0
        while engine.ab_report("exp").shadow["compared_requests"] < 20:   # B's copies
            assert waited < WAIT_S, engine.ab_report("exp").shadow
            pause.wait(0.01)
            waited += 0.01
        engine.update_ab("exp", mode="random")
        rep = engine.ab_report("exp")
        seg = rep.previous_segments[-1]["report"]
        assert seg["mode"] == "shadow" and seg["shadow"]["compared_requests"] == 20
        assert seg["total_requests"] == 20        # the callers' (B's copies are not more)
        assert rep.segment == 2 and rep.segment_reason == "routing is now random"
        for _ in range(10):
            engine.predict("exp", x)
        engine.update_ab("exp", a="clf-v2", b="clf-v1")
        rep = engine.ab_report("exp")
        seg = rep.previous_segments[-1]["report"]
        assert (seg["a"], seg["b"], seg["total_requests"]) == ("clf-v1", "clf-v2", 10)
        assert rep.segment_reason == "arm A is now 'clf-v2'; arm B is now 'clf-v1'"
        # the metrics of an ended segment are let go once a newer one ended (bounded)
        exp = engine._router.experiments.get("exp")
        assert ["_of" in e for e in exp.previous_segments] == [False, True]


def test_the_verdicts_interval_is_of_the_difference_its_words_name():
    """'B is faster by 1.53 ms (95% CI -1.61 to -1.45)' read as a contradiction on the page:
    the interval is now of what the words name, faster or slower by, both positive."""
    import re
    rng = np.random.default_rng(7)
    a = rng.normal(5.0, 0.3, 2000)
    for shift, word in ((-1.5, "faster"), (1.5, "slower")):
        res = compare_latency(a, a + shift + rng.normal(0, 0.3, 2000), seed=0)
        m = re.search(rf"B is {word} by ([\d.]+) ms at p50 \(95% CI ([\d.-]+) to ([\d.-]+) ms\)",
                      res.verdict)
        assert m, res.verdict
        by, lo, hi = map(float, m.groups())
        assert 0 < lo <= by <= hi, res.verdict
        # the report's fields stay B - A (signed), the words' interval is their mirror
        want = (-hi, -lo) if word == "faster" else (lo, hi)
        assert np.allclose((res.ci_low_ms, res.ci_high_ms), want, atol=0.006)


def test_a_promoted_experiment_keeps_its_verdict_and_says_where_callers_go():
    """After Promote B the verdict said 'nothing to compare' over a segment that held the
    whole comparison (a newcomer). A split to or from 0 or 1 now begins a segment (B alone
    under all the load was compared with A alone at another time; a newcomer), and the
    verdict says where every caller goes and the last comparison's verdict, by segment."""
    with Engine() as engine:
        engine.create_ab("p", a="clf-v1", b="clf-v2", b_share=0.5, seed=0)
        x = engine.sample_input("clf-v1")
        for _ in range(40):
            engine.predict("p", x)
        before = engine.ab_report("p").verdict
        engine.update_ab("p", b_share=1.0)
        after = engine.ab_report("p").verdict
        # (the comparison is the segment before now: B alone is not compared with it)
        assert after.startswith("Every caller goes to B (clf-v2) now") and after.endswith(
            f"Before the change (segment 1, 50% to B): {before}"), after
        for _ in range(30):
            engine.predict("p", x)
        assert engine.ab_report("p").segment == 2 and before in engine.ab_report("p").verdict
        engine.update_ab("p", b_share=0.0)   # rolled back: B's segment alone is no comparison
        rep = engine.ab_report("p")
        assert rep.segment == 3 and rep.segment_reason == "B's share 1.00 → 0.00"
        assert rep.verdict.startswith("Every caller goes to A (clf-v1) now") and \
            rep.verdict.endswith(f"The last comparison (segment 1, 50% to B): {before}"), \
            rep.verdict
        engine.update_ab("p", b_share=0.5)   # comparing again: a segment of its own
        assert engine.ab_report("p").segment == 4
        # named as it was split, with its arms when they changed, never an empty segment
        # (a shadow segment read "50% to B"; swapped arms went unsaid; a reviewer)
        engine.update_ab("p", mode="shadow")
        for _ in range(30):
            engine.predict("p", x)
        engine.update_ab("p", mode="random", b_share=1.0)     # (the page's promote)
        said = engine.ab_report("p").verdict
        assert "Before the change (segment 5, shadow: B saw a copy of every request): " in \
            said, said
        engine.update_ab("p", b_share=0.005)                 # a canary: not "0% to B"
        for _ in range(30):
            engine.predict("p", x)
        engine.update_ab("p", a="clf-v2", b="clf-v1")         # swapped: an empty segment
        engine.update_ab("p", b_share=0.0)
        said = engine.ab_report("p").verdict
        assert "The last comparison (segment 7, A clf-v1, B clf-v2; 0.5% to B): " in said, said
        # promoted and rolled back again and again, with traffic: the last comparison is
        # kept past the five earlier segments kept (it was pushed out; a reviewer)
        for share in (1.0, 0.0) * 4:
            engine.update_ab("p", b_share=share)
            for _ in range(5):
                engine.predict("p", x)
        rep = engine.ab_report("p")
        assert rep.segment == 17 and [s["segment"] for s in rep.previous_segments] == [
            7, 13, 14, 15, 16], rep.previous_segments
        assert rep.verdict.endswith("The last comparison (segment 7, A clf-v1, B clf-v2; "
                                    "0.5% to B): " + said.split("0.5% to B): ", 1)[1]), \
            rep.verdict


def test_a_tiny_latency_difference_is_written_with_its_digits():
    """A newcomer read "B is faster by only 0.00 ms at p50 (95% CI 0.00 to 0.01 ms,
    p = 0.008)": two decimals showed nothing of a difference of microseconds."""
    rng = np.random.default_rng(0)
    a = 1.0 + rng.normal(0.0, 0.001, 5000)
    res = compare_latency(a, a - 0.004, seed=0)
    assert res.verdict.startswith("B is faster by only 0.0040 ms at p50 (95% CI 0.0039 to "
                                  "0.0041 ms"), res.verdict
    usual = compare_latency(a, a + 1.53, seed=0)    # (a usual difference: two decimals)
    assert usual.verdict.startswith("B is slower by 1.53 ms at p50"), usual.verdict


def test_error_tables_where_every_request_failed_have_no_difference():
    """Both arms all errors (their server down): chi-square raised ValueError on the column
    of zero successes, and the report with it."""
    res = compare_errors(50, 50, 50, 50)
    assert res.p_value == 1.0 and not res.significant


def test_the_latest_only_note_is_for_a_full_window_not_a_request_settled_meanwhile():
    """Samples read before counts: under traffic a request or two settle between the reads,
    and the note appeared on every live read though nothing was left out."""
    from types import SimpleNamespace

    from core.ab.statistics import latest_only
    rng = np.random.default_rng(0)
    lat = compare_latency(rng.exponential(1.0, 300), rng.exponential(1.0, 300), seed=0)
    arms = {"a": SimpleNamespace(success_count=302), "b": SimpleNamespace(success_count=301)}
    assert latest_only(lat, arms, kept=20_000).verdict == lat.verdict
    assert "over each arm's latest requests: 300 of A's 302" in \
        latest_only(lat, arms, kept=300).verdict


def test_callers_cancels_and_too_large_requests_are_not_an_arms_errors():
    """Refusals of every input kind (RequestTooLargeError, AnswerRefusedError) and cancels
    counted against an arm made "B has more errors, p < 0.001" of identical models (an
    adversary); they are left out, said in the verdict."""
    from types import SimpleNamespace
    from core.ab.statistics import compare_arm_errors
    a = SimpleNamespace(errors_by_type={"RequestTimeoutError": 2}, error_count=2,
                        total_requests=200)
    b = SimpleNamespace(errors_by_type={"RequestTooLargeError": 40, "AnswerRefusedError": 5,
                                        "CancelledError": 30, "RequestTimeoutError": 2},
                        error_count=77, total_requests=277)
    err = compare_arm_errors(a, b)
    assert (err.errors_a, err.n_a, err.errors_b, err.n_b) == (2, 200, 2, 202)
    assert not err.significant
    assert ("45 request(s) refused for their inputs (A 0, B 45) and 30 cancelled by their "
            "callers (A 0, B 30) are left out" in err.verdict), err.verdict


def test_a_shadow_copy_has_its_callers_timeout_and_goes_when_its_caller_cancels():
    """B's copies ran with neither the caller's timeout nor its cancel: of identical
    models the report said "B has fewer errors" (an adversary)."""
    from tests.helpers import hold_runs
    with Engine() as engine:
        engine.load_model(build_demo_model("clf-v1"), name="clf-copy")
        engine.create_ab("sh", a="clf-v1", b="clf-copy", mode="shadow")
        gate, started = hold_runs(engine, "clf-copy")
        x = engine.sample_input("clf-v1")
        assert engine.predict("sh", x, timeout_ms=2000).arm == "a"
        assert started.wait(WAIT_S)            # B's copy is held in its run...
        waited = threading.Event()
        for _ in range(int(WAIT_S * 100)):     # ...and times out with the caller's 2 s
            if engine.ab_metrics("sh", "b").errors_by_type:
                break
            waited.wait(0.01)
        assert engine.ab_metrics("sh", "b").errors_by_type == {"RequestTimeoutError": 1}
        a_gate, a_started = hold_runs(engine, "clf-v1")
        held = engine.submit("sh", x)          # A's run held; its copy queued behind B's
        assert a_started.wait(WAIT_S)
        assert held.cancel()
        assert engine.ab_metrics("sh", "b").errors_by_type == {
            "RequestTimeoutError": 1, "CancelledError": 1}   # the copy went with it
        gate.set()
        a_gate.set()
        report = engine.ab_report("sh")
        assert report.shadow["b_failed"] == 1 and report.shadow["compared_requests"] == 0
        assert (report.errors.errors_a, report.errors.errors_b) == (0, 1)


def test_a_shadow_arm_answering_nan_is_not_identical():
    """nanmax left NaN out: B answering NaN everywhere read as max difference 0.0."""
    from core.ab import ShadowStats
    s = ShadowStats()
    a = np.array([[1.0, np.nan, np.inf]], np.float32)
    s.compare({"y": a}, {"y": a.copy()})               # the same, NaN and inf included
    assert s.max_abs_diff == {"y": 0.0} and s.nonfinite == {}
    s.compare({"y": a}, {"y": np.full((1, 3), np.nan, np.float32)})
    s.compare({"y": np.float32(2.0)}, {"y": np.float32(2.5)})   # (0-d outputs)
    assert s.max_abs_diff == {"y": math.inf} and s.nonfinite == {"y": 1}
    from core.ui.fmt import shadow_diff_words
    assert shadow_diff_words("y", math.inf, 1) == (
        "y: NaN or infinity from one arm where the other gave a number, on 1 request(s)")


def test_an_update_beside_a_submit_counts_the_request_in_the_segment_that_routed_it(
        monkeypatch):
    """update_ab between a request's route and the read of its arm's metrics counted a
    request of the old arm in the new segment (an adversary: 24 of 40 segments off). The
    update is started inside the route here; it now waits for the route to be read."""
    with Engine() as engine:
        engine.load_model(build_demo_model("clf-v1"), name="c2")
        engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.0, mode="random", seed=1)
        exp = engine._ns.experiment("exp")
        first, real, updated, threads = exp.metrics["a"], exp.route, threading.Event(), []

        def route(key=None):
            out = real(key)
            t = threading.Thread(target=lambda: (engine.update_ab("exp", a="c2"),
                                                 updated.set()))
            t.start()
            threads.append(t)
            updated.wait(0.5)    # (it came in here before; now it waits for the lock)
            return out

        monkeypatch.setattr(exp, "route", route)
        pred = engine.predict("exp", engine.sample_input("clf-v1"))
        for t in threads:
            t.join(WAIT_S)
        assert updated.is_set() and pred.model == "clf-v1"
        assert first.snapshot().success_count == 1          # its own segment's arm A
        assert exp.metrics["a"] is not first and exp.metrics["a"].snapshot().total_requests == 0


def test_a_switch_to_shadow_mode_beside_a_request_does_not_compare_b_with_itself(
        monkeypatch):
    """A reviewer's race: a request routed to B, then update_ab(mode="shadow") before the
    mode was read: the new shadow segment compared B's answer with a copy to B. The mode
    and the arms are read with the route, as one state."""
    with Engine() as engine:
        engine.create_ab("e", a="clf-v1", b="clf-v2", b_share=1.0, mode="random", seed=1)
        exp = engine._ns.experiment("e")
        real = exp.route_to

        def route_to(key=None):
            out = real(key)
            engine.update_ab("e", mode="shadow")   # right after the route was read
            return out

        monkeypatch.setattr(exp, "route_to", route_to)
        pred = engine.predict("e", engine.sample_input("clf-v1"))
        engine.close()   # (drains any copy)
        assert (pred.arm, pred.model, exp.mode) == ("b", "clf-v2", "shadow")
        assert exp.shadow.to_dict()["compared_requests"] == 0
        assert exp.metrics["b"].snapshot().total_requests == 0   # the new segment: none


def test_requests_too_large_for_one_arms_batch_size_are_that_arms_errors():
    """A's max batch size 32, B's 4, 8-row requests: B refused every one it got, and the
    verdict left them out as "the callers' doing" (a reviewer). With sizes that differ,
    they count; the settings warning says why the arms differ."""
    from core.errors import BatchlabError
    with Engine() as engine:
        engine.configure("clf-v1", max_batch_size=32)
        engine.configure("clf-v2", max_batch_size=4)
        engine.create_ab("e", a="clf-v1", b="clf-v2", b_share=0.5, seed=3)
        x = engine.sample_input("clf-v1", rows=8)
        futs = []
        for _ in range(200):
            try:
                futs.append(engine.submit("e", x))
            except BatchlabError:
                pass
        for f in futs:
            f.exception(WAIT_S)
        report = engine.ab_report("e")
        b_refused = report.arms["b"].errors_by_type["RequestTooLargeError"]
        assert b_refused > 50 and report.errors.errors_b == b_refused
        assert report.errors.significant and "B has more errors" in report.errors.verdict
        assert any("different batch settings" in w for w in report.warnings)
        engine.configure("clf-v2", max_batch_size=32)      # the same sizes: the callers'
        engine.configure("clf-v1", max_batch_size=4)
        engine.configure("clf-v2", max_batch_size=4)
        for _ in range(50):
            try:
                engine.submit("e", x)
            except BatchlabError:
                pass
        again = engine.ab_report("e")
        assert again.errors.errors_a == again.errors.errors_b == 0
        assert "refused for their inputs" in again.errors.verdict


def test_a_shadow_copy_is_held_to_its_callers_check_as_a_is():
    """An answer the caller's form cannot take (the server's check: NaN in strict JSON)
    failed A's request, while B's copy, unchecked, counted as served: "B has fewer
    errors" (an adversary's lead). The copy gets the same check."""
    from core.errors import InferenceError

    def refuse(pred):
        raise InferenceError("this answer cannot be sent in the form asked for")

    with Engine() as engine:
        engine.load_model(build_demo_model("clf-v1"), name="clf-copy")
        engine.create_ab("sh", a="clf-v1", b="clf-copy", mode="shadow")
        futs = [engine.submit("sh", engine.sample_input("clf-v1", seed=i), check=refuse)
                for i in range(10)]
        for f in futs:
            assert isinstance(f.exception(WAIT_S), InferenceError)
        engine.close()   # (drains the copies)
        report = engine.ab_report("sh")
        assert (report.errors.errors_a, report.errors.errors_b) == (10, 10)
        assert not report.errors.significant


def test_earlier_segments_without_requests_are_one_line_and_the_ones_not_kept_are_said():
    """Eight arrow-key steps of an arm's slider made five segments of under a second, each
    "Not enough data yet", and the report said "segment 9" beside "Earlier segments (5)"
    with nothing of segments 1-3 (a newcomer)."""
    from core.ui.segments import segment_words

    def seg(n, requests, reason=None):
        return {"segment": n, "started": 1000.0 + n, "ended": 1001.0 + n, "reason": reason,
                "report": {"total_requests": requests, "verdict": f"verdict {n}"}}

    with Engine() as engine:
        engine.create_ab("nudged", a="clf-v1", b="clf-v2", seed=0)
        for i in range(8):
            engine.configure("clf-v2", max_wait_ms=float(i))
        report = engine.ab_report("nudged")
    title, lines = segment_words(report.previous_segments, report.segment)
    assert report.segment == 9 and title == "Earlier segments (the last 5 of 8)"
    assert len(lines) == 2 and lines[0].startswith("**Segments 4-8**") and \
        "no requests (a setting changed again before any came)" in lines[0], lines
    assert lines[1] == "Segments 1-3: not kept (only the last 5, above, are kept)"
    title, lines = segment_words([seg(1, 40), seg(2, 0, "x"), seg(3, 0, "y"), seg(4, 7)], 5)
    assert title == "Earlier segments (4)" and len(lines) == 3
    assert lines[0].startswith("**Segment 4**") and "7 requests. verdict 4" in lines[0]
    assert lines[1].startswith("**Segments 2-3**") and lines[1].endswith("the last after: y")
    assert lines[2].startswith("**Segment 1**") and "40 requests" in lines[2]
    # an ended segment where every caller went to one arm says what that arm served (it
    # read "Not enough data yet ... Every caller goes to B now"; a newcomer), and "yet" is
    # not said of a segment that gets no more
    promoted = {"segment": 6, "started": 1006.0, "ended": 1007.0, "reason": "promoted",
                "report": {"total_requests": 2509, "mode": "random", "b_share": 1.0,
                           "verdict": "Not enough data yet: 0 latencies for A. Every "
                                      "caller goes to B (clf-v2) now",
                           "arms": {"a": {"model": "clf-v1", "requests": 0},
                                    "b": {"model": "clf-v2", "requests": 2509,
                                          "p50_ms": 4.2, "p99_ms": 9.5,
                                          "error_rate": 0.0}}}}
    title, lines = segment_words([seg(5, 40), promoted], 7)
    assert lines[0].endswith("2,509 requests. Every caller went to B (clf-v2): p50 4.2 ms, "
                             "p99 9.5 ms, error rate 0% (nothing to compare it with in the "
                             "same segment)."), lines[0]
    short = {**seg(5, 3), "report": {"total_requests": 3, "verdict": "Not enough data yet: "
                                     "1 latencies for A and 2 for B"}}
    assert "Not enough data: 1 latencies" in segment_words([short], 6)[1][0]
    # the last comparison kept beside the newest: the gap said (segments 2-6 went unsaid
    # under "Earlier segments (5)"; a reviewer)
    title, lines = segment_words([seg(1, 10), seg(7, 3), seg(8, 3), seg(9, 3), seg(10, 3)],
                                 11)
    assert title == "Earlier segments (5 of 10 kept)"
    assert lines[-1] == "Segments 2-6: not kept (only the 5 above are kept)", lines


def test_a_bandit_s_uneven_split_warning_says_the_split_its_requests_had():
    """In bandit mode the warning said "Uneven split (95%/5%)" (the bandit's share now)
    beside tiles of 71 % / 29 % (the segment's requests; a newcomer): it says the latter."""
    from core.ab import ABReport
    from core.metrics import ModelMetrics

    def arm(batches: int, rows: int):
        m = ModelMetrics()
        for _ in range(batches):
            m.record_batch(rows=rows, reason="full", compute_s=0.001,
                           queue_s=[0.001] * rows, failed={}, depth=0)
        return m.snapshot()
    report = ABReport("e", "m1", "m2", 0.95, "bandit", {"a": arm(10, 8), "b": arm(10, 2)})
    assert report.confound_warning.startswith("Uneven split (80%/20%): arm B got 20% of this "
                                              "segment's arrivals, so"), report.confound_warning


def test_an_experiment_asked_twice_answers_the_same_and_says_what_its_settings_do(engine):
    """An adversary: random routing took other arms after reset_metrics (the bandit's did
    not); a bandit SLO change restarted its evidence but its figures and the ones before
    stayed mixed in one verdict; "B's share 0.50 → 0.90" was logged while the bandit
    routed 48 % to B; detect_ms=NaN raised numpy's words and inf was taken; a bandit SLO
    of True was a 1 ms SLO."""
    x = engine.sample_input("clf-v1")
    engine.create_ab("r", a="clf-v1", b="clf-v2", b_share=0.5, seed=0)

    def arms(n=24):
        return "".join(engine.predict("r", x).model[-1] for _ in range(n))
    first = arms()
    engine.reset_metrics("r")
    assert arms() == first
    engine.create_ab("bd", a="clf-v1", b="clf-v2", mode="bandit", seed=3)
    engine.update_ab("bd", b_share=0.9)
    assert engine.events("bd")["text"].iloc[-1] == (
        "B's share 0.50 → 0.90 (for when the bandit stops: it sets the split while it routes)")
    for _ in range(30):
        engine.predict("bd", x)
    assert engine.ab_report("bd").segment == 1
    engine.update_ab("bd", bandit_slo_ms=20)
    report = engine.ab_report("bd")
    assert report.segment == 2 and sum(s.total_requests for s in report.arms.values()) == 0
    assert "bandit SLO 20 ms" in report.segment_reason
    for bad in (float("nan"), float("inf"), 0, -1.0, "1"):
        with pytest.raises(ConfigError, match="detect_ms must be a number >= 0.001"):
            engine.ab_report("r", detect_ms=bad)
    with pytest.raises(ConfigError, match="slo_ms must be a positive number"):
        engine.create_ab("t", a="clf-v1", b="clf-v2", mode="bandit", bandit_slo_ms=True)


def test_shadow_mode_says_when_no_output_could_be_compared():
    """Arms of the same inputs and outputs of other shapes: "compared_requests: 50" and a
    pairing of outputs that were never compared, with no warning (an adversary)."""
    from onnx import TensorProto, helper
    from tests.helpers import make_model
    from concurrent.futures import wait

    def model(out: str, width: int) -> bytes:
        w = helper.make_tensor("w", TensorProto.FLOAT, [4, width], [0.5] * (4 * width))
        return make_model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT,
                                                         ["N", width])],
                          [helper.make_node("MatMul", ["x", "w"], [out])], [w])

    with Engine(demo_models=False) as engine:
        engine.load_model(model("probs", 10), name="a10")
        engine.load_model(model("y", 3), name="b3")
        engine.create_ab("s", a="a10", b="b3", mode="shadow")
        x = np.ones((1, 4), np.float32)
        wait([engine.submit("s", x) for _ in range(20)])
        for _ in range(int(WAIT_S * 100)):
            sh = engine.ab_report("s").shadow
            if sh["uncomparable"] == 20:
                break
            time.sleep(0.01)
        report = engine.ab_report("s")
    assert (report.shadow["compared_requests"], report.shadow["uncomparable"],
            report.shadow["pairs"]) == (0, 20, {})
    assert any(w.startswith("B's outputs could not be compared with A's on any of 20 copies")
               for w in report.warnings), report.warnings


def test_an_experiments_queue_depth_is_its_arms_queues(engine):
    """metrics(experiment).queue_depth and counters(experiment) read 0 while its arms'
    queues held hundreds (an adversary): the arms' queues are counted."""
    from concurrent.futures import wait
    from tests.helpers import hold_runs
    engine.create_ab("q", a="clf-v1", b="clf-v2", seed=0)
    gates = [hold_runs(engine, m) for m in ("clf-v1", "clf-v2")]
    x = engine.sample_input("clf-v1")
    futures = [engine.submit("q", x) for _ in range(200)]
    for gate, started in gates:
        assert started.wait(WAIT_S)
    queued = engine.queue_depth("clf-v1") + engine.queue_depth("clf-v2")
    assert queued > 0
    assert engine.metrics("q").queue_depth == engine.counters("q")["queue_depth"] == queued
    for gate, _ in gates:
        gate.set()
    wait(futures, WAIT_S)
    assert engine.metrics("q").queue_depth == 0
    # and each second of its series (its CSV read 0 beside a chart of 3-7; a newcomer):
    # the experiment's is its arms' models' summed, an arm's its model's
    per_model = {m: engine.metrics(m).timeseries.set_index("time")["queue_depth"]
                 for m in ("clf-v1", "clf-v2")}
    assert max(per_model["clf-v1"].max(), per_model["clf-v2"].max()) >= 1
    both = engine.metrics("q").timeseries.set_index("time")["queue_depth"]
    assert both.max() >= 1
    assert both.to_dict() == (per_model["clf-v1"] + per_model["clf-v2"]).reindex(
        both.index).fillna(0).astype(int).to_dict()
    arm_a = engine.ab_metrics("q", "a").timeseries.set_index("time")["queue_depth"]
    assert arm_a.to_dict() == per_model["clf-v1"].reindex(arm_a.index).fillna(0).astype(
        int).to_dict()


def test_warming_an_arm_up_does_not_take_away_the_warning_of_its_cold_runs(engine):
    """The "not warm" warning read the arms' state now: a warm-up after the traffic took it
    away from figures that held B's cold batches (an adversary). Said until a reset."""
    from concurrent.futures import wait
    engine.warmup("clf-v1", iterations=2)
    engine.create_ab("w", a="clf-v1", b="clf-v2", seed=0)
    x = engine.sample_input("clf-v1")
    wait([engine.submit("w", x) for _ in range(100)])
    assert any(w.startswith("Arm B has not run every batch size")
               for w in engine.ab_report("w").warnings)
    engine.warmup("clf-v2", iterations=2)
    warnings = engine.ab_report("w").warnings
    assert any(w.startswith("Arm B was not warm when this comparison began") for w in
               warnings), warnings
    engine.reset_metrics("w")            # a comparison of warm arms from here
    assert not any("warm" in w for w in engine.ab_report("w").warnings)
    # warmed before any traffic of the segment: no cold run of it is in the figures (it
    # was said to be; a reviewer)
    engine.load_model(engine.model_file("clf-v2"), name="clf-v3", probe=False)   # cold
    engine.create_ab("w2", a="clf-v1", b="clf-v3", seed=0)
    engine.warmup("clf-v3", iterations=2)
    wait([engine.submit("w2", x) for _ in range(50)])
    assert not any("warm" in w for w in engine.ab_report("w2").warnings)


@pytest.mark.parametrize("mode", ["shadow", "random", "bandit"])
def test_requests_to_a_closed_engine_are_counted_by_no_arm(mode):
    """After close, a request to an experiment was counted as arm A's error (and the
    bandit's failure) while no model counted it: 60 served then 60 refused read "B has
    fewer errors: 0.00% vs 50.00%, p < 0.001" in shadow mode (an adversary). A closed
    engine's refusals are counted nowhere, as a model's never were; an unloaded arm's
    still are (that is the experiment's doing)."""
    from core import EngineClosedError
    e = Engine()
    e.create_ab("exp", a="clf-v1", b="clf-v2", mode=mode, seed=0)
    x = e.sample_input("clf-v1", rows=1)
    for _ in range(60):
        e.predict("exp", x)
    # B's shadow copies settle after the callers' answers: all 60 counted before the report
    # is taken (the last one settled during close() on a busy CI machine: 59 then 60)
    deadline = time.monotonic() + WAIT_S
    while mode == "shadow" and time.monotonic() < deadline and \
            e.ab_report("exp").to_dict()["arms"]["b"]["shadow_copies"] < 60:
        time.sleep(0.01)
    before = (e.ab_report("exp").to_dict(), e.metrics("exp").to_dict()["total_requests"])
    e.close()
    for target in ("exp",) * 60 + ("clf-v1",):
        with pytest.raises(EngineClosedError, match="the engine is closed"):
            e.submit(target, x)
    import json   # (NaN != NaN: compared as text)
    after = e.ab_report("exp").to_dict()
    assert json.dumps(after, sort_keys=True, default=str) == \
        json.dumps(before[0], sort_keys=True, default=str)   # verdicts, bandit: as they were
    assert e.metrics("exp").to_dict()["total_requests"] == before[1] == 60
    assert e.ab_metrics("exp", "a").error_count == e.metrics("clf-v1").error_count == 0


def test_an_a_a_test_is_taken_and_said_for_what_it_is():
    """One model as both arms was refused ("two different models"): an A/A test, the way
    to check a split and its statistics before trusting them, could not be run (a
    newcomer). It runs, its warnings say what it is, and its arms are named together."""
    from core.lab import experiments_with_arm
    with Engine() as engine:
        engine.create_ab("aa", a="clf-v1", b="clf-v1", b_share=0.5, seed=0)
        x = engine.sample_input("clf-v1")
        for _ in range(60):
            engine.predict("aa", x)
        rep = engine.ab_report("aa")
        assert rep.arms["a"].total_requests + rep.arms["b"].total_requests == 60
        assert rep.arms["a"].total_requests > 0 and rep.arms["b"].total_requests > 0
        assert rep.warnings[0].startswith("An A/A test: both arms are clf-v1 (one queue, one "
                                          "session), so a difference found is chance"), \
            rep.warnings
        assert experiments_with_arm(engine, "clf-v1") == [("aa", "A and B")]
        engine.configure("clf-v1", max_wait_ms=3.0)
        assert engine.ab_report("aa").segment_reason.startswith(
            "arms A and B (clf-v1) had its batch settings changed")
        # a hot swap of the model: both arms change together (it was checked against
        # itself: "inputs differ from those of arm 'clf-v1'"; a reviewer)
        engine.load_model(build_demo_model("tiny"), name="clf-v1", replace=True)
        assert engine.ab_arms("aa") == ("clf-v1", "clf-v1")
        engine.load_model(build_demo_model("clf-v1"), name="clf-v1", replace=True)
        engine.update_ab("aa", b="clf-v2")     # and back to an A/B test
        assert not any(w.startswith("An A/A test") for w in engine.ab_report("aa").warnings)


def test_an_ended_segments_report_is_never_put_back_by_an_older_one():
    """Two readers settling an ended segment at once (the state saver every 2 s, a page):
    the slower stored its older report over the newer, and a restart kept it (a
    reviewer). One settles at a time; what is stored is the newest."""
    import threading

    from core.ab.routing import ABExperiment
    exp = ABExperiment("exp", "a", "b", b_share=0.5, seed=1)

    def settle_late() -> None:   # a request of segment 1 answered after it ended
        exp.previous_segments[0]["_of"]["metrics"]["a"].record_batch(1, "full", 0.001, [0.001])
    for _ in range(40):
        exp.metrics["a"].record_batch(1, "full", 0.001, [0.001])
    exp.new_segment("B changed")
    settle_late()                                      # 41
    stored, orig = [], ABExperiment._report_of
    entered, go = threading.Event(), threading.Event()

    def report_of(self, state, *a, **k):
        rep = orig(self, state, *a, **k)
        if threading.current_thread().name == "saver" and not entered.is_set():
            entered.set()
            go.wait(WAIT_S)                            # the saver descheduled mid-way
        stored.append(rep.to_dict()["total_requests"])
        return rep
    ABExperiment._report_of = report_of
    try:
        saver = threading.Thread(target=exp._settle_previous, name="saver")
        saver.start()
        assert entered.wait(WAIT_S)
        settle_late()                                  # 42, while the saver computes 41
        page = threading.Thread(target=exp.report, name="page")
        page.start()
        page.join(1.0)   # (before the fix it ran through here; now it waits its turn)
        go.set()
        saver.join(WAIT_S)
        page.join(WAIT_S)
    finally:
        ABExperiment._report_of = orig
    kept = exp.previous_segments[0]["report"]["total_requests"]
    assert kept == 42 and max(stored) == 42, (kept, stored)
