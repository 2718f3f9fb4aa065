"""The engine server's routes (:mod:`core.serving.routes`) as one ASGI application: the
Open Inference Protocol data plane, the repository extension, the control API and
``/metrics``. Any ASGI server can host it — :class:`~core.serving.EngineServer` runs it on
uvicorn; Ray Serve's ingress, or another uvicorn/hypercorn, can mount the same app.

Inference requests are parsed and queued on the event loop and their answers awaited there
(no thread waits per request); other routes run on bounded pools of threads (the control
plane's, which may block for long: loads, ``wait_job``, on its own).

Example:
    >>> app = OipApp(Routes(engine))
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable

from core.errors import BatchlabError
from core.models import format_bytes
from core.protocol import HTTPError, cut_message, jsontext, status_of
from .bodies import BodyReader, ServerBusyError, _declared_json_part, _Disconnected
from .pacing import BULK_DRAIN_S, BULK_RATE, BulkPacer
from .request import AsgiRequest as _Request
from .routes import Pending, Routes, Text

__all__ = ["OipApp"]

log = logging.getLogger("batchlab.server")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: An inference body (or answer) up to this size is parsed (encoded) on the event loop,
#: cheaper than a thread hop; a larger one on a thread, so that one big request never
#: stalls every connection. JSON takes ~40 us a KiB here: at 32 KiB a body holds the loop
#: for ~1.2 ms (at 256 KiB it was 10-13 ms, and one client's flood of them took another
#: model's p50 from 6.5 to 29 ms).
INLINE_MAX = 32 * 2**10
#: An answer longer than this is written in slices of this size (views of its memory).
SEND_SLICE = 1 << 20
#: JSON bytes of large inference bodies waiting to be parsed, or parsing (the parser's
#: child takes one at a time, ~50 MiB/s here): one more past this, with others waiting,
#: is answered 503 at once. 120 clients' 8 MiB bodies queued without bound: metadata and
#: /metrics waited 11-21 s behind them, and a request with a 2 s timeout was answered
#: after 21 s (an adversary).
MAX_PARSE_QUEUE = 64 * 2**20


#: A body this large or larger counts as large for the heap trimmer.
LARGE_BODY = 2**20

class ParseQueueFullError(HTTPError):
    """A 503: large JSON bodies queued for the parser are at their bound."""


def _retrieved(fut: asyncio.Future) -> None:
    """Mark a future's outcome as seen (its request was settled another way)."""
    _ = fut.cancelled() or fut.exception()


def _json_part(req: _Request) -> int:
    """How much of a body is JSON to parse: its binary tensors after it are taken as they
    are (a view), so a 200 KiB binary request is as quick to parse as its short JSON."""
    declared = _declared_json_part(req)
    return len(req._body) if declared is None else min(declared, len(req._body))


#: A request unanswered after this long is watched for its client going away (not sooner).
WATCH_AFTER_S = 0.1


