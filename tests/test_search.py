"""The quick search: a hill-climb over batch × wait × threads with early exit, and the
constraints it honours. The climbing logic runs on a table of measured outcomes (no
timing); one test runs it on the real engine for the pinned-and-restored guarantees."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest

from core.errors import ConfigError

from core import Engine, EngineConfig, SessionConfig
from core.lab import Constraints, quick_search, recommend, setting_scores, sweep
from core.lab import search as search_mod


class _TablePoints:
    """Stands in for PointMeasurer: a point's outcome comes from ``capacity(b, w, t)``
    (req/s the setting sustains within the budget: above it, p99 is 50 ms)."""

    capacity = None  # set per test
    own = (8, 0.0)
    own_threads = 1

    def __init__(self, engine, model, **kw):
        self.slo_ms = kw["slo_ms"]
        self.remote = False
        self.measured_s = 0.0
        self.points = 0
        self.calls: list[tuple] = []
        _TablePoints.last = self

    def measure(self, k, b, w, kind, load, threads=None):
        t = self.own_threads if threads is None else threads
        self.calls.append((b, w, t, load))
        self.measured_s += 1.0
        ok = load <= type(self).capacity(b, w, t)
        return {"max_batch_size": b, "max_wait_ms": w, "load_kind": kind, "load": load,
                "achieved_rps": load, "p50_ms": 1.0, "p95_ms": 2.0,
                "p99_ms": 3.0 if ok else 50.0, "max_ms": 60.0, "mean_batch_rows": 1.0,
                "error_rate": 0.0, "mean_queue_ms": 0.1, "mean_compute_ms": 0.1, "sent": 100,
                "p99_ci_low_ms": math.nan, "p99_ci_high_ms": math.nan, "measurements": 1,
                "stable": True, "windows": 3, "spread_rps_pct": 1.0, "spread_p99_pct": 1.0,
                "policy": "deadline", "latency_slo_ms": None, "instances": 1,
                "slo_ms": self.slo_ms, "goodput_rps": load if ok else 0.2 * load,
                "baseline": (b, w) == self.own and t == self.own_threads,
                "session_threads": t}

    def measure_or_stop(self, *args, **kw):
        return self.measure(*args, **kw)

    def restore(self):
        self.restored = True


LOADS = [1000, 2000, 3000, 4000, 5000, 6000]
BATCHES = [1, 2, 4, 8, 16, 32, 64]
WAITS = [0.0, 1.0, 2.0, 5.0]


@pytest.fixture
def table(monkeypatch):
    monkeypatch.setattr(search_mod, "PointMeasurer", _TablePoints)
    # (a stand-in engine: what a thread count swaps is the table's, not an engine's process)
    monkeypatch.setattr(search_mod, "in_process_only", lambda engine, what, kind: None)
    return _TablePoints


def _peak(b, w, t):
    # One hill: best at batch 32, wait 1 ms, 2 threads (6,000 req/s).
    return 6000 - 1000 * abs(BATCHES.index(b) - 5) - 1000 * abs(WAITS.index(w) - 1) \
        - 1000 * abs(t - 2)


def test_the_climb_finds_the_top_of_a_hill_and_stops_there(table):
    table.capacity = staticmethod(_peak)
    res = quick_search(object(), "m", BATCHES, WAITS, LOADS, Constraints(p99_ms=10),
                       session_threads=[1, 2])
    assert res.best == (32, 1.0, 2)
    assert res.path[0] == (8, 0.0, 1)  # the model's own settings (nearest grid point)
    assert res.path[-1] == (32, 1.0, 2)
    assert table.last.restored
    # Early exit per setting: no load above a setting's first miss was measured.
    for b, w, t in {(c[0], c[1], c[2]) for c in table.last.calls}:
        tried = [c[3] for c in table.last.calls if c[:3] == (b, w, t)]
        cap = _peak(b, w, t)
        assert max(tried) <= max([l for l in LOADS if l <= cap] + [0]) + 1000
    grid_points = len(BATCHES) * len(WAITS) * 2 * len(LOADS)
    assert res.points < 0.4 * grid_points
    assert "max_batch_size=32, max_wait_ms=1" in res.reason
    assert "The climb started there" not in res.reason   # (the model's own: on the grid)
    # the model's own settings not among the choices: the climb says where it started
    table.own = (64, 4.0)
    try:
        res = quick_search(object(), "m", [8, 16, 32], WAITS, LOADS, Constraints(p99_ms=10))
    finally:
        table.own = (8, 0.0)
    assert res.path[0] == (32, 5.0, None)
    assert "The climb started there, the choices nearest the model's own max_batch_size=64, " \
        "max_wait_ms=4 (not among them)." in res.reason


def test_settings_within_the_noise_go_to_the_smallest_as_the_recommendation_does(table):
    # Every setting sustains every load: their goodputs tie, and the climb stays where it
    # started (the model's own 8 / 0 ms / 1 thread). The answer is the smallest setting
    # measured, the rule recommend() applies to the same rows; it was the first measured.
    table.capacity = staticmethod(lambda b, w, t: 10_000)
    res = quick_search(object(), "m", BATCHES, WAITS, LOADS, Constraints(p99_ms=10),
                       session_threads=[1, 2])
    assert res.path == [(8, 0.0, 1)]
    assert res.best == (4, 0.0, 1)
    assert "measured beside the climb from max_batch_size=8" in res.reason
    # ("the smallest" read as the smallest batch beside 8 / 2 ms in the ties; a newcomer)
    assert re.search(r"\d other setting\(s\) were within 3 % of the most goodput .*; this "
                     r"one waits least, then batches least", res.reason), res.reason
    rec = recommend(res.frame, 10)
    assert (rec.max_batch_size, rec.max_wait_ms) == res.best[:2]


def test_scores_of_a_grid_follow_the_recommendation_rules():
    rows = []
    for load, p99 in ((1000, 30.0), (2000, 3.0)):  # missed at the lower load
        rows.append({"max_batch_size": 8, "max_wait_ms": 0.0, "session_threads": 1.0,
                     "load_kind": "rate", "load": load, "p99_ms": p99, "error_rate": 0.0,
                     "achieved_rps": load, "goodput_rps": load})
    for load in (1000, 2000):
        rows.append({"max_batch_size": 16, "max_wait_ms": 0.0, "session_threads": 1.0,
                     "load_kind": "rate", "load": load, "p99_ms": 3.0, "error_rate": 0.0,
                     "achieved_rps": load, "goodput_rps": load * 0.99})
    s = setting_scores(pd.DataFrame(rows), Constraints(p99_ms=10, min_throughput_rps=1500))
    by = {int(r.max_batch_size): r for r in s.itertuples()}
    assert not by[8].feasible and by[8].goodput_rps == 0  # 2,000 does not count after a miss
    assert by[16].feasible and by[16].load == 2000
    s = setting_scores(pd.DataFrame(rows), Constraints(p99_ms=10, min_throughput_rps=2500))
    assert not s["feasible"].any()


def test_min_throughput_and_nothing_feasible_are_said(table):
    table.capacity = staticmethod(lambda b, w, t: 500)  # nothing sustains even 1,000
    res = quick_search(object(), "m", BATCHES, WAITS, LOADS, Constraints(p99_ms=10))
    assert res.best is None and "No setting tried met p99 <= 10 ms" in res.reason
    # every setting tried cost one point (its first load failed), and the climb stopped
    assert res.points == len(res.scores)


def test_memory_constraint_keeps_big_batches_out(table):
    table.capacity = staticmethod(_peak)

    class Mem:
        def measure_memory(self, model, batch_sizes):
            return pd.DataFrame({"batch_size": batch_sizes,
                                 "peak_mib": [10.0 * b for b in batch_sizes]})

    res = quick_search(Mem(), "m", BATCHES, WAITS, LOADS,
                       Constraints(p99_ms=10, max_memory_mib=200), session_threads=[1, 2])
    assert all(c[0] <= 16 for c in table.last.calls)
    assert res.best == (16, 1.0, 2)
    assert "peak memory 320 MiB > 200 MiB" in res.excluded[(32, 1.0, 2)]


def test_bad_constraints_are_refused_with_the_range():
    with pytest.raises(Exception, match="p99_ms"):
        Constraints(p99_ms=0)
    with pytest.raises(ValueError, match="rates_rps"):
        quick_search(object(), "m", [8], [0], [], Constraints(p99_ms=5))
    with pytest.raises(ValueError, match="rate 1 req/s sends no request .* 0.5 s"):
        quick_search(object(), "m", [8], [0], [1, 100], Constraints(p99_ms=5), duration_s=1.5)


def test_on_the_engine_threads_are_swapped_and_everything_restored():
    with Engine(EngineConfig(demo_models=False)) as engine:
        from core.models import build_demo_model
        engine.load_model(build_demo_model("tiny"), name="tiny",
                          session=SessionConfig(intra_op_threads=1))
        engine.configure("tiny", max_batch_size=8, max_wait_ms=1.0, policy="adaptive")
        res = quick_search(engine, "tiny", [4, 8], [0.0, 1.0], [100, 200],
                           Constraints(p99_ms=1000), session_threads=[1, 2],
                           duration_s=0.15, stability=False, max_steps=2)
        assert res.points >= 2 and set(res.frame["policy"]) == {"deadline"}
        assert set(res.frame["session_threads"].dropna()) <= {1.0, 2.0}
        cfg = engine.batch_config("tiny")
        assert (cfg.max_batch_size, cfg.max_wait_ms, cfg.policy) == (8, 1.0, "adaptive")
        assert engine.session_config("tiny").intra_op_threads == 1
        # a grid over threads too, and the model's own settings (its own threads) last
        frame = sweep(engine, "tiny", [8], [1.0], rates_rps=[100], duration_s=0.15,
                      stability=False, session_threads=[2])
        assert list(frame["session_threads"]) == [2.0, 1.0]
        assert list(frame["baseline"]) == [False, True]
        assert engine.session_config("tiny").intra_op_threads == 1


def test_the_html_report_of_a_sweep_is_self_contained_and_says_what_it_found():
    from core.ui.report import sweep_report
    rows = []
    for b, stable in ((8, True), (32, False)):
        for load, p99 in ((1000, 3.0), (2000, 4.0 if b == 8 else 30.0)):
            rows.append({"max_batch_size": b, "max_wait_ms": 1.0, "load_kind": "rate",
                         "load": float(load), "achieved_rps": float(load), "p50_ms": 1.0,
                         "p95_ms": 2.0, "p99_ms": p99, "max_ms": 40.0, "mean_batch_rows": 2.0,
                         "error_rate": 0.0, "mean_queue_ms": 0.5, "mean_compute_ms": 0.3,
                         "sent": 1000, "p99_ci_low_ms": p99 * 0.9, "p99_ci_high_ms": p99 * 1.1,
                         "measurements": 1, "stable": stable, "windows": 3 if stable else 10,
                         "spread_rps_pct": 1.0, "spread_p99_pct": 2.0 if stable else 40.0,
                         "policy": "deadline", "latency_slo_ms": float("nan"), "instances": 1,
                         "slo_ms": 10.0, "goodput_rps": float(load) if p99 <= 10 else 100.0,
                         "baseline": b == 32, "session_threads": 1.0})
    run = {"id": 7, "name": "mlp sweep", "created": 1.8e9, "results": pd.DataFrame(rows),
           "config": {"model": "mlp", "slo_p99_ms": 10.0, "duration_s": 2.0},
           "environment": {"cpus": 2, "onnxruntime": "1.x"}}
    html = sweep_report(run, memory=pd.DataFrame({"batch_size": [8, 32],
                                                  "peak_mib": [50.0, 90.0]}))
    assert "max_batch_size=8, max_wait_ms=1 meets p99 &lt;= 10 ms at 2,000 req/s" in html
    assert "http://" not in html.split("<body>")[1].split("<script")[0]  # no remote assets
    assert html.count('class="plotly-graph-div"') == 5  # curves, p99, points, time, memory
    assert not re.search(r"<(script|link)[^>]+(src|href)=", html)  # nothing fetched
    assert len(html) > 1_000_000  # plotly.js is inlined
    assert html.count("⚠ unstable") == 2 and 'class="unstable baseline"' in html
    assert "Memory vs p99" in html and "<dt>cpus</dt>" in html
    # the grid's sizes and waits as asked, the model's own said apart ("max waits 2 ms,
    # 5 ms" under a grid of 2 ms, the 5 its baseline; a newcomer)
    grid = sweep_report({**run, "config": {**run["config"], "max_batch_sizes": [8],
                                           "max_waits_ms": [1.0]}})
    assert "<dt>max batch sizes</dt><dd>8</dd>" in grid
    assert "<dt>the model&#x27;s own (the baseline)</dt><dd>max batch size 32, max wait 1 " \
        "ms</dd>" in grid
    # headers in words, as on the page, and the table scrolls in its box (2,092 px of
    # column names pushed the disturbed column off a 1,400 px window)
    assert "<th>p99 (ms)</th>" in html and "<th>p99_ci_high_ms</th>" not in html
    assert '<div class="scroll"><table>' in html
    # whole-number columns shown whole (load 1,000 and 1 thread, not 1,000.00 and 1.00)
    assert "<td>1,000</td>" in html and "<td>1</td>" in html
    # points measured under disturbance are counted beside the unstable ones; a memory
    # profile of none of the batch sizes draws no empty chart but says so
    frame = pd.DataFrame(rows).assign(disturbed=["", "other traffic", "", ""])
    html = sweep_report({**run, "results": frame},
                        memory=pd.DataFrame({"batch_size": [4], "peak_mib": [10.0]}))
    assert "2 unstable, 1 measured under disturbance" in html and "<td>other traffic</td>" in html
    assert "Memory vs p99" not in html and "No memory profile for this model's batch" in html
    # and the setting found among them is a caution, as on the page (a green box beside
    # the page's yellow one; a newcomer); without disturbance, green
    assert '<div class="summary none">' in html and "1 of 4 points were measured under " \
        "disturbance the engine could see: measure again" in html
    assert '<div class="summary">' in sweep_report(run) and "measure again" not in \
        sweep_report(run).split('<div class="summary')[1].split("</div>")[0]
    with pytest.raises(ValueError, match="no points"):
        sweep_report({**run, "results": pd.DataFrame(rows).iloc[:0]})


class _CountingEngine:
    def __init__(self):
        self.n = 0

    def model_names(self):
        return ["a", "b"]

    def counters(self, name):
        return {"total_requests": self.n}


def test_a_point_says_when_other_requests_or_a_lagging_sender_were_there(monkeypatch):
    from core.lab import disturbance as sweeps   # (the point's surroundings)
    monkeypatch.setattr(sweeps, "cores_busy_s", lambda: None)  # CPU: the next test
    eng = _CountingEngine()
    look = sweeps._Disturbance(eng)
    eng.n = 150  # both models: 300 requests counted, 100 of them the point's own
    v = look.verdict(sent=100, max_lag_ms=0.0)
    assert v["foreign_requests"] == 200 and "200 other requests reached" in v["disturbed"]
    look = sweeps._Disturbance(eng)
    v = look.verdict(sent=100, max_lag_ms=35.0)
    assert v["foreign_requests"] == 0 and v["disturbed"] == (
        "the sender fell 35 ms behind its schedule")
    look = sweeps._Disturbance(eng)
    assert look.verdict(sent=100, max_lag_ms=1.0)["disturbed"] == ""

    # a reset of another model during the point hid its requests (the total went down and
    # was clamped at 0: 4,592 foreign requests read 0; an adversary)
    class Resetting(_CountingEngine):
        def counters(self, name):
            return {"total_requests": self.n if name == "a" else self.b}
    eng = Resetting()
    eng.n, eng.b = 100, 5000
    look = sweeps._Disturbance(eng)
    eng.n, eng.b = 200, 600           # the point sent 100 to a; b reset, 600 since
    v = look.verdict(sent=100, max_lag_ms=0.0)
    assert v["foreign_requests"] == 600, v
    assert v["disturbed"].startswith("the metrics of b were reset during the point: other "
                                     "requests cannot all be counted; 600 other requests"), v


def test_a_point_says_when_another_process_took_the_engines_cores():
    import subprocess
    import sys
    import time as _time
    from core.lab import disturbance as sweeps   # (the point's surroundings)
    hog = subprocess.Popen([sys.executable, "-c",
                            "import time\nt=time.monotonic()\nwhile time.monotonic()-t<30: pass"])
    try:
        _time.sleep(0.2)  # running
        look = sweeps._Disturbance(_CountingEngine())
        _time.sleep(1.0)
        v = look.verdict(sent=0, max_lag_ms=0.0)
    finally:
        hog.kill()
        hog.wait()
    assert v["other_cpu_cores"] >= sweeps.DISTURBED_CPU_CORES
    assert "other processes used" in v["disturbed"]


def test_a_cancelled_search_says_so_and_scores_only_settings_measured_through(table):
    import threading
    table.capacity = staticmethod(_peak)
    stop = threading.Event()
    seen = []

    def progress(points, row):
        seen.append(row)
        if points == 4:  # (4, 0 ms, 1 thread) passed 1,000 and would climb on
            stop.set()

    res = quick_search(object(), "m", BATCHES, WAITS, LOADS, Constraints(p99_ms=10),
                       session_threads=[1, 2], progress=progress, stop=stop)
    assert not res.complete and res.reason.startswith("Cancelled")
    scored = {(int(r.max_batch_size), float(r.max_wait_ms), int(r.session_threads))
              for r in res.scores.itertuples()}
    cut = (seen[-1]["max_batch_size"], seen[-1]["max_wait_ms"], seen[-1]["session_threads"])
    assert cut not in scored and len(scored) >= 1  # the setting cut short is not scored
    assert table.last.restored


def test_the_recommendation_keeps_thread_counts_apart():
    from core.lab import recommend
    rows = []
    for t, p99_low in ((1.0, 40.0), (2.0, 3.0)):  # 1 thread misses at the lower load
        for load, p99 in ((500, p99_low), (1000, 4.0)):
            rows.append({"max_batch_size": 8, "max_wait_ms": 1.0, "session_threads": t,
                         "load_kind": "rate", "load": float(load), "achieved_rps": float(load),
                         "p99_ms": p99, "error_rate": 0.0, "p99_ci_low_ms": p99 * 0.9,
                         "p99_ci_high_ms": p99 * 1.1})
    rec = recommend(pd.DataFrame(rows), p99_slo_ms=10)
    assert rec.load == 1000 and "2 ONNX Runtime thread(s)" in rec.reason


def test_a_search_says_when_its_points_were_disturbed_and_a_start_that_missed(table):
    """A warm-up in another tab disturbed the search's first point: the search said "The
    starting point had 0 req/s", nothing of the disturbance (a newcomer)."""
    table.capacity = staticmethod(_peak)
    real = table.measure

    def disturbed_start(self, k, b, w, kind, load, threads=None):
        row = real(self, k, b, w, kind, load, threads)
        if (b, w) == (8, 0.0):   # the model's own: the start, a miss
            row.update(p99_ms=40.5, goodput_rps=0.0, disturbed="other processes used 0.42 "
                       "of the engine's cores")
        else:
            row["disturbed"] = ""
        return row

    table.measure = disturbed_start
    try:
        res = quick_search(object(), "m", BATCHES, WAITS, LOADS, Constraints(p99_ms=10))
    finally:
        table.measure = real
    assert "The starting point had 0 req/s (it missed the target at the lowest load)." \
        in res.reason, res.reason
    assert re.search(r" \d+ of the \d+ point\(s\) were measured while something else used "
                     r"the machine \(marked in the table\)", res.reason), res.reason


