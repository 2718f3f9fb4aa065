"""Load, validate, inspect and cache ONNX models.

A model arrives as a path or as bytes (an upload). Before ONNX Runtime sees it, it is
checked here and refused with an actionable :class:`ModelLoadError` when it is empty, not
ONNX, truncated, fails ``onnx.checker``, references external data (an uploaded model must
never make the engine read another file), or uses input types the engine cannot feed.

Sessions are cached by content hash and session options, so loading the same bytes twice
shares one ``InferenceSession``; the cache is a bounded LRU that can be listed and evicted.

Example:
    >>> cache = SessionCache(capacity=4)
    >>> model = load_model_bytes(open("model.onnx", "rb").read(), name="m", cache=cache)
    >>> model.info.inputs[0].shape, model.info.batchable
    (('N', 256), True)
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError

from .config import SessionConfig, default_intra_op_threads
from .errors import ModelLoadError, ResourceLimitError
from .memory import check_elements, generated_input_limit, memory_budget

__all__ = [
    "TensorSpec",
    "ModelInfo",
    "LoadedModel",
    "SessionCache",
    "CacheEntry",
    "read_model_source",
    "load_model_bytes",
    "available_providers",
    "sample_input",
]

#: ONNX Runtime type strings of the tensor element types the engine can feed.
_ORT_DTYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
}

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

_OPT_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as ONNX Runtime declares it.

    ``shape`` holds ints for fixed dims, the dim's name (``"N"``, ``"batch"``) for named
    dynamic dims and ``None`` for unnamed ones; it is ``None`` for non-tensor values.
    ``dtype`` is ``None`` for non-tensor values (e.g. ``seq(map(int64,tensor(float)))``).

    Example:
        >>> TensorSpec("x", "tensor(float)", np.dtype("float32"), ("N", 256)).describe()
        'float32 [N,256]'
    """

    name: str
    type: str
    dtype: np.dtype | None
    shape: tuple[int | str | None, ...] | None

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
    must have exactly the declared shape and runs alone). ``batch_reason`` says why.

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

    @property
    def batchable(self) -> bool:
        return self.batch_mode == "dynamic"

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
            "sha256": self.sha256,
            "opset": self.opset.get("", self.opset.get("ai.onnx", 0)),
            "ir_version": self.ir_version,
            "producer": self.producer,
            "providers": ", ".join(self.providers),
            "description": self.description,
            "warnings": "; ".join(self.warnings),
        }


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

    def run(self, arrays: Sequence[np.ndarray],
            run_options: ort.RunOptions | None = None) -> list[Any]:
        """Run the session on inputs given in declared order; returns outputs in order.
        ``run_options`` lets another thread stop the run (``run_options.terminate``)."""
        feeds = {spec.name: a for spec, a in zip(self.info.inputs, arrays)}
        return self.session.run(self.output_names, feeds, run_options)


@dataclass(frozen=True)
class CacheEntry:
    """One cached session as listed by :meth:`SessionCache.entries`."""

    key: str
    sha256: str
    size_bytes: int
    session_config: SessionConfig
    loads: int
    last_used_s_ago: float


