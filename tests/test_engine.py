"""The engine facade: the contract of DESIGN.md, model registry, hot swap, warm-up."""

from __future__ import annotations

import re
import threading

import numpy as np
import onnxruntime as ort
import pytest

from core import (DEMO_MODELS, BatchlabError, ConfigError, Engine, EngineClosedError, InputValidationError,
                  ModelLoadError, ModelNotFoundError, Prediction, RequestTimeoutError,
                  build_demo_model)
from core.config import EngineConfig
from tests.helpers import ONNX_TEST_DATA, ORT_DATASETS, WAIT_S, hold_runs


def test_contract_example(tmp_path):
    path = tmp_path / "resnet.onnx"
    path.write_bytes(build_demo_model("mlp"))
    with Engine() as engine:
        assert set(DEMO_MODELS) <= set(engine.model_names())
        info = engine.load_model(str(path), name="resnet")
        assert info.name == "resnet" and info.source == str(path)
        cfg = engine.configure("resnet", max_batch_size=32, max_wait_ms=5.0)
        assert cfg.max_batch_size == 32 and engine.batch_config("resnet") == cfg
        x = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
        pred = engine.submit("resnet", x).result(WAIT_S)
        assert isinstance(pred, Prediction)
        assert engine.predict("resnet", x).outputs["logits"].shape == (2, 10)
        assert pred.model == "resnet" and pred.arm is None and pred.rows == 2
        d = engine.metrics("resnet").to_dict()
        assert d["total_requests"] == 2 and d["success_count"] == 2
        assert d["error_count"] == 0 and d["error_rate"] == 0.0 and d["avg_latency_ms"] > 0
    assert engine.closed


def test_outputs_equal_running_the_model_directly(engine):
    sess = ort.InferenceSession(build_demo_model("clf-v2"))
    x = engine.sample_input("clf-v2", rows=5, seed=3)
    pred = engine.predict("clf-v2", x)
    probs, label = sess.run(["probs", "label"], {"x": x})
    np.testing.assert_allclose(pred.outputs["probs"], probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pred.outputs["label"], label)


def test_a_request_is_what_was_sent_even_if_the_caller_refills_its_buffer(engine):
    """A notebook refilling one buffer per submit: request 1 sent 1.0 and was answered as if
    it had sent 100.0 (the engine read the caller's array when the batch ran). The batch
    here forms only when request 2 arrives, after the buffer changed."""
    engine.configure("tiny", max_batch_size=2, max_wait_ms=10_000)   # y = 2x + 1
    buf = np.ones((1, 4), np.float32)
    first = engine.submit("tiny", buf)
    buf[:] = 100.0
    second = engine.submit("tiny", {"x": buf})    # the mapping path too
    buf[:] = -1.0
    assert first.result(WAIT_S).outputs["y"].tolist() == [[3.0] * 4]
    assert second.result(WAIT_S).outputs["y"].tolist() == [[201.0] * 4]
    assert first.result().batch_id == second.result().batch_id
    # An array nobody can write through is taken as it is (no copy needed)
    frozen = np.full((1, 4), 2.0, np.float32)
    frozen.flags.writeable = False
    arrays, rows = engine._router.registry.models["tiny"].validator(frozen)
    assert arrays[0] is frozen and rows == 1
    assert engine._router.registry.models["tiny"].validator(buf)[0][0] is not buf
    # A read-only view of a writable buffer changes with the buffer (an adversary: the
    # answer was 2001, the refill's): copied, in the fast path and the mapping path
    validator = engine._router.registry.models["tiny"].validator
    view = buf.view()
    view.flags.writeable = False
    assert validator(view)[0][0] is not view
    assert validator({"x": view[None][0]})[0][0] is not view
    buf[:] = 1.0
    view_fut = engine.submit("tiny", view)
    buf[:] = 1000.0
    engine.submit("tiny", frozen)                  # (the batch of two runs now)
    assert view_fut.result(WAIT_S).outputs["y"].tolist() == [[3.0] * 4]
    # ...while a read-only view of a read-only array is taken as it is
    assert validator(frozen[:1])[0][0].base is frozen
    # A window of a buffer the caller refills (sliding_window_view: read-only, through
    # as_strided's own object, not an array, between it and the buffer) is copied too:
    # the answer was the refill's
    from numpy.lib.stride_tricks import sliding_window_view
    signal = np.arange(8, dtype=np.float32)
    window = sliding_window_view(signal, 4)[:2]
    assert not window.flags.writeable and validator(window)[0][0] is not window
    sealed = np.arange(8, dtype=np.float32)
    sealed.flags.writeable = False                 # one nobody can write: not copied
    sealed_window = sliding_window_view(sealed, 4)
    assert validator(sealed_window)[0][0] is sealed_window
    # ...and a read-only array over a memoryview of a writable one (a reviewer)
    over = np.frombuffer(memoryview(signal).toreadonly(), np.float32)[:4].reshape(1, 4)
    assert not over.flags.writeable and validator(over)[0][0] is not over
    wfut = engine.submit("tiny", window)
    signal[:] = -1000.0
    engine.submit("tiny", frozen)
    assert wfut.result(WAIT_S).outputs["y"].tolist() == [[1, 3, 5, 7], [3, 5, 7, 9]]


