"""Open Inference Protocol answers: the outputs a request asks for, each as JSON or as
binary data, checked before they are encoded (an unknown output, JSON too large to encode,
NaN in strict JSON: each a 4xx that says what to ask instead). Requests are read in
:mod:`core.protocol.oip`, which re-exports these names.
"""

from __future__ import annotations

import json
import secrets
import struct
from typing import Any

import numpy as np

from . import jsontext
from .status import HTTPError as OIPError
from core.models import oip_datatype

__all__ = ["encode_infer_response", "encode_infer_response_parts", "check_outputs_asked",
           "text_answer_bytes", "held_bytes", "check_answer"]

# A binary output at least this large is answered as a view of its memory, not a copy.
_VIEW_BYTES = 1 << 20
#: A numeric output of more values than this is written as JSON in pieces of this many:
#: encoded whole, 16.7 M values held the interpreter ~2 s (every other model's requests
#: waited: 7 -> 3,600 ms; an adversary); between pieces other threads run.
JSON_PIECE = 16_384


def _bytes_elements(values: list[Any]) -> bytearray:
    out = bytearray()   # (given as it is: bytes() of it would be a second copy)
    for b in (v if isinstance(v, bytes) else str(v).encode() for v in values):
        out += struct.pack("<I", len(b)) + b
    return out


def _output(name: str, value: Any, binary: bool) -> tuple[dict[str, Any], bytes]:
    if isinstance(value, np.ndarray) and oip_datatype(value.dtype) != "BYTES":
        entry = {"name": name, "datatype": oip_datatype(value.dtype), "shape": list(value.shape)}
        if binary:
            arr = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
            # A large output travels as a view of its own memory, not a copy (the server
            # writes it out in slices: core/serving/asgi.py)
            raw = (memoryview(arr.reshape(-1).view(np.uint8)) if arr.nbytes >= _VIEW_BYTES
                   else arr.tobytes())
            entry["parameters"] = {"binary_data_size": arr.nbytes}
            return entry, raw
        entry["data"] = value.reshape(-1).tolist()
        return entry, b""
    if isinstance(value, np.ndarray):  # strings or objects
        shape, values = list(value.shape), [str(v) for v in value.reshape(-1).tolist()]
    else:  # non-tensor outputs (sequences of maps from converted classifiers): JSON per row
        rows = list(value) if isinstance(value, (list, tuple)) else [value]
        shape, values = [len(rows)], [json.dumps(r, default=str) for r in rows]
    entry = {"name": name, "datatype": "BYTES", "shape": shape}
    if binary:
        raw = _bytes_elements(values)
        entry["parameters"] = {"binary_data_size": len(raw)}
        return entry, raw
    entry["data"] = values
    return entry, b""


def encode_infer_response(req: dict[str, Any], model: str, outputs: dict[str, Any],
                          extra: dict[str, Any], max_json_bytes: int | None = None
                          ) -> tuple[bytes, int | None]:
    """The answer's body and, when any output is binary, the JSON part's length; an answer
    past ``max_json_bytes`` encoded (:func:`_check_json_size`) is refused before encoding."""
    parts, head_len = encode_infer_response_parts(req, model, outputs, extra, max_json_bytes)
    return (parts[0] if len(parts) == 1 else b"".join(parts)), head_len


def encode_infer_response_parts(req: dict[str, Any], model: str, outputs: dict[str, Any],
                                extra: dict[str, Any], max_json_bytes: int | None = None
                                ) -> tuple[list[Any], int | None]:
    """:func:`encode_infer_response` as the body's parts, in order: the JSON, then each
    binary output (a large one a view of the output's own memory: no copy is made)."""
    chosen = _chosen(req, model, outputs, max_json_bytes)
    entries, blobs, pieced = [], [], {}
    any_binary = any(binary for _, binary in chosen)
    mark = ""
    for name, binary in chosen:
        value = outputs[name]
        if not binary and isinstance(value, np.ndarray) and value.size > JSON_PIECE \
                and oip_datatype(value.dtype) != "BYTES":   # (written in pieces, below)
            # (no caller's id can hold it; made only for such an answer: urandom's cost)
            mark = mark or f"batchlab-data-{secrets.token_hex(8)}-"
            pieced[f"{mark}{len(pieced)}"] = value
            entry = {"name": name, "datatype": oip_datatype(value.dtype),
                     "shape": list(value.shape), "data": f"{mark}{len(pieced) - 1}"}
            raw = b""
        else:
            entry, raw = _output(name, value, binary)
        entries.append(entry)
        blobs.append(raw)
    body: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": entries,
                            "parameters": extra}
    if "id" in req:
        body["id"] = req["id"]
    try:
        head = [json.dumps(body, allow_nan=False).encode()]
        if pieced:
            head = _pieces(head[0], pieced)
    except ValueError:
        raise OIPError(422, _non_finite(model, outputs, chosen)) from None
    if not any_binary:
        return head, None
    return [*head, *[b for b in blobs if len(b)]], sum(len(h) for h in head)


