"""A model whose dynamic batch axis lets rows see each other (CumSum over it, Softmax over
it) is found at load and each of its requests runs alone: no caller gets an answer made
from another caller's rows."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from core import BatchConfig, Engine, EngineConfig, ModelLoadError
from core.models import build_demo_model
from tests.helpers import make_model


def _model(op: str, **attrs) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    inits, ins = [], ["x"]
    if op == "CumSum":
        inits = [numpy_helper.from_array(np.array(0, np.int64), "axis")]
        ins = ["x", "axis"]
    return make_model([x], [y], [helper.make_node(op, ins, ["y"], **attrs)],
                      initializers=inits).SerializeToString()


@pytest.fixture
def engine():
    e = Engine(EngineConfig(demo_models=False))
    yield e
    e.close()


@pytest.mark.parametrize("op,attrs", [("CumSum", {}), ("Softmax", {"axis": 0})])
def test_rows_that_see_each_other_are_never_batched_with_another_request(engine, op, attrs):
    info = engine.load_model(_model(op, **attrs), name="mix",
                             batch=BatchConfig(max_batch_size=8, max_wait_ms=60_000))
    assert info.batch_mode == "alone" and not info.batchable
    assert "rows of a batch change each other's answers: output 'y'" in info.batch_reason
    # Two callers at once, the wait long enough to pack them: each runs alone, whole.
    a, b = np.full((1, 4), 1000, np.float32), np.ones((2, 4), np.float32)
    fa, fb = engine.submit("mix", a), engine.submit("mix", b)
    pa, pb = fa.result(timeout=30), fb.result(timeout=30)
    np.testing.assert_allclose(pb.outputs["y"], engine.predict("mix", b).outputs["y"])
    assert (pa.batch_rows, pb.batch_rows) == (1, 2)   # alone, and whole (2 rows kept together)
    if op == "CumSum":   # B's own rows still see each other: that is the model
        np.testing.assert_array_equal(pb.outputs["y"], [[1] * 4, [2] * 4])
        np.testing.assert_array_equal(pa.outputs["y"], a)


def test_check_rows_false_batches_the_model_on_its_owners_word(engine):
    """The reviewer's gap: a model the check misjudged could only be given
    max_batch_size=1. load_model(check_rows=False) skips the check and says so."""
    info = engine.load_model(_model("CumSum"), name="trusted", check_rows=False,
                             batch=BatchConfig(max_batch_size=8, max_wait_ms=60_000))
    assert info.batch_mode == "dynamic" and info.batchable
    assert any("loaded with check_rows=False" in w for w in info.warnings)
    fa = engine.submit("trusted", np.ones((3, 4), np.float32))
    fb = engine.submit("trusted", np.ones((5, 4), np.float32))   # 8 rows: one full batch
    assert fa.result(timeout=30).batch_rows == fb.result(timeout=30).batch_rows == 8
    with pytest.raises(ValueError, match="check_rows must be True or False"):
        engine.load_model(_model("CumSum"), name="bad", check_rows="no")


def test_a_loop_whose_trips_are_the_batchs_largest_value_runs_alone(engine):
    from core.models import build_loop_model
    assert engine.load_model(build_loop_model(None), name="x").batch_mode == "alone"
    assert engine.load_model(build_loop_model(None, rows_apart=True),
                             name="apart").batch_mode == "dynamic"


def test_a_batchable_model_stays_batchable_and_unchecked_models_keep_their_mode(engine):
    # The MLP uploaded (not as a demo): checked, and its rows are its own.
    assert engine.load_model(build_demo_model("mlp"), name="up").batch_mode == "dynamic"
    # Answers that vary from run to run cannot be told apart: no claim, still batched.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    noisy = make_model([x], [y], [helper.make_node("RandomNormalLike", ["x"], ["y"])])
    assert engine.load_model(noisy.SerializeToString(), name="noisy").batch_mode == "dynamic"


def test_an_output_without_the_batchs_rows_makes_requests_run_alone(engine):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M"])
    flat = make_model([x], [y], [helper.make_node("Reshape", ["x", "shape"], ["y"])],
                      initializers=[numpy_helper.from_array(np.array([-1], np.int64), "shape")])
    info = engine.load_model(flat.SerializeToString(), name="flat")
    assert info.batch_mode == "alone"
    assert "output 'y' has 12 rows for a batch of 3 rows" in info.batch_reason
    out = engine.predict("flat", np.ones((2, 4), np.float32)).outputs["y"]
    np.testing.assert_array_equal(out, np.ones(8))


def test_try_it_says_a_request_ran_alone_and_whole(engine):
    from core.ui.fmt import try_caption
    engine.load_model(_model("CumSum"), name="mix")
    pred = engine.predict("mix", np.ones((2, 4), np.float32))
    words = try_caption("alone", ["N", 4], pred)
    assert words.startswith("This request: 2 row(s), run alone and whole in batch #")
    assert "never combined" in words


def test_a_dynamically_quantized_model_keeps_batching_with_a_warning(engine, tmp_path):
    """quantize_dynamic takes one scale over the batch: a row's answer moves ~1 % with its
    neighbours. It was run alone (a reviewer's); it batches, and the warning says why rows
    may differ by a quantization step."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    src, dst = tmp_path / "mlp.onnx", tmp_path / "mlp-int8.onnx"
    src.write_bytes(build_demo_model("mlp"))
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    info = engine.load_model(dst, name="q")
    assert info.batch_mode == "dynamic" and info.batchable
    assert any(w.startswith("dynamically quantized (DynamicQuantizeLinear)") and
               "checked for mixing within that" in w for w in info.warnings)
    for name in ("clf-v1", "clf-v2"):   # (a label output a quantization step may flip)
        src.write_bytes(build_demo_model(name))
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
        assert engine.load_model(dst, name=f"q-{name}").batch_mode == "dynamic", name


def test_naming_dynamic_quantization_does_not_skip_the_row_check(engine, tmp_path):
    """A CumSum over the batch whose doc_string said "DynamicQuantizeLinear" skipped the
    check and was batched: caller 3 of [[1,1]], [[2,2]], [[3,3]] got [[6,6]] (an adversary).
    A quantized model is checked too, within a quantization's steps; a real one whose rows
    mix (quantize_dynamic of a model with a CumSum over the batch) runs alone."""
    import onnx
    m = onnx.load_model_from_string(_model("CumSum"))
    m.doc_string = "quantized with DynamicQuantizeLinear"
    info = engine.load_model(m.SerializeToString(), name="named",
                             batch=BatchConfig(max_batch_size=8, max_wait_ms=60_000))
    assert info.batch_mode == "alone" and "output 'y'" in info.batch_reason
    futs = [engine.submit("named", np.full((1, 2 * 2), k, np.float32)) for k in (1, 2, 3)]
    assert [f.result(timeout=30).outputs["y"][0, 0] for f in futs] == [1, 2, 3]
    # a real dynamically quantized model whose rows mix: MatMul quantized, then CumSum
    from onnxruntime.quantization import QuantType, quantize_dynamic
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    src = make_model([x], [y], [helper.make_node("MatMul", ["x", "w"], ["h"]),
                                helper.make_node("CumSum", ["h", "axis"], ["y"])],
                     initializers=[numpy_helper.from_array(w, "w"),
                                   numpy_helper.from_array(np.array(0, np.int64), "axis")])
    onnx.save(src, tmp_path / "mix.onnx")
    quantize_dynamic(str(tmp_path / "mix.onnx"), str(tmp_path / "mix-q.onnx"),
                     weight_type=QuantType.QInt8)
    assert b"DynamicQuantizeLinear" in (tmp_path / "mix-q.onnx").read_bytes()
    info = engine.load_model(tmp_path / "mix-q.onnx", name="qmix")
    assert info.batch_mode == "alone" and "output 'y'" in info.batch_reason


def test_a_random_side_output_does_not_hide_rows_that_mix(engine):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in ("y", "r")]
    m = make_model([x], outs, [helper.make_node("CumSum", ["x", "axis"], ["y"]),
                               helper.make_node("RandomNormalLike", ["x"], ["r"])],
                   initializers=[numpy_helper.from_array(np.array(0, np.int64), "axis")])
    info = engine.load_model(m.SerializeToString(), name="mixr")
    assert info.batch_mode == "alone" and "output 'y'" in info.batch_reason


