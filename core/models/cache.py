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
from .session import create_session

__all__ = ["SessionCache", "CacheEntry"]


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
        self._items: OrderedDict[tuple[str, SessionConfig], list[Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get_or_create(self, data: bytes, options: SessionConfig,
                      sha256: str | None = None) -> ort.InferenceSession:
        sha = sha256 or hashlib.sha256(data).hexdigest()
        key = (sha, options)
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                item[2] += 1
                item[3] = time.monotonic()
                self.hits += 1
                return item[0]
        # Session creation can take seconds: do it outside the lock.
        session = create_session(data, options)
        with self._lock:
            item = self._items.get(key)
            if item is not None:  # another thread won the race; share its session
                self._items.move_to_end(key)
                return item[0]
            self.misses += 1
            self._items[key] = [session, len(data), 1, time.monotonic()]
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return session

    def entries(self) -> list[CacheEntry]:
        now = time.monotonic()
        with self._lock:
            return [CacheEntry(key=f"{sha[:12]}/{opts.provider}/{opts.graph_optimization}"
                               f"/t{opts.intra_op_threads or 'auto'}",
                               sha256=sha, size_bytes=item[1], session_config=opts,
                               loads=item[2], last_used_s_ago=round(now - item[3], 3))
                    for (sha, opts), item in reversed(self._items.items())]

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
        (each counted, like a loaded model, as twice its file); the sha256s dropped."""
        with self._lock:
            spare = [(k, item[1]) for k, item in self._items.items() if k[0] not in keep]
            held = sum(2 * size for _, size in spare)
            dropped = []
            for key, size in spare:          # the OrderedDict is least recently used first
                if held <= room_bytes:
                    break
                del self._items[key]
                held -= 2 * size
                dropped.append(key[0])
            return dropped

    def __len__(self) -> int:
        return len(self._items)
