"""Load, validate and inspect ONNX models.

A model arrives as a path or as bytes (an upload). Before ONNX Runtime sees it, it is
checked here and refused with an actionable :class:`ModelLoadError` when it is empty, not
ONNX, truncated, fails ``onnx.checker``, references external data (an uploaded model must
never make the engine read another file), or uses input types the engine cannot feed.
Sessions come from the :class:`~core.models.cache.SessionCache` (shared by content hash).

Example:
    >>> cache = SessionCache(capacity=4)
    >>> model = load_model_bytes(open("model.onnx", "rb").read(), name="m", cache=cache)
    >>> model.info.inputs[0].shape, model.info.batchable
    (('N', 256), True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError

from core.config import SessionConfig
from core.errors import ModelLoadError
from .cache import SessionCache, created_session
from .folding import size_folding
from .memory import default_memory_budget, format_bytes, memory_budget
from .shrink import watch_outputs
from .ids import index_bounds
from .sampling import GENERATED_INT_HIGH
from .types import ORT_DTYPES, ModelInfo, TensorSpec, batch_mode

__all__ = ["LoadedModel", "read_model_source", "load_model_bytes", "check_model_bytes",
           "refuse_not_onnx"]

# Dimensions beyond these are refused: a declared shape this large cannot be served here.
_MAX_DIM = 2**31 - 1
_MAX_FIXED_ELEMENTS = 2**31

_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a zip archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"%PDF", "a PDF document"),
    (b"\x7fELF", "an executable (ELF)"),
    (b"{", "a JSON or text file"),
    (b"<", "an HTML or XML file"),
)


@dataclass
class LoadedModel:
    """A validated model with its (possibly shared) ONNX Runtime session."""

    info: ModelInfo
    session: ort.InferenceSession
    output_names: list[str] = field(default_factory=list)
    #: batch sizes this model's runs have fed the session (see ModelRunner)
    sizes_run: set[int] = field(default_factory=set)
    #: the session options it was created with
    session_config: SessionConfig | None = None
    #: its graph (subgraphs and functions included) has a DynamicQuantizeLinear node: one
    #: quantization scale per batch (core/models/rowcheck.py)
    quantizes_per_batch: bool = False

    def run(self, arrays: Sequence[np.ndarray],
            run_options: ort.RunOptions | None = None) -> list[Any]:
        """Run the session on inputs given in declared order; returns outputs in order.
        ``run_options`` lets another thread stop the run (``run_options.terminate``)."""
        feeds = {spec.name: a for spec, a in zip(self.info.inputs, arrays)}
        outs = self.session.run(self.output_names, feeds, run_options)
        watch_outputs(outs)   # large ones: the arena gives their memory back once gone
        return outs


def read_model_source(source: str | os.PathLike[str] | bytes | bytearray | memoryview,
                      max_bytes: int) -> tuple[bytes, str]:
    """Bytes of a model given as a path, as bytes or as an ``onnx.ModelProto``, with a label
    of where it came from."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = "upload"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ModelLoadError(f"model file {str(path)!r} does not exist; give the path of "
                                 "an .onnx file or the model's bytes")
        if not path.is_file():
            raise ModelLoadError(f"{str(path)!r} is not a file; give the path of an .onnx file")
        size = path.stat().st_size
        if size > max_bytes:
            raise ModelLoadError(_too_big(size, max_bytes))
        data = path.read_bytes()
        label = str(path)
    elif isinstance(source, onnx.ModelProto):   # (a notebook's model, built or converted)
        if source.ByteSize() > max_bytes:
            raise ModelLoadError(_too_big(source.ByteSize(), max_bytes))
        data, label = source.SerializeToString(), "upload"
    else:
        raise ModelLoadError(f"a model is a file path, its bytes or an onnx.ModelProto, got "
                             f"{type(source).__name__}")
    if len(data) > max_bytes:
        raise ModelLoadError(_too_big(len(data), max_bytes))
    return data, label


def _too_big(size: int, limit: int) -> str:
    return (f"the model is {size / 2**20:.1f} MiB, over the limit of {limit / 2**20:.1f} MiB; "
            "raise EngineConfig.max_model_bytes to load larger models")


def load_model_bytes(data: bytes, name: str, *, cache: SessionCache | None = None,
                     options: SessionConfig | None = None, source: str = "upload",
                     description: str = "", arena: bool = True,
                     budget_bytes: int | None = None) -> LoadedModel:
    """Validate ``data`` as an ONNX model, create (or share) its session and inspect it.

    ``arena=False`` (the memory probe) allocates with plain malloc/free, so each run's
    peak shows in the process's resident memory. ``budget_bytes``: the memory budget a
    constant folded at session creation is held to (default: the one in force)."""
    options = options or SessionConfig()
    proto, warnings = check_model_bytes(data)
    fold, left_off = _refuse_folding_past_budget(proto, len(data), budget_bytes,
                                                 options.graph_optimization != "disabled")
    if left_off:
        warnings = (*warnings, left_off)
    # What the inspection needs of the parsed graph; the graph itself (as large as the
    # file) goes before the session's weights are made: one copy fewer at the peak.
    meta = _ProtoMeta(proto)
    del proto
    sha = hashlib.sha256(data).hexdigest()
    if cache is not None and arena:
        session = cache.get_or_create(data, options, sha, fold=fold)
        held = cache.held_bytes(sha, options, fold) or 2 * len(data)   # (evicted meanwhile)
    else:
        session, held = created_session(data, options, arena, fold=fold)
    info = dataclasses.replace(_inspect(name, data, sha, meta, session, source, description,
                                        warnings), held_bytes=held)
    return LoadedModel(info=info, session=session,
                       output_names=[o.name for o in info.outputs], session_config=options,
                       quantizes_per_batch=meta.quantizes_per_batch)


def _refuse_folding_past_budget(proto: onnx.ModelProto, size: int,
                                budget: int | None = None, folds: bool = True
                                ) -> tuple[bool, str | None]:
    """A model whose constant folding would make a tensor past a quarter of the memory
    budget (and twice the file) is refused before ONNX Runtime creates its session: folding
    runs outside every arena cap (an in-process engine took 2 GB for a 200-byte file under
    a 256 MiB budget; an adversary); so is one whose sparse initializers are that large made
    dense (done as it loads, folding or not). ``(fold, warning)``: whether ONNX Runtime may
    fold it, and when not, the model's warning why: where the sizes cannot be told (a
    subgraph, a function of its own, a shape past what the check computes) folding is left
    off, what it would fold computed at run time under the budget instead (an ``If`` whose
    untaken branch folded 4 GB past the trial run's cap; an adversary)."""
    found = size_folding(proto)
    limit = max((budget or memory_budget() or default_memory_budget()) // 4, 2 * size)
    if found.dense is not None and found.dense[0] > limit:
        raise _past_budget(
            f"opening this model would make {found.dense[1]} dense, "
            f"{format_bytes(found.dense[0])}: ONNX Runtime does so as it loads a model",
            limit, "store the tensor dense in the file")
    if not folds:
        return True, None
    if found.unknown is not None:
        return False, (f"constant folding is left off: {found.unknown}, so what ONNX "
                       "Runtime would fold cannot be sized before it does; it is computed as "
                       "the model runs instead, under the memory budget "
                       "(graph_optimization='disabled' says so outright; an export with its "
                       "constants folded, e.g. by onnxsim, gets the folding back)")
    if found.largest is not None and found.largest[0] > limit:
        raise _past_budget(
            f"opening this model would compute a constant of {format_bytes(found.largest[0])} "
            f"({found.largest[1]}): ONNX Runtime folds constants while it creates a session",
            limit, "re-export it without the oversized constant")
    return True, None


def _past_budget(opening: str, limit: int, otherwise: str) -> ModelLoadError:
    """The refusal of a model whose opening (``opening``: what ONNX Runtime would make,
    and when) is past ``limit``, a quarter of the memory budget."""
    return ModelLoadError(
        f"{opening}, before any memory cap holds, and this is over {format_bytes(limit)}, "
        "a quarter of the memory budget. A model meant to need that much needs a larger "
        f"memory_budget_bytes; otherwise {otherwise}")


def check_model_bytes(data: bytes) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """``data`` parsed and checked as an ONNX model without creating a session (no
    constant folding, nothing run): ``(proto, onnx.checker's findings)``; a file that is not
    one raises :class:`ModelLoadError` saying why."""
    proto = _parse(data)
    _refuse_external_data(proto)
    return proto, _check_graph(proto)


def refuse_not_onnx(data: bytes) -> None:
    """The checks that need no parse (an empty file, another format's magic bytes): cheap
    enough for a process that must not parse an untrusted model itself (a 168 MiB model of
    nested subgraphs took 7.65 GB to parse and check: the trial-run child does that)."""
    if not data:
        raise ModelLoadError("the model file is empty (0 bytes); expected an ONNX model "
                             "(.onnx) file")
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise ModelLoadError(f"this file looks like {what}, not an ONNX model; expected "
                                 "an .onnx file exported by e.g. torch.onnx or skl2onnx")


def _parse(data: bytes) -> onnx.ModelProto:
    refuse_not_onnx(data)
    try:
        proto = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as err:
        raise ModelLoadError(
            "the file is not a valid ONNX model (its protobuf could not be parsed: the file "
            f"is truncated or is not ONNX): {err}") from None
    # Random bytes sometimes parse as a protobuf: an ONNX model has an IR version and a graph.
    if proto.ir_version <= 0 or not proto.HasField("graph"):
        raise ModelLoadError("the file is not an ONNX model (no IR version or no graph "
                             "found: it is truncated or another format)")
    return proto


def _iter_attr_tensors(attr: Any):
    if attr.HasField("t"):
        yield attr.t
    yield from attr.tensors
    if attr.HasField("sparse_tensor"):
        yield attr.sparse_tensor.values
        yield attr.sparse_tensor.indices
    for sparse in attr.sparse_tensors:
        yield sparse.values
        yield sparse.indices
    if attr.HasField("g"):
        yield from _iter_graph_tensors(attr.g)
    for sub in attr.graphs:
        yield from _iter_graph_tensors(sub)


def _iter_nodes_tensors(nodes: Any):
    for node in nodes:
        for attr in node.attribute:
            yield from _iter_attr_tensors(attr)


def _iter_graph_tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _iter_nodes_tensors(graph.node)


def _iter_model_tensors(proto: onnx.ModelProto):
    """Every tensor a model holds: its graph's (subgraphs too), its local functions' (their
    nodes' and their attributes' defaults) and its training graphs' (an adversary read
    README.md through a function's Constant, a reviewer through a default)."""
    yield from _iter_graph_tensors(proto.graph)
    for function in proto.functions:
        yield from _iter_nodes_tensors(function.node)
        for attr in function.attribute_proto:
            yield from _iter_attr_tensors(attr)
    for info in proto.training_info:
        yield from _iter_graph_tensors(info.initialization)
        yield from _iter_graph_tensors(info.algorithm)


def _refuse_external_data(proto: onnx.ModelProto) -> None:
    for tensor in _iter_model_tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            where = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise ModelLoadError(
                f"tensor {tensor.name!r} stores its data in an external file ({where!r}); "
                "models with external data are refused because loading them would read other "
                "files. Save the model with all weights inside it "
                "(onnx.save_model(model, path, save_as_external_data=False))")


def _check_graph(proto: onnx.ModelProto) -> tuple[str, ...]:
    """Structural checks that refuse; onnx.checker's findings are returned as warnings:
    ONNX Runtime is the judge of whether a model loads (it loads models the checker
    rejects, e.g. onnxruntime's own datasets/mul_1.onnx), and a model it cannot run is
    refused when its session is created."""
    warnings: list[str] = []
    try:
        onnx.checker.check_model(proto)
    except Exception as err:  # ValidationError, or plain errors on malformed graphs
        first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        warnings.append(f"onnx.checker: {first}")
    initializers = {t.name for t in proto.graph.initializer}
    real_inputs = [i for i in proto.graph.input if i.name not in initializers]
    if not real_inputs:
        raise ModelLoadError("the model declares no inputs; a served model needs at least one "
                             "input tensor")
    if not proto.graph.output:
        raise ModelLoadError("the model declares no outputs, so every request would fail; a "
                             "served model needs at least one output")
    names = [o.name for o in proto.graph.output]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        # (its metadata listed the output twice, its answers once: a client counting the
        # outputs it was told of failed; an adversary)
        raise ModelLoadError(f"the model declares output {twice[0]!r} {names.count(twice[0])} "
                             "times; each output needs a name of its own (rename the copies, "
                             "e.g. with an Identity node each)")
    return tuple(warnings)


def _dims(shape: Any) -> tuple[int | str | None, ...] | None:
    if shape is None:
        return None
    return tuple(d if isinstance(d, (int, str)) else None for d in shape)


def _spec(arg: Any, index_bound: int | None = None) -> TensorSpec:
    return TensorSpec(name=arg.name, type=arg.type, dtype=ORT_DTYPES.get(arg.type),
                      shape=_dims(arg.shape) if arg.type.startswith("tensor(") else None,
                      index_bound=index_bound)


class _ProtoMeta:
    """The few fields of a parsed model that its ModelInfo shows."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.opset = {(o.domain or ""): int(o.version) for o in proto.opset_import}
        self.ir_version = int(proto.ir_version)
        self.producer = " ".join(p for p in (proto.producer_name, proto.producer_version) if p)
        self.index_bounds = index_bounds(proto.graph, GENERATED_INT_HIGH)
        self.quantizes_per_batch = _has_op(proto, "DynamicQuantizeLinear")


def _has_op(proto: onnx.ModelProto, op_type: str) -> bool:
    """Whether a node of ``op_type`` is in the graph, its subgraphs or its functions (its
    description naming it is not: a doc_string bought a row check's looser tolerance; a
    reviewer)."""
    bodies = [proto.graph, *proto.functions]   # (each has .node)
    while bodies:
        for n in bodies.pop().node:
            if n.op_type == op_type:
                return True
            for a in n.attribute:
                bodies.extend([a.g] if a.type == onnx.AttributeProto.GRAPH else a.graphs)
    return False


def _inspect(name: str, data: bytes, sha: str, proto: _ProtoMeta,
             session: ort.InferenceSession, source: str, description: str,
             warnings: tuple[str, ...] = ()) -> ModelInfo:
    inputs = tuple(_spec(a, proto.index_bounds.get(a.name)) for a in session.get_inputs())
    outputs = tuple(_spec(a) for a in session.get_outputs())
    if not outputs:
        raise ModelLoadError("the model has no outputs, so every request would fail; a served "
                             "model needs at least one output")
    for spec in inputs:
        if spec.dtype is None:
            raise ModelLoadError(
                f"input {spec.name!r} has type {spec.type}, which the engine cannot feed; "
                f"supported input types are tensors of {', '.join(sorted({str(d) for d in ORT_DTYPES.values()}))}")
        fixed = [d for d in spec.shape or () if isinstance(d, int)]
        if any(d < 0 or d > _MAX_DIM for d in fixed) or int(np.prod(fixed, dtype=object)) > _MAX_FIXED_ELEMENTS:
            raise ModelLoadError(f"input {spec.name!r} declares an absurd shape "
                                 f"{spec.shape_text()}; dimensions must be below 2^31 elements")
    mode, reason = batch_mode(inputs, outputs)
    dynamic = sorted({d for t in inputs + outputs for d in (t.shape or ())
                      if isinstance(d, str)})
    return ModelInfo(
        name=name, sha256=sha, size_bytes=len(data), inputs=inputs, outputs=outputs,
        opset=proto.opset, ir_version=proto.ir_version, producer=proto.producer,
        batch_mode=mode, batch_reason=reason, source=source, description=description,
        providers=tuple(session.get_providers()), dynamic_dims=tuple(dynamic),
        warnings=warnings)
