"""The session cache: sessions shared by content hash and session options, bounded (LRU).

Example:
    >>> cache = SessionCache(capacity=2)
    >>> cache.get_or_create(data, SessionConfig()) is cache.get_or_create(data, SessionConfig())
    True
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort

from core.config import SessionConfig
from .memory import heap_in_use_bytes
from .session import create_session

__all__ = ["SessionCache", "CacheEntry", "created_session"]


@dataclass(frozen=True)
class CacheEntry:
    """One cached session as listed by :meth:`SessionCache.entries`."""

    key: str
    sha256: str
    size_bytes: int
    session_config: SessionConfig
    loads: int
    last_used_s_ago: float


class SessionCache:
    """A bounded LRU of ONNX Runtime sessions keyed by (content sha256, session options).

    Evicting an entry only means the next load builds a new session; models already
    registered keep the session they hold.

    Example:
        >>> cache = SessionCache(capacity=2)
        >>> s1 = cache.get_or_create(data, SessionConfig())
        >>> s2 = cache.get_or_create(data, SessionConfig())
        >>> s1 is s2
        True
    """

    def __init__(self, capacity: int = 8) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, SessionConfig, bool], list[Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get_or_create(self, data: bytes, options: SessionConfig,
                      sha256: str | None = None, fold: bool = True) -> ort.InferenceSession:
        sha = sha256 or hashlib.sha256(data).hexdigest()
        key = (sha, options, fold)   # (fold, decided by the bytes today: in the key so
        # that a session made without constant folding is never handed to one with it)
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                item[2] += 1
                item[3] = time.monotonic()
                self.hits += 1
                return item[0]
        # Session creation can take seconds: do it outside the lock.
        session, held = created_session(data, options, fold=fold)
        with self._lock:
            item = self._items.get(key)
            if item is not None:  # another thread won the race; share its session
                self._items.move_to_end(key)
                return item[0]
            self.misses += 1
            self._items[key] = [session, len(data), 1, time.monotonic(), held]
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return session

    def held_bytes(self, sha256: str, options: SessionConfig, fold: bool = True) -> int | None:
        """What the cached session of ``sha256`` with ``options`` holds (see
        :func:`created_session`), or None when none is cached."""
        with self._lock:
            item = self._items.get((sha256, options, fold))
            return None if item is None else item[4]

    def entries(self) -> list[CacheEntry]:
        now = time.monotonic()
        with self._lock:
            return [CacheEntry(key=f"{sha[:12]}/{opts.provider}/{opts.graph_optimization}"
                               f"/t{opts.intra_op_threads or 'auto'}",
                               sha256=sha, size_bytes=item[1], session_config=opts,
                               loads=item[2], last_used_s_ago=round(now - item[3], 3))
                    for (sha, opts, _), item in reversed(self._items.items())]

    def evict(self, sha256: str | None = None) -> int:
        """Drop entries whose sha256 starts with ``sha256`` (all when ``None``); returns count."""
        with self._lock:
            doomed = [k for k in self._items if sha256 is None or k[0].startswith(sha256)]
            for k in doomed:
                del self._items[k]
            return len(doomed)

    def shed(self, keep: set[str], room_bytes: int) -> list[str]:
        """Drop sessions whose sha256 is not in ``keep`` (those no loaded model holds),
        least recently used first, until what is left of them takes at most ``room_bytes``
        (each counted, like a loaded model, as what it holds); the sha256s dropped."""
        with self._lock:
            spare = [(k, item[4]) for k, item in self._items.items() if k[0] not in keep]
            held = sum(size for _, size in spare)
            dropped = []
            for key, size in spare:          # the OrderedDict is least recently used first
                if held <= room_bytes:
                    break
                del self._items[key]
                held -= size
                dropped.append(key[0])
            return dropped

    def __len__(self) -> int:
        return len(self._items)


def created_session(data: bytes, options: SessionConfig, arena: bool = True,
                    fold: bool = True) -> tuple[ort.InferenceSession, int]:
    """A new session of ``data``, and the bytes it holds: what the process's heap grew by
    while it was created (:func:`heap_in_use_bytes`), at least twice the file (a chain of
    150,000 Sigmoid nodes is a 4 MB file whose session holds 440 MB; counted by its file,
    three of them took a server past its budget; an adversary). Other threads'
    allocations meanwhile move the figure a little either way."""
    before = heap_in_use_bytes()
    session = create_session(data, options, arena, fold)
    return session, max(2 * len(data), heap_in_use_bytes() - before)
