"""An OIP input's JSON ``data`` as an array of its datatype, refusing what is not a value of it.

``np.asarray(data, dtype=...)`` alone converts what it can: ``1.7`` for an INT64 input
became 1, ``300`` for UINT8 wrapped to 44 after a cast, ``"False"`` for a BOOL became True
and ``null`` False, ``"1"`` for FP32 became 1.0. A client that sent those gets an answer to
another question. Here numpy first reads the JSON as it is (its own kind: bool, integer,
float, string or mixed), and the value is taken only when it is one of the datatype's:

- a float input takes numbers, and ``null`` as a missing value (NaN);
- an integer input takes integers within its range (``3.0`` is 3; ``3.5`` is refused);
- a BOOL input takes ``true`` and ``false``;
- nothing takes strings (numbers are sent as JSON numbers).

Example:
    >>> json_values([1, 2.0], np.dtype(np.int64), "ids", "INT64")
    array([1, 2])
    >>> json_values([1.5], np.dtype(np.int64), "ids", "INT64")
    OIPError: input 'ids': 1 value(s) are not whole numbers (the first, 1.5, at flat index 0) ...
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .status import HTTPError

__all__ = ["json_values", "holds_literals"]


def holds_literals(text: bytes | bytearray, end: int | None = None) -> bool:
    """Whether JSON ``text`` (up to ``end``) may hold ``true`` or ``false``: numpy reads
    ``[true, 2]`` as the integers [1, 2], so a request that holds them is looked at value
    by value (one that does not, nearly every one, is not)."""
    end = len(text) if end is None else end
    return text.find(b"true", 0, end) >= 0 or text.find(b"false", 0, end) >= 0


def json_values(data: Any, dtype: np.dtype, name: str, dt: str,
                literals: bool = True) -> np.ndarray:
    """``data`` (parsed JSON) as an array of ``dtype``; :class:`HTTPError` 400 naming the
    first value that is not one of OIP datatype ``dt``'s, with what to send instead.
    ``literals``: whether the JSON may hold true/false (:func:`holds_literals`)."""
    try:
        raw = np.asarray(data)
    except (TypeError, ValueError) as err:   # ragged lists
        raise HTTPError(400, f"input {name!r}: 'data' is not a list of {dt} values "
                             f"({' '.join(str(err).split())[:200]})") from None
    want = dtype.kind
    kind = raw.dtype.kind
    if literals and want != "b" and kind in "iuf" and raw.size:
        # (numpy made true/false beside numbers 1 and 0: [true, 2] was taken as INT64 [1, 2])
        if _holds_bool(data):
            flat = np.asarray(data, dtype=object).reshape(-1).tolist()
            i = next(i for i, v in enumerate(flat) if type(v) is bool)
            raise HTTPError(400, f"input {name!r}: value {str(flat[i]).lower()} at flat "
                                 f"index {i} is not one of {dt}'s values; {dt} takes "
                                 f"{_takes(dtype)}")
    if kind == "O":   # null, an integer past 64 bits, or values of several kinds
        return _objects(raw, dtype, name, dt)
    if kind in "USV" or (kind == "b") != (want == "b"):
        what = {"U": "strings", "S": "strings", "V": "records", "b": "true/false"}.get(
            kind, "numbers")
        raise HTTPError(400, f"input {name!r}: 'data' holds {what} where {dt} takes "
                             f"{_takes(dtype)}")
    if want in "iu" and kind == "f":
        whole = np.isfinite(raw) & (raw == np.trunc(raw))
        if not whole.all():
            return _refuse(raw, ~whole, name, dt, "are not whole numbers", dtype)
        # whole, but read as floats (ints mixed with floats, or past int64 beside a
        # negative one): each value as it was sent, or 2**63 beside -1 wrapped to -2**63
        return _objects(np.asarray(data, dtype=object), dtype, name, dt)
    if want in "iu" and raw.size and kind != "b":
        info = np.iinfo(dtype)
        out = (raw < info.min) | (raw > info.max)
        if out.any():
            return _refuse(raw, out, name, dt, f"are outside {dt}'s range "
                           f"[{info.min}, {info.max}]", dtype)
    with np.errstate(over="ignore"):   # a float past FP32's range: inf, refused by the caller
        return raw.astype(dtype, copy=False)


def _holds_bool(data: Any) -> bool:
    """Whether nested lists (not ragged: numpy read them) hold a bool, at C speed a row."""
    if type(data) is not list:
        return type(data) is bool
    if data and type(data[0]) is list:
        return any(map(_holds_bool, data))
    return bool in set(map(type, data))


def _objects(raw: np.ndarray, dtype: np.dtype, name: str, dt: str) -> np.ndarray:
    flat = raw.reshape(-1)
    want = dtype.kind
    for i, v in enumerate(flat):
        if v is None and want == "f":
            continue
        ok = (isinstance(v, bool) if want == "b" else
              isinstance(v, (int, float)) and not isinstance(v, bool)
              and (want == "f" or isinstance(v, int) or float(v).is_integer()))
        if not ok:
            shown = "null" if v is None else repr(v)[:40]
            raise HTTPError(400, f"input {name!r}: value {shown} at flat index {i} is not "
                                 f"one of {dt}'s values; {dt} takes {_takes(dtype)}")
    try:
        with np.errstate(over="ignore"):
            return np.asarray(raw.tolist(), dtype=dtype) if want != "f" else \
                np.asarray(np.where(np.equal(raw, None), np.nan, raw), dtype=dtype)
    except (OverflowError, ValueError, TypeError) as err:
        raise HTTPError(400, f"input {name!r}: a value is outside {dt}'s range ({err})") \
            from None


def _refuse(raw: np.ndarray, bad: np.ndarray, name: str, dt: str, what: str,
            dtype: np.dtype) -> np.ndarray:
    flat = np.flatnonzero(bad.reshape(-1))
    first = raw.reshape(-1)[flat[0]].item()
    raise HTTPError(400, f"input {name!r}: {len(flat)} value(s) {what} (the first, "
                         f"{first!r:.40}, at flat index {int(flat[0])}); {dt} takes "
                         f"{_takes(dtype)}")


def _takes(dtype: np.dtype) -> str:
    kind = dtype.kind
    if kind == "b":
        return "true or false"
    if kind == "f":
        return "numbers (null for a missing value)"
    info = np.iinfo(dtype)
    return f"whole numbers from {info.min} to {info.max}"