def test_the_servers_decoded_arrays_are_taken_as_they_are(engine):
    """The server marks a body's arrays read-only, and the arrays they view (a binary
    tensor is a reshaped view of the body's bytes): submit copies none of them."""
    import json as _json
    from core.serving import EngineServer
    seen = []
    validator = engine._router.registry.models["tiny"].validator
    real = type(validator).__call__

    def spy(self, x):
        arrays, rows = real(self, x)
        seen.append(arrays[0] is x)
        return arrays, rows
    head = _json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                    "parameters": {"binary_data_size": 32}}]}).encode()
    body = head + np.arange(8, dtype=np.float32).tobytes()
    import urllib.request
    with EngineServer(engine, port=0) as server:
        type(validator).__call__ = spy
        try:
            req = urllib.request.Request(
                f"{server.url}/v2/models/tiny/infer", data=body, method="POST",
                headers={"Inference-Header-Content-Length": str(len(head)),
                         "Content-Type": "application/octet-stream"})
            with urllib.request.urlopen(req, timeout=WAIT_S) as resp:
                assert resp.status == 200
            json_body = _json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype":
                                                 "FP32", "data": [1, 2, 3, 4]}]}).encode()
            req = urllib.request.Request(f"{server.url}/v2/models/tiny/infer", data=json_body,
                                         method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=WAIT_S) as resp:
                assert resp.status == 200
        finally:
            type(validator).__call__ = real
    assert seen == [True, True], seen


def test_load_from_path_names_by_stem(bare_engine, tmp_path):
    p = tmp_path / "my-model.onnx"
    p.write_bytes(build_demo_model("tiny"))
    assert bare_engine.load_model(p).name == "my-model"
    assert bare_engine.load_model(build_demo_model("tiny")).name.startswith("model-")


def test_name_conflicts_and_bad_names(engine):
    with pytest.raises(ConfigError, match="already loaded; pass replace=True"):
        engine.load_model(build_demo_model("tiny"), name="mlp")
    with pytest.raises(ConfigError, match="model name must be"):
        engine.load_model(build_demo_model("tiny"), name="../evil")


def test_bad_model_leaves_engine_serving(engine):
    with pytest.raises(ModelLoadError):
        engine.load_model(b"\x89PNG garbage", name="bad")
    assert "bad" not in engine.model_names()
    assert engine.predict("tiny", np.ones((1, 4), np.float32)).outputs["y"][0, 0] == 3.0


def test_unknown_model_lists_loaded_ones(engine):
    with pytest.raises(ModelNotFoundError, match="no model named 'nope'; loaded models: clf-v1"):
        engine.submit("nope", np.ones((1, 4), np.float32))


def test_submit_time_errors_are_counted(engine):
    with pytest.raises(InputValidationError):
        engine.submit("tiny", np.ones((1, 5), np.float32))
    d = engine.metrics("tiny").to_dict()
    assert d["error_count"] == 1 and d["errors_by_type"] == {"InputValidationError": 1}


