"""What happened to a model, kept for the Monitor's marks: each change the engine makes is
an event naming what changed, in order, bounded, filtered by model and time, the same over
the control API; the live charts draw them inside their window and keep a chosen window of
per-second history."""

from __future__ import annotations

import pandas as pd
import pytest

from core import Engine, EngineConfig, build_demo_model
from core.metrics.events import EVENT_COLUMNS, EventLog, describe_changes
from core.serving import EngineServer, RemoteEngine
from core.ui import charts
from core.ui.live import MAX_MARKS
from tests.helpers import WAIT_S


@pytest.fixture
def engine():
    eng = Engine(EngineConfig(demo_models=False))
    for name in ("mlp", "tiny"):
        eng.load_model(build_demo_model(name), name=name)
    yield eng
    eng.close()


def kinds_texts(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(frame["kind"], frame["text"]))


def test_each_change_is_an_event_naming_what_changed(engine):
    engine.configure("mlp", max_batch_size=16, policy="adaptive")
    engine.configure("mlp", max_batch_size=16)          # no change: no event
    engine.reset_metrics("mlp")
    engine.start_traffic("mlp", rate_rps=50)
    engine.stop_traffic("mlp")
    job = engine.start_job("warmup", "mlp", iterations=2)
    engine.wait_job(job.job_id, timeout_s=WAIT_S)
    engine.load_model(build_demo_model("mlp"), name="mlp", replace=True)
    got = kinds_texts(engine.events("mlp"))
    assert got[:4] == [
        ("settings", "max_batch_size 32 → 16, policy deadline → adaptive"),
        ("reset", "metrics reset"),
        ("traffic", "traffic started: 50 req/s constant"),
        ("traffic", "traffic stopped")]
    engine.start_traffic("tiny", rate_rps=100, duration_s=0.2)    # a bounded run ends
    engine.wait_traffic("tiny", timeout_s=WAIT_S)
    ended = kinds_texts(engine.events("tiny"))
    assert ended[0] == ("traffic", "traffic started: 100 req/s constant for 0.2 s")
    assert ended[1][0] == "traffic" and ended[1][1].startswith("traffic ended after 0 s (")
    assert got[4:6] == [("job", f"warmup (job {job.job_id}) started"),
                        ("job", f"warmup (job {job.job_id}) done")]
    assert got[6][0] == "swap" and got[6][1].startswith("hot swap to ")
    assert set(engine.events("tiny")["kind"]) == {"traffic"}   # only tiny's own
    frame = engine.events()
    assert frame.columns.tolist() == list(EVENT_COLUMNS)
    assert frame["time"].is_monotonic_increasing
    assert frame["time"].dtype.kind == "M"   # timestamps, like the metrics' series


def test_an_experiment_sees_its_own_events_and_its_arms(engine):
    engine.load_model(build_demo_model("mlp"), name="mlp-v2")
    engine.create_ab("exp", "mlp", "mlp-v2", b_share=0.5)
    engine.update_ab("exp", b_share=1.0)
    engine.configure("mlp-v2", max_wait_ms=1.0)
    engine.ab_match_settings("exp")
    engine.configure("tiny", max_wait_ms=1.0)               # not an arm
    got = kinds_texts(engine.events("exp"))
    assert got[0] == ("ab", "B's share 0.50 → 1.00")
    assert got[1] == ("settings", "max_wait_ms 5.0 → 1.0")
    assert got[2] == ("settings", "given arm A's settings: max_wait_ms 1.0 → 5.0")
    assert len(got) == 3
    engine.delete_ab("exp")
    assert engine.events("mlp")["kind"].tolist() == []  # mlp itself never changed
    engine.unload_model("mlp-v2")
    assert "mlp-v2" not in set(engine.events()["target"])  # a removed model's are gone


def test_inputs_changes_are_events(engine, tmp_path):
    import numpy as np

    buf = tmp_path / "x.npy"
    np.save(buf, np.zeros((4, 256), np.float32))
    engine.set_inputs("mlp", buf)
    engine.clear_inputs("mlp")
    got = kinds_texts(engine.events("mlp"))
    assert [k for k, _ in got] == ["inputs", "inputs"]
    assert "x.npy" in got[0][1] and got[1][1] == "generated inputs again"