def test_a_model_whose_rows_could_not_be_checked_says_so():
    from core.models import build_loop_model
    # a run past the check's time limit (a loop of 10**10 trips): batched, and said unchecked
    with Engine(EngineConfig(demo_models=False, probe_time_limit_s=0.2)) as engine:
        info = engine.load_model(build_loop_model(10 ** 10), name="slow")
        relu = engine.load_model(_model("Relu"), name="relu")
    assert info.batch_mode == "dynamic"
    assert any(w.startswith("its rows could not be checked for mixing with generated inputs")
               and "max_batch_size=1" in w for w in info.warnings), info.warnings
    assert not any("could not be checked" in w for w in relu.warnings)


def test_a_model_run_alone_is_warmed_at_the_row_counts_its_requests_bring(engine):
    engine.load_model(_model("CumSum"), name="mix", batch=BatchConfig(max_batch_size=8))
    report = engine.warmup("mix", iterations=2)
    assert sorted(report.frame["batch_size"]) == [1, 2, 4, 8]   # (batch size 1 only, before)
    assert engine.is_warm("mix")
    engine.warmup("mix", iterations=2, batch_sizes=[3])   # refused before: "size 1 only"


def test_check_rows_false_survives_a_hot_swap_and_a_replays_copy(engine):
    """A reviewer's case: a sweep's thread swap (a hot swap) and a replay's private copy
    loaded the model again with the check on: the trusted model ran alone there."""
    engine.load_model(_model("CumSum"), name="trusted", check_rows=False)
    info = engine.load_model(_model("CumSum"), name="trusted", replace=True)
    assert info.batch_mode == "dynamic"           # the version's choice carried over
    assert engine.load_model(_model("CumSum"), name="trusted", replace=True,
                             check_rows=True).batch_mode == "alone"   # said again: checked
    from core.lab.replay import replay
    engine.load_model(_model("CumSum"), name="t2", check_rows=False,
                      batch=BatchConfig(max_batch_size=3, max_wait_ms=10_000))
    # three arrivals and a batch of 3 that leaves when full: 3 rows if the copy is batched
    # as the model is, 1 if it runs each request alone
    out = replay(engine, "t2", [0.0, 0.001, 0.002], policies=["deadline"])
    assert out["summary"].set_index("policy").loc["deadline", "mean_batch_rows"] == 3