def test_hot_swap_keeps_config_metrics_and_serves_new_version(engine):
    engine.configure("tiny", max_batch_size=7)
    engine.predict("tiny", np.ones((1, 4), np.float32))
    # replace "tiny" by a model with the same interface but other maths (identity-like)
    info = engine.load_model(build_demo_model("tiny"), name="tiny", replace=True)
    assert info.name == "tiny" and engine.batch_config("tiny").max_batch_size == 7
    assert engine.metrics("tiny").total_requests == 1
    assert engine.predict("tiny", np.ones((1, 4), np.float32)).outputs["y"][0, 0] == 3.0



def test_a_configure_beside_a_hot_swap_reaches_the_serving_version(engine, monkeypatch):
    """An adversary's race: configure() looked the model up, a hot swap replaced it, and
    the change went to the retired version: configure returned 9, the model kept 7. The
    swap is made here inside configure's first look-up, the window it had."""
    engine.configure("tiny", max_batch_size=7)
    ns, look_up = engine._ns, engine._ns.entry
    swapped = []

    def entry(name):
        found = look_up(name)
        if name == "tiny" and not swapped:
            swapped.append(True)
            engine.load_model(build_demo_model("tiny"), name="tiny", replace=True)
        return found

    monkeypatch.setattr(ns, "entry", entry)
    assert engine.configure("tiny", max_batch_size=9).max_batch_size == 9
    assert swapped and engine.batch_config("tiny").max_batch_size == 9
    assert engine.predict("tiny", np.ones((1, 4), np.float32)).rows == 1

def test_a_hot_swap_keeps_the_queued_requests_in_the_depth_and_batch_ids_apart():
    """An adversary's swap with 16 requests queued on the old version: queue_depth read 0
    (only the new batcher was asked) while all were pending, and the new version's batch
    ids began again at 1, so the timeline put 8 rows in "a batch of 4"."""
    from concurrent.futures import wait

    with Engine(EngineConfig(demo_models=False)) as engine:
        engine.load_model(build_demo_model("tiny"), name="m")
        engine.configure("m", max_batch_size=4, max_wait_ms=60_000)
        gate, started = hold_runs(engine, "m")
        old = [engine.submit("m", np.full((1, 4), i, np.float32)) for i in range(20)]
        assert started.wait(WAIT_S)   # 4 running (full batch), 16 queued behind them
        assert engine.metrics("m").queue_depth == 16
        engine.load_model(build_demo_model("tiny"), name="m", replace=True)
        assert engine.metrics("m").queue_depth == 16 == engine.status()["queue_depth"]
        assert engine.queue_depth("m") == 16 == engine.counters("m")["queue_depth"]
        new = [engine.submit("m", np.full((1, 4), 100 + i, np.float32)) for i in range(8)]
        done, _ = wait(new, timeout=WAIT_S)
        assert len(done) == 8
        gate.set()
        done, _ = wait(old, timeout=WAIT_S)
        assert len(done) == 20 and engine.metrics("m").queue_depth == 0
        preds = [f.result() for f in old + new]
        assert not {p.batch_id for p in preds[:20]} & {p.batch_id for p in preds[20:]}
        rows = engine.timeline("m", last_s=None).groupby("batch_id").agg(
            rows=("rows", "sum"), batch_rows=("batch_rows", "first"))
        assert len(rows) == engine.metrics("m").batches == 7
        assert (rows["rows"] == rows["batch_rows"]).all()


def test_hot_swap_during_traffic_loses_no_request(engine):
    engine.configure("tiny", max_wait_ms=0.5)
    stop = threading.Event()
    results, errors = [], []

    def client(seed: int) -> None:
        x = np.full((1, 4), seed, np.float32)
        while not stop.is_set():
            try:
                results.append(engine.submit("tiny", x).result(WAIT_S))
            except Exception as err:  # noqa: BLE001 - the test reports any failure
                errors.append(err)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for _ in range(5):
        engine.load_model(build_demo_model("tiny"), name="tiny", replace=True)
    stop.set()
    for t in threads:
        t.join(WAIT_S)
    assert errors == [] and len(results) > 0


