"""Constants ONNX Runtime would fold while creating a session, sized before it does.

Constant folding runs at session creation, outside any arena cap: a 182-byte model whose
``Expand([1.0], [16000, 16000])`` feeds a ``ReduceSum`` takes a process to 2 GB before the
session exists (TESTING.md). The engine server opens an upload first in a child process
whose address space is capped; an engine in a notebook does not. So every load sizes the
tensors folding would make, node by node along the constant part of the graph (ONNX's
shape inference of each node, the small shape-like constants computed on the way by ONNX's
reference ops), and refuses a model whose largest one is past the limit, before ONNX
Runtime sees it.

The sizing itself stays small whatever the graph declares: no whole-graph shape inference
with data propagation (it writes one entry per element of every 1-D value of known length:
a 130-byte model declaring a 40-million-element weight took it to 3 GB; an adversary), and
only tensors up to 4 KiB are ever computed.

Example:
    >>> largest_folded(onnx.load_model_from_string(build_memory_bomb(16000)))
    (1024000000, "the ConstantOfShape making 'big'")
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["largest_folded", "size_folding", "Folding"]

#: Ops ONNX Runtime never folds (their outputs differ run to run).
_NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli", "Dropout",
               # (left for kernels that take it quantized: a 100 MB int8 weight was sized as
               # 400 MB of floats and the model refused; a reviewer)
               "DequantizeLinear"}
#: Constants computed while sizing (shapes, axes, indices: what later nodes' shapes read):
#: only up to this size, and only by these ops, whose work is bounded by their inputs and
#: outputs (never a Loop's or a Range's own count).
_KEEP_BYTES = 4096
_COMPUTED = {"Constant", "Shape", "Size", "Concat", "Gather", "Slice", "Squeeze", "Unsqueeze",
             "Cast", "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Max", "Min", "Floor", "Ceil",
             "Reshape", "Identity", "Flatten", "Transpose", "ConstantOfShape", "Expand",
             "Tile", "Equal", "Less", "Greater", "Not", "Where", "ReduceProd", "ReduceSum",
             "ReduceMax", "ReduceMin", "Range", "Sqrt", "Mod"}


#: At most this many constant nodes are sized, and this many bytes of small constants
#: computed, per model (100,000 nodes of 4 KiB each took the check to 9 s and 750 MiB; an
#: adversary): past either, the model's folding is left off (its size cannot be told).
_MAX_FOLDED_NODES = 20_000
_MAX_COMPUTED_BYTES = 2**20


@dataclasses.dataclass(frozen=True)
class Folding:
    """What sizing a model's constants found: ``largest`` ``(bytes, what)`` of the tensors
    ONNX Runtime's constant folding would make, ``dense`` the largest sparse tensor it makes
    dense as the model loads (folding or not), and ``unknown``: why the folded sizes cannot
    be vouched for (a constant part inside a subgraph, a function of the model's own, a
    shape that cannot be told...), in which case ONNX Runtime must not fold; None when
    they can."""

    largest: tuple[int, str] | None
    unknown: str | None
    dense: tuple[int, str] | None = None


def largest_folded(proto: onnx.ModelProto) -> tuple[int, str] | None:
    """``(bytes, what)`` of the largest tensor constant folding would compute in
    ``proto``'s main graph, where its shape can be told; None when there is none."""
    return size_folding(proto).largest


def _largest(found: tuple[int, str] | None, nbytes: int | None,
             what: str) -> tuple[int, str] | None:
    return found if nbytes is None or (found is not None and found[0] >= nbytes) \
        else (nbytes, what)


