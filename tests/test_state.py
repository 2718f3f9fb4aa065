"""State that survives a restart (issue #24): a killed engine server (SIGKILL, no goodbye)
started again on the same state folder serves the same models with the same settings,
the same remote models and A/B experiments; a job it cut short is marked so in the history
with what it had measured; what could not come back says why and is tried again later.
Real server processes (``python -m core.server --state-dir``), driven by RemoteEngine."""

from __future__ import annotations

import json
import os
import stat
import time

import numpy as np
import pytest

from core import BatchConfig, Engine, SessionConfig, build_demo_model
from core.serving import EngineServer, RemoteEngine, ServerProcess
from core.serving.state import StateDir
from tests.helpers import identity_server, WAIT_S, identity_model


def until(predicate, what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _kill_and_restart(proc: ServerProcess) -> None:
    proc._proc.kill()  # SIGKILL: nothing is saved on the way out
    proc._proc.wait(30)
    assert proc.ensure(wait_s=120)


def _what_it_serves(engine: RemoteEngine) -> dict:
    out = {"models": sorted(engine.model_names()), "experiments": {}, "batch": {},
           "session": {}, "remote": {}}
    for name in out["models"]:
        out["batch"][name] = engine.batch_config(name)
        r = engine.remote_info(name)
        if r is None:
            out["session"][name] = engine.session_config(name)
            out["sha"] = {**out.get("sha", {}), name: engine.model_info(name).sha256}
        else:
            out["remote"][name] = (r.url, r.model, r.binary)
    for name in engine.ab_experiments():
        rep = engine.ab_report(name)
        out["experiments"][name] = (rep.a, rep.b, rep.b_share, rep.mode)
    return out


@pytest.fixture
def far():
    """A second engine server: where the remote model lives."""
    with identity_server() as pair:
        yield pair


def test_a_killed_server_comes_back_with_models_settings_remotes_and_experiments(tmp_path, far):
    state = tmp_path / "state"
    proc = ServerProcess(args=["--no-demo-models", "--state-dir", str(state)],
                         log_path=tmp_path / "server.log").start()
    engine = RemoteEngine(proc.url, token=proc.token)
    try:
        engine.load_model(build_demo_model("tiny"), name="tiny",
                          batch=BatchConfig(max_batch_size=8, max_wait_ms=3.0,
                                            policy="adaptive", timeout_ms=4321.0),
                          session=SessionConfig(intra_op_threads=1))
        engine.load_model(build_demo_model("tiny"), name="tiny-b")
        engine.configure("tiny-b", max_batch_size=4, max_queue=77)
        rows = tmp_path / "rows.npy"
        np.save(rows, np.arange(20, dtype=np.float32).reshape(5, 4))
        engine.set_inputs("tiny-b", rows, label="five rows")
        engine.add_remote("far", url=far[1].url, model="ident", timeout_s=5.0,
                          batch=BatchConfig(timeout_ms=2500.0))
        engine.create_ab("exp", a="tiny", b="tiny-b", b_share=0.25, mode="sticky", seed=7)
        engine.load_model(build_demo_model("tiny"), name="gone")
        engine.unload_model("gone")
        before = _what_it_serves(engine)
        assert before["models"] == ["far", "tiny", "tiny-b"]
        drawn = engine.sample_input("tiny-b", rows=6, seed=2)

        _kill_and_restart(proc)

        after = _what_it_serves(engine)
        assert after == before
        # its real inputs came back too, under their name, drawing the same rows
        assert engine.input_source("tiny-b") == "real: five rows (5 samples)"
        np.testing.assert_array_equal(engine.sample_input("tiny-b", rows=6, seed=2), drawn)
        restored = engine.server_info(refresh=True)["restored"]
        assert restored["models"] == ["tiny", "tiny-b"] and restored["remotes"] == ["far"]
        assert restored["experiments"] == ["exp"] and restored["failed"] == []
        x = engine.sample_input("tiny", rows=2)
        got = engine.predict("exp", x, key="user-1").outputs
        want = engine.predict("tiny", x).outputs
        for key in want:  # both arms are the same model: the same answer either way
            np.testing.assert_allclose(got[key], want[key], rtol=1e-6)
        y = engine.predict("far", np.ones((1, 3), np.float32))
        assert next(iter(y.outputs.values())).tolist() == [[1.0, 1.0, 1.0]]
    finally:
        engine.close()
        proc.stop()
    # the folder is Triton's layout, and the credentials file is its owner's only
    assert (state / "models" / "tiny" / "1" / "model.onnx").is_file()
    pbtxt = (state / "models" / "tiny" / "config.pbtxt").read_text()
    assert "max_batch_size: 8" in pbtxt and "max_queue_delay_microseconds: 3000" in pbtxt
    assert not (state / "models" / "gone").exists()
    assert stat.S_IMODE(os.stat(state / "remotes.json").st_mode) == 0o600


def test_what_cannot_come_back_says_why_and_is_tried_again(tmp_path, far):
    """A remote model whose server is down at the restart (and the experiment on it) is
    reported with the reason and kept; it comes back at the next start once its server is
    up. A damaged model file is refused by its hash, the others come back."""
    state = tmp_path / "state"
    back_engine, back = far
    local = Engine(demo_models=False)
    server = EngineServer(local, port=0, state_dir=state)
    local.load_model(identity_model(), name="a")
    local.load_model(identity_model(), name="b")
    local.load_model(build_demo_model("tiny"), name="tiny")
    local.add_remote("far", url=back.url, model="ident", timeout_s=2.0)
    local.create_ab("ab-far", a="a", b="far", b_share=0.5)
    assert server.save_state()
    local.close()
    server.close()
    (state / "models" / "tiny" / "1" / "model.onnx").write_bytes(b"not the model")
    back.close()  # the remote model's server is down now

    again = Engine(demo_models=False)
    server = EngineServer(again, port=0, state_dir=state)
    try:
        summary = server.restore()
        assert summary["models"] == ["a", "b"] and summary["remotes"] == []
        failed = {f["name"]: f for f in summary["failed"]}
        assert set(failed) == {"tiny", "far", "ab-far"}
        assert "sha256 differs" in failed["tiny"]["reason"]
        assert failed["far"]["kind"] == "remote model" and back.url in failed["far"]["reason"]
        assert failed["ab-far"]["kind"] == "experiment"
        again.configure("a", max_batch_size=5)  # a change: the state is written again
        assert server.save_state()
        # what did not come back is kept for the next start: the damaged model's folder too
        assert (state / "models" / "tiny" / "1" / "model.onnx").read_bytes() == b"not the model"
        kept = json.loads((state / "remotes.json").read_text())
        assert [r["name"] for r in kept] == ["far"]  # kept for the next start
        assert [e["name"] for e in json.loads((state / "experiments.json").read_text())] \
            == ["ab-far"]
    finally:
        server.close()
        again.close()
    # its server is up again (a new one, same place): the next start brings both back
    revived = EngineServer(back_engine, host="127.0.0.1", port=int(back.url.rsplit(":", 1)[1]))
    third = Engine(demo_models=False)
    server = EngineServer(third, port=0, state_dir=state)
    try:
        revived.start()
        summary = server.restore()
        assert summary["remotes"] == ["far"] and summary["experiments"] == ["ab-far"]
        assert third.ab_arms("ab-far") == ("a", "far")
    finally:
        server.close()
        third.close()
        revived.close()


def test_a_remote_models_unknown_batching_stays_unknown_after_a_restart(tmp_path):
    """A remote model added without batch= (its server does not report its batch
    settings) came back from a restart as "given to add_remote" 32 / 5 ms, Batchlab's
    client defaults nobody gave (an adversary). Unknown it stays; the client's own queue
    and timeout come back; a batch= that was given comes back given."""
    from core.remote import BatchingSource
    from tests.helpers import fake_oip_server
    state = tmp_path / "state"
    with fake_oip_server() as srv:
        local = Engine(demo_models=False)
        server = EngineServer(local, port=0, state_dir=state)
        local.add_remote("plain", url=srv.url, model="m")
        local.configure("plain", max_queue=77, timeout_ms=2500.0)
        local.add_remote("told", url=srv.url, model="m",
                         batch=BatchConfig(max_batch_size=16, max_wait_ms=2.0))
        assert local.remote_info("plain").batching.source == BatchingSource.UNKNOWN
        assert server.save_state()
        local.close()
        server.close()
        again = Engine(demo_models=False)
        server = EngineServer(again, port=0, state_dir=state)
        try:
            assert server.restore()["remotes"] == ["plain", "told"]
            assert again.remote_info("plain").batching.source == BatchingSource.UNKNOWN
            cfg = again.batch_config("plain")
            assert (cfg.max_queue, cfg.timeout_ms) == (77, 2500.0)
            told = again.remote_info("told").batching
            assert (told.source, told.max_batch_size, told.max_wait_ms) == (
                BatchingSource.GIVEN, 16, 2.0)
        finally:
            server.close()
            again.close()


def test_a_job_cut_short_by_a_kill_is_marked_so_with_its_points_kept(tmp_path):
    state = tmp_path / "state"
    proc = ServerProcess(args=["--no-demo-models", "--state-dir", str(state)],
                         log_path=tmp_path / "server.log").start()
    engine = RemoteEngine(proc.url, token=proc.token)
    try:
        engine.load_model(build_demo_model("tiny"), name="tiny")
        job = engine.start_job("sweep", "tiny", max_batch_sizes=[1, 2, 4, 8, 16, 32],
                               max_waits_ms=[0.0, 1.0, 2.0], rates_rps=[100.0],
                               duration_s=0.3)
        # the server has noted the job and its run in the history (point by point)
        noted = until(lambda: [j for j in json.loads((state / "jobs.json").read_text()
                                                     if (state / "jobs.json").exists()
                                                     else "[]")
                               if j["job_id"] == job.job_id and j["run_id"] is not None],
                      "the server to note the sweep's run")
        run_id = noted[0]["run_id"]

        _kill_and_restart(proc)

        restored = engine.server_info(refresh=True)["restored"]
        cut = {j["job_id"]: j for j in restored["jobs_cut_short"]}
        assert cut[job.job_id]["kind"] == "sweep" and cut[job.job_id]["target"] == "tiny"
        run = engine.store.get(run_id)
        assert run["config"]["cut_short"] and run["config"]["complete"] is False
        assert 1 <= len(run["results"]) < 19  # what it measured before the kill
        assert engine.jobs() == []  # nothing claims to be running
    finally:
        engine.close()
        proc.stop()


def test_state_dir_writes_only_what_changed(tmp_path):
    from core.serving.control import ENGINE_CONTRACT, STATE_METHODS
    # the methods after which the server writes its state before answering are all
    # contract methods that change things (not reads)
    assert STATE_METHODS <= set(ENGINE_CONTRACT)
    assert not any(ENGINE_CONTRACT[m].reads for m in STATE_METHODS)
    engine = Engine(demo_models=False)
    try:
        engine.load_model(identity_model(), name="a")
        state = StateDir(tmp_path / "s")
        assert state.save(engine) and not state.save(engine)
        model = tmp_path / "s" / "models" / "a" / "1" / "model.onnx"
        written = model.stat().st_mtime_ns
        engine.configure("a", max_batch_size=3)
        assert state.save(engine)
        assert model.stat().st_mtime_ns == written  # settings changed, not the file
        meta = json.loads((tmp_path / "s" / "models" / "a" / "batchlab.json").read_text())
        assert meta["batch"]["max_batch_size"] == 3 and meta["version"] == 1
    finally:
        engine.close()


def test_a_model_whose_requests_run_alone_is_written_unbatched_for_triton(tmp_path):
    """The state folder is a Triton repository: a model whose rows mix (run alone here)
    was written with max_batch_size and dynamic_batching, so Triton would pack it."""
    from onnx import TensorProto, helper, numpy_helper
    from tests.helpers import make_model
    spec = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in "xy"]
    mix = make_model([spec[0]], [spec[1]], [helper.make_node("CumSum", ["x", "axis"], ["y"])],
                     initializers=[numpy_helper.from_array(np.array(0, np.int64), "axis")])
    local = Engine(demo_models=False)
    server = EngineServer(local, port=0, state_dir=tmp_path / "state")
    try:
        local.load_model(mix.SerializeToString(), name="mix")
        local.load_model(identity_model(), name="ident")
        assert server.save_state()
    finally:
        local.close()
        server.close()
    models = tmp_path / "state" / "models"
    pbtxt = (models / "mix" / "config.pbtxt").read_text()
    assert "max_batch_size: 0" in pbtxt and "dynamic_batching" not in pbtxt
    assert "dynamic_batching {" in (models / "ident" / "config.pbtxt").read_text()


def test_a_model_loaded_without_the_row_check_keeps_that_across_a_restart(tmp_path):
    """load_model(check_rows=False): batched on its owner's word, and so after a restart
    (the state folder keeps the choice; a model loaded normally is checked again)."""
    from onnx import TensorProto, helper, numpy_helper
    from tests.helpers import make_model
    spec = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in "xy"]
    mix = make_model([spec[0]], [spec[1]], [helper.make_node("CumSum", ["x", "axis"], ["y"])],
                     initializers=[numpy_helper.from_array(np.array(0, np.int64), "axis")]
                     ).SerializeToString()
    engine = Engine(demo_models=False)
    try:
        engine.load_model(mix, name="trusted", check_rows=False)
        engine.load_model(mix, name="checked")
        assert StateDir(tmp_path / "s").save(engine)
    finally:
        engine.close()
    again = Engine(demo_models=False)
    try:
        done = StateDir(tmp_path / "s").restore(again)
        assert sorted(done["models"]) == ["checked", "trusted"], done
        trusted = again.model_info("trusted")
        assert trusted.batch_mode == "dynamic"
        assert any("not checked for mixing (loaded with check_rows=False)" in w
                   for w in trusted.warnings)
        assert again.model_info("checked").batch_mode == "alone"
    finally:
        again.close()


