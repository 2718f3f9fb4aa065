"""Model loading, refusal of bad files, inspection and the session cache."""

from __future__ import annotations

import hashlib
import io
import time
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from core.config import SessionConfig
from core.models import DEMO_MODELS, build_demo_model
from core.errors import ConfigError, ModelLoadError
from core.models import SessionCache, available_providers, load_model_bytes, read_model_source
from tests.helpers import (ONNX_TEST_DATA, ORT_DATASETS, embedding_model, identity_model,
                           make_model)

MLP = build_demo_model("mlp")


def load(data: bytes, **kw):
    return load_model_bytes(data, "m", **kw)


# -- refusals ------------------------------------------------------------------------------
@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "PNG image"),
    (b"%PDF-1.4 ...", "PDF"),
    (b"{\"not\": \"onnx\"}", "JSON or text"),
])
def test_refuses_non_onnx_files(data, message):
    with pytest.raises(ModelLoadError, match=message):
        load(data)


def test_refuses_zip_renamed_onnx():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("model.onnx", MLP)
    with pytest.raises(ModelLoadError, match="zip archive"):
        load(buf.getvalue())


def test_refuses_random_bytes():
    rng = np.random.default_rng(0)
    for _ in range(20):
        with pytest.raises(ModelLoadError):
            load(rng.integers(1, 256, 300, dtype=np.uint8).tobytes())


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_refuses_truncated_model(fraction):
    with pytest.raises(ModelLoadError, match="not a valid ONNX model|not an ONNX model|"
                                             "ONNX validation|could not create"):
        load(MLP[: int(len(MLP) * fraction)])


def test_refuses_external_data_reference():
    model = onnx.load_model_from_string(build_demo_model("tiny"))
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="../../etc/passwd")
    with pytest.raises(ModelLoadError, match=r"external file \('\.\./\.\./etc/passwd'\)"):
        load(model.SerializeToString())


def _external(name: str, location: str, n: int) -> onnx.TensorProto:
    t = TensorProto(name=name, data_type=TensorProto.UINT8, dims=[n],
                    data_location=TensorProto.EXTERNAL)
    for k, v in (("location", location), ("offset", "0"), ("length", str(n))):
        t.external_data.add(key=k, value=v)
    return t


def _reads_a_file(kind: str, location: str, n: int = 16) -> bytes:
    """A model whose one output is the first n bytes of ``location`` (relative: ONNX Runtime
    resolved it in the working directory), held where the old check did not look."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, [n])
    opset = [helper.make_opsetid("", 17)]
    if kind == "function":   # a model-local function's Constant
        body = helper.make_node("Constant", [], ["c"], value=_external("c", location, n))
        fn = helper.make_function("adv", "Leak", ["a"], ["c"], [body], opset)
        graph = helper.make_graph([helper.make_node("Leak", ["x"], ["y"], domain="adv")],
                                  "g", [x], [y])
        model = helper.make_model(graph, opset_imports=opset + [helper.make_opsetid("adv", 1)],
                                  functions=[fn])
    elif kind == "default":   # a function's attribute default, its Constant's value
        body = helper.make_node("Constant", [], ["c"])
        body.attribute.add(name="value", ref_attr_name="v", type=onnx.AttributeProto.TENSOR)
        fn = helper.make_function("adv", "Leak", ["a"], ["c"], [body], opset)
        fn.attribute_proto.append(helper.make_attribute("v", _external("d", location, n)))
        graph = helper.make_graph([helper.make_node("Leak", ["x"], ["y"], domain="adv")],
                                  "g", [x], [y])
        model = helper.make_model(graph, opset_imports=opset + [helper.make_opsetid("adv", 1)],
                                  functions=[fn])
    elif kind == "training":   # a training graph's initializer
        graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.UINT8)],
                                  "g", [x], [y])
        model = helper.make_model(graph, opset_imports=opset)
        model.training_info.add().initialization.initializer.append(_external("t", location, n))
    else:                    # a Constant's sparse_value
        sparse = helper.make_sparse_tensor(
            _external("v", location, n), helper.make_tensor("i", TensorProto.INT64, [n],
                                                             list(range(n))), [n])
        graph = helper.make_graph([helper.make_node("Constant", [], ["y"], sparse_value=sparse)],
                                  "g", [x], [y])
        model = helper.make_model(graph, opset_imports=opset)
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("kind", ["function", "sparse", "default", "training"])
def test_refuses_external_data_wherever_a_model_holds_it(kind, tmp_path, monkeypatch):
    """An adversary's upload served the first bytes of README.md from the server's working
    directory: the check walked the graph, not the model's functions or sparse attributes."""
    (tmp_path / "secret.txt").write_bytes(b"the server's own file, not the model's")
    monkeypatch.chdir(tmp_path)
    data = _reads_a_file(kind, "secret.txt")
    with pytest.raises(ModelLoadError, match=r"external file \('secret\.txt'\)"):
        load(data)


