"""Issue 27, part 1: Batchlab engine replicas as a Ray Serve deployment, on a real Ray
cluster the fixture starts (a head node and a second node process on this machine)."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from core import Engine, EngineConfig
from core.cluster import BATCH_HEADER, REPLICA_HEADER, concurrency_warning
from core.models import build_demo_model

RAY = str(Path(sys.executable).with_name("ray"))
pytestmark = pytest.mark.timeout(600)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A two-node Ray cluster on this machine (one CPU each), started by the test and
    stopped (with every deployment) after the module's tests."""
    from core.cluster import LocalCluster
    if not Path(RAY).exists():
        pytest.fail(f"Ray is not installed ({RAY} missing): make test installs "
                    "requirements-dev.txt, which has ray[serve]")
    with LocalCluster(nodes=2, cpus_per_node=1) as address:
        yield address


def _get(url: str) -> tuple[dict, dict]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read()), {k.lower(): v for k, v in r.headers.items()}


def _replicas_seen(url: str, want: int, tries: int = 400) -> dict[str, str]:
    """Ask until ``want`` replicas have answered: replica id -> its batch setting."""
    seen: dict[str, str] = {}
    for _ in range(tries):
        _, headers = _get(url)
        seen[headers[REPLICA_HEADER]] = headers[BATCH_HEADER]
        if len(seen) >= want:
            break
    return seen


def test_the_concurrency_warning_says_why_batches_would_not_fill():
    assert concurrency_warning(64, 32) is None
    text = concurrency_warning(8, 32)
    assert "max_ongoing_requests=8 is below max_batch_size=32" in text
    assert "at least 32" in text
    from core import ConfigError
    from core.cluster import deploy
    with pytest.raises(ConfigError, match="beyond loopback.*need a token"):
        deploy("m", b"onnx", http_host="0.0.0.0")
    with pytest.raises(ConfigError, match="name must be 1-64 letters"):
        deploy("a/b", b"onnx")
    with pytest.raises(ConfigError, match="check_rows must be True or False, got 'no'"):
        deploy("m", b"onnx", check_rows="no")


def test_a_model_batched_on_its_owners_word_is_batched_so_by_its_replicas(cluster):
    """Replicas loaded every model with the row check on (a reviewer): a model its owner
    loaded with check_rows=False ran each request alone on Ray. Two requests of 3 and 5
    rows under a 60 s wait fill one batch of 8 only if the replica batches them (CumSum
    over rows then runs on for the second: 4..8)."""
    from concurrent.futures import wait
    from core import BatchConfig
    from core.cluster import deploy_model, undeploy
    from tests.test_rowcheck import _model

    with Engine(EngineConfig(demo_models=False)) as engine:
        engine.load_model(_model("CumSum"), name="trusted", check_rows=False,
                          batch=BatchConfig(max_batch_size=8, max_wait_ms=60_000))
        deploy_model(engine, "trusted", address=cluster, replica_cpus=0.25,
                     http_port=_free_port())
        try:
            fa = engine.submit("trusted-ray", np.ones((3, 4), np.float32))
            fb = engine.submit("trusted-ray", np.ones((5, 4), np.float32))
            done, _ = wait([fa, fb], timeout=120)
            assert len(done) == 2
            last = max(float(f.result().outputs["y"].max()) for f in (fa, fb))
            assert last == 8.0      # one batch of 8 rows (run alone: 5 at most)
        finally:
            undeploy("trusted")


def test_two_replicas_answer_as_onnx_runtime_and_configure_reaches_both(cluster):
    from core.cluster import configure, deploy, deployments, undeploy

    http_port = _free_port()
    model = build_demo_model("mlp")
    d = deploy("mlp", model, address=cluster, num_replicas=2, replica_cpus=0.5,
               max_ongoing_requests=8, http_port=http_port,
               batch={"max_batch_size": 16, "max_wait_ms": 2})
    try:
        assert d.url.startswith("http://127.0.0.1:") and d.url.endswith("/mlp")
        assert any("max_ongoing_requests=8 is below max_batch_size=16" in w for w in d.warnings)
        assert d.serve_options()["user_config"]["batch"]["max_batch_size"] == 16
        assert [x.name for x in deployments()] == ["mlp"]
        config_url = d.url + "/v2/models/mlp/config"
        seen = _replicas_seen(config_url, 2)
        assert sorted(seen.values()) == ["16/2", "16/2"], seen
        # A remote model like any other: its answers equal ONNX Runtime's own.
        import onnxruntime as ort
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)
        want = sess.run(None, {sess.get_inputs()[0].name: x})
        with Engine(EngineConfig(demo_models=False)) as client:
            client.add_remote("mlp-ray", url=d.url, model="mlp")
            assert client.batch_config("mlp-ray").max_batch_size == 16   # the server's
            for _ in range(20):
                got = client.predict("mlp-ray", x).outputs
                np.testing.assert_allclose(list(got.values())[0], want[0], rtol=1e-5,
                                           atol=1e-5)
        # Live: a new batch setting reaches both replicas, without restarting them.
        configure("mlp", max_batch_size=8, max_wait_ms=1)
        after = _replicas_seen(config_url, 2)
        assert after == {rid: "8/1" for rid in seen}, (seen, after)
        # The control API is not served by a replica (it would change one of several).
        req = urllib.request.Request(d.url + "/v1/engine/models", method="GET")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 404 and b"core.cluster.configure" in err.value.read()
    finally:
        undeploy("mlp")
    assert deployments() == []


