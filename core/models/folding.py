"""Constants ONNX Runtime would fold while creating a session, sized before it does.

Constant folding runs at session creation, outside any arena cap: a 182-byte model whose
``Expand([1.0], [16000, 16000])`` feeds a ``ReduceSum`` takes a process to 2 GB before the
session exists (TESTING.md). The engine server opens an upload first in a child process
whose address space is capped; an engine in a notebook does not. So every load sizes the
tensors folding would make, from the graph's shapes (ONNX shape inference with data
propagation, run on the graph without its large weights), and refuses a model whose
largest one is past the limit, before ONNX Runtime sees it.

Example:
    >>> largest_folded(onnx.load_model_from_string(build_memory_bomb(16000)))
    (1024000000, "the ConstantOfShape making 'big'")
"""

from __future__ import annotations

import math
from typing import Any

import onnx
from onnx import helper

__all__ = ["largest_folded"]

#: Ops ONNX Runtime never folds (their outputs differ run to run).
_NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli", "Dropout",
               # (left for kernels that take it quantized: a 100 MB int8 weight was sized as
               # 400 MB of floats and the model refused; a reviewer)
               "DequantizeLinear"}
#: Weights kept for the inference: small ones only (shapes, axes: what data propagation
#: reads); the others are declared as inputs of their shape, so no copy of them is made.
_KEEP_BYTES = 4096


def largest_folded(proto: onnx.ModelProto) -> tuple[int, str] | None:
    """``(bytes, what)`` of the largest tensor constant folding would compute in
    ``proto``'s main graph, where shape inference tells its shape; None when there is
    none (or the graph's shapes cannot be inferred: nothing can be said)."""
    g = proto.graph
    overridable = {i.name for i in g.input}
    const = {t.name for t in g.initializer if t.name not in overridable}
    folded: list[Any] = []
    for node in g.node:
        if node.op_type == "Constant":
            const.update(o for o in node.output if o)
            continue
        ins = [i for i in node.input if i]
        if (node.domain in ("", "ai.onnx") and node.op_type not in _NOT_FOLDED and ins
                and all(i in const for i in ins)):
            const.update(o for o in node.output if o)
            folded.append(node)
    if not folded:
        return None
    try:
        shapes = _inferred_types(proto)
    except Exception:  # noqa: BLE001 - shapes unknown: ONNX Runtime's own limits decide
        return None
    best: tuple[int, str] | None = None
    for node in folded:
        for out in node.output:
            nbytes = _bytes(shapes.get(out))
            if nbytes is not None and (best is None or nbytes > best[0]):
                best = (nbytes, f"{node.op_type} node {node.name!r}" if node.name else
                        f"the {node.op_type} making {out!r}")
    return best


def _inferred_types(proto: onnx.ModelProto) -> dict[str, Any]:
    """Every value's inferred type, from a copy of the graph without its large weights."""
    light = onnx.ModelProto()   # (never a copy of the whole model: it may be 200 MB)
    light.ir_version = proto.ir_version
    light.opset_import.extend(proto.opset_import)
    graph = light.graph
    graph.input.extend(proto.graph.input)
    for node in proto.graph.node:   # (a large Constant node's tensor: declared, not copied)
        value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")),
                     None) if node.op_type == "Constant" else None
        if value is not None and _tensor_bytes(value) > _KEEP_BYTES:
            graph.input.append(helper.make_tensor_value_info(node.output[0], value.data_type,
                                                             value.dims))
        else:
            graph.node.append(node)
    graph.output.extend(proto.graph.output)
    graph.value_info.extend(proto.graph.value_info)
    declared = {i.name for i in proto.graph.input}
    for t in proto.graph.initializer:
        if _tensor_bytes(t) <= _KEEP_BYTES:
            graph.initializer.append(t)
        elif t.name not in declared:
            graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, t.dims))
    light.functions.extend(proto.functions)
    inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)
    g = inferred.graph
    return {v.name: v.type for v in [*g.value_info, *g.output]}


def _tensor_bytes(t: onnx.TensorProto) -> int:
    return math.prod(t.dims) * _itemsize(t.data_type)


def _itemsize(elem_type: int) -> int:
    try:
        return helper.tensor_dtype_to_np_dtype(elem_type).itemsize or 1
    except Exception:  # noqa: BLE001 - undefined or string: counted as a byte each
        return 1


def _bytes(t: Any) -> int | None:
    if t is None or not t.HasField("tensor_type"):
        return None
    tt = t.tensor_type
    if not tt.HasField("shape") or any(not d.HasField("dim_value") for d in tt.shape.dim):
        return None
    return math.prod(d.dim_value for d in tt.shape.dim) * _itemsize(tt.elem_type)
