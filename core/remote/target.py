"""One model on an Open Inference Protocol (KServe v2) HTTP server: metadata, readiness,
config and infer, over pooled keep-alive connections from the shared client loop; answers
read with a cap, failures put in words a person can act on.

Example:
    >>> t = OIPTarget("http://127.0.0.1:8080", "mlp")
    >>> t.fetch_json("GET", t.model_path)
    (200, {'name': 'mlp', 'inputs': [...], ...})
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np

from core.errors import (ConfigError, InputValidationError, RemoteConnectionError,
                         RemoteServerError, RequestTimeoutError)
from core.models import request_bytes_limit
from core.protocol import (HEADER_LENGTH, OIPError, encode_infer_request, jsontext,
                           parse_infer_response)
from .loop import client_loop, heavy_executor
from .reading import PARSE_OFF_LOOP_BYTES, BadEncoding, TooLarge, read_capped
from .policy import HOPS_HEADER, OutboundPolicy

__all__ = ["OIPTarget", "describe_failure", "points_at", "server_words", "redact",
           "MAX_ANSWER_BYTES", "MAX_CONTROL_ANSWER_BYTES", "MAX_CONTROL_TIMEOUT_S",
           "MAX_SERVER_WORDS"]

log = logging.getLogger("batchlab.remote")

#: The largest answer read from a server: an infer answer, and a control answer (metadata,
#: config, index). A larger one fails (RemoteServerError 502) without being read further,
#: so no server can make the engine's memory grow without bound.
MAX_ANSWER_BYTES = 64 * 2**20
MAX_CONTROL_ANSWER_BYTES = 4 * 2**20
#: The longest a control call (metadata, readiness, config) may be given (seconds).
MAX_CONTROL_TIMEOUT_S = 60.0
#: The most of a server's error text copied into an error message (characters).
MAX_SERVER_WORDS = 200
# An error answer longer than this is described, not parsed for its words.
_WORDS_PARSE_MAX = 64 * 2**10


def _max_parsed_bytes() -> int:
    """What parsing one answer's JSON may take here: an eighth of the memory budget (at
    least 64 MiB), as a server allows for a request (60 MB of gzip-bombed JSON of small
    values was 1.9 GB parsed)."""
    return request_bytes_limit()


def describe_failure(err: BaseException, where: str, timeout_s: float) -> str:
    """What went wrong talking to ``where``, for a person (no stack trace needed)."""
    import aiohttp
    if isinstance(err, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer from {where} within {timeout_s:g} s"
    if isinstance(err, (aiohttp.ClientSSLError, ssl.SSLError)) or isinstance(
            getattr(err, "__cause__", None), ssl.SSLError) or "SSL" in str(err):
        return (f"the TLS handshake with {where} failed ({err}); check https:// vs http:// "
                "and the server's certificate")
    if isinstance(err, aiohttp.ClientConnectorError):
        os_err = getattr(err, "os_error", None)
        if isinstance(os_err, ConnectionRefusedError):
            return f"could not connect to {where}: connection refused (nothing listens there)"
        why = getattr(os_err, "strerror", None) or str(os_err or err)
        return f"could not connect to {where} ({why})"
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return f"{where} closed the connection without answering"
    if isinstance(err, (aiohttp.ClientPayloadError, aiohttp.ClientOSError,
                        ConnectionError)):
        return f"the connection to {where} failed mid-answer ({err})"
    if isinstance(err, aiohttp.InvalidURL):
        return f"the URL {where} is not valid ({err})"
    return f"talking to {where} failed: {type(err).__name__}: {err}"


def points_at(url: Any, served: set[tuple[str, int]]) -> bool:
    """Whether ``url`` names one of the (host, port) pairs in ``served`` (a loopback or
    wildcard host matches any loopback name)."""
    try:
        parts = urlsplit(str(url).strip())
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    local = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"}
    return any(port == p and (host == h or (host in local and h in local))
               for h, p in served)


def redact(url: str) -> str:
    """``url`` without a password (for messages)."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            return url.replace(f":{parts.password}@", ":***@", 1)
    except ValueError:
        pass
    return url


def server_words(answer: Any) -> str:
    """What a server's error answer says, for a person: the ``error`` text of an OIP error
    answer (``{"error": ...}``), shortened to :data:`MAX_SERVER_WORDS` characters with
    control characters removed; any other body is not copied at all (a non-OIP service's
    answer can hold anything), only described. ``answer`` is the raw body, or what
    ``OIPTarget.fetch_json`` made of it (None: empty)."""
    if answer is None:
        return "(empty body)"
    body = answer
    if isinstance(answer, (bytes, bytearray)):
        try:   # (an error answer is short: a long body is not parsed, only described)
            body = json.loads(answer) if len(answer) <= _WORDS_PARSE_MAX else None
        except (ValueError, UnicodeDecodeError, RecursionError):
            body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        text = "".join(c if c.isprintable() else " " for c in body["error"]).strip()
        return (text[:MAX_SERVER_WORDS] + "...") if len(text) > MAX_SERVER_WORDS else text
    size = (len(answer) if isinstance(answer, (bytes, bytearray))
            else len(json.dumps(answer, default=str)))
    return f"an answer of {size:,} bytes that is not an Open Inference Protocol error (not shown)"


def _redirect_words(url: str, resp: Any) -> str:
    """A redirect, refused: Batchlab never follows one (a redirect to another host would
    carry the request, and its tensors, there)."""
    location = resp.headers.get("Location", "")
    try:
        parts = urlsplit(location)
        where = f"{parts.scheme}://{parts.netloc}" if parts.netloc else "another path"
    except ValueError:
        where = "an invalid location"
    return (f"{url} answered a redirect ({resp.status}) to {where}; Batchlab does not follow "
            "redirects: give the final URL of the server")