@pytest.mark.parametrize("kw, words", [
    ({"max_batch_sizes": [2.5]}, "max_batch_size must be an int >= 1 and <= 65536, got 2.5"),
    ({"max_batch_sizes": [True]}, "max_batch_size must be an int >= 1 and <= 65536, got True"),
    ({"max_batch_sizes": []}, "give at least one max batch size and one max wait"),
    ({"max_waits_ms": [0.0, 70_000]}, "max_wait_ms must be a number >= 0 and <= 60000"),
    ({"duration_s": float("nan")}, "duration_s must be a number >= 0.05"),
    ({"duration_s": 0}, "duration_s must be a number >= 0.05"),
    ({"seed": -1}, "seed must be a whole number >= 0, got -1"),
    ({"seed": 2.5}, "seed must be a whole number"),
    ({"session_threads": [0, 2]}, "session_threads must be an int >= 1"),
    ({"session_threads": [2.7]}, "session_threads must be an int >= 1"),
    # (measured its first points, then refused at the swap; a reviewer)
    ({"session_threads": [1, 4096]}, "session_threads must be an int >= 1 and <= 1024"),
    ({"session_threads": [1, 1000]},
     "session_threads 1000: intra_op_threads=1000 is more than this machine's"),
    ({"seed": None}, "seed must be a whole number >= 0, got None"),
])
def test_a_grid_that_cannot_be_run_as_asked_is_refused_before_anything_runs(engine, kw, words):
    """2.5 rows were run as 2 and True as 1, a wait past the limit failed the sweep at its
    point after the others ran, NaN seconds raised numpy's words, a seed of -1 numpy's, and
    0 threads were recorded as 0 (an adversary). Refused up front, in words, by both."""
    grid = {"max_batch_sizes": [8], "max_waits_ms": [0.0], "duration_s": 0.3, **kw}
    before = engine.metrics("tiny").total_requests
    with pytest.raises(ConfigError, match="^sweep: " + re.escape(words)):
        sweep(engine, "tiny", rates_rps=[100.0], **grid)
    with pytest.raises(ConfigError, match="^quick search: " + re.escape(words)):
        quick_search(engine, "tiny", rates_rps=[100.0], constraints=Constraints(p99_ms=50),
                     **grid)
    assert engine.metrics("tiny").total_requests == before   # (nothing was sent)


