"""A web page cannot drive the engine server (issue #24): cross-origin requests, forged
simple POSTs, GETs with side effects and rebound Host names are refused; the server's own
clients (RemoteEngine, tritonclient-style POSTs without a type) still work. Plain HTTP from
the tests, and a real chromium visiting a hostile page on another origin."""

from __future__ import annotations

import http.client
import http.server
import json
import threading

import pytest

from core import Engine, build_demo_model
from core.serving import EngineServer, RemoteEngine


@pytest.fixture
def served():
    engine = Engine(demo_models=False)
    engine.load_model(build_demo_model("tiny"), name="tiny")
    server = EngineServer(engine, port=0).start()
    yield engine, server
    server.close()
    engine.close()


def call(server, method: str, path: str, body: bytes | None = None, **headers: str):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={k.replace("_", "-"): v
                                                        for k, v in headers.items()})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


UNLOAD = json.dumps({"args": ["tiny"]}).encode()


def test_forged_requests_are_refused_and_the_model_stays(served):
    engine, server = served
    assert call(server, "GET", "/v1/engine/reset_metrics")[0] == 405  # a GET changes nothing
    assert call(server, "GET", "/v1/engine/model_names")[0] == 200   # reads are fine
    for kind in ("text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x"):
        status, body = call(server, "POST", "/v1/engine/unload_model", UNLOAD,
                            Content_Type=kind)
        assert status == 415 and b"application/json" in body, (kind, body)
    status, body = call(server, "POST", "/v1/engine/unload_model", UNLOAD,
                        Content_Type="application/json", Origin="http://evil.example")
    assert status == 403 and b"evil.example" in body
    assert call(server, "POST", "/v1/engine/unload_model", UNLOAD,
                Content_Type="application/json", Origin="null")[0] == 403
    assert call(server, "POST", "/v1/engine/unload_model", UNLOAD,
                Content_Type="application/json", Sec_Fetch_Site="cross-site")[0] == 403
    status, body = call(server, "POST", "/v1/engine/unload_model", UNLOAD,
                        Content_Type="application/json", Host=f"evil.example:{server.port}")
    assert status == 403 and b"rebound" in body
    assert call(server, "POST", "/v2/repository/models/tiny/unload", b"{}",
                Content_Type="text/plain")[0] == 415
    assert call(server, "POST", "/v2/models/tiny/infer", b"{}",
                Origin="http://evil.example")[0] == 403  # the data plane too
    assert engine.model_names() == ["tiny"]


def test_the_servers_own_clients_still_work(served):
    engine, server = served
    client = RemoteEngine.connect(server.url, timeout_s=30)
    try:
        assert client.model_names() == ["tiny"]
        client.configure("tiny", max_wait_ms=1.0)
        # same-origin (a page served by the server itself) and localhost names pass
        assert call(server, "GET", "/v1/engine/model_names",
                    Host=f"localhost:{server.port}",
                    Origin=f"http://localhost:{server.port}")[0] == 200
        # an OIP client that sends no Content-Type (tritonclient) may use the repository
        assert call(server, "POST", "/v2/repository/models/tiny/unload", b"{}")[0] == 200
        assert client.model_names() == []
    finally:
        client.close()
    assert engine.batch_config  # the engine is untouched otherwise


class _Attacker(http.server.BaseHTTPRequestHandler):
    page = b""

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)


def test_a_page_on_another_origin_cannot_change_anything(served, page):
    engine, server = served
    target = server.url
    _Attacker.page = f"""<!doctype html><html><body>
<form id="f" method="POST" action="{target}/v1/engine/unload_model" enctype="text/plain">
  <input name='{{"args": ["tiny"], "x": "' value='"}}'>
</form>
<iframe name="sink"></iframe>
<script>
  const done = [];
  fetch("{target}/v1/engine/unload_model", {{method: "POST", mode: "no-cors",
        headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{args: ["tiny"]}})}})
    .finally(() => done.push("fetch"));
  fetch("{target}/v1/engine/reset_metrics", {{mode: "no-cors"}}).finally(() => done.push("get"));
  fetch("{target}/v1/store/delete", {{method: "POST", mode: "no-cors",
        body: new Blob(['{{"args": [1]}}'])}}).finally(() => done.push("blob"));
  document.getElementById("f").target = "sink";
  document.getElementById("f").submit();
  window.attackDone = done;
</script></body></html>""".encode()
    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    attacker.daemon_threads = True
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        engine.predict("tiny", engine.sample_input("tiny"))
        page.goto(f"http://localhost:{attacker.server_address[1]}/")  # another origin
        page.wait_for_function("window.attackDone && window.attackDone.length === 3",
                               timeout=30_000)
        page.wait_for_timeout(500)  # the form post's answer
        assert engine.model_names() == ["tiny"]
        assert engine.metrics("tiny").total_requests == 1  # not reset
    finally:
        attacker.shutdown()
        attacker.server_close()


