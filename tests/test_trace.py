"""The trace behind the batch timeline (issue 15): every settled request, once, with its
batch, and batches that obey the release rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import ConfigError, InferenceError, TIMELINE_COLUMNS
from tests.helpers import WAIT_S, wait_for


def test_every_request_appears_once_with_its_batch(engine):
    engine.configure("mlp", max_batch_size=8, max_wait_ms=5.0)
    futs = [engine.submit("mlp", engine.sample_input("mlp", rows=1 + k % 2, seed=k))
            for k in range(40)]
    preds = [f.result(WAIT_S) for f in futs]
    t = engine.timeline("mlp", last_s=None)
    assert list(t.columns) == TIMELINE_COLUMNS and len(t) == 40
    assert t["request_id"].is_unique and t["ok"].all()
    assert (t["batch_rows"] <= 8).all() and (t["rows"] <= t["batch_rows"]).all()
    assert (t["arrived_s"] <= t["started_s"]).all() and (t["started_s"] <= t["done_s"]).all()
    assert sorted(t.groupby("batch_id")["rows"].sum().tolist()) == \
        sorted(t.groupby("batch_id")["batch_rows"].first().tolist())  # rows add up per batch
    assert set(t["batch_id"]) == {p.batch_id for p in preds}
    assert t["rows"].sum() == sum(p.rows for p in preds)


def test_a_reset_clears_the_timeline_with_the_totals(engine):
    """After reset_metrics the totals read 0 while the timeline still held the 30 requests
    from before it."""
    x = engine.sample_input("tiny")
    for _ in range(30):
        engine.predict("tiny", x)
    full = engine.timeline("tiny", last_s=None)
    assert len(full) == 30
    engine.reset_metrics("tiny")
    assert engine.metrics("tiny").total_requests == 0
    empty = engine.timeline("tiny", last_s=None)
    assert empty.empty
    # (its text column still text: an empty one was float64, a reviewer)
    assert empty["release_reason"].dtype == full["release_reason"].dtype
    engine.predict("tiny", x)
    engine.reset_metrics()          # every model at once, the same
    assert engine.timeline("tiny", last_s=None).empty


def test_an_experiments_reset_clears_its_timeline_not_its_models(engine):
    """Resetting an experiment zeroed its totals while its timeline kept the requests from
    before (an adversary); its models' own timelines are theirs and stay."""
    engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.5, seed=0)
    for _ in range(20):
        engine.predict("exp", engine.sample_input("clf-v1"))
    assert len(engine.timeline("exp", last_s=None)) == 20
    engine.reset_metrics("exp")
    assert engine.metrics("exp").total_requests == 0
    assert engine.timeline("exp", last_s=None).empty
    kept = len(engine.timeline("clf-v1", last_s=None)) + len(engine.timeline("clf-v2", last_s=None))
    assert kept == 20
    for _ in range(3):
        engine.predict("exp", engine.sample_input("clf-v1"))
    assert len(engine.timeline("exp", last_s=None)) == 3
    # a change that begins a new segment (a bandit's promote: another mode): its timeline
    # begins there too, as its tiles and table do (A's bars from before a promote stayed on
    # the page; a newcomer)
    engine.update_ab("exp", mode="bandit")
    engine.update_ab("exp", mode="random", b_share=1.0)   # (the page's promote)
    assert engine.ab_report("exp").to_dict()["total_requests"] == 0
    assert engine.timeline("exp", last_s=None).empty
    engine.predict("exp", engine.sample_input("clf-v1"))
    assert list(engine.timeline("exp", last_s=None)["arm"]) == ["b"]
    # deleted and made again under its name: a new experiment, without the old one's
    # requests (the trace names an experiment by its name; a reviewer)
    engine.delete_ab("exp")
    engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.5, seed=0)
    assert engine.timeline("exp", last_s=None).empty


