"""How a :class:`~core.serving.client.RemoteEngine` talks to the engine server: one HTTP
call at a time over pooled keep-alive connections (aiohttp, on the process's client loop),
each with one deadline for all of it, its answer read up to a bound (and every answer read
at once up to twice it), parsed as strict JSON under the parse bound, and a server's error
answer raised as the engine's own exception.

Example:
    >>> t = _Transport("http://127.0.0.1:8000", timeout_s=10.0, pool_size=64)
    >>> t.request("GET", "/v1/info")
"""

from __future__ import annotations

import asyncio
import atexit
import json
import weakref
from typing import Any

from core.errors import EngineUnavailableError, OverloadedError, RequestTimeoutError
from core.models import request_bytes_limit
from core.protocol import cut_message, error_from, jsontext
from core.remote.loop import client_loop
from .control import DEFAULT, ENGINE_CONTRACT, STORE_CONTRACT

__all__ = ["MAX_ANSWER_BYTES"]

# A wait with a timeout gets that timeout plus this margin.
_MARGIN_S = 10.0
# How long a connection may take to be accepted (seconds).
_CONNECT_S = 3.0
#: The largest answer a RemoteEngine reads (bytes): past it, the call fails without
#: reading further (a history frame or a trace of a busy engine is tens of MB). All the
#: answers it reads at once are bounded at twice this (four calls at once held 2.4 GB).
MAX_ANSWER_BYTES = 512 * 2**20


class _TooLarge(Exception):
    pass


class _Crowded(Exception):
    """Answers read at once past their bound (this one was within its own)."""
_CONTRACT = {**ENGINE_CONTRACT, **STORE_CONTRACT}


def _read_timeout(method: str, kwargs: dict[str, Any], default: float) -> float | None:
    """How long to wait for the answer (seconds; None: as long as it takes)."""
    # (a value not a wait waits the default: the server refuses it in words; "5" raised a
    # TypeError here and inf an OverflowError, where an Engine says what is wrong)
    for key, scale in _CONTRACT[method].waits_by:
        value = kwargs.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and 0 < value * scale <= 2 * 86_400:
            return value * scale + _MARGIN_S
    wait = _CONTRACT[method].wait_s
    return default if wait == DEFAULT else wait