def test_predict_timeout_raises_clear_error(engine):
    engine.configure("mlp", max_batch_size=64, max_wait_ms=60_000)  # never fills, long wait
    # (a timeout not above max_wait: said, with what to do; an API user's idle engine was
    # told to 'raise timeout_ms or lower the load', and there was no load)
    with pytest.raises(RequestTimeoutError, match=r"waited \d+\.\d ms in the queue, past its "
                       r"timeout of 50 ms, which is not above max_wait_ms=60000 \(a batch "
                       r"waits .*give a timeout_ms above max_wait_ms, or lower max_wait_ms$"):
        engine.predict("mlp", np.zeros((1, 256), np.float32), timeout_ms=50)
    # Settled by the engine, so already counted when the caller sees the error.
    assert engine.metrics("mlp").errors_by_type == {"RequestTimeoutError": 1}
    with pytest.raises(RequestTimeoutError):  # the older spelling, in seconds
        engine.predict("mlp", np.zeros((1, 256), np.float32), timeout=0.05)
    with pytest.raises(ConfigError, match="not both"):
        engine.predict("mlp", np.zeros((1, 256), np.float32), timeout=1, timeout_ms=5)
    for bad in (0, -1, float("nan"), float("inf"), "5"):
        with pytest.raises(ConfigError, match="timeout_ms must be a positive finite"):
            engine.predict("mlp", np.zeros((1, 256), np.float32), timeout_ms=bad)


def test_close_resolves_queued_requests_and_refuses_new(engine):
    engine.configure("mlp", max_batch_size=64, max_wait_ms=60_000)
    futs = [engine.submit("mlp", np.zeros((1, 256), np.float32)) for _ in range(10)]
    engine.close()
    assert all(f.done() for f in futs)
    assert {f.result().release_reason for f in futs} == {"drain"}
    with pytest.raises(EngineClosedError):
        engine.submit("mlp", np.zeros((1, 256), np.float32))
    # a change after close() was taken and said nothing (a newcomer's notebook)
    with pytest.raises(EngineClosedError, match="the engine is closed; create a new Engine"):
        engine.configure("mlp", max_batch_size=8)
    assert engine.batch_config("mlp").max_batch_size == 64


def test_fixed_batch_model_served_row_by_row(engine):
    x = engine.sample_input("fixed-batch", rows=3, seed=1)
    pred = engine.predict("fixed-batch", x)
    np.testing.assert_allclose(pred.outputs["pooled"], x.mean(axis=(2, 3)), rtol=1e-5)
    assert not engine.model_info("fixed-batch").batchable
    # Three runs of one row, counted as such: not one batch of 3 rows the model cannot run.
    assert (pred.rows, pred.batch_rows) == (3, 1)
    snap = engine.metrics("fixed-batch")
    assert (snap.batches, snap.rows_total, snap.batch_sizes) == (3, 3, {1: 3})
    assert sum(snap.release_reasons.values()) == 3
    assert engine.counters("fixed-batch")["batch_compute_s"].keys() == {1}
    trace = engine.timeline("fixed-batch")
    assert list(trace["rows"]) == [3] and list(trace["batch_rows"]) == [1]


def test_a_row_by_row_request_that_fails_counts_the_runs_it_made(bare_engine):
    from onnx import TensorProto, helper, numpy_helper
    from tests.helpers import make_model
    table = numpy_helper.from_array(np.arange(10, dtype=np.float32).reshape(5, 2), "table")
    m = make_model([helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 1])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2])],
                   [helper.make_node("Gather", ["table", "ids"], ["y"])], initializers=[table])
    bare_engine.load_model(m.SerializeToString(), name="rows")
    assert bare_engine.model_info("rows").batch_mode == "rows"
    bare_engine.configure("rows", max_batch_size=8)
    with pytest.raises(BatchlabError):   # row 2's id is past the table: the second run fails
        bare_engine.predict("rows", np.array([[0], [9], [1], [2]], np.int64))
    snap = bare_engine.metrics("rows")
    assert (snap.error_count, snap.batches, snap.rows_total, snap.batch_sizes) == (1, 2, 2, {1: 2})


def test_sequence_of_maps_output_from_packaged_classifier(bare_engine):
    bare_engine.load_model(ORT_DATASETS / "logreg_iris.onnx", name="iris")
    x = np.array([[5.1, 3.5], [6.2, 2.9], [7.7, 3.0]], np.float32)
    pred = bare_engine.predict("iris", x)
    probs = pred.outputs["probabilities"]
    assert isinstance(probs, list) and len(probs) == 3 and isinstance(probs[0], dict)
    assert pred.outputs["label"].shape == (3,)
    with pytest.raises(InputValidationError, match=r"expects float32 \[3,2\]"):
        bare_engine.submit("iris", x[:2])