def test_rows_that_mix_in_a_string_output_are_found(engine):
    """An adversary's model: a label looked up per row, then the batch's rows reversed, in
    a string output only (its float output honest). The check compared numbers only, so it
    batched the model and two callers got each other's labels."""
    def ints(name, values):
        return numpy_helper.from_array(np.array(values, np.int64), name)

    nodes = [helper.make_node("Cast", ["x"], ["xi"], to=TensorProto.INT64),
             helper.make_node("Gather", ["table", "xi"], ["lab"], axis=0),
             helper.make_node("Slice", ["lab", "st", "en", "ax", "sp"], ["label"]),
             helper.make_node("Identity", ["x"], ["y"])]
    table = helper.make_tensor("table", TensorProto.STRING, [4],
                               [b"alice-secret", b"bob-secret", b"carol", b"dave"])
    data = make_model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1]),
                       helper.make_tensor_value_info("label", TensorProto.STRING, ["N", 1])],
                      nodes, initializers=[table, ints("st", [-1]), ints("en", [-(2**62)]),
                                           ints("ax", [0]), ints("sp", [-1])]
                      ).SerializeToString()
    info = engine.load_model(data, name="labels",
                             batch=BatchConfig(max_batch_size=8, max_wait_ms=60_000))
    assert info.batch_mode == "alone", (info.batch_mode, info.warnings)
    assert "output 'label' of row" in info.batch_reason
    alice = engine.submit("labels", np.array([[0.0]], np.float32))
    bob = engine.submit("labels", np.array([[1.0]], np.float32))
    assert alice.result(30).outputs["label"].tolist() == [["alice-secret"]]
    assert bob.result(30).outputs["label"].tolist() == [["bob-secret"]]


