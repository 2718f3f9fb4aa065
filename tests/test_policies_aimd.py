"""The ``aimd`` release policy (Clipper's additive increase, multiplicative decrease): its
rule on given batches, and the batch sizes a real batcher pops under it."""

from __future__ import annotations

import math

import pytest

from core import POLICIES, BatchConfig, ConfigError
from core.batching import Batcher
from core.policies import make_policy, registered
from core.policies.aimd import AIMDPolicy
from tests.helpers import WAIT_S, GatedRun, rows


class View:
    """The queue as a policy sees it (a fake: numbers chosen by the test)."""

    def __init__(self, queued_rows: int, oldest_t: float) -> None:
        self.queued_rows, self.oldest_t = queued_rows, oldest_t


def test_aimd_is_registered_and_takes_the_latency_objective():
    assert "aimd" in POLICIES and isinstance(make_policy("aimd"), AIMDPolicy)
    assert registered()["aimd"].uses_slo and not registered()["deadline"].uses_slo
    BatchConfig(policy="aimd", latency_slo_ms=20)
    with pytest.raises(ConfigError, match=r"latency_slo_ms works with policies \[.*'aimd'"):
        BatchConfig(policy="deadline", latency_slo_ms=20)


def test_grows_additively_while_full_batches_meet_the_objective():
    p = AIMDPolicy()
    assert p.cap == 1.0 and p.batch_rows(32) == 1
    for expected in range(2, 6):
        p.observe_batch(rows=p.batch_rows(32), latency_s=0.004, slo_ms=10.0, max_rows=32)
        assert p.cap == expected
    # A batch smaller than the cap (too little traffic to fill it) is no evidence: no growth.
    p.observe_batch(rows=2, latency_s=0.001, slo_ms=10.0, max_rows=32)
    assert p.cap == 5


def test_backs_off_multiplicatively_on_a_miss_and_stays_within_bounds():
    p = AIMDPolicy()
    p.cap = 20.0
    p.observe_batch(rows=20, latency_s=0.011, slo_ms=10.0, max_rows=32)
    assert p.cap == pytest.approx(18.0) and p.backed_off == 1
    p.observe_batch(rows=3, latency_s=0.5, slo_ms=10.0, max_rows=32)  # missed, whatever size
    assert p.cap == pytest.approx(16.2)
    for _ in range(100):
        p.observe_batch(rows=1, latency_s=1.0, slo_ms=10.0, max_rows=32)
    assert p.cap == 1.0 and p.batch_rows(32) == 1          # never below one row
    for _ in range(100):
        p.observe_batch(rows=p.batch_rows(32), latency_s=0.0, slo_ms=10.0, max_rows=32)
    assert p.cap == 32.0 and p.batch_rows(16) == 16       # never above max_batch_size
    # Without an SLO the class's objective (10 ms) decides.
    p.observe_batch(rows=32, latency_s=0.0099, slo_ms=None, max_rows=32)
    assert p.cap == 32.0
    p.observe_batch(rows=32, latency_s=0.0101, slo_ms=None, max_rows=32)
    assert p.cap == pytest.approx(28.8)


def test_decides_as_deadline_with_the_cap_as_the_batch_size():
    p = AIMDPolicy()
    p.cap = 4.0
    assert p.decide(View(4, oldest_t=1.0), max_rows=32, max_wait_s=0.01, now=1.0) == ("full", 0.0)
    reason, wait = p.decide(View(3, oldest_t=1.0), max_rows=32, max_wait_s=0.01, now=1.004)
    assert reason is None and wait == pytest.approx(0.006)
    assert p.decide(View(3, oldest_t=1.0), max_rows=32, max_wait_s=0.01,
                    now=1.011) == ("deadline", 0.0)


def _drive(cfg: BatchConfig, n: int, cap: float | None = None) -> tuple[list[int], Batcher]:
    """One request held in a gated run while ``n`` more queue up; then the batch sizes the
    batcher popped for all of them."""
    run = GatedRun(gated=True)
    b = Batcher("aimd", run, ["y"], cfg)
    try:
        first = b.submit((rows(1),), 1)
        assert run.started.wait(WAIT_S)
        if cap is not None:   # set while the first batch (of one row) runs
            b.queue.policy.cap = cap
        futs = [b.submit((rows(1, start=i + 1),), 1) for i in range(n)]
        run.gate.set()
        preds = [f.result(WAIT_S) for f in [first, *futs]]
        assert [float(p.outputs["y"][0, 0]) for p in preds] == [2.0 * i for i in range(n + 1)]
        return run.batch_rows, b
    finally:
        b.close()