def test_load_agents_on_both_nodes_merge_into_one_result_and_a_dead_agent_is_reported(cluster):
    """Issue 27, part 2: one schedule shared out over agents pinned to both nodes; every
    intended send is in the merged result once; the agents' histograms merge losslessly
    (their count is the requests answered); an agent killed mid-run is reported and its
    share counted as failed ("AgentLost"), not silently missing. The same with ``rows=False``
    (each agent returns histograms and per-second counts, not rows)."""
    import ray
    from core.cluster import LoadAgents, deploy, merged_histogram, undeploy
    from core.cluster.agents import AGENT_LOST

    d = deploy("tiny", build_demo_model("tiny"), address=cluster, num_replicas=1,
               replica_cpus=0.25, http_port=_free_port(), batch={"max_wait_ms": 1})
    x = np.ones((1, 4), np.float32)
    try:
        with LoadAgents(3, address=cluster, agent_cpus=0.25) as agents:
            nodes = {p["node"] for p in agents.placement}
            assert len(nodes) == 2                         # agents on both nodes
            res = agents.run(d.url, "tiny", x, rate_rps=100, duration_s=1.5, seed=3)
            s = res.summary()
            f = res.frame
            assert s["agents"] == 3 and res.lost == 0 and s["sent"] == len(f)
            assert sorted(f["request"]) == list(range(len(f)))    # each send once
            assert set(f["client"]) == {0, 1, 2}
            assert s["succeeded"] == s["sent"] > 100, s
            assert {a["node"] for a in res.agents} == nodes
            assert all(a["error"] is None for a in res.agents)
            hist = merged_histogram(res)
            assert hist.get_total_count() == s["succeeded"]
            ok_ms = f.loc[f["ok"], "latency_ms"].to_numpy()
            assert hist.get_value_at_percentile(99) / 1000.0 == pytest.approx(
                np.percentile(ok_ms, 99, method="inverted_cdf"), rel=0.01, abs=0.002)

            # The same schedule again, as histograms and counts (no rows)
            res2 = agents.run(d.url, "tiny", x, rate_rps=100, duration_s=1.5, seed=3,
                              rows=False)
            s2 = res2.summary()
            assert res2.frame.empty and s2["sent"] == s["sent"] == s2["succeeded"], s2
            assert [a["sent"] for a in res2.agents] == [a["sent"] for a in res.agents]
            assert merged_histogram(res2).get_total_count() == s2["succeeded"]
            series = res2.per_second()
            assert series["second"].tolist() == [0, 1] and series["sent"].sum() == s2["sent"]
            assert (series["p99_ms"] > 0).all() and s2["p50_ms"] <= s2["p99_ms"]

            run = agents.start(d.url, "tiny", x, rate_rps=100, duration_s=3.0, seed=4)
            ray.kill(agents.actors[1])                       # an agent dies mid-run
            res = run.result()
            dead = res.agents[1]
            assert dead["error"] and "Actor" in dead["error"], dead
            lost = f"{AGENT_LOST}"
            assert res.lost == (res.frame["error"] == lost).sum() > 0
            assert res.summary()["failed"] >= res.lost
            assert res.agents[0]["error"] is None and res.agents[0]["succeeded"] > 0

            run = agents.start(d.url, "tiny", x, rate_rps=100, duration_s=3.0, seed=5,
                               rows=False)                   # (two agents left)
            ray.kill(agents.actors[1])
            res = run.result()
            s = res.summary()
            assert res.agents[1]["error"] and res.frame.empty
            assert res.lost == res.digest.errors[lost] > 0 and s["sent"] == len(run.offsets)
            assert s["failed"] >= res.lost and res.per_second()["sent"].sum() == s["sent"]
    finally:
        undeploy("tiny")


def test_a_local_cluster_uses_one_auth_mode_for_its_head_and_its_workers(monkeypatch,
                                                                         tmp_path):
    """A token left in ~/.ray by any local Ray turns token authentication on for a head
    (`ray start --head`) but not for `ray start --address`: every worker node of the
    cluster was refused ("InvalidAuthToken"; found when a local Ray had run on this
    machine). The cluster gives its head, workers and client one mode."""
    from core.cluster.local import LocalCluster
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert "RAY_AUTH_MODE" not in LocalCluster(nodes=2).env
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("x" * 64)
    assert LocalCluster(nodes=2).env["RAY_AUTH_MODE"] == "token"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")   # (said outright: kept)
    assert LocalCluster(nodes=2).env["RAY_AUTH_MODE"] == "disabled"


