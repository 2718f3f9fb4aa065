"""Giving back what a burst of large requests left in malloc's free lists.

glibc keeps memory a process freed for its next allocations: after floods of 32 MiB
requests the engine server rested at ~600 MiB (from ~220) with no Python object alive to
account for it; ``malloc_trim(0)`` gave back all but ~20 MiB of that (``python -m
benchmarks.flood_rss``). :class:`HeapTrimmer` checks the process's resident size every
couple of seconds and, once it has grown by ``grown_bytes`` since the last trim and no
large request body has been held for a second (``idle``), trims the heap on its own
thread. Steady traffic of small requests never grows it that far; a flood is not trimmed
in its middle; a model load that grows it that far is followed by one trim (tens of ms,
beside whatever traffic runs then).

Example:
    >>> t = HeapTrimmer(idle=lambda: True).start()
    >>> t.stop()
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from core.models import current_rss_bytes
from core.models.memory import libc_function

__all__ = ["HeapTrimmer"]

log = logging.getLogger(__name__)


class HeapTrimmer:
    """Trim the C heap after the resident set grew by ``grown_bytes`` and ``idle()`` says
    no large work holds memory now (see the module). ``trims`` and ``given_back`` (bytes)
    count what it did."""

    def __init__(self, idle: Callable[[], bool], interval_s: float = 2.0,
                 grown_bytes: int = 64 * 2**20,
                 resident: Callable[[], int] = current_rss_bytes,
                 trim: Callable[[int], int] | None = None) -> None:
        self.idle, self.interval_s, self.grown_bytes = idle, interval_s, grown_bytes
        self.trims = 0
        self.given_back = 0
        self._resident = resident
        self._trim = trim or libc_function("malloc_trim")   # None: not glibc, no trimming
        self._floor = resident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heap-trimmer", daemon=True)

    def start(self) -> HeapTrimmer:
        if self._trim is not None and self._resident():   # 0: /proc does not say
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def check(self) -> bool:
        """One look (the thread's, every ``interval_s``): trim when grown and idle; True
        when it trimmed."""
        now = self._resident() or 0
        self._floor = min(self._floor, now)
        if self._trim is None or now - self._floor < self.grown_bytes or not self.idle():
            return False
        started = time.perf_counter()
        self._trim(0)
        after = self._resident() or now
        self.trims += 1
        self.given_back += max(0, now - after)
        log.info("gave back %.0f MiB of freed heap (%.0f -> %.0f MiB resident) in %.0f ms",
                 (now - after) / 2**20, now / 2**20, after / 2**20,
                 (time.perf_counter() - started) * 1e3)
        self._floor = after
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check()