def test_real_cnn_with_fixed_batch_from_onnx_package(bare_engine):
    bare_engine.load_model(ONNX_TEST_DATA / "light" / "light_squeezenet.onnx", name="squeeze")
    pred = bare_engine.predict("squeeze", np.ones((2, 3, 224, 224), np.float32), timeout=60)
    assert pred.outputs["softmaxout_1"].shape == (2, 1000, 1, 1)


def test_same_bytes_under_two_names_share_a_session(bare_engine):
    data = build_demo_model("mlp")
    bare_engine.load_model(data, name="a")
    bare_engine.load_model(data, name="b")
    assert bare_engine._registry.models["a"].backend.session is bare_engine._registry.models["b"].backend.session
    assert len(bare_engine.cache_entries()) == 1
    assert bare_engine.evict_cache() == 1
    assert bare_engine.predict("a", np.zeros((1, 256), np.float32)).rows == 1


def test_unload(engine):
    engine.unload_model("tiny")
    with pytest.raises(ModelNotFoundError):
        engine.predict("tiny", np.ones((1, 4), np.float32))


def test_status_summarises_engine(engine):
    engine.predict("tiny", np.ones((2, 4), np.float32))
    s = engine.status()
    assert s["models"] == len(DEMO_MODELS) and s["total_requests"] == 1 and not s["closed"]


def test_model_size_limit(tmp_path):
    with Engine(EngineConfig(max_model_bytes=1024), demo_models=False) as eng:
        with pytest.raises(ModelLoadError, match="over the limit"):
            eng.load_model(build_demo_model("mlp"), name="big")


# -- warm-up ---------------------------------------------------------------------------------
def test_warmup_reports_every_batch_size_and_is_not_counted(engine):
    engine.configure("mlp", max_batch_size=24)
    assert not engine.is_warm("mlp")
    seen = []
    report = engine.warmup("mlp", iterations=3, progress=lambda d, t, b: seen.append((d, t, b)))
    assert report.batch_sizes == [1, 2, 4, 8, 16, 24]
    assert (report.frame["cold_ms"] > 0).all() and (report.frame["warm_p50_ms"] > 0).all()
    assert seen[-1] == (18, 18, 24) and len(seen) == 18
    assert engine.is_warm("mlp")
    assert engine.metrics("mlp").total_requests == 0
    engine.configure("mlp", max_batch_size=64)  # a new batch size appears: not warm any more
    assert not engine.is_warm("mlp")


def test_warmup_of_non_batchable_model(engine):
    report = engine.warmup("fixed-batch", iterations=2)
    assert report.batch_sizes == [1] and engine.is_warm("fixed-batch")
    with pytest.raises(ConfigError, match="not batchable"):
        engine.warmup("fixed-batch", iterations=2, batch_sizes=[4])
    with pytest.raises(ConfigError, match="iterations must be an int >= 2"):
        engine.warmup("mlp", iterations=1)


@pytest.mark.parametrize("sizes, words", [
    (8, "batch_sizes must be a list such as"), ([0], "got 0 in it"), (["8"], "got '8' in it"),
    ([2.5], "got 2.5 in it"), ([True], "got True in it"), ([], "at least one batch size")])
def test_warmup_names_batch_sizes_it_cannot_run(engine, sizes, words):
    # (8 was "TypeError: 'int' object is not iterable"; [0] said "rows must be ...")
    with pytest.raises(ConfigError, match=re.escape(words)):
        engine.warmup("mlp", iterations=2, batch_sizes=sizes)
    report = engine.warmup("tiny", iterations=2, batch_sizes=[np.int64(3), 1])
    assert report.batch_sizes == [3, 1] and type(report.batch_sizes[0]) is int


@pytest.mark.parametrize("limit", [-1, 0, "5", float("inf"), float("nan"), True])
def test_warmup_refuses_a_time_limit_that_is_not_one(engine, limit):
    with pytest.raises(ConfigError, match="time_limit_s must be a number >= 0.01"):
        engine.warmup("tiny", iterations=2, time_limit_s=limit)   # (-1 and inf were taken)