class SessionCache:
    """A bounded LRU of ONNX Runtime sessions keyed by (content sha256, session options).

    Evicting an entry only means the next load builds a new session; models already
    registered keep the session they hold.

    Example:
        >>> cache = SessionCache(capacity=2)
        >>> s1 = cache.get_or_create(data, SessionConfig())
        >>> s2 = cache.get_or_create(data, SessionConfig())
        >>> s1 is s2
        True
    """

    def __init__(self, capacity: int = 8) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, SessionConfig], list[Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get_or_create(self, data: bytes, options: SessionConfig,
                      sha256: str | None = None) -> ort.InferenceSession:
        sha = sha256 or hashlib.sha256(data).hexdigest()
        key = (sha, options)
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                item[2] += 1
                item[3] = time.monotonic()
                self.hits += 1
                return item[0]
        # Session creation can take seconds: do it outside the lock.
        session = _create_session(data, options)
        with self._lock:
            item = self._items.get(key)
            if item is not None:  # another thread won the race; share its session
                self._items.move_to_end(key)
                return item[0]
            self.misses += 1
            self._items[key] = [session, len(data), 1, time.monotonic()]
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return session

    def entries(self) -> list[CacheEntry]:
        now = time.monotonic()
        with self._lock:
            return [CacheEntry(key=f"{sha[:12]}/{opts.provider}/{opts.graph_optimization}"
                               f"/t{opts.intra_op_threads or 'auto'}",
                               sha256=sha, size_bytes=item[1], session_config=opts,
                               loads=item[2], last_used_s_ago=round(now - item[3], 3))
                    for (sha, opts), item in reversed(self._items.items())]

    def evict(self, sha256: str | None = None) -> int:
        """Drop entries whose sha256 starts with ``sha256`` (all when ``None``); returns count."""
        with self._lock:
            doomed = [k for k in self._items if sha256 is None or k[0].startswith(sha256)]
            for k in doomed:
                del self._items[k]
            return len(doomed)

    def __len__(self) -> int:
        return len(self._items)


def available_providers() -> list[str]:
    """Short names of the execution providers this onnxruntime build offers ('cpu', 'cuda')."""
    have = set(ort.get_available_providers())
    return [short for short, full in _PROVIDERS.items() if full in have]


def read_model_source(source: str | os.PathLike[str] | bytes | bytearray | memoryview,
                      max_bytes: int) -> tuple[bytes, str]:
    """Bytes of a model given as a path or as bytes, with a label of where it came from."""
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
    else:
        raise ModelLoadError(f"a model is a file path or bytes, got {type(source).__name__}")
    if len(data) > max_bytes:
        raise ModelLoadError(_too_big(len(data), max_bytes))
    return data, label


def _too_big(size: int, limit: int) -> str:
    return (f"the model is {size / 2**20:.1f} MiB, over the limit of {limit / 2**20:.1f} MiB; "
            "raise EngineConfig.max_model_bytes to load larger models")


def load_model_bytes(data: bytes, name: str, *, cache: SessionCache | None = None,
                     options: SessionConfig | None = None, source: str = "upload",
                     description: str = "", arena: bool = True) -> LoadedModel:
    """Validate ``data`` as an ONNX model, create (or share) its session and inspect it.

    ``arena=False`` (the memory probe) allocates with plain malloc/free, so each run's
    peak shows in the process's resident memory."""
    options = options or SessionConfig()
    proto = _parse(data)
    _refuse_external_data(proto.graph)
    warnings = _check_graph(proto)
    sha = hashlib.sha256(data).hexdigest()
    if cache is not None and arena:
        session = cache.get_or_create(data, options, sha)
    else:
        session = _create_session(data, options, arena)
    info = _inspect(name, data, sha, proto, session, source, description, warnings)
    return LoadedModel(info=info, session=session,
                       output_names=[o.name for o in info.outputs], session_config=options)


def _parse(data: bytes) -> onnx.ModelProto:
    if not data:
        raise ModelLoadError("the model file is empty (0 bytes); expected an ONNX model "
                             "(.onnx) file")
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise ModelLoadError(f"this file looks like {what}, not an ONNX model; expected "
                                 "an .onnx file exported by e.g. torch.onnx or skl2onnx")
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


def _iter_graph_tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _iter_graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from _iter_graph_tensors(sub)


def _refuse_external_data(graph: onnx.GraphProto) -> None:
    for tensor in _iter_graph_tensors(graph):
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
    return tuple(warnings)


def _create_session(data: bytes, options: SessionConfig,
                    arena: bool = True) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.enable_cpu_mem_arena = arena
    opts.intra_op_num_threads = (default_intra_op_threads() if options.intra_op_threads is None
                                 else options.intra_op_threads)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = _OPT_LEVELS[options.graph_optimization]
    # Fatal only: every error of a run reaches its request as an exception, and runs
    # stopped on purpose (RunOptions.terminate) would otherwise log an error each.
    opts.log_severity_level = 4
    if memory_budget() is not None and arena:
        # Allocate from the process's shared arena, capped at the engine's memory budget.
        opts.add_session_config_entry("session.use_env_allocators", "1")
    provider = _PROVIDERS[options.provider]
    if provider not in ort.get_available_providers():
        raise ModelLoadError(
            f"execution provider {options.provider!r} is not available in this onnxruntime "
            f"build (available: {', '.join(available_providers())}); install onnxruntime-gpu "
            "for CUDA, or use provider='cpu'")
    providers = [provider] if provider == "CPUExecutionProvider" else [provider,
                                                                        "CPUExecutionProvider"]
    try:
        return ort.InferenceSession(data, sess_options=opts, providers=providers)
    except Exception as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"ONNX Runtime could not create a session for this model: {msg}. "
                             "Check that its opset and operators are supported by onnxruntime "
                             f"{ort.__version__}") from None


def _dims(shape: Any) -> tuple[int | str | None, ...] | None:
    if shape is None:
        return None
    return tuple(d if isinstance(d, (int, str)) else None for d in shape)


def _spec(arg: Any) -> TensorSpec:
    return TensorSpec(name=arg.name, type=arg.type, dtype=_ORT_DTYPES.get(arg.type),
                      shape=_dims(arg.shape) if arg.type.startswith("tensor(") else None)