def size_folding(proto: onnx.ModelProto) -> Folding:
    """The constants ``proto`` would have ONNX Runtime make while it creates a session (see
    :class:`Folding`), node by node along its main graph's constant part."""
    g = proto.graph
    opsets = {"" if o.domain in ("", "ai.onnx") else o.domain: o.version
              for o in proto.opset_import}
    overridable = {i.name for i in g.input}
    inputs = {i.name: i.type for i in g.input}   # (a Shape of a fixed one is folded too)
    types: dict[str, onnx.TypeProto] = {}        # every constant's type, where known
    values: dict[str, np.ndarray] = {}           # the small ones' values
    best: tuple[int, str] | None = None
    dense: tuple[int, str] | None = None
    unknown: str | None = None
    for t in g.initializer:
        if t.name in overridable:
            continue
        types[t.name] = helper.make_tensor_type_proto(t.data_type, list(t.dims))
        if _tensor_bytes(t) <= _KEEP_BYTES:
            try:
                values[t.name] = numpy_helper.to_array(t)
            except Exception:  # noqa: BLE001 - external or malformed data: its type only
                pass
    for sp in g.sparse_initializer:
        types[sp.values.name] = helper.make_tensor_type_proto(sp.values.data_type,
                                                              list(sp.dims))
    dense = _densest(g.sparse_initializer, [g.node] + [f.node for f in proto.functions])
    if proto.functions:   # (inlined before folding: their bodies are not sized here)
        unknown = "the model defines functions of its own"
    produced = {o for n in g.node for o in n.output if o}
    const, seen, folded, computed = set(types), set(), 0, 0
    for node in g.node:
        seen.update(o for o in node.output if o)
        ins = [i for i in node.input if i]
        if unknown is None and any(i in produced and i not in seen for i in ins):
            unknown = f"its nodes are not in order ({node.op_type} uses a later node's output)"
        if unknown is None:
            unknown = _constant_in_subgraph(node, const)
        fixed = node.op_type in ("Shape", "Size") and ins and ins[0] in inputs \
            and _fixed_dims(inputs[ins[0]], node) is not None
        if fixed:
            types.setdefault(ins[0], inputs[ins[0]])
        elif not all(i in const for i in ins) or (
                node.op_type != "Constant" and (node.op_type in _NOT_FOLDED or not ins)):
            continue
        const.update(o for o in node.output if o)
        if node.domain not in ("", "ai.onnx"):
            unknown = unknown or f"a {node.domain} {node.op_type} node of constants"
            continue
        folded += 1
        if folded > _MAX_FOLDED_NODES:
            return Folding(best, unknown or f"over {_MAX_FOLDED_NODES:,} constant nodes",
                           dense)
        out = _constant_type(node) or _node_types(node, ins, types, values, opsets,
                                                  proto.ir_version)
        types.update(out)
        sizes = [_bytes(out.get(o)) for o in node.output if o]
        if node.op_type != "Constant":
            if unknown is None and (not sizes or None in sizes):
                unknown = (f"the size of what the {node.op_type} node "
                           f"{node.name or node.output[0]!r} makes cannot be told")
            for name, n in zip([o for o in node.output if o], sizes):
                best = _largest(best, n, f"{node.op_type} node {node.name!r}" if node.name
                                else f"the {node.op_type} making {name!r}")
        if node.op_type in _COMPUTED and sizes and computed < _MAX_COMPUTED_BYTES and all(
                n is not None and n <= _KEEP_BYTES for n in sizes):
            got = _computed(node, ins, types, values, opsets)
            computed += sum(v.nbytes for v in got.values())
            values.update(got)
    return Folding(best, unknown, dense)


def _fixed_dims(t: onnx.TypeProto, node: onnx.NodeProto) -> list[int] | None:
    """The dims a ``Shape`` (its ``start:end``) or ``Size`` of a value of type ``t`` reads,
    when all of them are fixed (ONNX Runtime then folds it to a constant); else None."""
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    dims = list(t.tensor_type.shape.dim)
    if node.op_type == "Shape":
        start = next((a.i for a in node.attribute if a.name == "start"), 0)
        end = next((a.i for a in node.attribute if a.name == "end"), None)
        dims = dims[start:end]
    return [d.dim_value for d in dims] if all(d.HasField("dim_value") for d in dims) else None


def _constant_type(node: onnx.NodeProto) -> dict[str, onnx.TypeProto]:
    """A ``Constant``'s type from its tensor, without a copy of it (a 64 MiB one went
    through shape inference whole); {} for other nodes and other kinds of value."""
    if node.op_type != "Constant":
        return {}
    t = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
    return {} if t is None else {node.output[0]: helper.make_tensor_type_proto(
        t.data_type, list(t.dims))}