async def _client_gone(receive: Receive) -> None:
    """Return when the client disconnects (the body was read: nothing else comes)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class OipApp(BodyReader):
    """The ASGI application serving ``routes``.

    ``closing`` (set by the server when it stops) makes every answer close its connection,
    so keep-alive clients leave after the answer they are waiting for; none is cut off.
    """

    def __init__(self, routes: Routes, threads: int = 32) -> None:
        self.routes = routes
        self.closing = False
        #: Connections open now (the server hosting the app sets it) and the most it
        #: serves: a request on one more is answered 503, with the reason.
        self.open_connections: Callable[[], int] = lambda: 0
        self.max_connections: int | None = None
        self._started = time.monotonic()
        self._arrived = -float("inf")     # the latest request's arrival (none yet)
        # (32 wait_traffic calls held every route thread: metadata took 18.5 s; an adversary)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="oip-route")
        self._control = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="oip-control")
        # (and the calls that may wait long apart from the quick ones: 32 of them held
        # the control threads, and a page's status call waited behind them)
        self._waits = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="oip-wait")
        # (large bodies parsed, and large answers encoded, each apart: metadata, stats and
        # /metrics waited behind 32 parses queued for the parser's child, and an answer
        # already computed would wait behind them too)
        self._bulk = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="oip-bulk")
        self._encode = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="oip-encode")
        #: JSON bytes of inference bodies handed to the bulk threads and not yet parsed
        #: (the event loop's own count) and their bound.
        self.parsing_bytes = 0
        self.max_parsing_bytes = MAX_PARSE_QUEUE
        #: Bytes of request bodies being read or held by requests not yet answered (the
        #: event loop's own count: no lock), and their bound: a quarter of the memory
        #: budget, at least two bodies at the data plane's limit. Past it a request is
        #: answered 503 before its body is read (40 hung 32 MiB requests held 1.3 GB).
        self.bodies_in_flight = 0
        #: When the last body of a MiB or more was let go (monotonic; 0: none yet): the
        #: heap trimmer waits for a second without one (core/serving/heap.py).
        self.large_body_done = 0.0
        self.max_bodies_in_flight = max(2 * routes.max_body_bytes,
                                        2 * getattr(routes, "max_json_bytes", 0))
        #: Body bytes past each body's first MiB are read at a bounded rate, so that large
        #: bodies never take the event loop whole (:mod:`core.serving.pacing`).
        self.pacer = BulkPacer(max(BULK_RATE, self.max_bodies_in_flight / BULK_DRAIN_S))
        #: What was answered (core/serving/wirestats.py; a Routes-like without one: none)
        self.wire = getattr(routes, "wire", None)
        if self.wire is not None:
            self.wire.gauges.update({
                # (an ASGI host that does not say how many it holds: no figure, not 0)
                "batchlab_http_open_connections": lambda: self.open_connections()
                if self.max_connections is not None else None,
                "batchlab_http_body_bytes": lambda: self.bodies_in_flight,
                "batchlab_http_parsing_bytes": lambda: self.parsing_bytes})

    def close(self) -> None:
        for pool in (self._pool, self._control, self._waits, self._bulk, self._encode):
            pool.shutdown(wait=False, cancel_futures=True)
        parser = getattr(self.routes, "parser", None)
        if parser is not None:
            parser.close()

    def large_bodies_idle(self, quiet_s: float = 1.0) -> bool:
        """No body of a MiB or more held now, nor let go in the last ``quiet_s``."""
        return self.bodies_in_flight < LARGE_BODY \
            and time.monotonic() - self.large_body_done > quiet_s

    def quiet_for(self) -> float:
        """Seconds since the last request arrived (since the app was made, before one)."""
        return time.monotonic() - max(self._arrived, self._started)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "websocket":   # not served: refused at the handshake (403),
            await receive()                # not a 500 and a stack trace in the log
            await send({"type": "websocket.close", "code": 1003})
            return
        if scope["type"] != "http":
            return
        arrived = time.monotonic()
        # HEAD is GET without the body (uvicorn drops it, keeping its length): a load
        # balancer's HEAD probe of /v2/health/ready was a 405 (an adversary)
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        path = scope.get("raw_path", b"").decode("latin-1").split("?", 1)[0].rstrip("/") \
            or scope["path"].rstrip("/")
        req = _Request(scope)
        req._arrived, req._gap = arrived, arrived - self._arrived
        self._arrived = arrived
        close, error, wire = self.closing, None, self.wire
        if self.max_connections is not None \
                and self.open_connections() > self.max_connections:
            if wire is not None:
                wire.answered(method, path, 503, "ServerBusyError")
            await self._send(send, 503, {
                "error": f"the server has {self.max_connections} connections open, its "
                         "limit; retry on a connection freed, or start it with a higher "
                         "--max-connections", "type": "ServerBusyError"}, True)
            return
        try:
            # Who may ask, before a byte of the body is read: a request without the token
            # (or from a page on another site) never makes the server hold an upload.
            try:
                self.routes.check(method, path, req)
            except HTTPError:
                close = close or req._has_body  # its body is not read: nor is the rest
                raise
            try:
                held = [self._hold_body(req)]   # (0: a body counts as it arrives)
            except HTTPError:
                close = True  # its body is not read: nor is the rest of the connection
                raise
            try:
                try:
                    close |= await self._read_body(
                        req, receive, self.routes.body_limit(path),
                        getattr(self.routes, "max_json_bytes", None)
                        if self.routes.is_infer(method, path) else None, held)
                except _Disconnected:
                    return
                status, body = await self._answer(method, path, req, receive)
            finally:
                self.bodies_in_flight -= held[0]
                if held[0] >= LARGE_BODY:
                    self.large_body_done = time.monotonic()
        except _Disconnected:  # its request was cancelled: nobody to answer
            return
        except Exception as err:  # noqa: BLE001 - every error is an answer; serving goes on
            status, body = self._error(method, path, err)
            error = body["type"]
            close |= isinstance(err, HTTPError) and (err.status in (408, 413)
                                                     or isinstance(err, ServerBusyError))
            if status == 401:
                body = Text(jsontext.dumps(body), "application/json",
                            {"WWW-Authenticate": 'Bearer realm="batchlab"'})
        if wire is not None:
            wire.answered(method, path, status, error)
            if close and error is not None and not self.closing:
                wire.closed("after_error")   # (a 408, 413, 503 or a body left unread)
        await self._send(send, status, body, close or self.closing)

    async def _answer(self, method: str, path: str, req: _Request,
                      receive: Receive) -> tuple[int, Any]:
        loop = asyncio.get_running_loop()
        routes = self.routes
        infer = routes.is_infer(method, path)
        if (infer and (len(req._body) <= INLINE_MAX or _json_part(req) <= INLINE_MAX)) \
                or routes.is_quick(method, path):
            answer = routes.begin(method, path, req, True)
        elif infer:
            json_len = _json_part(req)
            if self.parsing_bytes and self.parsing_bytes + json_len > self.max_parsing_bytes:
                raise ParseQueueFullError(
                    503, f"the server is parsing {format_bytes(self.parsing_bytes)} of large "
                         f"JSON request bodies, and this one's {format_bytes(json_len)} would "
                         f"wait past its {format_bytes(self.max_parsing_bytes)} queue; retry "
                         "when they are answered, or send the tensors as binary data "
                         "(Triton's binary extension: read without parsing)")
            self.parsing_bytes += json_len
            req._read_at = time.monotonic()   # (its timeout counts from here: routes)
            try:
                answer = await loop.run_in_executor(self._bulk, routes.begin, method, path,
                                                    req, True)
            finally:
                self.parsing_bytes -= json_len
        else:
            pool = self._pool if not routes.is_control(path) else \
                self._waits if routes.may_wait(path) else self._control
            answer = await loop.run_in_executor(pool, routes.begin, method, path, req, True)
        if not isinstance(answer, Pending):
            return answer
        waiting = asyncio.wrap_future(answer.future)
        # Wait without cancelling: a cancelled wait would cancel the request itself, and
        # its caller would get "cancelled" instead of the timeout it ran into.
        first = WATCH_AFTER_S if answer.wait_s is None else min(WATCH_AFTER_S, answer.wait_s)
        done, _ = await asyncio.wait({waiting}, timeout=first)
        if not done and (answer.wait_s is None or answer.wait_s > first):
            # Still queued or running: from now on a client that goes away cancels it, so
            # a flood of abandoned requests doesn't hold the queue (and its bytes).
            gone = asyncio.ensure_future(_client_gone(receive))
            done, _ = await asyncio.wait(
                {waiting, gone}, return_when=asyncio.FIRST_COMPLETED,
                timeout=None if answer.wait_s is None else answer.wait_s - first)
            if gone in done:
                answer.future.cancel()
                waiting.add_done_callback(_retrieved)
                raise _Disconnected
            gone.cancel()
        if done:
            pred = waiting.result()
        else:
            waiting.add_done_callback(_retrieved)
            pred = answer.late()
        if answer.encodes_bytes(pred, INLINE_MAX) > INLINE_MAX:
            # A large answer is encoded off the event loop, which serves every connection
            # (numbers as binary data are views of the outputs: quicker than the hop).
            return 200, await loop.run_in_executor(self._encode, answer.answer, pred)
        return 200, answer.answer(pred)

    @staticmethod
    def _error(method: str, path: str, err: Exception) -> tuple[int, dict[str, Any]]:
        status = status_of(err)
        if status == 500 and not isinstance(err, BatchlabError):
            log.error("unexpected error answering %s %s", method, path, exc_info=err)
        message = str(err) if status != 500 or isinstance(err, BatchlabError) else \
            f"internal error: {type(err).__name__}: {err}"
        # (what a caller sent, quoted back: cut)
        return status, {"error": cut_message(message), "type": type(err).__name__}

    @staticmethod
    async def _send(send: Send, status: int, body: Any, close: bool) -> None:
        if isinstance(body, Text):
            data, content_type, extra = body.data, body.content_type, body.headers
        else:
            data, content_type, extra = jsontext.dumps(body), "application/json", {}
        parts = data if isinstance(data, list) else [data]
        size = sum(len(p) for p in parts)
        headers = [(b"content-type", content_type.encode()),
                   (b"content-length", str(size).encode())]
        headers += [(k.lower().encode(), str(v).encode()) for k, v in extra.items()]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if size <= SEND_SLICE:
            await send({"type": "http.response.body",
                        "body": parts[0] if len(parts) == 1 else b"".join(parts)})
            return
        # A large body goes out in slices (views, no copy), the loop serving other
        # requests between them: one 256 MB answer no longer holds every other one.
        slices = [v[i:i + SEND_SLICE] for v in map(memoryview, parts)
                  for i in range(0, len(v), SEND_SLICE)]
        for j, piece in enumerate(slices):
            await send({"type": "http.response.body", "body": piece,
                        "more_body": j < len(slices) - 1})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
