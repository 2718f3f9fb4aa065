"""Where an engine server may send requests (issue #24, outbound): addresses normalised and
checked against the policy, redirects never followed, servers' answers never copied beyond
a short OIP error text, and a cycle of servers ended at the second hop. Real servers on
loopback; numeric addresses need no DNS."""

from __future__ import annotations

import http.server
import json
import threading

import numpy as np
import pytest

from core import ConfigError, Engine
from core.errors import RemoteServerError, RemoteTargetError
from core.remote import HOPS_HEADER, OutboundPolicy
from core.remote.target import MAX_SERVER_WORDS, server_words
from core.serving import EngineServer, RemoteEngine


def test_addresses_are_normalised_before_they_are_judged():
    policy = OutboundPolicy().with_served("127.0.0.1", 8000)
    for own in ("http://127.0.0.1:8000", "http://0x7f000001:8000", "http://localhost:8000",
                "http://[::ffff:127.0.0.1]:8000", "http://127.1:8000", "http://0.0.0.0:8000"):
        with pytest.raises(ConfigError, match="this engine server itself|unspecified"):
            policy.check(own)
    assert policy.check("http://0x7f000001:9000")  # loopback, another port: the lab's own
    assert policy.check("http://8.8.8.8")  # public
    for url, kind in (("http://169.254.169.254/latest", "link-local"),
                      ("http://10.1.2.3:8080", "private"), ("http://[fd00::1]:80", "private"),
                      ("http://192.168.0.10", "private"), ("http://224.0.0.1", "multicast")):
        with pytest.raises(ConfigError, match=f"a {kind} address.*--allow-remote"):
            policy.check(url)
    allowing = OutboundPolicy(allow=("10.0.0.0/8", "gpu-box.internal"))
    assert allowing.check("http://10.1.2.3:8080")
    assert allowing.why_not("gpu-box.internal", __import__("ipaddress").ip_address(
        "192.168.1.5"), 80) is None
    with pytest.raises(ConfigError, match="could not be resolved"):
        OutboundPolicy().check("http://no-such-host.invalid:80")


@pytest.fixture
def front():
    engine = Engine(demo_models=False)
    server = EngineServer(engine, port=0).start()
    client = RemoteEngine.connect(server.url, timeout_s=30)
    yield engine, server, client
    client.close()
    server.close()
    engine.close()


def test_the_control_api_cannot_reach_refused_addresses_or_itself(front):
    _, server, client = front
    port = server.port
    for url, why in ((f"http://0x7f000001:{port}", "this engine server itself"),
                     (f"http://[::ffff:127.0.0.1]:{port}", "this engine server itself"),
                     ("http://169.254.169.254:80", "link-local"),
                     ("http://10.11.12.13:8000", "private")):
        with pytest.raises(ConfigError, match=why):
            client.add_remote("x", url=url, model="m", timeout_s=2)
    assert "x" not in client.model_names()
    with pytest.raises(ConfigError, match=r"timeout_s must be in \(0, 60\]"):
        client.add_remote("x", url="http://127.0.0.1:9", model="m", timeout_s=3600)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def _answer(self):
        srv = self.server
        srv.hits.append((self.command, self.path, self.headers.get(HOPS_HEADER)))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if srv.mode == "redirect":
            self.send_response(307)
            self.send_header("Location", srv.target + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:  # an internal service that answers anything with its secrets
            body = b"internal config: db_password=hunter2\n" * 20
            self.send_response(500)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    do_GET = do_POST = _answer


def _serve(mode: str, target: str = ""):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.mode, srv.target, srv.hits = mode, target, []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    return srv


def test_redirects_are_not_followed_and_other_answers_not_copied(front):
    _, _, client = front
    elsewhere = _serve("secrets")
    redirector = _serve("redirect", target=elsewhere.url)
    try:
        with pytest.raises(RemoteTargetError) as err:
            client.add_remote("x", url=redirector.url, model="m", timeout_s=5)
        assert "does not follow redirects" in str(err.value)
        assert elsewhere.hits == []  # nothing (and no body) went to the other host
        assert redirector.hits and all(h[2] == "1" for h in redirector.hits)  # hop header
        with pytest.raises(RemoteTargetError) as err:
            client.add_remote("y", url=elsewhere.url, model="m", timeout_s=5)
        assert "hunter2" not in str(err.value) and "not shown" in str(err.value)
    finally:
        for s in (elsewhere, redirector):
            s.shutdown()
            s.server_close()


def test_server_words_keep_a_short_printable_oip_error_only():
    long = json.dumps({"error": "bad input\x1b[31m" + "x" * 1000}).encode()
    words = server_words(long)
    assert words.startswith("bad input") and "\x1b" not in words
    assert len(words) <= MAX_SERVER_WORDS + 3
    assert "secret" not in server_words(b"<html>secret</html>")


def test_a_cycle_of_two_servers_ends_at_the_second_hop():
    a_engine, b_engine = Engine(demo_models=False), Engine(demo_models=False)
    from core import build_demo_model
    a_engine.load_model(build_demo_model("tiny"), name="tiny")
    a = EngineServer(a_engine, port=0).start()
    b = EngineServer(b_engine, port=0).start()
    try:
        b_engine.add_remote("y", url=a.url, model="tiny")   # B's y is A's tiny
        a_engine.add_remote("x", url=b.url, model="y")      # A's x is B's y
        b_engine.add_remote("y", url=a.url, model="x", replace=True)  # now B's y is A's x
        x = np.ones((1, 4), np.float32)
        with pytest.raises(RemoteServerError) as err:
            a_engine.predict("x", x, timeout_ms=10_000)
        assert err.value.status == 508 or "508" in str(err.value)
        # one request in: one hop to B, refused there; nothing came back to A's x
        assert a_engine.metrics("x").total_requests == 1
        assert b_engine.metrics("y").total_requests == 0
    finally:
        for s in (a, b):
            s.close()
        for e in (a_engine, b_engine):
            e.close()


def test_a_wildcard_bound_server_refuses_itself_but_not_other_machines_on_its_port():
    policy = OutboundPolicy(allow=("10.0.0.0/8",)).with_served("0.0.0.0", 8000)
    assert policy.check("http://10.1.2.3:8000")  # another machine, allowed by the rule
    for own in ("http://127.0.0.1:8000", "http://0.0.0.0:8000"):
        with pytest.raises(ConfigError, match="this engine server itself"):
            policy.check(own)
    with pytest.raises(ConfigError, match="not a valid network"):
        OutboundPolicy(allow=("10.0.0.0/33",))