def test_damaged_state_files_are_said_kept_aside_and_never_stop_the_start(tmp_path):
    """An adversary's edits: a truncated experiments.json or jobs.json, a remotes.json
    that is a string, and model folders with a truncated batchlab.json, one naming another
    model, one without it. The server did not start (JSONDecodeError, AttributeError), or
    reported a folder once and then deleted it with its model.onnx."""
    engine = Engine(demo_models=False)
    try:
        engine.load_model(identity_model(), name="good")
        engine.load_model(identity_model(), name="mine")
        engine.load_model(identity_model(), name="foo")
        assert StateDir(tmp_path / "s").save(engine)
    finally:
        engine.close()
    root = tmp_path / "s"
    (root / "experiments.json").write_text('[{"name": "x", "a"')
    (root / "jobs.json").write_text("{")
    (root / "remotes.json").write_text('"not a list"')
    (root / "models" / "mine" / "batchlab.json").write_text('{"name": "mi')
    meta = json.loads((root / "models" / "foo" / "batchlab.json").read_text())
    (root / "models" / "foo" / "batchlab.json").write_text(json.dumps({**meta, "name": "bar"}))
    (root / "models" / "lost" / "1").mkdir(parents=True)
    (root / "models" / "lost" / "1" / "model.onnx").write_bytes(identity_model())
    for attempt in range(2):       # reported again at the next start: nothing was deleted
        engine = Engine(demo_models=False)
        try:
            done = StateDir(root).restore(engine)
            assert engine.model_names() == ["good"]
            failed = {f["name"]: f["reason"] for f in done["failed"]}
            assert "holds no settings" not in str(failed)
            assert "names model 'bar', not its folder's 'foo'" in failed["foo"]
            assert "is not valid JSON" in failed["mine"]
            assert "has no batchlab.json" in failed["lost"]
            if attempt == 0:
                for name in ("experiments.json", "jobs.json", "remotes.json"):
                    assert "nothing in it was restored; kept as " + name + ".damaged-" \
                        in failed[name], failed
            for name in ("mine", "foo", "lost"):
                assert (root / "models" / name / "1" / "model.onnx").is_file()
        finally:
            engine.close()
    assert len(list(root.glob("*.damaged-*"))) == 3