def test_closing_the_engine_stops_a_warmup_going_on():
    """A server asked to stop (SIGTERM) waited for a warm-up of 10**9 runs: closing the
    engine stops one going on, which says it was cancelled."""
    eng = Engine(EngineConfig(demo_models=False))
    eng.load_model(build_demo_model("tiny"), name="tiny")
    running, said = threading.Event(), []

    def warm() -> None:
        try:
            eng.warmup("tiny", iterations=10**9,
                       progress=lambda done, total, bs: done >= 20 and running.set())
        except BatchlabError as err:
            said.append(str(err))

    t = threading.Thread(target=warm)
    t.start()
    assert running.wait(WAIT_S)
    eng.close()
    t.join(WAIT_S)
    assert not t.is_alive() and said == [
        "the engine closed during the warm-up of 'tiny'; create a new Engine to warm it up"], said
    with pytest.raises(EngineClosedError):   # (on a closed engine it ran to its end)
        eng.warmup("tiny", iterations=2)


def test_a_warmup_that_meets_close_before_it_runs_does_not_run():
    """A close between a warm-up's checks and its runs came before its stop was hooked to
    close: it ran until its time limit (a reviewer). It is refused instead."""
    eng = Engine(EngineConfig(demo_models=False))
    eng.load_model(build_demo_model("tiny"), name="tiny")
    checked = eng._ns.check_inputs_known
    eng._ns.check_inputs_known = lambda *a: (checked(*a), eng.close())
    with pytest.raises(EngineClosedError):
        eng.warmup("tiny", iterations=10**9, time_limit_s=60)


def test_a_warmup_past_its_time_limit_says_whether_a_run_was_going_on():
    """10**9 runs stopped by their time limit were told "a run did not finish; the model
    may be hung": runs had finished, so it says how many, and what to give instead."""
    from core.engine.warmup import _RunGuard
    guard = _RunGuard("m", None, None)
    guard.close()
    guard.tripped, guard.limit_s = "time", 2.0
    with pytest.raises(BatchlabError, match=r"reached its time limit of 2 s after 1,500 of "
                                            r"its 1,000,000,000 runs: give fewer iterations"):
        guard.check((1500, 10**9))
    with pytest.raises(BatchlabError, match=r"\(a run did not finish\); the model may be hung"):
        guard.check((0, 10**9))


def test_warm_state_counts_the_batch_sizes_traffic_ran(engine):
    """Warm means every size warm-up would run has run on this session, by warm-up or by
    traffic (issue 14: 'not warm for max_batch_size=30' after 45k served requests)."""
    engine.configure("tiny", max_batch_size=4, max_wait_ms=0.0)
    assert not engine.is_warm("tiny")
    for rows in (1, 2, 4):  # one request at a time: each batch holds exactly its rows
        engine.predict("tiny", np.ones((rows, 4), np.float32))
    assert engine.warm_sizes("tiny") == [1, 2, 4] and engine.is_warm("tiny")
    engine.configure("tiny", max_batch_size=8)
    assert not engine.is_warm("tiny")  # 8 has not run yet
    # A model fixed at batch 1 runs one row at a time: warm once a single row has run.
    assert not engine.is_warm("fixed-batch")
    engine.predict("fixed-batch", engine.sample_input("fixed-batch"))
    assert engine.warm_sizes("fixed-batch") == [1] and engine.is_warm("fixed-batch")


def test_fmt_ranges_and_compact_numbers():
    from core.ui.fmt import fmt_num, fmt_pct, fmt_ranges
    assert fmt_ranges([1, 2, 3, 5, 8, 9]) == "1-3, 5, 8-9" and fmt_ranges([]) == ""
    assert [fmt_num(v) for v in (9999, 17564, 643_210, 924_812, 1_234_567)] == \
        ["9,999", "17.6k", "643.2k", "924.8k", "1.2M"]
    assert fmt_pct(0.00021) == "0.02%" and fmt_pct(0) == "0%"
    assert fmt_pct(5 / 200_000) == "<0.01%"   # not "0.00%" beside 5 errors


