"""uvicorn, the engine server's HTTP stack, with what it leaves open closed: a deadline and
a size bound on each request's head (slowloris), the listening socket bound before the
server starts (so ``port=0`` is known at once), and the open-files limit raised to the
connection limit.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import sys
import threading
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["MAX_CONNECTIONS", "HEAD_TIMEOUT_S", "HEAD_MAX_BYTES", "IDLE_TIMEOUT_S",
           "HeadDeadlineProtocol", "ListeningServer", "bind", "raise_fd_limit"]

log = logging.getLogger("batchlab.server")

#: Connections served at once; a request on one more is answered 503, with the reason.
#: Idle and slow connections cost a file descriptor each, not a thread, and are closed by
#: the timeouts below.
MAX_CONNECTIONS = 4096
#: A request's line and headers must arrive within this many seconds of its first byte
#: (or of the connection opening), and be at most HEAD_MAX_BYTES: a client that drips them
#: (slowloris) is cut off.
HEAD_TIMEOUT_S = 15.0
HEAD_MAX_BYTES = 64 * 2**10
#: A client that takes none of its answer for this many seconds (the connection's write
#: buffer full all that time) is cut off, and the answer's memory let go: 26 clients that
#: asked for 256 MiB answers and never read them held the server past its memory budget
#: for as long as they stayed (an adversary).
WRITE_STALL_S = 30.0
#: A keep-alive connection idle this long between requests is closed (longer than the
#: clients' own pools keep theirs: aiohttp 15 s, so they close first and never reuse a
#: connection the server is closing).
IDLE_TIMEOUT_S = 75


class HeadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools) with a deadline and a size bound on each
    request's head, which uvicorn leaves open: its keep-alive timer only runs between
    requests and stops at the first byte."""

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()
        # The server's connections waiting for a request's head (none begun, one half sent,
        # or idle between requests), oldest first: one dict per server, found once here.
        state = self.server_state
        if not hasattr(state, "batchlab_waiting"):
            state.batchlab_waiting = {}
        self._waiting: dict[Any, None] = state.batchlab_waiting
        self._waiting[self] = None
        self._shed()
        self._write_timer: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._arm_write_timer()

    def _arm_write_timer(self) -> None:
        self._write_left = self.transport.get_write_buffer_size()
        self._write_timer = self.loop.call_later(
            getattr(self.config, "write_stall_s", WRITE_STALL_S), self._write_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_stalled(self) -> None:
        """The client took nothing for the whole stall: the connection is cut (abort, not
        close: close waits to send what is buffered, which it would never take). One that
        took some (a slow link reading a 1 MiB slice) is given another stall's time."""
        self._write_timer = None
        if self.transport.is_closing() is False \
                and self.transport.get_write_buffer_size() < self._write_left:
            self._arm_write_timer()   # (a steady reader at 49 KB/s was cut; a reviewer)
            return
        log.warning("a client took none of its answer for %g s: its connection is closed",
                    getattr(self.config, "write_stall_s", WRITE_STALL_S))
        self._count_close("write_stall")
        self.transport.abort()

    def _count_close(self, reason: str) -> None:
        wire = getattr(self.config, "wire", None)   # (core/serving/wirestats.py)
        if wire is not None:
            wire.closed(reason)

    def _shed(self) -> None:
        """Past the connection limit, close the connection that has waited longest for a
        request's head: connections that send nothing (4,100 opened by one client) must not
        keep the server from everyone else until their head deadline."""
        limit = getattr(self.config, "max_connections", None)
        if limit is None or len(self.server_state.connections) <= limit:
            return
        for proto in self._waiting:
            if proto is not self:
                del self._waiting[proto]
                self._count_close("shed")
                proto.transport.close()
                return

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                getattr(self.config, "head_timeout_s", HEAD_TIMEOUT_S), self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._count_close("head_timeout")
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > HEAD_MAX_BYTES \
                and not self.transport.is_closing():
            self.send_400_response(f"The request line and headers are over "
                                   f"{HEAD_MAX_BYTES} bytes.")

    def send_400_response(self, msg: str) -> None:
        # uvicorn says only "Invalid HTTP request received."; called while the parser's
        # error is being handled, it can say which rule the request broke.
        err = sys.exc_info()[1]
        if err is not None and str(err):
            msg = f"Invalid HTTP request: {err}."
        self._count_close("bad_head")
        super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._disarm_head_timer()
        self._waiting.pop(self, None)
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # (asked before uvicorn starts a pipelined request, popping it: its head was read
        # already, and the connection is inside it, not waiting)
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._in_head = True  # what comes next is the next request's head
            self._head_bytes = 0
            self._waiting[self] = None   # (waiting again, since now)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        self._waiting.pop(self, None)
        super().connection_lost(exc)


class ListeningServer(uvicorn.Server):
    """uvicorn's server, telling a thread when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)
        self.listening.set()


def bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def raise_fd_limit(want: int = MAX_CONNECTIONS + 1024) -> int:
    """Raise this process's soft limit on open files towards ``want`` (within the hard
    limit): each connection is a file descriptor. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft
