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
arguments also names the few types an argument may be. Whatever is wrong with a payload
(a tag without its fields, a key that cannot be one, a dtype numpy does not know, nesting
deeper than :data:`MAX_DEPTH`) is one :class:`WireError` that names the tag and its form.

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

__all__ = ["WireCodec", "WireError", "MAX_DEPTH"]

_TAG = "__t"
#: How deep a payload may nest (lists, objects and tagged values each count a level): far
#: past any value the engine sends (an array of numpy's most dimensions is 64), and well
#: within Python's recursion limit whatever thread decodes it.
MAX_DEPTH = 100
_TOO_DEEP = (f"not valid wire encoding: nested deeper than {MAX_DEPTH} levels (lists, "
             "objects and tagged values each count one); send a flatter value")
# What each tag holds, for the error that says a payload is not one of them.
_FORMS = {
    "tuple": '{"__t": "tuple", "v": [values]}',
    "dict": '{"__t": "dict", "v": [[key, value], ...]}, each key a string, number, null or '
            'flat list',
    "float": '{"__t": "float", "v": "nan", "inf" or "-inf"}',
    "bytes": '{"__t": "bytes", "v": base64 text}',
    "nd": '{"__t": "nd", "dtype": a numpy dtype name such as "<f4", "shape": [ints], '
          '"v": base64 of exactly that many elements\' bytes}',
    "ndobj": '{"__t": "ndobj", "shape": [ints], "v": [exactly that many values]}',
    "dtype": '{"__t": "dtype", "v": a numpy dtype name such as "<f4"}',
    "df": '{"__t": "df", "cols": [{"name": ..., "dtype": a dtype name, "v": [values]}, ...], '
          '"index": null or [one label per row]}',
    "dc": '{"__t": "dc", "cls": a type\'s name, "v": {field: value, ...}}',
}


class WireError(ValueError):
    """A value that cannot be sent, or a payload that is not one this module made."""


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def _field_names(cls: type) -> tuple[str, ...]:
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls))
    return tuple(cls.__slots__)