def test_a_local_ray_is_started_from_a_thread_that_outlives_the_job_asking(monkeypatch):
    """A sweep with load agents and no address started a local Ray from its job's thread:
    Ray's processes take a parent-death signal, which fires when that *thread* ends, so
    gcs_server and raylet died with the sweep, and a minute later Ray's client ended the
    engine server (an adversary, 4 of 4). ray.init now runs on one thread kept for the
    process. (A fake ``ray``: the real one cannot be started and stopped per test here.)"""
    import threading
    import types

    from core.lab import raylink
    started: list = []
    fake = types.ModuleType("ray")
    fake.is_initialized = lambda: bool(started)
    fake.init = lambda **kw: started.append(threading.current_thread())
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(raylink, "_RAY_THREAD", [])
    job = threading.Thread(target=raylink.connect, name="a sweep's job")
    job.start()
    job.join(30)
    assert len(started) == 1 and started[0] is not job
    assert started[0].is_alive(), "the thread Ray was started from ended"
    assert started[0].daemon   # (never joined at exit, before Ray's own shutdown runs)


def test_a_result_says_when_the_agents_set_the_pace():
    import pandas as pd
    from core.lab import LOAD_COLUMNS, LoadResult

    empty = pd.DataFrame(columns=LOAD_COLUMNS)
    calm = {"agent": 0, "client_cpu_pct": 20.0, "max_lag_ms": 3.0, "error": None}
    assert LoadResult("open", empty, 1.0, 3.0, agents=(calm,)).agents_bound is None
    busy = {"agent": 1, "client_cpu_pct": 97.0, "max_lag_ms": 450.0, "error": None}
    text = LoadResult("open", empty, 1.0, 450.0, agents=(calm, busy)).agents_bound
    assert text.startswith("1 of 2 load agents set the pace, not the server (agent 1: 97 %")
    dead = {**busy, "error": "ActorDiedError: ..."}      # a dead agent set no pace
    assert LoadResult("open", empty, 1.0, 0.0, agents=(calm, dead)).agents_bound is None


def test_the_ray_serve_export_is_a_config_ray_serve_accepts():
    """Issue 27, part 3: the export next to Triton's, MLServer's, KServe's: a config file
    Ray Serve's own schema accepts, with the batch settings as user_config."""
    import yaml
    from ray.serve.schema import ServeDeploySchema
    from core import ConfigError
    from core.lab import ray_serve_config

    text = ray_serve_config("mlp", 32, 2.0, num_replicas=3, max_ongoing_requests=16)
    assert "WARNING: max_ongoing_requests=16 < max_batch_size=32" in text
    schema = ServeDeploySchema.model_validate(yaml.safe_load(text))
    app = schema.applications[0]
    assert (app.name, app.route_prefix, app.import_path) == ("batchlab-mlp", "/mlp",
                                                             "core.cluster.app:build")
    dep = app.deployments[0]
    assert (dep.name, dep.num_replicas, dep.max_ongoing_requests) == ("mlp", 3, 16)
    assert dep.user_config == {"batch": {"max_batch_size": 32, "max_wait_ms": 2}}
    assert "max_ongoing_requests: 64" in ray_serve_config("mlp", 32, 2.0)   # 2 x batch
    with pytest.raises(ConfigError, match="num_replicas must be a whole number"):
        ray_serve_config("mlp", 32, 2.0, num_replicas=0)
    # a model batched on its owner's word: its replicas told so (a reviewer: config files
    # always ran the row check), and the application builder refuses anything but a bool
    owned = ServeDeploySchema.model_validate(yaml.safe_load(
        ray_serve_config("mlp", 32, 2.0, check_rows=False))).applications[0]
    assert owned.args == {"name": "mlp", "model_path": "./model.onnx", "check_rows": False}
    assert "check_rows" not in ray_serve_config("mlp", 32, 2.0)
    # the policy it was measured under travels with the settings (Ray Serve's schema takes
    # the comment lines and the user_config's policy)
    aimd = ServeDeploySchema.model_validate(yaml.safe_load(ray_serve_config(
        "mlp", 32, 2.0, policy="aimd", latency_slo_ms=25.0, comment="Batchlab: run 3.")))
    assert aimd.applications[0].deployments[0].user_config == {"batch": {
        "max_batch_size": 32, "max_wait_ms": 2, "policy": "aimd", "latency_slo_ms": 25}}
    with pytest.raises(ConfigError, match="check_rows must be True or False"):
        ray_serve_config("mlp", 32, 2.0, check_rows="no")
    from core.cluster.app import build
    with pytest.raises(ConfigError, match="check_rows must be true or false, got 'no'"):
        build({"name": "mlp", "model_path": "./model.onnx", "check_rows": "no"})


