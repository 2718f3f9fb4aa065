"""Hostile models, for the reliability tests, the benchmarks and demos of the limits: each
is tiny on disk and tries to take a resource the engine must bound (memory, time, shape).

Example:
    >>> len(build_memory_bomb(30000, at_run=True)) < 300     # wants 3.6 GB on its first run
    True
"""

from __future__ import annotations

from onnx import TensorProto, helper

from .demo import build_onnx

__all__ = ["build_memory_bomb", "build_loop_model", "build_declared_shape"]


def build_memory_bomb(n: int, at_run: bool = False) -> bytes:
    """~190 bytes that want ``n * n * 4`` bytes: ``ConstantOfShape([n, n]) -> ReduceSum ->
    Add(x)``, input ``x float32 [N,4]``. ``n=30000``: 3.6 GB. Its big tensor is a constant,
    which ONNX Runtime would fold while creating the session (the engine refuses it at load
    past a quarter of its budget); ``at_run``: made from the input (``Expand`` of its
    largest value), so it is allocated on every run instead."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [n, n])
    if at_run:
        nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
                 helper.make_node("Expand", ["m", "shape"], ["big"])]
    else:
        nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"],
                                  value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]))]
    nodes += [helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
              helper.make_node("Add", ["x", "s"], ["y"])]
    return build_onnx(f"bomb{n}", nodes, [shape],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                  "memory bomb")


def build_loop_model(trips: int | None, rows_apart: bool = False) -> bytes:
    """``y = x + trips`` computed by a ``Loop`` of ``trips`` iterations, input ``x float32
    [N,1]``: a fixed cost per run whatever the rows (``trips=10**10``: hangs for hours).
    ``trips=None``: the request says how many, the largest value of ``x`` (a trial run with
    small inputs passes; ``x = 1e12`` runs for days); each row's answer then depends on the
    batch's largest, so the engine runs its requests alone, unless ``rows_apart``: ``y = x +
    0 * loop``, which still runs the loop and leaves each row its own."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "one"], ["acc_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, ["N", 1])],
        initializer=[helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    inits = [helper.make_tensor("cond", TensorProto.BOOL, [], [True])]
    nodes = [helper.make_node("Loop", ["M", "cond", "x"], ["looped" if rows_apart else "y"],
                              body=body)]
    if rows_apart:
        inits.append(helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]))
        nodes += [helper.make_node("Mul", ["looped", "zero"], ["nothing"]),
                  helper.make_node("Add", ["x", "nothing"], ["y"])]
    if trips is None:
        nodes[:0] = [helper.make_node("ReduceMax", ["x"], ["xmax"], keepdims=0),
                     helper.make_node("Cast", ["xmax"], ["M"], to=TensorProto.INT64)]
    else:
        inits.append(helper.make_tensor("M", TensorProto.INT64, [], [trips]))
    return build_onnx(f"loop{'-x' if trips is None else trips}", nodes, inits,
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
                  "fixed-cost loop")


def build_declared_shape(shape: list) -> bytes:
    """Identity over a declared shape such as ``[1, 2**31 - 1]``: cheap to load, huge to feed."""
    return build_onnx("declared", [helper.make_node("Identity", ["x"], ["y"])], [],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                  "declared shape")
