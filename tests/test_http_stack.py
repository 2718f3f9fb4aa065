"""The engine server's HTTP stack under abuse and at shutdown: slow and idle connection
floods, the connection limit, and SIGTERM under load (``python -m core.server`` in a child
process, driven by raw sockets and the standard library's HTTP client)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
from pathlib import Path

import pytest

from core.serving import ServerProcess
from core.serving.http import raise_fd_limit
from tests.helpers import WAIT_S

TINY = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                               "data": [1.0, 2.0, 3.0, 4.0]}]}).encode()
HEADERS = {"Content-Type": "application/json"}
HEAD_TIMEOUT_S = 10.0  # the server's deadline for a request head, in these tests


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no thread count")


def _infer(port: int, timeout: float = 5.0) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", "/v2/models/tiny/infer", TINY, HEADERS)
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


@pytest.fixture
def server(tmp_path):
    raise_fd_limit(8192)  # this process holds thousands of client sockets below
    srv = ServerProcess(args=["--no-probe", "--head-timeout-s", str(HEAD_TIMEOUT_S), "--max-connections",
                              "4000"], log_path=tmp_path / "server.log").start()
    yield srv
    srv.stop()


def _still_open(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) != b""  # (no request was finished: nothing to read)
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        s.setblocking(True)


def test_slow_and_idle_connection_floods_leave_other_clients_served(server):
    port = server.port
    assert _infer(port) == 200
    idle, slow = [], []
    try:
        for _ in range(2000):  # connections that never send a byte
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=WAIT_S))
        for _ in range(1000):  # slowloris: a request head that never ends
            s = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
            s.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
            slow.append(s)
        # Everyone else is served, within a short client timeout, while they are open; and
        # the server holds them without a thread each.
        assert [_infer(port, timeout=5.0) for _ in range(50)] == [200] * 50
        assert _still_open(slow[-1])
        assert _threads(server.pid) < 100
        # The head deadline closes the slow and the idle ones: the server hangs up (recv
        # returns b"", or a reset), nobody waits for the client to give up.
        for s in slow + idle:
            s.settimeout(HEAD_TIMEOUT_S + WAIT_S)
            try:
                assert s.recv(1024) == b""
            except ConnectionResetError:
                pass
        assert _infer(port) == 200
    finally:
        for s in idle + slow:
            s.close()


def test_an_endless_request_head_is_refused(server):
    # A head 10 bytes over the 64 KiB bound, sent at once and never ended: the server has
    # read all of it when it refuses it (so it closes cleanly, and the answer arrives).
    start = b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S) as s:
        s.sendall(start + b"a" * (64 * 1024 + 10 - len(start)))
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400") and b"over 65536 bytes" in answer, answer[:200]
    assert _infer(server.port) == 200


@pytest.mark.parametrize("length, status, words", [
    (65 * 2**20, b"413", b"over the limit"),   # (over the 64 MiB limit: only to be dropped)
    (64 * 2**20, b"408", b"a body must begin within 5 s, keep coming at 256 KiB/s")])
def test_a_body_that_does_not_come_is_not_waited_for_long(server, length, status, words):
    """4,100 heads declaring 256 MiB and sending nothing held every connection for 286 s,
    renewable (an adversary); one declaring the limit itself held 94 s (a reviewer). A body
    gets 5 s to begin and then time as it keeps coming; then its 413 (over the limit) or
    408, and the connection closes."""
    head = (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length)
    with socket.create_connection(("127.0.0.1", server.port), timeout=60.0) as s:
        s.sendall(head)   # (before: 30 s and one per MiB, 94 s: past this socket's 60 s)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 " + status) and words in answer, answer[:300]
    assert _infer(server.port) == 200


def test_past_the_connection_limit_waiting_connections_give_way_then_503(tmp_path):
    """Past the limit, the connection that has waited longest for a request's head is
    closed for the new one: 20 connections that send nothing kept everyone else out (503)
    until their head deadline. Connections inside requests are not closed: past the limit
    with only those, a request gets 503 with the reason."""
    srv = ServerProcess(args=["--no-probe", "--max-connections", "20",
                              "--head-timeout-s", "600"],
                        log_path=tmp_path / "server.log").start()
    held: list[socket.socket] = []

    def health() -> tuple[int, bytes]:
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=WAIT_S)
        try:
            c.request("GET", "/v2/health/live")
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    try:
        held = [socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT_S)
                for _ in range(20)]
        held[0].sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")   # half a head
        assert [health()[0] for _ in range(3)] == [200] * 3
        # the oldest gave way (one: the others found room once it was gone)
        assert not _still_open(held[0]) and _still_open(held[1]) and _still_open(held[-1])
        for s in held:
            s.close()
        # 20 requests whose bodies are still coming: none gives way
        held = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=WAIT_S)
            s.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 100\r\n"
                      b"Expect: 100-continue\r\n\r\n")
            assert s.recv(64).startswith(b"HTTP/1.1 100")   # inside its request now
            held.append(s)
        status, body = health()
        assert status == 503 and b"--max-connections" in body
        for s in held:
            s.close()
        held = []
        for _ in range(int(WAIT_S * 10)):  # the server notices the closed ones
            status, _ = health()
            if status == 200:
                break
            threading.Event().wait(0.1)
        assert status == 200
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=WAIT_S)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        # the one shed, and the 503s past the limit, are in the server's own figures
        from prometheus_client.parser import text_string_to_metric_families
        got = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
        assert got[("batchlab_http_closed_total", (("reason", "shed"),))] == 1
        assert got[("batchlab_http_errors_total", (("code", "503"), ("route", "health"),
                                                   ("type", "ServerBusyError")))] >= 1
    finally:
        for s in held:
            s.close()
        srv.stop()


def test_sigterm_under_load_answers_every_request_it_received(tmp_path):
    """24 clients send one request after another on keep-alive connections; SIGTERM
    arrives mid-stream. Every request whose bytes left a client gets an HTTP answer (a
    result, or a 503 once the engine has closed): none is cut off by a reset. Connections
    refused after the listener closed carried no request."""
    srv = ServerProcess(args=["--no-probe"], log_path=tmp_path / "server.log").start()
    port, pid = srv.port, srv.pid
    answered, lost, refused = [0] * 24, [0] * 24, [0] * 24
    statuses: set[int] = set()
    enough = threading.Event()
    done = threading.Event()
    lock = threading.Lock()

    def client(k: int) -> None:
        conn = None
        while not done.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
                try:
                    conn.connect()
                except ConnectionRefusedError:
                    refused[k] += 1
                    conn = None
                    if enough.is_set():
                        return  # the server has stopped listening: this client is done
                    continue
            try:
                conn.request("POST", "/v2/models/tiny/infer", TINY, HEADERS)
            except OSError:  # the server closed this idle connection before we sent
                conn.close()
                conn = None
                continue
            try:
                r = conn.getresponse()
                r.read()
            except (OSError, http.client.HTTPException):
                lost[k] += 1  # sent, and no answer came
                conn.close()
                conn = None
                continue
            with lock:
                answered[k] += 1
                statuses.add(r.status)
                if sum(answered) >= 1500:
                    enough.set()
            if r.will_close:
                conn.close()
                conn = None

    threads = [threading.Thread(target=client, args=(k,)) for k in range(24)]
    for t in threads:
        t.start()
    try:
        assert enough.wait(60), "the clients never got going"
        os.kill(pid, signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
    finally:
        done.set()
        code = srv.stop()
    assert sum(lost) == 0, f"{sum(lost)} requests sent and never answered ({lost})"
    assert statuses <= {200, 503}, statuses
    assert sum(refused) >= 24  # each client saw the listener gone
    assert code == 0


def test_an_answer_that_comes_late_is_a_timeout_not_a_cancellation():
    """The app waits for an inference without cancelling it: when the wait runs out, the
    request is settled as timed out (504), never cancelled (which a client would see as a
    500)."""
    import asyncio
    from concurrent.futures import Future

    from core import RequestTimeoutError
    from core.serving.asgi import OipApp
    from core.serving.routes import Pending

    fut: Future = Future()
    settled = []

    def late():
        settled.append(fut.cancelled())
        raise RequestTimeoutError("did not complete within 50 ms")

    class Routes:
        max_body_bytes = 1024

        def check(self, *a):
            pass

        def body_limit(self, path):
            return 1024

        def is_infer(self, method, path):
            return True

        def is_quick(self, method, path):
            return False

        def begin(self, *a):
            return Pending(fut, 0.05, lambda pred: {"ok": True}, late)

    app = OipApp(Routes())
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v2/models/m/infer",
             "raw_path": b"/v2/models/m/infer",
             "headers": [(b"content-length", b"2"), (b"content-type", b"application/json")]}
    # On a thread of its own: in this process another loop may be running (Playwright's).
    t = threading.Thread(target=lambda: asyncio.run(app(scope, receive, send)))
    t.start()
    t.join(WAIT_S)
    app.close()
    assert settled == [False]  # the request was still live when it was settled late
    assert sent[0]["status"] == 504
    assert b"did not complete" in sent[1]["body"]



def test_close_timeout_flag_bounds_what_sigterm_waits_for(tmp_path):
    """``--close-timeout-s`` reaches the engine; requests still running or queued on SIGTERM
    after it are answered 503 in words and the server exits cleanly. Out of range: refused
    at start."""
    import time

    from core import BatchConfig
    from core.models import build_loop_model
    from core.serving import RemoteEngine
    from core.serving.server import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--close-timeout-s", "-1"])
    assert exit_info.value.code == 2
    srv = ServerProcess(args=["--no-probe", "--no-demo-models", "--close-timeout-s", "0.5"],
                        log_path=tmp_path / "server.log").start()
    remote = RemoteEngine(srv.url, token=srv.token)
    answers: list = []
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32",
                                   "data": [1e12]}],              # runs ~forever
                       "parameters": {"timeout": 300e6}}).encode()

    def held() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=WAIT_S)
        conn.request("POST", "/v2/models/xloop/infer", body,
                     {"Authorization": f"Bearer {srv.token}"})
        r = conn.getresponse()
        answers.append((r.status, r.read().decode()))

    threads = [threading.Thread(target=held) for _ in range(2)]
    try:
        assert remote.config.close_timeout_s == 0.5
        # A batch of three, released after a minute: two requests wait in the queue until
        # SIGTERM (their count there says both arrived), then run forever.
        remote.load_model(build_loop_model(None, rows_apart=True), name="xloop",
                          batch=BatchConfig(max_batch_size=3, max_wait_ms=60_000.0,
                                            timeout_ms=300_000))
        for t in threads:
            t.start()
        deadline = time.monotonic() + WAIT_S
        while remote.queue_depth("xloop") < 2:
            assert time.monotonic() < deadline, "the two requests never both queued"
            time.sleep(0.02)
        code = srv.stop(timeout_s=WAIT_S)
        for t in threads:
            t.join(WAIT_S)
    finally:
        remote.close()
        srv.stop()
    assert [status for status, _ in answers] == [503, 503], answers
    assert all("closed before this request finished" in text for _, text in answers), answers
    assert code == 0


def test_a_pipelined_request_is_inside_its_request_not_waiting_for_a_head():
    """A GET and a POST's head in one write: when the GET's answer completed, the POST
    (already started by uvicorn) was marked as waiting for a head, so its 70 KB body was
    refused as a head over 64 KiB, and past the connection limit it could be shed."""
    from tests.helpers import identity_server
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                                   "data": [1, 2, 3]}], "parameters": {"pad": "a" * 70_000}}
                      ).encode()
    with identity_server() as (_, server):
        with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S) as s:
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                      b"POST /v2/models/ident/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/json\r\nContent-Length: "
                      + str(len(body)).encode() + b"\r\n\r\n")
            got = b""
            while b"\r\n\r\n" not in got:   # the GET's answer (no body)
                got += s.recv(65536)
            s.sendall(body)
            while got.count(b"HTTP/1.1 ") < 2 or not got.endswith(b"}"):  # the POST's answer
                chunk = s.recv(65536)
                assert chunk, got[:600]   # (closed without answering it)
                got += chunk
    assert got.count(b"HTTP/1.1 200 OK") == 2, got[:600]
    assert b'"data": [1.0, 2.0, 3.0]' in got


def test_a_client_that_never_reads_its_answer_is_cut_off():
    """26 clients that asked for 256 MiB answers and never read them held the server past
    its memory budget for as long as they stayed (an adversary): a connection whose client
    takes none of its answer for the stall time is closed, its answer let go, and other
    clients are served meanwhile."""
    import numpy as np

    from core import Engine, EngineConfig
    from core.serving import EngineServer
    from tests.helpers import identity_model, wait_for
    engine = Engine(EngineConfig(demo_models=False))
    engine.load_model(identity_model(shape=["N", "K"]), name="ident")
    server = EngineServer(engine, port=0).start()
    server._uvicorn.config.write_stall_s = 0.5
    n = 2**22   # a 16 MiB answer: past what the sockets' buffers take (4 MiB here)
    head = json.dumps({"inputs": [{"name": "x", "shape": [1, n], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 4 * n}}],
                       "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
                      ).encode()
    body = head + np.ones(n, np.float32).tobytes()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        s.connect(("127.0.0.1", server.port))
        s.sendall(b"POST /v2/models/ident/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n"
                  % (len(head), len(body)) + body)
        connections = server._uvicorn.server_state.connections
        wait_for(lambda: engine.metrics("ident").success_count == 1)
        wait_for(lambda: not connections)        # never read: cut off, not held
        assert server.routes.wire.counts()["closed"] == {"write_stall": 1}   # (/metrics)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_S)
        conn.request("GET", "/v2/models/ident")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        s.close()
        server.close()
        engine.close()


def test_a_slow_client_still_taking_its_answer_is_not_cut_off():
    """The stall timer ran from the buffer filling to its draining below the low-water
    mark: a steady reader at 49 KB/s, taking a 1 MiB slice in more than the stall time,
    was cut and logged as having taken nothing (a reviewer). A stall with progress is
    given another; one without is cut. (The protocol's timer, with a fake loop and
    transport: no clock.)"""
    from types import SimpleNamespace

    from core.serving.http import HeadDeadlineProtocol
    from core.serving.wirestats import WireStats

    class Transport:
        buffered, aborted = 1 << 20, False

        def get_write_buffer_size(self):
            return self.buffered

        def is_closing(self):
            return self.aborted

        def abort(self):
            self.aborted = True
    timers: list = []
    proto = HeadDeadlineProtocol.__new__(HeadDeadlineProtocol)   # (its timer alone)
    proto.transport, proto._write_timer = Transport(), None
    proto.config = SimpleNamespace(wire=WireStats())
    proto.loop = SimpleNamespace(call_later=lambda delay, fire: timers.append(
        (delay, fire)) or SimpleNamespace(cancel=lambda: None))
    proto._arm_write_timer()
    assert timers[-1][0] == 30.0
    proto.transport.buffered -= 50_000          # it took some during the stall
    timers[-1][1]()
    assert not proto.transport.aborted and len(timers) == 2   # another stall's time
    assert proto.config.wire.counts()["closed"] == {}
    timers[-1][1]()                              # nothing taken since
    assert proto.transport.aborted
    assert proto.config.wire.counts()["closed"] == {"write_stall": 1}
