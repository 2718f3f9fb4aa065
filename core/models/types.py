"""What a model is: its tensors (one datatype table for ONNX, OIP and numpy), its info,
and how requests to it are batched.

Every room that names a tensor type uses this table: loading (ONNX Runtime's type strings),
the protocol codec (OIP datatypes), remote models (a server's metadata) and the MLServer
export. ``batch_mode`` is the one rule for whether requests can be packed.

Example:
    >>> OIP_DTYPES["FP32"], oip_datatype(np.dtype("int64")), onnx_type("FP64")
    (dtype('float32'), 'INT64', 'tensor(double)')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["TensorSpec", "ModelInfo", "ORT_DTYPES", "OIP_DTYPES", "oip_datatype", "onnx_type",
           "batch_mode", "interface", "interface_differences", "swap_differences",
           "alike_models"]

# One row per element type: ONNX's name, the Open Inference Protocol's, numpy's dtype.
_TYPES: tuple[tuple[str, str, np.dtype], ...] = (
    ("float", "FP32", np.dtype(np.float32)),
    ("double", "FP64", np.dtype(np.float64)),
    ("float16", "FP16", np.dtype(np.float16)),
    ("int8", "INT8", np.dtype(np.int8)),
    ("int16", "INT16", np.dtype(np.int16)),
    ("int32", "INT32", np.dtype(np.int32)),
    ("int64", "INT64", np.dtype(np.int64)),
    ("uint8", "UINT8", np.dtype(np.uint8)),
    ("uint16", "UINT16", np.dtype(np.uint16)),
    ("uint32", "UINT32", np.dtype(np.uint32)),
    ("uint64", "UINT64", np.dtype(np.uint64)),
    ("bool", "BOOL", np.dtype(np.bool_)),
)

#: ONNX Runtime type strings of the tensor element types the engine can feed.
ORT_DTYPES: dict[str, np.dtype] = {f"tensor({o})": d for o, _, d in _TYPES}
#: OIP tensor datatypes and their numpy dtypes (``BYTES`` is not a numeric tensor).
OIP_DTYPES: dict[str, np.dtype] = {p: d for _, p, d in _TYPES}
_OIP_OF_DTYPE = {d: p for _, p, d in _TYPES}
_ONNX_OF_OIP = {p: o for o, p, _ in _TYPES} | {"BYTES": "string"}


def oip_datatype(dtype: np.dtype | None) -> str:
    """The OIP datatype of a numpy dtype (``BYTES`` for strings, objects and unknowns)."""
    return _OIP_OF_DTYPE.get(np.dtype(dtype), "BYTES") if dtype is not None else "BYTES"


def onnx_type(datatype: str) -> str | None:
    """ONNX Runtime's type string for an OIP datatype (``"FP32"`` -> ``"tensor(float)"``);
    None for a datatype the protocol does not have."""
    name = _ONNX_OF_OIP.get(datatype)
    return f"tensor({name})" if name is not None else None


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as ONNX Runtime declares it.

    ``shape`` holds ints for fixed dims, the dim's name (``"N"``, ``"batch"``) for named
    dynamic dims and ``None`` for unnamed ones; it is ``None`` for non-tensor values.
    ``dtype`` is ``None`` for non-tensor values (e.g. ``seq(map(int64,tensor(float)))``).
    ``index_bound`` is set on an integer input the model uses as row numbers into a table of
    its own (Gather's indices on a weight: an embedding's ids, BERT's token types): the
    table's length, below which generated values are drawn (ids past it fail every run).

    Example:
        >>> TensorSpec("x", "tensor(float)", np.dtype("float32"), ("N", 256)).describe()
        'float32 [N,256]'
    """

    name: str
    type: str
    dtype: np.dtype | None
    shape: tuple[int | str | None, ...] | None
    index_bound: int | None = None

    @property
    def is_tensor(self) -> bool:
        return self.type.startswith("tensor(")

    def shape_text(self) -> str:
        if self.shape is None:
            return "?"
        return "[" + ",".join("?" if d is None else str(d) for d in self.shape) + "]"

    def describe(self) -> str:
        kind = str(self.dtype) if self.dtype is not None else self.type
        return f"{kind} {self.shape_text()}" if self.is_tensor else kind


@dataclass(frozen=True)
class ModelInfo:
    """What a model is: its interface, provenance and whether it can be batched.

    ``batch_mode`` is ``"dynamic"`` (leading dim dynamic on every input: requests are packed
    into batches), ``"rows"`` (leading dim fixed at 1: a request's rows run one at a time)
    or ``"exact"`` (leading dim fixed at another number, or no leading dim: each request
    must have exactly the declared shape and runs alone), or ``"alone"`` (leading dim
    dynamic, but a trial run found that rows of a batch change each other's answers: each
    request runs alone and whole, :mod:`core.models.rowcheck`). ``batch_reason`` says why.

    Example:
        >>> info.name, info.batchable, info.batch_reason
        ('mlp', True, "leading dimension 'N' is dynamic on every input")
    """

    name: str
    sha256: str
    size_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: dict[str, int]
    ir_version: int
    producer: str
    batch_mode: str
    batch_reason: str
    source: str = "upload"
    description: str = ""
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    dynamic_dims: tuple[str, ...] = ()
    #: Findings of onnx.checker on a model ONNX Runtime loads anyway (shown with it).
    warnings: tuple[str, ...] = ()
    #: What its session holds in memory, measured as it was created (at least twice the
    #: file); 0 where not measured (a remote model). What the loaded models' cap counts.
    held_bytes: int = 0

    @property
    def batchable(self) -> bool:
        return self.batch_mode == "dynamic"

    @property
    def runs_any_rows(self) -> bool:
        """Whether its runs take any number of rows: batches (``dynamic``) or a request's
        rows whole (``alone``); the sizes warm-up has to warm."""
        return self.batch_mode in ("dynamic", "alone")

    @property
    def fixed_rows(self) -> int | None:
        """Rows a request must have in ``exact`` mode (``None`` when not applicable)."""
        if self.batch_mode != "exact":
            return None
        shape = self.inputs[0].shape or ()
        return shape[0] if shape and isinstance(shape[0], int) else None

    def to_dict(self) -> dict[str, Any]:
        """A flat, JSON-friendly summary (one row of the dashboard's model table)."""
        return {
            "name": self.name,
            "source": self.source,
            "inputs": "; ".join(f"{t.name}: {t.describe()}" for t in self.inputs),
            "outputs": "; ".join(f"{t.name}: {t.describe()}" for t in self.outputs),
            "dynamic_dims": ", ".join(self.dynamic_dims),
            "batchable": self.batchable,
            "batch_mode": self.batch_mode,
            "batch_reason": self.batch_reason,
            "size_bytes": self.size_bytes,
            "held_bytes": self.held_bytes,
            "sha256": self.sha256,
            "opset": self.opset.get("", self.opset.get("ai.onnx", 0)),
            "ir_version": self.ir_version,
            "producer": self.producer,
            "providers": ", ".join(self.providers),
            "description": self.description,
            "warnings": "; ".join(self.warnings),
        }