def test_the_application_builder_serves_the_model_from_a_config(cluster, tmp_path):
    """``core.cluster.app:build`` (the export's import_path) deploys engine replicas of the
    model file named in its args."""
    from ray import serve
    from core.cluster import connect
    from core.cluster.deploy import _start_serve
    from core.cluster.app import build

    path = tmp_path / "model.onnx"
    path.write_bytes(build_demo_model("tiny"))
    connect(cluster)
    _, port = _start_serve("127.0.0.1", _free_port())     # (or the proxy already running)
    serve.run(build({"name": "tiny-cfg", "model_path": str(path)}), name="batchlab-tiny-cfg",
              route_prefix="/tiny-cfg")
    try:
        url = f"http://127.0.0.1:{port}/tiny-cfg/v2/models/tiny-cfg/ready"
        body, headers = _get(url)
        assert body["ready"] is True and headers[REPLICA_HEADER]
    finally:
        serve.delete("batchlab-tiny-cfg")


def test_a_sweep_over_replicas_shows_batches_shrink_and_the_concurrency_cap(cluster):
    """Issue 27, part 3: at one offered load, mean batch against replicas and per-replica
    concurrency: a second replica halves each one's share (smaller batches), and a
    concurrency of 2 keeps batches at 2 rows at most (a low load: Ray Serve's HTTP path
    costs ~10 ms of CPU a request on this machine); the recommendation states the
    concurrency it assumes; the chart draws one line per setting."""
    from core import ConfigError
    from core.cluster import deploy, recommend_replicas, sweep_replicas
    from core.ui.replicas import replica_sweep_figure

    steps = []
    frame = sweep_replicas("tiny-sweep", build_demo_model("tiny"), rate_rps=40,
                           replicas=(1, 2), max_ongoing_requests=(2, None),
                           max_batch_size=(16,), max_wait_ms=(40.0,), duration_s=4.0,
                           agents=2, address=cluster, agent_cpus=0.25, replica_cpus=0.25,
                           progress=lambda k, n, label: steps.append((k, n)))
    shown = frame.drop(columns="agents_bound").to_string()
    assert steps[-1] == (4, 4) and len(frame) == 4
    assert (frame["replicas_seen"] == frame["replicas"]).all(), shown
    assert (frame["error_rate"] == 0).all(), shown
    capped = frame[frame["max_ongoing_requests"] == 2]
    assert (capped["mean_batch_rows"] <= 2.0).all(), shown
    free = frame[frame["max_ongoing_requests"] == 32].set_index("replicas")
    # ~1 + 1.6 rows per 40 ms window on one replica, ~1 + 0.8 on each of two
    assert free.loc[2, "mean_batch_rows"] < free.loc[1, "mean_batch_rows"], shown
    rec = recommend_replicas(frame, p99_ms=10_000)
    assert rec["row"] is not None, (rec["text"], shown)
    assert rec["row"]["replicas"] == 1 and "max_ongoing_requests=" in rec["text"]
    with pytest.raises(ConfigError, match=r"need \d+ CPUs"):
        deploy("too-big", build_demo_model("tiny"), address=cluster, num_replicas=8,
               replica_cpus=1.0)
    assert "No combination met" in recommend_replicas(frame, p99_ms=1e-6)["text"]
    fig = replica_sweep_figure(frame)
    assert len(fig.data) == 4                           # 2 settings x (batch, p99)


def test_sweeps_and_replays_send_from_load_agents_to_the_server_that_serves_the_model(cluster):
    """Issue 27, part 2: ``agents=N`` on a sweep and a replay. A sweep of a remote model
    sends from the agents straight to its server (the notebook's engine sees none of the
    requests; the server sees every one); a replay's arrivals reach the served engine's
    private copy from the agents, token and all; an engine no server exposes is refused in
    words."""
    from core import ConfigError
    from core.lab import replay, sweep
    from core.serving import EngineServer

    served = Engine(EngineConfig(demo_models=False))
    served.load_model(build_demo_model("tiny"), name="tiny")
    server = EngineServer(served, port=0, token="s3cret").start()
    nb = Engine(EngineConfig(demo_models=False))
    try:
        nb.add_remote("tiny-r", url=server.url, model="tiny",
                      headers={"Authorization": "Bearer s3cret"})
        before = served.counters("tiny")["total_requests"]
        frame = sweep(nb, "tiny-r", [8], [1.0], rates_rps=[60], duration_s=1.0,
                      stability=False, baseline=False, agents=2, ray_address=cluster)
        row = frame.iloc[0]
        assert row["sent"] >= 50 and row["error_rate"] == 0, row.to_dict()
        assert served.counters("tiny")["total_requests"] - before == row["sent"]
        assert nb.counters("tiny-r")["total_requests"] == 0     # none sent from here
        assert row["other_cpu_cores"] == row["other_cpu_cores"]  # measured (not NaN)

        out = replay(served, "tiny", list(np.linspace(0.0, 1.0, 40)), policies=["deadline"],
                     agents=2, ray_address=cluster)
        s = out["summary"].iloc[0]
        assert s["requests"] == 40 and s["within_slo"] > 0, s.to_dict()
        assert len(out["timelines"]["deadline"]) == 40     # every arrival reached the copy
        assert out["copy"] not in served.model_names()      # and the copy is gone

        nb.load_model(build_demo_model("tiny"), name="tiny-here")
        with pytest.raises(ConfigError, match="no server exposes"):
            replay(nb, "tiny-here", [0.0, 0.1], agents=1, ray_address=cluster)
        with pytest.raises(ConfigError, match="no server exposes"):
            sweep(nb, "tiny-here", [8], [1.0], rates_rps=[10], agents=1, ray_address=cluster)
        with pytest.raises(ConfigError, match="closed-loop clients run in this process"):
            sweep(nb, "tiny-r", [8], [1.0], concurrencies=[2], agents=1, ray_address=cluster)
    finally:
        nb.close()
        server.close()
        served.close()