def test_a_batcher_under_aimd_grows_its_batches_one_row_at_a_time():
    # A generous objective: every batch meets it, and each one filled the cap.
    sizes, b = _drive(BatchConfig(policy="aimd", latency_slo_ms=60_000, max_batch_size=5,
                                  max_wait_ms=1000, max_queue=100), n=19)
    assert sizes == [1, 2, 3, 4, 5, 5]
    assert b.queue.policy.cap == 5.0


def test_aimd_keeps_what_it_learned_while_another_policy_runs():
    """A newcomer's sweep pinned deadline and gave AIMD back at one row: what it had learned
    (its cap) was gone. Switched straight back, the queue takes up the policy it left, under
    the same SLO; any other switch starts afresh, so a sweep pinning AIMD twice on a deadline
    model starts from one row both times, and a policy class registered again is new."""
    from core.policies import register, unregister
    from core.policies.deadline import DeadlinePolicy
    sizes, b = _drive(BatchConfig(policy="aimd", latency_slo_ms=60_000, max_batch_size=5,
                                  max_wait_ms=1000, max_queue=100), n=19)
    q = b.queue
    learned = q.policy
    assert learned.cap == 5.0
    cfg = q.config
    plain = cfg.replace(policy="deadline", latency_slo_ms=None)
    q.configure(plain)
    assert q.policy.name == "deadline"
    q.configure(cfg)                       # straight back to AIMD: the same object, cap 5
    assert q.policy is learned and b.policy_state()["cap"] == 5.0
    q.configure(plain)
    q.configure(cfg.replace(latency_slo_ms=20.0))    # back under another SLO: afresh
    assert q.policy is not learned and q.policy.cap == 1.0
    q.configure(plain)
    q.configure(cfg)                       # deadline -> AIMD -> deadline -> AIMD: both fresh
    pinned = q.policy
    pinned.cap = 4.0                       # (what the first pinned sweep learned)
    q.configure(plain)
    q.configure(cfg)
    assert q.policy is not pinned and q.policy.cap == 1.0

    def cell():   # a notebook cell defining a policy, run twice: two classes, one name
        class KeepMine(DeadlinePolicy):
            name = "keep_mine"
        return register(KeepMine)

    first = cell()
    try:
        q.configure(cfg.replace(policy="keep_mine", latency_slo_ms=None))
        assert type(q.policy) is first
        q.configure(cfg)
        second = cell()
        q.configure(cfg.replace(policy="keep_mine", latency_slo_ms=None))
        assert type(q.policy) is second is not first     # the new class, not the old
    finally:
        unregister("keep_mine")


def test_aimd_grows_past_a_cap_that_multi_row_requests_cannot_fill():
    """Requests of 3 rows never fill a cap of 4 (the next whole request does not fit): a
    batch that left because the cap's rows were queued still counts as bound by the cap,
    so the cap keeps growing and batches take 2, 3, 4 requests as it passes 6, 9, 12."""
    p = AIMDPolicy()
    p.cap = 4.0
    p.observe_batch(rows=3, latency_s=0.001, slo_ms=10.0, max_rows=12)
    assert p.cap == 4.0                     # not full, and nothing said it was: no evidence
    p.observe_batch(rows=3, latency_s=0.001, slo_ms=10.0, max_rows=12, full=True)
    assert p.cap == 5.0
    run = GatedRun(gated=True)
    b = Batcher("aimd3", run, ["y"], BatchConfig(policy="aimd", latency_slo_ms=60_000,
                                                 max_batch_size=12, max_wait_ms=60_000,
                                                 max_queue=100))
    try:
        first = b.submit((rows(3),), 3)
        assert run.started.wait(WAIT_S)
        futs = [b.submit((rows(3, start=3 * (i + 1)),), 3) for i in range(23)]
        run.gate.set()
        preds = [f.result(WAIT_S) for f in [first, *futs]]
        assert [float(p.outputs["y"][0, 0]) for p in preds] == [6.0 * i for i in range(24)]
        # caps 1..5 take one request each, 6..8 two, 9..11 three, 12 four (all "full")
        assert run.batch_rows == [3, 3, 3, 3, 3, 6, 6, 6, 9, 9, 9, 12]
        assert b.queue.policy.cap == 12.0
    finally:
        b.close()


