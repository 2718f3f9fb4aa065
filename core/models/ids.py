"""Which of a model's integer inputs are row numbers into a table of its own, and how long
that table is: an embedding's ids, BERT's token types. Generated inputs are drawn below it
(ids past it fail every run: they were 0-9 whatever the model).

Read from the parsed graph at load, without running anything: an input used as Gather's
indices into an initializer or a Constant, directly or through operators that keep its
values (Identity, a Cast to an integer type, Reshape, Squeeze, Unsqueeze, Flatten), in the
main graph or a nested one (If's branches, Loop's body). An input also used any other way
keeps a bound only under :data:`~core.models.sampling.GENERATED_INT_HIGH` (what other
integers are drawn below): its other uses may take no more.

Example:
    >>> index_bounds(onnx.load("bert.onnx").graph, GENERATED_INT_HIGH)
    {'input_ids': 30522, 'token_type_ids': 2}
"""

from __future__ import annotations

from collections import defaultdict

import onnx

__all__ = ["index_bounds"]

# Standard operators with graph attributes (branches, bodies); any other domain's may have.
_SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})
# Standard operators whose output holds their first input's values.
_SAME_VALUES = frozenset({"Identity", "Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten"})
_INT_TYPES = frozenset({onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32,
                        onnx.TensorProto.INT64, onnx.TensorProto.UINT8, onnx.TensorProto.UINT16,
                        onnx.TensorProto.UINT32, onnx.TensorProto.UINT64})
_STANDARD = ("", "ai.onnx")


def index_bounds(graph: onnx.GraphProto, low: int) -> dict[str, int]:
    """The graph's inputs used as Gather's indices into a table of the model's own, each with
    the shortest such table's length along the gathered axis; an input also used any other
    way only when that length is under ``low``. Two passes over the nodes, attributes read
    only where they can hold a table, a graph or a Cast's type (it runs on every load:
    600,000 nodes take about a second; docs/benchmarks.md)."""
    inputs = {i.name for i in graph.input} - {t.name for t in graph.initializer}
    # Pass 1: every graph, the tables (a name given two shapes in two scopes: ambiguous),
    # and the value-keeping edges (their order in the file need not be the run's).
    graphs, tables, ambiguous = [graph], {}, set()
    keeps: dict[str, list[str]] = defaultdict(list)          # input name -> outputs
    i = 0
    while i < len(graphs):
        g = graphs[i]
        i += 1
        found = [(t.name, tuple(t.dims)) for t in g.initializer]
        for node in g.node:
            op = node.op_type
            if op == "Constant" or op == "Cast" or op in _SUBGRAPH_OPS or \
                    node.domain not in _STANDARD:
                for a in node.attribute:
                    if op == "Constant" and a.HasField("t") and node.output:
                        found.append((node.output[0], tuple(a.t.dims)))
                    graphs.extend([a.g] if a.HasField("g") else a.graphs)
            if (op in _SAME_VALUES and node.domain in _STANDARD and node.input
                    and len(node.output) == 1 and (op != "Cast" or any(
                        a.name == "to" and a.i in _INT_TYPES for a in node.attribute))):
                keeps[node.input[0]].append(node.output[0])
        for name, dims in found:
            if tables.setdefault(name, dims) != dims:
                ambiguous.add(name)
    source = {n: n for n in inputs}        # a name holding an input's values -> the input
    todo = list(inputs)
    while todo:
        name = todo.pop()
        for out in keeps.get(name, ()):
            if out not in source:
                source[out] = source[name]
                todo.append(out)
    # Pass 2: each use of those names is a Gather's indices into a known table, or other.
    gathers: list[tuple[str, str, int]] = []
    other: set[str] = set()
    for n, g in enumerate(graphs):
        if n:    # a nested graph's output leaves it: its use outside is not followed
            other.update(source[o.name] for o in g.output if o.name in source)
        for node in g.node:
            ins = node.input
            if source.keys().isdisjoint(ins):
                continue
            used = [k for k, name in enumerate(ins) if name in source]
            op, standard = node.op_type, node.domain in _STANDARD
            if op in _SAME_VALUES and used == [0] and standard and \
                    ins[0] in keeps and node.output[0] in keeps[ins[0]]:
                continue                                       # (followed in pass 1)
            if op == "Gather" and used == [1] and standard:
                axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 0)
                gathers.append((source[ins[1]], ins[0], axis))
            else:
                other.update(source[ins[k]] for k in used)
    bounds: dict[str, int] = {}
    for ids, data, axis in gathers:
        dims = tables.get(data)
        if (dims is None or data in ambiguous or not -len(dims) <= axis < len(dims)
                or min(dims, default=1) < 1):
            other.add(ids)         # computed, out of reach, ambiguous, or of no elements
        else:
            bounds[ids] = min(int(dims[axis]), bounds.get(ids, int(dims[axis])))
    return {ids: b for ids, b in bounds.items() if ids not in other or b < low}