def test_a_demo_models_settings_come_back_without_its_file(tmp_path):
    """A demo model's folder without model.onnx: it failed, and the next save wrote the
    demo's default settings over the user's (max_batch_size 4 came back as 32). The demo is
    loaded already: its settings are applied and its file written again."""
    engine = Engine()
    try:
        engine.configure("mlp", max_batch_size=4)
        assert StateDir(tmp_path / "s").save(engine)
    finally:
        engine.close()
    (tmp_path / "s" / "models" / "mlp" / "1" / "model.onnx").unlink()
    engine = Engine()
    try:
        done = StateDir(tmp_path / "s").restore(engine)
        assert "mlp" in done["models"] and not done["failed"]
        assert engine.batch_config("mlp").max_batch_size == 4
        assert (tmp_path / "s" / "models" / "mlp" / "1" / "model.onnx").is_file()
    finally:
        engine.close()


def test_a_save_during_a_sweep_keeps_the_users_settings_not_the_sweeps(tmp_path):
    """A restart during a sweep brought the model back at the sweep's point (1/20 ms for
    8/3 ms). A pinning job records the model's own settings; the state folder writes
    those. (Saved once the sweep has set its first point.)"""
    engine = Engine()
    try:
        engine.configure("tiny", max_batch_size=8, max_wait_ms=3.0)
        job = engine.start_job("sweep", "tiny", max_batch_sizes=[1, 64],
                               max_waits_ms=[0.0, 20.0], rates_rps=[50.0], duration_s=30.0)
        try:
            assert job.params["own_settings"]["max_batch_size"] == 8
            assert "intra_op_threads" in job.params["own_session"]
            deadline = time.monotonic() + 30
            while engine.batch_config("tiny").max_batch_size != 1:   # its first point
                assert time.monotonic() < deadline, engine.batch_config("tiny")
                time.sleep(0.01)
            state = StateDir(tmp_path / "s")
            assert state.save(engine)
            meta = json.loads((tmp_path / "s" / "models" / "tiny" / "batchlab.json").read_text())
            assert (meta["batch"]["max_batch_size"], meta["batch"]["max_wait_ms"]) == (8, 3.0)
        finally:
            engine.cancel_job(job.job_id)
            engine.wait_job(job.job_id, timeout_s=60)
    finally:
        engine.close()