def _check_column_dtype(dtype: Any) -> None:
    """A frame column's dtype is at most 16 bytes a value (numbers, true/false, a pandas
    type): a fixed-width string or record dtype is refused before any value is made (a
    169-byte call asked for ten values of "S200000000": 2 GB made before any check)."""
    try:
        size = np.dtype(dtype).itemsize
    except TypeError:   # a pandas type ("Int64", "category"): made value by value
        return
    except ValueError as err:   # ("(10**23,)f8": numpy's words, not the wire's)
        raise WireError(f"a DataFrame column's dtype {str(dtype)[:40]!r} is not one numpy "
                        f"makes ({err})") from None
    if size > 16:
        raise WireError(f"a DataFrame column's dtype must be a number, true/false or text "
                        f"(at most 16 bytes a value), got {str(dtype)[:40]!r}")


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

    def _decode_frame(self, obj: dict[str, Any], allowed: frozenset[str] | None,
                      left: int) -> pd.DataFrame:
        data: dict[Any, Any] = {}
        for col in obj["cols"]:
            name, dtype, values = self._decode(col["name"], allowed, left), col["dtype"], col["v"]
            if dtype.startswith("datetime64"):
                data[name] = pd.to_datetime(pd.Series(values, dtype=object)).astype(dtype)
            elif dtype == "object":
                data[name] = pd.Series([self._decode(v, allowed, left) for v in values],
                                       dtype=object)
            else:
                _check_column_dtype(dtype)
                try:
                    data[name] = pd.Series([np.nan if v is None else v for v in values],
                                           dtype=dtype)
                except (TypeError, ValueError, NotImplementedError):  # e.g. a nullable
                    # int that held NaN, or a dtype a Series cannot be
                    data[name] = pd.Series(values)
        frame = pd.DataFrame(data)
        if not data:
            frame = pd.DataFrame(columns=[self._decode(c["name"], allowed, left)
                                          for c in obj["cols"]])
        if obj.get("index") is not None:
            frame.index = self._decode(obj["index"], allowed, left)
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
            arr = np.ascontiguousarray(value)   # (always 1-d at least: the shape is value's)
            return {_TAG: "nd", "dtype": arr.dtype.str, "shape": list(value.shape),
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
        built (a server decoding a caller's arguments); None: any of the codec's. Raises
        :class:`WireError` (saying which tag and what it holds) for a payload this module
        did not make, or one nested deeper than :data:`MAX_DEPTH`."""
        return self._decode(data, allowed, MAX_DEPTH)

    def _decode(self, data: Any, allowed: frozenset[str] | None, left: int) -> Any:
        # ``left``: the levels a payload may still nest (checked here, not left to a
        # RecursionError). Plain JSON takes no try block; a tagged value's costs nothing
        # until something in it is wrong.
        if isinstance(data, list):
            if not left:
                raise WireError(_TOO_DEEP)
            left -= 1
            return [self._decode(v, allowed, left) for v in data]
        if not isinstance(data, dict):
            return data
        if not left:
            raise WireError(_TOO_DEEP)
        left -= 1
        tag = data.get(_TAG)
        if tag is None:
            return {k: self._decode(v, allowed, left) for k, v in data.items()}
        try:
            if tag == "tuple":
                return tuple(self._decode(v, allowed, left) for v in data["v"])
            if tag == "dict":
                return {_hashable(self._decode(k, allowed, left)): self._decode(v, allowed, left)
                        for k, v in data["v"]}
            if tag == "float":
                return float(data["v"])
            if tag == "bytes":
                return base64.b64decode(data["v"])
            if tag == "nd":
                raw = base64.b64decode(data["v"])
                arr = np.frombuffer(raw, dtype=np.dtype(data["dtype"]))
                return arr.reshape(data["shape"]).copy()
            if tag == "ndobj":
                arr = np.empty(len(data["v"]), dtype=object)
                arr[:] = [self._decode(v, allowed, left) for v in data["v"]]
                return arr.reshape(data["shape"])
            if tag == "dtype":
                return np.dtype(data["v"])
            if tag == "df":
                return self._decode_frame(data, allowed, left)
            if tag == "dc":
                return self._decode_object(data["cls"], data["v"], allowed, left)
        except WireError:
            raise  # said already, by the innermost value that is wrong
        except (KeyError, TypeError, ValueError, AttributeError, IndexError,
                OverflowError) as err:
            why = f"it has no {err.args[0]!r}" if isinstance(err, KeyError) and err.args \
                else str(err) or type(err).__name__
            raise WireError(f"not valid wire encoding: a {tag!r} value must be {_FORMS[tag]} "
                            f"({why})") from None
        shown = repr(tag)
        raise WireError(f"not valid wire encoding: unknown wire tag {shown[:40]}; the tags are "
                        f"{', '.join(sorted(_FORMS))}")

    def _decode_object(self, name: Any, values: dict[str, Any],
                       allowed: frozenset[str] | None, left: int) -> Any:
        if not isinstance(name, str):
            raise WireError(f"not valid wire encoding: a 'dc' value must be {_FORMS['dc']} "
                            f"(its cls is {type(name).__name__}, not a name)")
        if allowed is not None and name not in allowed:
            raise WireError(f"an argument cannot be a {name}; expected one of "
                            f"{', '.join(sorted(allowed))}")
        cls = self._by_name.get(name)
        if cls is None:
            raise WireError(f"refusing to build {name!r}: not one of the wire's types")
        if not dataclasses.is_dataclass(cls):
            init = {k: self._decode(v, allowed, left) for k, v in values.items()
                    if k in cls.__slots__}
            late: dict[str, Any] = {}
        else:
            fields = {f.name: f for f in dataclasses.fields(cls)}
            decoded = {k: self._decode(v, allowed, left) for k, v in values.items()
                       if k in fields}
            init = {k: v for k, v in decoded.items() if fields[k].init}
            late = {k: v for k, v in decoded.items() if not fields[k].init}
        try:  # the class's own checks run (__post_init__): a value is valid or refused
            obj = cls(**init)
        except (TypeError, ValueError) as err:
            raise WireError(f"cannot build {name}: {err}") from None
        for k, v in late.items():
            object.__setattr__(obj, k, v)
        return obj