def _pieces(text: bytes, pieced: dict[str, np.ndarray]) -> list[bytes]:
    """``text`` with each marker's string replaced by its output's values as a JSON list,
    encoded :data:`JSON_PIECE` values at a time (parts of the body, never joined)."""
    parts: list[bytes] = []
    for marker, value in pieced.items():
        before, text = text.split(b'"' + marker.encode() + b'"', 1)
        parts += [before, b"["]
        flat = value.reshape(-1)
        for i in range(0, flat.size, JSON_PIECE):
            if i:
                parts.append(b", ")
            parts.append(json.dumps(flat[i:i + JSON_PIECE].tolist(),
                                    allow_nan=False)[1:-1].encode())
        parts.append(b"]")
    return [*parts, text]


def check_outputs_asked(model: str, wanted: list[Any], known: list[str] | None) -> None:
    """Refuse (400) a request's ``outputs`` that name an output the model does not have
    (``known`` None: not declared, not checked) or one output more than once (400,000
    copies of one would be a 268 MiB answer from a 5.7 MiB request): the server asks before
    the request is queued, and encoding asks again for callers that reach it directly."""
    has = f"model {model!r}'s outputs {sorted(known)}" if known is not None \
        else f"model {model!r}'s outputs"
    wanted = [str(n) for n in wanted]
    unknown = [n for n in wanted if n not in known] if known is not None else []
    if unknown:
        raise OIPError(400, f"unknown output(s) {[n[:60] for n in unknown[:5]]}; ask for "
                            f"{has}")
    if len(set(wanted)) < len(wanted):
        seen: set[str] = set()
        twice = sorted({n[:60] for n in wanted if n in seen or seen.add(n)})[:5]
        raise OIPError(400, f"output(s) {twice} asked for more than once; ask for each of "
                            f"{has} at most once")


def text_answer_bytes(req: dict[str, Any], outputs: dict[str, Any]) -> int:
    """Bytes of ``outputs`` the answer to ``req`` encodes element by element: those asked
    as JSON, and binary ones that are not numbers in one block of memory (strings,
    sequences). Numbers asked as binary data are views of the outputs: cheap at any size.
    (0 for a request :func:`encode_infer_response` would refuse: it says why.)"""
    try:
        chosen = _chosen(req, "", outputs, None)
    except OIPError:
        return 0
    total = 0
    for name, binary in chosen:
        a = outputs[name]
        if not (binary and isinstance(a, np.ndarray) and a.dtype.kind in "biuf"
                and a.flags.c_contiguous):   # (many strings: not walked, large anyway)
            total += held_bytes(a) if getattr(a, "size", 0) <= 65_536 else 2**40
    return total


def _text(value: Any) -> bool:   # strings (or objects): encoded element by element
    return isinstance(value, np.ndarray) and value.dtype.kind in "OSU"


