"""The engine behind the Open Inference Protocol (KServe v2) REST data plane.

``python -m core.server [--host 127.0.0.1] [--port 8000]`` (this module's :func:`main`) serves an :class:`~core.Engine`
(with the demo models) so that any OIP client — ``tritonclient.http``, KServe's SDK, curl,
perf tools — can use it:

========================================  ==================================================
``GET  /v2``                               server metadata
``GET  /v2/health/live``, ``/ready``       liveness, readiness
``GET  /v2/models/{name}[/versions/{v}]``  model metadata (inputs, outputs, datatypes, shapes)
``GET  /v2/models/{name}[...]/ready``      model readiness
``POST /v2/models/{name}[...]/infer``      inference: JSON tensors, or the binary tensor
                                           data extension (core/protocol/oip.py)
``POST /v2/repository/index``              models, loaded and unloaded (Triton's extension)
``POST /v2/repository/models/{n}/load``    load / reload, with Triton's ``config`` batching
``POST /v2/repository/models/{n}/unload``  unload (file and settings kept for a reload)
``GET  /metrics``                          Prometheus text, Triton's names (core/serving/prom.py)
``GET  /v1/info``                          what a client needs: budget, configuration
``POST /v1/engine/{method}``               the control API (core/serving/control.py): every engine
                                           method the dashboard uses, jobs included
``POST /v1/store/{method}``                the experiment history
========================================  ==================================================

A/B experiments are addressable as models (their metadata is arm A's). Errors are answered
as the protocol says, ``{"error": "..."}`` with a 4xx status for a bad request (400), an
unknown model (404), a body over the limit (413), and 5xx for an overloaded model (503) or
a failed run (500); control errors also name the exception's ``type``. Loopback by
default: the control API can load models and start traffic, so expose it only where
everyone who can reach it may do that.

Example:
    >>> with Engine() as engine, EngineServer(engine, port=0) as server:
    ...     server.url                                   # 'http://127.0.0.1:PORT'
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from core.config import EngineConfig
from core.remote import OutboundPolicy
from core.errors import BatchlabError
from core.lab import Engine
from core.protocol import HTTPError, status_of
from .routes import DEFAULT_MAX_BODY, Routes, Text
from .tuning import tune_for_serving

__all__ = ["EngineServer", "main"]

log = logging.getLogger("batchlab.server")

_DRAIN_MAX = 256 * 2**20  # an over-limit body up to this size is read and dropped


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    # A connection idle (or stuck sending its request) this long is closed; waiting for an
    # answer (a long predict, wait_job) is not reading, so it is not cut short.
    timeout = 120

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; without TCP_NODELAY, Nagle's algorithm
        # holds the body until the client's delayed ACK (40 ms per answer on loopback).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: errors go to our log
        log.debug("%s " + fmt, self.address_string(), *args)

    # -- plumbing ----------------------------------------------------------------------
    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def _send(self, status: int, body: dict[str, Any] | bytes,
              content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self, limit: int | None = None, required: bool = True) -> Any:
        raw = self.raw_body(limit, required)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise HTTPError(400, f"the request body is not valid JSON: {err}") from None
        except RecursionError:
            raise HTTPError(400, "the request body nests JSON too deeply") from None

    def raw_body(self, limit: int | None = None, required: bool = True) -> bytes | None:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise HTTPError(411, "chunked request bodies are not accepted; send a "
                                  "Content-Length header")
        length = self._content_length()
        if length is None and not required:
            return None
        if length is None:
            raise HTTPError(411, "a Content-Length header is required")
        limit = limit or self.server.routes.max_body_bytes
        if length > limit:
            # Read and drop the body in small chunks (never holding it), so the client gets
            # the answer rather than a reset; past _DRAIN_MAX just close the connection.
            self.close_connection = True
            left = length if length <= _DRAIN_MAX else 0
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
            raise HTTPError(413, f"the request body is {length} bytes, over the limit of "
                                  f"{limit} bytes")
        raw = self.rfile.read(length)
        self._consumed = True
        if not raw and not required:
            return None
        return raw

    def _content_length(self) -> int | None:
        """The body's length: one Content-Length of plain digits, or None when there is
        none. Two headers (even equal), a sign, spaces inside or underscores are refused and
        the connection closed: behind a proxy that reads another of them, the rest of the
        body would be taken for a second request (request smuggling)."""
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return None
        if len(values) > 1:
            self.close_connection = True
            raise HTTPError(400, f"{len(values)} Content-Length headers; send exactly one")
        raw = values[0].strip()
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
            self.close_connection = True
            raise HTTPError(400, f"Content-Length must be >= 0 and plain digits, got {raw!r}")
        return int(raw)

    def _dispatch(self, method: str) -> None:
        self._consumed = False
        with self.server.busy:
            self.server.in_flight += 1
        try:
            if self.server.closing:
                self.close_connection = True
                self._send(503, {"error": "the server is shutting down", "type":
                                 "EngineClosedError"}, headers={"Connection": "close"})
                return
            self._answer(method)
        finally:
            with self.server.busy:
                self.server.in_flight -= 1
                self.server.busy.notify_all()

    def _answer(self, method: str) -> None:
        try:
            path = self.path.split("?", 1)[0].rstrip("/")
            status, body = self.server.routes.route(method, path, self)
        except Exception as err:  # noqa: BLE001 - every error is an answer; serving goes on
            status = status_of(err)
            if status == 500 and not isinstance(err, BatchlabError):
                log.exception("unexpected error answering %s %s", method, self.path)
            message = str(err) if status != 500 or isinstance(err, BatchlabError) else \
                f"internal error: {type(err).__name__}: {err}"
            body = {"error": message, "type": type(err).__name__}
        # A body left unread (an early error, a GET with a body) would be parsed as the next
        # request on this connection: read it (the connection stays usable), or close.
        self._discard_unread_body()
        headers = {"Connection": "close"} if self.close_connection else None
        if isinstance(body, Text):
            self._send(status, body.data, body.content_type, {**body.headers, **(headers or {})})
        else:
            self._send(status, body, headers=headers)

    def _discard_unread_body(self) -> None:
        if self._consumed or self.close_connection:
            return
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # an unread chunked body: never parsed as a request
            return
        try:
            length = self._content_length() or 0
        except HTTPError:
            return  # refused already (the connection closes)
        if length == 0:
            return
        if length < 0 or length > self.server.routes.max_upload_bytes \
                or self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return
        left = length
        while left > 0:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                self.close_connection = True
                return
            left -= len(chunk)
        self._consumed = True

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog is 5: a burst of new connections (a client opening its
    # pool, 200 concurrent requests) would see some refused or reset.
    request_queue_size = 256

    def __init__(self, addr: tuple[str, int], engine: Engine, max_body_bytes: int) -> None:
        self.engine = engine
        self.routes = Routes(engine, max_body_bytes)
        self.in_flight = 0  # requests being answered (close waits for them)
        self.busy = threading.Condition()
        self.closing = False  # answer 503 and close keep-alive connections from now on
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a reset, a broken pipe, an idle timeout) is normal; only
        anything else is logged with its traceback (not printed to stderr)."""
        err = sys.exc_info()[1]
        if isinstance(err, (ConnectionError, TimeoutError)):
            log.debug("connection from %s ended: %s", client_address, err)
        else:
            log.exception("error serving %s", client_address)