def test_the_models_page_deploys_a_model_to_ray_scales_it_and_undeploys_it(cluster, monkeypatch):
    """Issue 27, part 1 from the dashboard: the Models page's "Deploy to a Ray cluster"
    deploys the picked model with its batch settings, adds it back as a remote model
    answering as ONNX Runtime does, changes its replicas live, and undeploys it."""
    from streamlit.testing.v1 import AppTest
    from core.cluster import deployments
    from pages._common import reset_engine

    monkeypatch.setenv("BATCHLAB_ENGINE_URL", "inprocess")
    engine = reset_engine()
    engine.configure("tiny", max_batch_size=8, max_wait_ms=1.0)
    app = str(Path(__file__).resolve().parent.parent / "app.py")
    at = AppTest.from_file(app, default_timeout=240).run()
    at.selectbox(key="models_detail").set_value("tiny").run()
    at.text_input(key="ray_address").set_value(cluster).run()
    at.number_input(key="ray_replicas").set_value(1).run()
    at.number_input(key="ray_ongoing").set_value(4).run()
    assert any("max_ongoing_requests=4 is below max_batch_size=8" in w.value
               for w in at.warning)                       # said before deploying
    at.number_input(key="ray_ongoing").set_value(16).run()
    at.number_input(key="ray_cpus").set_value(0.25).run()
    at.number_input(key="ray_port").set_value(_free_port()).run()
    at.button(key="ray_deploy").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [s.value for s in at.success if "answers at" in s.value], [e.value for e in at.error]
    try:
        (d,) = deployments()
        assert d.name == "tiny" and d.batch.max_batch_size == 8 and d.max_ongoing_requests == 16
        x = engine.sample_input("tiny", rows=3, seed=1)
        want = engine.predict("tiny", x).outputs
        got = engine.predict("tiny-ray", x).outputs
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
        at.number_input(key="ray_n_tiny").set_value(2).run()
        at.number_input(key="ray_bs_tiny").set_value(4).run()
        at.button(key="ray_apply_tiny").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert deployments()[0].num_replicas == 2 and deployments()[0].batch.max_batch_size == 4
        seen = _replicas_seen(d.url + "/v2/models/tiny/config", 2)
        assert sorted(seen.values()) == ["4/1", "4/1"], seen     # both, the new one too
    finally:
        at.button(key="ray_undeploy_tiny").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert deployments() == [] and "tiny-ray" not in engine.model_names()
    engine.close()


def test_traffic_from_load_agents_counts_every_request_and_stops(cluster):
    """Issue 27, part 2: ``start_traffic(..., agents=N)``: one schedule cut into chunks
    handed to the agents ahead of time; every request sent is counted once its answer is
    back (equal to what the server saw); traffic until stopped stops; a class, an
    experiment or an engine no server exposes is refused in words."""
    from core import ConfigError
    from core.serving import EngineServer

    served = Engine(EngineConfig(demo_models=False))
    served.load_model(build_demo_model("tiny"), name="tiny")
    server = EngineServer(served, port=0).start()
    try:
        before = served.counters("tiny")["total_requests"]
        served.start_traffic("tiny", rate_rps=80, pattern="constant", duration_s=2.5,
                             agents=2, ray_address=cluster)
        st = served.wait_traffic("tiny", timeout_s=120)
        assert not st.running and st.agents == 2
        from core.lab.schedule import arrival_stream
        want = sum(1 for _ in arrival_stream("constant", 80, np.random.default_rng(0), 0.0,
                                             2.5))
        assert st.sent == want and st.succeeded == st.sent and st.failed == 0, (want, st)
        assert served.counters("tiny")["total_requests"] - before == st.sent

        served.start_traffic("tiny", rate_rps=50, agents=2, ray_address=cluster)
        deadline = time.monotonic() + 120
        while served.traffic()[0].sent == 0:           # a first chunk answered
            assert time.monotonic() < deadline, served.traffic()
            time.sleep(0.05)
        served.stop_traffic("tiny")
        served.wait_traffic("tiny", timeout_s=120)
        st = served.traffic()[0]
        assert not st.running and st.sent > 0 and st.succeeded == st.sent, st
        assert served.counters("tiny")["total_requests"] - before == want + st.sent
        assert served.events("tiny")["text"].str.contains("from 2 load agent").any()

        with pytest.raises(ConfigError, match="without a priority class"):
            served.start_traffic("tiny", rate_rps=10, agents=1, priority=1)
    finally:
        server.close()
        served.close()
    with Engine(EngineConfig(demo_models=False)) as alone:
        alone.load_model(build_demo_model("tiny"), name="tiny")
        with pytest.raises(ConfigError, match="no server exposes"):
            alone.start_traffic("tiny", rate_rps=10, agents=1, ray_address=cluster)