def test_a_session_finds_no_external_data_in_the_working_directory(tmp_path, monkeypatch):
    """Past the checks (a place they still miss), ONNX Runtime looks for external data in a
    folder that stays empty, not in the working directory."""
    from core.models.session import create_session
    (tmp_path / "secret.txt").write_bytes(b"the server's own file, not the model's")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match="External data path validation failed"):
        create_session(_reads_a_file("function", "secret.txt"), SessionConfig())


def test_refuses_checker_failure():
    m = make_model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                   [helper.make_node("NoSuchOp", ["x"], ["y"])])
    with pytest.raises(ModelLoadError, match="ONNX validation|could not create"):
        load(m.SerializeToString())


def test_refuses_model_without_inputs():
    m = make_model([], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                   [helper.make_node("Constant", [], ["y"],
                                     value=numpy_helper.from_array(np.ones(1, np.float32)))])
    with pytest.raises(ModelLoadError, match="no inputs"):
        load(m.SerializeToString())


def test_refuses_string_inputs():
    with pytest.raises(ModelLoadError, match="cannot feed"):
        load(identity_model(TensorProto.STRING))


def test_an_upload_refused_for_its_input_type_says_that_not_memory():
    """Through the trial run in a child process the refusal read "its session could not
    be created (here, with the memory budget as the limit): ModelLoadError: input 's' has
    type tensor(string)...": a type refusal worded as a memory problem."""
    from core import Engine, EngineConfig
    with Engine(EngineConfig(demo_models=False, probe_models=True)) as engine:
        with pytest.raises(ModelLoadError) as err:
            engine.load_model(identity_model(TensorProto.STRING), name="str")
    words = str(err.value)
    assert words.startswith("model 'str': input 'x' has type tensor(string), which the "
                            "engine cannot feed"), words
    assert "memory budget" not in words and "trial run" not in words
    # an input whose name has "session" in it was still worded as a session failure
    named = make_model([helper.make_tensor_value_info("session_id", TensorProto.STRING, ["N"])],
                       [helper.make_tensor_value_info("y", TensorProto.STRING, ["N"])],
                       [helper.make_node("Identity", ["session_id"], ["y"])])
    with Engine(EngineConfig(demo_models=False, probe_models=True)) as engine:
        with pytest.raises(ModelLoadError, match="^model 's': input 'session_id' has type "
                                                 "tensor.string., which the engine cannot feed"):
            engine.load_model(named.SerializeToString(), name="s")


def test_refuses_absurd_dimensions():
    with pytest.raises(ModelLoadError, match="absurd shape|could not create"):
        load(identity_model(shape=["N", 2**40]))


def test_refuses_session_failure():
    # Valid for the checker, but Add of [N,3] and [N,4] cannot be typed by onnxruntime.
    m = make_model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                   [helper.make_node("Add", ["x", "w"], ["y"])],
                   [numpy_helper.from_array(np.ones((5, 4), np.float32), "w")])
    with pytest.raises(ModelLoadError, match="could not create a session|ONNX validation"):
        load(m.SerializeToString())


def test_refuses_unavailable_provider():
    if "cuda" in available_providers():
        pytest.skip("CUDA is available here; nothing to refuse")
    with pytest.raises(ModelLoadError, match="'cuda' is not available"):
        load(MLP, options=SessionConfig(provider="cuda"))


def test_path_source_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        read_model_source(tmp_path / "missing.onnx", 10**9)
    with pytest.raises(ModelLoadError, match="not a file"):
        read_model_source(tmp_path, 10**9)
    big = tmp_path / "big.onnx"
    big.write_bytes(b"x" * 2048)
    with pytest.raises(ModelLoadError, match="over the limit"):
        read_model_source(big, 1024)
    with pytest.raises(ModelLoadError, match="a file path, its bytes or an onnx.ModelProto, got int"):
        read_model_source(12345, 1024)  # type: ignore[arg-type]


# -- inspection ------------------------------------------------------------------------------
def test_inspects_demo_mlp():
    info = load(MLP).info
    assert [i.name for i in info.inputs] == ["x"]
    assert info.inputs[0].shape == ("N", 256) and str(info.inputs[0].dtype) == "float32"
    assert info.outputs[0].shape == ("N", 10)
    assert info.batchable and info.batch_mode == "dynamic" and "'N'" in info.batch_reason
    assert info.sha256 == hashlib.sha256(MLP).hexdigest() and info.size_bytes == len(MLP)
    assert info.opset[""] == 17 and info.ir_version == 8 and "batchlab" in info.producer
    assert info.dynamic_dims == ("N",)
    row = info.to_dict()
    assert row["inputs"] == "x: float32 [N,256]" and row["batchable"] is True


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_demo_models_are_deterministic_and_load(name):
    assert build_demo_model(name) == build_demo_model(name)
    info = load(build_demo_model(name)).info
    assert info.batchable == (name != "fixed-batch")