class _Transport:
    """Connections to the server (aiohttp, on the process's client loop); thread-safe.

    Every call has one deadline for all of it — connecting, sending, the answer's head and
    its body — so a server that drips its answer can't hold a caller past it, and an answer
    is read up to :data:`MAX_ANSWER_BYTES` and no further."""

    def __init__(self, url: str, timeout_s: float, pool_size: int,
                 token: str | None = None, max_answer_bytes: int = MAX_ANSWER_BYTES,
                 max_parsed_bytes: int | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_answer_bytes = max_answer_bytes
        self.max_parsed_bytes = max_parsed_bytes
        self._pool_size = pool_size
        #: Bytes of answers being read now (counted on the client loop: no lock).
        self._reading = 0
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._loop = client_loop()
        self._session: Any = None  # made on the loop, on first use
        _OPEN.add(self)  # closed at exit if its owner never did (no "unclosed" warnings)

    def _get_session(self) -> Any:
        import aiohttp
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, keepalive_timeout=30),
                headers=self._headers, skip_auto_headers=("User-Agent",))
        return self._session

    async def _fetch(self, method: str, path: str, data: bytes | None, total: float | None,
                     retry: bool) -> tuple[int, bytes, Any]:
        import aiohttp
        timeout = aiohttp.ClientTimeout(total=total, sock_connect=_CONNECT_S)
        for attempt in (0, 1):
            try:
                async with self._get_session().request(
                        method, self.url + path, data=data, timeout=timeout,
                        allow_redirects=False) as resp:
                    declared = resp.content_length
                    if declared is not None and declared > self.max_answer_bytes:
                        raise _TooLarge(f"announced {declared:,} bytes")
                    chunks, size = [], 0
                    try:
                        async for chunk in resp.content.iter_chunked(1 << 16):
                            size += len(chunk)
                            self._reading += len(chunk)
                            if size > self.max_answer_bytes:
                                raise _TooLarge(f"more than {self.max_answer_bytes:,} bytes")
                            if self._reading > 2 * self.max_answer_bytes:
                                raise _Crowded(self._reading - size, size)
                            chunks.append(chunk)
                        return resp.status, b"".join(chunks), resp.headers
                    finally:
                        self._reading -= size
                        # (a refused read lets go of what it read: the error's traceback
                        # kept this frame, and a page keeping the error kept 512 MiB)
                        chunks.clear()
            except aiohttp.ClientConnectorError:
                if attempt:  # a refused connection is tried once more (a server restarting)
                    raise
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as err:
                # a pooled keep-alive connection the server had closed: a call that only
                # reads is sent again on a new one
                if attempt or not retry or isinstance(err, aiohttp.ClientConnectorError):
                    raise
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, body: Any = None, retry: bool = False,
                read_timeout_s: float | None | str = "default") -> Any:
        import aiohttp
        data = None if body is None else json.dumps(body).encode()
        total = self.timeout_s if read_timeout_s == "default" else read_timeout_s
        where = f"the engine server at {self.url}"
        try:
            status, raw, headers = self._loop.call(self._fetch(method, path, data, total,
                                                               retry),
                                          None if total is None else total + 5.0)
        except aiohttp.ConnectionTimeoutError:
            raise EngineUnavailableError(
                f"{where} did not accept a connection within {_CONNECT_S:g} s; is it "
                "running and reachable?") from None
        except (asyncio.TimeoutError, TimeoutError):
            raise RequestTimeoutError(
                f"{where} did not answer {path} within {total:g} s; the call may still "
                "have taken effect there") from None
        except _Crowded as err:
            raise OverloadedError(
                f"this client was reading {err.args[0]:,} bytes of other answers at once, and "
                f"{where}'s answer to {path} took them past twice its limit of "
                f"{self.max_answer_bytes:,} bytes (this answer was {err.args[1]:,} bytes so "
                "far); retry when those are read, or make fewer calls at once (the call may "
                "have taken effect there)") from None
        except _TooLarge as err:
            raise EngineUnavailableError(
                f"{where} answered {path} with more than this client's limit of "
                f"{self.max_answer_bytes:,} bytes ({err}); is this a Batchlab engine "
                "server? (RemoteEngine(max_answer_bytes=...) raises the limit)") from None
        except aiohttp.ClientError as err:
            raise EngineUnavailableError(
                f"{where} is not reachable ({err}); start it with `make serve` (or "
                "`python -m core.server`), or point BATCHLAB_ENGINE_URL at a running "
                "one") from None
        if 300 <= status < 400:   # (said as "not a Batchlab answer (no 'result')"; before
            raise EngineUnavailableError(   # its body: a proxy's is HTML, "not JSON")
                f"{where} answered {path} with HTTP {status}, a redirect"
                + (f" (to {headers['Location'][:300]!r})" if headers.get("Location") else "")
                + ", which this client does not follow: point it at the engine server's own "
                "address")
        try:
            # Bounded as the server bounds a request: what its parse could take, counted
            # before parsing (a 32 KiB gzip'd answer of tiny values was 1.5 GiB parsed).
            payload = jsontext.loads(raw, self.max_parsed_bytes or request_bytes_limit()) \
                if raw else {}   # (strict: a bare NaN was taken as a number)
        except jsontext.JSONTooLarge as err:
            raise EngineUnavailableError(
                f"{where} answered {path} with JSON that cannot be read here: {err} (an "
                "eighth of this process's memory budget; RemoteEngine(max_parsed_bytes=...) "
                "raises it, or ask for less at once)") from None
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise EngineUnavailableError(
                f"{self.url}{path} answered HTTP {status} with something that is not "
                "JSON: is this a Batchlab engine server?") from None
        if status >= 400:
            if isinstance(payload, dict) and isinstance(payload.get("error"), str):
                payload["error"] = cut_message(payload["error"])   # (50 MiB was raised)
            raise error_from(status, payload)
        return payload

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._loop.thread.is_alive():
            try:
                self._loop.call(session.close(), 5.0)
            except Exception:  # noqa: BLE001 - closing: nothing left to tell anyone
                pass


_OPEN: weakref.WeakSet[_Transport] = weakref.WeakSet()


@atexit.register
def _close_open_transports() -> None:
    for transport in list(_OPEN):
        transport.close()
