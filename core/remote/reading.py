"""Reading a remote server's answer with every byte bounded: capped on the wire and
decompressed, its JSON part counted as it arrives (a body that would parse past the bound
stops the read: a gzip bomb is not inflated to its end), grown piece by piece (no join of
tens of MiB), compressed answers inflated on the client loop's one worker thread
(:func:`~core.remote.loop.heavy_executor`), and the shared client loop left free to serve
the other remote models between slices.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from core.protocol import jsontext

from .loop import heavy_executor

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


class _Body:
    """An answer's bytes as they come: capped at ``cap`` (:class:`TooLarge`), its JSON part
    counted (with ``json_limit``: :class:`~core.protocol.jsontext.JSONTooLarge`), grown
    piece by piece (no join of tens of MiB at the end). Refused, it lets go of what it had:
    the error's traceback keeps the reading frame alive, not its bytes."""

    def __init__(self, cap: int, json_limit: int | None, json_part: int | None,
                 what: str = "") -> None:
        self.cap, self.what = cap, what
        self.counter = (jsontext.SizeCounter(json_limit, json_part)
                        if json_limit is not None else None)
        self.data = bytearray()

    def take(self, piece: bytes) -> None:
        size = len(self.data)
        try:
            if self.counter is not None:
                self.counter.feed(piece, size)
            if size + len(piece) > self.cap:
                raise TooLarge(f"more than {self.cap:,} bytes{self.what}")
        except (TooLarge, jsontext.JSONTooLarge):
            self.data.clear()
            raise
        self.data += piece

    def result(self) -> bytes | bytearray:
        return bytes(self.data) if len(self.data) <= PARSE_OFF_LOOP_BYTES else self.data


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
    if encoding in ("", "identity"):
        return await _read(resp, _Body(cap, json_limit, json_part))
    # Compressed (the session decodes nothing itself): the wire bytes here, the inflating
    # (a 58 KB gzip bomb is 60 MB of JSON) on a worker thread, counted and capped as it
    # goes, so the shared loop keeps serving the other remote models.
    if encoding not in _WBITS:
        raise BadEncoding(f"it came with Content-Encoding {encoding!r}, which this "
                          "client did not ask for (it accepts gzip and deflate)")
    wire = await _read(resp, _Body(cap, None, None))
    if len(wire) * _MAX_RATIO <= PARSE_OFF_LOOP_BYTES:
        return _inflate(wire, encoding, cap, json_limit, json_part)
    return await asyncio.get_running_loop().run_in_executor(
        heavy_executor(), _inflate, wire, encoding, cap, json_limit, json_part)


async def _read(resp: Any, body: _Body) -> bytes:
    next_yield = _YIELD_BYTES
    async for chunk in resp.content.iter_chunked(1 << 16):
        body.take(chunk)
        if len(body.data) >= next_yield:
            # Data already received is read without the loop running anything else: let
            # the other remote models' requests run between slices.
            next_yield = len(body.data) + _YIELD_BYTES
            await asyncio.sleep(0)
    return body.result()


# zlib's window bits for each Content-Encoding this client accepts (deflate: zlib's format,
# or raw deflate from servers that send that; tried in that order).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
# Deflate's largest expansion: a compressed body this many times shorter than the parse
# threshold cannot inflate past it (inflated inline, no thread hop).
_MAX_RATIO = 1032
_PIECE = 1 << 16


def _inflate(wire: bytes, encoding: str, cap: int, json_limit: int | None,
             json_part: int | None) -> bytes:
    """``wire`` decompressed in 64 KiB pieces: :class:`TooLarge` past ``cap`` bytes,
    :class:`~core.protocol.jsontext.JSONTooLarge` once the JSON part (the first
    ``json_part`` bytes; None: all) would parse past ``json_limit``."""
    try:
        return _inflate_with(wire, _WBITS[encoding], _Body(cap, json_limit, json_part,
                                                           " decompressed"))
    except zlib.error:
        if encoding != "deflate":
            raise BadEncoding(f"its {encoding} body does not decompress") from None
    try:   # deflate without zlib's header (some servers send that)
        return _inflate_with(wire, -zlib.MAX_WBITS, _Body(cap, json_limit, json_part,
                                                          " decompressed"))
    except zlib.error:
        raise BadEncoding("its deflate body does not decompress") from None


def _inflate_with(wire: bytes, wbits: int, body: _Body) -> bytes:
    d = zlib.decompressobj(wbits)
    wire_view = memoryview(wire)
    # Fed 64 KiB of input at a time, each giving at most 64 KiB of output per call: the
    # input left over is never more than a slice (no copy of the whole rest per call).
    for i in range(0, len(wire), _PIECE):
        data = wire_view[i:i + _PIECE]
        while data and not d.eof:
            body.take(d.decompress(data, _PIECE))
            data = d.unconsumed_tail
        if d.eof:
            break
    while not d.eof:    # output still held back (input all fed), in bounded pieces too
        piece = d.decompress(b"", _PIECE)
        if not piece:
            break
        body.take(piece)
    if not d.eof:
        raise BadEncoding("its compressed body is cut short")
    if d.unused_data or i + _PIECE < len(wire):
        raise BadEncoding("its compressed body has bytes after its end")
    return body.result()
