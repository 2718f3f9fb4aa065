"""Nothing fails silently (issue 14): generated traffic that is refused or failing says so,
experiments switched to sticky routing keep working under traffic, a draining model shows."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import WAIT_S, failing_model

ROOT = Path(__file__).resolve().parent.parent


def until(predicate, what: str) -> None:
    """Wait for a condition of the engine (checked every 10 ms), failing after WAIT_S."""
    done = threading.Event()
    for _ in range(int(WAIT_S * 100)):
        if predicate():
            return
        done.wait(0.01)
    pytest.fail(f"timed out waiting for {what}")


def status_of(engine, target):
    return next(t for t in engine.traffic() if t.target == target)


def test_failing_traffic_says_what_fails(engine):
    engine.load_model(failing_model(), name="bad")
    engine.start_traffic("bad", rate_rps=200)
    until(lambda: status_of(engine, "bad").failed >= 20, "20 failed requests")
    status = status_of(engine, "bad")
    engine.stop_traffic("bad")
    assert status.problem is not None, status
    assert "100% of the requests sent to bad" in status.problem
    assert "InferenceError" in status.problem and status.failed_by_type.get("InferenceError")
    healthy = engine.start_traffic("tiny", rate_rps=200)
    until(lambda: status_of(engine, "tiny").succeeded >= 20, "20 answers")
    assert status_of(engine, "tiny").problem is None and healthy.last_error is None


def test_an_experiment_switched_to_sticky_under_traffic_keeps_serving(engine):
    engine.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.5, mode="random")
    engine.start_traffic("exp", rate_rps=300)
    until(lambda: status_of(engine, "exp").succeeded >= 20, "traffic to flow")
    engine.update_ab("exp", mode="sticky")
    sent = status_of(engine, "exp").sent
    until(lambda: status_of(engine, "exp").succeeded >= sent + 50, "50 sticky answers")
    engine.stop_traffic("exp")
    status = status_of(engine, "exp")
    assert status.refused == 0 and status.failed == 0, status.last_error


def test_unloading_a_model_stops_its_traffic(engine):
    engine.load_model(failing_model(), name="doomed")
    engine.start_traffic("doomed", rate_rps=100)
    engine.unload_model("doomed")
    assert not any(t.running for t in engine.traffic())


@pytest.fixture
def app_engine(monkeypatch):
    from pages._common import reset_engine
    monkeypatch.setenv("BATCHLAB_ENGINE_URL", "inprocess")
    eng = reset_engine()
    yield eng
    eng.stop_traffic()


def run_app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30).run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_sidebar_and_the_batching_page_show_failing_traffic(app_engine):
    engine = app_engine
    engine.load_model(failing_model(), name="bad", probe=False)  # its trial run would fail
    engine.start_traffic("bad", rate_rps=200)
    until(lambda: status_of(engine, "bad").failed >= 20, "20 failed requests")
    at = run_app()
    assert any("refused or failed" in e.value and "InferenceError" in e.value
               for e in at.sidebar.error), [e.value for e in at.sidebar.error]
    at.switch_page("pages/batching.py").run()
    at.selectbox(key="batching_model").set_value("bad").run()
    assert any("refused or failed" in e.value for e in at.main.error)


def test_the_sidebar_shows_a_model_draining(app_engine):
    engine = app_engine
    # A wait far longer than the test: the requests stay queued until the engine closes.
    engine.configure("mlp", max_batch_size=64, max_wait_ms=60_000.0)
    futs = [engine.submit("mlp", np.zeros((1, 256), np.float32)) for _ in range(3)]
    at = run_app()
    assert any("Draining: 3 requests still queued" in w.value for w in at.sidebar.warning)
    engine.close()
    assert all(f.done() for f in futs)