def _raw(port: int, request: bytes) -> bytes:
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        chunks = []
        while True:  # the server closes the connection after these answers
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_ambiguous_lengths_are_refused_and_the_connection_closed(served):
    _, server = served
    body = b'{"args": []}'
    smuggle = b"GET /v1/engine/reset_metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for lengths in ((b"12", b"%d" % (len(body) + len(smuggle))), (b"12", b"12")):
        request = (b"POST /v1/engine/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   b"Content-Type: application/json\r\n"
                   + b"".join(b"Content-Length: " + v + b"\r\n" for v in lengths)
                   + b"\r\n" + body + smuggle)
        answer = _raw(server.port, request)
        assert answer.startswith(b"HTTP/1.1 400") and b"Duplicate Content-Length" in answer
        assert answer.count(b"HTTP/1.1") == 1  # the rest was not served as a request
        assert b"connection: close" in answer
    for value in (b"+12", b"1_2", b" 1 2"):
        answer = _raw(server.port, b"POST /v1/engine/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/json\r\nContent-Length: " + value
                      + b"\r\n\r\n" + body)
        assert answer.startswith(b"HTTP/1.1 400") and \
            b"Invalid character in Content-Length" in answer, value


def test_client_mistakes_are_4xx_with_a_reason(served):
    _, server = served
    status, body = call(server, "POST", "/v1/engine/no_such_method", b"{}",
                        Content_Type="application/json")
    assert status == 404 and b"no control method engine.no_such_method" in body
    deep = b"[" * 100_000 + b"]" * 100_000
    status, body = call(server, "POST", "/v1/engine/status", deep,
                        Content_Type="application/json")
    assert status == 400, body
    engine = served[0]
    from core import ConfigError
    from core.protocol import status_of
    with pytest.raises(ConfigError, match=r"to 86,400,000 \(a day\)"):  # was an OverflowError
        engine.predict("tiny", engine.sample_input("tiny"), timeout_ms=1e308)
    assert status_of(OverflowError("a number the client sent")) == 400


class _Req:
    def __init__(self, **headers):
        self.h = {k.replace("_", "-").lower(): v for k, v in headers.items()}

    def header(self, name):
        return self.h.get(name.lower())


def test_host_rules_for_loopback_wildcard_and_port_forwards():
    from core.protocol import HTTPError
    from core.serving.guard import RequestGuard
    loop = RequestGuard()
    loop.bind("127.0.0.1", 8000)
    loop.check("POST", "/v1/engine/status", _Req(Host="127.0.0.1:9000"), True, False)  # ssh -L
    loop.check("POST", "/v1/engine/status", _Req(Host="[::1]:8000"), True, False)
    wild = RequestGuard(allowed_hosts=("gpu-box.lan",))
    wild.bind("0.0.0.0", 8000)
    wild.check("POST", "/v1/engine/status", _Req(Host="10.0.0.5:8000"), True, False)
    wild.check("POST", "/v1/engine/status", _Req(Host="gpu-box.lan:8000"), True, False)
    with pytest.raises(HTTPError, match="--allow-host evil.example") as err:
        # a rebound name is same-origin with itself: its Origin check alone passes
        wild.check("POST", "/v1/engine/unload_model",
                   _Req(Host="evil.example:8000", Origin="http://evil.example:8000"), True, True)
    assert err.value.status == 403


def test_a_length_of_too_many_digits_is_refused(served):
    _, server = served
    answer = _raw(server.port, b"POST /v1/engine/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nContent-Length: " + b"9" * 5000
                  + b"\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 400") and b"Content-Length overflow" in answer
