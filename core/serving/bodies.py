"""Request bodies as the engine server reads them (:class:`BodyReader`, mixed into
:class:`~core.serving.asgi.OipApp`): each counted against the bytes the server holds for
bodies not yet answered as it arrives, paced when it shares the loop, dropped past its
limit (a 413 after it is read, or the connection closed), and given time only as long as it
keeps coming.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from core.protocol import HEADER_LENGTH, HTTPError, jsontext, oip
from .pacing import BulkPacer
from .request import AsgiRequest as _Request

__all__ = ["BodyReader", "ServerBusyError", "DRAIN_MAX", "BODY_TIMEOUT_S", "DRAIN_S",
           "MIN_RATE", "COUNT_MAX", "ALONE_AFTER_S"]

Receive = Callable[[], Awaitable[dict[str, Any]]]

#: An over-limit body up to this size is read and dropped (so its client gets the 413
#: rather than a reset); past it the connection is closed.
DRAIN_MAX = 256 * 2**20
#: A body whose request came this long after the one before, with none since, is alone on
#: the server and not paced (``core/serving/pacing.py``).
ALONE_AFTER_S = 1.0
#: A body must arrive within this many seconds, plus one per MiB of its length, and keep
#: coming: by DRAIN_S after its head, then MIN_RATE bytes a second (4,100 heads declaring
#: 256 MiB, sending nothing, held every connection 286 s, renewable: an adversary; a fixed
#: short window for bodies over the limit cut slow clients off before their 413).
BODY_TIMEOUT_S, DRAIN_S, MIN_RATE = 30.0, 5.0, 256 * 2**10

#: An inference body's JSON part is counted while it arrives for its first this many
#: bytes: a dense flood (empty lists: ~40 bytes parsed per byte) passes the bound within
#: them and is dropped there. Past them, counting every chunk on the event loop costs more
#: than it saves: the parser (a child process for long bodies) counts the whole part
#: before parsing it anyway.
COUNT_MAX = 8 * 2**20
def _declared_json_part(req: _Request) -> int | None:
    """The length of a body's JSON part its binary-data header declares (None: no header,
    or not a whole number: the body is all JSON, or the parser refuses it)."""
    head = req.header(HEADER_LENGTH)
    return int(head) if head is not None and head.isascii() and head.isdigit() else None


class _Disconnected(Exception):
    """The client went away (before its request was read, or before its answer)."""


class ServerBusyError(HTTPError):
    """A 503 for the request bodies the server holds (before or part-way through reading
    this one's): the connection closes after the answer."""


class BodyReader:
    """Reading request bodies: :class:`~core.serving.asgi.OipApp`'s, which holds the
    counts (``bodies_in_flight`` and its bound) and the pacer."""

    bodies_in_flight: int
    max_bodies_in_flight: int
    pacer: BulkPacer
    _arrived: float

    def _hold_body(self, req: _Request) -> int:
        """A 503 before a byte of ``req``'s body is read if its declared length would take
        the bytes the server holds past :attr:`max_bodies_in_flight`; else 0, what it counts
        so far: a body counts by the bytes that arrive (:meth:`_grow_hold`), never by what
        its head declares (heads that declare 200 MB and send nothing held the bound whole
        and refused everyone else). A body alone is never refused here (the body limits
        bound it)."""
        declared = req.header("content-length") if req._has_body else None
        length = int(declared) if declared is not None and declared.isdigit() else 0
        if length and self.bodies_in_flight \
                and self.bodies_in_flight + length > self.max_bodies_in_flight:
            raise ServerBusyError(
                503, f"the server holds {self.bodies_in_flight / 2**20:.0f} MiB of request "
                     f"bodies not yet answered, and this one's {length / 2**20:.1f} MiB would "
                     f"pass its {self.max_bodies_in_flight / 2**20:.0f} MiB (a quarter of its "
                     "memory budget); retry when earlier requests are answered")
        return 0

    def _crowded(self, req: _Request) -> bool:
        """Whether ``req``'s body shares the loop with other requests, so is paced: one
        arrived after it, or within :data:`ALONE_AFTER_S` before it. A body alone (an upload
        to an idle server) is read at the loop's full speed until another request comes."""
        return self._arrived != req._arrived or req._gap < ALONE_AFTER_S

    def _grow_hold(self, held: list[int], size: int) -> None:
        """A body counts as it arrives: ``size`` bytes so far, ``held[0]`` counted. Past
        :attr:`max_bodies_in_flight` with other bodies held, a 503 (the rest is read and
        dropped, or the connection closes). Alone it is never refused here (the body limits
        bound it)."""
        extra = size - held[0]
        if self.bodies_in_flight - held[0] > 0 \
                and self.bodies_in_flight + extra > self.max_bodies_in_flight:
            raise ServerBusyError(
                503, f"the server holds {(self.bodies_in_flight - held[0]) / 2**20:.0f} MiB of "
                     f"other request bodies not yet answered, and this body's "
                     f"{size / 2**20:.1f} MiB so far would pass its "
                     f"{self.max_bodies_in_flight / 2**20:.0f} MiB (a quarter of its memory "
                     "budget); retry when earlier requests are answered")
        self.bodies_in_flight += extra
        held[0] = size

    async def _read_body(self, req: _Request, receive: Receive, limit: int,
                         json_limit: int | None, held: list[int]) -> bool:
        """Read the body (at most ``limit`` bytes) into ``req``; True when the connection
        must close after the answer. Over the limit: the rest is read and dropped (up to
        :data:`DRAIN_MAX`) and a 413 raised; too slow: a 408. ``json_limit``: the body's
        JSON part (an inference request's) is counted as it arrives, and one that would
        parse past this many bytes is dropped the same way (a 413), not kept. ``held``: what
        this body counts against :attr:`max_bodies_in_flight` (``[0]``, grown as its bytes
        arrive: :meth:`_grow_hold`)."""
        if not req._has_body:
            return False
        declared = req.header("content-length")
        length = int(declared) if declared is not None and declared.isdigit() else 0
        cap = BODY_TIMEOUT_S + length / 2**20
        # the time given grows with what arrived (t0, the cap, bytes so far, time paced)
        clock = [asyncio.get_running_loop().time(), cap, 0, 0.0]
        try:
            async with asyncio.timeout(min(cap, DRAIN_S)) as window:
                return await self._read(req, receive, limit, length, json_limit, window,
                                        held, clock)
        except TimeoutError:
            if length > limit:   # (only to be dropped: its answer is the 413)
                raise HTTPError(413, f"the request body is {length} bytes, over the limit "
                                     f"of {limit} bytes") from None
            raise HTTPError(408, f"the request body stopped coming ({clock[2]:,} of "
                                 f"{length:,} bytes arrived): a body must begin within "
                                 f"{DRAIN_S:g} s, keep coming at {MIN_RATE // 1024} KiB/s and "
                                 f"arrive within {cap:.0f} s (not counting the server's own "
                                 "pacing of large bodies)") from None

    @staticmethod
    def _keep_going(window: Any, clock: list, size: int) -> None:
        """More time for a body that keeps coming: up to ``DRAIN_S`` past what ``size``
        bytes earn at :data:`MIN_RATE`, within its cap."""
        clock[2] = size
        due = clock[0] + clock[3] + min(clock[1], DRAIN_S + size / MIN_RATE)
        if due > window.when():
            window.reschedule(due)

    async def _read(self, req: _Request, receive: Receive, limit: int, declared: int,
                    json_limit: int | None, window: Any, held: list[int],
                    clock: list) -> bool:
        if declared > max(limit, DRAIN_MAX):  # not worth reading: refuse, and close
            raise HTTPError(413, f"the request body is {declared} bytes, over the limit "
                                 f"of {limit} bytes")
        # Grown piece by piece (no join of tens of MiB at the end, holding the interpreter)
        body = bytearray()
        size = 0
        over = declared > limit
        counter = None
        if json_limit is not None:
            json_part = _declared_json_part(req)
            # (too short to reach the bound: not counted)
            if (json_part if json_part is not None else (declared or limit + 1)) \
                    * jsontext.OBJECT_BYTES > json_limit:
                counter = jsontext.SizeCounter(json_limit, json_part)
        too_big = refused = None
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            if counter is not None and too_big is None and size < COUNT_MAX:
                try:
                    counter.feed(chunk, size)
                except jsontext.JSONTooLarge as err:
                    too_big = err
                    over = True
                    body = bytearray()
            if not size and not over and not message.get("more_body", False) \
                    and len(chunk) <= limit:
                if chunk:
                    self._grow_hold(held, len(chunk))
                req._body = chunk    # the whole body in one piece (most requests): as is
                return False
            size += len(chunk)
            self._keep_going(window, clock, size)
            if size > limit:
                over = True
                body = bytearray()
            elif not over:
                if size > held[0]:
                    try:
                        self._grow_hold(held, size)
                    except ServerBusyError as err:
                        # the rest is read and dropped (as over the limit), then answered:
                        # a client still sending would otherwise see a reset, not the words
                        refused, over, body = err, True, bytearray()
                if not over:
                    body += chunk
            if over and size > DRAIN_MAX:
                break  # stop reading: the connection closes after the 413
            if not message.get("more_body", False):
                break
            if self._crowded(req):
                slept = await self.pacer.pace(size - len(chunk), len(chunk))
                if slept:   # the server's wait is not the client's
                    clock[3] += slept
                    window.reschedule(window.when() + slept)
        if refused is not None:
            raise refused
        if too_big is not None:
            raise HTTPError(413, oip.too_large_words("the request body", too_big))
        if over:
            raise HTTPError(413, f"the request body is {max(size, declared)} bytes, over "
                                 f"the limit of {limit} bytes")
        req._body = body
        return False