def test_sweep_settings_that_are_not_whole_are_refused_not_rounded(engine):
    with pytest.raises(ConfigError, match="sweep: instances must be an int >= 1 and <= 8, "
                                          "got 1.7"):
        sweep(engine, "tiny", [8], [0.0], rates_rps=[100.0], duration_s=0.3, instances=1.7)
    with pytest.raises(ConfigError, match="sweep: slo_ms must be a number >= 0.001"):
        sweep(engine, "tiny", [8], [0.0], rates_rps=[100.0], duration_s=0.3,
              slo_ms=float("nan"))
    with pytest.raises(ConfigError, match="max_steps must be an int >= 1 and <= 10000, got -3"):
        quick_search(engine, "tiny", [8], [0.0], [100.0], Constraints(p99_ms=50),
                     duration_s=0.3, max_steps=-3)


def test_a_sweep_job_of_rates_and_clients_saves_both(engine):
    """Given both, the saved config kept the rates and dropped the clients (an adversary)."""
    status = engine.start_job("sweep", "tiny", max_batch_sizes=[8], max_waits_ms=[0.0],
                              rates_rps=[200.0], concurrencies=[2], duration_s=0.3,
                              stability=False, baseline=False)
    done = engine.wait_job(status.job_id, 60)
    assert done.state == "done", done.error
    config = engine.store.get(done.result["run_id"])["config"]
    assert (config["load_kind"], config["loads"], config["concurrencies"]) == \
        ("rate", [200.0], [2])
