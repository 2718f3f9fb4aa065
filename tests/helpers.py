"""Shared test helpers: fake models driven by events, ONNX model builders, packaged models."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

ORT_DATASETS = Path(onnxruntime.__file__).parent / "datasets"
ONNX_TEST_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"

WAIT_S = 10.0  # generous bound for event waits: a hang fails the test instead of blocking


class GatedRun:
    """A fake model: doubles its input, records each batch, and can be held on a gate.

    ``started`` is set when a batch begins; the batch then waits for ``gate`` (set by
    default). ``fail_on`` makes any batch containing that value raise.
    """

    def __init__(self, gated: bool = False, fail_on: float | None = None) -> None:
        self.gate = threading.Event()
        if not gated:
            self.gate.set()
        self.started = threading.Event()
        self.batches: list[np.ndarray] = []
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def __call__(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = arrays[0]
        with self.lock:
            self.batches.append(np.array(x, copy=True))
        self.started.set()
        assert self.gate.wait(WAIT_S), "test gate never opened"
        if self.fail_on is not None and np.any(x == self.fail_on):
            raise ValueError(f"poisoned value {self.fail_on} in batch")
        return [x * 2.0]

    @property
    def batch_rows(self) -> list[int]:
        with self.lock:
            return [len(b) for b in self.batches]


def wait_for(predicate: Any, timeout_s: float = 15.0) -> None:
    """Poll a condition of the engine (not of the clock); fail loudly when it never holds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def hold_runs(engine: Any, name: str) -> tuple[threading.Event, threading.Event]:
    """Hold every run of ``name``'s executor on a gate: returns (gate, started); a run
    sets ``started`` and waits until the test sets ``gate``. (The wrapper is a plain
    function: not terminable, no row runs, as the runner of a batchable model.)"""
    executor = engine._ns.entry(name).served.executor
    inner, gate, started = executor.run_fn, threading.Event(), threading.Event()

    def held(arrays, *args):
        started.set()
        assert gate.wait(WAIT_S), "the test never opened the gate"
        return inner(arrays, *args)

    executor.run_fn = held
    return gate, started


def rows(n: int, start: float = 0.0, width: int = 3) -> np.ndarray:
    """An (n, width) float32 array whose rows are distinguishable."""
    base = np.arange(start, start + n, dtype=np.float32).reshape(n, 1)
    return np.repeat(base, width, axis=1)


def make_model(inputs: list, outputs: list, nodes: list, initializers: list | None = None,
               opset: int = 17, ir_version: int = 8) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


def identity_model(dtype: int = TensorProto.FLOAT, shape: list | None = None) -> bytes:
    shape = shape if shape is not None else ["N", 3]
    m = make_model([helper.make_tensor_value_info("x", dtype, shape)],
                   [helper.make_tensor_value_info("y", dtype, shape)],
                   [helper.make_node("Identity", ["x"], ["y"])])
    return m.SerializeToString()


def embedding_model(word_rows: int = 100) -> bytes:
    """BERT's inputs in small: word ids into a table of ``word_rows`` (an initializer), token
    types into a table of 2 (a Constant), summed."""
    words = numpy_helper.from_array(np.ones((word_rows, 4), np.float32), "words")
    types = numpy_helper.from_array(np.ones((2, 4), np.float32), "types_value")
    nodes = [helper.make_node("Constant", [], ["types"], value=types),
             helper.make_node("Gather", ["words", "input_ids"], ["w"], axis=0),
             helper.make_node("Gather", ["types", "token_type_ids"], ["t"]),
             helper.make_node("Add", ["w", "t"], ["y"])]
    vi = helper.make_tensor_value_info
    return make_model([vi("input_ids", TensorProto.INT64, ["N", 8]),
                       vi("token_type_ids", TensorProto.INT32, ["N", 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 4])],
                      nodes, [words], opset=13).SerializeToString()


