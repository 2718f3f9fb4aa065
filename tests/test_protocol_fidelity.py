"""Protocol fidelity (issue #24): answers strict JSON parsers can read, numbers that don't
silently change, and a client (RemoteEngine) that no server can hold past its deadline or
fill past its answer limit. A real engine server and plain HTTP; a hand-written hostile
server for the client's side."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import struct
import threading

import numpy as np
import pytest

from core.errors import EngineUnavailableError, OverloadedError, RequestTimeoutError
from core.models import OIP_DTYPES
from core.protocol import WireCodec, jsontext
from core.protocol.oip import parse_infer_json, parse_infer_request
from core.protocol.status import HTTPError
from core.serving import RemoteEngine
from tests.helpers import WAIT_S, identity_server, wait_for


def _strict(raw: bytes):
    """Parse as a strict parser would (JavaScript's JSON.parse, orjson, Go)."""
    return jsontext.loads(raw)


@pytest.fixture
def served():
    with identity_server() as pair:
        yield pair


def post(server, path: str, body: bytes, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", path, body=body,
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.headers
    finally:
        conn.close()


def _binary_request(values: list[float], binary_output: bool) -> tuple[bytes, dict]:
    raw = struct.pack(f"<{len(values)}f", *values)
    head = json.dumps({"inputs": [{"name": "x", "shape": [1, len(values)], "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "parameters": {"binary_data_output": binary_output}}).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head)),
                        "Content-Type": "application/octet-stream"}


def test_non_finite_outputs_are_an_explicit_error_in_json_and_exact_in_binary(served):
    engine, server = served
    body, headers = _binary_request([float("nan"), float("inf"), 1.0], binary_output=False)
    status, answer, _ = post(server, "/v2/models/ident/infer", body, headers)
    assert status == 422, answer
    error = _strict(answer)["error"]  # the error itself is strict JSON
    assert "'y' (2 of 3)" in error and "binary_data" in error
    # Counted as what its caller got: a failure, not a success.
    m = engine.metrics("ident")
    assert (m.success_count, m.error_count) == (0, 1) and m.errors_by_type == {"HTTPError": 1}
    # Asked as binary data, the same answer carries the values exactly.
    body, headers = _binary_request([float("nan"), float("inf"), 1.0], binary_output=True)
    status, answer, resp_headers = post(server, "/v2/models/ident/infer", body, headers)
    assert status == 200
    n = int(resp_headers["Inference-Header-Content-Length"])
    head = _strict(answer[:n])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 12
    y = np.frombuffer(answer[n:], "<f4")
    assert np.isnan(y[0]) and np.isposinf(y[1]) and y[2] == 1.0
    # A finite answer in JSON is strict JSON.
    status, answer, _ = post(server, "/v2/models/ident/infer", json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                     "data": [1, 2, 3.5]}]}).encode())
    assert status == 200 and _strict(answer)["outputs"][0]["data"] == [1, 2, 3.5]


def test_malformed_parameters_and_outputs_are_a_400_that_says_which(served):
    engine, server = served
    x = {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
    for req, words in (
            ({"inputs": [{**x, "parameters": [1]}]}, b"input 'x': 'parameters' must be an object"),
            ({"inputs": [{**x, "parameters": "ab"}]}, b"input 'x': 'parameters' must be"),
            ({"inputs": [x], "parameters": [1]}, b"the request: 'parameters' must be"),
            ({"inputs": [x], "outputs": "y"}, b"'outputs' must be a list of objects"),
            ({"inputs": [x], "outputs": [1]}, b"must be an object with the 'name'"),
            ({"inputs": [x], "outputs": [{"name": "y", "parameters": [1]}]},
             b"output 'y': 'parameters' must be an object"),
            ({"inputs": [x], "parameters": {"timeout_ms": 10 ** 400}},
             b"timeout_ms must be a positive finite number")):
        status, answer, _ = post(server, "/v2/models/ident/infer", json.dumps(req).encode())
        assert status == 400 and words in answer, (req, answer)
        assert len(answer) < 600, answer   # a 400-digit number is not echoed whole
    # An output the model does not have: the caller's mistake, refused before it runs.
    before = engine.metrics("ident").total_requests
    status, answer, _ = post(server, "/v2/models/ident/infer", json.dumps(
        {"inputs": [x], "outputs": [{"name": "nope"}]}).encode())
    assert status == 400 and b"unknown output(s) ['nope']" in answer
    assert engine.metrics("ident").total_requests == before


def test_requests_with_non_finite_or_overflowing_numbers_are_refused(served):
    _, server = served
    for data, reason in (("[NaN, 1, 2]", b"NaN is not valid JSON"),
                         ("[Infinity, 1, 2]", b"Infinity is not valid JSON"),
                         ("[-Infinity, 1, 2]", b"-Infinity is not valid JSON"),
                         ("[1e39, 1, 2]", b"out of FP32's range")):
        body = ('{"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": '
                + data + "}]}").encode()
        status, answer, _ = post(server, "/v2/models/ident/infer", body)
        assert status == 400 and reason in answer, (data, answer)
    status, answer, _ = post(server, "/v1/engine/status", b'{"args": [NaN]}')
    assert status == 400 and b"NaN is not valid JSON" in answer
    # What that refusal offers, a null for a missing value, reaches the model as NaN (it
    # was refused as "out of FP32's range").
    status, answer, headers = post(server, "/v2/models/ident/infer", json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [None, 1, 2]}],
         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode())
    assert status == 200, answer
    n = int(headers["Inference-Header-Content-Length"])
    y = np.frombuffer(answer[n:], "<f4")
    assert np.isnan(y[0]) and list(y[1:]) == [1, 2]