def _densest(initializers: Any, node_lists: list[Any]) -> tuple[int, str] | None:
    """The largest sparse tensor (initializer, or a ``Constant``'s ``sparse_value``) ONNX
    Runtime makes dense as the model loads, folding or not: of ``initializers`` and of every
    node of ``node_lists``, down through their subgraphs (a reviewer: only the main graph's
    were sized)."""
    def made(sp: Any) -> int:   # (the dense tensor's bytes)
        return math.prod(sp.dims) * _itemsize(sp.values.data_type)

    dense = None
    for sp in initializers:
        dense = _largest(dense, made(sp), f"the sparse initializer {sp.values.name!r}")
    for nodes in node_lists:
        for node in nodes:
            for a in node.attribute:
                if a.name == "sparse_value" and node.op_type == "Constant":
                    dense = _largest(dense, made(a.sparse_tensor),
                                     f"the sparse Constant making {node.output[0]!r}")
                for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else
                            list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []):
                    if (inner := _densest(sub.sparse_initializer, [sub.node])) is not None:
                        dense = _largest(dense, *inner)
    return dense


def _constant_in_subgraph(node: onnx.NodeProto, outer: set[str]) -> str | None:
    """Why folding cannot be sized when ``node`` holds a subgraph with a part made of
    constants only (its own or the outer graph's, ``outer``; ONNX Runtime folds those too,
    and they are not sized here); None for a subgraph without one (a Loop over the input)."""
    for a in node.attribute:
        for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else
                    list(a.graphs) if a.type == onnx.AttributeProto.GRAPHS else []):
            const = outer | {t.name for t in sub.initializer}
            for n in sub.node:
                ins = [i for i in n.input if i]
                if n.op_type == "Constant":
                    const.update(o for o in n.output if o)
                elif ins and n.op_type not in _NOT_FOLDED and all(i in const for i in ins):
                    return (f"a subgraph of {'an' if node.op_type[0] in 'AEIOU' else 'a'} "
                            f"{node.op_type} node has a part made of constants only")
                elif (why := _constant_in_subgraph(n, const)) is not None:
                    return why
    return None


def _node_types(node: onnx.NodeProto, ins: list[str], types: dict[str, onnx.TypeProto],
                values: dict[str, np.ndarray], opsets: dict[str, int],
                ir_version: int) -> dict[str, onnx.TypeProto]:
    """ONNX's shape inference of one node, from its inputs' types and small values; {}
    where it cannot be told (unknown op, a malformed node, an input of unknown type)."""
    if not all(i in types for i in ins):
        return {}
    try:
        schema = onnx.defs.get_schema(node.op_type, opsets.get("", 1), "")
        data = {i: numpy_helper.from_array(values[i], i) for i in ins if i in values}
        return dict(onnx.shape_inference.infer_node_outputs(
            schema, node, {i: types[i] for i in ins}, data,
            opset_imports=[helper.make_opsetid("", opsets.get("", 1))],
            ir_version=ir_version or onnx.IR_VERSION))
    except Exception:  # noqa: BLE001 - not told: ONNX Runtime's own limits decide
        return {}


def _computed(node: onnx.NodeProto, ins: list[str], types: dict[str, onnx.TypeProto],
              values: dict[str, np.ndarray], opsets: dict[str, int]) -> dict[str, np.ndarray]:
    """The node's outputs computed by ONNX's reference op (all of them small: checked by
    the caller); a ``Shape`` or ``Size`` of a large constant from its type alone."""
    try:
        if node.op_type in ("Shape", "Size") and ins[0] not in values:
            if node.op_type == "Size":
                dims = [d.dim_value for d in types[ins[0]].tensor_type.shape.dim]
                return {node.output[0]: np.array(math.prod(dims), np.int64)}
            return {node.output[0]: np.array(_fixed_dims(types[ins[0]], node), np.int64)}
        if not all(i in values for i in ins):
            return {}
        from onnx.reference.ops import load_op   # (numpy's reference kernels, on demand)
        op = load_op("", node.op_type, opsets.get("", 1))
        run = op(node, {"opsets": opsets, "verbose": 0, "log": lambda *a: None,
                        "new_ops": None, "existing_functions": {}, "evaluator_cls": None})
        results = run.run(*[values[i] for i in node.input if i])
        return {name: np.asarray(r) for name, r in zip(node.output, results) if name}
    except Exception:  # noqa: BLE001 - not computed: later shapes may stay unknown
        return {}


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
