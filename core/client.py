"""``core.client.RemoteEngine``: the engine server's client (:mod:`core.serving.client`), by
the name the design and the notebooks use.

Example:
    >>> from core.client import RemoteEngine
    >>> engine = RemoteEngine.connect("http://127.0.0.1:8000")
"""

from __future__ import annotations

from core.serving.client import DEFAULT_URL, RemoteEngine

__all__ = ["RemoteEngine", "DEFAULT_URL"]