def test_an_unloaded_demo_model_stays_unloaded_after_a_restart(tmp_path):
    """An engine makes every demo model at start: one unloaded came back after a restart,
    and the summary did not say so."""
    engine = Engine()
    try:
        engine.unload_model("cnn")
        assert StateDir(tmp_path / "s").save(engine)
    finally:
        engine.close()
    again = Engine()
    try:
        done = StateDir(tmp_path / "s").restore(again)
        assert "cnn" not in again.model_names() and "mlp" in again.model_names()
        assert done["demos_unloaded"] == ["cnn"] and not done["failed"]
        from core.ui.fmt import restart_words
        assert "Demo models unloaded before stay unloaded (cnn)." in restart_words(None, done)
        again.load_model(build_demo_model("cnn"), name="cnn")     # loaded again: kept
        StateDir(tmp_path / "s").save(again)
    finally:
        again.close()
    third = Engine()
    try:
        StateDir(tmp_path / "s").restore(third)
        assert "cnn" in third.model_names()
    finally:
        third.close()



def test_a_sweeps_own_settings_are_kept_for_a_remote_model_too():
    """The sweep fix patched local models only: a remote model under a sweep was saved at
    the sweep's point (its batch settings are saved with its recipe)."""
    from types import SimpleNamespace

    from core.serving.state import _owned
    job = SimpleNamespace(target="far", finished=False,
                          params={"own_settings": {"max_batch_size": 8, "max_wait_ms": 3.0}})
    engine = SimpleNamespace(jobs=lambda: [job])
    state = {"models": [], "remotes": [{"name": "far", "url": "http://x",
                                        "batch": {"max_batch_size": 1, "max_wait_ms": 20.0}}]}
    assert _owned(engine, state)["remotes"][0]["batch"] == {"max_batch_size": 8,
                                                            "max_wait_ms": 3.0}


def _ab_with_two_segments(engine) -> None:
    """An experiment with 40 requests in segment 1 and 20 in segment 2 (B promoted)."""
    engine.load_model(identity_model(), name="a")
    engine.load_model(identity_model(), name="b")
    engine.create_ab("exp", a="a", b="b", b_share=0.5, seed=3)
    x = np.ones((1, 3), np.float32)
    for _ in range(40):
        engine.predict("exp", x)
    engine.update_ab("exp", b_share=1.0)            # promote: segment 2 begins
    for _ in range(20):
        engine.predict("exp", x)


