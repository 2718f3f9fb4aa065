"""The remote models' HTTP client loop: one asyncio loop on a daemon thread
(``batchlab-oip-client``), shared by every remote target of the process, whose CPU counts
as the client's (:func:`core.metrics.register_helper`).

The loop's heavy work (inflating a compressed answer, parsing a long one) goes to
:func:`heavy_executor`: **one** worker thread (``batchlab-oip-heavy``). Six gzip bombs at
once are then inflated one after another on at most one core, and the loop, the engines'
runners and the healthy models' answers keep the CPU they need (with the default
executor's six workers they took both cores of this machine). Not at a lower priority: the
worker holds the interpreter while it parses, and a thread the OS runs seldom would hold
every other thread up with it (and measured, nice +10 made no difference). The loop's
default executor (name lookups) stays apart.

Example:
    >>> client_loop().call(some_coroutine(), timeout_s=5.0)
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from core.metrics import register_helper

__all__ = ["client_loop", "heavy_executor", "ClientLoop"]


def _heavy_thread_start() -> None:
    register_helper(threading.current_thread())


class ClientLoop:
    """One asyncio loop on a daemon thread, shared by every remote target of the process."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.heavy = ThreadPoolExecutor(1, thread_name_prefix="batchlab-oip-heavy",
                                        initializer=_heavy_thread_start)
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="batchlab-oip-client",
                                       daemon=True)
        self.thread.start()
        register_helper(self.thread)
        self.ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self.ready.set)
        self.loop.run_forever()

    def call(self, coro: Any, timeout_s: float,
             stop: Callable[[], bool] | None = None) -> Any:
        """Run ``coro`` on the loop and wait for its result (from any other thread); with
        ``stop``, asked every 50 ms: when it says so the call is cancelled and
        :class:`InterruptedError` raised (a warm-up's Cancel waited for a slow server's
        answer, up to its timeout; an adversary)."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        if stop is None:   # (every client call: as it was)
            try:
                return fut.result(timeout_s)
            except TimeoutError:
                fut.cancel()
                raise
        end = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    return fut.result(max(0.0, min(0.05, end - time.monotonic())))
                except TimeoutError:
                    if time.monotonic() >= end:
                        raise
                    if stop():
                        raise InterruptedError("stopped while waiting for the answer") \
                            from None
        except BaseException:
            fut.cancel()
            raise


_LOOP: ClientLoop | None = None
_LOOP_LOCK = threading.Lock()


def client_loop() -> ClientLoop:
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None or not _LOOP.thread.is_alive():
            if _LOOP is not None:   # its loop died: its worker goes with it
                _LOOP.heavy.shutdown(wait=False, cancel_futures=True)
            _LOOP = ClientLoop()
        return _LOOP


def heavy_executor() -> ThreadPoolExecutor:
    """The shared client loop's one lower-priority worker for long answers (see the module
    docstring)."""
    return client_loop().heavy
