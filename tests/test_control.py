"""The engine server's control API and its client: RemoteEngine has Engine's contract, jobs
outlive their caller, /metrics parses as Prometheus text with Triton's names, the model
repository loads with Triton's batching config, and an engine that goes away is said so
and comes back."""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import (ConfigError, Engine, EngineUnavailableError, RequestTimeoutError,
                  InputValidationError, JobStatus, MetricsSnapshot, ModelInfo, ModelNotFoundError,
                  TrafficStatus, build_demo_model)
from core.serving import RemoteEngine
from core.serving import ENGINE_METHODS
from core.serving import ServerProcess, free_port
from core.serving import EngineServer
from core.protocol import WireError
from core.serving import WIRE, WIRE_TYPES

encode, decode = WIRE.encode, WIRE.decode
from tests.helpers import WAIT_S

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def pair():
    """An engine, its server, and a client of it."""
    engine = Engine()
    server = EngineServer(engine, port=0).start()
    remote = RemoteEngine.connect(server.url, timeout_s=WAIT_S)
    yield engine, server, remote
    remote.close()
    server.close()
    engine.close()


def roundtrip(value):
    return decode(json.loads(json.dumps(encode(value))))


# -- the wire ------------------------------------------------------------------------------------
def test_wire_keeps_types():
    value = {"t": (1, (2.5, "x")), "ints": {1: 2, 3: 4}, "none": None, "nan": float("nan"),
             "__t": "not a tag", "b": b"\x00\xff"}
    back = roundtrip(value)
    assert back["t"] == (1, (2.5, "x")) and back["ints"] == {1: 2, 3: 4}
    assert back["__t"] == "not a tag" and back["b"] == b"\x00\xff" and np.isnan(back["nan"])
    for arr in (np.arange(12, dtype=np.float32).reshape(3, 4), np.array([True, False]),
                np.arange(6, dtype=np.int64).reshape(1, 2, 3)[:, :, ::2], np.float16([1.5])):
        got = roundtrip(arr)
        assert got.dtype == arr.dtype and got.shape == arr.shape and (got == arr).all()
    objs = roundtrip(np.array([{"a": 1}, {"b": 2}], dtype=object))
    assert objs.dtype == object and objs.tolist() == [{"a": 1}, {"b": 2}]
    frame = pd.DataFrame({"i": [1, 2], "f": [0.5, np.nan], "s": ["a", None],
                          "t": pd.to_datetime(["2026-01-01", "2026-01-02"]),
                          "b": [True, False]})
    got = roundtrip(frame)
    pd.testing.assert_frame_equal(got, frame)
    assert roundtrip(pd.DataFrame(columns=["a", "b"])).columns.tolist() == ["a", "b"]


def test_wire_refuses_what_it_did_not_make():
    with pytest.raises(WireError, match="not one of the wire's types"):
        decode({"__t": "dc", "cls": "subprocess:Popen", "v": {}})
    with pytest.raises(WireError, match="not one of the wire's types"):
        decode({"__t": "dc", "cls": "Popen", "v": {}})
    with pytest.raises(WireError, match="not one of the wire's types"):
        decode({"__t": "dc", "cls": "Engine", "v": {}})
    with pytest.raises(WireError, match="not one of the wire's types"):
        decode({"__t": "dc", "cls": "core.config:BatchConfig", "v": {}})  # names, not paths
    with pytest.raises(WireError, match="cannot send"):
        encode(threading.Lock())
    with pytest.raises(WireError, match="unknown wire tag"):
        decode({"__t": "pickle", "v": ""})