def test_a_batcher_under_aimd_shrinks_its_batches_after_misses():
    # An objective no batch can meet: each batch shrinks the next by the backoff.
    sizes, b = _drive(BatchConfig(policy="aimd", latency_slo_ms=0.001, max_batch_size=32,
                                  max_wait_ms=1000, max_queue=100), n=30, cap=10.0)
    cap, expected, left = 10.0, [], 31
    expected.append(1)          # the first request ran alone (at the starting cap of 1)
    left -= 1
    cap *= 0.9                  # ... and missed: the cap, set to 10 meanwhile, backs off
    while left:
        k = min(left, max(1, math.floor(cap)))
        expected.append(k)
        left -= k
        cap = max(1.0, cap * 0.9)
    assert sizes == expected
    assert sizes[1] == 9 and sizes[2] == 8 and b.queue.policy.backed_off == len(sizes)


def test_switching_to_aimd_live_starts_from_one_row():
    run = GatedRun()
    b = Batcher("live", run, ["y"], BatchConfig(max_batch_size=8, max_wait_ms=0))
    try:
        b.submit((rows(1),), 1).result(WAIT_S)
        b.configure(BatchConfig(policy="aimd", max_batch_size=8, max_wait_ms=0,
                                latency_slo_ms=60_000))
        assert isinstance(b.queue.policy, AIMDPolicy) and b.queue.policy.cap == 1.0
        b.submit((rows(1),), 1).result(WAIT_S)
        assert b.queue.policy.cap == 2.0   # one full batch (of its cap, 1) met the objective
    finally:
        b.close()


# -- a user's own policy, and the replay over every registered policy ----------------------

def test_a_users_policy_registered_in_a_notebook_is_configurable_and_replayed(engine):
    """Issue 28, part 4: a policy written outside the package (as in a notebook cell) is
    selectable and replayed beside the built-in ones without touching anything else; the
    replay's summary says which policy met the SLO (goodput)."""
    import numpy as np
    from core.lab.replay import replay
    from core.policies import ReleasePolicy, register, unregister

    @register
    class Greedy(ReleasePolicy):
        """Release whatever is queued at once (never waits)."""
        name = "greedy_test"

        def decide(self, view, max_rows, max_wait_s, now):
            return ("full" if view.queued_rows >= max_rows else "deadline"), 0.0

    try:
        register(Greedy)                      # the same cell run again: no error
        engine.configure("tiny", policy="greedy_test", max_wait_ms=1.0)
        assert engine.predict("tiny", np.ones((1, 4), np.float32)).release_reason == "deadline"
        engine.configure("tiny", policy="deadline")
        arrivals = np.linspace(0.0, 0.2, 30)
        out = replay(engine, "tiny", arrivals, slo_ms=60_000.0)
        summary = out["summary"]
        assert summary["policy"].tolist()[-1] == "greedy_test"
        assert {"deadline", "fixed_window", "adaptive", "aimd"} <= set(summary["policy"])
        assert (summary["requests"] == 30).all()
        assert (summary["within_slo"] == 1.0).all()   # a minute: every request made it
        assert (summary["goodput_rps"] > 0).all()
        none = replay(engine, "tiny", arrivals, policies=["deadline", "greedy_test"],
                      slo_ms=1e-6)["summary"]
        assert none["within_slo"].tolist() == [0.0, 0.0] and (none["goodput_rps"] == 0).all()
        with pytest.raises(ValueError, match="unknown policy 'nope'"):
            replay(engine, "tiny", arrivals, policies=["nope"])
        with pytest.raises(ValueError, match="slo_ms must be a positive number"):
            replay(engine, "tiny", arrivals, slo_ms=0)

        class Other(ReleasePolicy):
            name = "greedy_test"
        with pytest.raises(ValueError, match="two release policies are named 'greedy_test'"):
            register(Other)
    finally:
        engine.configure("tiny", policy="deadline")
        unregister("greedy_test")
    with pytest.raises(ConfigError, match="greedy_test"):
        BatchConfig(policy="greedy_test")


