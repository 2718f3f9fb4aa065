"""Open Inference Protocol (KServe v2) tensors: JSON, and the binary tensor data extension.

A request body is a JSON object — or, with the binary extension, a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw bytes of every input whose
``parameters.binary_data_size`` is set, in the order the inputs are listed (Triton's
format: little-endian, row-major; BYTES elements as a 4-byte length and the bytes). An
answer uses the binary form for an output when the request asks for it (the output's
``parameters.binary_data``, or the request's ``parameters.binary_data_output``).

Errors are :class:`OIPError` with the HTTP status to answer and a message that says what
was wrong and what is expected.

Example:
    >>> arrays, req = parse_infer_request(body, header_length)
    >>> body, header_length = encode_infer_response(req, "mlp", outputs, extra={})
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from . import jsontext
from .jsonvalues import holds_literals, json_values
from .oip_answer import (check_answer, check_flag, check_outputs_asked, encode_infer_response,
                         encode_infer_response_parts, held_bytes, text_answer_bytes)
from .status import HTTPError
from core.models import OIP_DTYPES, ModelInfo, oip_datatype

__all__ = ["OIPError", "metadata", "parse_infer_request", "encode_infer_response",
           "encode_infer_response_parts", "check_answer", "HEADER_LENGTH", "datatype_words",
           # (the answer's side, in oip_answer.py, here too: callers ask oip for them)
           "check_outputs_asked", "text_answer_bytes", "held_bytes"]

#: The header that carries the JSON part's length in a binary request or answer.
HEADER_LENGTH = "Inference-Header-Content-Length"
#: The longest request ``id`` taken (it is echoed in the answer: a long one is a long answer).
MAX_ID_CHARS = 1024

#: A request the protocol says is wrong, with the HTTP status to answer.
OIPError = HTTPError


def _shape(spec_shape: Any) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in (spec_shape or ())]


def metadata(name: str, info: ModelInfo) -> dict[str, Any]:
    """Model metadata as ``GET /v2/models/{name}`` answers it."""
    return {"name": name, "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": [{"name": t.name, "datatype": oip_datatype(t.dtype),
                        "shape": _shape(t.shape)} for t in info.inputs],
            "outputs": [{"name": t.name, "datatype": oip_datatype(t.dtype),
                         "shape": _shape(t.shape)} for t in info.outputs]}


def _tensor(t: Any, binary: memoryview, offset: int,
            literals: bool = True) -> tuple[str, np.ndarray, int]:
    if not isinstance(t, dict):
        raise OIPError(400, "each entry of 'inputs' must be an object with name, shape, "
                            "datatype and data")
    name, shape, dt, data = (t.get(k) for k in ("name", "shape", "datatype", "data"))
    if not isinstance(name, str):
        raise OIPError(400, "an input has no 'name' (a string)")
    if (not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                               and d >= 0 for d in shape)):
        raise OIPError(400, f"input {name!r}: 'shape' must be a list of non-negative "
                            f"integers, got {shape!r}")
    dtype = OIP_DTYPES.get(dt) if isinstance(dt, str) else None
    if dtype is None:
        raise OIPError(400, f"input {name!r}: datatype {dt!r} is not supported; expected one "
                            f"of {', '.join(OIP_DTYPES)}")
    expected = math.prod(shape)
    size = (t.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise OIPError(400, f"input {name!r}: binary_data_size must be a non-negative "
                                f"integer, got {size!r}")
        if size != expected * dtype.itemsize:
            raise OIPError(400, f"input {name!r}: binary_data_size is {size} bytes but shape "
                                f"{shape} of {dt} needs {expected * dtype.itemsize}")
        if offset + size > len(binary):
            raise OIPError(400, f"input {name!r}: the body ends {offset + size - len(binary)} "
                                "bytes short of its binary data (check "
                                f"{HEADER_LENGTH} and binary_data_size)")
        arr = np.frombuffer(binary[offset:offset + size], dtype=dtype.newbyteorder("<"))
        return name, _shaped(arr.astype(dtype, copy=False), shape, name), offset + size
    arr = json_values(data, dtype, name, dt, literals)   # a value of another kind is refused
    if arr.size != expected:
        raise OIPError(400, f"input {name!r}: shape {shape} needs {expected} values, got "
                            f"{arr.size}")
    if arr.dtype.kind == "f" and np.isinf(arr).any():
        # strict JSON has no infinities: one here is a number too large for the datatype
        # (1e39 as FP32), which would silently become inf. (A null is a missing value: NaN.)
        bad = np.flatnonzero(np.isinf(arr.reshape(-1)))
        raise OIPError(400, f"input {name!r}: {len(bad)} value(s) out of {dt}'s range "
                            f"(the first at flat index {int(bad[0])}); send values within "
                            f"±{float(np.finfo(dtype).max):.4g} (null for a missing value), "
                            "or binary data for infinities")
    return name, _shaped(arr, shape, name), offset


def _shaped(arr: np.ndarray, shape: list[int], name: str) -> np.ndarray:
    try:   # ([0, 2**70]: no values, and a dimension numpy refuses)
        return arr.reshape(shape)
    except ValueError as err:
        need = ("each dimension must be below 2**63" if max(shape) >= 2**63 else f"its non-"
                f"zero dimensions times {arr.itemsize} bytes a value must stay below 2**63 bytes")
        raise OIPError(400, f"input {name!r}: shape {str(shape)[:80]} cannot be made ({err}); "
                            f"{need}") from None


def _split_body(raw: bytes, header_length: int | None, status: int, what: str,
                strict: bool = True, max_parsed_bytes: int | None = None
                ) -> tuple[Any, memoryview]:
    """The JSON part of a request or answer (parsed) and its binary part; ``status`` and
    ``what`` ("the request body", "the server's answer") word the errors. ``strict``: a
    bare NaN/Infinity is an error (requests); answers from other servers are read as they
    come (some write NaN)."""
    if header_length is not None:
        if not 0 <= header_length <= len(raw):
            raise OIPError(status, f"{HEADER_LENGTH} is {header_length} but {what} has "
                                   f"{len(raw)} bytes")
        head, binary = raw[:header_length], memoryview(raw)[header_length:]
    else:
        head, binary = raw, memoryview(b"")
    try:
        jsontext.check_size(head, max_parsed_bytes)
        return (jsontext.loads(head) if strict else json.loads(head)), binary
    except jsontext.JSONTooLarge as err:
        if not strict:  # an answer from another server
            raise OIPError(status, f"{what}'s JSON is too large to read here: {err}; ask "
                                   "for binary outputs") from None
        raise OIPError(413, too_large_words(what, err)) from None
    except (ValueError, UnicodeDecodeError) as err:
        raise OIPError(status, f"{what} is not valid JSON: {err}") from None
    except RecursionError:
        raise OIPError(status, f"{what} nests JSON too deeply") from None


def too_large_words(what: str, err: jsontext.JSONTooLarge) -> str:
    """The 413's words for a request whose JSON would parse past the bound."""
    return (f"{what}'s JSON is too large for this server: {err}; send the tensors as binary "
            f"data (the binary tensor extension, {HEADER_LENGTH}) or fewer values per "
            "request")