class OIPTarget:
    """A model on an OIP v2 HTTP server: metadata, readiness, config, and infer.

    Connections are pooled and kept alive (at most ``max_connections`` at once); requests
    use the binary tensor extension unless ``binary=False``.
    """

    def __init__(self, url: str, model: str, version: str | None = None,
                 headers: dict[str, str] | None = None, timeout_s: float = 10.0,
                 max_connections: int = 64, binary: bool | None = True,
                 policy: OutboundPolicy | None = None) -> None:
        if not isinstance(url, str) or not url.strip():
            raise ConfigError("url must be the server's base URL, e.g. http://127.0.0.1:8080")
        try:
            parts = urlsplit(url.strip())
            parts.port  # noqa: B018 - raises on a bad port or an unclosed [ipv6
        except ValueError as err:
            raise ConfigError(f"url is not a valid URL ({err}), e.g. http://127.0.0.1:8080"
                              ) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"url must start with http:// or https:// and name a host "
                              f"(e.g. http://127.0.0.1:8080), got {redact(url)!r}")
        if parts.query or parts.fragment:
            raise ConfigError("url must be the server's base URL without ?query or #fragment "
                              f"(e.g. http://127.0.0.1:8080/prefix), got {redact(url)!r}")
        if not isinstance(model, str) or not model:
            raise ConfigError("model must be the model's name on the server, e.g. 'mlp'")
        if not (isinstance(timeout_s, (int, float)) and 0 < timeout_s <= MAX_CONTROL_TIMEOUT_S):
            raise ConfigError(f"timeout_s must be in (0, {MAX_CONTROL_TIMEOUT_S:g}] seconds "
                              f"(it bounds each metadata call), got {timeout_s!r}")
        if not (isinstance(max_connections, int) and 1 <= max_connections <= 1024):
            raise ConfigError("max_connections must be an integer in 1..1024, got "
                              f"{max_connections!r}")
        headers = dict(headers or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise ConfigError("headers must map header names to string values")
        bad = [k for k, v in headers.items() if any(c in k + v for c in "\r\n\0")
               or not k.strip()]
        if bad:
            raise ConfigError(f"header(s) {bad} contain a line break or are empty; give "
                              "each header on its own, e.g. {'Authorization': 'Bearer ...'}")
        if parts.username is not None or parts.password is not None:
            # user:password@host: sent as Basic auth, never kept in the URL (which is shown
            # on pages, in errors and in metrics)
            import base64
            from urllib.parse import unquote
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            headers.setdefault("Authorization",
                               "Basic " + base64.b64encode(pair.encode()).decode())
            host = parts.hostname if ":" not in (parts.hostname or "") else f"[{parts.hostname}]"
            netloc = host + (f":{parts.port}" if parts.port else "")
            url = parts._replace(netloc=netloc).geturl()
        self.url = url.strip().rstrip("/")
        self.policy = policy
        if policy is not None:  # before any request: refused addresses are never contacted
            policy.check(self.url)
        self.model = model
        self.version = None if version in (None, "") else str(version)
        self.headers = headers
        self.timeout_s = float(timeout_s)
        self.max_connections = max_connections
        self.binary = True if binary is None else bool(binary)
        # Triton and Batchlab servers read a request's "timeout" (microseconds): the time
        # left is passed on, so a chain of servers cannot outlive its caller.
        self.send_timeout = False
        self.model_path = f"/v2/models/{quote(model, safe='')}" + (
            f"/versions/{quote(self.version, safe='')}" if self.version else "")
        self._loop = client_loop()
        self._session: Any = None
        self._closed = False
        self._infer_url = self.url + self.model_path + "/infer"

    def __repr__(self) -> str:
        return f"OIPTarget({self.url!r}, model={self.model!r})"

    @property
    def where(self) -> str:
        return self.url

    # -- plumbing (on the loop) ------------------------------------------------------------
    def _get_session(self) -> Any:
        import aiohttp
        if self._closed:
            raise RemoteConnectionError(f"the client of {self.url} is closed (its model was "
                                        "unloaded or the engine closed)")
        if self._session is None:
            conn = aiohttp.TCPConnector(
                limit=self.max_connections, keepalive_timeout=30, enable_cleanup_closed=True,
                **({"resolver": self.policy.resolver()} if self.policy is not None else {}))
            # The hop header: a Batchlab server receiving it does not pass the request on
            # to a remote model of its own (a cycle of servers ends at the second hop).
            # Compressed answers are inflated here (read_capped: off the loop, bounded),
            # not by aiohttp on the loop.
            self._session = aiohttp.ClientSession(
                connector=conn, headers={**self.headers, HOPS_HEADER: "1",
                                         "Accept-Encoding": "gzip, deflate"},
                skip_auto_headers=("User-Agent",), auto_decompress=False)
        return self._session

    async def _fetch(self, method: str, path: str, body: Any = None,
                     timeout_s: float | None = None) -> tuple[int, bytes]:
        import aiohttp
        data = None if body is None else json.dumps(body).encode()
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.timeout_s)
        async with self._get_session().request(
                method, self.url + path, data=data, timeout=timeout, allow_redirects=False,
                headers={"Content-Type": "application/json"} if data else None) as resp:
            if 300 <= resp.status < 400:
                raise RemoteServerError(_redirect_words(self.url + path, resp), 502)
            try:
                return resp.status, await read_capped(resp, MAX_CONTROL_ANSWER_BYTES)
            except TooLarge as err:
                raise RemoteServerError(f"{self.url}{path} sent an answer too large to be "
                                        f"Open Inference Protocol metadata ({err})", 502) from None
            except BadEncoding as err:
                raise RemoteServerError(f"{self.url}{path} sent an answer that cannot be "
                                        f"read: {err}", 502) from None

    def fetch(self, method: str, path: str, body: Any = None,
              timeout_s: float | None = None) -> tuple[int, bytes]:
        """One control request (from any thread); raises what aiohttp raises."""
        t = timeout_s or self.timeout_s
        return self._loop.call(self._fetch(method, path, body, t), t + 5.0)

    def fetch_json(self, method: str, path: str, body: Any = None,
                   timeout_s: float | None = None) -> tuple[int, Any]:
        status, raw = self.fetch(method, path, body, timeout_s)
        try:
            return status, json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            return status, raw

    async def infer_async(self, arrays: dict[str, np.ndarray], timeout_s: float,
                          priority: int | None = None) -> dict[str, Any]:
        """The outputs of one infer call (on the loop); typed errors. ``priority`` goes as
        the request's ``priority`` parameter (Triton's and Batchlab's servers read it)."""
        import aiohttp
        params: dict[str, Any] = {}
        if self.send_timeout:
            params["timeout"] = max(1, int(timeout_s * 1e6))
        if priority is not None:
            params["priority"] = priority
        try:
            body, head_len = encode_infer_request(arrays, self.binary, params or None)
        except (TypeError, ValueError, UnicodeDecodeError) as err:
            raise InputValidationError(f"the request to {self.url} cannot be encoded as "
                                       f"Open Inference Protocol tensors: {err}") from None
        headers = {"Content-Type": "application/octet-stream" if head_len is not None
                   else "application/json"}
        if head_len is not None:
            headers[HEADER_LENGTH] = str(head_len)
        try:
            async with self._get_session().post(
                    self._infer_url, data=body, headers=headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                status = resp.status
                if 300 <= status < 400:
                    raise RemoteServerError(_redirect_words(self._infer_url, resp), 502)
                answer_len = resp.headers.get(HEADER_LENGTH)
                raw = await read_capped(
                    resp, MAX_ANSWER_BYTES, _max_parsed_bytes() if status == 200 else None,
                    int(answer_len) if answer_len and answer_len.isascii() and answer_len.isdigit()
                    else None)
        except jsontext.JSONTooLarge as err:
            raise RemoteServerError(f"{self.url} sent an answer for model {self.model!r} "
                                    f"that cannot be read: the server's answer's JSON is too "
                                    f"large to read here: {err}; ask for binary outputs",
                                    502) from None
        except TooLarge as err:
            raise RemoteServerError(f"{self.url} sent an answer for model {self.model!r} "
                                    f"over the {MAX_ANSWER_BYTES:,}-byte limit ({err})",
                                    502) from None
        except BadEncoding as err:
            raise RemoteServerError(f"{self.url} sent an answer for model {self.model!r} "
                                    f"that cannot be read: {err}", 502) from None
        except (asyncio.TimeoutError, TimeoutError, RemoteServerError):
            raise
        except Exception as err:  # aiohttp's and the OS's connection errors
            raise RemoteConnectionError(
                describe_failure(err, self._infer_url, timeout_s)) from None
        if status != 200:
            raise RemoteServerError(
                f"{self.url} answered {status} for model {self.model!r}: "
                f"{server_words(raw)}", status)
        try:
            head = int(answer_len) if answer_len else None
            if len(raw) > PARSE_OFF_LOOP_BYTES:
                return await asyncio.get_running_loop().run_in_executor(
                    heavy_executor(), parse_infer_response, raw, head, _max_parsed_bytes())
            return parse_infer_response(raw, head)
        except (OIPError, ValueError, TypeError, OverflowError, RecursionError) as err:
            raise RemoteServerError(f"{self.url} sent an answer for model {self.model!r} "
                                    f"that cannot be read: {err}", 502) from None

    def infer(self, arrays: dict[str, np.ndarray], timeout_s: float | None = None,
              stop: Any = None) -> dict[str, Any]:
        """Blocking infer (warm-up, the first request of an undeclared model); ``stop()``
        true ends the wait (``InterruptedError``)."""
        t = timeout_s or self.timeout_s
        try:
            return self._loop.call(self.infer_async(arrays, t), t + 5.0, stop=stop)
        except (asyncio.TimeoutError, TimeoutError):
            raise RequestTimeoutError(f"model {self.model!r} on {self.url} did not answer "
                                      f"within {t:g} s") from None

    def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._loop.thread.is_alive():
            try:
                self._loop.call(session.close(), 5.0)
            except Exception:  # closing is best effort; the loop is shared
                log.debug("closing the session of %r failed", self, exc_info=True)