def test_the_log_is_bounded_and_filtered_by_time():
    now = [1000.0]
    log = EventLog(keep=5, clock=lambda: now[0])
    for i in range(8):
        now[0] = 1000.0 + i
        log.add("m", "settings", f"change {i}")
    frame = log.frame("m")
    assert frame["text"].tolist() == [f"change {i}" for i in range(3, 8)]  # the newest 5
    assert log.frame("m", since_s=2)["text"].tolist() == ["change 5", "change 6", "change 7"]
    assert log.frame("other").empty
    with pytest.raises(ValueError, match="unknown event kind 'oops'"):
        log.add("m", "oops", "x")


def test_describe_changes_names_each_field():
    from core.config import BatchConfig

    a = BatchConfig(max_batch_size=32, max_wait_ms=5.0)
    assert describe_changes(a, a) == "no change"
    assert describe_changes(a, BatchConfig(max_batch_size=8, max_wait_ms=5.0)) == \
        "max_batch_size 32 → 8"


def test_events_travel_over_the_control_api(engine):
    server = EngineServer(engine, port=0).start()
    remote = RemoteEngine.connect(server.url, timeout_s=WAIT_S)
    try:
        remote.configure("tiny", max_batch_size=4)
        got = remote.events("tiny", since_s=60)
        pd.testing.assert_frame_equal(got, engine.events("tiny", since_s=60))
        assert kinds_texts(got) == [("settings", "max_batch_size 32 → 4")]
        # none: the same empty frame both ways, with the dtypes of a full one (an
        # adversary: empty, they were object and datetime64[s] here, other ones there)
        none = engine.events("mlp", since_s=60)
        assert none.empty and none.dtypes.to_dict() == got.dtypes.to_dict()
        pd.testing.assert_frame_equal(remote.events("mlp", since_s=60), none)
    finally:
        remote.close()
        server.close()


# -- the charts -------------------------------------------------------------------------------
def series(seconds: int, end: str = "2026-12-04 10:00:00") -> pd.DataFrame:
    t = pd.date_range(end=pd.Timestamp(end), periods=seconds, freq="s")
    return pd.DataFrame({"time": t, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0,
                         "successes": 10, "errors": 0, "error_rate": 0.0,
                         "mean_queue_ms": 0.5, "mean_compute_ms": 0.5, "queue_depth": 1})


def events_at(*times: str) -> pd.DataFrame:
    return pd.DataFrame({"time": pd.to_datetime(list(times)), "target": "mlp",
                         "kind": "settings", "text": [f"change at {t}" for t in times]})


def x_span_s(fig) -> float:
    lo, hi = (pd.Timestamp(v) for v in fig.layout.xaxis.range)
    return (hi - lo).total_seconds()


@pytest.mark.parametrize("make", [charts.latency_figure, charts.throughput_figure,
                                  charts.error_figure, charts.queue_compute_figure,
                                  charts.queue_depth_figure])
def test_live_charts_show_the_chosen_window_and_mark_events_inside_it(make):
    ts = series(900)
    ev = events_at("2026-12-04 09:50:00", "2026-12-04 09:58:30", "2026-12-04 09:59:30")
    one_min = make(ts, events=ev)
    assert x_span_s(one_min) == 60
    marks = [t for t in one_min.data if t.name == "changes"]
    assert len(marks) == 1 and list(marks[0].text) == ["mlp: change at 2026-12-04 09:59:30"]
    assert len(one_min.layout.shapes) == 1                    # one dotted line
    fifteen = make(ts, window_s=900, events=ev)
    assert x_span_s(fifteen) == 900
    assert len(fifteen.layout.shapes) == 3
    assert max(len(t.x) for t in fifteen.data if t.name != "changes") == 900
    assert not [t for t in make(ts).data if t.name == "changes"]   # no events: no marks