# -- the contract ----------------------------------------------------------------------------------
def test_remote_engine_has_the_engines_signatures():
    for name in ENGINE_METHODS:
        assert inspect.signature(getattr(RemoteEngine, name)) == \
            inspect.signature(getattr(Engine, name)), name
    # Everything a page calls on its engine exists on the client.
    used = set()
    for page in [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        used |= set(re.findall(r"\bengine\.([a-z_]+)", page.read_text()))
    client = RemoteEngine("http://127.0.0.1:9")  # never contacted
    have = set(dir(client)) | set(vars(client))  # no hasattr: properties would call it
    missing = sorted(n for n in used if n not in have)
    assert not missing, f"pages call engine methods the client lacks: {missing}"


def test_remote_engine_returns_what_the_engine_returns(pair):
    engine, _, remote = pair
    assert remote.model_names() == engine.model_names()
    assert remote.model_info("mlp") == engine.model_info("mlp")
    assert isinstance(remote.models()[0], ModelInfo)
    assert remote.memory_budget_bytes == engine.memory_budget_bytes
    assert remote.config == engine.config
    x = remote.sample_input("two-input", rows=3, seed=5)
    ref = engine.sample_input("two-input", rows=3, seed=5)
    assert x.keys() == ref.keys() and all((x[k] == ref[k]).all() for k in x)
    cfg = remote.configure("mlp", max_batch_size=8, max_wait_ms=0.5)
    assert cfg == engine.batch_config("mlp") and cfg.max_batch_size == 8
    xs = [engine.sample_input("mlp", rows=2, seed=s) for s in range(5)]
    for xi in xs:
        got, want = remote.predict("mlp", xi), engine.predict("mlp", xi)
        assert got.outputs.keys() == want.outputs.keys()
        np.testing.assert_allclose(got.outputs["logits"], want.outputs["logits"], rtol=1e-5)
        assert got.rows == 2 and got.model == "mlp"
    snap = remote.metrics("mlp")
    assert isinstance(snap, MetricsSnapshot) and snap.total_requests == 10
    assert snap.timeseries.columns.tolist() == engine.metrics("mlp").timeseries.columns.tolist()
    assert remote.counters("mlp")["success_count"] == 10
    report = remote.create_ab("exp", a="clf-v1", b="clf-v2", b_share=0.25)
    assert type(report).__name__ == "ABReport" and remote.ab_arms("exp") == ("clf-v1", "clf-v2")
    assert remote.ab_experiments() == ["exp"]
    assert remote.update_ab("exp", b_share=0.5).b_share == 0.5
    remote.predict("exp", engine.sample_input("clf-v1"))
    assert remote.ab_metrics("exp", "a").total_requests + \
        remote.ab_metrics("exp", "b").total_requests == 1
    remote.delete_ab("exp")
    assert remote.status().keys() == engine.status().keys()
    status = remote.start_traffic("tiny", rate_rps=200, duration_s=0.3)
    assert isinstance(status, TrafficStatus)
    final = remote.wait_traffic("tiny", timeout_s=WAIT_S)
    assert not final.running and final.sent > 0 and final.succeeded == final.sent
    assert [t.target for t in remote.traffic()] == ["tiny"]


def test_errors_arrive_as_the_engines_exceptions(pair):
    engine, _, remote = pair
    with pytest.raises(ModelNotFoundError, match="no model named 'nope'"):
        remote.predict("nope", np.zeros((1, 4), np.float32))
    with pytest.raises(ConfigError, match="max_batch_size must be"):
        remote.configure("mlp", max_batch_size=0)
    with pytest.raises(InputValidationError, match="expects"):
        remote.predict("mlp", np.zeros((1, 255), np.float32))
    with pytest.raises(ConfigError, match="status: got an unexpected keyword argument 'verbose'"):
        remote.status(verbose=True)
    with pytest.raises(ConfigError, match="configure: too many positional arguments"):
        remote.configure("mlp", 3)
    with pytest.raises(ConfigError, match="cannot cross to the engine server"):
        remote.warmup("mlp", progress=print)
    fut = remote.submit("nope", np.zeros((1, 4), np.float32))
    with pytest.raises(ModelNotFoundError):
        fut.result(WAIT_S)


def test_many_threads_submit_through_the_client(pair):
    engine, _, remote = pair
    engine.configure("mlp", max_batch_size=32, max_wait_ms=5.0)
    xs = [engine.sample_input("mlp", rows=1, seed=s) for s in range(200)]
    futs: list = [None] * len(xs)

    def send(k: int) -> None:
        for i in range(k, len(xs), 8):
            futs[i] = remote.submit("mlp", xs[i])

    threads = [threading.Thread(target=send, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    preds = [f.result(WAIT_S) for f in futs]
    want = np.concatenate([engine.predict("mlp", np.concatenate(xs[i:i + 20])).outputs["logits"]
                           for i in range(0, len(xs), 20)])
    got = np.concatenate([p.outputs["logits"] for p in preds])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert max(p.batch_rows for p in preds) > 1, "requests through the client were batched"
    assert engine.metrics("mlp").success_count == 210


def test_load_and_unload_through_the_client(pair, tmp_path):
    engine, server, remote = pair
    path = tmp_path / "from-disk.onnx"
    path.write_bytes(build_demo_model("tiny"))
    assert remote.load_model(path).name == "from-disk"  # read here, sent as bytes
    assert engine.model_info("from-disk").source == f"upload: {path}"
    # Nothing over HTTP names a file on the server: not a model to read, not a CSV to write.
    raw = RemoteEngine(server.url)
    with pytest.raises(ConfigError, match="takes the model's bytes, not a path"):
        raw._call("engine", "load_model", (str(path),), {})
    with pytest.raises(ConfigError, match="writes no file on the server"):
        raw.store.export_csv(1, path=str(tmp_path / "x.csv"))
    assert not (tmp_path / "x.csv").exists()
    raw.close()
    info = remote.load_model(build_demo_model("tiny"), name="uploaded")
    assert info.name == "uploaded" and "uploaded" in engine.model_names()
    assert remote.model_bytes("uploaded") == build_demo_model("tiny")
    remote.unload_model("uploaded")
    assert "uploaded" not in remote.model_names()


# -- jobs -----------------------------------------------------------------------------------------
def test_sweep_job_runs_in_the_server_and_every_client_sees_it(pair):
    engine, server, remote = pair
    other_tab = RemoteEngine(server.url)
    job = remote.start_job("sweep", "tiny", max_batch_sizes=[1, 8], max_waits_ms=[0.0],
                           rates_rps=[200.0], duration_s=0.3, slo_p99_ms=100.0, seed=7)
    assert isinstance(job, JobStatus) and job.kind == "sweep"
    assert [j.job_id for j in other_tab.jobs()] == [job.job_id]
    remote.close()  # the caller goes away; the job does not
    done = other_tab.wait_job(job.job_id, timeout_s=WAIT_S)
    assert done.state == "done" and done.progress == 1.0
    frame = done.result["frame"]
    # the grid, then the model's own settings (32 / 5 ms) as the sweep's baseline
    assert frame["max_batch_size"].tolist() == [1, 8, 32] and (frame["achieved_rps"] > 0).all()
    assert frame["baseline"].tolist() == [False, False, True]
    run = other_tab.store.get(done.result["run_id"])
    pd.testing.assert_frame_equal(run["results"].reset_index(drop=True), frame,
                                  check_dtype=False)
    assert run["config"]["complete"] is True
    # the load's shape as sent, to send it again (a notebook newcomer)
    assert {k: run["config"][k] for k in ("pattern", "seed", "rows_per_request")} == {
        "pattern": "poisson", "seed": 7, "rows_per_request": 1}
    from core.ui.fmt import run_config_words
    assert "seed=7" in run_config_words(run["config"], run["name"])[0]
    assert "pattern" not in run_config_words(run["config"], run["name"])[0]
    # named by its grid: five runs of a model were all "mlp sweep" in the comparison (a
    # newcomer)
    assert run["name"] == "tiny sweep: batch 1, 8 · wait 0 ms · 200 req/s"
    from core.lab.job_kinds import _grid_name   # (the values, and a policy not deadline)
    assert _grid_name("m sweep", [16, 8], [2, 0.5], [1500, 300], "req/s", "adaptive") == \
        "m sweep: batch 8, 16 · wait 0.5, 2 ms · 300, 1,500 req/s · adaptive"
    assert _grid_name("m sweep", [1, 2, 4, 8, 16], [0], [4], "clients") == \
        "m sweep: batch 1-16 (5 values) · wait 0 ms · 4 clients"
    assert len(other_tab.store.list()) == 1
    other_tab.close()


def test_a_cancelled_sweep_keeps_its_finished_points(engine):
    started = threading.Event()
    job = engine.start_job("sweep", "tiny", max_batch_sizes=[1, 2, 4, 8, 16, 32],
                           max_waits_ms=[0.0], rates_rps=[100.0], duration_s=0.2)
    # Cancel once the first point is in (watching the job, not the clock).
    for _ in range(int(WAIT_S * 100)):
        if engine.job(job.job_id).partial or engine.job(job.job_id).finished:
            break
        started.wait(0.01)
    engine.cancel_job(job.job_id)
    end = engine.wait_job(job.job_id, timeout_s=WAIT_S)
    assert end.state == "cancelled"
    points = len(end.result["frame"])
    assert 1 <= points < 6
    assert engine.store.get(end.result["run_id"])["config"]["complete"] is False
    assert engine.batch_config("tiny").max_batch_size == 32, "the sweep restored the settings"


def test_job_errors_are_clear(engine):
    with pytest.raises(ConfigError, match="unknown job kind 'train'; expected one of sweep"):
        engine.start_job("train", "mlp")
    with pytest.raises(ConfigError, match="sweep job: .*max_batch_sizes"):
        engine.start_job("sweep", "mlp", rates_rps=[10])
    # names a job hands on to sweep()/quick_search() (a newcomer: slo_ms=, sweep()'s own
    # name, and a typo each started a job that failed with a TypeError)
    grid = {"max_batch_sizes": [8], "max_waits_ms": [0.0], "rates_rps": [10.0]}
    jobs_before = len(engine.jobs())
    with pytest.raises(ConfigError, match=r"sweep job: no parameter 'slo_ms' \(give "
                                          r"slo_p99_ms\); it takes .*slo_p99_ms"):
        engine.start_job("sweep", "mlp", slo_ms=5, **grid)
    with pytest.raises(ConfigError, match=r"no parameter 'durations_s' \(did you mean "
                                          r"'duration_s'\?\); it takes .*duration_s"
                                          r".*ray_address"):
        engine.start_job("sweep", "mlp", durations_s=0.5, **grid)
    # a name's typo said before the name it then lacks (it read only "missing a required
    # argument: 'max_waits_ms'"; a notebook newcomer)
    with pytest.raises(ConfigError, match=r"sweep job: no parameter 'max_wait_ms' \(did you "
                                          r"mean 'max_waits_ms'\?\); it takes"):
        engine.start_job("sweep", "mlp", max_batch_sizes=[8], max_wait_ms=[0.0],
                         rates_rps=[10.0])
    with pytest.raises(ConfigError, match=r"search job: no parameter 'constraints' \(give "
                                          r"p99_ms"):
        engine.start_job("search", "mlp", p99_ms=5.0, constraints=None, **grid)
    assert len(engine.jobs()) == jobs_before        # refused: no job started
    with pytest.raises(ModelNotFoundError):
        engine.start_job("warmup", "nope")
    failed = engine.wait_job(engine.start_job("warmup", "fixed-batch",
                                              batch_sizes=[4]).job_id, WAIT_S)
    assert failed.state == "failed" and "fixed-batch" in failed.error
    first = engine.start_job("sweep", "tiny", max_batch_sizes=[1] * 50, max_waits_ms=[0.0],
                             rates_rps=[50.0], duration_s=0.2)
    with pytest.raises(ConfigError, match="already running"):
        engine.start_job("sweep", "tiny", max_batch_sizes=[1], max_waits_ms=[0.0],
                         rates_rps=[50.0])
    # A profile or a search would pin the same settings and restore the sweep's as the
    # model's own (a model on adaptive was left on deadline): refused while it runs
    for kind, params in (("profile_cost", {}), ("search", {
            "max_batch_sizes": [1], "max_waits_ms": [0.0], "rates_rps": [50.0],
            "p99_ms": 100.0})):
        with pytest.raises(ConfigError, match="a sweep of 'tiny' is already running .*: "
                                              "both change tiny's batch settings"):
            engine.start_job(kind, "tiny", **params)
    # nor a warm-up: its runs would go into the sweep's points (a newcomer's warm-up mid-
    # search warmed the search's sizes and spoiled its first point)
    with pytest.raises(ConfigError, match="model 'tiny' is being measured by a sweep .*to "
                                          "warm it up now, cancel the job first"):
        engine.start_job("warmup", "tiny", batch_sizes=[1], iterations=2)
    warm = engine.start_job("warmup", "mlp", batch_sizes=[1], iterations=2)  # another model
    warmed = engine.wait_job(warm.job_id, WAIT_S)
    assert warmed.state == "done", warmed.error
    engine.cancel_job(first.job_id)
    assert engine.wait_job(first.job_id, WAIT_S).state == "cancelled"


def test_close_cancels_running_jobs():
    engine = Engine()
    job = engine.start_job("sweep", "tiny", max_batch_sizes=[1] * 100, max_waits_ms=[0.0],
                           rates_rps=[50.0], duration_s=0.5)
    engine.close()
    assert engine.job(job.job_id).state == "cancelled"


# -- /metrics ---------------------------------------------------------------------------------------
def test_metrics_are_prometheus_text_with_tritons_names(pair):
    from prometheus_client.parser import text_string_to_metric_families

    engine, server, _ = pair
    # A wait far longer than the test: every batch leaves full, whatever the machine's load.
    engine.configure("mlp", max_batch_size=4, max_wait_ms=60_000.0)
    futs = [engine.submit("mlp", engine.sample_input("mlp", rows=1, seed=s)) for s in range(8)]
    for f in futs:
        f.result(WAIT_S)
    with pytest.raises(InputValidationError):
        engine.submit("mlp", np.zeros((1, 3), np.float32))
    import urllib.request
    with urllib.request.urlopen(server.url + "/metrics", timeout=WAIT_S) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}

    def value(name: str, **labels: str) -> float:
        return next(s.value for s in fams[name].samples
                    if all(s.labels.get(k) == v for k, v in labels.items())
                    and s.name == name)

    snap = engine.metrics("mlp")
    assert value("nv_inference_request_success", model="mlp", version="1") == 8
    assert value("nv_inference_request_failure", model="mlp") == snap.error_count == 1
    assert value("nv_inference_count", model="mlp") == 8
    assert value("nv_inference_exec_count", model="mlp") == snap.batches == 2
    assert value("nv_inference_request_duration_us", model="mlp") > \
        value("nv_inference_compute_infer_duration_us", model="mlp") > 0
    assert value("nv_inference_queue_duration_us", model="mlp") > 0
    hist = [s for s in fams["batchlab_batch_size"].samples if s.labels["model"] == "mlp"]
    count = next(s.value for s in hist if s.name.endswith("_count"))
    assert count == snap.batches
    le4 = next(s.value for s in hist if s.labels.get("le") == "4.0" or s.labels.get("le") == "4")
    assert le4 == snap.batches, "no batch is larger than max_batch_size"
    reasons = {s.labels["reason"]: s.value for s in fams["batchlab_batch_release"].samples
               if s.labels["model"] == "mlp" and s.name.endswith("_total")}
    assert reasons == {"full": 2}
    assert value("batchlab_queue_depth", model="mlp") == 0
    assert value("batchlab_up") == 1


def test_scrapes_at_once_across_loads_and_unloads_all_answer():
    """The buckets' high-water marks are kept per engine and model between scrapes: two
    scrapes at once across an unload could both drop the gone model's mark and one fail
    (a KeyError, a 500 on /metrics; a read of the code). Eight scrapers beside twenty
    loads and unloads: every scrape parses."""
    from prometheus_client.parser import text_string_to_metric_families
    from core.serving import prom
    from core import EngineConfig
    from tests.helpers import identity_model
    engine = Engine(EngineConfig(demo_models=False))
    engine.load_model(identity_model(), name="stays")
    stop, errors, scrapes = threading.Event(), [], []

    def scrape() -> None:
        while not stop.is_set():
            try:
                fams = list(text_string_to_metric_families(prom.render(engine).decode()))
                scrapes.append(len(fams))
            except Exception as err:  # noqa: BLE001 - collected and asserted below
                errors.append(repr(err))
    threads = [threading.Thread(target=scrape) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        for _ in range(20):
            engine.load_model(identity_model(), name="comes_and_goes")
            engine.unload_model("comes_and_goes")
    finally:
        stop.set()
        for t in threads:
            t.join(WAIT_S)
        engine.close()
    assert errors == [] and len(scrapes) >= 8


def test_the_batch_size_histograms_buckets_stay_put_when_max_batch_size_changes():
    """Its edges followed max_batch_size: a configure made the le="32" series vanish and
    le="24" appear already full (an adversary), which breaks rate() and
    histogram_quantile across the change. Powers of two up to 1,024 whatever the setting;
    past it, the next power of two above the setting or the largest batch."""
    from prometheus_client.parser import text_string_to_metric_families
    from core.serving import prom
    engine = Engine()

    def buckets() -> dict[str, float]:
        fams = text_string_to_metric_families(prom.render(engine).decode())
        hist = next(f for f in fams if f.name == "batchlab_batch_size")
        return {s.labels["le"]: s.value for s in hist.samples
                if s.labels.get("model") == "tiny" and s.name.endswith("_bucket")}
    try:
        for _ in range(5):
            engine.predict("tiny", engine.sample_input("tiny"))
        seen = []
        for cap in (32, 24, 100, 1024):
            engine.configure("tiny", max_batch_size=cap)
            seen.append(buckets())
        assert all(b == seen[0] for b in seen)
        assert list(seen[0]) == [str(2 ** k) for k in range(11)] + ["+Inf"]
        assert seen[0]["1"] == seen[0]["+Inf"] == 5
        engine.configure("tiny", max_batch_size=3000)
        assert list(buckets())[-2:] == ["4096", "+Inf"]
        engine.configure("tiny", max_batch_size=1500)   # (and they stay: series that vanish
        engine.reset_metrics("tiny")                     # break rate(); a reviewer)
        assert list(buckets())[-2:] == ["4096", "+Inf"]
    finally:
        engine.close()


# -- the model repository (tritonclient) ------------------------------------------------------------
def test_repository_load_unload_with_tritons_config(pair):
    httpclient = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    engine, server, _ = pair
    c = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    index = {m["name"]: m["state"] for m in c.get_model_repository_index()}
    assert index["tiny"] == "READY"
    engine.configure("tiny", max_batch_size=8, max_wait_ms=1.0)
    c.unload_model("tiny")
    assert "tiny" not in engine.model_names()
    assert {m["name"]: m["state"] for m in c.get_model_repository_index()}["tiny"] == \
        "UNAVAILABLE"
    assert not c.is_model_ready("tiny")
    c.load_model("tiny")  # back as it was
    assert engine.batch_config("tiny").max_batch_size == 8
    c.load_model("tiny", config=json.dumps({
        "max_batch_size": 16, "dynamic_batching": {
            "max_queue_delay_microseconds": 2500, "preferred_batch_size": [4, 8],
            "default_queue_policy": {"max_queue_size": 100}}}))
    cfg = engine.batch_config("tiny")
    assert (cfg.max_batch_size, cfg.max_wait_ms, cfg.max_queue) == (16, 2.5, 100)
    c.load_model("tiny", config=json.dumps({"max_batch_size": 0}))
    assert (engine.batch_config("tiny").max_batch_size,
            engine.batch_config("tiny").max_wait_ms) == (1, 0.0)
    c.load_model("fresh", files={"file:1/model.onnx": build_demo_model("tiny")})
    x = np.ones((2, 4), np.float32)
    inp = httpclient.InferInput("x", [2, 4], "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    assert c.infer("fresh", [inp]).as_numpy("y").shape == (2, 4)
    with pytest.raises(InferenceServerException, match="no model named 'ghost'.*file:1"):
        c.load_model("ghost")
    with pytest.raises(InferenceServerException, match="max_batch_size must be"):
        c.load_model("tiny", config=json.dumps({"max_batch_size": -2}))
    with pytest.raises(InferenceServerException, match="not valid JSON"):
        c.load_model("tiny", config="{max_batch_size: 2")
    # a load refused for its configuration leaves nothing loaded (and nothing changed)
    with pytest.raises(InferenceServerException, match="max_batch_size must be"):
        c.load_model("refused", config=json.dumps({"max_batch_size": -2}),
                     files={"file:1/model.onnx": build_demo_model("tiny")})
    assert "refused" not in engine.model_names()
    before = engine.batch_config("fresh")
    with pytest.raises(InferenceServerException, match="max_batch_size must be"):
        c.load_model("fresh", config=json.dumps({"max_batch_size": -2}),
                     files={"file:1/model.onnx": build_demo_model("mlp")})
    assert engine.model_info("fresh").inputs[0].shape[-1] == 4  # still the tiny model
    assert engine.batch_config("fresh") == before
    assert c.is_server_live()
    c.close()


# -- an engine that goes away -------------------------------------------------------------------------
def test_unreachable_engine_says_where_it_looked():
    port = free_port()
    with RemoteEngine(f"http://127.0.0.1:{port}") as remote:
        assert not remote.reachable()
        with pytest.raises(EngineUnavailableError,
                           match=rf"127\.0\.0\.1:{port} is not reachable.*make serve"):
            remote.model_names()
    with pytest.raises(ConfigError, match="must start with http"):
        RemoteEngine("localhost:8000")


def test_server_process_restarts_on_the_same_port_and_the_client_recovers(tmp_path):
    server = ServerProcess(args=["--no-demo-models"], log_path=tmp_path / "server.log").start()
    try:
        remote = RemoteEngine(server.url, token=server.token)
        remote.load_model(build_demo_model("tiny"), name="tiny")
        assert remote.model_names() == ["tiny"]
        os.kill(server.pid, signal.SIGKILL)
        server._proc.wait(WAIT_S)
        with pytest.raises(EngineUnavailableError):
            remote.model_names()
        assert server.ensure(wait_s=WAIT_S) and server.restarts == 1
        assert remote.model_names() == []  # a fresh engine, same address, same client
        remote.close()
    finally:
        assert server.stop() == 0


def test_server_stops_when_its_parent_is_gone(tmp_path):
    # A parent that starts the server, prints its pid, then dies without cleaning up.
    script = ("import sys; sys.path.insert(0, %r)\n"
              "from core.serving import ServerProcess\n"
              "s = ServerProcess(args=['--no-demo-models']).start()\n"
              "print(s.pid, flush=True)\n"
              "import os; os._exit(0)\n") % str(ROOT)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    pid = int(out.stdout.split()[0])
    def gone() -> bool:  # exited: no such process, or a zombie nobody reaped yet
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    for _ in range(int(WAIT_S * 10)):  # the child notices within ~1 s; poll its pid
        if gone():
            break
        threading.Event().wait(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the server outlived its parent")


def test_pages_say_the_engine_is_unreachable_and_recover(monkeypatch):
    from streamlit.testing.v1 import AppTest

    from pages._common import reset_engine

    port = free_port()
    monkeypatch.setenv("BATCHLAB_ENGINE_URL", f"http://127.0.0.1:{port}")
    reset_engine()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("is not answering" in e.value and str(port) in e.value for e in at.error)
    engine = Engine()
    server = EngineServer(engine, port=port).start()
    try:
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error
        assert at.title[0].value == "Models"
    finally:
        server.close()
        engine.close()
        monkeypatch.setenv("BATCHLAB_ENGINE_URL", "inprocess")
        reset_engine()


def test_the_contracts_types_travel():
    """Every kind of value the contract returns comes back as the same type."""
    with Engine() as engine:
        engine.warmup("tiny", iterations=2)
        engine.create_ab("exp", a="clf-v1", b="clf-v2")
        engine.predict("exp", engine.sample_input("clf-v1"))
        for value in (engine.last_warmup("tiny"), engine.cache_entries(),
                      engine.batch_config("tiny"), engine.model_info("two-input"),
                      engine.ab_report("exp"), engine.traffic(), engine.jobs()):
            back = roundtrip(value)
            assert type(back) is type(value)
        assert roundtrip(engine.model_info("two-input")) == engine.model_info("two-input")
        report = roundtrip(engine.ab_report("exp"))
        assert isinstance(report.arms["a"], MetricsSnapshot)
        assert report.arms["a"].total_requests + report.arms["b"].total_requests == 1


# -- what an HTTP caller cannot do (from a review) ------------------------------------------------
def test_an_http_caller_cannot_skip_the_probe_or_pass_invalid_settings(pair):
    from core import BatchConfig
    engine, server, _ = pair
    raw = RemoteEngine(server.url)
    tiny = build_demo_model("tiny")
    with pytest.raises(ConfigError, match="cannot choose whether the upload is tried"):
        raw._call("engine", "load_model", (tiny,), {"name": "x", "probe": False})
    raw._call("engine", "load_model", (tiny,), {"name": "y", "source_label": "demo"})
    assert engine.model_info("y").source == "upload: demo"  # an upload whatever it says
    bad = encode(BatchConfig())
    bad["v"]["max_batch_size"] = 0
    with pytest.raises(ConfigError, match="max_batch_size must be"):
        raw._t.request("POST", "/v1/engine/load_model",
                       {"args": encode([tiny]), "kwargs": {"name": "z", "batch": bad}})
    bad["v"]["max_batch_size"], bad["v"]["policy"] = 8, "nope"
    with pytest.raises(ConfigError, match="policy"):
        raw._t.request("POST", "/v1/engine/load_model",
                       {"args": encode([tiny]), "kwargs": {"name": "z", "batch": bad}})
    status = encode(engine.jobs()[:0] + [engine.batch_config("tiny")])
    status[0]["cls"] = "JobStatus"
    with pytest.raises(ConfigError, match="an argument cannot be a JobStatus"):
        raw._t.request("POST", "/v1/engine/configure", {"args": ["tiny"] + status})
    assert "z" not in engine.model_names()
    with pytest.raises(KeyError, match="no run 999|999"):
        raw.store.get(999)  # the history's KeyError arrives as a KeyError
    raw.close()


def test_arguments_of_the_wrong_type_are_the_callers_mistake_said_as_such(pair):
    """An adversary's calls answered 500 with a TypeError from deep in the method, or words
    that named nothing (job("nope"): "invalid literal for int()"). Each is now a 400 that
    names the parameter and the type expected; work past the server's budget is a 413."""
    from core.errors import ResourceLimitError
    from core.protocol import status_of
    engine, server, _ = pair
    raw = RemoteEngine(server.url)
    for method, args, kwargs, words in [
            ("metrics", ["tiny"], {"window_s": "30"}, "window_s must be float | None, got str"),
            ("timeline", ["tiny"], {"last_s": "2"}, "last_s must be float | None"),
            ("metrics", [["tiny"]], {}, "name must be str, got list"),
            ("sample_input", ["tiny"], {"rows": "3"}, "rows must be int, got str"),
            ("evict_cache", [], {"sha256": 5}, "sha256 must be str | None, got int 5"),
            ("job", ["nope"], {}, "job_id must be int, got str 'nope'"),
            ("sample_input", ["tiny"], {"rows": -1}, "rows must be a whole number of at least 1"),
            ("configure", ["tiny"], {"max_batch_size": 0}, "max_batch_size must be")]:
        with pytest.raises(ConfigError, match=re.escape(words)):
            raw._call("engine", method, args, kwargs)
    with pytest.raises(ResourceLimitError):
        raw._call("engine", "sample_input", ["mlp"], {"rows": 10**12})
    assert status_of(ResourceLimitError("over the budget")) == 413
    assert engine.metrics("tiny").total_requests == 0   # none of it reached the model
    raw.close()


def test_nothing_over_http_reads_a_file_on_the_server(pair, tmp_path):
    """set_inputs over HTTP took a path and read it on the server: any file it could read
    (its contents quoted back in errors), and /dev/zero until the memory ran out. A path is
    refused there, as for load_model; the client reads its own files and sends the bytes."""
    engine, server, remote = pair
    secret = tmp_path / "secret.npy"
    np.save(secret, np.full((3, 4), 7.0, np.float32))
    raw = RemoteEngine(server.url)
    for path in (str(secret), "/dev/zero", str(tmp_path / "missing.npy")):
        with pytest.raises(ConfigError, match="not a path on the server"):
            raw._call("engine", "set_inputs", ["tiny", path], {"filename": "x.npy"})
    assert engine.real_inputs("tiny") is None
    # the client reads the file where it is, and sends its bytes
    assert "3 samples" in remote.set_inputs("tiny", secret)
    raw.close()


def _raw_http(port: int, request: bytes) -> bytes:
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as s:
        s.sendall(request)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b"}" in chunk:
                break
        return b"".join(chunks)


def test_bodies_the_server_will_not_read(pair):
    engine, server, _ = pair
    answer = _raw_http(server.port, b"POST /v1/engine/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                    b"Content-Length: -1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and b"Invalid character in Content-Length" \
        in answer
    # A chunked body is read (HTTP/1.1 allows it) and held to the same limit.
    answer = _raw_http(server.port, b"POST /v1/engine/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                    b"Content-Type: application/json\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n"
                                    b"5\r\n{\"arg\r\n7\r\ns\": []}\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and b'"models"' in answer, answer
    small = EngineServer(engine, port=0, max_body_bytes=4096).start()
    try:  # only an upload may be larger than the data plane's limit
        body = json.dumps({"args": [0] * 5000}).encode()
        answer = _raw_http(small.port, b"POST /v1/engine/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                       b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert answer.startswith(b"HTTP/1.1 413")
        chunked = b"".join(b"%x\r\n" % len(body[i:i + 1000]) + body[i:i + 1000] + b"\r\n"
                           for i in range(0, len(body), 1000)) + b"0\r\n\r\n"
        answer = _raw_http(small.port, b"POST /v1/engine/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                       b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
        assert answer.startswith(b"HTTP/1.1 413") and b"over the limit of 4096" in answer
    finally:
        small.close()
    EngineServer(engine, port=0).close()  # never started: closes at once


def test_an_error_before_the_body_is_read_does_not_poison_the_connection(pair):
    httpclient = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException
    _, server, _ = pair
    c = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    x = httpclient.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.ones((1, 4), np.float32), binary_data=False)
    with pytest.raises(InferenceServerException, match="no model named 'tny'"):
        c.infer("tny", [x])
    assert c.infer("tiny", [x]).as_numpy("y").tolist() == [[3.0] * 4]
    c.close()


def test_a_server_that_never_answers_times_out_the_client():
    import socket
    with socket.socket() as listener:  # accepts connections (the backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        remote = RemoteEngine(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=0.3)
        with pytest.raises(RequestTimeoutError, match="did not answer /v1/engine/model_names "
                                                      "within 0.3 s"):
            remote.model_names()
        with pytest.raises(RequestTimeoutError, match="within 10.5 s|within 10.3 s"):
            remote.predict("mlp", np.zeros((1, 256), np.float32), timeout_ms=300)
        assert not remote.reachable()
        remote.close()


def test_repository_keeps_a_bounded_number_of_unloaded_models():
    from core.serving import Repository
    with Engine() as engine:
        repo = Repository(engine, keep_models=2)
        for name in ("tiny", "mlp", "cnn"):
            repo.unload(name)
        index = {m["name"]: m["state"] for m in repo.index()}
        assert [n for n, s in index.items() if s == "UNAVAILABLE"] == ["mlp", "cnn"]
        engine.load_model(build_demo_model("tiny"), name="mlp")  # loaded again another way
        assert {m["name"]: m["state"] for m in repo.index()}["mlp"] == "READY"


def test_concurrent_ensure_restarts_once(tmp_path):
    server = ServerProcess(args=["--no-demo-models"], log_path=tmp_path / "s.log").start()
    try:
        os.kill(server.pid, signal.SIGKILL)
        server._proc.wait(WAIT_S)
        results: list[bool] = []
        threads = [threading.Thread(target=lambda: results.append(server.ensure(WAIT_S * 3)))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False, False, False, True] and server.restarts == 1
        with RemoteEngine(server.url, token=server.token) as remote:
            assert remote.reachable()
    finally:
        assert server.stop() == 0


def test_wire_types_travel_by_stable_name_not_module_path():
    """A dashboard and a server of one version agree on the wire whatever module a class
    lives in: the payload names the type (``BatchConfig``), never its module."""
    from core import BatchConfig
    names = [t.__name__ for t in WIRE_TYPES]
    assert len(names) == len(set(names)), "two wire types share a name"
    payload = json.dumps(encode({"cfg": BatchConfig(max_batch_size=8)}))
    assert '"cls": "BatchConfig"' in payload and "core." not in payload
    assert decode(json.loads(payload))["cfg"] == BatchConfig(max_batch_size=8)


def test_a_remote_request_is_what_was_sent_even_if_the_buffer_is_refilled(pair):
    """RemoteEngine.submit encodes a request later, on a pool thread: a buffer refilled
    after submit went with its new contents. The pool here has one thread, held by a first
    request waiting out its batch's 300 ms, so the second is still queued, not encoded, when
    its buffer changes."""
    engine, server, _ = pair
    engine.configure("tiny", max_batch_size=8, max_wait_ms=300)     # y = 2x + 1
    remote = RemoteEngine(server.url, pool_size=1)
    try:
        buf = np.ones((1, 4), np.float32)
        first = remote.submit("tiny", np.zeros((1, 4), np.float32))
        second = remote.submit("tiny", buf)
        buf[:] = 100.0
        third = remote.submit("tiny", {"x": buf})    # a mapping too
        buf[:] = -1.0
        assert first.result(WAIT_S).outputs["y"].tolist() == [[1.0] * 4]
        assert second.result(WAIT_S).outputs["y"].tolist() == [[3.0] * 4]
        assert third.result(WAIT_S).outputs["y"].tolist() == [[201.0] * 4]
    finally:
        remote.close()


def test_a_notebooks_extensions_work_on_a_remote_engine_too(pair):
    """A reviewer (helper): predict(check=fn) and load_model(ModelProto), new on Engine,
    failed on RemoteEngine ("cannot send a value of type function", "cannot convert
    'ModelProto' object to bytes"). The check runs here, on the answer; the proto is sent
    as its bytes; arrays given as inputs travel as the .npy they would be."""
    import onnx
    engine, _, remote = pair
    proto = onnx.load_from_string(build_demo_model("tiny"))
    assert remote.load_model(proto, name="tiny-proto").name == "tiny-proto"
    x = np.ones((1, 4), np.float32)
    seen = []
    pred = remote.predict("tiny-proto", x, check=lambda p: seen.append(p.rows))
    assert seen == [1] and pred.outputs["y"].tolist() == [[3.0] * 4]
    with pytest.raises(ConfigError, match="check must be a function"):
        remote.predict("tiny-proto", x, check=5)
    assert remote.set_inputs("tiny-proto", np.zeros((5, 4), np.float32)) == \
        "real: array.npy (5 samples)"
    assert engine.real_inputs("tiny-proto").count == 5


def test_requests_in_a_running_batch_are_in_flight_in_every_view():
    """Requests in a batch being run were in no view: every count was of settled ones and
    the queue depth of waiting ones, so a long run looked idle and requests = successes +
    errors + in flight could not be checked (an adversary)."""
    from prometheus_client.parser import text_string_to_metric_families
    from core.serving import prom
    from tests.helpers import hold_runs, wait_for
    engine = Engine()
    try:
        engine.configure("tiny", max_batch_size=2, max_wait_ms=0.0)
        gate, started = hold_runs(engine, "tiny")
        futs = [engine.submit("tiny", engine.sample_input("tiny"))]
        assert started.wait(WAIT_S)                      # one running, held
        futs += [engine.submit("tiny", engine.sample_input("tiny")) for _ in range(4)]
        wait_for(lambda: engine.queue_depth("tiny") == 4)
        c = engine.counters("tiny")
        assert (c["in_flight"], c["queue_depth"], c["total_requests"]) == (5, 4, 0)
        assert engine.status()["in_flight"] == 5
        fams = {f.name: f for f in text_string_to_metric_families(prom.render(engine).decode())}
        (flight,) = [s.value for s in fams["batchlab_requests_in_flight"].samples
                     if s.labels["model"] == "tiny"]
        assert flight == 5
        gate.set()
        for f in futs:
            f.result(WAIT_S)
        c = engine.counters("tiny")
        assert (c["in_flight"], c["total_requests"], c["success_count"]) == (0, 5, 5)
    finally:
        engine.close()


def test_a_job_listing_carries_long_inputs_by_their_length(pair):
    """Every kept job's parameters went out whole on each listing, which the pages poll:
    50 kept replays of 200,000 arrivals took a listing 21 s and the server +600 MB (an
    adversary). A listing says a long sequence by its length; the job itself gives it
    whole, over the wire too."""
    engine, server, remote = pair
    arrivals = [k * 0.001 for k in range(1500)]
    job = remote.start_job("replay", "tiny", arrivals_s=arrivals, policies=["deadline"],
                           quiet=True)
    remote.cancel_job(job.job_id)
    remote.wait_job(job.job_id, timeout_s=WAIT_S)
    listed = next(j for j in remote.jobs() if j.job_id == job.job_id)
    assert listed.params["arrivals_s"] == "<1,500 values>"
    assert listed.params["policies"] == ["deadline"] and listed.params["quiet"] is True
    assert remote.job(job.job_id).params["arrivals_s"] == arrivals
    assert next(j for j in engine.jobs() if j.job_id == job.job_id).params["arrivals_s"] == \
        "<1,500 values>"


def test_a_job_or_traffic_not_there_is_its_own_not_found_in_process_and_over_http(pair):
    """``job(7)`` and ``wait_traffic`` with none started raised ModelNotFoundError, naming
    neither a model nor a job's own kind of error (a notebook newcomer). Each now raises
    its own (a ModelNotFoundError still, for code that catches that), the same over HTTP."""
    from core import JobNotFoundError, ModelNotFoundError, TrafficNotFoundError
    engine, _, remote = pair
    for e in (engine, remote):
        for call, kind, words in (
                (lambda: e.job(7), JobNotFoundError, "no job 7"),
                (lambda: e.cancel_job(7), JobNotFoundError, "no job 7"),
                (lambda: e.wait_traffic("tiny", timeout_s=1),
                 TrafficNotFoundError, "no traffic was started to 'tiny'")):
            with pytest.raises(kind, match=words) as got:
                call()
            assert isinstance(got.value, ModelNotFoundError)
