"""Reading a remote server's answer with every byte bounded: capped on the wire and
decompressed, its JSON part counted as it arrives (a body that would parse past the bound
stops the read: a gzip bomb is not inflated to its end), grown piece by piece (no join of
tens of MiB), compressed answers inflated on a worker thread, and the shared client loop
left free to serve the other remote models between slices.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from core.protocol import jsontext

__all__ = ["read_capped", "TooLarge", "BadEncoding", "PARSE_OFF_LOOP_BYTES"]

# Answers larger than this are parsed on a worker thread, not on the shared client loop
# (one remote model's large answers must not hold up every other remote model).
PARSE_OFF_LOOP_BYTES = 256 * 2**10
# A long answer's read lets the shared client loop run other requests after each slice of
# this many bytes.
_YIELD_BYTES = 64 * 2**10


class TooLarge(Exception):
    """An answer past the byte cap (on the wire, or decompressed)."""


class BadEncoding(Exception):
    """An answer compressed in a way this client cannot (or did not ask to) read."""


async def read_capped(resp: Any, cap: int, json_limit: int | None = None,
                      json_part: int | None = None) -> bytes:
    """The body of ``resp``, or :class:`TooLarge` past ``cap`` bytes (checked on the
    declared length first, then while reading). ``json_limit``: the JSON part (the first
    ``json_part`` bytes; None: all) is counted as it arrives, and one that would parse past
    ``json_limit`` bytes stops the read (:class:`~core.protocol.jsontext.JSONTooLarge`):
    a gzip bomb is not decompressed to the end."""
    declared = resp.content_length
    if declared is not None and declared > cap:
        raise TooLarge(f"announced {declared:,} bytes")
    encoding = resp.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        # Compressed (the session decodes nothing itself): the wire bytes here, the
        # inflating (a 58 KB gzip bomb is 60 MB of JSON) on a worker thread, counted and
        # capped as it goes, so the shared loop keeps serving the other remote models.
        if encoding not in _WBITS:
            raise BadEncoding(f"it came with Content-Encoding {encoding!r}, which this "
                               "client did not ask for (it accepts gzip and deflate)")
        wire = await read_capped(_Raw(resp), cap)
        if len(wire) * _MAX_RATIO <= PARSE_OFF_LOOP_BYTES:
            return _inflate(wire, encoding, cap, json_limit, json_part)
        return await asyncio.get_running_loop().run_in_executor(
            None, _inflate, wire, encoding, cap, json_limit, json_part)
    body, size = bytearray(), 0
    next_yield = _YIELD_BYTES
    counter = jsontext.SizeCounter() if json_limit is not None else None
    async for chunk in resp.content.iter_chunked(1 << 16):
        if counter is not None and (json_part is None or size < json_part):
            if counter.add(chunk if json_part is None else chunk[:json_part - size]) \
                    > json_limit:
                body.clear()   # (the error's traceback keeps this frame: not its bytes)
                raise jsontext.JSONTooLarge(counter.parsed, json_limit, counter.values)
        size += len(chunk)
        if size > cap:
            body.clear()
            raise TooLarge(f"more than {cap:,} bytes")
        body += chunk   # (grown piece by piece: no join of tens of MiB at the end)
        if size >= next_yield:
            # Data already received (a compressed answer inflates without waiting on the
            # network) is read without the loop running anything else: let the other
            # remote models' requests run between slices.
            next_yield = size + _YIELD_BYTES
            await asyncio.sleep(0)
    return bytes(body) if size <= PARSE_OFF_LOOP_BYTES else body


# zlib's window bits for each Content-Encoding this client accepts (deflate: zlib's format,
# or raw deflate from servers that send that; tried in that order).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
# Deflate's largest expansion: a compressed body this many times shorter than the parse
# threshold cannot inflate past it (inflated inline, no thread hop).
_MAX_RATIO = 1032
_PIECE = 1 << 16


class _Raw:
    """A response seen as its headers without Content-Encoding (for the wire bytes)."""

    def __init__(self, resp: Any) -> None:
        self.content_length, self.content, self.headers = resp.content_length, resp.content, {}


def _inflate(wire: bytes, encoding: str, cap: int, json_limit: int | None,
             json_part: int | None) -> bytes:
    """``wire`` decompressed in 64 KiB pieces: :class:`TooLarge` past ``cap`` bytes,
    :class:`~core.protocol.jsontext.JSONTooLarge` once the JSON part (the first
    ``json_part`` bytes; None: all) would parse past ``json_limit``."""
    try:
        return _inflate_with(wire, _WBITS[encoding], cap, json_limit, json_part)
    except zlib.error:
        if encoding != "deflate":
            raise BadEncoding(f"its {encoding} body does not decompress") from None
    try:   # deflate without zlib's header (some servers send that)
        return _inflate_with(wire, -zlib.MAX_WBITS, cap, json_limit, json_part)
    except zlib.error:
        raise BadEncoding("its deflate body does not decompress") from None


def _inflate_with(wire: bytes, wbits: int, cap: int, json_limit: int | None,
                  json_part: int | None) -> bytes:
    d = zlib.decompressobj(wbits)
    counter = jsontext.SizeCounter() if json_limit is not None else None
    body = bytearray()

    def take(piece: bytes) -> None:
        size = len(body)
        if counter is not None and (json_part is None or size < json_part):
            if counter.add(piece if json_part is None else piece[:json_part - size]) \
                    > json_limit:
                body.clear()   # (the error's traceback keeps this frame: not its bytes)
                raise jsontext.JSONTooLarge(counter.parsed, json_limit, counter.values)
        if size + len(piece) > cap:
            body.clear()
            raise TooLarge(f"more than {cap:,} bytes decompressed")
        body.extend(piece)

    wire_view = memoryview(wire)
    # Fed 64 KiB of input at a time, each giving at most 64 KiB of output per call: the
    # input left over is never more than a slice (no copy of the whole rest per call).
    for i in range(0, len(wire), _PIECE):
        data = wire_view[i:i + _PIECE]
        while data and not d.eof:
            take(d.decompress(data, _PIECE))
            data = d.unconsumed_tail
        if d.eof:
            break
    while not d.eof:    # output still held back (input all fed), in bounded pieces too
        piece = d.decompress(b"", _PIECE)
        if not piece:
            break
        take(piece)
    if not d.eof:
        raise BadEncoding("its compressed body is cut short")
    if d.unused_data or i + _PIECE < len(wire):
        raise BadEncoding("its compressed body has bytes after its end")
    return bytes(body) if len(body) <= PARSE_OFF_LOOP_BYTES else body
