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
import re
import sys
from typing import Any

import numpy as np

__all__ = ["loads", "dumps", "finite", "parsed_bytes", "check_size", "JSONTooLarge",
           "SizeCounter"]

#: What a parsed JSON value costs in Python, at most: a number (24 bytes) and its slot in a
#: list with the list's growth room, and an (empty) list or object with its slot. A 60 MiB
#: body of empty lists is 2.4 GB parsed; an object is a dict (240 with its slot).
SCALAR_BYTES, CONTAINER_BYTES, OBJECT_BYTES = 40, 80, 240
# Characters that widen what they are in (see SizeCounter): raw UTF-8 lead bytes past
# U+00FF (0xC4-0xEF: 2 bytes a character, 0xF0 and up: 4), escapes of a surrogate (4) or
# from U+0100 (2).
_RAW4, _RAW2 = re.compile(rb"[\xf0-\xff]"), re.compile(rb"[\xc4-\xef]")
_ESC = re.compile(rb"\\u(?:([dD][89abAB])|0[1-9a-fA-F]|[1-9a-fA-F])")


def _quote_before(raw: bytes | bytearray, at: int) -> int:
    """Where the string around ``at`` starts: the last quote before it not escaped."""
    i = raw.rfind(b'"', 0, at)
    while i > 0 and raw[i - 1] == 92:
        i = raw.rfind(b'"', 0, i)
    return max(i, 0)


def _quote_after(raw: bytes | bytearray, at: int) -> int:
    """Where the string around ``at`` ends: the next quote after it not escaped."""
    i = raw.find(b'"', at)
    while i > 0 and raw[i - 1] == 92:
        i = raw.find(b'"', i + 1)
    return len(raw) if i < 0 else i + 1


_COUNT_SLICE = 1 << 20
#: A piece at least this long is counted with numpy (four vector compares: ~4x faster than
#: ``bytes.count`` on a 256 KiB piece here, 105 vs 434 us, and without the interpreter).
_NUMPY_MIN = 1 << 14


class JSONTooLarge(ValueError):
    """A body that would take more memory to parse than the caller allows (``parsed``,
    ``limit``: bytes; ``values``: its values and containers)."""

    def __init__(self, parsed: int, limit: int, values: int, wide: bool = False) -> None:
        self.parsed, self.limit, self.values = parsed, limit, values
        super().__init__(f"{values:,} values and lists would take ~{parsed / 2**20:,.0f} MiB "
                         f"to parse, over the {limit / 2**20:,.0f} MiB parsed per request"
                         + (" (its text has \\u escapes or characters past U+07FF, which "
                            "Python may keep at 4 bytes a character)" if wide else ""))


class SizeCounter:
    """What parsing a JSON text would allocate, at most, counted from its separators (a
    C-speed count, no parse), piece by piece as a body arrives: the pieces' counts add up to
    the whole's (it counts single characters). With ``limit``, :meth:`feed` raises
    :class:`JSONTooLarge` once the estimate passes it; ``part``: only the body's first
    ``part`` bytes are JSON (the binary extension's head).

    Strings: Python keeps a string at 1, 2 or 4 bytes per character, the widest of its
    characters deciding, and ``json.loads`` of bytes decodes the whole text first: one
    character past U+FFFF made a 60 MiB body take ~480 MiB to parse (measured: 7.3-8 bytes a
    byte). A raw UTF-8 character past U+00FF (lead byte 0xC4 and up) widens the decoded text
    and its strings: the whole text counts ``2 x width + 1`` bytes a byte (width 2, or 4 from
    lead 0xF0). A ``\\u`` escape widens only the string it is in (4 for a surrogate, 2 from
    ``\\u0100``, nothing below): :meth:`add_escaped` counts those strings from the whole
    text, when it is parsed. Text without either takes at most twice itself (the text
    decoded, its strings), which the body limit bounds. """

    __slots__ = ("scalars", "lists", "objects", "limit", "part", "nbytes", "raw", "escaped")

    def __init__(self, limit: int | None = None, part: int | None = None) -> None:
        self.scalars, self.lists, self.objects = 1, 0, 0
        self.limit, self.part = limit, part
        # bytes counted; the widest character seen raw (1, 2 or 4 bytes); what strings
        # widened by escapes take (:meth:`add_escaped`, given the whole text)
        self.nbytes, self.raw, self.escaped = 0, 1, 0

    @property
    def wide(self) -> bool:
        return self.raw > 1 or self.escaped > 0

    def add_escaped(self, raw: bytes | bytearray) -> None:
        """Count the strings of the whole text ``raw`` that escapes widen: each at (2 x
        width + 1) bytes a byte (measured: 7.3 for a surrogate pair's string). Past 10,000
        such escapes, the whole text is counted so (no loop per escape)."""
        spans: list[tuple[int, int, int]] = []
        for k, m in enumerate(_ESC.finditer(raw)):
            if k == 10_000:
                self.escaped = 9 * len(raw)
                return
            at = m.start()
            if spans and spans[-1][0] <= at < spans[-1][1]:
                width = 4 if m.group(1) else 2
                if width > spans[-1][2]:
                    spans[-1] = (spans[-1][0], spans[-1][1], width)
                continue
            begin, end = _quote_before(raw, at), _quote_after(raw, at)
            spans.append((begin, end, 4 if m.group(1) else 2))
        self.escaped = sum((2 * w + 1) * (e - b) for b, e, w in spans)

    def add(self, piece: bytes | bytearray, start: int = 0, end: int | None = None) -> int:
        """Count ``piece[start:end]`` (no copy); returns the estimate so far, in bytes."""
        stop = len(piece) if end is None else min(end, len(piece))
        if stop <= start:
            return self.parsed
        self.nbytes += stop - start
        if self.raw < 4:
            if _RAW4.search(piece, start, stop):
                self.raw = 4
            elif self.raw < 2 and _RAW2.search(piece, start, stop):
                self.raw = 2
        if stop - start >= _NUMPY_MIN:
            a = np.frombuffer(piece, np.uint8)[start:end]
            self.scalars += int(np.count_nonzero(a == 44)) + int(np.count_nonzero(a == 58))
            self.lists += int(np.count_nonzero(a == 91))
            self.objects += int(np.count_nonzero(a == 123))
            return self.parsed
        self.scalars += piece.count(b",", start, end) + piece.count(b":", start, end)
        self.lists += piece.count(b"[", start, end)
        self.objects += piece.count(b"{", start, end)
        return self.parsed

    def feed(self, piece: bytes | bytearray, at: int) -> None:
        """Count the JSON share of ``piece``, which is the body's bytes from ``at`` on;
        :class:`JSONTooLarge` once past ``limit``."""
        if self.part is not None and at >= self.part:
            return
        end = None if self.part is None else self.part - at
        if self.add(piece, 0, end) > self.limit:
            raise JSONTooLarge(self.parsed, self.limit, self.values, self.wide)

    @property
    def parsed(self) -> int:
        return (SCALAR_BYTES * self.scalars + CONTAINER_BYTES * self.lists
                + OBJECT_BYTES * self.objects + self.escaped
                + ((2 * self.raw + 1) * self.nbytes if self.raw > 1 else 0))  # text, strings

    @property
    def values(self) -> int:
        return self.scalars + self.lists + self.objects