def test_batches_obey_the_release_rules(engine):
    """A 'deadline' batch left no earlier than its oldest request's max wait; a 'full' one
    held max_batch_size rows (checked on the clock the engine itself used)."""
    engine.configure("tiny", max_batch_size=4, max_wait_ms=20.0, policy="deadline")
    futs = [engine.submit("tiny", np.ones((1, 4), np.float32)) for _ in range(10)]
    for f in futs:
        f.result(WAIT_S)
    t = engine.timeline("tiny", last_s=None)
    for _, batch in t.groupby("batch_id"):
        reason = batch["release_reason"].iloc[0]
        if reason == "deadline":
            waited_ms = (batch["started_s"].iloc[0] - batch["arrived_s"].min()) * 1000.0
            assert waited_ms >= 20.0 - 0.5, waited_ms  # within the early-wake margin
        elif reason == "full":
            assert batch["batch_rows"].iloc[0] == 4
    assert set(t["release_reason"]) <= {"full", "deadline"}
    assert (t["batch_rows"] <= 4).all()


def test_requests_that_never_ran_are_in_the_timeline(engine):
    from core import RequestTimeoutError
    engine.configure("mlp", max_batch_size=64, max_wait_ms=60_000.0)
    fut = engine.submit("mlp", engine.sample_input("mlp"), timeout_ms=50)
    with pytest.raises(RequestTimeoutError):
        fut.result(WAIT_S)
    t = engine.timeline("mlp", last_s=None)
    row = t.iloc[-1]
    assert row["batch_id"] == -1 and not row["ok"] and pd.isna(row["started_s"])
    assert row["release_reason"] == "RequestTimeoutError"


def test_an_experiments_timeline_has_its_arms(engine):
    engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.5, seed=0)
    for _ in range(30):
        engine.predict("exp", engine.sample_input("clf-v1"))
    engine.predict("clf-v1", engine.sample_input("clf-v1"))  # not the experiment's
    t = engine.timeline("exp", last_s=None)
    assert len(t) == 30 and set(t["arm"]) == {"a", "b"}
    with pytest.raises(ConfigError, match="last_s must be > 0"):
        engine.timeline("exp", last_s=0)
    with pytest.raises(ConfigError,
                       match=r"last_s must be > 0 seconds \(or None for all kept\), got True"):
        engine.timeline("exp", last_s=True)   # (was taken as 1 s)
    # another experiment on the same models, the arms the other way round (an adversary:
    # its timeline held exp's 30 requests, under exp's arm labels, though nothing was sent
    # to it); each has its own, labelled as it routed them
    engine.create_ab("rev", a="clf-v2", b="clf-v1", b_share=1.0, seed=0)
    assert engine.timeline("rev", last_s=None).empty
    for _ in range(5):
        assert engine.predict("rev", engine.sample_input("clf-v1")).arm == "b"
    rev = engine.timeline("rev", last_s=None)
    assert len(rev) == 5 and set(rev["arm"]) == {"b"}
    import pickle       # (a label travels as the plain string: Ray, multiprocessing)
    label = engine.predict("rev", engine.sample_input("clf-v1")).arm
    assert label.experiment == "rev" and type(pickle.loads(pickle.dumps(label))) is str
    assert len(engine.timeline("exp", last_s=None)) == 30
    assert len(engine.timeline("rev", last_s=None)) == 6
    # over the control API too (the label travels as the plain string)
    from core.serving import EngineServer, RemoteEngine
    with EngineServer(engine, port=0) as server:
        remote = RemoteEngine(server.url)
        far = remote.timeline("rev", last_s=None)
        assert len(far) == 6 and far["arm"].tolist() == ["b"] * 6
        assert remote.predict("exp", engine.sample_input("clf-v1")).arm in ("a", "b")
        remote.close()
    engine.delete_ab("rev")


def test_the_trace_is_bounded():
    from core.metrics import Trace

    class R:
        _t_submit, _rows, _arm = 1.0, 1, None

    trace = Trace(capacity=100)
    for k in range(10):
        trace.record_batch([R()] * 30, 1.1, 1.2, k, 30, "full", True)
    assert len(trace.frame(None)) == 100