def test_fixed_batch_one_is_not_batchable_with_reason():
    info = load(build_demo_model("fixed-batch")).info
    assert info.batch_mode == "rows" and not info.batchable
    assert "fixed at 1" in info.batch_reason


def test_packaged_sklearn_classifier_fixed_rows_and_sequence_output():
    """onnxruntime ships a converted scikit-learn model: input fixed at [3,2], ZipMap output."""
    info = load((ORT_DATASETS / "logreg_iris.onnx").read_bytes()).info
    assert info.batch_mode == "exact" and info.fixed_rows == 3
    assert "fixed at 3" in info.batch_reason
    probs = next(o for o in info.outputs if o.name == "probabilities")
    assert not probs.is_tensor and probs.dtype is None and "seq(map" in probs.type


def test_packaged_squeezenet_is_fixed_batch_one():
    data = (ONNX_TEST_DATA / "light" / "light_squeezenet.onnx").read_bytes()
    info = load(data).info
    assert info.batch_mode == "rows" and info.inputs[0].shape == (1, 3, 224, 224)
    assert info.opset[""] == 9


def test_run_matches_reference_output_of_packaged_model():
    data = (ONNX_TEST_DATA / "light" / "light_squeezenet.onnx").read_bytes()
    model = load(data)
    ref = onnx.TensorProto()
    ref.ParseFromString((ONNX_TEST_DATA / "light" / "light_squeezenet_output_0.pb").read_bytes())
    expected = numpy_helper.to_array(ref)
    x = np.ones((1, 3, 224, 224), np.float32)  # the light models' reference input is ones
    got = model.run([x])[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)


# -- session cache -------------------------------------------------------------------------
def test_same_bytes_share_one_session():
    cache = SessionCache(capacity=4)
    a = load(MLP, cache=cache)
    b = load(MLP, cache=cache)
    assert a.session is b.session and cache.hits == 1 and cache.misses == 1
    c = load(MLP, cache=cache, options=SessionConfig(graph_optimization="basic"))
    assert c.session is not a.session  # other options: another session


def test_a_session_made_without_constant_folding_is_its_own_in_the_cache():
    """Whether ONNX Runtime may fold a model's constants is part of its cached session's key
    (a reviewer: decided by the bytes today, so it never differed; a session made with
    folding left off must never be handed to a load that may fold, or the other way)."""
    cache = SessionCache(capacity=4)
    data = build_demo_model("tiny")
    off = cache.get_or_create(data, SessionConfig(), fold=False)
    on = cache.get_or_create(data, SessionConfig(), fold=True)
    assert on is not off and cache.misses == 2
    assert cache.get_or_create(data, SessionConfig(), fold=False) is off and cache.hits == 1
    sha = hashlib.sha256(data).hexdigest()
    assert cache.held_bytes(sha, SessionConfig(), fold=False) is not None
    assert [e.sha256 for e in cache.entries()] == [sha, sha]


def test_cache_is_bounded_lru_and_evictable():
    cache = SessionCache(capacity=2)
    models = [build_demo_model(n) for n in ("tiny", "clf-v1", "two-input")]
    s_tiny = load(models[0], cache=cache).session
    load(models[1], cache=cache)
    load(models[0], cache=cache)  # tiny is now most recently used
    load(models[2], cache=cache)  # evicts clf-v1, the least recently used
    shas = [e.sha256 for e in cache.entries()]
    assert len(cache) == 2
    assert hashlib.sha256(models[1]).hexdigest() not in shas
    assert shas[0] == hashlib.sha256(models[2]).hexdigest()  # most recent first
    assert load(models[0], cache=cache).session is s_tiny
    assert cache.evict(hashlib.sha256(models[0]).hexdigest()[:10]) == 1
    assert load(models[0], cache=cache).session is not s_tiny
    assert cache.evict() == 2 and len(cache) == 0


def test_cache_capacity_validated():
    with pytest.raises(ValueError, match="capacity must be an int >= 1"):
        SessionCache(0)


def test_generated_ids_stay_inside_the_models_own_tables():
    """Generated integers were 0-9 whatever the model: BERT's token types (a table of 2) and
    any embedding of fewer than 10 rows failed every generated request, warm-up included
    ('indices element out of data bounds'). Gather's indices into a table of the model's own
    are now drawn below the table's length."""
    from core.models import generated_values, sample_input
    m = load_model_bytes(embedding_model(), "bert")
    ids, types = m.info.inputs
    assert (ids.index_bound, types.index_bound) == (100, 2)
    x = sample_input(m.info, rows=64, seed=3)
    assert x["token_type_ids"].max() == 1 and x["token_type_ids"].min() == 0
    assert x["input_ids"].max() >= 10 and x["input_ids"].max() < 100   # the whole table
    assert m.run([x["input_ids"], x["token_type_ids"]])[0].shape == (64, 8, 4)
    assert generated_values(types) == "integers 0 to 1 (indices into a table of 2 rows)"


