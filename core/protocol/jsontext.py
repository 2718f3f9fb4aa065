"""JSON as strict parsers read it: no bare ``NaN``, ``Infinity`` or ``-Infinity``.

Python's ``json`` reads and writes those tokens by default; JavaScript's ``JSON.parse``,
Go's ``encoding/json``, orjson and most other parsers refuse them, so an answer that
carries one is unreadable to them. The server reads requests with :func:`loads` (a bare
``NaN`` is a 400 that says so) and writes answers with :func:`dumps` (a non-finite number
is ``null``; the data plane never gets that far: an output that JSON cannot carry is an
explicit error, see :mod:`core.protocol.oip`).

Example:
    >>> dumps({"p99_ms": float("nan"), "ok": 1.5})
    b'{"p99_ms": null, "ok": 1.5}'
    >>> loads(b'{"x": NaN}')
    Traceback (most recent call last):
    ValueError: NaN is not valid JSON ...
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["loads", "dumps", "finite"]


def _refuse(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON (strict parsers refuse it); send a number, "
                     "or null for a missing value")


def loads(raw: bytes | str) -> Any:
    """Parse strict JSON: a bare NaN/Infinity is a ``ValueError`` that names it."""
    return json.loads(raw, parse_constant=_refuse)


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by None, recursively
    through dicts, lists and tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    """``value`` as strict JSON bytes; non-finite floats become ``null``."""
    try:
        return json.dumps(value, allow_nan=False).encode()
    except ValueError:  # rare: only an answer that holds a NaN or an infinity pays for this
        return json.dumps(finite(value), allow_nan=False).encode()