def test_tracing_can_be_turned_off():
    from core import Engine, EngineConfig
    with Engine(EngineConfig(trace_requests=0)) as engine:
        engine.predict("tiny", np.ones((1, 4), np.float32))
        with pytest.raises(ConfigError, match="tracing is off"):
            engine.timeline("tiny")


def test_shadow_modes_copies_are_marked_in_the_timeline_here_and_over_the_wire(engine):
    """In shadow mode arm B's rows were A's requests copied, told from requests a caller
    sent to B by nothing (a reviewer): the ``shadow_copy`` column marks them, also over
    the control API."""
    from core.serving import EngineServer, RemoteEngine
    engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=1.0, seed=0)
    engine.predict("exp", engine.sample_input("clf-v1"))      # sent to B by a caller
    engine.update_ab("exp", mode="shadow")
    for _ in range(3):
        engine.predict("exp", engine.sample_input("clf-v1"))
    wait_for(lambda: len(engine.timeline("exp", last_s=None)) == 6)   # (copies settle late)
    with EngineServer(engine, port=0) as server, RemoteEngine(server.url) as remote:
        far = remote.timeline("exp", last_s=None)

    def marked(t: pd.DataFrame) -> list[tuple[str, bool]]:
        return sorted(zip(t["arm"], t["shadow_copy"].tolist()))
    # the experiment's timeline starts at its segment (the change to shadow mode)
    assert marked(engine.timeline("exp", last_s=None)) == marked(far) == [
        ("a", False)] * 3 + [("b", True)] * 3
    assert marked(engine.timeline("clf-v2", last_s=None)) == [("b", False)] + [
        ("b", True)] * 3
    assert not engine.timeline("clf-v1", last_s=None)["shadow_copy"].any()


def test_timeline_and_replay_through_the_engine_server(engine):
    """The timeline travels over the control API, and a replay job sends the same arrivals
    under each policy (issue 15, parts 1 and 3)."""
    from core.serving import RemoteEngine
    from core.serving import EngineServer

    engine.configure("tiny", max_batch_size=8, max_wait_ms=2.0)
    with EngineServer(engine, port=0) as server:
        remote = RemoteEngine(server.url)
        for _ in range(5):
            remote.predict("tiny", np.ones((1, 4), np.float32))
        local, far = engine.timeline("tiny", last_s=None), remote.timeline("tiny", last_s=None)
        assert list(far.columns) == TIMELINE_COLUMNS and len(far) == len(local) == 5
        assert far["request_id"].tolist() == local["request_id"].tolist()
        arrivals = np.linspace(0.0, 0.2, 40).tolist()
        job = remote.start_job("replay", "tiny", arrivals_s=arrivals)
        done = remote.wait_job(job.job_id, timeout_s=60)
        assert done.state == "done", done.error
        summary = done.result["summary"]
        assert summary["policy"].tolist() == ["deadline", "fixed_window", "adaptive", "aimd"]
        assert (summary["requests"] == 40).all()
        assert all(len(done.result["timelines"][p]) == 40 for p in summary["policy"])
        assert engine.batch_config("tiny").policy == "deadline"  # restored
        remote.close()


def test_a_replays_copy_is_warm_before_its_first_policy(engine, monkeypatch):
    """A newcomer's replay ran its first policy on a cold copy (a new session): that policy
    paid for the cold runs the others did not. The copy is warmed up first, outside the
    metrics; its timelines hold the replayed requests only."""
    from core.lab.replay import replay

    engine.configure("tiny", max_batch_size=8, max_wait_ms=1.0)
    seen = []
    configure = engine.configure

    def spy(name, *args, **kwargs):
        if "-replay-" in name:
            seen.append((kwargs.get("policy"), engine.is_warm(name), engine.warm_sizes(name)))
        return configure(name, *args, **kwargs)

    monkeypatch.setattr(engine, "configure", spy)
    out = replay(engine, "tiny", np.linspace(0.0, 0.1, 20), policies=["deadline", "adaptive"])
    assert seen[0][0] == "deadline" and seen[0][1], seen     # warm before the first policy
    assert seen[0][2] == [1, 2, 4, 8], seen
    assert out["cold"] is None
    assert all(len(t) == 20 for t in out["timelines"].values())
    assert (out["summary"]["requests"] == 20).all()