def test_replay_verdict_names_the_policy_with_the_most_goodput():
    import pandas as pd
    from core.ui.policies import replay_verdict

    summary = pd.DataFrame({"policy": ["deadline", "aimd", "adaptive"], "slo_ms": [50.0] * 3,
                            "within_slo": [0.9, 0.99, 0.5], "goodput_rps": [900.0, 990.0, 500.0],
                            "p99_ms": [60.0, 40.0, 200.0]})
    line = replay_verdict(summary)
    assert line.startswith("**aimd** answered the most within 50 ms: 99.0% of requests")
    assert "adaptive the fewest (50.0%, 500/s)" in line
    assert replay_verdict(summary.iloc[:0]) == "No policy was replayed."
    tie = summary.assign(within_slo=[1.0, 1.0, 0.9995])
    assert replay_verdict(tie) == ("Every policy answered 100.0% of requests within 50 ms: the "
                                   "SLO does not separate them at this load. Lowest p99: "
                                   "**aimd** (40.0 ms).")
    # a p99 within a fifth of the lowest, from one short replay: said (a newcomer chose on
    # 6.0 against 6.75 ms from 560 requests)
    # the lowest p99 is named by p99 (a reviewer: a 0.9995 share ranked it below a 40 ms)
    low = tie.assign(p99_ms=[40.0, 45.0, 30.0])
    assert "Lowest p99: **adaptive** (30.0 ms)." in replay_verdict(low)
    near = tie.assign(p99_ms=[6.75, 6.0, 30.0])
    assert replay_verdict(near).endswith("Lowest p99: **aimd** (6.0 ms); deadline 6.8 ms, "
                                         "within a fifth of it in one replay: replay again "
                                         "before choosing on it.")
    # a much lower p50 elsewhere is said too (a newcomer: adaptive 0.47 ms against ~4.9)
    typical = near.assign(p50_ms=[4.9, 4.8, 0.47])
    assert replay_verdict(typical).endswith("before choosing on it. Lowest p50: **adaptive** "
                                            "(0.47 ms, against 4.8 ms): the typical request "
                                            "is answered sooner.")
    assert "p50" not in replay_verdict(near.assign(p50_ms=[4.9, 4.8, 3.0]))   # not half
    # three at 301 of 301 beside one at 300: a tie of three, not one winner (the 0.1 %
    # threshold was under one request; a newcomer)
    four = pd.DataFrame({"policy": ["deadline", "fixed_window", "adaptive", "aimd"],
                         "slo_ms": [50.0] * 4, "requests": [301] * 4,
                         "within_slo": [300 / 301, 1.0, 1.0, 1.0],
                         "goodput_rps": [150.0, 151.0, 151.0, 151.0],
                         "p99_ms": [9.0, 8.0, 7.5, 7.0]})
    line = replay_verdict(four)
    assert line.startswith("**aimd**, **adaptive** and **fixed_window** answered the most "
                           "within 50 ms, tied: 100% of requests (lowest p99 of them: aimd, "
                           "7.0 ms); deadline the fewest (99.7%"), line
    assert replay_verdict(four.assign(within_slo=[1.0, 1.0, 1.0, 1.0])).startswith(
        "Every policy answered")


def test_an_objective_below_a_one_row_run_is_said_to_be_unreachable():
    from core.ui.policies import aimd_caption

    p = AIMDPolicy()
    for _ in range(3):
        p.observe_batch(rows=1, latency_s=0.002, slo_ms=1.0, max_rows=32)
    state = p.state(BatchConfig(policy="aimd", latency_slo_ms=1.0))
    assert state["cap_rows"] == 1 and state["one_row_misses"] == 3
    assert "Even one-row runs missed the objective (3 times)" in aimd_caption(state, 32)
    p.cap = 8.0
    assert "Even one-row" not in aimd_caption(p.state(BatchConfig(policy="aimd")), 32)


def test_aimd_over_the_engine_server(engine):
    """The control API carries the policy and its state (RemoteEngine.policy_state)."""
    import numpy as np
    from core.serving import EngineServer, RemoteEngine

    with EngineServer(engine, port=0) as server:
        remote = RemoteEngine(server.url)
        try:
            remote.configure("tiny", policy="aimd", latency_slo_ms=60_000, max_wait_ms=0)
            for _ in range(3):
                remote.predict("tiny", np.ones((1, 4), np.float32))
            state = remote.policy_state("tiny")
            assert state["objective_ms"] == 60_000 and state["objective_from"] == "latency_slo_ms"
            # One at a time: the first filled the cap of 1 (grown to 2); the next two, of one
            # row, did not fill it, which says nothing about a bigger batch: no growth.
            assert state["grown"] == 1 and state["cap_rows"] == 2
            assert remote.policy_state("mlp") is None    # deadline keeps nothing
        finally:
            remote.configure("tiny", policy="deadline", latency_slo_ms=None, max_wait_ms=5.0)
            remote.close()
