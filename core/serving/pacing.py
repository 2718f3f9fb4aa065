"""Bulk request bytes read at a bounded rate, so that a large body never takes the event
loop whole.

Every connection of the engine server is served by one event loop. Reading a large body
costs that loop about a millisecond of CPU per MiB here (the socket read, HTTP parsing,
keeping the bytes), so a client pushing 32 MiB bodies as fast as loopback allows kept the
loop busy for the whole transfer, and every other request waited behind it: in the
"hung model, 40 queued 32 MiB requests" row of ``benchmarks/server_bombs.py`` a steady
one-row model's p99 rose to 1.6-2.9x of its p99 alone. Past its first :data:`BULK_FREE`
bytes a body is read at most at :data:`BULK_RATE` bytes a second, shared by every body
being read: while the loop waits its turn, the connection's buffer fills and TCP holds the
client back, and the other requests get the loop (measured: 1.11-1.77x, median 1.5x;
docs/reliability.md).
Small requests (under :data:`BULK_FREE`, nearly all) are never paced, nor is a body alone on
the server (no other request within a second before it, none since: ``OipApp._crowded``),
until another request comes. However many bodies
share the rate, each is read at least at :data:`BODY_FLOOR` (so many connections pushing
bodies can't starve one: past that the server is as it was without pacing, CPU-bound), the
bucket never runs more than :data:`MAX_LAG_S` ahead (no slow-down lingers after such a
flood), and the time a body waits here does not count against its own read timeout
(``core/serving/asgi.py``).

Example:
    >>> pacer = BulkPacer(bytes_per_s=128 * 2**20)
    >>> pacer.delay(at=0, n=65536)          # within the first MiB: no wait
    0.0
    >>> await pacer.pace(at=2**20, n=2**20)  # in a coroutine: sleeps ~8 ms
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

__all__ = ["BulkPacer", "BULK_RATE", "BULK_FREE", "BULK_DRAIN_S", "BODY_FLOOR", "MAX_LAG_S"]

#: Bytes a second of bodies past their first BULK_FREE bytes, all bodies together (on this
#: machine's VMs about an eighth of the event loop's time).
BULK_RATE = 128 * 2**20
#: A body's first this many bytes are read at once.
BULK_FREE = 2**20
#: The rate is raised so that the most the server holds in bodies not yet answered (its
#: bound on them) is read within this many seconds: well inside a body's own timeout.
BULK_DRAIN_S = 10.0
#: Each body is read at least this fast (bytes a second), however many share the rate.
BODY_FLOOR = 4 * 2**20
#: The bucket's backlog is capped at this many seconds ahead of now.
MAX_LAG_S = 1.0
#: A wait shorter than this is carried over to the next piece rather than slept.
_MIN_SLEEP_S = 0.002


class BulkPacer:
    """A token bucket for body bytes past each body's first ``free_bytes``: ``pace`` sleeps
    as long as reading ``n`` more bytes puts the bodies together ahead of ``bytes_per_s``.
    Idle time earns no credit (no burst past the rate). Not thread-safe: one event loop's."""

    def __init__(self, bytes_per_s: float = BULK_RATE, free_bytes: int = BULK_FREE,
                 floor_bytes_per_s: float = BODY_FLOOR,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if not bytes_per_s > 0:
            raise ValueError(f"bytes_per_s must be > 0, got {bytes_per_s!r}")
        self.bytes_per_s = float(bytes_per_s)
        self.floor_bytes_per_s = float(min(floor_bytes_per_s, bytes_per_s))
        self.free_bytes = free_bytes
        self._clock, self._sleep = clock, sleep
        self._next = 0.0
        #: Bytes paced so far, and the seconds slept for them (for tests and benchmarks).
        self.paced_bytes = 0
        self.slept_s = 0.0

    def delay(self, at: int, n: int) -> float:
        """Seconds to wait after reading ``n`` bytes of a body whose first ``at`` bytes
        were read before (0 while ahead by less than a couple of milliseconds): the bodies'
        shared backlog, but at most what this piece takes at the floor rate."""
        paced = at + n - max(at, self.free_bytes)
        if paced <= 0:
            return 0.0
        self.paced_bytes += paced
        now = self._clock()
        self._next = min(max(now, self._next) + paced / self.bytes_per_s, now + MAX_LAG_S)
        ahead = min(self._next - now, paced / self.floor_bytes_per_s)
        return ahead if ahead >= _MIN_SLEEP_S else 0.0

    async def pace(self, at: int, n: int) -> float:
        """Wait (see :meth:`delay`) before the next piece of the body is read; the
        seconds waited."""
        wait = self.delay(at, n)
        if wait:
            self.slept_s += wait
            await self._sleep(wait)
        return wait