def test_an_ab_experiments_segments_come_back_after_a_restart(tmp_path):
    """A restart brought an experiment back with its arms and split and nothing else: the
    last comparison's verdict went with it (a newcomer). Its ended segments' reports come
    back; a crash loses the segment under way (said, and numbered past); a graceful stop
    keeps it too, and saves after it (a change answered meanwhile) keep it as well."""
    from core.ab.segments import RESTART_REASON
    engine = Engine(demo_models=False)
    try:
        _ab_with_two_segments(engine)
        before = engine.ab_report("exp").to_dict()
        ended = before["previous_segments"][0]["report"]
        crash = StateDir(tmp_path / "crash")
        assert crash.save(engine)
        final = StateDir(tmp_path / "final")
        assert final.save(engine, final=True)
        engine.predict("exp", np.ones((1, 3), np.float32))
        engine.configure("a", max_batch_size=3)      # answered after the final save
        assert final.save(engine)                   # written, the segment still kept
    finally:
        engine.close()
    for folder, under_way in (("crash", None), ("final", 21)):
        again = Engine(demo_models=False)
        try:
            done = StateDir(tmp_path / folder).restore(again)
            assert done["experiments"] == ["exp"] and done["segments_kept"] == ["exp"]
            rep = again.ab_report("exp").to_dict()
            segs = rep["previous_segments"]
            assert segs[0]["segment"] == 1 and segs[0]["report"]["total_requests"] == 40
            for key in ("verdict", "arms", "b_share", "mode"):
                assert segs[0]["report"][key] == ended[key], key
            assert rep["segment"] == 3 and rep["total_requests"] == 0
            if under_way is None:
                assert len(segs) == 1 and rep["segment_reason"] == (
                    f"{RESTART_REASON}; segment 2, under way then, was not kept: the server "
                    "did not stop gracefully")
            else:
                assert [s["segment"] for s in segs] == [1, 2]
                assert segs[1]["report"]["total_requests"] == under_way
                assert segs[1]["reason"] == before["segment_reason"]
                # the change to arm A after the final save began segment 3, still empty
                # at the stop: it goes on, its reason kept
                assert rep["segment_reason"] == ("arm A (a) had its batch settings changed "
                                                 "(the engine server restarted since)")
                assert again.batch_config("a").max_batch_size == 3
            # strict JSON (NaN is not: a one-arm segment's p50 of the empty arm is null)
            json.loads((tmp_path / folder / "experiments.json").read_text(),
                       parse_constant=lambda c: pytest.fail(f"{c} in experiments.json"))
            from core.ui.segments import segment_words
            title, lines = segment_words(segs, rep["segment"])
            one = [w for w in lines if w.startswith("**Segment 1**")]
            assert one and "40 requests" in one[0], lines
            if under_way is None:
                assert lines[-1] == "Segment 2: not kept (only the one above is kept)", lines
        finally:
            again.close()


def _serving(state, log_path) -> tuple[ServerProcess, RemoteEngine]:
    """A real engine server on the state folder ``state``, and a client of it."""
    proc = ServerProcess(args=["--no-demo-models", "--state-dir", str(state)],
                         log_path=log_path).start()
    return proc, RemoteEngine(proc.url, token=proc.token)


def test_a_graceful_stop_keeps_the_segment_under_way_of_a_server(tmp_path):
    """The same through a real server: SIGTERM, then a start on the same folder."""
    state = tmp_path / "state"
    proc, engine = _serving(state, tmp_path / "server.log")
    try:
        _ab_with_two_segments(engine)
        verdict = engine.ab_report("exp").verdict
        engine.start_traffic("a", rate_rps=20.0, pattern="poisson")   # the stop stops it
        engine.close()
        assert proc.stop() == 0
        proc, engine = _serving(state, tmp_path / "again.log")
        rep = engine.ab_report("exp")
        assert [s["segment"] for s in rep.previous_segments] == [1, 2], rep.previous_segments
        assert rep.previous_segments[1]["report"]["total_requests"] == 20
        assert rep.previous_segments[1]["report"]["verdict"] == verdict
        assert rep.segment == 3 and rep.to_dict()["total_requests"] == 0
        restored = engine.server_info(refresh=True)["restored"]
        assert restored["traffic_stopped"] == [{
            "kind": "traffic", "target": "a", "rate_rps": 20.0, "pattern": "poisson",
            "ends_at": None, "may_have_ended": False}]
        assert restored["jobs_cut_short"] == [] and not engine.traffic_running()
        from core.ui.fmt import restart_words
        words = restart_words(None, restored)
        assert ("Stopped by the restart: the traffic to 'a' (20/s poisson); start it again "
                "on its page.") in words and "do not start again by themselves" in words
    finally:
        engine.close()
        proc.stop()


