"""Issue 27, part 1: Batchlab engine replicas as a Ray Serve deployment, on a real Ray
cluster the fixture starts (a head node and a second node process on this machine)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from core import Engine, EngineConfig
from core.cluster import BATCH_HEADER, REPLICA_HEADER, concurrency_warning
from core.models import build_demo_model

RAY = str(Path(sys.executable).with_name("ray"))
pytestmark = pytest.mark.timeout(600)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args: str, env: dict[str, str]) -> None:
    out = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, f"ray {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"


@pytest.fixture(scope="module")
def cluster():
    """A two-node Ray cluster on this machine (one CPU each), Serve's proxy on a free port;
    stopped (with every deployment) after the module's tests."""
    if not Path(RAY).exists():
        pytest.fail(f"Ray is not installed ({RAY} missing): make test installs "
                    "requirements-dev.txt, which has ray[serve]")
    tmp = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))   # Ray's socket paths are short
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
           # Requests spread over both replicas, not the proxy's own node first.
           "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
           "RAY_SERVE_PROXY_PREFER_LOCAL_AZ_ROUTING": "0"}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    try:
        _ray("start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
             "--disable-usage-stats", f"--temp-dir={tmp}", "--resources={\"head\": 1}",
             env=env)
        _ray("start", f"--address={address}", "--num-cpus=1", "--disable-usage-stats",
             "--resources={\"second\": 1}", env=env)
        for k in ("RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING",
                  "RAY_SERVE_PROXY_PREFER_LOCAL_AZ_ROUTING"):
            os.environ[k] = "0"
        yield address
    finally:
        try:
            import ray
            from ray import serve
            if ray.is_initialized():
                serve.shutdown()
                ray.shutdown()
        finally:
            subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
            shutil.rmtree(tmp, ignore_errors=True)


def _get(url: str) -> tuple[dict, dict]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read()), {k.lower(): v for k, v in r.headers.items()}


def _replicas_seen(url: str, want: int, tries: int = 400) -> dict[str, str]:
    """Ask until ``want`` replicas have answered: replica id -> its batch setting."""
    seen: dict[str, str] = {}
    for _ in range(tries):
        _, headers = _get(url)
        seen[headers[REPLICA_HEADER]] = headers[BATCH_HEADER]
        if len(seen) >= want:
            break
    return seen


def test_the_concurrency_warning_says_why_batches_would_not_fill():
    assert concurrency_warning(64, 32) is None
    text = concurrency_warning(8, 32)
    assert "max_ongoing_requests=8 is below max_batch_size=32" in text
    assert "at least 32" in text


def test_two_replicas_answer_as_onnx_runtime_and_configure_reaches_both(cluster):
    from core.cluster import configure, deploy, deployments, undeploy

    http_port = _free_port()
    model = build_demo_model("mlp")
    d = deploy("mlp", model, address=cluster, num_replicas=2, replica_cpus=0.5,
               max_ongoing_requests=8, http_port=http_port,
               batch={"max_batch_size": 16, "max_wait_ms": 2})
    try:
        assert d.url == f"http://127.0.0.1:{http_port}/mlp"
        assert any("max_ongoing_requests=8 is below max_batch_size=16" in w for w in d.warnings)
        assert d.serve_options()["user_config"]["batch"]["max_batch_size"] == 16
        assert [x.name for x in deployments()] == ["mlp"]
        config_url = d.url + "/v2/models/mlp/config"
        seen = _replicas_seen(config_url, 2)
        assert sorted(seen.values()) == ["16/2", "16/2"], seen
        # A remote model like any other: its answers equal ONNX Runtime's own.
        import onnxruntime as ort
        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)
        want = sess.run(None, {sess.get_inputs()[0].name: x})
        with Engine(EngineConfig(demo_models=False)) as client:
            client.add_remote("mlp-ray", url=d.url, model="mlp")
            assert client.batch_config("mlp-ray").max_batch_size == 16   # the server's
            for _ in range(20):
                got = client.predict("mlp-ray", x).outputs
                np.testing.assert_allclose(list(got.values())[0], want[0], rtol=1e-5,
                                           atol=1e-5)
        # Live: a new batch setting reaches both replicas, without restarting them.
        configure("mlp", max_batch_size=8, max_wait_ms=1)
        after = _replicas_seen(config_url, 2)
        assert after == {rid: "8/1" for rid in seen}, (seen, after)
        # The control API is not served by a replica (it would change one of several).
        req = urllib.request.Request(d.url + "/v1/engine/models", method="GET")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 404 and b"core.cluster.configure" in err.value.read()
    finally:
        undeploy("mlp")
    assert deployments() == []
