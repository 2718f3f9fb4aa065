"""Changing a model's batch settings live: a local model's batcher takes them at once; a
remote model's batch size and wait are its server's (changed there, where the server lets a
client), its queue and timeout the client's.

Example:
    >>> configure("mlp", entry_of, lock, {"max_batch_size": 16}, guard, sending)
    BatchConfig(max_batch_size=16, ...)
"""

from __future__ import annotations

import threading
from typing import Any, Callable, ContextManager

from core.config import BatchConfig
from core.errors import ConfigError
from core.protocol import triton
from core.remote import RemoteModel
from .registry import ModelEntry

__all__ = ["configure"]

_SERVER_SIDE = ("max_batch_size", "max_wait_ms")
_SERVER_ONLY = ("policy", "latency_slo_ms", "instances")


def configure(name: str, entry_of: Callable[[], ModelEntry], lock: threading.RLock,
              changes: dict[str, Any], guard: Callable[[], None],
              sending: Callable[[], ContextManager[None]]) -> tuple[BatchConfig, BatchConfig]:
    """Apply ``changes`` to ``name``'s configuration; returns the one before and the new
    one. Queued requests are kept. ``entry_of()`` is the model's entry now: looked up
    again under ``lock``, so that a hot swap meanwhile gets the change (one looked up
    before went to the retired version, and the serving one never had it). ``guard()``
    raises to refuse the change; asked under ``lock``, the lock a sweep starts under, so a
    change is either refused or made before the sweep reads the settings it restores.
    ``sending()``: held while a remote model's server is sent the change (it asks the
    guard and marks the model busy under ``lock``: a sweep does not start meanwhile)."""
    entry = entry_of()
    if entry.remote is not None:
        # The server is called without the engine's lock (it may take seconds); two
        # configures of one remote model at once end with the last one's answer.
        with sending():
            cfg = _configure_remote(name, entry.remote, entry.served.config, changes)
            with lock:
                now = entry_of()
                before = now.served.config
                if now.remote is not entry.remote:   # replaced meanwhile
                    cfg = before.replace(**changes)
                now.served.configure(cfg)
        return before, cfg
    with lock:
        guard()
        served = entry_of().served
        before = served.config
        cfg = before.replace(**changes)
        served.configure(cfg)
    return before, cfg


def _configure_remote(name: str, remote: RemoteModel, old: BatchConfig,
                      changes: dict[str, Any]) -> BatchConfig:
    server_side = {k: v for k, v in changes.items()
                   if k in _SERVER_SIDE and getattr(old, k) != v}
    other = sorted(k for k in changes if k in _SERVER_ONLY and getattr(old, k) != changes[k])
    if other:
        raise ConfigError(f"{', '.join(other)} of remote model {name!r} belong to its "
                          f"server ({remote.target.url}); Batchlab can change only "
                          "max_batch_size and max_wait_ms there (where the server "
                          "allows), and max_queue and timeout_ms here")
    if server_side:
        got = remote.apply_batch(server_side.get("max_batch_size"),
                                 server_side.get("max_wait_ms"))
        read_back = {"max_batch_size": None if got.max_batch_size is None
                     else triton.batchlab_max_batch_size(got.max_batch_size),
                     "max_wait_ms": got.max_wait_ms}
        changes = {**changes, **{k: v for k, v in read_back.items() if v is not None}}
    return old.replace(**changes)
