"""An ASGI request as the engine server's routes read it (:class:`~core.serving.routes.RequestIn`):
its headers, its body (read by :class:`~core.serving.asgi.OipApp` before the route runs)
and when it arrived."""

from __future__ import annotations

from typing import Any

from core.protocol import HTTPError
from .routes import parse_json

__all__ = ["AsgiRequest"]


class AsgiRequest:
    """What a route reads of an ASGI request (:class:`~core.serving.routes.RequestIn`);
    the body is read before the route runs."""

    __slots__ = ("_headers", "_body", "_has_body", "_arrived", "_gap", "_read_at")

    def __init__(self, scope: dict[str, Any]) -> None:
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        self._headers = headers
        self._has_body = "content-length" in headers or "transfer-encoding" in headers
        self._body = b""
        # when it arrived, and how long after the request before it (see OipApp._crowded)
        self._arrived = self._gap = 0.0
        self._read_at: float | None = None   # (when its body had been read: monotonic)

    def header(self, name: str) -> str | None:
        return self._headers.get(name.lower())

    def raw_body(self, limit: int | None = None, required: bool = True) -> bytes | None:
        if not self._has_body:
            if required:
                raise HTTPError(411, "a Content-Length header is required")
            return None
        if limit is not None and len(self._body) > limit:
            raise HTTPError(413, f"the request body is {len(self._body)} bytes, over the "
                                  f"limit of {limit} bytes")
        if not self._body and not required:
            return None
        return self._body

    def body(self, limit: int | None = None, required: bool = True,
             max_parsed_bytes: int | None = None) -> Any:
        raw = self.raw_body(limit, required)
        if raw is None:
            return None
        parsed = parse_json(raw, max_parsed_bytes)
        # Parsed: the raw bytes are not needed again, and an upload's are hundreds of MiB.
        self._body = b""
        return parsed