def parse_infer_request(raw: bytes, header_length: int | None = None,
                        max_parsed_bytes: int | None = None
                        ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The input arrays (by name, in order) and the JSON part of an infer request; a JSON
    part that could take more than ``max_parsed_bytes`` to parse is a 413, unparsed."""
    req, binary = _split_body(raw, header_length, 400, "the request body",
                              max_parsed_bytes=max_parsed_bytes)
    _check_request(req)
    return assemble_inputs(req, binary, literals=holds_literals(raw, header_length)), req


def _check_request(req: Any) -> None:
    """The request's shape beyond its inputs' values: objects where objects belong, so
    that nothing later meets a list where it reads a field (a 400 saying which, not a 500)."""
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise OIPError(400, "the request must be a JSON object with an 'inputs' list")
    if "id" in req and not (isinstance(req["id"], str) and len(req["id"]) <= MAX_ID_CHARS):
        raise OIPError(400, f"the request's 'id' must be a string of at most {MAX_ID_CHARS} "
                            f"characters (it is echoed in the answer), got "
                            f"{type(req['id']).__name__} {str(req['id'])[:40]!r}")
    _check_parameters(req, "the request")
    _check_flag(req, "binary_data_output", "the request's parameters.binary_data_output")
    seen: set[Any] = set()
    for t in req["inputs"]:
        if isinstance(t, dict):
            _check_parameters(t, f"input {t.get('name')!r}")
            name = t.get("name")
            if isinstance(name, str):
                if name in seen:   # (the later one would silently replace the first)
                    raise OIPError(400, f"input {name!r} is given twice; send each of the "
                                        "model's inputs once")
                seen.add(name)
    outputs = req.get("outputs")
    if outputs is None:
        return
    if not isinstance(outputs, list):
        raise OIPError(400, "the request's 'outputs' must be a list of objects, each with the "
                            f"'name' of an output, got {type(outputs).__name__}")
    for o in outputs:
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise OIPError(400, "each of the request's 'outputs' must be an object with the "
                                f"'name' of an output (a string), got {str(o)[:60]!r}")
        _check_parameters(o, f"output {o['name']!r}")
        _check_flag(o, "binary_data", f"output {o['name'][:60]!r}: parameters.binary_data")


def _check_parameters(obj: dict[str, Any], where: str) -> None:
    params = obj.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise OIPError(400, f"{where}: 'parameters' must be an object (name: value), got "
                            f"{type(params).__name__} {str(params)[:40]!r}")


def _check_flag(obj: dict[str, Any], key: str, where: str) -> None:
    """A true/false parameter is one, checked before the request is queued."""
    value = (obj.get("parameters") or {}).get(key)
    if value is not None:
        check_flag(value, where)


def parse_infer_json(head: bytes | bytearray, max_parsed_bytes: int | None = None
                     ) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """The JSON part of an infer request (``head``) parsed: the inputs whose values are in
    the JSON, as arrays by their position (their ``data`` dropped from the request), and
    the request; inputs with binary data are left for :func:`assemble_inputs`. (The
    server's parser child does this part; see core/serving/bodyparse.py.)"""
    req, _ = _split_body(head, None, 400, "the request body",
                         max_parsed_bytes=max_parsed_bytes)
    _check_request(req)
    converted: dict[int, np.ndarray] = {}
    literals = holds_literals(head)
    for i, t in enumerate(req["inputs"]):
        if isinstance(t, dict) and (t.get("parameters") or {}).get("binary_data_size") is None:
            converted[i] = _tensor(t, memoryview(b""), 0, literals)[1]
            t.pop("data", None)
    return converted, req


def assemble_inputs(req: dict[str, Any], binary: memoryview,
                    converted: dict[int, np.ndarray] | None = None,
                    literals: bool = True) -> dict[str, np.ndarray]:
    """The input arrays of a parsed request, by name, in order: binary ones as views of
    ``binary``, the others from their JSON values (or ``converted``, by position).
    ``literals``: whether its JSON may hold true/false (then looked at value by value)."""
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for i, t in enumerate(req["inputs"]):
        if converted is not None and i in converted:
            arrays[t["name"]] = converted[i]
            continue
        name, arr, offset = _tensor(t, binary, offset, literals)
        arrays[name] = arr
    if offset != len(binary):
        raise OIPError(400, f"the body has {len(binary) - offset} bytes of binary data that no "
                            "input's binary_data_size accounts for")
    return arrays


def datatype_words(info: ModelInfo, arrays: dict[str, np.ndarray]) -> str:
    """The datatypes an OIP caller sent and the model's, in the protocol's names, for an
    error that names numpy's ("expects float32 ..., got float16"), or ``""`` when every
    input's type is the model's."""
    wrong = [(t.name, oip_datatype(t.dtype), oip_datatype(arrays[t.name].dtype))
             for t in info.inputs if t.name in arrays and t.dtype is not None
             and np.dtype(t.dtype) != arrays[t.name].dtype]
    return "; ".join(f"input {n!r} is {want} in the protocol's names, {got} was sent"
                     for n, want, got in wrong)