def test_a_restored_experiments_segments_say_what_a_crash_lost_and_only_that(tmp_path):
    """A crash with only segment 1 read "Earlier segments (the last 0 of 1)"; every start
    after a crash said an empty segment "was not kept", numbering on; a graceful stop of an
    empty segment took its reason and start away; a hand-edited entry broke the page
    (reviewer)."""
    from core.ab.segments import RESTART_REASON
    from core.ui.segments import segment_words

    def restored(state: dict):
        again = Engine(demo_models=False)
        try:
            again.load_model(identity_model(), name="a")
            again.load_model(identity_model(), name="b")
            again.create_ab("exp", a="a", b="b", seed=3)
            again.restore_ab_segments("exp", state)
            rep = again.ab_report("exp").to_dict()
            return rep, segment_words(rep["previous_segments"], rep["segment"])
        finally:
            again.close()

    engine = Engine(demo_models=False)
    try:
        _ab_with_two_segments(engine)
        from core.ab.segments import kept_state
        exp = engine._ns.experiment("exp")
        busy = kept_state(exp)
        engine.update_ab("exp", b_share=0.5)         # segment 3 begins, no request in it
        idle = kept_state(exp)
    finally:
        engine.close()
    assert busy["segment_busy"] is True and idle["segment_busy"] is False
    # a crash with requests in segment 2 and only segment 1 dropped: none kept, said so
    rep, (title, lines) = restored({**busy, "segments": []})
    assert rep["segment"] == 3 and title == "Earlier segments (none of 2 kept)", title
    assert lines == ["Segments 1-2: not kept"], lines
    # a crash in a segment without a request: nothing lost, it goes on as it was
    rep, (title, lines) = restored(idle)
    assert rep["segment"] == 3 and rep["segment_started"] == idle["segment_started"]
    assert rep["segment_reason"] == (
        f"{idle['segment_reason']} (the engine server restarted since without a graceful "
        "stop: requests in the 2 s before it, if any came, were not kept)")
    assert "not kept" not in " ".join(lines)
    # and again after that start (no flag: a loss said, not one unsaid)
    no_flag = {k: v for k, v in idle.items() if k != "segment_busy"}
    rep, _ = restored(no_flag)
    assert rep["segment"] == 4 and "segment 3, under way then, was not kept" in \
        rep["segment_reason"] and rep["segment_reason"].startswith(RESTART_REASON)
    # hand edits: a start in words, segments not a list, a number for a reason
    bad = [{**s, "started": "yesterday"} for s in idle["segments"]]
    rep, (title, lines) = restored({**idle, "segments": bad})
    assert rep["previous_segments"] == [] and title.startswith("Earlier segments (none")
    for segments in (5, "x", None, [{"segment": "1"}], [{**idle["segments"][0], "reason": 7}]):
        rep, _ = restored({**idle, "segments": segments})
        assert rep["previous_segments"] == [], segments


def test_the_last_save_comes_after_the_close_and_keeps_what_was_answered(tmp_path):
    """A graceful stop saved before the close: a change a keep-alive client got answered
    during the drain (an experiment deleted) came back, and requests answered after that
    save were left out of the kept segment (an adversary). The stop's last save comes after
    the close; the jobs and traffic the stop cut short stay as the save before found them."""
    from core.serving import EngineServer
    engine = Engine(demo_models=False)
    server = EngineServer(engine, port=0, state_dir=tmp_path / "s")
    _ab_with_two_segments(engine)
    engine.create_ab("gone", a="a", b="b")
    engine.start_traffic("a", rate_rps=20.0, pattern="constant", duration_s=600.0)
    assert server.save_state(final=True)           # main(): before the close
    x = np.ones((1, 3), np.float32)
    for _ in range(5):
        engine.predict("exp", x)                   # answered after that save
    engine.close()
    engine.delete_ab("gone")                       # answered during the drain
    assert not server.save_state()                 # (the periodic saver: engine closed)
    assert server.save_state(final=True, after_close=True)
    state = json.loads((tmp_path / "s" / "experiments.json").read_text())
    assert [e["name"] for e in state] == ["exp"]
    assert state[0]["segments"][-1]["report"]["total_requests"] == 25
    jobs = json.loads((tmp_path / "s" / "jobs.json").read_text())
    assert [(j["kind"], j["target"]) for j in jobs] == [("traffic", "a")]
    assert jobs[0]["ends_at"] > time.time() + 500
    # traffic due to end before the restart may have ended by itself: said so
    from core.ui.fmt import restart_words
    words = restart_words(None, {"root": "/x", "traffic_stopped": [
        {**jobs[0], "may_have_ended": True}]})
    assert "Stopped by the restart (or it ended by itself just before): the traffic to 'a' " \
        "(20/s constant)" in words, words


