"""Built-in demo models, built deterministically with ``onnx.helper`` (no download).

Each one exists to show something about batching:

========== ====================================== =========================================
name       shape                                   shows
========== ====================================== =========================================
clf-v1     x float32 [N,64] -> probs, label        a small classifier (A/B arm A)
clf-v2     same interface, ~10x the compute        a costlier v2 of it (A/B arm B)
mlp        x float32 [N,256] -> logits [N,10]      compute-bound: 256->1024->1024->10
tiny       x float32 [N,4] -> y [N,4]              per-request overhead dominates
two-input  features, weights [N,16] -> score       a model with two inputs
fixed-batch image float32 [1,3,8,8] -> pooled       batch axis fixed at 1: not batchable
cnn        image float32 [N,1,28,28] -> logits     a small CNN (two convolutions, pooling)
========== ====================================== =========================================

Example:
    >>> data = build_demo_model("mlp")          # bytes of a valid ONNX model
    >>> sorted(DEMO_MODELS)[:2]
    ['clf-v1', 'clf-v2']
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["DEMO_MODELS", "build_demo_model", "demo_description", "build_onnx"]

_OPSET = 17
_IR_VERSION = 8  # readable by every onnxruntime in the supported range


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def _dense(rng: np.random.Generator, prefix: str, x: str, n_in: int, n_out: int,
           relu: bool, scale: float = 1.0) -> tuple[list, list, str]:
    w = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in) * scale).astype(np.float32)
    b = (rng.standard_normal(n_out) * 0.01).astype(np.float32)
    inits = [_init(f"{prefix}_w", w), _init(f"{prefix}_b", b)]
    nodes = [helper.make_node("MatMul", [x, f"{prefix}_w"], [f"{prefix}_mm"]),
             helper.make_node("Add", [f"{prefix}_mm", f"{prefix}_b"], [f"{prefix}_lin"])]
    out = f"{prefix}_lin"
    if relu:
        nodes.append(helper.make_node("Relu", [out], [f"{prefix}_relu"]))
        out = f"{prefix}_relu"
    return nodes, inits, out


def build_onnx(name: str, nodes: list, inits: list, inputs: list, outputs: list,
               doc: str) -> bytes:
    """A checked ONNX model (opset 17, IR 8) of ``nodes`` as bytes."""
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)],
                              producer_name="batchlab-demo", producer_version="1")
    model.ir_version = _IR_VERSION
    model.doc_string = doc
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _classifier(version: int) -> bytes:
    rng = np.random.default_rng(1234)  # same base weights for both versions
    nodes, inits = [], []
    n1, i1, h = _dense(rng, "l1", "x", 64, 128, relu=True)
    n2, i2, logits = _dense(rng, "l2", h, 128, 10, relu=False)
    nodes += n1 + n2
    inits += i1 + i2
    if version == 2:
        # v2 = v1 plus a costlier residual branch with small weights: mostly the same
        # labels (a realistic A/B), about ten times the compute.
        rng2 = np.random.default_rng(5678)
        r1, j1, g = _dense(rng2, "r1", "x", 64, 512, relu=True)
        r2, j2, g2 = _dense(rng2, "r2", g, 512, 512, relu=True)
        r3, j3, g3 = _dense(rng2, "r3", g2, 512, 10, relu=False, scale=0.2)
        nodes += r1 + r2 + r3 + [helper.make_node("Add", [logits, g3], ["logits_v2"])]
        inits += j1 + j2 + j3
        logits = "logits_v2"
    nodes += [helper.make_node("Softmax", [logits], ["probs"], axis=1),
              helper.make_node("ArgMax", ["probs"], ["label"], axis=1, keepdims=0)]
    return build_onnx(
        f"clf_v{version}", nodes, inits,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])],
        f"Demo classifier v{version}")


def _mlp() -> bytes:
    rng = np.random.default_rng(42)
    n1, i1, h1 = _dense(rng, "fc1", "x", 256, 1024, relu=True)
    n2, i2, h2 = _dense(rng, "fc2", h1, 1024, 1024, relu=True)
    n3, i3, out = _dense(rng, "fc3", h2, 1024, 10, relu=False)
    nodes = n1 + n2 + n3 + [helper.make_node("Identity", [out], ["logits"])]
    return build_onnx("mlp", nodes, i1 + i2 + i3,
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
                  "Compute-bound MLP 256->1024->1024->10")


def _tiny() -> bytes:
    inits = [_init("two", np.array(2.0, np.float32)), _init("one", np.array(1.0, np.float32))]
    nodes = [helper.make_node("Mul", ["x", "two"], ["x2"]),
             helper.make_node("Add", ["x2", "one"], ["y"])]
    return build_onnx("tiny", nodes, inits,
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                  "Cheap model y = 2x + 1: per-request overhead dominates")


def _two_input() -> bytes:
    inits = [_init("axes", np.array([1], np.int64))]
    nodes = [helper.make_node("Mul", ["features", "weights"], ["prod"]),
             helper.make_node("ReduceSum", ["prod", "axes"], ["score"], keepdims=1)]
    return build_onnx("two_input", nodes, inits,
                  [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 16]),
                   helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["N", 16])],
                  [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
                  "Two inputs: score = sum(features * weights) per row")


def _fixed_batch() -> bytes:
    nodes = [helper.make_node("GlobalAveragePool", ["image"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["pooled"], axis=1)]
    return build_onnx("fixed_batch", nodes, [],
                  [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [1, 3])],
                  "Batch axis fixed at 1 (like many exported CNNs): served a row at a time")


def _cnn() -> bytes:
    """A small image classifier: conv 3x3 (8) -> relu -> pool 2 -> conv 3x3 (16) -> relu ->
    pool 2 -> dense 784 -> 10; about 0.3 M multiply-adds per 28x28 image."""
    rng = np.random.default_rng(7)

    def conv(name: str, c_in: int, c_out: int) -> onnx.TensorProto:
        w = rng.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2.0 / (c_in * 9))
        return _init(name, w.astype(np.float32))

    inits = [conv("c1_w", 1, 8), _init("c1_b", np.zeros(8, np.float32)),
             conv("c2_w", 8, 16), _init("c2_b", np.zeros(16, np.float32))]
    nodes = [
        helper.make_node("Conv", ["image", "c1_w", "c1_b"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2_w", "c2_b"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["flat"], axis=1),
    ]
    n3, i3, out = _dense(rng, "fc", "flat", 16 * 7 * 7, 10, relu=False)
    nodes += n3 + [helper.make_node("Identity", [out], ["logits"])]
    return build_onnx("cnn", nodes, inits + i3,
                  [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 28, 28])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
                  "Small CNN on 28x28 grey images")


_BUILDERS: dict[str, tuple[Callable[[], bytes], str]] = {
    "clf-v1": (lambda: _classifier(1), "Small classifier 64->128->10 (A/B arm A)"),
    "clf-v2": (lambda: _classifier(2), "Costlier classifier v2, same interface (A/B arm B)"),
    "mlp": (_mlp, "Compute-bound MLP 256->1024->1024->10"),
    "tiny": (_tiny, "Cheap y = 2x + 1: per-request overhead dominates"),
    "two-input": (_two_input, "Two inputs: score = sum(features * weights)"),
    "fixed-batch": (_fixed_batch, "Batch axis fixed at 1: not batchable, served row by row"),
    "cnn": (_cnn, "Small CNN on 28x28 images: two convolutions, pooling, dense"),
}

#: Names of the built-in demo models, in the order they are registered.
DEMO_MODELS: tuple[str, ...] = tuple(_BUILDERS)


def build_demo_model(name: str) -> bytes:
    """Serialized ONNX bytes of demo model ``name`` (identical on every call)."""
    try:
        return _BUILDERS[name][0]()
    except KeyError:
        raise KeyError(f"no demo model {name!r}; demo models are {', '.join(DEMO_MODELS)}") from None


def demo_description(name: str) -> str:
    return _BUILDERS[name][1]