def test_the_row_checks_rows_run_first_in_the_trial_runs_child(monkeypatch):
    """The trial run ran one row in its child process, then the row check ran 3 rows in the
    serving process: a model that allocates with its batch's rows (nothing at 1 row, 128 GiB
    at 3: past any budget, which is per process, the first engine's) did so in the server, past its budget (an adversary, with strings: outside the arena
    cap). The child runs those rows first; when they fail there the model is loaded, batched,
    with a warning saying its rows were not checked, and the check does not run here."""
    import core.models.rowcheck as rowcheck

    def not_here(*_a, **_k):
        raise AssertionError("the row check ran in the serving process")

    def ints(name, values):
        return numpy_helper.from_array(np.array(values, np.int64), name)

    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Sub", ["n", "one"], ["n1"]),
             helper.make_node("Mul", ["n1", "per_row"], ["r"]),
             helper.make_node("Unsqueeze", ["r", "zero1"], ["shape"]),
             helper.make_node("Expand", ["f1", "shape"], ["big"]),   # (N - 1) * 2**34 floats
             helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
             helper.make_node("Add", ["x", "total"], ["y"])]
    data = make_model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                      nodes, initializers=[
                          ints("zero", 0), ints("one", 1), ints("per_row", 2**34),
                          ints("zero1", [0]),
                          numpy_helper.from_array(np.array([1.0], np.float32), "f1")],
                      opset=17).SerializeToString()
    monkeypatch.setattr(rowcheck, "_verdict", not_here)
    vi = helper.make_tensor_value_info   # (past one row: Concat with a [1, 4] constant)
    then_g = helper.make_graph([helper.make_node("Concat", ["x", "c"], ["yt"], axis=1)],
                               "then", [], [vi("yt", TensorProto.FLOAT, ["N", 8])])
    else_g = helper.make_graph([helper.make_node("Concat", ["x", "x"], ["ye"], axis=1)],
                               "else", [], [vi("ye", TensorProto.FLOAT, ["N", 8])])
    one_row = make_model(
        [vi("x", TensorProto.FLOAT, ["N", 4])], [vi("y", TensorProto.FLOAT, ["N", 8])],
        [helper.make_node("Shape", ["x"], ["s"]),
         helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
         helper.make_node("Greater", ["n", "one"], ["more"]),
         helper.make_node("If", ["more"], ["y"], then_branch=then_g, else_branch=else_g)],
        initializers=[numpy_helper.from_array(np.ones((1, 4), np.float32), "c"),
                      ints("zero", 0), ints("one", 1)]).SerializeToString()
    with Engine(EngineConfig(demo_models=False, probe_models=True,
                             memory_budget_bytes=256 * 2**20)) as engine:
        # Out of memory at 3 rows in the child: refused, since three one-row requests
        # batched together would do it in the server (a reviewer: it was loaded, batched)
        with pytest.raises(ModelLoadError, match=r"model 'grows' failed its trial run of 3 "
                                                 r"rows .*A batch of 3 requests would do the "
                                                 r"same in the server, so it was not loaded"):
            engine.load_model(data, name="grows")
        assert engine.model_names() == []
        # A shape ONNX Runtime refuses at 3 rows: loaded, each request alone, said why
        info = engine.load_model(one_row, name="one_row")
        assert info.batch_mode == "alone" and info.batch_reason.startswith(
            "its trial run of 3 rows failed in a separate process"), info.batch_reason
        futs = [engine.submit("one_row", np.full((1, 4), i, np.float32)) for i in range(3)]
        assert [f.result(30).outputs["y"].tolist() for f in futs] == [[[i] * 8] for i in range(3)]


def test_a_quantized_models_labels_are_checked_by_the_rows_order(engine, tmp_path):
    """The looser check of a quantized model skipped its non-float outputs, and it was
    bought by a description naming the operator: a float y = x beside an int64 z =
    CumSum(x) * 1000 handed caller 3 the others' sum (a reviewer). Quantized is known from
    the graph's nodes now; and a quantized model's rows in reverse order must give each row
    the same answer, every output compared, labels included."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])
    z = helper.make_tensor_value_info("z", TensorProto.INT64, ["N", 64])
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]),
             helper.make_node("CumSum", ["x", "axis"], ["c"]),
             helper.make_node("Mul", ["c", "big"], ["cb"]),
             helper.make_node("Cast", ["cb"], ["z"], to=TensorProto.INT64)]
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array(0, np.int64), "axis"),
             numpy_helper.from_array(np.array(1000.0, np.float32), "big")]
    src = make_model([x], [y, z], nodes, initializers=inits)
    named = onnx.ModelProto()
    named.CopyFrom(src)
    named.doc_string = "DynamicQuantizeLinear"   # named, not quantized: the tight check
    info = engine.load_model(named.SerializeToString(), name="named")
    assert info.batch_mode == "alone" and "output 'z'" in info.batch_reason
    assert not any("dynamically quantized" in w for w in info.warnings)
    onnx.save(src, tmp_path / "m.onnx")
    quantize_dynamic(str(tmp_path / "m.onnx"), str(tmp_path / "q.onnx"),
                     weight_type=QuantType.QInt8)
    info = engine.load_model(tmp_path / "q.onnx", name="quantized")
    assert info.batch_mode == "alone", info.warnings
    assert "output 'z' of row 0 differs when the batch's rows come in another order" in \
        info.batch_reason
    from core.models.rowcheck import _close   # a quarter of the scale, absolute (allclose's
    assert not _close(np.array([[1.0]]), [[0.62]], 0.25)   # relative part let 0.62 pass)
    assert not _close(np.array([[0.6]]), [[1.0]], 0.25) and _close(np.array([[1.0]]), [[0.8]], 0.25)