def test_a_replay_of_a_model_with_real_inputs_warms_its_copy_with_them(engine):
    """The copy has no real inputs of its own: warmed with random ids (up to 9), an
    embedding of 5 rows failed the whole replay ('indices element out of data bounds').
    (Its ids pass an Add of 0 first, so the generator does not see the table's length.)"""
    from onnx import TensorProto, helper, numpy_helper
    from core.lab.replay import replay
    from tests.helpers import make_model

    table = numpy_helper.from_array(np.arange(15, dtype=np.float32).reshape(5, 3), "table")
    emb = make_model([helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 1])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 3])],
                     [helper.make_node("Add", ["ids", "zero"], ["i"]),
                      helper.make_node("Gather", ["table", "i"], ["y"], axis=0)],
                     [table, numpy_helper.from_array(np.array(0, np.int64), "zero")],
                     opset=13)
    engine.load_model(emb.SerializeToString(), name="emb", probe=False)
    engine.configure("emb", max_batch_size=8, max_wait_ms=1.0)
    # Without real inputs its warm-up runs generated ids past the table: said, with the cure
    # (it was ONNX Runtime's InvalidArgument, unexplained)
    with pytest.raises(InferenceError, match=r"warm-up of 'emb' failed at batch size \d+: "
                       r"InvalidArgument.*give it real inputs"):
        engine.warmup("emb", iterations=2)
    engine.set_inputs("emb", b"ids\n0\n1\n2\n3\n4\n", filename="ids.csv")
    out = replay(engine, "emb", np.linspace(0.0, 0.1, 20), policies=["deadline"])
    assert out["cold"] is None                                    # warmed with its ids
    with pytest.raises(ConfigError, match="their inputs differ"):
        engine.warmup("emb", iterations=2, inputs_of="tiny")
    assert out["summary"]["requests"].tolist() == [20]
    assert len(out["timelines"]["deadline"]) == 20 and out["timelines"]["deadline"]["ok"].all()


def test_a_replays_warm_up_teaches_its_policies_nothing_and_waits_no_max_wait(engine,
                                                                                 monkeypatch):
    """Warmed through its queue, the copy's AIMD learned a cap of 9 before its first policy
    (bursts of 8 then ran as 8s where a fresh AIMD climbs 1, 2, 3...), and each warm batch
    waited the max wait (4 s at 500 ms). Warm-up runs the session itself: nothing went
    through the copy's queue before its first policy."""
    from core.lab.replay import replay
    engine.configure("tiny", policy="aimd", latency_slo_ms=50.0, max_batch_size=16,
                     max_wait_ms=2_000.0)
    seen = []
    configure = engine.configure

    def spy(name, *args, **kwargs):
        if "-replay-" in name and not seen:
            seen.append((engine.policy_state(name), engine.metrics(name).total_requests,
                         engine.warm_sizes(name)))
        return configure(name, *args, **kwargs)

    monkeypatch.setattr(engine, "configure", spy)
    out = replay(engine, "tiny", [0.0] * 8, policies=["aimd"])
    state, queued, warm = seen[0]
    assert state["cap"] == 1.0 and state["grown"] == 0, state
    assert queued == 0 and warm == [1, 2, 4, 8, 16]     # warm, and not through its queue
    assert out["cold"] is None and out["summary"]["requests"].tolist() == [8]