class SlowModel:
    """A fake model with a known cost: each batch takes ``per_batch_s`` (a blocking wait
    that releases the GIL, like ``session.run``) and doubles its input."""

    def __init__(self, per_batch_s: float) -> None:
        self.per_batch_s = per_batch_s
        self.never = threading.Event()

    def __call__(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.never.wait(self.per_batch_s)
        return [arrays[0] * 2.0]


def channel_mean_model(shape: list, layout: str = "NCHW") -> bytes:
    """A model with one image input answering the mean of each channel ([N, C])."""
    axes = [2, 3] if layout == "NCHW" else [1, 2]
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("mean", TensorProto.FLOAT, [shape[0], "C"])
    node = helper.make_node("ReduceMean", ["image", "axes"], ["mean"], keepdims=0)
    graph = helper.make_graph([node], "channel-mean", [x], [y], initializer=[
        helper.make_tensor("axes", TensorProto.INT64, [2], axes)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def failing_model() -> bytes:
    """Loads fine, fails every run of fewer than two rows: x [N, 3] is reshaped to [2, 3]."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2, 3])
    m = make_model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                   [helper.make_node("Reshape", ["x", "shape"], ["y"])], [shape])
    return m.SerializeToString()


# -- a small real OIP server that misbehaves on purpose (remote-model tests) ---------------------
class _FakeOIP(BaseHTTPRequestHandler):
    """Metadata for model 'm' (x: FP32 [-1,4] -> y); infer misbehaves by ``server.mode``."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, status, body):
        raw = json.dumps(body).encode()
        encoding = getattr(self.server, "encoding", None)   # compress every answer so
        if encoding == "gzip":
            import gzip
            raw = gzip.compress(raw)
        elif encoding == "deflate":
            import zlib
            raw = zlib.compress(raw)
        elif encoding is not None:                          # (an encoding nobody asked for)
            raw = b"\x00" + raw
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if encoding is not None:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)
        self.server.accept_encoding = self.headers.get("Accept-Encoding")

    def do_GET(self):
        srv = self.server
        wanted = srv.token if str(srv.token).startswith("Basic ") else f"Bearer {srv.token}"
        if srv.token and self.headers.get("Authorization") != wanted:
            return self._json(401, {"error": "missing or wrong bearer token"})
        if srv.mode == "slow-metadata":
            srv.release.wait(WAIT_S)
        if self.path == "/v2":
            return self._json(200, {"name": srv.server_name, "version": "0", "extensions": []})
        if self.path == "/v2/models/m":
            tensors = {} if srv.mode == "undeclared" else {
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]}
            return self._json(200, {"name": "m", "versions": ["1"], "platform": "x", **tensors})
        if self.path == "/v2/models/m/ready":
            return self._json(200, {"name": "m", "ready": True})
        return self._json(404, {"error": f"no route {self.path}"})

    def do_POST(self):
        srv = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        srv.seen.append(body)
        mode = srv.mode
        if mode == "500":
            return self._json(500, {"error": "the model crashed (out of memory)"})
        if mode == "400":
            return self._json(400, {"error": "input x: expected FP32"})
        if mode == "slow":
            srv.release.wait(WAIT_S)
        if mode == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if mode == "int":            # another datatype than the metadata declares
            return self._json(200, {"model_name": "m", "outputs": [
                {"name": "y", "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
        if mode == "short":          # fewer rows than were sent
            x = np.ones((1, 4), np.float32)
            return self._json(200, {"model_name": "m", "outputs": [
                {"name": "y", "datatype": "FP32", "shape": [1, 4], "data": x.ravel().tolist()}]})
        if mode == "flood":          # small on the wire, huge parsed: 300,000 empty lists
            return self._json(200, {"model_name": "m", "outputs": [
                {"name": "y", "datatype": "FP32", "shape": [1, 4],
                 "data": [[]] * 300_000}]})
        if mode == "gzip-bomb":      # 20 KB on the wire, 20 MB of JSON: 10 million zeros
            import gzip
            n = 10_000_000
            raw = gzip.compress(b'{"model_name": "m", "outputs": [{"name": "y", "datatype": '
                                b'"FP32", "shape": [' + str(n).encode() + b'], "data": ['
                                + b"0," * (n - 1) + b"0]}]}", 6)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
            return
        if mode == "garbage":
            raw = b"<html>gateway</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
            return
        req = json.loads(body[:int(self.headers.get("Inference-Header-Content-Length")
                                   or len(body))])
        inp = req["inputs"][0]
        if "data" in inp:
            x = np.asarray(inp["data"], np.float32).reshape(inp["shape"])
        else:
            head = int(self.headers["Inference-Header-Content-Length"])
            x = np.frombuffer(body[head:], np.float32).reshape(inp["shape"])
        self._json(200, {"model_name": "m", "outputs": [
            {"name": "y", "datatype": "FP32", "shape": list(x.shape),
             "data": (x * 2).ravel().tolist()}]})


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # the misbehaving modes break connections on purpose


@contextlib.contextmanager
def fake_oip_server():
    """A real HTTP server speaking just enough Open Inference Protocol for model 'm'
    (x: FP32 [-1,4] -> y = 2x); ``srv.mode`` makes it misbehave ("500", "400", "slow",
    "drop", "garbage", "undeclared", "slow-metadata", "flood", "gzip-bomb"); ``srv.token``
    requires a bearer
    token; ``srv.release`` ends the slow modes; ``srv.seen`` holds the infer bodies."""
    srv = _QuietServer(("127.0.0.1", 0), _FakeOIP)
    srv.daemon_threads = True
    srv.mode, srv.token, srv.seen, srv.release = "ok", None, [], threading.Event()
    srv.server_name = "badserver"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()


@contextlib.contextmanager
def identity_server():
    """A real engine server (in this process, no token) serving the identity model (x:
    FP32 [N,3] -> y = x) as 'ident'; yields ``(engine, server)``."""
    from core import Engine
    from core.serving import EngineServer
    engine = Engine(demo_models=False)
    engine.load_model(identity_model(), name="ident")
    server = EngineServer(engine, port=0).start()
    try:
        yield engine, server
    finally:
        server.close()
        engine.close()


def run_coroutine(coro: Any) -> Any:
    """``asyncio.run(coro)`` on a thread of its own: a test may run where an event loop is
    already running in this thread (one left by the browser tests' Playwright)."""
    import asyncio
    out: dict[str, Any] = {}

    def main() -> None:
        try:
            out["value"] = asyncio.run(coro)
        except BaseException as err:  # noqa: BLE001 - raised in the test's thread
            out["error"] = err

    t = threading.Thread(target=main)
    t.start()
    t.join(WAIT_S)
    if "error" in out:
        raise out["error"]
    return out.get("value")