def test_marks_are_capped_to_the_newest():
    ts = series(900)
    times = pd.date_range(end=pd.Timestamp("2026-12-04 09:59:59"), periods=200, freq="2s")
    ev = pd.DataFrame({"time": times, "target": "mlp", "kind": "settings",
                       "text": [f"c{i}" for i in range(200)]})
    fig = charts.latency_figure(ts, window_s=900, events=ev)
    mark = next(t for t in fig.data if t.name == "changes")
    assert len(mark.x) == MAX_MARKS and mark.text[-1] == "mlp: c199"


def test_the_engine_keeps_fifteen_minutes_by_default():
    assert EngineConfig().timeseries_seconds == 900


def test_marks_sit_on_the_series_seconds_and_long_windows_draw_areas():
    ts = series(900)
    ev = events_at("2026-12-04 09:59:30.600")
    mark = next(t for t in charts.latency_figure(ts, events=ev).data if t.name == "changes")
    assert pd.Timestamp(mark.x[0]) == pd.Timestamp("2026-12-04 09:59:30")
    assert {t.type for t in charts.throughput_figure(ts).data} == {"bar"}
    long = charts.throughput_figure(ts, window_s=900)
    assert {t.type for t in long.data} == {"scatter"} and long.data[0].stackgroup == "rate"
    # the errors' area has no edge: stacked on the served, it drew red along every burst
    errors = next(t for t in long.data if t.name == "errors")
    assert errors.line.width == 0 and long.data[0].line.width > 0


def test_idle_seconds_never_draw_a_negative_axis():
    ts = series(60).assign(successes=0, errors=0, queue_depth=0)
    for make in (charts.throughput_figure, charts.queue_depth_figure):
        assert make(ts).layout.yaxis.rangemode in ("nonnegative", "tozero")
    empty = charts.release_reasons_figure({})
    assert tuple(empty.layout.xaxis.range) == (0, 1)
    assert any(a.text == "no batches yet" for a in empty.layout.annotations)
    hist = charts.batch_size_figure({8: 3}, 8)
    label = next(a for a in hist.layout.annotations if a.text.startswith("max "))
    assert label.xanchor == "right"   # left of its line: not cut to "max_b" at the edge


def test_the_history_says_which_file_it_is_kept_in(tmp_path):
    from core.lab import ExperimentStore
    from core.ui.fmt import history_caption

    store = ExperimentStore(tmp_path / "runs.sqlite")
    usage = store.usage()
    assert usage["path"] == str(tmp_path / "runs.sqlite")
    said = history_caption(usage, "http://127.0.0.1:1234 (the engine server's history)")
    assert str(tmp_path / "runs.sqlite") in said and "127.0.0.1" not in said


def test_a_job_started_or_ended_elsewhere_changes_what_open_pages_watch(engine):
    before = engine.status()["settings"]
    job = engine.start_job("warmup", "tiny", iterations=2)
    engine.wait_job(job.job_id, timeout_s=WAIT_S)
    after = engine.status()["settings"]
    assert after != before                       # an open Experiments page redraws
    assert engine.status()["settings"] == after  # and only once


def test_empty_charts_speak_of_the_right_page_and_unit():
    ts = series(60).assign(p50_ms=float("nan"), p95_ms=float("nan"), p99_ms=float("nan"))
    note = "no traffic yet: start the experiment's traffic on the A/B test page"
    fig = charts.latency_figure(ts, empty_note=note)
    # (on two lines: one ran past the plot at 1024 px; a newcomer)
    assert [a.text for a in fig.layout.annotations] == [note.replace(": ", ":<br>")]
    # requests came and every one failed: not 'no requests' (a reviewer, helper)
    failing = ts.assign(errors=1)
    assert [a.text for a in charts.latency_figure(failing).layout.annotations] == [
        "no request answered in this window:<br>every one failed (see the errors)"]
    assert charts.error_figure(series(60)).layout.yaxis.ticksuffix == " %"
    empty = pd.DataFrame(columns=["batch_id", "arm", "wait_ms", "compute_ms", "handoff_ms"])
    by_arm = charts.breakdown_figure(empty, by_arm=True)
    assert list(by_arm.data[0].x) == ["p50", "p90", "p99"]   # not a numeric axis