def _ids_model(table_rows: int) -> bytes:
    """ids [N] into a table of ``table_rows`` rows (Gather): ids past it fail."""
    from onnx import TensorProto, helper, numpy_helper
    table = numpy_helper.from_array(np.ones((table_rows, 3), np.float32), "table")
    vi = helper.make_tensor_value_info
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"])], "ids",
                              [vi("ids", TensorProto.INT64, ["N"])],
                              [vi("y", TensorProto.FLOAT, None)], [table])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                             ir_version=8).SerializeToString()


def test_traffic_from_load_agents_sends_the_inputs_of_a_hot_swap(cluster):
    """A reviewer (helper): the agents' traffic drew its one input at start and sent it
    until stopped, so inputs given or a hot swap while it ran never reached it (ids past a
    smaller table's rows failed every request from then on). Each chunk now looks at what
    its input is drawn from: the chunk handed out after the swap is answered."""
    import io
    from core.serving import EngineServer

    served = Engine(EngineConfig(demo_models=False))
    served.load_model(_ids_model(1000), name="ids", probe=False)
    buf = io.BytesIO()
    np.save(buf, np.array([500], np.int64))        # id 500: fine in 1,000 rows, not in 2
    served.set_inputs("ids", buf.getvalue(), filename="ids.npy")
    server = EngineServer(served, port=0).start()
    try:
        served.start_traffic("ids", rate_rps=40, agents=1, ray_address=cluster)
        deadline = time.monotonic() + 120
        while served.traffic()[0].succeeded == 0:          # a first chunk answered
            assert time.monotonic() < deadline, served.traffic()
            time.sleep(0.05)
        served.load_model(_ids_model(2), name="ids", replace=True, probe=False)
        assert served.real_inputs("ids") is None          # (500 is past the new table)
        while served.traffic()[0].failed == 0:    # the chunk handed out before the swap
            assert time.monotonic() < deadline, served.traffic()
            time.sleep(0.05)
        after = served.traffic()[0].succeeded
        while served.traffic()[0].succeeded == after:   # the next chunk: ids below 2
            st = served.traffic()[0]
            assert st.running and time.monotonic() < deadline, st
            time.sleep(0.05)
    finally:
        served.stop_traffic("ids")
        server.close()
        served.close()


def test_a_dead_replica_fails_only_the_requests_it_held_and_is_replaced(cluster):
    """Issue 27, part 4: a replica killed while it holds queued requests: those fail, in
    words (a server error each), the rest are answered, every request sent is in the result
    once, and Ray Serve replaces the replica."""
    import ray
    from ray.serve import status
    from core.cluster import LoadAgents, configure, deploy, undeploy

    # Batches that never leave by themselves (64 rows, a minute's wait): every request
    # sent is queued in a replica until the kill, then the survivor is told to flush.
    d = deploy("tiny", build_demo_model("tiny"), address=cluster, num_replicas=2,
               replica_cpus=0.5, http_port=_free_port(),
               batch={"max_batch_size": 64, "max_wait_ms": 60_000})
    try:
        # A node has less than one CPU free beside a replica: an agent asking for more than
        # any node has is refused in words (Ray would keep it pending for ever); by
        # default each agent takes what its node has, up to one.
        from core import ConfigError
        with pytest.raises(ConfigError, match=r"1 load agent\(s\) of 1.5 CPU each don't fit"):
            LoadAgents(1, address=cluster, agent_cpus=1.5)
        with LoadAgents(2, address=cluster) as agents:
            run = agents.start(d.url, "tiny", np.ones((1, 4), np.float32), rate_rps=40,
                               duration_s=2.0, pattern="constant")
            while time.time() < run.start_wall + 3.0:    # every request sent (and queued)
                time.sleep(0.05)
            names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                           if a["name"].startswith("SERVE_REPLICA::batchlab-tiny#"))
            assert len(names) == 2, names
            ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
            configure("tiny", max_wait_ms=1)             # the survivor answers its queue
            res = run.result()
        s, f = res.summary(), res.frame
        assert s["sent"] == len(run.offsets) and sorted(f["request"]) == list(range(s["sent"]))
        assert s["succeeded"] + s["failed"] == s["sent"] and s["succeeded"] > 0, s
        # (a server error from the proxy, or the connection cut: either way, in words)
        assert s["failed"] > 0 and set(f.loc[~f["ok"], "error"]) <= {
            "RemoteServerError", "RemoteTargetError"}, f["error"].value_counts(dropna=False)
        deadline = time.monotonic() + 120
        while status().applications["batchlab-tiny"].deployments["tiny"] \
                .replica_states.get("RUNNING") != 2:
            assert time.monotonic() < deadline, status()
            time.sleep(0.2)
    finally:
        undeploy("tiny")


