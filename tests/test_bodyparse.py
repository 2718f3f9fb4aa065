"""Large JSON inference bodies are parsed in a child process (core/serving/bodyparse.py), so
that one long parse does not hold the serving process's interpreter: the answers are the
same as parsed here, errors keep their status and words, and a child that dies is
replaced."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from core.protocol import HTTPError, oip
from core.serving.bodyparse import CHILD_MIN, BodyParser
from tests.helpers import identity_model
from tests.test_budget import post


def _body(n: int, pad: int = 0, data: list | None = None) -> bytes:
    req = {"id": "r1", "inputs": [{"name": "x", "shape": [1, n], "datatype": "FP32",
                                   "data": data if data is not None
                                   else [float(i) / 7 for i in range(n)]}],
           "outputs": [{"name": "y", "parameters": {"binary_data": False}}]}
    if pad:
        req["parameters"] = {"pad": "p" * pad}
    return json.dumps(req).encode()


@pytest.fixture
def parser():
    p = BodyParser(child_min=64)
    yield p
    p.close()


def test_a_long_json_body_is_parsed_in_the_child_as_it_would_be_here(parser):
    raw = _body(3000)
    arrays, req = parser.parse(raw, None, 64 * 2**20)
    want_arrays, want_req = oip.parse_infer_request(raw, None, 64 * 2**20)
    assert parser.parsed_in_child == 1 and parser.pid not in (None, os.getpid())
    assert list(arrays) == ["x"] and arrays["x"].dtype == np.float32
    np.testing.assert_array_equal(arrays["x"], want_arrays["x"])
    # what the answer needs of the request comes back; the values only as the array
    assert req["id"] == "r1" and req["outputs"] == want_req["outputs"]
    assert "data" not in req["inputs"][0]
    # keys the server does not read stay in the child (a long string would be built again)
    extra = json.loads(raw)
    extra["junk"] = "j" * 10_000
    extra["inputs"][0]["note"] = "n" * 10_000
    extra["inputs"][0]["parameters"] = {"junk": "i" * 10_000}
    extra["outputs"][0].update(note="o" * 10_000)
    extra["outputs"][0]["parameters"]["junk"] = "p" * 10_000
    _, req = parser.parse(json.dumps(extra).encode(), None, 64 * 2**20)
    assert set(req) == {"id", "inputs", "outputs"} and "note" not in req["inputs"][0]
    assert req["inputs"][0]["name"] == "x" and req["inputs"][0]["parameters"] == {}
    assert req["outputs"] == [{"name": "y", "parameters": {"binary_data": False}}]
    # a short one is parsed here, without the trip
    short = _body(2)
    assert len(short) < 64 * 4
    BodyParser(child_min=CHILD_MIN).parse(short, None, None)
    assert parser.parsed_in_child == 2   # (the two long ones above)


def test_binary_data_after_a_long_json_part_comes_back_whole(parser):
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    head = json.dumps({"inputs": [
        {"name": "a", "shape": [1, 2000], "datatype": "FP32", "data": [1.0] * 2000},
        {"name": "b", "shape": [3, 4], "datatype": "FP32",
         "parameters": {"binary_data_size": values.nbytes}}]}).encode()
    arrays, _ = parser.parse(head + values.tobytes(), len(head), None)
    assert parser.parsed_in_child == 1
    np.testing.assert_array_equal(arrays["b"], values)
    assert arrays["a"].shape == (1, 2000)


@pytest.mark.parametrize("raw,header,status,words", [
    (b'{"inputs": [' + b" " * 200 + b"}", None, 400, "not valid JSON"),
    (_body(100, data=[float("nan")] * 100), None, 400, "NaN"),
    (b'{"inputs": [' + b",".join([b"[]"] * 50_000) + b"]}", None, 413, "binary data"),
    (_body(100) + b"\x00" * 8, None, 400, "not valid JSON"),
    (_body(100), 10**9, 400, "inference-header-content-length"),
])
def test_the_childs_refusals_keep_their_status_and_words(parser, raw, header, status, words):
    with pytest.raises(HTTPError) as err:
        parser.parse(raw, header, 4 * 2**20)
    assert err.value.status == status
    assert words.lower() in str(err.value).lower()
    # and the child goes on parsing
    arrays, _ = parser.parse(_body(500), None, None)
    assert arrays["x"].shape == (1, 500)


def test_a_child_that_died_is_replaced_for_the_next_body(parser):
    parser.parse(_body(500), None, None)
    pid = parser.pid
    os.kill(pid, signal.SIGKILL)
    parser._proc.join(10)
    arrays, _ = parser.parse(_body(500), None, None)
    assert arrays["x"].shape == (1, 500)
    assert parser.started == 2 and parser.pid != pid


def test_closed_parser_refuses_in_words(parser):
    parser.close()
    with pytest.raises(HTTPError, match="stopping") as err:
        parser.parse(_body(500), None, None)
    assert err.value.status == 503


def test_the_server_parses_a_long_json_body_in_its_child():
    """Through the real server: a 2 MiB JSON request (a long parameter) is answered as a
    short one is, and it was the child that parsed it."""
    from core import Engine, EngineConfig
    from core.serving import EngineServer
    engine = Engine(EngineConfig(demo_models=False))
    engine.load_model(identity_model(shape=["N", "K"]), name="ident")
    server = EngineServer(engine, port=0).start()
    try:
        req = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32",
                           "data": [1, 2, 3, 4, 5, 6]}],
               "parameters": {"note": "n" * (2 * CHILD_MIN)}}
        status, raw, _ = post(server, "/v2/models/ident/infer", json.dumps(req).encode())
        assert status == 200, raw[:300]
        out = json.loads(raw)["outputs"][0]
        assert out["shape"] == [2, 3] and out["data"] == [1, 2, 3, 4, 5, 6]
        assert server.app.routes.parser.parsed_in_child == 1
        del req["parameters"]
        status, raw, _ = post(server, "/v2/models/ident/infer", json.dumps(req).encode())
        assert status == 200 and server.app.routes.parser.parsed_in_child == 1
        child = server.app.routes.parser.pid
    finally:
        server.close()
        engine.close()
    assert server.app.routes.parser.pid is None          # the child ended with the server
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_short_parameters_come_back_and_a_long_one_stays_in_the_child(parser):
    req = json.loads(_body(500, pad=10_000))
    req["parameters"].update({"timeout_ms": 250, "key": "user-7", "priority": 1,
                              "binary_data_output": True})
    _, got = parser.parse(json.dumps(req).encode(), None, None)
    assert parser.parsed_in_child == 1
    assert got["parameters"] == {"timeout_ms": 250, "key": "user-7", "priority": 1,
                                 "binary_data_output": True}


def test_only_the_json_part_travels_and_the_binary_tensors_stay_views_of_the_body(parser):
    values = np.arange(3 * 2**16, dtype=np.float32)
    head = json.dumps({"inputs": [
        {"name": "a", "shape": [1, 500], "datatype": "FP32", "data": [2.0] * 500},
        {"name": "b", "shape": [1, values.size], "datatype": "FP32",
         "parameters": {"binary_data_size": values.nbytes}}]}).encode()
    body = head + values.tobytes()
    sent = []
    real = parser._ensure

    def ensure():
        conn = real()
        send_bytes = conn.send_bytes
        conn.send_bytes = lambda b: sent.append(len(b)) or send_bytes(b)
        return conn

    parser._ensure = ensure
    arrays, _ = parser.parse(body, len(head), None)
    assert sum(sent) == len(head)                       # not the 768 KiB of binary data
    assert np.shares_memory(arrays["b"], np.frombuffer(body, np.uint8))
    np.testing.assert_array_equal(arrays["b"][0], values)
    np.testing.assert_array_equal(arrays["a"], np.full((1, 500), 2.0, np.float32))


def test_a_child_that_stops_answering_is_replaced_and_its_request_answered_503(
        parser, monkeypatch):
    from core.serving import bodyparse
    parser.parse(_body(500), None, None)
    pid = parser.pid
    os.kill(pid, signal.SIGSTOP)                        # alive, but never answers
    monkeypatch.setattr(bodyparse, "CHILD_WAIT_S", 0.5)
    try:
        with pytest.raises(HTTPError, match="failed on this one") as err:
            parser.parse(_body(500), None, None)
        assert err.value.status == 503
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    monkeypatch.setattr(bodyparse, "CHILD_WAIT_S", 30.0)   # (a new child starts first)
    arrays, _ = parser.parse(_body(500), None, None)
    assert arrays["x"].shape == (1, 500) and parser.started == 2 and parser.pid != pid


def test_large_bodies_waiting_for_the_parser_neither_hold_other_routes_nor_wait_unbound():
    """120 clients' 8 MiB JSON bodies queued for the parser without bound on the threads
    metadata and /metrics are answered on: those waited 11-21 s, and a request with a 2 s
    timeout was answered after 21 s (an adversary). Large bodies wait on threads of their
    own, a body past the parse queue's bound is answered 503 at once, and the wait counts
    against a request's timeout."""
    import threading
    import time
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor
    from core import Engine, EngineConfig
    from types import SimpleNamespace

    from core.serving import EngineServer
    from core.serving import timeouts as timeouts_module
    from tests.helpers import WAIT_S, wait_for
    engine = Engine(EngineConfig(demo_models=False))
    engine.load_model(identity_model(shape=["N", "K"]), name="ident")
    server = EngineServer(engine, port=0).start()
    parser, app = server.app.routes.parser, server.app
    release, entered, left, real = threading.Event(), [], [], parser.parse

    def held_parse(raw, header, limit):   # the child busy with bodies ahead of these
        entered.append(1)
        release.wait(WAIT_S)
        left.append(1)
        return real(raw, header, limit)
    parser.parse = held_parse
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                   "data": [1, 2, 3, 4]}],
                       "parameters": {"note": "n" * 40_000}}).encode()   # past INLINE_MAX
    timed = json.dumps({**json.loads(body), "parameters": {
        "note": "n" * 40_000, "timeout_ms": 50}}).encode()
    pool = ThreadPoolExecutor(34)
    try:
        app.max_parsing_bytes = 40 * len(body)
        waiting = [pool.submit(post, server, "/v2/models/ident/infer", body)
                   for _ in range(32)] + [pool.submit(post, server, "/v2/models/ident/infer",
                                                      timed)]
        wait_for(lambda: len(entered) >= 32)   # every thread of the app's pools' size held
        # (and the 33rd counted in the queue before it is clamped: a reviewer)
        wait_for(lambda: app.parsing_bytes == 32 * len(body) + len(timed))
        for path in ("/v2/models/ident", "/metrics", "/v2/health/ready"):
            with urllib.request.urlopen(server.url + path, timeout=WAIT_S) as r:
                assert r.status == 200, path
        assert not left   # answered while every parse was held (not after they gave up)
        app.max_parsing_bytes = app.parsing_bytes   # the queue full: one more is refused
        status, raw, _ = post(server, "/v2/models/ident/infer", body)
        assert status == 503 and b"would wait past its" in raw \
            and b"send the tensors as binary data" in raw, raw[:300]
        assert len(entered) == 32   # (refused before its parse)
        # the timed one waited past its 50 ms: its clock read 10 s later (no sleep)
        timeouts_module.time = SimpleNamespace(monotonic=lambda: time.monotonic() + 10.0)
        release.set()
        answers = [f.result(WAIT_S) for f in waiting]
        assert [s for s, _, _ in answers[:32]] == [200] * 32
        status, raw, _ = answers[32]
        assert status == 504 and b"waiting for and in the parse of its JSON body" in raw, raw
        assert app.parsing_bytes == 0
        # and both are on /metrics, which no model's metrics could say (they never reached
        # one: an adversary found them in no figure)
        from prometheus_client.parser import text_string_to_metric_families
        with urllib.request.urlopen(server.url + "/metrics", timeout=WAIT_S) as r:
            fams = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
        errors = {(s.labels["route"], s.labels["code"], s.labels["type"]): s.value
                  for s in fams["batchlab_http_errors"].samples if s.name.endswith("_total")}
        assert errors == {("infer", "503", "ParseQueueFullError"): 1,
                          ("infer", "504", "RequestTimeoutError"): 1}
        answers = {(s.labels["route"], s.labels["code"]): s.value
                   for s in fams["batchlab_http_responses"].samples
                   if s.name.endswith("_total")}
        assert answers[("infer", "200")] == 32 and answers[("infer", "503")] == 1
        assert answers[("metadata", "200")] == 1 and answers[("health", "200")] == 1
        (parsing,) = fams["batchlab_http_parsing_bytes"].samples
        assert parsing.value == 0
    finally:
        timeouts_module.time = time
        release.set()
        pool.shutdown(wait=True)
        server.close()
        engine.close()