def test_a_replay_runs_on_a_private_copy_untouched_by_live_traffic(engine):
    """Issue 23: the replay needed live traffic and that traffic kept flowing into the model
    while the policies were replayed. Now the copy sees exactly the replayed arrivals, and
    the live model neither its requests nor a change of settings."""
    from core.lab.replay import replay

    engine.configure("tiny", policy="adaptive", latency_slo_ms=50.0, max_wait_ms=1.0)
    engine.start_traffic("tiny", rate_rps=300, seed=0)
    try:
        out = replay(engine, "tiny", np.linspace(0.0, 0.3, 40))
    finally:
        engine.stop_traffic("tiny")
    status = engine.wait_traffic("tiny", timeout_s=WAIT_S)
    assert (out["summary"]["requests"] == 40).all()
    assert all(len(t) == 40 for t in out["timelines"].values())   # nothing else mixed in
    # its mean batch is per batch, as the Monitor's (40 one-row requests over the batches
    # counted beside it), not the batch an average request rode in
    summary = out["summary"]
    assert np.allclose(summary["mean_batch_rows"], 40 / summary["batches"])
    assert out["copy"] not in engine.model_names()                   # unloaded after
    cfg = engine.batch_config("tiny")
    assert (cfg.policy, cfg.latency_slo_ms, cfg.max_wait_ms) == ("adaptive", 50.0, 1.0)
    # the live model served its own traffic only: the 120 replayed requests are not there
    assert 0 < engine.metrics("tiny").total_requests <= status.sent


def test_a_replay_says_what_else_reached_the_engine_while_it_ran(engine, monkeypatch):
    """A sweep's points said what disturbed them; a replay's policies did not, though live
    traffic to other models (or the model itself) shares the cores with the copy (a
    notebook newcomer). Each policy's row says it, in a sweep's columns."""
    from core.lab.replay import replay
    submit = engine.submit

    def and_another(name, x, **kw):   # each replayed request, with one to another model
        if "-replay-" in name:
            submit("mlp", engine.sample_input("mlp", rows=1)).result(WAIT_S)
        return submit(name, x, **kw)

    monkeypatch.setattr(engine, "submit", and_another)
    out = replay(engine, "tiny", np.linspace(0.0, 0.2, 30), policies=["deadline"])
    row = out["summary"].iloc[0]
    assert {"other_cpu_cores", "foreign_requests", "disturbed"} <= set(out["summary"])
    assert row["foreign_requests"] == 30, row.to_dict()
    assert "30 other requests reached the engine (100 % of the replay's)" in \
        row["disturbed"], row["disturbed"]


def test_a_replay_longer_than_the_trace_counts_every_batch_and_says_what_its_timeline_holds():
    """An adversary (helper): 30,000 arrivals replayed with the trace's 20,000: 'batches'
    and the mean batch came from the trace (766 batches holding 20,014 rows) beside
    requests=30,000, unsaid. They come from the copy's counters now, and the result says
    what the timelines leave out."""
    from core import Engine, EngineConfig
    from core.lab import replay
    from core.models import build_demo_model
    with Engine(EngineConfig(demo_models=False, trace_requests=50)) as engine:
        engine.load_model(build_demo_model("tiny"), name="tiny")
        engine.configure("tiny", max_batch_size=4, max_wait_ms=1.0)
        res = replay(engine, "tiny", np.linspace(0.0, 0.3, 120).tolist(),
                     policies=["deadline"])
        row = res["summary"].iloc[0]
        assert row["requests"] == 120 and len(res["timelines"]["deadline"]) == 50
        assert row["batches"] >= 30 and row["mean_batch_rows"] == pytest.approx(120 / row["batches"])
        assert res["timeline_note"] == ("the timelines hold each run's last 50 of 120 requests "
                                        "(deadline): the trace keeps the last "
                                        "EngineConfig.trace_requests; the table counts them all")
        short = replay(engine, "tiny", [0.0, 0.01, 0.02], policies=["deadline"])
        assert short["timeline_note"] is None


