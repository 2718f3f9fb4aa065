"""Errors and HTTP statuses, one table for both sides of the wire: the engine server answers
an error with its status and type name, and a client (``RemoteEngine``) raises the same
error again from them.

Example:
    >>> status_of(ModelNotFoundError("no model 'x'")), error_from(404, {"error": "no model"})
    (404, ModelNotFoundError('no model'))
"""

from __future__ import annotations

from typing import Any

from core import errors
from core.errors import (BatchlabError, ConfigError, EngineClosedError, InputValidationError,
                         ModelNotFoundError, OverloadedError, RequestTimeoutError,
                         ResourceLimitError)

__all__ = ["HTTPError", "status_of", "error_from", "cut_message", "MAX_ERROR_CHARS"]


class HTTPError(Exception):
    """Answer this status with this message (a request the protocol says is wrong)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# Most specific first: an error's status is that of the first row it is an instance of.
_STATUS: tuple[tuple[tuple[type[BaseException], ...], int], ...] = (
    ((ModelNotFoundError, KeyError), 404),
    ((OverloadedError, EngineClosedError), 503),
    ((RequestTimeoutError,), 504),
    # more than this server takes (its memory budget, a time limit): asked smaller, it may
    ((ResourceLimitError,), 413),
    # the engine's argument checks raise ValueError too (WireError is one); an
    # OverflowError comes from a number the client sent (timeout_ms=1e308)
    ((InputValidationError, ConfigError, ValueError, OverflowError), 400),
)

# The error a client raises for a status when the answer names no Batchlab error.
_BY_STATUS: dict[int, type[BatchlabError]] = {
    400: ConfigError, 404: ModelNotFoundError, 413: ResourceLimitError,
    503: OverloadedError, 504: RequestTimeoutError}

# Built-in exceptions the engine raises on purpose, raised as themselves by a client (a page
# that catches KeyError for an unknown history run works with either engine).
_BUILTINS: dict[str, type[Exception]] = {"KeyError": KeyError, "ValueError": ValueError}


def status_of(err: BaseException) -> int:
    """The HTTP status of an error, as the data plane and the control API answer it; anything
    not listed (an IndexError, a TypeError...) is a 500, not the client's fault."""
    if isinstance(err, HTTPError):
        return err.status
    for kinds, status in _STATUS:
        if isinstance(err, kinds):
            return status
    return 500


def error_from(status: int, body: Any) -> Exception:
    """The exception an error answer stands for: the Batchlab error it names (``type``),
    else the one its status means, with the server's message."""
    message = body.get("error") if isinstance(body, dict) else None
    message = message or f"the engine server answered HTTP {status}"
    kind = body.get("type") if isinstance(body, dict) else None
    if kind in _BUILTINS:
        return _BUILTINS[kind](message)
    cls = getattr(errors, kind, None) if isinstance(kind, str) else None
    if not (isinstance(cls, type) and issubclass(cls, BatchlabError)):
        cls = _BY_STATUS.get(status, BatchlabError)
    return cls(message)


#: The longest error message answered or kept from an answer (characters): one that quotes
#: what a caller sent (a 4 MiB input name), or a server's 50 MiB one, is cut here.
MAX_ERROR_CHARS = 4000


def cut_message(message: str) -> str:
    """``message`` cut at :data:`MAX_ERROR_CHARS`, saying how long it was."""
    if len(message) <= MAX_ERROR_CHARS:
        return message
    return f"{message[:MAX_ERROR_CHARS]}… (cut: {len(message):,} characters)"