class EngineServer:
    """Serves ``engine`` over the Open Inference Protocol from a background thread.

    ``port=0`` picks a free port (see :attr:`url`). ``close()`` stops the server; the
    engine is the caller's to close.

    Example:
        >>> server = EngineServer(engine, port=0).start()
        >>> server.url
        'http://127.0.0.1:40123'
        >>> server.close()
    """

    def __init__(self, engine: Engine, host: str = "127.0.0.1", port: int = 8000,
                 max_body_bytes: int = DEFAULT_MAX_BODY,
                 outbound: OutboundPolicy | None = OutboundPolicy()) -> None:
        self.engine = engine
        # Anyone who reaches the server can add remote models: where they may be is this
        # policy's (core/remote/policy.py); None leaves the engine's own (in-process: none).
        self.outbound = outbound
        self._server = _Server((host, port), engine, max_body_bytes)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="oip-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def allow_hosts(self, names: Any) -> None:
        """Host names this server answers to beyond loopback (besides IP addresses)."""
        guard = self._server.routes.guard
        guard.allowed_hosts = guard.allowed_hosts | {
            str(n).strip().lower().rstrip(".") for n in names}

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> EngineServer:
        # The engine refuses to add itself as a remote model (its requests would come back
        # to it for ever): it learns where it is served.
        host, port = self._server.server_address[:2]
        self.engine.served_at.add((str(host), int(port)))
        self._server.routes.guard.bind(str(host), int(port))
        if self.outbound is not None:
            current = self.engine.outbound_policy or self.outbound
            self.engine.outbound_policy = current.with_served(str(host), int(port))
        self._thread.start()
        return self

    def close(self, drain_s: float = 5.0) -> None:
        """Stop accepting connections, then wait up to ``drain_s`` for the answers being
        written (close the engine first to finish its accepted requests)."""
        srv = self._server
        srv.closing = True
        if self._thread.is_alive():
            srv.shutdown()
        with srv.busy:
            srv.busy.wait_for(lambda: srv.in_flight == 0, timeout=drain_s)
        srv.server_close()
        if self._thread.is_alive():
            self._thread.join(5)

    def __enter__(self) -> EngineServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _watch_parent(parent_pid: int, stop: threading.Event) -> None:
    """Set ``stop`` once the process that started this one is gone."""
    while not stop.wait(1.0):
        if os.getppid() != parent_pid:
            log.info("parent process %d is gone: stopping", parent_pid)
            stop.set()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Serve Batchlab's engine over the Open "
                                             "Inference Protocol (KServe v2 REST), with the "
                                             "control API the dashboard uses.")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY / 2**20,
                    help="largest inference request body")
    ap.add_argument("--max-model-mb", type=float, default=200.0,
                    help="largest model upload")
    ap.add_argument("--no-probe", action="store_true",
                    help="load uploads without the trial run in a child process")
    ap.add_argument("--no-demo-models", action="store_true")
    ap.add_argument("--allow-remote", action="append", metavar="NET_OR_HOST",
                    default=[r.strip() for r in os.environ.get(
                        "BATCHLAB_ALLOW_REMOTE", "").split(",") if r.strip()],
                    help="also allow remote models at this network (10.0.0.0/8) or host "
                         "(repeatable; default from BATCHLAB_ALLOW_REMOTE, comma-separated); "
                         "loopback and public addresses are allowed, private and link-local "
                         "ones refused unless named here")
    ap.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                    help="a host name this server answers to when bound beyond loopback "
                         "(repeatable; IP addresses always are)")
    ap.add_argument("--parent-pid", type=int, default=None,
                    help="stop when this process is gone (the dashboard that started us)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # Uploads come from anyone who can reach the server: each is first run once in a child
    # process under the memory budget and a time limit (core/models/probe.py).
    engine = Engine(EngineConfig(max_model_bytes=int(args.max_model_mb * 2**20),
                                 probe_models=not args.no_probe,
                                 demo_models=not args.no_demo_models))
    tune_for_serving()
    server = EngineServer(engine, args.host, args.port, int(args.max_body_mb * 2**20),
                          outbound=OutboundPolicy(allow=tuple(args.allow_remote)))
    server.allow_hosts(args.allow_host)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.parent_pid:
        threading.Thread(target=_watch_parent, args=(args.parent_pid, stop),
                         name="parent-watch", daemon=True).start()
    server.start()
    log.info("serving the Open Inference Protocol and the control API on %s (models: %s)",
             server.url, ", ".join(engine.model_names()))
    log.info("remote models may be at %s (--allow-remote adds networks or hosts)",
             engine.outbound_policy.allowed_words())
    stop.wait()
    log.info("stopping: draining accepted requests")
    engine.close()  # finishes (or fails) every accepted request; answers go out first
    server.close()


if __name__ == "__main__":
    main()