def held_bytes(value: Any) -> int:
    """An output's bytes, strings by their UTF-8 length (``nbytes`` counts 8 an object: 4
    KiB strings made a 391 MiB answer that counted as 0.8 MiB)."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "O":
        return int(value.size) * 8 + sum(
            (len(v) if v.isascii() else len(v.encode("utf-8", "surrogatepass")))
            if isinstance(v, str) else len(v) if isinstance(v, bytes) else 8
            for v in value.reshape(-1).tolist())
    return int(getattr(value, "nbytes", 0))


def _chosen(req: dict[str, Any], model: str, outputs: dict[str, Any],
            max_json_bytes: int | None) -> list[tuple[str, bool]]:
    """The outputs the request asks for, each with whether it goes as binary data; an
    unknown one is a 400, and so are JSON outputs past ``max_json_bytes``."""
    wanted = [o for o in req.get("outputs") or [] if isinstance(o, dict)]
    check_outputs_asked(model, [o.get("name") for o in wanted], list(outputs))
    params = req.get("parameters") if isinstance(req.get("parameters"), dict) else {}
    default_binary = check_flag(params.get("binary_data_output", False),
                                "the request's parameters.binary_data_output")
    chosen = [(o["name"], check_flag((o.get("parameters") or {}).get("binary_data",
                                                                     default_binary),
                                     f"output {str(o['name'])[:60]!r}: parameters.binary_data"))
              for o in wanted] or [(n, default_binary) for n in outputs]
    if max_json_bytes is not None and not all(binary and not _text(outputs[n])
                                              for n, binary in chosen):
        _check_json_size(model, outputs, chosen, max_json_bytes)
    return chosen


def check_flag(value: Any, where: str) -> bool:
    """A true/false parameter ("false" and "no" gave binary answers: any text is true);
    the request's are checked before it is queued (oip), with the same words."""
    if not isinstance(value, bool):
        raise OIPError(400, f"{where} must be true or false, got {str(value)[:40]!r}")
    return value


def check_answer(req: dict[str, Any], model: str, outputs: dict[str, Any],
                 max_json_bytes: int | None = None) -> None:
    """Raise the :class:`OIPError` that :func:`encode_infer_response` would for these
    outputs (an unknown output, JSON too large, NaN or infinities in strict JSON), without
    encoding them: the server runs it before a request is counted as served."""
    chosen = _chosen(req, model, outputs, max_json_bytes)
    for name, binary in chosen:
        value = outputs[name]
        if not binary and isinstance(value, np.ndarray) and value.dtype.kind in "fc" \
                and not np.isfinite(value).all():
            raise OIPError(422, _non_finite(model, outputs, chosen))


def _check_json_size(model: str, outputs: dict[str, Any], chosen: list[tuple[str, bool]],
                     limit: int) -> None:
    sizes = {name: int(getattr(outputs[name], "size", 0)) for name, binary in chosen
             if not binary}
    # strings' characters too: at up to 6 bytes each in JSON (\u0001), twice as binary data
    # (packed element by element into a growing buffer)
    cost = jsontext.SCALAR_BYTES * sum(sizes.values()) + sum(
        (2 if binary else 6) * held_bytes(outputs[n]) for n, binary in chosen
        if _text(outputs[n]))
    if cost > limit:
        text = {n: held_bytes(outputs[n]) for n, _ in chosen if _text(outputs[n])}
        if sum(text.values()) * 2 > limit:   # strings past it whatever the form
            raise OIPError(400, f"model {model!r} answered {sum(text.values()) / 2**20:,.1f} "
                                f"MiB of strings ({', '.join(map(repr, text))}): over this "
                                f"server's {limit / 2**20:,.0f} MiB per answer, as JSON or "
                                "binary data; send fewer rows per request")
        shown = ", ".join(f"{n!r} ({v:,} values)" for n, v in sizes.items() if v)
        raise OIPError(400, f"model {model!r} answered output(s) {shown}: as JSON that would "
                            f"take ~{cost / 2**20:,.0f} MiB to encode, over this server's "
                            f"{limit / 2**20:,.0f} MiB per answer; ask for them as binary "
                            "data (the output's parameters.binary_data: true, or the "
                            "request's parameters.binary_data_output: true)")


def _non_finite(model: str, outputs: dict[str, Any], chosen: list[tuple[str, bool]]) -> str:
    """Why an answer cannot be JSON: which outputs hold NaN or infinities."""
    bad = []
    for name, binary in chosen:
        value = outputs[name]
        if not binary and isinstance(value, np.ndarray) and value.dtype.kind in "fc":
            count = int(value.size - np.isfinite(value).sum())
            if count:
                bad.append(f"{name!r} ({count} of {value.size})")
    return (f"model {model!r} answered NaN or infinite values in output(s) "
            f"{', '.join(bad) or '(a parameter)'}, which strict JSON cannot carry; ask for "
            "them as binary data (the output's parameters.binary_data: true, or the "
            "request's parameters.binary_data_output: true)")