def parsed_bytes(raw: bytes | bytearray) -> tuple[int, int]:
    """``(bytes, values)``: an upper estimate of what parsing ``raw`` allocates (see
    :class:`SizeCounter`)."""
    # (by slices: one pass over tens of MiB would hold the interpreter for each count;
    # between slices another thread may run)
    counter = _counted(raw)
    counter.add_escaped(raw)
    return counter.parsed, counter.values


def _counted(raw: bytes | bytearray) -> SizeCounter:
    counter = SizeCounter()
    for i in range(0, max(len(raw), 1), _COUNT_SLICE):
        counter.add(raw, i, i + _COUNT_SLICE)
    return counter


def _refuse(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON (strict parsers refuse it); send a number, "
                     "or null for a missing value")


def loads(raw: bytes | str, max_parsed_bytes: int | None = None) -> Any:
    """Parse strict JSON: a bare NaN/Infinity is a ``ValueError`` that names it. With
    ``max_parsed_bytes``, a body whose parse could allocate more is refused before it is
    parsed (:class:`JSONTooLarge`); one too short to get there is not even counted."""
    if isinstance(raw, (bytes, bytearray, memoryview)) and (
            b"\x00" in bytes(raw[:4]) or bytes(raw[:2]) in (b"\xff\xfe", b"\xfe\xff")):
        # (json reads UTF-16 and UTF-32 too: the byte-level checks here, of size and of
        # true/false among numbers, read UTF-8, and [true, 2] in UTF-16 passed them)
        raise ValueError("it is not UTF-8 (it looks like UTF-16 or UTF-32); JSON is sent "
                         "as UTF-8 (RFC 8259)")
    check_size(raw, max_parsed_bytes)
    try:
        return json.loads(raw, parse_constant=_refuse)
    except RecursionError:   # (its callers word a ValueError; this was a 500 in places)
        raise ValueError("it nests JSON too deeply") from None
    except ValueError as err:   # (Python's words told a client to call a Python function)
        if "integer string conversion" not in str(err):
            raise
        raise ValueError(f"it holds a number of more than {sys.get_int_max_str_digits():,} "
                         "digits, past what any tensor's datatype holds") from None


def check_size(raw: bytes | str, max_parsed_bytes: int | None) -> None:
    """:class:`JSONTooLarge` if parsing ``raw`` could allocate over ``max_parsed_bytes``."""
    if max_parsed_bytes is not None and isinstance(raw, (bytes, bytearray, memoryview)) \
            and len(raw) * OBJECT_BYTES > max_parsed_bytes:
        raw = bytes(raw) if isinstance(raw, memoryview) else raw
        counter = _counted(raw)
        counter.add_escaped(raw)
        if counter.parsed > max_parsed_bytes:
            raise JSONTooLarge(counter.parsed, max_parsed_bytes, counter.values, counter.wide)


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