def test_a_models_bytes_are_kept_once_on_the_cluster_and_outlive_the_deploying_process(
        cluster):
    """The model goes to the cluster's model store once (the deployment is bound to a
    reference: a change no longer ships the file); a process deploys and exits, and a
    replica Ray Serve starts after that (the old one killed) still finds its model and
    answers; the bytes are dropped when the deployment is released."""
    import hashlib
    import subprocess
    import ray
    from ray import serve
    from core.cluster import undeploy
    from core.cluster.store import held
    from core.lab.raylink import connect

    root = Path(__file__).resolve().parents[1]
    code = ("from core.cluster import deploy\n"
            "from core.models import build_demo_model\n"
            f"d = deploy('kept', build_demo_model('clf-v1'), address={cluster!r}, "
            f"num_replicas=1, replica_cpus=0.25, http_port={_free_port()})\n"
            "print(d.url)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    url = out.stdout.strip().splitlines()[-1]          # the deploying process has exited
    connect(cluster)
    key = hashlib.sha256(build_demo_model("clf-v1")).hexdigest()
    try:
        kept = held()
        assert kept["users"]["kept"] == key and kept["sizes"][key] == len(
            build_demo_model("clf-v1")), kept
        _, headers = _get(url + "/v2/models/kept")
        first = headers[REPLICA_HEADER]
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["name"].startswith("SERVE_REPLICA::batchlab-kept#")]
        assert len(names) == 1, names
        ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
        deadline = time.monotonic() + 180
        while True:                      # Ray Serve starts a new replica: it finds its model
            try:
                meta, headers = _get(url + "/v2/models/kept")
                if headers[REPLICA_HEADER] != first:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, serve.status()
            time.sleep(0.2)
        assert meta["name"] == "kept"
    finally:
        # undeploy from a process that did not deploy it: found on the cluster
        undeploy("kept", address=cluster)
    kept = held()
    assert "kept" not in kept["users"] and key not in kept["sizes"], kept
    assert "batchlab-kept" not in serve.status().applications


def test_the_model_store_forgets_deployments_removed_without_undeploy():
    """A deployment deleted with ``serve.delete`` (not ``undeploy``) left its bytes in the
    store: the next deploy forgets those whose application is gone, but not one stored just
    now (its application is on its way). The store's own class, without Ray."""
    from core.cluster.store import _ModelStore
    store = _ModelStore()
    store.put("a", "k1", b"x" * 10)
    store.put("b", "k2", b"y" * 20)
    store.put("c", "k1", None)                    # the same bytes: kept once
    t = store.since["b"]
    assert store.prune(["a"], 600.0, now=t + 1.0) == []          # stored a second ago
    assert sorted(store.prune(["a"], 600.0, now=t + 601.0)) == ["b", "c"]
    assert store.held() == {"users": {"a": "k1"}, "sizes": {"k1": 10}}
    with pytest.raises(KeyError):
        store.put("d", "k2", None)                 # dropped with its last user


def _asgi_get(app, path: str, host: str, token: str | None = None) -> tuple[int, dict]:
    """One GET through an ASGI app, as Ray Serve's proxy hands it on (route prefix in
    ``root_path``)."""
    from tests.helpers import run_coroutine
    headers = [(b"host", host.encode())]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {"type": "http", "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/tiny" + path, "raw_path": ("/tiny" + path).encode(), "root_path": "/tiny",
             "query_string": b"", "headers": headers, "client": ("10.0.0.9", 5000),
             "server": ("10.0.0.1", 8000)}
    out: dict = {}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = {k.decode().lower(): v.decode() for k, v in message["headers"]}

    run_coroutine(app(scope, receive, send))
    return out["status"], out["headers"]