def test_index_bounds_take_the_shortest_table_through_value_keeping_ops():
    from core.models import generated_values
    a = numpy_helper.from_array(np.ones((7, 3), np.float32), "a")
    b = numpy_helper.from_array(np.ones((2, 3), np.float32), "b")    # axis 1: 3 columns
    nodes = [helper.make_node("Gather", ["a", "ids"], ["p"], axis=0),
             helper.make_node("Gather", ["b", "ids"], ["q"], axis=-1),
             helper.make_node("Identity", ["other"], ["o"]),
             helper.make_node("Gather", ["a", "o"], ["r"], axis=0)]
    vi = helper.make_tensor_value_info
    m = make_model([vi("ids", TensorProto.INT64, ["N"]), vi("other", TensorProto.INT64, ["N"])],
                   [vi("p", TensorProto.FLOAT, None), vi("q", TensorProto.FLOAT, None),
                    vi("r", TensorProto.FLOAT, None)], nodes, [a, b], opset=13)
    ids, other = load_model_bytes(m.SerializeToString(), "two").info.inputs
    assert ids.index_bound == 3                  # the shorter of 7 rows and 3 columns
    assert other.index_bound == 7                # through an Identity first: followed
    plus = load_model_bytes(_ids_model(1000, [helper.make_node("Add", ["ids", "ids"], ["i"]),
                                              helper.make_node("Gather", ["table", "i"],
                                                               ["out1"])]), "plus").info
    assert plus.inputs[0].index_bound is None    # an Add: not followed, nor the direct 1,000
    assert generated_values(plus.inputs[0]) == "integers 0 to 9"
    mlp = load_model_bytes(build_demo_model("mlp"), "mlp").info.inputs[0]
    assert mlp.index_bound is None and generated_values(mlp) == "standard normal"


def test_an_embedding_warms_and_serves_generated_load(engine):
    engine.load_model(embedding_model(), name="bert", probe=False)
    engine.configure("bert", max_batch_size=8, max_wait_ms=1.0)
    report = engine.warmup("bert", iterations=2)                # failed at batch size 1
    assert report.batch_sizes == [1, 2, 4, 8]
    futures = [engine.submit("bert", engine.sample_input("bert", rows=2, seed=s))
               for s in range(20)]
    assert all(f.result(timeout=30)["y"].shape == (2, 8, 4) for f in futures)
    assert engine.metrics("bert").error_count == 0


def _ids_model(table_rows: int, extra: list | None = None, extra_tables: list | None = None,
               ids_type: int = TensorProto.INT64) -> bytes:
    """ids [N] into a table of ``table_rows`` rows (Gather on the input itself), plus
    ``extra`` nodes that may use the ids otherwise."""
    table = numpy_helper.from_array(np.ones((table_rows, 3), np.float32), "table")
    vi = helper.make_tensor_value_info
    outs = [vi("y", TensorProto.FLOAT, None)] + [vi(o, TensorProto.FLOAT, None)
                                               for n in extra or () for o in n.output
                                               if o.startswith("out")]
    return make_model([vi("ids", ids_type, ["N"])], outs,
                      [helper.make_node("Gather", ["table", "ids"], ["y"])] + (extra or []),
                      [table] + (extra_tables or []), opset=13).SerializeToString()