def batch_mode(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec] = (), *,
               rows_ok: bool = True) -> tuple[str, str]:
    """How requests are run: packed (``"dynamic"``), row by row (``"rows"``) or alone
    (``"exact"``), and why. ``rows_ok=False`` (a remote server, which gets each request as
    it is) turns a batch axis fixed at 1 into ``"exact"``. No inputs declared (a remote
    server that does not say): rows are the leading axis."""
    if not inputs:
        return "dynamic", "no inputs are declared; rows are the leading axis"
    leads = []
    for spec in inputs:
        shape = spec.shape or ()
        if not shape:
            return "exact", (f"input {spec.name!r} has no leading (batch) dimension; each "
                             "request must have exactly the declared shape and runs alone")
        leads.append((spec.name, shape[0]))
    fixed = [(n, d) for n, d in leads if isinstance(d, int)]
    if not fixed:
        for spec in outputs:
            if spec.is_tensor and spec.shape and isinstance(spec.shape[0], int):
                return "exact", (f"output {spec.name!r} has a fixed leading dimension "
                                 f"{spec.shape[0]}, so batched results cannot be split per "
                                 "request; each request runs alone")
            if spec.is_tensor and spec.shape == ():
                return "exact", (f"output {spec.name!r} is a scalar, so batched results "
                                 "cannot be split per request; each request runs alone")
        names = sorted({str(d) if d is not None else "?" for _, d in leads})
        return "dynamic", f"leading dimension {', '.join(map(repr, names))} is dynamic on every input"
    if rows_ok and all(d == 1 for _, d in fixed):
        name = fixed[0][0]
        return "rows", (f"input {name!r} has its batch dimension fixed at 1; requests are "
                        "served one row at a time (re-export with a dynamic batch axis to batch)")
    name, dim = next((n, d) for n, d in fixed if d != 1)
    return "exact", (f"input {name!r} has its leading dimension fixed at {dim}; each request "
                     f"must have exactly {dim} rows and runs alone")


def interface(info: ModelInfo) -> list[tuple[str, str, Any]]:
    """What two models fed the same requests must share (an A/B test's arms, a warm-up with
    another's inputs): each input's name, type and shape, where a dynamic dimension matches
    any other whatever its label ("N", "batch", "?", None)."""
    return [(t.name, str(t.dtype), tuple(d if isinstance(d, int) else "?" for d in t.shape))
            for t in info.inputs]


def interface_differences(ia: ModelInfo, ib: ModelInfo, first: str = "the first",
                          second: str = "the second") -> list[str]:
    """How two models' inputs differ, input by input, for a person."""
    a, b = ({name: (dt, shape) for name, dt, shape in interface(i)} for i in (ia, ib))
    out = [f"input {n!r} only in {first}" for n in a if n not in b]
    out += [f"input {n!r} only in {second}" for n in b if n not in a]
    for name in (n for n in a if n in b):
        (dta, sa), (dtb, sb) = a[name], b[name]
        if dta != dtb:
            out.append(f"input {name!r} is {dta} vs {dtb}")
        if sa != sb:
            out.append(f"input {name!r} has shape [{', '.join(map(str, sa))}] vs "
                       f"[{', '.join(map(str, sb))}] (? is dynamic)")
    if not out and [n for n, *_ in interface(ia)] != [n for n, *_ in interface(ib)]:
        out.append("the inputs are in another order")
    return out


def swap_differences(old: ModelInfo, new: ModelInfo) -> list[str]:
    """What a hot swap from ``old`` to ``new`` changes for callers: inputs (requests shaped
    for the old version are refused by the new) and output names (callers reading one find
    it gone); [] when callers see no difference."""
    out = interface_differences(old, new, "the old version", "the new one")
    a, b = [o.name for o in old.outputs], [o.name for o in new.outputs]
    if a != b:
        out.append(f"outputs {', '.join(a)} become {', '.join(b)}")
    return out


def alike_models(infos: list[ModelInfo]) -> list[list[str]]:
    """Names of models that share an :func:`interface` (could be an A/B test's two arms),
    in groups of two or more, in the order given."""
    groups: dict[Any, list[str]] = {}
    for info in infos:
        key = tuple((n, d, tuple(s)) for n, d, s in interface(info))
        groups.setdefault(key, []).append(info.name)
    return [names for names in groups.values() if len(names) > 1]
