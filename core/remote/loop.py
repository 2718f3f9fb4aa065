"""The remote models' HTTP client loop: one asyncio loop on a daemon thread
(``batchlab-oip-client``), shared by every remote target of the process, whose CPU counts
as the client's (:func:`core.metrics.register_helper`).

Example:
    >>> client_loop().call(some_coroutine(), timeout_s=5.0)
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from core.metrics import register_helper

__all__ = ["client_loop", "ClientLoop"]


class ClientLoop:
    """One asyncio loop on a daemon thread, shared by every remote target of the process."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
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

    def call(self, coro: Any, timeout_s: float) -> Any:
        """Run ``coro`` on the loop and wait for its result (from any other thread)."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout_s)
        except TimeoutError:
            fut.cancel()
            raise


_LOOP: ClientLoop | None = None
_LOOP_LOCK = threading.Lock()


def client_loop() -> ClientLoop:
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None or not _LOOP.thread.is_alive():
            _LOOP = ClientLoop()
        return _LOOP