def test_an_input_given_twice_or_an_impossible_shape_is_refused_in_words(served):
    _, server = served
    x = {"name": "x", "shape": [1, 3], "datatype": "FP32"}
    status, answer, _ = post(server, "/v2/models/ident/infer", json.dumps(
        {"inputs": [{**x, "data": [1, 2, 3]}, {**x, "data": [4, 5, 6]}]}).encode())
    assert status == 400 and b"input 'x' is given twice" in answer, answer   # (was: 200, 4 5 6)
    status, answer, _ = post(server, "/v2/models/ident/infer", json.dumps(
        {"inputs": [{**x, "shape": [0, 2 ** 70], "data": []}]}).encode())
    assert status == 400 and b"input 'x': shape [0, 1180591620717411303424] cannot be made" \
        in answer and b"below 2**63" in answer, answer
    status, answer, _ = post(server, "/v2/models/ident/infer", json.dumps(
        {"inputs": [{**x, "shape": [0, 2 ** 62, 4], "data": []}]}).encode())
    assert status == 400 and b"non-zero dimensions times 4 bytes a value must stay below " \
        b"2**63 bytes" in answer, answer   # (was: "each dimension must be below 2**63")


@pytest.mark.parametrize("dt, data, words", [
    ("INT64", [1, 1.5], b"1 value(s) are not whole numbers (the first, 1.5, at flat index 1)"),
    ("UINT8", [3, 300], b"outside UINT8's range [0, 255] (the first, 300, at flat index 1)"),
    ("INT8", [1, 2 ** 70], b"outside INT8's range"),
    ("INT64", [-1, 2 ** 63], b"outside INT64's range"),   # (read as floats, it wrapped)
    ("BOOL", ["False", True], b"'data' holds strings where BOOL takes true or false"),
    ("BOOL", [None, True], b"value null at flat index 0 is not one of BOOL's values"),
    ("BOOL", [0, 1], b"'data' holds numbers where BOOL takes true or false"),
    ("FP32", ["1", "2"], b"'data' holds strings where FP32 takes numbers"),
    ("FP32", [True, False], b"'data' holds true/false where FP32 takes numbers"),
    ("INT32", [None, 2], b"value null at flat index 0 is not one of INT32's values"),
    # (numpy reads true beside numbers as 1: [true, 2] was taken as INT64 [1, 2])
    ("INT64", [True, 2], b"value true at flat index 0 is not one of INT64's values"),
    ("FP32", [2.5, False], b"value false at flat index 1 is not one of FP32's values"),
    ("UINT8", [1, 2, True], b"value true at flat index 2 is not one of UINT8's values"),
])
def test_json_values_of_another_kind_are_refused_not_converted(dt, data, words):
    """np.asarray(data, dtype) made 1.5 an INT64 1, 300 a UINT8 44 after a cast, "False" a
    BOOL True, null a BOOL False and "1" an FP32 1.0: each is now a 400 naming the value,
    whichever process parses the body (the server's parser child parses large ones)."""
    body = json.dumps({"inputs": [{"name": "x", "shape": [len(data)], "datatype": dt,
                                   "data": data}]}).encode()
    for parse in (parse_infer_request, parse_infer_json):
        with pytest.raises(HTTPError) as err:
            parse(body)
        assert err.value.status == 400 and words.decode() in str(err.value), str(err.value)


