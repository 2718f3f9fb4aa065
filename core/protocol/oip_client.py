"""Open Inference Protocol, the client's side (core.remote): an infer request's body from
arrays, and the outputs of an answer read back (JSON or the binary extension), bounded and
with a malformed answer a 502 in words. The server's side is :mod:`core.protocol.oip`.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

from core.models import OIP_DTYPES, oip_datatype
from .oip import OIPError, _split_body
from .oip_answer import _bytes_elements

__all__ = ["encode_infer_request", "parse_infer_response"]


def encode_infer_request(arrays: dict[str, np.ndarray], binary: bool = True,
                         parameters: dict[str, Any] | None = None
                         ) -> tuple[bytes, int | None]:
    """An infer request's body (and the JSON part's length when ``binary``), asking for
    every output in the same form; ``parameters`` go in the request's parameters."""
    entries, blobs = [], []
    for name, a in arrays.items():
        entry: dict[str, Any] = {"name": name, "datatype": oip_datatype(a.dtype),
                                 "shape": list(a.shape)}
        if entry["datatype"] == "BYTES":        # strings or bytes, element by element
            values = [v if isinstance(v, bytes) else str(v).encode()
                      for v in a.reshape(-1).tolist()]
            if binary:
                raw = _bytes_elements(values)
                entry["parameters"] = {"binary_data_size": len(raw)}
                blobs.append(raw)
            else:
                entry["data"] = [v.decode("utf-8", "replace") for v in values]
            entries.append(entry)
            continue
        if binary:
            raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = a.reshape(-1).tolist()
        entries.append(entry)
    body: dict[str, Any] = {"inputs": entries}
    params = dict(parameters or {})
    if binary:
        params["binary_data_output"] = True
    if params:
        body["parameters"] = params
    head = json.dumps(body).encode()
    if not binary:
        return head, None
    return head + b"".join(blobs), len(head)


def _split_bytes(raw: memoryview, count: int, name: str) -> list[bytes]:
    out, i = [], 0
    for _ in range(count):
        if i + 4 > len(raw):
            raise OIPError(502, f"output {name!r}: BYTES data ends early")
        (n,) = struct.unpack_from("<I", raw, i)
        out.append(bytes(raw[i + 4:i + 4 + n]))
        i += 4 + n
    return out


def parse_infer_response(raw: bytes, header_length: int | None = None,
                         max_parsed_bytes: int | None = None) -> dict[str, Any]:
    """The outputs (name -> array) of an infer answer, JSON or binary. BYTES outputs come
    back as arrays of ``bytes`` (binary) or of what the JSON held. A malformed answer (or
    a JSON part that could take more than ``max_parsed_bytes`` to parse) is an
    :class:`OIPError` with status 502 (the server's fault, not the request's)."""
    body, binary = _split_body(raw, header_length, 502, "the server's answer", strict=False,
                               max_parsed_bytes=max_parsed_bytes)
    if not isinstance(body, dict) or not isinstance(body.get("outputs"), list):
        raise OIPError(502, "the server's answer has no 'outputs' list")
    outputs: dict[str, Any] = {}
    offset = 0
    for t in body["outputs"]:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise OIPError(502, "an output of the server's answer has no name")
        name, shape, dt = t["name"], t.get("shape"), t.get("datatype")
        if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise OIPError(502, f"output {name!r} of the server's answer has shape {shape!r}; "
                                "expected a list of non-negative integers")
        count = math.prod(shape)
        params = t.get("parameters") if isinstance(t.get("parameters"), dict) else {}
        size = params.get("binary_data_size")
        try:
            if dt == "BYTES":
                if size is not None:
                    values: Any = _split_bytes(binary[offset:offset + size], count, name)
                    offset += size
                else:
                    values = t.get("data") or []
                arr = np.empty(len(values), dtype=object)
                arr[:] = values
                outputs[name] = arr.reshape(shape)
                continue
            dtype = OIP_DTYPES[dt]
            if size is not None:
                # a copy: writable, and not holding the whole answer alive
                arr = np.frombuffer(binary[offset:offset + size],
                                    dtype=dtype.newbyteorder("<")).astype(dtype)
                offset += size
            else:
                arr = np.asarray(t.get("data"), dtype=dtype)
            outputs[name] = arr.reshape(shape)
        except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as err:
            raise OIPError(502, f"output {name!r} of the server's answer cannot be read as "
                                f"{dt} {shape}: {err}") from None
    return outputs