def test_a_restored_segment_that_a_file_could_not_hold_is_passed_over(tmp_path):
    """An adversary's hand edits that passed the first checks: a kept split in words, a
    verdict that is a number, a start in 1e300, a segment numbered 3e9 (the page counted
    up to it), an empty segment's reason grown by every restart."""
    from core.ab.segments import kept_state
    from core.ui.segments import segment_words
    engine = Engine(demo_models=False)
    try:
        _ab_with_two_segments(engine)
        engine.update_ab("exp", b_share=0.5)
        exp = engine._ns.experiment("exp")
        good = kept_state(exp)
        seg = good["segments"][0]
        for bad in ({**seg, "report": {**seg["report"], "b_share": "half"}},
                    {**seg, "report": {**seg["report"], "verdict": 5}},
                    {**seg, "report": {**seg["report"], "arms": []}},
                    {**seg, "report": {**seg["report"], "mode": "coin"}},
                    {**seg, "started": 1e300}, {**seg, "ended": -1.0}):
            engine.delete_ab("exp")
            engine.create_ab("exp", a="a", b="b", seed=3)
            engine.restore_ab_segments("exp", {**good, "segments": [bad, *good["segments"][1:]]})
            rep = engine.ab_report("exp").to_dict()      # (it raised: the API and the page)
            assert [s["segment"] for s in rep["previous_segments"]] == [2], bad
            segment_words(rep["previous_segments"], rep["segment"])
        # a huge number: the page's words in time of the kept ones, not of the number
        title, lines = segment_words(good["segments"], 3_000_000_000)
        assert lines[-1] == "Segments 3-2999999999: not kept (only the 2 above are kept)"
        assert title == "Earlier segments (2 of 2999999999 kept)"
        # restarted three times in an empty segment: the words said once
        state = {**good, "stopped": True}
        for _ in range(3):
            engine.delete_ab("exp")
            engine.create_ab("exp", a="a", b="b", seed=3)
            engine.restore_ab_segments("exp", state)
            state = {**kept_state(engine._ns.experiment("exp")), "stopped": True}
        reason = engine.ab_report("exp").segment_reason
        assert reason.count("restarted since") == 1, reason
        # and a crash in it: said that requests of its last 2 s, if any, were not kept
        engine.delete_ab("exp")
        engine.create_ab("exp", a="a", b="b", seed=3)
        engine.restore_ab_segments("exp", {k: v for k, v in state.items() if k != "stopped"})
        reason = engine.ab_report("exp").segment_reason
        assert reason.count("restarted since") == 1 and "2 s before it, if any came, were " \
            "not kept" in reason, reason
    finally:
        engine.close()


def test_traffic_due_to_end_before_the_restart_may_have_ended_by_itself(tmp_path):
    """Traffic whose duration ran out in the 2 s between the last save and a crash was said
    stopped by the restart (an adversary): traffic due to end by then is said to have
    perhaps ended by itself. A reset is saved before its answer (a crash brought the A/B
    segments it cleared back)."""
    from core.serving.control import STATE_METHODS
    assert "reset_metrics" in STATE_METHODS
    root = tmp_path / "s"
    root.mkdir()
    now = time.time()
    (root / "jobs.json").write_text(json.dumps([
        {"kind": "traffic", "target": "a", "rate_rps": 5.0, "pattern": "constant",
         "ends_at": round(now - 1)},
        {"kind": "traffic", "target": "b", "rate_rps": 5.0, "pattern": "constant",
         "ends_at": round(now + 600)},
        {"kind": "traffic", "target": "c", "rate_rps": 5.0, "pattern": "constant",
         "ends_at": None}]))
    engine = Engine(demo_models=False)
    try:
        done = StateDir(root).restore(engine)
    finally:
        engine.close()
    assert [(t["target"], t["may_have_ended"]) for t in done["traffic_stopped"]] == [
        ("a", True), ("b", False), ("c", False)]
    assert done["jobs_cut_short"] == []