def test_ids_also_used_otherwise_are_drawn_as_before_unless_the_table_is_smaller(engine):
    """An adversary: ids into a table of 1,000 rows and, through an Identity (or inside an
    If's branch), into one of 50 were drawn up to 999 and failed every run, where 0-9 (as
    before) served: now 0-49 (an Identity or a Cast is followed, a branch's Gather read),
    and 0-9 through an Add (not followed). A table of no elements says nothing (3e9 x 0
    rows, int32 ids: numpy's 'high is out of bounds for int32')."""
    small = numpy_helper.from_array(np.ones((50, 3), np.float32), "small")
    via = [helper.make_node("Identity", ["ids"], ["i"]),
           helper.make_node("Gather", ["small", "i"], ["out1"])]
    branch = helper.make_graph([helper.make_node("Gather", ["small", "ids"], ["b"])], "then",
                               [], [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    cond = numpy_helper.from_array(np.array(True), "cond")
    in_if = [helper.make_node("If", ["cond"], ["out1"], then_branch=branch, else_branch=branch)]
    one = numpy_helper.from_array(np.array(1, np.int64), "one")
    plus = [helper.make_node("Add", ["ids", "one"], ["i"]),
            helper.make_node("Gather", ["small", "i"], ["out1"])]
    for name, data, bound in (("plus", _ids_model(1000, plus, [small, one]), None),  # 0-9
                              ("via", _ids_model(1000, via, [small]), 50),
                              ("in-if", _ids_model(1000, in_if, [small, cond]), 50)):
        engine.load_model(data, name=name, probe=False)
        assert engine.model_info(name).inputs[0].index_bound == bound, name
        assert engine.warmup(name, iterations=2).batch_sizes          # and they serve
    # the same with the table of the Gather on the ids under 10: that bound holds anyway
    engine.load_model(_ids_model(7, plus, [small, one]), name="seven", probe=False)
    assert engine.model_info("seven").inputs[0].index_bound == 7
    empty = numpy_helper.from_array(np.zeros((3_000_000_000, 0), np.float32), "table")
    vi = helper.make_tensor_value_info
    m = make_model([vi("ids", TensorProto.INT32, ["N"])], [vi("y", TensorProto.FLOAT, None)],
                   [helper.make_node("Gather", ["table", "ids"], ["y"])], [empty], opset=13)
    engine.load_model(m.SerializeToString(), name="empty")
    assert engine.model_info("empty").inputs[0].index_bound is None
    assert engine.sample_input("empty", rows=4).max() < 10
    from core.models import TensorSpec, generated_values
    wide = TensorSpec("i", "tensor(int32)", np.dtype("int32"), ("N",), index_bound=2**40)
    assert generated_values(wide).startswith("integers 0 to 2,147,483,647 ")


def test_ab_traffic_sends_ids_every_arm_can_take(engine):
    """An adversary: generated load to an experiment was drawn for arm A (a table of 1,000
    rows): arm B (500 rows) failed half the requests, and the verdict blamed B."""
    from core.models import narrowed
    engine.load_model(_ids_model(1000), name="v1", probe=False)
    engine.load_model(_ids_model(500), name="v2", probe=False)
    x = engine.sample_input("v1", rows=2000, valid_for=["v2"])
    assert x.max() < 500 and x.max() >= 400                 # below B's table, all of it
    assert engine.sample_input("v1", rows=2000).max() >= 500  # alone: its own table
    i1, i2 = engine.model_info("v1"), engine.model_info("v2")
    assert narrowed(i1, [i2]).inputs[0].index_bound == 500
    assert narrowed(i2, [i1]).inputs[0].index_bound == 500
    engine.create_ab("exp", a="v1", b="v2")
    engine.start_traffic("exp", rate_rps=400, duration_s=0.5, seed=0)
    status = engine.wait_traffic("exp", timeout_s=60)
    assert status.sent > 50 and status.failed == 0 and status.refused == 0, status
    assert engine.metrics("v2").success_count > 0 and engine.metrics("v2").error_count == 0
    # warm-up with another model's real inputs: same interface, tables of other lengths
    # (inputs_of compared the specs whole, the tables' lengths with them: refused)
    engine.load_model(_ids_model(2000), name="v3", probe=False)
    assert engine.warmup("v3", iterations=2, inputs_of="v1").batch_sizes    # generated
    engine.load_model(_ids_model(5), name="v5", probe=False)       # v1's generated, narrowed
    assert engine.warmup("v5", iterations=2, inputs_of="v1").batch_sizes
    buf = io.BytesIO()
    np.save(buf, np.array([1, 2, 3, 700], np.int64))
    engine.set_inputs("v1", buf.getvalue(), filename="ids.npy")
    # a reviewer (helper): A's real ids past B's table went to B (half its requests failed),
    # and into a warm-up (ONNX Runtime's error mid-run): said before anything is sent
    with pytest.raises(ConfigError, match=r"arm A's real inputs \(real: ids.npy \(4 samples\)"
                       r"\) are sent to both arms, and arm B, 'v2', cannot take them: input "
                       r"'ids' has 1 value \(e.g. 700\) past the table of 500 rows"):
        engine.start_traffic("exp", rate_rps=100, duration_s=0.2)
    with pytest.raises(ConfigError, match=r"warm-up of 'v2' with the real inputs of 'v1': "
                       r"input 'ids' has 1 value \(e.g. 700\)"):
        engine.warmup("v2", iterations=2, inputs_of="v1")
    buf = io.BytesIO()
    np.save(buf, np.array([1, 2, 3], np.int64))
    engine.set_inputs("v1", buf.getvalue(), filename="ids.npy")
    assert engine.warmup("v2", iterations=2, inputs_of="v1").batch_sizes    # v1's real ids
    engine.start_traffic("exp", rate_rps=100, duration_s=0.2)
    done = engine.wait_traffic("exp", timeout_s=60)
    assert done.sent > 0 and done.succeeded == done.sent and done.refused == 0, done


def test_a_model_whose_trial_run_refuses_generated_ids_loads_and_says_why(engine):
    """A newcomer (helper): ids through an Add into a table of 2 rows (not followed) failed
    the load's trial run on generated ids 0-9, and the model was refused with ONNX Runtime's
    words: it could not be given the real inputs that would serve it. The child runs it
    again with every integer input 0 (a row of any table): it loads, saying why and what to
    do. Other trial-run failures still refuse, before any session is made here."""
    two = numpy_helper.from_array(np.ones((2, 3), np.float32), "two")
    zero = numpy_helper.from_array(np.array(0, np.int64), "zero")
    vi = helper.make_tensor_value_info
    m = make_model([vi("ids", TensorProto.INT64, ["N"])], [vi("y", TensorProto.FLOAT, None)],
                   [helper.make_node("Add", ["ids", "zero"], ["i"]),
                    helper.make_node("Gather", ["two", "i"], ["y"])], [two, zero], opset=13)
    info = engine.load_model(m.SerializeToString(), name="types", probe=True)
    assert info.inputs[0].index_bound is None
    assert any(w.startswith("its trial run could not use generated inputs: ONNX Runtime "
                            "refused them (InvalidArgument:") and "so it ran with every "
               "integer input 0. It may take" in w and "give it real inputs" in w
               for w in info.warnings), info.warnings
    assert engine.model_info("types").warnings == info.warnings
    # its trial did run (ids 0), in the child, and measured it
    trial = engine.memory_profile("types")
    assert trial["error"].isna().all() and trial["run_ms"].notna().all(), trial
    assert trial["note"].iloc[0].startswith("ONNX Runtime refused them")
    assert "inclusive range [-2,1]" in trial["note"].iloc[0]      # (the end kept: the range)
    # a newcomer (helper): traffic to it started, and 94 % of it failed: refused up front
    with pytest.raises(ConfigError, match=r"'types' refused generated inputs in its trial "
                       r"run \(ONNX Runtime refused them.*give 'types' real inputs first"):
        engine.start_traffic("types", rate_rps=50, duration_s=0.2)
    buf = io.BytesIO()
    np.save(buf, np.array([0, 1, 1], np.int64))
    engine.set_inputs("types", buf.getvalue(), filename="types.npy")
    assert engine.warmup("types", iterations=2).batch_sizes           # with its real ids
    engine.start_traffic("types", rate_rps=50, duration_s=0.2)
    assert engine.wait_traffic("types", timeout_s=60).failed == 0
    # a float model failing its run the same way is still refused (not ids: a broken model)
    bad = make_model([vi("x", TensorProto.FLOAT, ["N", 3])], [vi("y", TensorProto.FLOAT, None)],
                     [helper.make_node("Reshape", ["x", "shape"], ["y"])],
                     [numpy_helper.from_array(np.array([7], np.int64), "shape")])
    cached = len(engine.cache_entries())
    with pytest.raises(ModelLoadError, match="failed its trial run"):
        engine.load_model(bad.SerializeToString(), name="broken", probe=True)
    assert len(engine.cache_entries()) == cached      # (no session made here for it)
    # nor one with an integer input whose run fails with ids 0 too (not ids: broken)
    m = make_model([vi("ids", TensorProto.INT64, ["N"]), vi("x", TensorProto.FLOAT, ["N", 3])],
                   [vi("y", TensorProto.FLOAT, None)],
                   [helper.make_node("Reshape", ["x", "shape"], ["y"])],
                   [numpy_helper.from_array(np.array([7], np.int64), "shape")])
    with pytest.raises(ModelLoadError, match="failed its trial run"):
        engine.load_model(m.SerializeToString(), name="broken2", probe=True)
    assert len(engine.cache_entries()) == cached


def test_real_ids_past_the_models_table_are_refused_when_given(engine):
    """A newcomer (helper): token types up to 6 for a table of 2 rows were taken as real
    inputs, and every request sent from them then failed. Said when they are given; a hot
    swap to a smaller table drops them (generated inputs again)."""
    from core.errors import InputValidationError
    engine.load_model(embedding_model(), name="bert", probe=False)
    ids = np.zeros((4, 8), np.int64)
    types = np.zeros((4, 8), np.int32)
    types[2, 3], types[3, 0] = 6, -3
    buf = io.BytesIO()
    np.savez(buf, input_ids=ids, token_type_ids=types)
    with pytest.raises(InputValidationError, match=r"bad.npz: input 'token_type_ids' has 2 "
                       r"values \(e.g. 6\) past the table of 2 rows it indexes in the model: "
                       r"give ids from 0 to 1"):
        engine.set_inputs("bert", buf.getvalue(), filename="bad.npz")
    types[2, 3], types[3, 0] = 1, -2                # (Gather takes -2 to 1 for 2 rows)
    ids[:, 0] = 99
    buf = io.BytesIO()
    np.savez(buf, input_ids=ids, token_type_ids=types)
    assert engine.set_inputs("bert", buf.getvalue(), filename="ok.npz").startswith("real")
    assert engine.warmup("bert", iterations=2).batch_sizes
    engine.load_model(embedding_model(word_rows=50), name="bert", replace=True, probe=False)
    assert engine.input_source("bert").startswith("generated")      # 99 is past 50 rows


def test_index_bounds_in_scopes_order_and_casts():
    """A reviewer (helper), each drawing ids that failed where 0-9 served: ids leaving an If
    branch (an Identity as its output) into a table of 50 outside; a branch's own table of
    2,000 rows named like the outer one of 50; nodes listed out of the run's order; ids cast
    through float16 (4,095 rounds to 4,096)."""
    from core.models.ids import index_bounds
    from core.models.sampling import GENERATED_INT_HIGH as LOW
    vi = helper.make_tensor_value_info
    big = numpy_helper.from_array(np.ones((1000, 3), np.float32), "big")
    small = numpy_helper.from_array(np.ones((50, 3), np.float32), "small")
    cond = numpy_helper.from_array(np.array(True), "cond")
    ids = [vi("ids", TensorProto.INT64, ["N"])]

    def graph(nodes, inits, outs=("y",)):
        return helper.make_graph(nodes, "g", ids, [vi(o, TensorProto.FLOAT, None) for o in outs],
                                 initializer=inits)

    leave = helper.make_graph([helper.make_node("Identity", ["ids"], ["o"])], "b", [],
                              [vi("o", TensorProto.INT64, None)])
    g = graph([helper.make_node("Gather", ["big", "ids"], ["y"]),
               helper.make_node("If", ["cond"], ["left"], then_branch=leave, else_branch=leave),
               helper.make_node("Gather", ["small", "left"], ["z"])], [big, small, cond],
              ("y", "z"))
    assert index_bounds(g, LOW) == {}                 # 0-9, as before (was 1,000)
    inner = numpy_helper.from_array(np.ones((2000, 3), np.float32), "small")
    shadow = helper.make_graph([helper.make_node("Gather", ["small", "ids"], ["b"])], "b", [],
                               [vi("b", TensorProto.FLOAT, None)], initializer=[inner])
    g = graph([helper.make_node("If", ["cond"], ["y"], then_branch=shadow,
                                else_branch=shadow),
               helper.make_node("Gather", ["small", "ids"], ["z"])], [small, cond], ("y", "z"))
    assert index_bounds(g, LOW) == {}                 # 'small' is two tables (was 2,000)
    g = graph([helper.make_node("Gather", ["small", "i"], ["z"]),       # listed first
               helper.make_node("Identity", ["ids"], ["i"]),
               helper.make_node("Gather", ["big", "ids"], ["y"])], [big, small], ("y", "z"))
    assert index_bounds(g, LOW) == {"ids": 50}        # (was 1,000)
    g = graph([helper.make_node("Cast", ["ids"], ["h"], to=TensorProto.FLOAT16),
               helper.make_node("Cast", ["h"], ["i"], to=TensorProto.INT64),
               helper.make_node("Gather", ["big", "i"], ["z"]),
               helper.make_node("Gather", ["big", "ids"], ["y"])], [big], ("y", "z"))
    assert index_bounds(g, LOW) == {}                 # a float's rounding: not followed
    g = graph([helper.make_node("Cast", ["ids"], ["i"], to=TensorProto.INT32),
               helper.make_node("Gather", ["small", "i"], ["y"])], [small])
    assert index_bounds(g, LOW) == {"ids": 50}        # an integer cast: followed


def test_valid_for_takes_one_name_as_well_as_several(engine):
    """A reviewer (helper): valid_for="v2" iterated its letters ('no model v')."""
    engine.load_model(_ids_model(1000), name="v1", probe=False)
    engine.load_model(_ids_model(5), name="v2", probe=False)
    assert engine.sample_input("v1", rows=500, valid_for="v2").max() < 5
    assert engine.sample_input("v1", rows=500, valid_for=["v2"]).max() < 5


def test_running_traffic_sends_new_inputs_once_they_are_given():
    """A newcomer (helper): inputs given while traffic ran were said to be sent ('Sends both
    arms v1's inputs: real: v1_bad.npz') while the generator kept the 16 it drew at start.
    It looks at what it draws from each second and draws again on a change."""
    import threading
    from concurrent.futures import Future
    from core.lab.traffic import TrafficGenerator
    holder = {"source": object(), "value": 1.0}
    seen_new = threading.Event()

    def submit(target, x, **kw):
        if float(x[0, 0]) == 2.0:
            seen_new.set()
        f: Future = Future()
        f.set_result({"y": x})
        return f

    looks = []
    looked_twice = threading.Event()

    def key():
        looks.append(1)
        if len(looks) >= 3:                     # made at start, then two looks
            looked_twice.set()
        return (holder["source"],)

    gen = TrafficGenerator(submit, "m", lambda rng: np.full((1, 2), holder["value"]),
                           rate_rps=200.0, inputs_key=key)
    gen.start()
    try:
        holder["value"] = 2.0                   # drawn from the same source: not redrawn
        assert looked_twice.wait(60), "the generator never looked"
        assert not seen_new.is_set()
        holder["source"] = object()             # new inputs: redrawn within a second
        assert seen_new.wait(60), "the new inputs never reached the running traffic"
    finally:
        gen.stop()


def test_traffic_to_an_experiment_checks_the_inputs_it_sends_and_follows_its_arms(engine):
    """A reviewer (helper): the trial-run check looked at each arm's own real inputs, where
    experiment traffic sends arm A's (refusing A-with-real-inputs -> B-with-a-note, letting
    generated ids go to such a B); after update_ab(a=...) the traffic kept the old A's."""
    vi = helper.make_tensor_value_info
    two = numpy_helper.from_array(np.ones((2, 3), np.float32), "table")
    m = make_model([vi("ids", TensorProto.INT64, ["N"])], [vi("y", TensorProto.FLOAT, None)],
                   [helper.make_node("Add", ["ids", "ids"], ["i"]),
                    helper.make_node("Gather", ["table", "i"], ["y"])], [two], opset=13)
    engine.load_model(m.SerializeToString(), name="noted", probe=True)   # refuses 0-9
    engine.load_model(_ids_model(1000), name="wide", probe=False)
    engine.create_ab("e", a="wide", b="noted")
    with pytest.raises(ConfigError, match=r"'noted' refused generated inputs in its trial "
                       r"run .*give 'wide' real inputs first"):
        engine.start_traffic("e", rate_rps=50, duration_s=0.2)
    buf = io.BytesIO()
    np.save(buf, np.array([0, 0, 0], np.int64))      # (ids 0: twice 0 is a row of 2)
    engine.set_inputs("wide", buf.getvalue(), filename="ids.npy")
    engine.start_traffic("e", rate_rps=100, duration_s=0.3, seed=0)     # A's real inputs
    status = engine.wait_traffic("e", timeout_s=60)
    assert status.sent > 10 and status.succeeded == status.sent and status.refused == 0
    # another arm A, with ids 1 (twice 1 is past B's 2 rows): the running traffic follows it
    engine.load_model(_ids_model(1000), name="w3", probe=False)
    buf = io.BytesIO()
    np.save(buf, np.array([1, 1], np.int64))
    engine.set_inputs("w3", buf.getvalue(), filename="ones.npy")
    engine.update_ab("e", b_share=1.0)                 # every request to B
    engine.start_traffic("e", rate_rps=100, duration_s=120, seed=0)
    try:
        engine.update_ab("e", a="w3")
        deadline = time.monotonic() + 60
        while engine.ab_metrics("e", "b").error_count == 0:
            assert time.monotonic() < deadline, "the traffic kept the old arm A's inputs"
            time.sleep(0.05)
    finally:
        engine.stop_traffic("e")
    # the engine gives its own objects back: the generator's key is stable between looks
    assert engine.model_info("wide") is engine.model_info("wide")
    assert engine.real_inputs("wide") is engine.real_inputs("wide")


def test_a_failed_redraw_is_tried_again_and_a_drawn_whole_input_is_not_copied():
    """A reviewer (helper): the inputs' watch kept the new key before drawing, so a draw
    that failed was never tried again; and a whole input drawn from real inputs (a view of
    a writable array) was copied at every submit under the read-only-view rule."""
    from core.lab.traffic import InputsWatch
    from core.models import SampleInputs, owned
    calls = {"n": 0}
    source = {"key": object()}

    def sample(rng):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the model is being swapped")
        return calls["n"]
    watch = InputsWatch(sample, lambda: (source["key"],), 1, 0)
    assert watch.fresh() is None
    source["key"] = object()
    with pytest.raises(RuntimeError):
        watch.fresh()
    assert watch.fresh() == [2]            # tried again at the next look
    assert watch.fresh() is None
    real = SampleInputs({"x": np.ones((3, 2, 2), np.float32)}, "f.npy", exact=True)
    x = real.draw()
    assert owned(x) is x


def test_a_probed_upload_loads_under_a_hard_address_space_limit_of_the_callers():
    """Under ``ulimit -v`` (a hard limit) every probed upload failed, the error blaming the
    model: the trial run's child set its address-space cap with no hard limit, which only
    a raise of the caller's could give ("not allowed to raise maximum limit"; an
    adversary). The cap now stays within the caller's hard limit."""
    import subprocess
    import sys
    from pathlib import Path
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))\n"
            "from core import Engine, EngineConfig\n"
            "from tests.helpers import identity_model\n"
            "with Engine(EngineConfig(demo_models=False, probe_models=True)) as e:\n"
            "    print(e.load_model(identity_model(), name='ident').name)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert done.returncode == 0 and done.stdout.split()[-1:] == ["ident"], done.stderr[-800:]


def test_an_output_declared_twice_is_refused_with_what_to_do():
    """A model declaring two outputs named 'y' loaded: its metadata listed 'y' twice, its
    answers once (an adversary)."""
    from tests.helpers import make_model
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    m = make_model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])], [y, y],
                   [helper.make_node("Identity", ["x"], ["y"])])
    with pytest.raises(ModelLoadError, match=r"declares output 'y' 2 times; each output needs "
                                             r"a name of its own"):
        load(m.SerializeToString())