@pytest.mark.parametrize("extra, words", [
    ({"parameters": {"binary_data_output": "false"}},
     "the request's parameters.binary_data_output must be true or false, got 'false'"),
    ({"outputs": [{"name": "y", "parameters": {"binary_data": "no"}}]},
     "output 'y': parameters.binary_data must be true or false, got 'no'"),
])
def test_a_flag_that_is_not_true_or_false_is_refused(extra, words):
    """"false" and "no" gave binary answers (any text is true): refused before queueing."""
    body = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                                   "data": [1.0]}], **extra}).encode()
    with pytest.raises(HTTPError) as err:
        parse_infer_request(body)
    assert err.value.status == 400 and words in str(err.value), str(err.value)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16", "utf-32"])
def test_json_that_is_not_utf8_is_refused(encoding):
    """json reads UTF-16 and UTF-32 too, past the byte-level checks that read UTF-8: [true,
    2] in UTF-16 was taken as INT64 [1, 2] (a reviewer)."""
    body = json.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": "INT64",
                                   "data": [True, 2]}]}).encode(encoding)
    for parse in (parse_infer_request, parse_infer_json):
        with pytest.raises(HTTPError) as err:
            parse(body)
        assert err.value.status == 400 and "JSON is sent as UTF-8" in str(err.value)


def test_numbers_beside_true_elsewhere_in_the_body_are_taken():
    """A body that holds true elsewhere (an output's binary_data) has its numbers looked
    at one by one, and taken: 1 and 0 are not true and false."""
    arrays, _ = parse_infer_request(json.dumps(
        {"inputs": [{"name": "x", "shape": [3], "datatype": "INT64", "data": [1, 0, 2]}],
         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode())
    np.testing.assert_array_equal(arrays["x"], [1, 0, 2])


@pytest.mark.parametrize("dt, data, want", [
    ("INT64", [1, 2.0, -3], [1, 2, -3]), ("UINT8", [0, 255], [0, 255]),
    ("BOOL", [True, False], [True, False]), ("FP32", [None, 1, 2.5], [np.nan, 1, 2.5]),
    ("FP64", [2 ** 70, None], [2.0 ** 70, np.nan]), ("UINT64", [2 ** 63], [2 ** 63]),
    ("INT64", [1.0, 2 ** 53 + 1], [1, 2 ** 53 + 1]),   # (read as floats, it lost its 1)
])
def test_json_values_of_the_datatype_are_taken(dt, data, want):
    arrays, _ = parse_infer_request(json.dumps(
        {"inputs": [{"name": "x", "shape": [len(data)], "datatype": dt, "data": data}]}
    ).encode())
    got = arrays["x"]
    assert got.dtype == OIP_DTYPES[dt] and got.shape == (len(data),)
    np.testing.assert_array_equal(got, np.asarray(want, dtype=got.dtype))


def test_a_string_for_a_number_is_refused_by_the_server(served):
    engine, server = served
    before = engine.metrics("ident").total_requests
    status, answer, _ = post(server, "/v2/models/ident/infer", json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                     "data": ["1", "2", "3"]}]}).encode())
    assert status == 400 and b"holds strings where FP32 takes numbers" in answer, answer
    assert engine.metrics("ident").total_requests == before