def test_charts_shown_one_above_the_other_share_one_x_scale():
    """A replay's policies drew 0-50 ms and 0-3.5 ms alike, one above the other: bars of
    very different lengths looked the same. They now share the widest range."""
    import plotly.graph_objects as go
    from core.ui.style import share_x_range
    a = go.Figure().update_xaxes(range=[0, 50])
    b = go.Figure().update_xaxes(range=[-0.1, 3.5])
    c = go.Figure()    # (an empty one takes the scale too)
    share_x_range([a, b, c])
    assert [tuple(f.layout.xaxis.range) for f in (a, b, c)] == [(-0.1, 50)] * 3


def test_a_lone_second_of_requests_is_drawn_on_the_latency_chart():
    """4 requests in one second beside seconds without any: the throughput chart showed
    their bar, the latency chart nothing (a line needs two points; a newcomer)."""
    import numpy as np
    ts = pd.DataFrame({"time": pd.date_range("2026-01-01", periods=5, freq="s"),
                       "p50_ms": [np.nan, 1.0, np.nan, 2.0, 2.5],
                       "p95_ms": [np.nan, 1.5, np.nan, 2.5, 3.0],
                       "p99_ms": [np.nan, 2.0, np.nan, 3.0, 3.5],
                       "successes": [0.0, 4.0, 0.0, 9.0, 9.0], "errors": [0.0] * 5})
    for trace in charts.latency_figure(ts, window_s=60).data[:3]:
        assert list(trace.marker.size) == [0, 7, 0, 0, 0], trace.name   # the lone one only


def test_steps_of_one_change_within_a_second_make_one_mark():
    """A slider moved by arrow keys applied each step: 34 marks on the charts, each
    restarting the Batching page's "since the settings changed" window (a newcomer). Steps
    within a second of the last join it, from the first value to the last; a step back
    to where it began takes the mark away; other words and later changes stay apart."""
    from core.metrics.events import EventLog
    now = [100.0]
    log = EventLog(clock=lambda: now[0])

    def step(text: str, dt: float = 0.2, target: str = "m") -> None:
        now[0] += dt
        log.add(target, "settings", text, merge_s=1.0)

    def texts() -> list:
        return log.frame()[["target", "text"]].values.tolist()
    for k in range(32, 28, -1):
        step(f"max_batch_size {k} → {k - 1}")
    step("max_wait_ms 5.0 → 2.0")
    assert texts() == [["m", "max_batch_size 32 → 28, max_wait_ms 5.0 → 2.0"]]
    assert log.frame()["time"].iloc[-1] == pd.Timestamp(now[0], unit="s")   # the last step's
    step("max_batch_size 28 → 32, max_wait_ms 2.0 → 5.0")   # back where it began: no mark
    assert texts() == []
    step("max_batch_size 32 → 16")
    step("max_batch_size 16 → 8", dt=1.5)                   # past the second: its own mark
    step("max_batch_size 8 → 4", target="other")            # another model's: its own
    log.add("m", "settings", "max_batch_size 4 → 2")        # no merge_s: its own
    assert [t for _, t in texts()] == ["max_batch_size 32 → 16", "max_batch_size 16 → 8",
                                       "max_batch_size 8 → 4", "max_batch_size 4 → 2"]
    step("given arm A's settings: max_wait_ms 1.0 → 5.0")   # other words: never joined
    step("max_wait_ms 5.0 → 1.0")
    assert len(texts()) == 6


def test_an_engine_joins_a_sliders_steps_into_one_settings_event(engine, monkeypatch):
    monkeypatch.setattr(engine._events, "_clock", lambda: 2e9)   # (the steps at one instant)
    for size in (31, 30, 29):
        engine.configure("tiny", max_batch_size=size)
    got = kinds_texts(engine.events("tiny"))
    assert got == [("settings", "max_batch_size 32 → 29")], got
