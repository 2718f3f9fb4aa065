"""A/B mode ``bandit`` (issue 28, part 3): Thompson sampling on "answered within the SLO",
in simulation against known arms and on the engine against a model that fails."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from core import ConfigError
from core.ab import ABExperiment, simulate_bandit
from core.ab.bandit import ThompsonBandit, wilson
from tests.helpers import failing_model, identity_model


def test_simulation_moves_nine_tenths_of_the_traffic_to_the_better_arm_and_keeps_the_floor():
    # A meets a 30 ms SLO 95 % of the time (exponential, mean 10 ms); B 53 % (mean 40 ms).
    out = simulate_bandit(lambda r: r.exponential(10.0), lambda r: r.exponential(40.0),
                          slo_ms=30.0, n=3000, floor=0.05, seed=3)
    assert out["truth"]["a"] > 0.9 and out["truth"]["b"] < 0.6
    to_b = np.array([c == "b" for c in out["chosen"]], dtype=float)
    by_500 = [float(to_b[i:i + 500].mean()) for i in range(0, 3000, 500)]
    # From the first 500 requests on, at most a tenth goes to B, and so it stays ...
    assert all(s <= 0.1 for s in by_500), by_500
    # ... but B is never abandoned: the floor keeps exploring it (5 % expected).
    assert all(s >= 0.02 for s in by_500[1:]), by_500
    assert out["state"]["better"] == "a" and out["state"]["p_b_better"] < 0.01
    assert 0.05 <= out["state"]["share_b"] <= 0.95   # the routing share within its floor
    # Regret: once learnt, it grows only by what the floor's exploration costs (B gets
    # ~floor of the traffic: floor x the gap per request), far below a fixed 50/50 split.
    regret, gap = out["regret"], out["truth"]["a"] - out["truth"]["b"]
    assert regret[-1] - regret[1499] <= 1500 * 2 * 0.05 * gap
    assert regret[-1] < 0.2 * 3000 * 0.5 * gap


def test_the_mirror_image_moves_to_b_and_errors_count_as_misses():
    out = simulate_bandit(lambda r: 5.0, lambda r: 5.0, slo_ms=30.0, n=2000, floor=0.1,
                          seed=1, error_a=0.3)     # same latency; A fails 30 % of requests
    assert out["final_share_b"] >= 0.9 - 0.05 and out["state"]["better"] == "b"
    assert min(out["share_b_by_100"][5:]) < 0.96   # the floor (10 %) still sends some to A


def test_the_bandit_refuses_settings_that_mean_nothing():
    with pytest.raises(ValueError, match="slo_ms must be a positive number"):
        ThompsonBandit(slo_ms=0)
    with pytest.raises(ValueError, match="floor must be a share from 0 to 0.5"):
        ThompsonBandit(floor=0.7)
    with pytest.raises(ConfigError, match="floor must be a share"):
        ABExperiment("e", "a", "b", mode="bandit", bandit_floor=-1)
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(90, 100)
    assert 0.82 < lo < 0.9 < hi < 0.95


@pytest.fixture
def arms(engine):
    engine.load_model(identity_model(), name="good", probe=False)
    engine.load_model(failing_model(), name="bad", probe=False)
    for m in ("good", "bad"):
        engine.configure(m, max_wait_ms=0)
    yield engine
    for name in ("bandit-exp",):
        if name in engine.ab_experiments():
            engine.delete_ab(name)
    for m in ("good", "bad"):
        engine.unload_model(m)


def test_on_the_engine_the_split_leaves_an_arm_that_fails(arms):
    engine = arms
    engine.create_ab("bandit-exp", "good", "bad", mode="bandit", bandit_slo_ms=60_000,
                     bandit_floor=0.05, seed=11)
    x = np.ones((1, 3), np.float32)
    served_by = []
    for _ in range(400):
        fut = engine.submit("bandit-exp", x)
        try:
            fut.result(10)
            served_by.append("a")
        except Exception:   # noqa: BLE001 - arm B fails every one-row request
            served_by.append("b")
    last = served_by[200:]
    assert 1 <= last.count("b") <= 0.12 * len(last), last.count("b")
    report = engine.ab_report("bandit-exp")
    state = report.bandit
    assert state["arms"]["a"]["successes"] == served_by.count("a")
    assert state["arms"]["b"]["successes"] == 0 and state["arms"]["b"]["ended"] == served_by.count("b")
    assert state["better"] == "a" and report.b_share == pytest.approx(state["share_b"])
    assert state["regret"] == pytest.approx(served_by.count("b"))   # each B request cost 1
    # The bandit's part is plain JSON (no NaN: a second without requests is None).
    json.dumps(report.to_dict()["bandit"], allow_nan=False)
    # A new SLO starts the evidence again (and says so in the events).
    engine.update_ab("bandit-exp", bandit_slo_ms=1000)
    assert engine.ab_report("bandit-exp").bandit["arms"]["a"]["ended"] == 0
    assert engine.events("bandit-exp", 60)["text"].str.contains("bandit SLO 1000 ms").any()


def test_an_answer_refused_for_the_callers_form_is_no_trial_of_the_arm():
    """A request that failed because its caller asked for a form the answer could not take
    (AnswerRefusedError: JSON past the server's bound) is not held against the arm; a
    failure of the model is."""
    import time
    from concurrent.futures import Future
    from core.errors import AnswerRefusedError
    bandit = ThompsonBandit(slo_ms=10_000, floor=0.0, seed=1)
    refused, failed = Future(), Future()
    bandit.watch("a", refused, time.perf_counter())
    bandit.watch("b", failed, time.perf_counter())
    refused.set_exception(AnswerRefusedError("as JSON that would take 900 MiB"))
    failed.set_exception(RuntimeError("the model failed"))
    arms = bandit.state()["arms"]
    assert arms["a"]["ended"] == 0 and (arms["b"]["ended"], arms["b"]["successes"]) == (1, 0)
    assert not bandit._pending


def test_a_hung_arm_loses_when_its_slo_passes_and_a_cancel_is_no_trial():
    """A request still running past its SLO is a failure then (an arm that hangs loses its
    traffic within the SLO, not at the timeout); one cancelled in time counts for nothing;
    an answer after its SLO was judged is not counted twice."""
    import time
    from concurrent.futures import Future
    bandit = ThompsonBandit(slo_ms=50, floor=0.0, seed=1)
    now = time.perf_counter()
    hung, cancelled, fast, late = Future(), Future(), Future(), Future()
    bandit.watch("b", hung, now - 1.0)          # sent a second ago: its 50 ms have passed
    bandit.watch("a", cancelled, now)
    bandit.watch("a", fast, now)
    assert bandit.state()["arms"]["b"] == {**bandit.state()["arms"]["b"], "ended": 1,
                                           "successes": 0}
    cancelled.cancel()
    fast.set_result({})
    arms = bandit.state()["arms"]
    assert (arms["a"]["ended"], arms["a"]["successes"]) == (1, 1)
    hung.set_result({})                          # answered at last: judged already
    bandit.watch("a", late, now - 1.0)
    late.set_exception(RuntimeError("boom"))     # failed after its SLO: one failure, not two
    arms = bandit.state()["arms"]
    assert (arms["b"]["ended"], arms["a"]["ended"], arms["a"]["successes"]) == (1, 2, 1)
    assert not bandit._pending                   # nothing left behind
    # The sweep runs on the request path too: a choice counts what went past its SLO.
    bandit.watch("b", Future(), now - 1.0)
    bandit.choose()
    assert bandit.losses["b"] == 2


def test_a_request_cancelled_after_its_slo_is_a_failure_even_unswept():
    import time
    from concurrent.futures import Future
    bandit = ThompsonBandit(slo_ms=50, floor=0.0, seed=1)
    f = Future()
    bandit.watch("a", f, time.perf_counter() - 1.0)
    f.cancel()                       # nothing swept in between: still late, so a failure
    assert bandit.losses["a"] == 1 and not bandit._pending


# -- looking changes nothing: reads are functions of what the engine did ---------------------
class _Clock:
    """A clock the test moves by hand (no sleeps)."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _feed(bandit: ThompsonBandit, clock: _Clock, n: int, look: bool = False) -> list[str]:
    """``n`` requests, each answered before the next (A within the SLO three times in four,
    B two in three), the clock 0.3 s on per request; with ``look``, the state read between
    them."""
    chosen = []
    for i in range(n):
        if look:
            for _ in range(5):
                bandit.state()
                bandit.p_b_better()
        arm = bandit.choose()
        bandit.reward(arm, i % (4 if arm == "a" else 3) != 0)
        chosen.append(arm)
        clock.t += 0.3
    return chosen


def test_reading_the_state_twice_gives_the_same_answer():
    clock = _Clock()
    bandit = ThompsonBandit(slo_ms=20, floor=0.05, seed=7, clock=clock)
    _feed(bandit, clock, 60)
    first = bandit.state()
    assert 0.0 < first["p_b_better"] < 1.0    # not a certainty: the Monte Carlo matters
    clock.t += 30.0                            # time passes, nothing happens
    reads = [bandit.state() for _ in range(4)]
    assert all(r == first for r in reads), [r["p_b_better"] for r in reads]
    assert [bandit.p_b_better() for _ in range(3)] == [first["p_b_better"]] * 3
    # A function of the seed and the outcomes: a twin that saw the same gives the same.
    twin_clock = _Clock()
    twin = ThompsonBandit(slo_ms=20, floor=0.05, seed=7, clock=twin_clock)
    _feed(twin, twin_clock, 60)
    assert twin.p_b_better() == first["p_b_better"]
    # A new outcome is what moves it.
    bandit.reward("b", True)
    assert bandit.state()["arms"]["b"]["successes"] == first["arms"]["b"]["successes"] + 1


def test_looking_never_changes_the_routing_or_what_the_bandit_records():
    """Two bandits with the same seed and the same outcomes, one read five times before
    every choice, the other never: the same choices, the same state."""
    clocks = _Clock(), _Clock()
    watched, alone = (ThompsonBandit(slo_ms=20, floor=0.1, seed=5, clock=c) for c in clocks)
    assert _feed(watched, clocks[0], 300, look=True) == _feed(alone, clocks[1], 300)
    assert list(watched.history) == list(alone.history)
    assert watched.state() == alone.state()


def test_the_history_gets_points_from_outcomes_not_from_reads():
    clock = _Clock()
    bandit = ThompsonBandit(slo_ms=20, floor=0.0, seed=1, clock=clock)
    assert bandit.state()["history"]["t_s"] == []          # nothing happened: nothing shown
    clock.t += 0.5
    bandit.reward(bandit.choose(), True)
    assert not bandit.history                               # under a second: not stored ...
    assert bandit.state()["history"]["t_s"] == [0.5]        # ... but shown, as it happened
    for _ in range(10):                                     # looking, for ten seconds
        clock.t += 1.0
        bandit.state()
    assert not bandit.history and bandit.state()["history"]["t_s"] == [0.5]
    bandit.reward(bandit.choose(), False)                   # an outcome at 10.5 s: a point
    assert [p[0] for p in bandit.history] == [10.5]
    h = bandit.state()["history"]
    assert h["t_s"] == [10.5] and h["share_b"] == [1.0 if bandit.sent["b"] == 2 else
                                                   0.0 if bandit.sent["a"] == 2 else 0.5]
    clock.t += 0.25
    bandit.reward(bandit.choose(), True)                    # within that second: shown last
    assert bandit.state()["history"]["t_s"] == [10.5, 10.75]
    assert len(bandit.history) == 1


def test_on_the_engine_the_report_reads_the_same_each_time(engine):
    """The reviewer's case: 60 requests to a bandit, then the report four times."""
    import threading
    engine.create_ab("look", a="clf-v1", b="clf-v2", mode="bandit", bandit_slo_ms=60_000,
                     seed=7)
    try:
        x = engine.sample_input("clf-v1", rows=1)
        for _ in range(60):
            judged = threading.Event()
            fut = engine.submit("look", x)
            fut.add_done_callback(lambda f: judged.set())   # runs after the bandit's own
            assert judged.wait(30)
        reports = [engine.ab_report("look") for _ in range(4)]
        state = reports[0].bandit
        assert state["arms"]["a"]["ended"] + state["arms"]["b"]["ended"] == 60
        assert 0.0 < state["p_b_better"] < 1.0
        assert [r.bandit["p_b_better"] for r in reports] == [state["p_b_better"]] * 4
        assert [r.b_share for r in reports] == [reports[0].b_share] * 4
        assert all(r.bandit == state for r in reports)
    finally:
        engine.delete_ab("look")


def test_the_caption_says_no_arm_is_ahead_before_any_outcome():
    """A newcomer (helper): with no data the caption said "A is the better arm with
    probability 50.7%" (the posterior's noise, said as a finding)."""
    from core.ab.bandit import ThompsonBandit
    from core.ui.bandit import bandit_caption
    text = bandit_caption(ThompsonBandit(20.0, 0.05, seed=1).state(), "m1", "m2")
    assert "No request has ended yet: neither arm is known to be better" in text
    assert "probability" not in text


def test_reading_the_bandit_never_changes_what_it_counted():
    """A request past its SLO whose answer is then refused for its form (the caller's
    doing): counted a loss if a report had swept it while late, nothing if not; so reading
    the report changed p(B better). Late is now a loss however it ends. (Its SLO passed
    before it was watched: no clock in the test.)"""
    import time
    from concurrent.futures import Future

    from core.errors import InputValidationError

    counts = []
    for read_while_late in (False, True):
        bandit = ThompsonBandit(slo_ms=20.0, seed=1)
        fut: Future = Future()
        bandit.watch("b", fut, time.perf_counter() - 1.0)   # 1 s ago: past its 20 ms SLO
        if read_while_late:
            bandit.state()
        fut.set_exception(InputValidationError("the caller wants another form"))
        arms = bandit.state()["arms"]
        counts.append({arm: (v["successes"], v["ended"]) for arm, v in arms.items()})
    assert counts[0] == counts[1] == {"a": (0, 0), "b": (0, 1)}
    # Within its SLO the same refusal counts for no arm (the caller's doing).
    bandit = ThompsonBandit(slo_ms=60_000.0, seed=1)
    fut = Future()
    bandit.watch("b", fut, time.perf_counter())
    fut.set_exception(InputValidationError("the caller wants another form"))
    assert bandit.state()["arms"]["b"]["ended"] == 0


def test_the_regret_is_said_in_the_singular_for_one_request():
    from core.ui.bandit import bandit_caption
    arm = {"ended": 5, "rate": 0.8, "rate_low": 0.5, "rate_high": 0.9, "successes": 4}
    state = {"arms": {"a": arm, "b": {**arm, "rate": 1.0, "successes": 5}}, "slo_ms": 20,
             "p_b_better": 0.8, "floor": 0.05, "share_b": 0.7, "regret": 1.0}
    assert "Regret so far: 1 request that all-to-the-better-arm" in bandit_caption(state, "x", "y")
    state["regret"] = 2.5
    assert "Regret so far: 2.5 requests that" in bandit_caption(state, "x", "y")



def test_the_starved_arm_warning_counts_the_run_beside_the_wait():
    """An SLO of 5.3 ms over max waits of 5 ms starved B to 5 % of the traffic, unremarked:
    only an SLO within the wait itself was said. The wait plus the arm's run is."""
    from core.ui.bandit import bandit_warning
    state = {"slo_ms": 5.3}
    said = bandit_warning(state, {"a": 5.0, "b": 5.0}, {"a": 0.2, "b": 0.4})
    assert said and said.startswith("The bandit's SLO (5.3 ms) is within arm B's max wait "
                                    "plus its run (5 + 0.40 ms)"), said
    # just above it too (5.5 ms over 5 + 0.3 starved B to 5 %; a newcomer): little room
    near = bandit_warning({"slo_ms": 5.5}, {"a": 5.0, "b": 5.0}, {"a": 0.1, "b": 0.3})
    assert near and near.startswith("The bandit's SLO (5.5 ms) leaves little room over arm "
                                    "B's max wait plus its run (5 + 0.30 ms)"), near
    assert bandit_warning({"slo_ms": 8.0}, {"a": 5.0, "b": 5.0}, {"a": 0.1, "b": 0.2}) is None
    assert bandit_warning({"slo_ms": 250.0}, {"a": 200.0, "b": 200.0}) is None   # room
    assert bandit_warning({"slo_ms": 204.0}, {"a": 200.0, "b": 200.0})
    # no runs yet (NaN) or none given: the wait alone, as before
    assert bandit_warning({"slo_ms": 7.6}, {"a": 5.0, "b": 5.0},
                          {"a": float("nan"), "b": None}) is None
    assert "within arm A's max wait (6 ms)" in bandit_warning(state, {"a": 6.0, "b": None})


def test_a_bandits_requests_refused_for_their_input_are_not_counted_as_sent():
    """Requests refused at submit for their shape counted as sent to an arm and were never
    judged: sent and ended never agreed (an adversary)."""
    from core import Engine, InputValidationError
    with Engine() as engine:
        engine.create_ab("bd", a="clf-v1", b="clf-v2", mode="bandit", seed=3)
        good = engine.sample_input("clf-v1")
        bad = np.zeros((1, good.shape[1] - 1), np.float32)
        for i in range(60):
            if i % 4 == 3:
                with pytest.raises(InputValidationError):
                    engine.submit("bd", bad)
            else:
                engine.predict("bd", good)
        for _ in range(1000):   # (an answer's judging runs as its future settles)
            arms = engine.ab_report("bd").bandit["arms"]
            if sum(a["ended"] for a in arms.values()) == 45:
                break
            time.sleep(0.01)
    assert sum(a["sent"] for a in arms.values()) == 45
    assert all(a["sent"] == a["ended"] for a in arms.values()), arms


def test_arms_that_never_missed_the_slo_are_said_to_be_untold_apart():
    """Both arms within the SLO every time: "A is the better arm with probability 79 %"
    (the arm with more answers has the narrower posterior) beside 100 % and 100 %, and the
    README said P(B better) stays near a half (a newcomer). Said as what it is."""
    from core.ui.bandit import bandit_caption
    bandit = ThompsonBandit(slo_ms=50.0, seed=1)
    for _ in range(719):
        bandit.reward("a", True)
    for _ in range(181):
        bandit.reward("b", True)
    state = bandit.state()
    assert state["p_b_better"] < 0.3            # the posterior: A looks better
    text = bandit_caption(state, "m1", "m2")
    assert "Neither arm has missed the SLO yet, so the bandit cannot tell them apart: the " \
           "arm with more answers looks better to it (A, probability" in text, text
    assert "A is the better arm" not in text
    bandit.reward("b", False)                   # one miss: a finding again
    assert "A is the better arm with probability" in bandit_caption(bandit.state(), "m1", "m2")