def test_a_datatype_other_than_the_models_is_named_in_the_protocols_words(served):
    """A caller sends FP16 or INT64 where the model takes FP32: numpy's "float32/float16"
    alone left an OIP caller to translate (an adversary); the protocol's names are added."""
    engine, server = served
    for dt, data in (("FP16", [1.0, 2.0, 3.0]), ("INT64", [1, 2, 3])):
        status, answer, _ = post(server, "/v2/models/ident/infer", json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 3], "datatype": dt,
                         "data": data}]}).encode())
        assert status == 400, answer
        assert f"input 'x' is FP32 in the protocol's names, {dt} was sent".encode() in answer
    status, answer, _ = post(server, "/v2/models/ident/infer", json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                     "data": [1.0] * 4}]}).encode())   # the right type: nothing added
    assert status == 400 and b"expects float32" in answer and b"protocol" not in answer

def test_control_answers_are_strict_json_and_keep_non_finite_values():
    """The control API's values (metrics can hold NaN and infinities) travel as strict
    JSON and come back the same."""
    codec = WireCodec([])
    value = {"p99": float("nan"), "best": float("inf"), "worst": -float("inf"), "ok": 2.5}
    wire = jsontext.dumps(codec.encode(value))
    back = codec.decode(_strict(wire))
    assert np.isnan(back["p99"]) and back["best"] == float("inf")
    assert back["worst"] == -float("inf") and back["ok"] == 2.5
    # What the wire does not know still goes out as strict JSON: NaN becomes null.
    assert jsontext.dumps({"x": [1.0, float("nan")]}) == b'{"x": [1.0, null]}'


def test_the_server_answers_strict_json_for_a_snapshot_with_nan(served):
    engine, server = served
    engine.reset_metrics()  # no requests: percentiles are NaN in the snapshot
    status, answer, _ = post(server, "/v1/engine/metrics", b'{"args": ["ident"]}')
    assert status == 200, answer
    _strict(answer)
    assert b"null" in answer  # its NaN went out as JSON can carry it
    remote = RemoteEngine(f"http://127.0.0.1:{server.port}")
    try:
        local, far = engine.metrics("ident"), remote.metrics("ident")
        assert type(far) is type(local)
    finally:
        remote.close()