def test_a_replay_sends_each_arrival_with_its_recorded_rows(engine):
    """Traffic of 4 rows a request was replayed as one-row requests (batches of 9 and 7
    rows where 28 had left; a newcomer): each arrival is sent with the rows it carried."""
    from core.errors import ConfigError
    from core.lab.replay import replay

    engine.configure("tiny", max_batch_size=32, max_wait_ms=1.0)
    arrivals = list(np.linspace(0.0, 0.1, 12))
    rows = [4, 2] * 6
    out = replay(engine, "tiny", arrivals[::-1], policies=["deadline"],   # (any order)
                 rows_per_request=rows[::-1])
    tl = out["timelines"]["deadline"]
    assert sorted(tl["rows"].tolist()) == sorted(rows)
    assert tl.sort_values("arrived_s")["rows"].tolist() == rows   # in time order, as recorded
    assert (tl["batch_rows"] % 2 == 0).all()
    with pytest.raises(ConfigError, match="rows_per_request has 3 counts for 12 arrivals"):
        replay(engine, "tiny", arrivals, rows_per_request=[1, 2, 3])
    with pytest.raises(ConfigError, match="rows_per_request must be an int >= 1"):
        replay(engine, "tiny", arrivals, rows_per_request=[0] * 12)
    with pytest.raises(ConfigError, match=r"requests of up to 40 rows, and tiny takes at most "
                                          r"max_batch_size=32 rows a request now"):
        replay(engine, "tiny", arrivals, rows_per_request=[40] * 12)
    from core.lab.replay import check_replay_rows   # (agents send one request shape)
    with pytest.raises(ConfigError, match="load agents send one request shape"):
        check_replay_rows(arrivals, rows, agents=2)
    assert check_replay_rows(arrivals, [4] * 12, agents=2) == [4] * 12


def test_the_breakdown_is_the_timelines_percentiles_without_the_timeline(engine):
    """The Monitor charted where time goes from the whole 10 s timeline every refresh:
    20,000 rows at 2,000 req/s, ~210 ms of the engine's interpreter and a 3.4 MB answer,
    which moved the latencies it charted (an adversary). ``breakdown`` gives the same
    percentiles from the trace, a few rows, here and over the control API."""
    from core.metrics.breakdown import BREAKDOWN_COLUMNS, from_timeline
    from core.serving import EngineServer, RemoteEngine
    engine.configure("mlp", max_batch_size=8, max_wait_ms=2.0)
    futs = [engine.submit("mlp", engine.sample_input("mlp", rows=1, seed=k)) for k in range(60)]
    for f in futs:
        f.result(WAIT_S)
    engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.5, seed=0)
    engine.create_ab("rev", a="clf-v2", b="clf-v1", b_share=0.5, seed=1)   # same models
    for k in range(40):
        engine.predict("exp" if k % 4 else "rev", engine.sample_input("clf-v1", seed=k))
    local = engine.breakdown("mlp", last_s=None)
    assert list(local.columns) == BREAKDOWN_COLUMNS and local["percentile"].tolist() == [50, 90, 99]
    assert (local["requests"] == 60).all() and (local["arm"] == "").all()
    pd.testing.assert_frame_equal(local, from_timeline(engine.timeline("mlp", last_s=None)))
    by_arm = engine.breakdown("exp", last_s=None)
    pd.testing.assert_frame_equal(by_arm, from_timeline(engine.timeline("exp", last_s=None),
                                                        by_arm=True))
    assert by_arm["arm"].tolist() == ["a"] * 3 + ["b"] * 3 and \
        by_arm.groupby("arm")["requests"].first().sum() == 30
    assert (engine.breakdown("exp", last_s=None, by_arm=False)["requests"] == 30).all()
    engine.reset_metrics("exp")   # its segment: nothing since
    assert (engine.breakdown("exp", last_s=None)["requests"] == 0).all()
    with EngineServer(engine, port=0) as server, RemoteEngine(server.url) as remote:
        pd.testing.assert_frame_equal(remote.breakdown("mlp", last_s=None), local)
    assert list(charts_of(local).data[0].x) == ["p50", "p90", "p99"]
    # a model's requests by arm: those of no arm (sent to it directly) in no group, as the
    # chart's groups always left them (a reviewer: "arm NONE p50")
    engine.predict("clf-v1", engine.sample_input("clf-v1"))
    arms = engine.breakdown("clf-v1", last_s=None, by_arm=True)
    assert "None" not in set(arms["arm"]) and set(arms["arm"]) <= {"a", "b"}
    only_direct = engine.breakdown("mlp", last_s=None, by_arm=True)
    assert set(only_direct["arm"]) == {""} and (only_direct["requests"] == 60).all()
    with pytest.raises(ConfigError, match="last_s must be > 0"):
        engine.breakdown("mlp", last_s=0)


