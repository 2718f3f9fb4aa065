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
``dc``     one of the codec's types, by its stable name (``"BatchConfig"``, not a module
           path), and its fields (a dataclass's, or a slotted class's ``__slots__``)
=========  ===================================================================

A :class:`WireCodec` is made with the types it may carry (the engine server and its client
share one table, :mod:`core.serving.wire_types`), so moving a class to another module
changes nothing on the wire. Decoding builds only those types (never an arbitrary class),
through their constructors, so their own validation runs; a server decoding a caller's
arguments also names the few types an argument may be.

Example:
    >>> codec = WireCodec([BatchConfig])
    >>> codec.decode(json.loads(json.dumps(codec.encode({"x": (1, BatchConfig())}))))
    {'x': (1, BatchConfig(max_batch_size=32, ...))}
"""

from __future__ import annotations

import base64
import dataclasses
import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

__all__ = ["WireCodec", "WireError"]

_TAG = "__t"


class WireError(ValueError):
    """A value that cannot be sent, or a payload that is not one this module made."""


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def _field_names(cls: type) -> tuple[str, ...]:
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls))
    return tuple(cls.__slots__)


class WireCodec:
    """Encodes values to JSON-ready data and back, carrying only ``types`` by name."""

    def __init__(self, types: Iterable[type]) -> None:
        self._by_name: dict[str, type] = {}
        for cls in types:
            name = cls.__name__
            if name in self._by_name and self._by_name[name] is not cls:
                raise ValueError(f"two wire types are named {name!r}")
            if not (dataclasses.is_dataclass(cls) or getattr(cls, "__slots__", None)):
                raise ValueError(f"{name} is neither a dataclass nor a slotted class")
            self._by_name[name] = cls
        self._name_of = {cls: name for name, cls in self._by_name.items()}

    @property
    def names(self) -> frozenset[str]:
        """The stable names of the types this codec carries."""
        return frozenset(self._by_name)

    def _encode_frame(self, frame: pd.DataFrame) -> dict[str, Any]:
        cols = []
        for name in frame.columns:
            s = frame[name]
            kind = s.dtype.kind
            if kind == "M":
                values = [None if pd.isna(v) else v.isoformat() for v in s]
            elif kind in "biuf":
                values = s.tolist()
                if kind == "f":  # NaN: null (pandas' missing value); ±inf: "inf"/"-inf"
                    values = [v if math.isfinite(v) else None if math.isnan(v) else repr(v)
                              for v in values]
            else:  # a missing value (NaN in a string column) travels as null
                values = [None if isinstance(v, float) and math.isnan(v) else self.encode(v)
                          for v in s.tolist()]
            cols.append({"name": self.encode(name), "dtype": str(s.dtype), "v": values})
        return {_TAG: "df", "cols": cols, "index": self.encode(frame.index.tolist())
                if not isinstance(frame.index, pd.RangeIndex) else None}

    def _decode_frame(self, obj: dict[str, Any]) -> pd.DataFrame:
        data: dict[Any, Any] = {}
        for col in obj["cols"]:
            name, dtype, values = self.decode(col["name"]), col["dtype"], col["v"]
            if dtype.startswith("datetime64"):
                data[name] = pd.to_datetime(pd.Series(values, dtype=object))
            elif dtype == "object":
                data[name] = pd.Series([self.decode(v) for v in values], dtype=object)
            else:
                try:
                    data[name] = pd.Series([np.nan if v is None else v for v in values],
                                           dtype=dtype)
                except (TypeError, ValueError):  # e.g. a nullable int that held NaN
                    data[name] = pd.Series(values)
        frame = pd.DataFrame(data)
        if not data:
            frame = pd.DataFrame(columns=[self.decode(c["name"]) for c in obj["cols"]])
        if obj.get("index") is not None:
            frame.index = self.decode(obj["index"])
        return frame

    def encode(self, value: Any) -> Any:
        """``value`` as JSON-ready data (see the module docstring for the tags)."""
        if value is None or isinstance(value, (bool, str, int)):
            return value
        if isinstance(value, float):
            # strict JSON has no NaN or infinities: those travel as a tagged string
            return value if math.isfinite(value) else {_TAG: "float", "v": repr(value)}
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, list):
            return [self.encode(v) for v in value]
        if isinstance(value, tuple):
            return {_TAG: "tuple", "v": [self.encode(v) for v in value]}
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value) and _TAG not in value:
                return {k: self.encode(v) for k, v in value.items()}
            return {_TAG: "dict", "v": [[self.encode(k), self.encode(v)] for k, v in value.items()]}
        if isinstance(value, (bytes, bytearray, memoryview)):
            return {_TAG: "bytes", "v": base64.b64encode(bytes(value)).decode()}
        if isinstance(value, np.ndarray):
            if value.dtype.kind == "O":
                return {_TAG: "ndobj", "shape": list(value.shape),
                        "v": [self.encode(v) for v in value.reshape(-1).tolist()]}
            arr = np.ascontiguousarray(value)
            return {_TAG: "nd", "dtype": arr.dtype.str, "shape": list(arr.shape),
                    "v": base64.b64encode(arr.tobytes()).decode()}
        if isinstance(value, np.dtype):
            return {_TAG: "dtype", "v": value.str}
        if isinstance(value, pd.DataFrame):
            return self._encode_frame(value)
        name = self._name_of.get(type(value))
        if name is not None:
            return {_TAG: "dc", "cls": name,
                    "v": {k: self.encode(getattr(value, k)) for k in _field_names(type(value))}}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            raise WireError(f"cannot send a {type(value).__qualname__}: not one of the wire's "
                            "types")
        if isinstance(value, (set, frozenset)):
            return [self.encode(v) for v in sorted(value, key=repr)]
        raise WireError(f"cannot send a value of type {type(value).__name__}")

    def decode(self, data: Any, allowed: frozenset[str] | None = None) -> Any:
        """The inverse of :meth:`encode`. ``allowed``: the only types (by name) that may be
        built (a server decoding a caller's arguments); None: any of the codec's."""
        if isinstance(data, list):
            return [self.decode(v, allowed) for v in data]
        if not isinstance(data, dict):
            return data
        tag = data.get(_TAG)
        if tag is None:
            return {k: self.decode(v, allowed) for k, v in data.items()}
        if tag == "tuple":
            return tuple(self.decode(v, allowed) for v in data["v"])
        if tag == "dict":
            return {_hashable(self.decode(k, allowed)): self.decode(v, allowed) for k, v in data["v"]}
        if tag == "float":
            return float(data["v"])
        if tag == "bytes":
            return base64.b64decode(data["v"])
        if tag == "nd":
            raw = base64.b64decode(data["v"])
            return np.frombuffer(raw, dtype=np.dtype(data["dtype"])).reshape(data["shape"]).copy()
        if tag == "ndobj":
            arr = np.empty(len(data["v"]), dtype=object)
            arr[:] = [self.decode(v, allowed) for v in data["v"]]
            return arr.reshape(data["shape"])
        if tag == "dtype":
            return np.dtype(data["v"])
        if tag == "df":
            return self._decode_frame(data)
        if tag == "dc":
            if allowed is not None and data["cls"] not in allowed:
                raise WireError(f"an argument cannot be a {data['cls']}; expected one of "
                                f"{', '.join(sorted(allowed))}")
            cls = self._by_name.get(data["cls"])
            if cls is None:
                raise WireError(f"refusing to build {data['cls']!r}: not one of the wire's types")
            if not dataclasses.is_dataclass(cls):
                return cls(**{k: self.decode(v) for k, v in data["v"].items()
                              if k in cls.__slots__})
            fields = {f.name: f for f in dataclasses.fields(cls)}
            values = {k: self.decode(v, allowed) for k, v in data["v"].items() if k in fields}
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