class _Hostile:
    """A server that answers every request with a valid head and then either drips its
    body one byte at a time (forever, until the client goes) or announces and sends more
    bytes than a client should read."""

    #: Whole answers, by mode: a redirect, a 50 MiB error message, a bare NaN.
    CANNED = {
        "redirect": b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere:9/\r\n"
                    b"Content-Type: text/html\r\nContent-Length: 24\r\n\r\n"
                    b"<html>302 Found</html>\r\n",   # (a proxy's: HTML, not JSON)
        "long error": b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/"
                      b"json\r\nContent-Length: %d\r\n\r\n%s" % (
                          (50 << 20) + 13, b'{"error": "' + b"e" * (50 << 20) + b'"}'),
        "nan": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
               b"Content-Length: 27\r\n\r\n" + b'{"result": NaN, "more": 0} ',
    }

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.client_left = threading.Event()
        self.stop = threading.Event()
        self.release = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:  # closed
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            try:
                if self.mode == "drip":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 1000000\r\n\r\n")
                    while not self.stop.wait(0.05):  # a byte every 50 ms, for ever
                        conn.sendall(b" ")
                        self.sent += 1
                elif self.mode == "bomb":   # ~20 MiB of "[]," gzip'd to ~20 KiB
                    body = gzip.compress(b'{"result": [' + b"[]," * (7 << 20) + b"[]]}", 9)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Encoding: gzip\r\nContent-Length: %d\r\n"
                                 b"Connection: close\r\n\r\n%s" % (len(body), body))
                    self.sent += len(body)
                elif self.mode in self.CANNED:
                    conn.sendall(self.CANNED[self.mode])
                elif self.mode == "hold":   # 3/4 MiB of its answer, the rest when released
                    body = b" " * (3 << 18)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body) + 2, body))
                    self.release.wait(30)
                    conn.sendall(b"{}")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n")
                    chunk = b" " * 65536
                    while not self.stop.is_set():
                        conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.sent += len(chunk)
            except OSError:
                self.client_left.set()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def test_a_dripping_server_cannot_hold_a_call_past_its_deadline():
    hostile = _Hostile("drip")
    remote = RemoteEngine(f"http://127.0.0.1:{hostile.port}", timeout_s=0.5)
    try:
        with pytest.raises(RequestTimeoutError, match="did not answer /v1/engine/status "
                                                      "within 0.5 s"):
            remote.status()
        # the client went away while the server still had most of its body to send (a
        # per-read timeout would have waited for all of it: 1,000,000 bytes)
        assert hostile.client_left.wait(30)
        assert hostile.sent < 1_000_000
    finally:
        remote.close()
        hostile.close()


def test_an_endless_answer_is_read_up_to_the_limit_and_no_further():
    hostile = _Hostile("flood")
    remote = RemoteEngine(f"http://127.0.0.1:{hostile.port}", max_answer_bytes=2**20)
    try:
        with pytest.raises(EngineUnavailableError, match="more than this client's limit "
                                                         "of 1,048,576 bytes"):
            remote.status()
        assert hostile.client_left.wait(30)
    finally:
        remote.close()
        hostile.close()


def test_a_small_answer_that_would_parse_into_gigabytes_is_refused_unparsed():
    """A gzip'd answer of ~20 KiB that decompresses to 20 MiB of empty lists (~800 MiB
    once parsed, past this process's parse bound) is counted, not parsed."""
    hostile = _Hostile("bomb")
    remote = RemoteEngine(f"http://127.0.0.1:{hostile.port}")
    try:
        with pytest.raises(EngineUnavailableError, match=r"answered /v1/engine/status with "
                                                         r"JSON that cannot be read here: "
                                                         r"[\d,]+ values and lists would "
                                                         r"take ~\d+ MiB to parse"):
            remote.status()
        assert hostile.sent < 100_000
    finally:
        remote.close()
        hostile.close()


def test_the_clients_answers_read_at_once_are_bounded_and_a_refused_one_let_go():
    """Each answer was bounded at 512 MiB but not all those read at once (four calls held
    2.4 GB), and a refused answer's bytes stayed held by the error's traceback (a page
    keeping the error kept 512 MiB; an adversary)."""
    from concurrent.futures import ThreadPoolExecutor
    hostile = _Hostile("hold")
    remote = RemoteEngine(f"http://127.0.0.1:{hostile.port}", max_answer_bytes=2**20,
                          timeout_s=60)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            remote.status()
        except BaseException as err:   # noqa: BLE001 - looked at below
            errors.append(err)
    pool = ThreadPoolExecutor(3)
    try:
        calls = [pool.submit(call) for _ in range(3)]   # 3 x 3/4 MiB: past twice the limit
        wait_for(lambda: errors)
        hostile.release.set()
        for c in calls:
            c.result(WAIT_S)
        refused = [e for e in errors if "bytes of other answers at once"
                   in str(e)]
        assert len(refused) == 1 and isinstance(refused[0], OverloadedError), errors
        assert "make fewer calls at once (the call may have taken effect there)" \
            in str(refused[0])   # (not "more than this client's limit": it was within it)
        tb, held = refused[0].__context__.__traceback__, []
        while tb is not None:
            held += [v for k, v in tb.tb_frame.f_locals.items() if k == "chunks" and v]
            tb = tb.tb_next
        assert not held
    finally:
        pool.shutdown()
        remote.close()
        hostile.close()


