"""The engine server's token: the control API and the repository extension ask for it; a
server beyond loopback asks for it everywhere but health checks, and will not start
without one."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from core import BatchlabError, ConfigError, Engine, build_demo_model
from core.serving import EngineServer, RemoteEngine, ServerProcess

ROOT = Path(__file__).resolve().parent.parent
TINY = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                               "data": [1.0, 2.0, 3.0, 4.0]}]}).encode()


def call(port: int, method: str, path: str, body: bytes | None = None,
         token: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request(method, path, body, headers)
        r = c.getresponse()
        return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
    finally:
        c.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(args=["--no-probe"],
                        log_path=tmp_path_factory.mktemp("auth") / "server.log").start()
    yield srv
    srv.stop()


def test_control_and_repository_need_the_token(server):
    port, token = server.port, server.token
    status, body, headers = call(port, "GET", "/v1/info")
    assert status == 401 and b"Authorization: Bearer TOKEN" in body
    assert headers["www-authenticate"].startswith("Bearer")
    status, body, _ = call(port, "POST", "/v1/engine/unload_model", b'{"args": ["mlp"]}')
    assert status == 401
    status, body, _ = call(port, "POST", "/v1/engine/unload_model", b'{"args": ["mlp"]}',
                           token="not-" + token)
    assert status == 401 and b"is not this server's" in body
    status, _, _ = call(port, "POST", "/v2/repository/models/mlp/unload", b"{}")
    assert status == 401
    status, _, _ = call(port, "POST", "/v1/store/delete", b'{"args": [[1]]}')
    assert status == 401
    # Nothing was unloaded; with the token the same calls work.
    engine = RemoteEngine(server.url, token=token)
    assert "mlp" in engine.model_names()
    with pytest.raises(BatchlabError, match="not this server's"), \
            RemoteEngine(server.url, token="wrong") as wrong:
        wrong.model_names()
    status, _, _ = call(port, "GET", "/v1/info", token=token)
    assert status == 200
    engine.close()


def test_on_loopback_the_data_plane_and_health_need_no_token(server):
    c = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    try:
        assert c.is_server_ready()
        x = httpclient.InferInput("x", [1, 4], "FP32")
        x.set_data_from_numpy(np.ones((1, 4), np.float32), binary_data=False)
        assert c.infer("tiny", [x]).as_numpy("y").shape == (1, 4)
        with pytest.raises(InferenceServerException, match="needs its token"):
            c.load_model("tiny", config='{"max_batch_size": 8}')
        c.load_model("tiny", config='{"max_batch_size": 8}',
                     headers={"Authorization": f"Bearer {server.token}"})
        assert c.get_model_config("tiny")["max_batch_size"] == 8
    finally:
        c.close()
    assert call(server.port, "GET", "/metrics")[0] == 200


def test_beyond_loopback_everything_but_health_needs_the_token():
    engine = Engine(demo_models=False)
    engine.load_model(build_demo_model("tiny"), name="tiny")
    with pytest.raises(ConfigError, match="needs a token"):
        EngineServer(engine, host="0.0.0.0", port=0)
    srv = EngineServer(engine, host="0.0.0.0", port=0, token="s3cret").start()
    try:
        assert call(srv.port, "GET", "/v2/health/ready")[0] == 200  # probes stay open
        status, body, _ = call(srv.port, "POST", "/v2/models/tiny/infer", TINY)
        assert status == 401 and b"needs its token" in body
        assert call(srv.port, "GET", "/metrics")[0] == 401
        assert call(srv.port, "GET", "/v2/models/tiny")[0] == 401
        status, body, _ = call(srv.port, "POST", "/v2/models/tiny/infer", TINY, token="s3cret")
        assert status == 200 and json.loads(body)["outputs"][0]["data"] == [3.0, 5.0, 7.0, 9.0]
    finally:
        srv.close()
        engine.close()


def test_the_cli_prints_a_new_token_and_refuses_none_beyond_loopback():
    out = subprocess.run([sys.executable, "-m", "core.server", "--host", "0.0.0.0",
                          "--port", "0", "--no-token", "--no-demo-models"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--no-token is for a server on loopback" in out.stderr
    env = {k: v for k, v in __import__("os").environ.items() if k != "BATCHLAB_TOKEN"}
    proc = subprocess.Popen([sys.executable, "-m", "core.server", "--port", "0",
                             "--no-demo-models"], cwd=ROOT, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        url = token = None
        for line in proc.stderr:
            m = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
            url = url or (m.group(1) if m else None)
            m = re.search(r"token: (\S+) ", line)
            if m:
                token = m.group(1)
                break
        assert url and token and len(token) >= 24
        with RemoteEngine(url, token=token) as engine:
            assert engine.model_names() == []
    finally:
        proc.terminate()
        assert proc.wait(60) == 0
        proc.stderr.close()


def test_no_body_is_read_before_the_token_is(server):
    """A request without the token that announces a 200 MB upload is refused on its
    headers: the server neither waits for nor holds the body."""
    import socket
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /v1/engine/load_model HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 200000000\r\n\r\n{")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401") and b"connection: close" in answer.lower()


def test_the_data_plane_token_infers_but_never_drives_the_engine():
    """A server's data-plane token (derived from its token; what load agents are given)
    answers inference, metadata and /metrics, and is refused by the control API and the
    repository with the reason; the engine hands it, not the token, to its own clients."""
    from core.serving.guard import data_plane_token
    engine = Engine(demo_models=False)
    engine.load_model(build_demo_model("tiny"), name="tiny")
    srv = EngineServer(engine, host="0.0.0.0", port=0, token="s3cret").start()
    data = data_plane_token("s3cret")
    try:
        assert data != "s3cret" and "s3cret" not in data
        assert engine.served_token == data
        status, body, _ = call(srv.port, "POST", "/v2/models/tiny/infer", TINY, token=data)
        assert status == 200 and json.loads(body)["outputs"][0]["data"] == [3.0, 5.0, 7.0, 9.0]
        assert call(srv.port, "GET", "/v2/models/tiny", token=data)[0] == 200
        assert call(srv.port, "GET", "/metrics", token=data)[0] == 200
        for method, path, body in (("POST", "/v1/engine/unload_model",
                                    json.dumps({"args": ["tiny"]}).encode()),
                                   ("GET", "/v1/engine/model_names", None),
                                   ("POST", "/v2/repository/index", b"{}")):
            status, answer, _ = call(srv.port, method, path, body, token=data)
            assert status == 401 and b"data plane" in answer, (path, answer)
        assert engine.model_names() == ["tiny"]
        # a wrong token is still just wrong
        assert call(srv.port, "GET", "/v2/models/tiny", token=data[:-1] + "x")[0] == 401
    finally:
        srv.close()
        engine.close()