def _inspect(name: str, data: bytes, sha: str, proto: onnx.ModelProto,
             session: ort.InferenceSession, source: str, description: str,
             warnings: tuple[str, ...] = ()) -> ModelInfo:
    inputs = tuple(_spec(a) for a in session.get_inputs())
    outputs = tuple(_spec(a) for a in session.get_outputs())
    if not outputs:
        raise ModelLoadError("the model has no outputs, so every request would fail; a served "
                             "model needs at least one output")
    for spec in inputs:
        if spec.dtype is None:
            raise ModelLoadError(
                f"input {spec.name!r} has type {spec.type}, which the engine cannot feed; "
                f"supported input types are tensors of {', '.join(sorted({str(d) for d in _ORT_DTYPES.values()}))}")
        fixed = [d for d in spec.shape or () if isinstance(d, int)]
        if any(d < 0 or d > _MAX_DIM for d in fixed) or int(np.prod(fixed, dtype=object)) > _MAX_FIXED_ELEMENTS:
            raise ModelLoadError(f"input {spec.name!r} declares an absurd shape "
                                 f"{spec.shape_text()}; dimensions must be below 2^31 elements")
    mode, reason = _batch_mode(inputs, outputs)
    dynamic = sorted({d for t in inputs + outputs for d in (t.shape or ())
                      if isinstance(d, str)})
    return ModelInfo(
        name=name, sha256=sha, size_bytes=len(data), inputs=inputs, outputs=outputs,
        opset={(o.domain or ""): int(o.version) for o in proto.opset_import},
        ir_version=int(proto.ir_version),
        producer=" ".join(p for p in (proto.producer_name, proto.producer_version) if p),
        batch_mode=mode, batch_reason=reason, source=source, description=description,
        providers=tuple(session.get_providers()), dynamic_dims=tuple(dynamic),
        warnings=warnings)


def _batch_mode(inputs: Sequence[TensorSpec],
                outputs: Sequence[TensorSpec]) -> tuple[str, str]:
    """Decide how requests are run: packed ('dynamic'), row by row ('rows') or alone ('exact')."""
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
    if all(d == 1 for _, d in fixed):
        name = fixed[0][0]
        return "rows", (f"input {name!r} has its batch dimension fixed at 1; requests are "
                        "served one row at a time (re-export with a dynamic batch axis to batch)")
    name, dim = next((n, d) for n, d in fixed if d != 1)
    return "exact", (f"input {name!r} has its leading dimension fixed at {dim}; each request "
                     f"must have exactly {dim} rows and runs alone")


def sample_input(info: ModelInfo, rows: int = 1, seed: int | None = 0,
                 dynamic_size: int = 4,
                 max_bytes: int | None = None) -> np.ndarray | dict[str, np.ndarray]:
    """Random input for ``info`` with ``rows`` rows (the exact shape for non-batchable models).

    Dynamic dims other than the batch axis get ``dynamic_size``; dims sharing a name agree.
    Every input's size is checked against ``max_bytes`` (default: an eighth of the
    process's memory budget) before anything is allocated, and values are generated in the
    input's own
    dtype, so a declared shape such as ``[1, 2^31-1]`` is refused with a
    :class:`~core.errors.ResourceLimitError` naming the input and dimension instead of
    allocating tens of GiB. Returns an array for a one-input model, else a dict.

    Example:
        >>> sample_input(info, rows=3)["x"].shape  # doctest: +SKIP
        (3, 256)
    """
    budget = max_bytes if max_bytes is not None else generated_input_limit(memory_budget())
    shapes: dict[str, list[int]] = {}
    total = 0
    for spec in info.inputs:
        shape = []
        for i, d in enumerate(spec.shape or ()):
            if i == 0 and info.batch_mode in ("dynamic", "rows"):
                shape.append(rows)
            elif isinstance(d, int):
                shape.append(d)
            else:
                shape.append(dynamic_size)
        assert spec.dtype is not None
        total += check_elements(f"input {spec.name!r}", shape, spec.dtype, budget)
        shapes[spec.name] = shape
    if budget is not None and total > budget:
        raise ResourceLimitError(
            f"the inputs of model {info.name!r} with {rows} rows need {total / 2**20:.1f} MiB "
            f"together, over the {budget / 2**20:.1f} MiB the engine generates at most (1/8 "
            "of its memory budget); use fewer rows or raise EngineConfig.memory_budget_bytes")
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for spec in info.inputs:
        shape, dtype = shapes[spec.name], spec.dtype
        if dtype in (np.float32, np.float64):
            arr = rng.standard_normal(shape, dtype=dtype.type)
        elif dtype.kind == "f":
            arr = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        elif dtype.kind == "b":
            arr = rng.integers(0, 2, size=shape, dtype=np.uint8).astype(bool)
        elif dtype.kind in "iu":
            arr = rng.integers(0, 10, size=shape, dtype=dtype.type)
        else:
            arr = np.zeros(shape, dtype=dtype)
        arrays[spec.name] = arr
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    return arrays