@pytest.mark.parametrize("mode, error, words", [
    ("redirect", EngineUnavailableError, "HTTP 302, a redirect \\(to 'http://elsewhere:9/'\\)"),
    ("long error", Exception, "^e{4000}… \\(cut: 52,428,800 characters\\)$"),
    ("nan", EngineUnavailableError, "with something that is not JSON"),
])
def test_a_servers_odd_answers_are_said_as_what_they_are(mode, error, words):
    """A redirect was "JSON that is not a Batchlab answer (no 'result')", a 50 MiB error
    message was raised whole, a bare NaN was read as a number (an adversary)."""
    hostile = _Hostile(mode)
    remote = RemoteEngine(f"http://127.0.0.1:{hostile.port}")
    try:
        with pytest.raises(error, match=words):
            remote.status()
    finally:
        remote.close()
        hostile.close()


def test_remote_engine_refuses_a_deadline_that_is_no_deadline():
    from core.errors import ConfigError
    for bad in (0, -1, float("inf"), float("nan"), "30"):
        with pytest.raises(ConfigError, match="timeout_s is the most one call may take"):
            RemoteEngine("http://127.0.0.1:1", timeout_s=bad)
    for bad in (0, -1, 1.5, True, "1"):
        with pytest.raises(ConfigError, match="max_parsed_bytes bounds what one answer"):
            RemoteEngine("http://127.0.0.1:1", max_parsed_bytes=bad)


def test_an_experiment_whose_arms_answer_differently_is_asked_only_what_both_have(served):
    """Asked for an output only arm A has, an experiment answered or refused as the split
    routed the request (8 of 20 served); now it is refused every time, in words, and its
    metadata lists the outputs both arms have."""
    from onnx import TensorProto, helper
    from tests.helpers import make_model
    engine, server = served
    spec = {n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in "xyz"}
    engine.load_model(make_model([spec["x"]], [spec["y"], spec["z"]],
                                 [helper.make_node("Identity", ["x"], ["y"]),
                                  helper.make_node("Neg", ["x"], ["z"])]), name="two")
    engine.create_ab("mixed", a="two", b="ident", b_share=0.5, seed=1)
    x = {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
    for _ in range(6):
        status, answer, _ = post(server, "/v2/models/mixed/infer", json.dumps(
            {"inputs": [x], "outputs": [{"name": "z"}]}).encode())
        assert status == 400 and b"arms answer with different outputs" in answer \
            and b"ask for outputs both have (['y'])" in answer, answer
    status, answer, _ = post(server, "/v2/models/mixed/infer", json.dumps(
        {"inputs": [x], "outputs": [{"name": "y"}]}).encode())
    assert status == 200 and _strict(answer)["outputs"][0]["data"] == [1, 2, 3]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/v2/models/mixed")
    meta = json.loads(conn.getresponse().read())
    conn.close()
    assert [o["name"] for o in meta["outputs"]] == ["y"]


def test_a_zero_dimensional_array_keeps_its_shape_over_the_wire():
    """np.ascontiguousarray makes any array at least 1-d: a scalar input sent by a
    RemoteEngine (or a sample_input of a scalar model coming back) arrived as shape [1],
    and the model refused it ("expects float32 [], got float32 [1]")."""
    codec = WireCodec([])
    for value in (np.array(2.5, np.float32), np.array(7, np.int64), np.zeros((2, 0, 3))):
        back = codec.decode(_strict(jsontext.dumps(codec.encode(value))))
        assert back.shape == value.shape and back.dtype == value.dtype
        np.testing.assert_array_equal(back, value)