def test_what_a_notebook_hands_the_engine_is_taken_or_refused_in_words(bare_engine, tmp_path):
    """A newcomer from a notebook (helper): an array given to set_inputs was refused
    ("needs filename= with the bytes"), a CSV's text given as a str failed as "File name
    too long" echoing the whole CSV, a ModelProto was refused, submit(check=5) failed
    later as a TypeError counted as an error, and predict took no check=."""
    import onnx
    from core import ConfigError
    engine = bare_engine
    proto = onnx.load_from_string(build_demo_model("tiny"))
    assert engine.load_model(proto, name="t").name == "t"          # a ModelProto
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert engine.set_inputs("t", x) == "real: array.npy (3 samples)"
    assert engine.set_inputs("t", {"x": x[:2]}, label="two rows") == "real: two rows (2 samples)"
    with pytest.raises(ConfigError, match=r"reads a str as a path, and this one holds text "
                                          r"\('1,2,3,4\\n.*text.encode\(\)"):
        engine.set_inputs("t", "1,2,3,4\n5,6,7,8\n", filename="x.csv")
    assert "2 samples" in engine.set_inputs("t", b"1,2,3,4\n5,6,7,8\n", filename="x.csv")
    with pytest.raises(ConfigError, match="arrays of numbers"):
        engine.set_inputs("t", np.array([object()] * 4).reshape(1, 4))
    with pytest.raises(ConfigError, match="takes a path, a file's bytes, a numpy array"):
        engine.set_inputs("t", [[1, 2, 3, 4]])
    before = engine.counters("t")["total_requests"]
    with pytest.raises(ConfigError, match="check must be a function of the prediction"):
        engine.submit("t", x[:1], check=5)
    assert engine.counters("t")["total_requests"] == before       # nothing queued
    seen = []
    pred = engine.predict("t", x[:1], check=lambda p: seen.append(p.rows))
    assert seen == [1] and pred.rows == 1


def test_odd_timeouts_and_priorities_are_said_as_given(engine):
    """From an adversary: a timeout of 1e308 s was refused as 'timeout_ms=inf', a 1e-300 ms
    one as 'a timeout of 0 ms', and a 400-digit priority was echoed whole."""
    x = np.zeros((1, 256), np.float32)
    with pytest.raises(ConfigError, match=r"timeout must be a positive number of seconds, at "
                                          r"most 86,400 \(a day\), got 1e\+308"):
        engine.predict("mlp", x, timeout=1e308)
    with pytest.raises(InputValidationError) as err:
        engine.submit("mlp", x, priority=10 ** 400)
    assert len(str(err.value)) < 200 and "got 1000000000" in str(err.value)
    with pytest.raises(ConfigError, match=r"from 0.001 \(a microsecond\) to 86,400,000 "
                                          r"\(a day\), got 1e-300"):
        engine.submit("mlp", x, timeout_ms=1e-300)
    assert engine.predict("mlp", x, timeout_ms=0.001 * 1e6).rows == 1



def test_an_arguments_mistake_is_counted_the_same_whichever_method_is_called(engine):
    """submit(timeout_ms=-5) was counted as the model's failed request and
    predict(timeout_ms=-5) was not, nor submit(priority=7) (an adversary): a mistake in the
    call's arguments is refused before the request exists, by every method; a wrong input
    is the request's own, counted by all."""
    from core import ConfigError, InputValidationError
    x = engine.sample_input("tiny")
    for call in (lambda: engine.submit("tiny", x, timeout_ms=-5),
                 lambda: engine.predict("tiny", x, timeout_ms=-5),
                 lambda: engine.submit("tiny", x, timeout_ms=float("nan"))):
        with pytest.raises(ConfigError, match="timeout_ms must be"):
            call()
    with pytest.raises(InputValidationError):
        engine.submit("tiny", x, priority=7)
    assert engine.counters("tiny")["total_requests"] == 0
    for call in (lambda: engine.submit("tiny", np.zeros((1, 3), np.float32)),
                 lambda: engine.predict("tiny", np.zeros((1, 3), np.float32))):
        with pytest.raises(InputValidationError):
            call()
    assert engine.counters("tiny")["error_count"] == 2