def charts_of(table: pd.DataFrame):
    from core.ui import charts
    return charts.breakdown_figure(table)


def test_a_timeline_with_a_limit_reads_only_the_newest_requests(engine):
    """The Batching page draws the last 120 requests of the last second and read all of
    them (2,000 at 2,000 req/s) every refresh: ``limit`` reads the newest only."""
    engine.configure("tiny", max_batch_size=4, max_wait_ms=1.0)
    futs = [engine.submit("tiny", np.ones((1, 4), np.float32)) for _ in range(50)]
    for f in futs:
        f.result(WAIT_S)
    full = engine.timeline("tiny", last_s=None)
    cut = engine.timeline("tiny", last_s=None, limit=7)
    assert len(full) == 50 and len(cut) == 7
    # the last 7 to be settled (the highest ids: taken in that order), in order of arrival
    newest = full[full["request_id"].isin(full["request_id"].nlargest(7))]
    pd.testing.assert_frame_equal(cut, newest.reset_index(drop=True))
    assert len(engine.timeline("tiny", last_s=None, limit=500)) == 50
    for bad in (0, -1, 2.5, True, "7"):
        with pytest.raises(ConfigError, match="limit must be a whole number"):
            engine.timeline("tiny", limit=bad)
    from core.ui import charts
    fig = charts.timeline_figure(cut, max_requests=7, cut=True)
    assert fig.layout.title.subtitle.text.startswith("the last 7 requests in ")
    engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.5, seed=0)
    for k in range(12):
        engine.predict("exp", engine.sample_input("clf-v1", seed=k))
    exp_full = engine.timeline("exp", last_s=None)
    newest = exp_full[exp_full["request_id"].isin(exp_full["request_id"].nlargest(5))]
    pd.testing.assert_frame_equal(engine.timeline("exp", last_s=None, limit=5),
                                  newest.reset_index(drop=True))
    for _ in range(30):   # traffic to the arms directly, after: the experiment's 5 newest
        engine.predict("clf-v1", engine.sample_input("clf-v1"))   # are still its own
        engine.predict("clf-v2", engine.sample_input("clf-v1"))
    pd.testing.assert_frame_equal(engine.timeline("exp", last_s=None, limit=5),
                                  newest.reset_index(drop=True))


def test_a_models_reset_leaves_an_experiments_timeline_on_it_whole(engine):
    """reset_metrics of an arm's model emptied the experiment's timeline of that arm while
    the experiment's counts kept its requests: 63 on A and 37 on B counted, 37 rows all
    B's on the A/B page (an adversary). The model's own view begins at its reset; the
    experiment's at its own."""
    engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.5, seed=0)
    for k in range(40):
        engine.predict("exp", engine.sample_input("clf-v1", seed=k))
    before = engine.timeline("exp", last_s=None)
    by_arm = before["arm"].value_counts().to_dict()
    assert sum(by_arm.values()) == 40 and set(by_arm) == {"a", "b"}
    engine.reset_metrics("clf-v1")
    assert engine.timeline("clf-v1", last_s=None).empty
    assert (engine.breakdown("clf-v1", last_s=None)["requests"] == 0).all()
    pd.testing.assert_frame_equal(engine.timeline("exp", last_s=None), before)
    counts = engine.ab_metrics("exp", "a").total_requests, engine.ab_metrics("exp", "b").total_requests
    assert counts == (by_arm["a"], by_arm["b"])
    assert engine.breakdown("exp", last_s=None).groupby("arm")["requests"].first().to_dict() == by_arm
    engine.predict("clf-v1", engine.sample_input("clf-v1"))   # the model's view goes on
    assert len(engine.timeline("clf-v1", last_s=None)) == 1
    engine.reset_metrics("exp")                                # and the experiment's own
    assert engine.timeline("exp", last_s=None).empty