def test_a_replica_beyond_loopback_asks_for_the_token_and_answers_only_its_host_names():
    """A replica deployed with a token (Serve listening beyond loopback) refuses a request
    without it, and one addressed by a host name it was not given (a web page's DNS
    rebinding); by IP or by an allowed name it answers. Its own app, without Ray."""
    from core.cluster import BatchlabReplica
    rep = BatchlabReplica(build_demo_model("tiny"), "tiny", token="t0k",
                          allowed_hosts=("ray-head.internal",))
    try:
        app = rep.__serve_build_asgi_app__()
        assert _asgi_get(app, "/v2/models/tiny", "10.0.0.1:8000")[0] == 401
        status, headers = _asgi_get(app, "/v2/models/tiny", "10.0.0.1:8000", "t0k")
        assert status == 200 and headers[REPLICA_HEADER.lower()]
        assert _asgi_get(app, "/v2/models/tiny", "ray-head.internal:8000", "t0k")[0] == 200
        assert _asgi_get(app, "/v2/models/tiny", "evil.example:8000", "t0k")[0] == 403
        assert _asgi_get(app, "/v1/engine/models", "10.0.0.1:8000", "t0k")[0] == 404
    finally:
        rep.engine.close()


def test_a_local_cluster_stops_only_its_own_processes(cluster):
    """Stopping a LocalCluster ends its own nodes (and what they started), not another Ray
    on the machine: here the module's cluster stays up and answers."""
    import subprocess
    from core.cluster import LocalCluster

    other = LocalCluster(nodes=1, cpus_per_node=1)
    other.start()
    tmp = str(other._tmp)
    mine = other._processes()
    assert len(mine) >= 3, mine          # GCS, raylet, monitors...
    other.stop()
    left = [pid for pid in mine if Path(f"/proc/{pid}").exists()
            and "Z" != Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]]
    assert left == [], left
    assert not any(tmp in p.read_bytes().decode(errors="replace")
                   for p in Path("/proc").glob("[0-9]*/cmdline") if _readable(p))
    status = subprocess.run([RAY, "status", f"--address={cluster}"], capture_output=True,
                            text=True, timeout=120)
    assert status.returncode == 0 and "node_" in status.stdout, status.stderr[-2000:]


def _readable(p: Path) -> bool:
    try:
        p.read_bytes()
        return True
    except OSError:
        return False


def test_a_sweep_point_says_when_its_load_agents_set_the_pace():
    """A sweep given load agents (here a stand-in with the agents' interface, sending from
    this process and reporting an agent at 99 % of a core) marks each point the agents
    bounded as disturbed, with the reason; their CPU is not counted as another process's."""
    import dataclasses
    from core.lab import open_loop, sweep

    with Engine(EngineConfig(demo_models=False)) as engine:
        engine.load_model(build_demo_model("tiny"), name="tiny")
        engine.served_at.add(("127.0.0.1", 9))     # (never contacted by the stand-in)
        calls = []

        class BusyAgents:
            def run(self, url, model, x, rate_rps, duration_s, **kw):
                calls.append((url, model, rate_rps))
                res = open_loop(lambda v: engine.submit("tiny", v), lambda rng: x, rate_rps,
                                duration_s=duration_s, seed=kw.get("seed", 0))
                return dataclasses.replace(res, agents=(
                    {"agent": 0, "node": "n0", "sent": len(res.frame), "succeeded": 0,
                     "client_cpu_pct": 99.0, "max_lag_ms": 1.0, "histogram": "",
                     "error": None},))

        frame = sweep(engine, "tiny", [8], [1.0], rates_rps=[100], duration_s=0.3,
                      stability=False, baseline=False, agents=BusyAgents())
    assert calls == [("http://127.0.0.1:9", "tiny", 100.0)]
    row = frame.iloc[0]
    assert "load agents set the pace" in row["disturbed"], row["disturbed"]
    assert row["sent"] > 0


def test_no_replica_count_meeting_the_target_says_what_to_change():
    """"Add replicas, or send less" was said where the max wait took 40 ms of a 50 ms target
    and more replicas made the batches smaller (a notebook newcomer): the advice follows
    what was measured."""
    import pandas as pd

    from core.cluster import recommend_replicas

    def frame(wait: float, achieved: float) -> pd.DataFrame:
        return pd.DataFrame([{"replicas": n, "max_ongoing_requests": 8, "max_batch_size": 8,
                              "max_wait_ms": wait, "rate_rps": 40.0, "offered_rps": 40.0,
                              "achieved_rps": achieved, "p50_ms": 60.0, "p99_ms": 80.0 + n,
                              "error_rate": 0.0, "mean_batch_rows": 2.0, "replicas_seen": n,
                              "agents_bound": False} for n in (1, 2)])
    said = recommend_replicas(frame(40.0, 40.0), p99_ms=50)["text"]
    assert said == ("No combination met p99 <= 50 ms at 40 req/s; the lowest p99 was 81.0 ms "
                    "with 1 replica(s). Its max wait (40 ms) takes most of the target: give "
                    "a shorter max_wait_ms."), said
    assert recommend_replicas(frame(2.0, 20.0), p99_ms=50)["text"].endswith(
        "Add replicas, or send less.")
    assert "The load was served, not within the target" in recommend_replicas(
        frame(2.0, 40.0), p99_ms=50)["text"]
