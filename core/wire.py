"""The engine's values on the wire: JSON that comes back as the same Python types.

The control API (``core/server.py``) and its client (``core/client.py``) exchange the
engine's own return types — ``ModelInfo``, ``MetricsSnapshot``, ``TrafficStatus``,
``ABReport``, ``WarmupReport``, DataFrames, numpy arrays — so that a page holding a
:class:`~core.client.RemoteEngine` gets exactly what it would from an in-process
:class:`~core.Engine`. Plain JSON values pass through; everything else is an object with a
``"__t"`` tag:

=========  ===================================================================
``tuple``  ``{"__t": "tuple", "v": [...]}``
``dict``   non-string keys, or a key named ``__t``: ``{"__t": "dict", "v": [[k, v], ...]}``
``bytes``  base64
``nd``     numpy array: dtype, shape, base64 of its bytes (C order)
``dtype``  a numpy dtype by name
``df``     DataFrame: columns, per-column dtype and values
``dc``     a dataclass of the ``core`` package, by qualified name, and its fields
``pred``   a :class:`~core.settle.Prediction`
=========  ===================================================================

Decoding builds only dataclasses defined in ``core`` (never an arbitrary class), through
their constructors, so their own validation runs; a server decoding a caller's arguments
also names the few classes an argument may be.

Example:
    >>> decode(json.loads(json.dumps(encode({"x": (1, 2)}))))
    {'x': (1, 2)}
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["encode", "decode", "WireError"]

_TAG = "__t"


class WireError(ValueError):
    """A value that cannot be sent, or a payload that is not one this module made."""


def _encode_frame(frame: pd.DataFrame) -> dict[str, Any]:
    cols = []
    for name in frame.columns:
        s = frame[name]
        kind = s.dtype.kind
        if kind == "M":
            values = [None if pd.isna(v) else v.isoformat() for v in s]
        elif kind in "biuf":
            values = [None if (kind == "f" and math.isnan(v)) else v for v in s.tolist()]
        else:
            values = [encode(v) for v in s.tolist()]
        cols.append({"name": encode(name), "dtype": str(s.dtype), "v": values})
    return {_TAG: "df", "cols": cols, "index": encode(frame.index.tolist())
            if not isinstance(frame.index, pd.RangeIndex) else None}


def _decode_frame(obj: dict[str, Any]) -> pd.DataFrame:
    data: dict[Any, Any] = {}
    for col in obj["cols"]:
        name, dtype, values = decode(col["name"]), col["dtype"], col["v"]
        if dtype.startswith("datetime64"):
            data[name] = pd.to_datetime(pd.Series(values, dtype=object))
        elif dtype == "object":
            data[name] = pd.Series([decode(v) for v in values], dtype=object)
        else:
            try:
                data[name] = pd.Series([np.nan if v is None else v for v in values],
                                       dtype=dtype)
            except (TypeError, ValueError):  # e.g. a nullable int that held NaN
                data[name] = pd.Series(values)
    frame = pd.DataFrame(data)
    if not data:
        frame = pd.DataFrame(columns=[decode(c["name"]) for c in obj["cols"]])
    if obj.get("index") is not None:
        frame.index = decode(obj["index"])
    return frame


def encode(value: Any) -> Any:
    """``value`` as JSON-ready data (see the module docstring for the tags)."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value  # NaN and infinities pass: both ends are Python's json
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, tuple):
        return {_TAG: "tuple", "v": [encode(v) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and _TAG not in value:
            return {k: encode(v) for k, v in value.items()}
        return {_TAG: "dict", "v": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_TAG: "bytes", "v": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O":
            return {_TAG: "ndobj", "shape": list(value.shape),
                    "v": [encode(v) for v in value.reshape(-1).tolist()]}
        arr = np.ascontiguousarray(value)
        return {_TAG: "nd", "dtype": arr.dtype.str, "shape": list(arr.shape),
                "v": base64.b64encode(arr.tobytes()).decode()}
    if isinstance(value, np.dtype):
        return {_TAG: "dtype", "v": value.str}
    if isinstance(value, pd.DataFrame):
        return _encode_frame(value)
    if type(value).__name__ == "Prediction" and hasattr(value, "__slots__"):
        return {_TAG: "pred", "v": {k: encode(getattr(value, k)) for k in value.__slots__}}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if not cls.__module__.startswith("core."):
            raise WireError(f"cannot send a {cls.__qualname__}: only core's types travel")
        return {_TAG: "dc", "cls": f"{cls.__module__}:{cls.__qualname__}",
                "v": {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, (set, frozenset)):
        return [encode(v) for v in sorted(value, key=repr)]
    raise WireError(f"cannot send a value of type {type(value).__name__}")


def _dataclass(path: str) -> type:
    module, _, qualname = path.partition(":")
    if not module.startswith("core.") or "." in qualname or not qualname:
        raise WireError(f"refusing to build {path!r}: only core's dataclasses are decoded")
    cls = getattr(importlib.import_module(module), qualname, None)
    if cls is None or not dataclasses.is_dataclass(cls):
        raise WireError(f"{path!r} is not a dataclass of core")
    return cls


def decode(data: Any, allowed: frozenset[str] | None = None) -> Any:
    """The inverse of :func:`encode`. ``allowed``: the only dataclasses (``module:Class``)
    that may be built (a server decoding a caller's arguments); None: any of ``core``'s."""
    if isinstance(data, list):
        return [decode(v, allowed) for v in data]
    if not isinstance(data, dict):
        return data
    tag = data.get(_TAG)
    if tag is None:
        return {k: decode(v, allowed) for k, v in data.items()}
    if tag == "tuple":
        return tuple(decode(v, allowed) for v in data["v"])
    if tag == "dict":
        return {_hashable(decode(k, allowed)): decode(v, allowed) for k, v in data["v"]}
    if tag == "bytes":
        return base64.b64decode(data["v"])
    if tag == "nd":
        raw = base64.b64decode(data["v"])
        return np.frombuffer(raw, dtype=np.dtype(data["dtype"])).reshape(data["shape"]).copy()
    if tag == "ndobj":
        arr = np.empty(len(data["v"]), dtype=object)
        arr[:] = [decode(v, allowed) for v in data["v"]]
        return arr.reshape(data["shape"])
    if tag == "dtype":
        return np.dtype(data["v"])
    if tag == "df":
        return _decode_frame(data)
    if tag == "pred":
        if allowed is not None:
            raise WireError("a Prediction is an answer, not an argument")
        from .settle import Prediction
        return Prediction(**{k: decode(v) for k, v in data["v"].items()})
    if tag == "dc":
        if allowed is not None and data["cls"] not in allowed:
            raise WireError(f"an argument cannot be a {data['cls']}; expected one of "
                            f"{', '.join(sorted(allowed))}")
        cls = _dataclass(data["cls"])
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {k: decode(v, allowed) for k, v in data["v"].items() if k in fields}
        init = {k: v for k, v in values.items() if fields[k].init}
        try:  # the class's own checks run (__post_init__): a value is valid or refused
            obj = cls(**init)
        except TypeError as err:
            raise WireError(f"cannot build {data['cls']}: {err}") from None
        for k, v in values.items():
            if not fields[k].init:
                object.__setattr__(obj, k, v)
        return obj
    raise WireError(f"unknown wire tag {tag!r}")


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key
