"""The engine behind the Open Inference Protocol (KServe v2) REST data plane.

``python -m core.server [--host 127.0.0.1] [--port 8000]`` (this module's :func:`main`) serves an :class:`~core.Engine`
(with the demo models) so that any OIP client — ``tritonclient.http``, KServe's SDK, curl,
perf tools — can use it:

========================================  ==================================================
``GET  /v2``                               server metadata
``GET  /v2/health/live``, ``/ready``       liveness, readiness
``GET  /v2/models/{name}[/versions/{v}]``  model metadata (inputs, outputs, datatypes, shapes)
``GET  /v2/models/{name}[...]/ready``      model readiness
``GET  /v2/models[/{name}[...]]/stats``    Triton's statistics extension: successes, queue and
                                           compute time, executions per batch size
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

The HTTP stack is uvicorn (httptools, uvloop) running the ASGI app of
:mod:`core.serving.asgi`: connections cost a file descriptor, not a thread; a head must come
within ``--head-timeout-s``, a body within its deadline, an answer be taken (30 s stall); past
``--max-connections`` a request is answered 503. SIGTERM stops the listener, answers every
request already received (each answer then closes its connection), and exits.

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
import logging
import os
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from core.config import EngineConfig
from core.errors import ConfigError
from core.remote import OutboundPolicy
from core.lab import Engine
from .asgi import OipApp
from .guard import TOKEN_ENV, access_words, is_loopback
from .http import (HEAD_TIMEOUT_S, IDLE_TIMEOUT_S, MAX_CONNECTIONS, HeadDeadlineProtocol,
                   ListeningServer, bind, raise_fd_limit)
from .routes import DEFAULT_MAX_BODY, Routes
from .state import STATE_ENV, STATE_INTERVAL_S, StateDir
from .timeouts import MAX_TIMEOUT_S
from .heap import HeapTrimmer
from .tuning import limit_malloc_arenas, tune_for_serving

#: Minutes of per-second metrics a server keeps (``--history-minutes``).
HISTORY_ENV = "BATCHLAB_HISTORY_MINUTES"

__all__ = ["EngineServer", "main", "MAX_CONNECTIONS", "TOKEN_ENV"]

log = logging.getLogger("batchlab.server")

class EngineServer:
    """Serves ``engine`` over the Open Inference Protocol from a background thread, on
    uvicorn (the ASGI app is :class:`~core.serving.asgi.OipApp`).

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
                 outbound: OutboundPolicy | None = OutboundPolicy(),
                 max_connections: int = MAX_CONNECTIONS,
                 head_timeout_s: float = HEAD_TIMEOUT_S,
                 token: str | None = None, state_dir: str | Path | None = None,
                 max_timeout_s: float | None = MAX_TIMEOUT_S) -> None:
        self.engine = engine
        # Anyone who reaches the server can add remote models: where they may be is this
        # policy's (core/remote/policy.py); None leaves the engine's own (in-process: none).
        self.outbound = outbound
        self.routes = Routes(engine, max_body_bytes)
        # A request is held at most this long, whatever comes over the wire (None: no cap).
        self.routes.max_timeout_ms = None if max_timeout_s is None else max_timeout_s * 1000
        #: The secret clients send (``Authorization: Bearer TOKEN``) for the control API
        #: and the repository extension, and beyond loopback for everything but health
        #: checks; None asks for none (``python -m core.server`` always has one unless
        #: told ``--no-token``, which only a loopback server accepts).
        self.token = token or None
        if self.token is None and not is_loopback(host):
            raise ConfigError(f"a server listening on {host!r} (beyond loopback) needs a "
                              "token: anyone who reaches it could load models and start "
                              "traffic; pass token=... (--token, or BATCHLAB_TOKEN)")
        self.routes.guard.token = self.token
        self.app = OipApp(self.routes)
        self._sock = bind(host, port)
        self._address = self._sock.getsockname()[:2]
        config = uvicorn.Config(
            self.app, http=HeadDeadlineProtocol, lifespan="on", log_config=None,
            access_log=False, log_level="warning", backlog=2048,
            timeout_keep_alive=IDLE_TIMEOUT_S, timeout_graceful_shutdown=5,
            server_header=False)
        # read by HeadDeadlineProtocol (it sheds connections; /metrics counts its closes)
        config.head_timeout_s, config.max_connections = head_timeout_s, max_connections
        config.wire = self.routes.wire
        self._uvicorn = ListeningServer(config)
        self.app.max_connections = max_connections
        self.app.open_connections = lambda: len(self._uvicorn.server_state.connections)
        self._thread = threading.Thread(target=self._run, name="oip-server", daemon=True)
        # The engine refuses to add itself as a remote model (its requests would come back
        # to it for ever): it learns where it is served, before anything is restored.
        host, port = self._address
        self.engine.served_at.add((str(host), int(port)))
        # (clients the engine sends to itself, load agents, need the data plane only)
        self.engine.served_token = self.routes.guard.data_token
        self.routes.guard.bind(str(host), int(port))
        if self.outbound is not None:
            current = self.engine.outbound_policy or self.outbound
            self.engine.outbound_policy = current.with_served(str(host), int(port))
        #: The state kept across restarts (core/serving/state.py); None: nothing is kept.
        self.state = StateDir(state_dir) if state_dir is not None else None
        self._changed = threading.Event()
        self._saver_stop = threading.Event()
        self._saver: threading.Thread | None = None
        if self.state is not None:
            # A change a client made is on disk before it is answered: what a client was
            # told happened survives a kill right after.
            self.routes.on_change = self.save_state

    def _run(self) -> None:
        try:
            self._uvicorn.run(sockets=[self._sock])
        except BaseException:  # noqa: BLE001 - say why the server stopped, then stop
            log.exception("the engine server stopped")
        finally:
            self._uvicorn.listening.set()  # never leave start() waiting

    @property
    def url(self) -> str:
        host, port = self._address
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    def allow_hosts(self, names: Any) -> None:
        """Host names this server answers to beyond loopback (besides IP addresses)."""
        guard = self.routes.guard
        guard.allowed_hosts = guard.allowed_hosts | {
            str(n).strip().lower().rstrip(".") for n in names}

    @property
    def port(self) -> int:
        return int(self._address[1])

    def restore(self) -> dict[str, Any] | None:
        """Load the state kept in ``state_dir`` (before :meth:`start`); what came back is
        also in ``GET /v1/info`` (``restored``). None without a state folder."""
        if self.state is None:
            return None
        summary = self.state.restore(self.engine)
        self.routes.restored = summary
        for failed in summary["failed"]:
            log.warning("not restored: %s %s: %s", failed["kind"], failed["name"],
                        failed["reason"])
        log.info("restored from %s: models %s; remote models %s; experiments %s",
                 self.state.root, ", ".join(summary["models"]) or "none",
                 ", ".join(summary["remotes"]) or "none",
                 ", ".join(summary["experiments"]) or "none")
        return summary

    def save_state(self, final: bool = False, after_close: bool = False) -> bool:
        """Write the state now (it is also written after every change a client makes and
        every couple of seconds); True when something changed. ``final``: a graceful stop
        (the A/B segments under way kept too); ``after_close``: the last save, once the
        engine closed and the last answer went out (requests settled and changes answered
        after the final save were lost; an adversary), the jobs and traffic the stop cut
        short left as the save before the close found them."""
        if self.state is None or (self.engine.closed and not after_close):
            return False
        try:
            if not after_close:
                self.state.save_running(self.engine)
            return self.state.save(self.engine, final=final or after_close)
        except Exception:  # noqa: BLE001 - keep serving; say why the state is not kept
            log.exception("could not save the engine's state to %s", self.state.root)
            return False

    def _keep_state(self) -> None:
        while not self._saver_stop.is_set():
            self._changed.wait(STATE_INTERVAL_S)
            self._changed.clear()
            if self._saver_stop.is_set():
                return
            self.save_state()

    def start(self) -> EngineServer:
        if self.state is not None and self._saver is None:
            self._saver = threading.Thread(target=self._keep_state, name="state-saver",
                                           daemon=True)
            self._saver.start()
        self._thread.start()
        self._uvicorn.listening.wait()
        if not self._uvicorn.started or not self._thread.is_alive():
            raise RuntimeError(f"the engine server on {self.url} did not start; see the log")
        return self

    def stop_accepting(self) -> None:
        """Stop taking new connections; from now on every answer closes its connection, so
        keep-alive clients leave after the answer they wait for (none is cut off)."""
        uv, loop = self._uvicorn, self._uvicorn.loop
        if loop is not None and self._thread.is_alive():
            # The listener closes before any answer says "close": a client told to close
            # would reconnect, and a connection still waiting in the listener's backlog
            # when it closes is reset, with its request.
            closed = threading.Event()

            def close_listeners() -> None:
                for srv in getattr(uv, "servers", ()):
                    srv.close()
                closed.set()
            loop.call_soon_threadsafe(close_listeners)
            closed.wait(5.0)
        self.app.closing = True

    def close(self, drain_s: float = 5.0, quiet_s: float = 0.3) -> None:
        """Stop accepting connections, answer the requests already received (close the
        engine first to finish the ones it has queued), then stop once no request has come
        for ``quiet_s`` (a keep-alive client still sending gets its answers, each telling
        it to close) or nothing is left open. Connections still open after ``drain_s`` are
        closed."""
        self.stop_accepting()
        uv = self._uvicorn
        deadline = time.monotonic() + drain_s
        state = uv.server_state
        # Keep serving while clients still send on their open connections (each answer
        # now tells them to close): a connection closed under a request just sent would
        # lose it. Quiet for a moment, or nothing left open: stop.
        while self._thread.is_alive() and time.monotonic() < deadline:
            if not state.connections or (not state.tasks and self.app.quiet_for() > quiet_s):
                break
            time.sleep(0.02)
        uv.config.timeout_graceful_shutdown = max(1, int(deadline - time.monotonic()) + 1)
        uv.should_exit = True
        if self._thread.is_alive():
            self._thread.join(drain_s + 5)
        self.app.close()
        self._sock.close()
        if self._saver is not None:
            self.save_state()  # (nothing when the engine closed first: main saved then)
            self._saver_stop.set()
            self._changed.set()
            self._saver.join(10)

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
    ap.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS,
                    help="connections served at once; a request on one more is answered "
                         "503 (default %(default)s)")
    ap.add_argument("--head-timeout-s", type=float, default=HEAD_TIMEOUT_S,
                    help="a request's line and headers must arrive within this many "
                         "seconds, else the connection is closed (default %(default)s)")
    ap.add_argument("--token", default=None,
                    help="the secret clients send (Authorization: Bearer TOKEN) for the "
                         "control API and the repository extension (and, beyond loopback, "
                         "for everything but health checks); default: BATCHLAB_TOKEN, else "
                         "a new random one, printed in the log")
    ap.add_argument("--no-token", action="store_true",
                    help="ask no token (loopback only: any local program may then drive "
                         "the engine)")
    ap.add_argument("--state-dir", default=os.environ.get(STATE_ENV) or None, metavar="DIR",
                    help="keep the models, their settings, remote models and A/B "
                         "experiments in this folder (Triton's repository layout) and load "
                         "them again at start (default: BATCHLAB_STATE_DIR; none: nothing "
                         "is kept)")
    ap.add_argument("--history-minutes", type=float,
                    default=os.environ.get(HISTORY_ENV, "").strip() or 15.0,
                    help="per-second metrics kept for the Monitor's charts and windows, "
                         "per model (default 15, or BATCHLAB_HISTORY_MINUTES; up to ~8 KB "
                         "per second of busy traffic)")
    ap.add_argument("--memory-budget-mib", type=int, default=None,
                    help="the process's memory budget (ONNX Runtime's arena, generated "
                         "inputs, JSON, queued inputs, loaded models; default a quarter of "
                         "the machine's memory)")
    ap.add_argument("--max-timeout-s", type=float, default=MAX_TIMEOUT_S,
                    help="the longest a request may be held (its timeout, a model's "
                         "timeout_ms, a Triton queue policy), as given over the wire; "
                         "nothing over the wire can switch timeouts off (default 600)")
    ap.add_argument("--close-timeout-s", type=float, default=10.0,
                    help="on SIGTERM, how long the requests already received may take to "
                         "finish; those still queued or running then are answered 503 (10)")
    ap.add_argument("--parent-pid", type=int, default=None,
                    help="stop when this process is gone (the dashboard that started us)")
    args = ap.parse_args(argv)
    token_from = "--token" if args.token else "BATCHLAB_TOKEN" \
        if os.environ.get(TOKEN_ENV, "").strip() else None
    token = None if args.no_token else (
        args.token or os.environ.get(TOKEN_ENV, "").strip() or secrets.token_urlsafe(24))
    if args.no_token and not is_loopback(args.host):
        ap.error(f"--no-token is for a server on loopback; on {args.host} anyone who reaches "
                 "it could load models and start traffic (leave the token on)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # Uploads come from anyone who can reach the server: each is first run once in a child
    # process under the memory budget and a time limit (core/models/probe.py).
    try:
        minutes = float(args.history_minutes)
    except ValueError:
        minutes = float("nan")
    if not 0.5 <= minutes <= 1440:
        ap.error(f"--history-minutes (or {HISTORY_ENV}) must be a number of minutes from 0.5 "
                 f"to 1440 (a day), got {args.history_minutes!r}")
    if args.memory_budget_mib is not None and args.memory_budget_mib < 64:
        ap.error(f"--memory-budget-mib must be at least 64, got {args.memory_budget_mib}")
    for flag, low, high in (("max_timeout_s", 0.001, 86_400), ("close_timeout_s", 0, 3600)):
        if not low <= getattr(args, flag) <= high:
            ap.error(f"--{flag.replace('_', '-')} must be from {low:g} to {high:g} seconds, "
                     f"got {getattr(args, flag):g}")
    limit_malloc_arenas()   # (before the engine's threads: each would take an arena)
    engine = Engine(EngineConfig(max_model_bytes=int(args.max_model_mb * 2**20),
                                 probe_models=not args.no_probe,
                                 demo_models=not args.no_demo_models,
                                 timeseries_seconds=round(minutes * 60),
                                 close_timeout_s=args.close_timeout_s,
                                 memory_budget_bytes=None if args.memory_budget_mib is None
                                 else args.memory_budget_mib * 2**20))
    tune_for_serving()
    raise_fd_limit(args.max_connections + 1024)
    server = EngineServer(engine, args.host, args.port, int(args.max_body_mb * 2**20),
                          outbound=OutboundPolicy(allow=tuple(args.allow_remote)),
                          max_connections=args.max_connections,
                          head_timeout_s=args.head_timeout_s, token=token,
                          state_dir=args.state_dir, max_timeout_s=args.max_timeout_s)
    server.allow_hosts(args.allow_host)
    server.restore()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.parent_pid:
        threading.Thread(target=_watch_parent, args=(args.parent_pid, stop),
                         name="parent-watch", daemon=True).start()
    server.start()
    # (what floods of large bodies freed, given back once none is held: see core/serving/heap.py)
    trimmer = HeapTrimmer(idle=server.app.large_bodies_idle).start()
    log.info("serving the Open Inference Protocol and the control API on %s (models: %s)",
             server.url, ", ".join(engine.model_names()))
    log.info("remote models may be at %s (--allow-remote adds networks or hosts)",
             engine.outbound_policy.allowed_words())
    for line in access_words(token, token_from, server.routes.guard.data_token):
        log.info("%s", line)
    stop.wait()
    log.info("stopping: answering the requests already received")
    trimmer.stop()
    server.save_state(final=True)
    server.stop_accepting()
    engine.close()  # finishes every request it has queued; their answers go out
    # A client between two requests on a keep-alive connection is given 2 s to send its
    # next one (answered, with "close") before idle connections are closed: closing one
    # just as its client sends would lose that request (the keep-alive race).
    server.close(drain_s=30.0, quiet_s=2.0)
    server.save_state(final=True, after_close=True)


if __name__ == "__main__":
    main()
