"""Every byte under the budget (issue 25): what a request or an answer takes in Python
objects is bounded before it is allocated. A JSON body that would parse into more than the
server allows is refused unparsed (413, pointing at the binary extension); an output that
would take more as JSON is refused before it is encoded (400, pointing at binary output),
and the same output as binary data is served."""

from __future__ import annotations

import http.client
import threading
import json

import numpy as np
import pytest

from core import Engine, EngineConfig
from core.protocol import jsontext
from core.serving import EngineServer
from tests.helpers import WAIT_S, identity_model


@pytest.fixture
def served():
    engine = Engine(EngineConfig(demo_models=False))
    engine.load_model(identity_model(shape=["N", "K"]), name="ident")
    server = EngineServer(engine, port=0).start()
    yield server
    server.close()
    engine.close()


def post(server, path: str, body: bytes, headers: dict | None = None) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_S)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


def test_the_parse_estimate_bounds_what_json_really_allocates():
    import tracemalloc
    for raw in (b"[" + b",".join([b"[]"] * 100_000) + b"]",
                b"[" + b",".join([b"1.5"] * 100_000) + b"]",
                b'{"a": [' + b",".join([b'{"k": 2.5}'] * 20_000) + b"]}",
                # one character past U+FFFF makes the whole string 4 bytes a character
                b'{"a": "' + b"A" * 300_000 + b'\\ud83d\\ude00"}',
                b'{"a": "' + b"A" * 300_000 + "\U0001F600".encode() + b'"}',
                b'{"a": "' + b"A" * 300_000 + "\u20ac".encode() + b'"}'):
        estimate, _ = jsontext.parsed_bytes(raw)
        tracemalloc.start()
        value = jsontext.loads(raw)
        used = tracemalloc.get_traced_memory()[1]    # the peak, while parsing
        tracemalloc.stop()
        assert value and used <= estimate, (raw[:20], used, estimate)


def test_counted_in_pieces_of_any_size_the_estimate_is_the_wholes():
    """Short pieces are counted by ``bytes.count``, long ones by numpy's compares: the
    same separators either way, whatever the cut (``start``/``end`` included)."""
    rng = np.random.default_rng(7)
    raw = bytes(rng.choice(np.frombuffer(b',:[{x]}" 0', np.uint8), 300_000))
    whole = jsontext.SizeCounter()
    whole.add(raw)
    assert whole.values == 1 + sum(raw.count(c) for c in (b",", b":", b"[", b"{"))
    for cut in (1, 100, 2**14 - 1, 2**14, 70_000):
        pieces = jsontext.SizeCounter()
        for i in range(0, len(raw), cut):
            pieces.add(bytearray(raw[i:i + cut]))
        assert (pieces.scalars, pieces.lists, pieces.objects) == \
            (whole.scalars, whole.lists, whole.objects), cut
    sliced = jsontext.SizeCounter()
    sliced.add(raw, 1000, 250_000)
    assert sliced.values == 1 + sum(raw[1000:250_000].count(c) for c in (b",", b":", b"[", b"{"))


def test_a_wide_character_is_seen_whatever_the_cut_and_counted_where_it_widens():
    raw = b'{"a": "' + b"A" * 50_000 + "\U0001F600".encode() + b'"}'
    cut = raw.index(b"\xf0") + 1   # the character's lead byte ends the first piece
    for pieces in ((raw,), (raw[:cut], raw[cut:]), (raw[:20], raw[20:cut], raw[cut:])):
        counter = jsontext.SizeCounter()
        for p in pieces:
            counter.add(p)
        assert counter.raw == 4 and counter.parsed >= 8 * len(raw), [len(p) for p in pieces]
    # "Ā" (U+0100, two UTF-8 bytes) makes the decoded text 2 bytes a character: counted
    assert jsontext.parsed_bytes(b'{"a": "' + b"A" * 50_000 + "\u0100".encode() + b'"}')[0] \
        >= 4 * 50_000
    # An escape widens only its string: a large numeric body with an escaped id is counted
    # as the numbers plus that string, not the whole text at 4 bytes a byte
    numbers = b"[" + b",".join([b"1.5"] * 100_000) + b"]"
    plain, _ = jsontext.parsed_bytes(b'{"id": "cafe", "x": ' + numbers + b"}")
    for id_ in (b"caf\\u00e9", b"\\u6771\\u4eac", b"\\ud83d\\ude00"):
        est, _ = jsontext.parsed_bytes(b'{"id": "' + id_ + b'", "x": ' + numbers + b"}")
        assert plain <= est < plain + 200, (id_, est - plain)
    # ASCII text: counted as before
    plain = jsontext.SizeCounter()
    plain.add(b'{"a": "' + b"A" * 50_000 + b'\\n"}')
    assert not plain.wide and plain.parsed < len(raw)


def test_a_body_that_would_parse_past_the_bound_is_refused_unparsed():
    lists = b"[" + b",".join([b"[]"] * 200_000) + b"]"      # 600 KB; ~19 MB parsed
    with pytest.raises(jsontext.JSONTooLarge, match=r"400,001 values and lists would take ~\d+ MiB to parse, over the 4 MiB"):
        jsontext.loads(lists, max_parsed_bytes=4 * 2**20)
    assert len(jsontext.loads(lists, max_parsed_bytes=64 * 2**20)) == 200_000
    small = b"[" + b",".join([b"[]"] * 1000) + b"]"   # too short to reach it: not counted
    assert len(jsontext.loads(small, max_parsed_bytes=len(small) * 240)) == 1000


def test_the_server_refuses_a_json_flood_and_serves_the_same_values_as_binary(served):
    served.routes.max_json_bytes = 4 * 2**20
    n = 200_000
    data = np.arange(n, dtype=np.float32)
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, n], "datatype": "FP32",
                                   "data": data.tolist()}]}).encode()
    status, raw, _ = post(served, "/v2/models/ident/infer", body)
    answer = json.loads(raw)
    assert status == 413 and "binary" in answer["error"] and "MiB" in answer["error"], answer
    empties = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32",
                                      "data": [[]] * n}]}).encode()
    status, raw, _ = post(served, "/v2/models/ident/infer", empties)
    assert status == 413, raw[:200]
    # The control API's bodies too.
    status, raw, _ = post(served, "/v1/engine/model_info", json.dumps(
        {"args": [[[]] * n], "kwargs": {}}).encode())
    assert status == 413 and b"too large" in raw
    # The same tensor with the binary extension is served, and answered as binary.
    head = json.dumps({"inputs": [{"name": "x", "shape": [1, n], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 4 * n}}],
                       "parameters": {"binary_data_output": True}}).encode()
    status, raw, headers = post(served, "/v2/models/ident/infer", head + data.tobytes(),
                                {"Inference-Header-Content-Length": str(len(head))})
    assert status == 200, raw[:300]
    split = int({k.lower(): v for k, v in headers.items()}["inference-header-content-length"])
    np.testing.assert_array_equal(np.frombuffer(raw[split:], np.float32), data)


def test_a_large_binary_answer_is_sent_from_the_outputs_memory_in_slices(served):
    """A 12 MB binary output is answered as a view of its memory, written in 1 MiB slices
    (no copy holding the server meanwhile): every byte arrives, in order, with the right
    length."""
    from core.serving.asgi import SEND_SLICE
    n = 3_000_000
    data = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    assert 4 * n > 10 * SEND_SLICE
    head = json.dumps({"inputs": [{"name": "x", "shape": [1, n], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 4 * n}}],
                       "parameters": {"binary_data_output": True}}).encode()
    status, raw, headers = post(served, "/v2/models/ident/infer", head + data.tobytes(),
                                {"Inference-Header-Content-Length": str(len(head))})
    assert status == 200, raw[:300]
    h = {k.lower(): v for k, v in headers.items()}
    split = int(h["inference-header-content-length"])
    assert int(h["content-length"]) == len(raw) == split + 4 * n
    assert json.loads(raw[:split])["outputs"][0]["parameters"]["binary_data_size"] == 4 * n
    np.testing.assert_array_equal(np.frombuffer(raw[split:], np.float32), data)


def test_the_server_writes_a_large_answer_in_slices_without_copying_it():
    from tests.helpers import run_coroutine
    from core.protocol import encode_infer_response_parts
    from core.serving.asgi import SEND_SLICE, OipApp
    from core.serving.routes import Text
    y = np.arange(3 * SEND_SLICE // 4 + 5, dtype=np.float32)      # 3 MiB and a bit
    parts, head_len = encode_infer_response_parts(
        {"parameters": {"binary_data_output": True}}, "m", {"y": y}, {})
    assert len(parts) == 2 and isinstance(parts[1], memoryview)   # the output's own memory
    assert np.shares_memory(np.frombuffer(parts[1], np.float32), y)
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    run_coroutine(OipApp._send(send, 200, Text(parts, "application/octet-stream"), False))
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert len(bodies) == 5 and all(len(m["body"]) <= SEND_SLICE for m in bodies)
    assert [m["more_body"] for m in bodies] == [True] * 4 + [False]
    length = int(dict(sent[0]["headers"])[b"content-length"])
    whole = b"".join(bytes(m["body"]) for m in bodies)
    assert length == len(whole) == head_len + y.nbytes
    np.testing.assert_array_equal(np.frombuffer(whole[head_len:], np.float32), y)


def test_an_output_too_large_for_json_is_refused_before_it_is_encoded(served):
    served.routes.max_json_bytes = 4 * 2**20
    n = 200_000            # 7.6 MiB of Python floats as JSON: over; 0.8 MB as binary: fine
    data = np.ones(n, np.float32)
    head = json.dumps({"inputs": [{"name": "x", "shape": [1, n], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 4 * n}}]}).encode()
    status, raw, _ = post(served, "/v2/models/ident/infer", head + data.tobytes(),
                          {"Inference-Header-Content-Length": str(len(head))})
    answer = json.loads(raw)
    assert status == 400, answer
    assert "'y' (200,000 values)" in answer["error"] and "binary_data" in answer["error"]
    served.routes.max_json_bytes = 64 * 2**20      # within the bound: JSON as asked
    status, raw, _ = post(served, "/v2/models/ident/infer", head + data.tobytes(),
                          {"Inference-Header-Content-Length": str(len(head))})
    assert status == 200 and len(json.loads(raw)["outputs"][0]["data"]) == n


def _long_strings_model(text: bytes = b"A" * 4096) -> bytes:
    """y: [N, max(x)] strings of 4 KiB each (an adversary's): small in, large out."""
    from onnx import TensorProto as T, helper as h, numpy_helper as nh
    from tests.helpers import make_model
    nodes = [h.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             h.make_node("Cast", ["m"], ["k"], to=T.INT64),
             h.make_node("Reshape", ["k", "one"], ["k1"]),
             h.make_node("Shape", ["x"], ["xs"]),
             h.make_node("Slice", ["xs", "zero", "one"], ["n1"]),
             h.make_node("Concat", ["n1", "k1"], ["shape"], axis=0),
             h.make_node("Expand", ["s", "shape"], ["y"])]
    inits = [h.make_tensor("s", T.STRING, [1, 1], [text]),
             nh.from_array(np.array([1], np.int64), "one"),
             nh.from_array(np.array([0], np.int64), "zero")]
    return make_model([h.make_tensor_value_info("x", T.FLOAT, ["N", 1])],
                      [h.make_tensor_value_info("y", T.STRING, ["N", "K"])], nodes,
                      inits).SerializeToString()


def test_strings_count_by_their_length_against_the_answer_bound(served):
    """An array of strings' nbytes counts 8 a string: 4 KiB strings passed the bound at
    1/512 of their size, as JSON and as binary data. Now counted by length, either form."""
    served.routes.engine.load_model(_long_strings_model(), name="strings")
    served.routes.max_json_bytes = 4 * 2**20
    for binary in (False, True):
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32",
                                       "data": [600.0]}],       # 600 x 4 KiB: 2.3 MiB
                           "parameters": {"binary_data_output": binary}}).encode()
        status, raw, _ = post(served, "/v2/models/strings/infer", body)
        error = json.loads(raw)["error"]
        assert status == 400 and "answered 2.3 MiB of strings ('y'): over this server's 4 " \
            "MiB per answer, as JSON or binary data" in error, (binary, error)
    small = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32",
                                    "data": [3.0]}]}).encode()
    status, raw, _ = post(served, "/v2/models/strings/infer", small)
    assert status == 200 and json.loads(raw)["outputs"][0]["data"] == ["A" * 4096] * 3


def test_strings_past_the_basic_plane_count_by_their_utf8_bytes(served):
    """Strings counted by characters let a non-BMP character (4 bytes of UTF-8, 12 of
    JSON escapes) pass at a quarter of its size: 1,024 emoji a string, 1,200 rows, is 4.7
    MiB of UTF-8 that counted as 1.2 MiB under a 4 MiB bound."""
    served.routes.engine.load_model(_long_strings_model("\U0001F600".encode() * 1024),
                                    name="emoji")
    served.routes.max_json_bytes = 4 * 2**20
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32",
                                   "data": [1200.0]}],
                       "parameters": {"binary_data_output": True}}).encode()
    status, raw, _ = post(served, "/v2/models/emoji/infer", body)
    error = json.loads(raw).get("error", "")
    assert status == 400 and "answered 4.7 MiB of strings ('y')" in error, (status, error)


def test_the_bound_is_an_eighth_of_the_budget_and_at_least_64_mib(served):
    budget = served.routes.engine.memory_budget_bytes
    assert served.routes.max_json_bytes == max(64 * 2**20, budget // 8)


def test_session_threads_are_bounded_by_the_cores_with_the_reason():
    import os

    from core.config import SessionConfig
    from core.errors import ConfigError
    cores = os.cpu_count()
    assert SessionConfig(intra_op_threads=cores).intra_op_threads == cores
    with pytest.raises(ConfigError, match=rf"intra_op_threads=1024 is more than this "
                                          rf"machine's {cores} core\(s\).*use 1 to {cores}"):
        SessionConfig(intra_op_threads=1024)
    with pytest.raises(ConfigError, match="more than this machine's"):
        SessionConfig(intra_op_threads=cores + 1)


def test_timeouts_over_the_wire_are_capped_and_cannot_be_switched_off():
    """A server holds a request at most --max-timeout-s (600 s by default): the data plane's
    timeout parameters, configure, predict, a BatchConfig sent with load_model, and a
    Triton queue policy through the repository are refused past it or set to none."""
    from core import BatchConfig, build_demo_model
    from core.errors import ConfigError
    from core.serving import RemoteEngine

    engine = Engine(EngineConfig(demo_models=False))
    engine.load_model(build_demo_model("tiny"), name="tiny")
    server = EngineServer(engine, port=0, max_timeout_s=2.0).start()
    remote = RemoteEngine.connect(server.url, timeout_s=WAIT_S)
    try:
        for call in (lambda: remote.configure("tiny", timeout_ms=None),
                     lambda: remote.configure("tiny", timeout_ms=2001.0),
                     lambda: remote.predict("tiny", np.zeros((1, 4), np.float32),
                                            timeout=3.0),
                     lambda: remote.load_model(build_demo_model("tiny"), name="t2",
                                               batch=BatchConfig(timeout_ms=None))):
            with pytest.raises(ConfigError, match=r"at most 2 s \(its --max-timeout-s\)"):
                call()
        assert engine.batch_config("tiny").timeout_ms == 30_000.0   # nothing changed
        assert "t2" not in engine.model_names()
        remote.configure("tiny", timeout_ms=1500.0)                  # within: fine
        assert engine.batch_config("tiny").timeout_ms == 1500.0
        x = np.zeros((1, 4), np.float32)
        assert remote.predict("tiny", x, timeout=1.0).rows == 1
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                       "data": [0.0] * 4}],
                           "parameters": {"timeout": 3_000_000}}).encode()  # µs, Triton's
        status, raw, _ = post(server, "/v2/models/tiny/infer", body)
        assert status == 400 and b"--max-timeout-s" in raw
        # refused in the unit it came in: microseconds, up to the cap's 2,000,000
        assert b"microseconds up to 2,000,000" in raw and b"3000000" in raw, raw
        # a timeout that is not a number is refused, not ignored ("5" ran under the model's
        # own 30 s); one past a day is told this server's cap, not "up to a day"
        for params, words in (({"timeout": "5"}, b"got '5'"),
                              ({"timeout_ms": 1e12}, b"at most 2 s (its --max-timeout-s)")):
            status, raw, _ = post(server, "/v2/models/tiny/infer", json.dumps(
                {**json.loads(body), "parameters": params}).encode())
            assert status == 400 and words in raw, raw
        # a warm-up's time limit too: it runs in the route's thread (1e9 s ran past SIGTERM)
        with pytest.raises(ConfigError, match=r"time_limit_s=3 is past what this server runs "
                                              r"a call for, 2 s \(its --max-timeout-s\)"):
            remote.warmup("tiny", iterations=2, time_limit_s=3)
        # too low is the engine's to say; past a float's range is told the cap, not an
        # OverflowError; left out, the engine's 120 s is the server's 2 s (a reviewer)
        with pytest.raises(ConfigError, match=r"time_limit_s must be a number >= 0.01"):
            remote.warmup("tiny", iterations=2, time_limit_s=-1)
        with pytest.raises(ConfigError, match=r"time_limit_s=10+\.\.\. \(401 characters\) is "
                                              r"past"):
            remote.warmup("tiny", iterations=2, time_limit_s=10**400)
        from core.errors import ResourceLimitError
        with pytest.raises(ResourceLimitError, match=r"warm-up of model 'tiny' reached its "
                                                     r"time limit of 2 s after"):
            remote.warmup("tiny", iterations=10**9)
        assert remote.warmup("tiny", iterations=2, time_limit_s=2).batch_sizes
        cfg = {"dynamic_batching": {"default_queue_policy": {
            "default_timeout_microseconds": 0}}}            # Triton's "no timeout"
        status, raw, _ = post(server, "/v2/repository/models/tiny/load",
                              json.dumps({"parameters": {"config": cfg}}).encode(),
                              {"Authorization": f"Bearer {server.token}"}
                              if server.token else {})
        assert status == 400 and b"switch request timeouts off" in raw, raw
        assert engine.batch_config("tiny").timeout_ms == 1500.0
    finally:
        remote.close()
        server.close()
        engine.close()


def test_a_client_that_goes_away_cancels_its_request():
    """A hung model, requests queued behind it with long timeouts, their clients gone: each
    is cancelled (the queue empties, the model's errors say so), not held until its
    timeout with its bytes."""
    import time

    from core import BatchConfig
    from core.models import build_loop_model

    engine = Engine(EngineConfig(demo_models=False))
    engine.load_model(build_loop_model(10**10), name="hang",
                      batch=BatchConfig(max_batch_size=1, max_wait_ms=0.0))
    server = EngineServer(engine, port=0).start()
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32",
                                   "data": [1.0]}],
                       "parameters": {"timeout_ms": 300_000}}).encode()

    def send() -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_S)
        conn.request("POST", "/v2/models/hang/infer", body=body,
                     headers={"Content-Type": "application/json"})
        return conn

    def until(what, predicate):
        deadline = time.monotonic() + WAIT_S
        while not predicate():
            assert time.monotonic() < deadline, f"never: {what}"
            time.sleep(0.02)

    def cancelled() -> int:
        return engine.metrics("hang").errors_by_type.get("CancelledError", 0)

    served = engine._ns.entry("hang").served   # accepted and not settled: queued or running
    try:
        running = send()
        until("the first request runs",
              lambda: served.pending() == 1 and engine.queue_depth("hang") == 0)
        queued = send()
        until("the second request waits in the queue",
              lambda: served.pending() == 2 and engine.queue_depth("hang") == 1)
        queued.close()                                     # its client goes away
        until("the queued request is cancelled", lambda: cancelled() == 1)
        assert engine.queue_depth("hang") == 0 and served.pending() == 1
        running.close()                                    # and the running one's
        until("the running request is cancelled", lambda: cancelled() == 2)
        assert served.pending() == 0
        # Its run, with nobody left waiting for it, is stopped (not left to hang till close).
        until("the orphaned run is stopped", lambda: all(
            slot.current is None for slot in list(served.executor.slots.values())))
    finally:
        server.close()
        engine.close()


def test_a_model_that_blows_up_while_its_session_is_created_never_does_so_here():
    """build_memory_bomb(16000): ONNX Runtime folds its 1 GB constant while creating the
    session. A probed load opens it first in the trial run's child, under the budget, so
    the serving process never holds it (was: loaded, 2.2 GB peak with a 512 MiB budget)."""
    import textwrap

    code = textwrap.dedent("""
        import json
        from core import Engine, EngineConfig
        from core.models import build_memory_bomb
        from core.models.memory import current_rss_bytes, peak_rss_bytes
        with Engine(EngineConfig(memory_budget_bytes=512 * 2**20, probe_models=True,
                                 demo_models=False)) as e:
            base = current_rss_bytes()
            try:
                e.load_model(build_memory_bomb(16000), name="fold")
                err = None
            except Exception as ex:
                err = f"{type(ex).__name__}: {ex}"
            print(json.dumps({"err": err, "base": base, "peak": peak_rss_bytes(),
                              "models": e.model_names()}))
    """)
    out = _json_of_child(code)
    # (refused in the child before its session is made: the constant sized from the graph)
    assert out["err"] and out["err"].startswith(
        "ModelLoadError: model 'fold': opening this model would compute a constant of "
        "976.6 MiB (the ConstantOfShape making 'big')"), out
    assert out["models"] == []
    assert out["peak"] < out["base"] + 512 * 2**20, out


def test_an_engine_without_a_trial_run_refuses_a_constant_folded_past_its_budget():
    """An engine in a notebook (no trial run in a child) loaded a 200-byte model whose 1 GB
    constant ONNX Runtime folded while creating the session: 2.2 GB under a 256 MiB budget
    (an adversary). The constant is sized from the graph first, and the model refused."""
    import textwrap

    code = textwrap.dedent("""
        import json, sys
        sys.path.insert(0, ".")
        from core import Engine, EngineConfig
        from core.models import build_memory_bomb
        from core.models.memory import current_rss_bytes, peak_rss_bytes
        from tests.test_budget import _fold_by_expand
        with Engine(EngineConfig(memory_budget_bytes=256 * 2**20, demo_models=False)) as e:
            base, errs = current_rss_bytes(), []
            for data in (build_memory_bomb(16000), _fold_by_expand(16000)):
                try:
                    e.load_model(data, name="fold")
                    errs.append(None)
                except Exception as ex:
                    errs.append(f"{type(ex).__name__}: {ex}")
            e.load_model(build_memory_bomb(16000, at_run=True), name="at_run")  # (not folded)
            print(json.dumps({"errs": errs, "base": base, "peak": peak_rss_bytes(),
                              "models": e.model_names()}))
    """)
    out = _json_of_child(code)
    made = ["the ConstantOfShape making 'big'", "the Expand making 'big'"]
    for err, what in zip(out["errs"], made):
        assert err and err.startswith("ModelLoadError: opening this model would compute a "
                                      f"constant of 976.6 MiB ({what}): ONNX Runtime folds "
                                      "constants while it creates a session"), out
        assert "over 64.0 MiB, a quarter of the memory budget" in err and \
            "larger memory_budget_bytes" in err, err
    assert out["models"] == ["at_run"]
    assert out["peak"] < out["base"] + 256 * 2**20, out


def _json_of_child(code: str) -> dict:
    """What ``code``, run in a fresh interpreter from the repository, printed last (JSON)."""
    import subprocess
    import sys
    from pathlib import Path
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(Path(__file__).resolve().parent.parent), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fold_by_expand(n: int) -> bytes:
    """``Expand([1.0], [n, n]) -> ReduceSum -> Add(x)``: the adversary's folding bomb."""
    from onnx import TensorProto, helper, numpy_helper
    from tests.helpers import make_model
    nodes = [helper.make_node("Expand", ["one", "shape"], ["big"]),
             helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
             helper.make_node("Add", ["x", "s"], ["y"])]
    return make_model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], nodes,
                      initializers=[numpy_helper.from_array(np.array([1.0], np.float32), "one"),
                                    numpy_helper.from_array(np.array([n, n], np.int64), "shape")]
                      ).SerializeToString()


def test_trial_runs_take_turns_and_say_how_many_wait(monkeypatch):
    """Each trial run may take the whole budget in its child: one at a time, the others
    counted as waiting (the Models page says so), none lost."""
    import threading
    import time

    import pandas as pd

    from core import build_demo_model
    from core.engine import loading

    gate, inside = threading.Event(), threading.Semaphore(0)
    seen: list[int] = []

    def gated_probe(data, batch_sizes, budget, time_limit_s, threads=None,
                    graph_optimization="all"):
        inside.release()
        seen.append(len(batch_sizes))
        assert gate.wait(WAIT_S)
        return pd.DataFrame({"batch_size": list(batch_sizes), "peak_mib": 1.0,
                             "run_ms": 1.0, "error": None})

    monkeypatch.setattr(loading, "probe_model", gated_probe)
    engine = Engine(EngineConfig(demo_models=False))
    engine.load_model(build_demo_model("tiny"), name="tiny")
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(
        engine.measure_memory("tiny", [1, 2]))) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        assert inside.acquire(timeout=WAIT_S)          # one is in its trial run
        deadline = time.monotonic() + WAIT_S
        while engine.status()["loads"] != {"running": 1, "waiting": 2}:
            assert time.monotonic() < deadline, engine.status()["loads"]
            time.sleep(0.01)
        assert not inside.acquire(timeout=0.2)         # and only one
        gate.set()
        for t in threads:
            t.join(WAIT_S)
        assert len(results) == 3 and seen == [2, 2, 2]
        assert engine.status()["loads"] == {"running": 0, "waiting": 0}
    finally:
        gate.set()
        engine.close()


@pytest.fixture
def far(monkeypatch):
    """An engine whose remote model 'far' is the fake OIP server's 'm' (which ``srv.mode``
    makes misbehave), with answers' parse bound at 8 MiB; yields ``(engine, srv)``."""
    from core.remote import target
    from tests.helpers import fake_oip_server

    monkeypatch.setattr(target, "_max_parsed_bytes", lambda: 8 * 2**20)
    engine = Engine(EngineConfig(demo_models=False))
    try:
        with fake_oip_server() as srv:
            engine.add_remote("far", url=srv.url, model="m")
            yield engine, srv
    finally:
        engine.close()


def test_a_remote_answer_that_would_parse_past_the_bound_is_refused(far):
    """A remote model's server answering 900 KB of JSON that parses into ~30 MB of Python
    objects (a gzip bomb of small values is the same, decompressed within the read cap):
    refused unparsed with the reason, and the server's other requests go on."""
    from core.errors import RemoteServerError
    engine, srv = far
    x = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(engine.predict("far", x).outputs["y"], 2 * x)
    srv.mode = "flood"
    with pytest.raises(RemoteServerError, match=r"too large to read here.*over the 8 MiB"):
        engine.predict("far", x)
    srv.mode = "ok"
    np.testing.assert_array_equal(engine.predict("far", x).outputs["y"], 2 * x)


def test_a_gzip_bomb_answer_is_stopped_where_its_json_passes_the_bound(far):
    """20 KB on the wire inflating to 20 MB of JSON (10 million values): the answer's JSON
    is counted as it is decompressed and the read stops at the bound (8 MiB parsed here,
    about 210,000 values), not at the end; the next answer is served."""
    from core.errors import RemoteServerError
    engine, srv = far
    x = np.ones((1, 4), np.float32)
    srv.mode = "gzip-bomb"
    with pytest.raises(RemoteServerError, match=r"too large to read here") as err:
        engine.predict("far", x)
    counted = int(str(err.value).split(" values and lists")[0].split()[-1].replace(",", ""))
    assert 8 * 2**20 // 40 <= counted < 8 * 2**20 // 40 + 2**16, counted
    srv.mode = "ok"
    np.testing.assert_array_equal(engine.predict("far", x).outputs["y"], 2 * x)


def test_bombs_at_once_are_inflated_one_at_a_time(far, monkeypatch):
    """Compressed answers are inflated on the client loop's one worker: four gzip bombs at
    once take at most one core between them, never the loop's or the runners'."""
    import threading
    from core.remote import reading
    engine, srv = far
    seen, lock, inside = [], threading.Lock(), [0]
    real = reading._inflate

    def watched(*args):
        with lock:
            inside[0] += 1
            seen.append((threading.current_thread().name, inside[0]))
        try:
            return real(*args)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(reading, "_inflate", watched)
    srv.mode = "gzip-bomb"
    x = np.ones((1, 4), np.float32)
    futs = [engine.submit("far", x) for _ in range(4)]
    for f in futs:
        with pytest.raises(Exception, match=r"too large to read here"):
            f.result(60)
    assert len(seen) == 4, seen
    assert {name.rsplit("_", 1)[0] for name, _ in seen} == {"batchlab-oip-heavy"}
    assert max(n for _, n in seen) == 1


def test_compressed_answers_are_read_and_an_encoding_not_asked_for_is_refused(far):
    """The client asks for gzip or deflate and inflates them itself (off the shared loop,
    bounded); an answer in another encoding is refused in words, not misread."""
    from core.errors import RemoteServerError
    engine, srv = far
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    for encoding in ("gzip", "deflate"):
        srv.encoding = encoding
        np.testing.assert_array_equal(engine.predict("far", x).outputs["y"], 2 * x)
        assert srv.accept_encoding == "gzip, deflate"
    srv.encoding = "br"
    with pytest.raises(RemoteServerError, match=r"cannot be read: it came with "
                                                r"Content-Encoding 'br', which this client "
                                                r"did not ask for"):
        engine.predict("far", x)
    srv.encoding = None
    np.testing.assert_array_equal(engine.predict("far", x).outputs["y"], 2 * x)


def test_the_queue_is_bounded_in_bytes_and_gives_them_back():
    """Inputs queued behind a busy model count against the bound (an eighth of the budget;
    here set to 2.5 requests' worth): the request past it is refused at once with the
    figures, and what leaves the queue (taken, cancelled) gives its bytes back."""
    from core.batching import Batcher
    from core.config import BatchConfig
    from core.errors import OverloadedError
    from tests.helpers import GatedRun

    run = GatedRun(gated=True)
    b = Batcher("fake", run, ["y"], BatchConfig(max_batch_size=1, max_wait_ms=0))
    big = np.zeros((1, 2**18), np.float32)               # 1 MiB a request
    try:
        first = b.submit((big,), 1)
        assert run.started.wait(WAIT_S)                  # running: out of the queue
        assert b.queue.queued_bytes == 0
        b.queue.max_queued_bytes = int(2.5 * big.nbytes)
        queued = [b.submit((big,), 1) for _ in range(2)]
        assert b.queue.queued_bytes == 2 * big.nbytes
        with pytest.raises(OverloadedError, match=r"queue holds 2.0 MiB of inputs, and this "
                                                  r"request's 1.0 MiB would pass the 2 MiB"):
            b.submit((big,), 1)
        assert queued[1].cancel()                        # its caller gave up
        assert b.queue.queued_bytes == big.nbytes
        queued.append(b.submit((big,), 1))              # room again
        run.gate.set()
        for f in (first, queued[0], queued[2]):
            assert f.result(WAIT_S).rows == 1
        assert b.queue.queued_bytes == 0
    finally:
        run.gate.set()
        b.close()


def test_loaded_models_are_bounded_together_and_the_refusal_names_what_to_unload(monkeypatch):
    from core import build_demo_model
    from core.errors import ResourceLimitError

    data = build_demo_model("tiny")
    engine = Engine(EngineConfig(demo_models=False,
                                 max_models_bytes=_room_for(2.5, monkeypatch)))
    try:
        engine.load_model(data, name="a")              # each counts what its session holds
        engine.load_model(data, name="b")
        engine.predict("b", engine.sample_input("b"))  # b used; a never was
        with pytest.raises(ResourceLimitError, match=r"model 'c' .* would bring the loaded "
                                                     r"models to .*least recently used "
                                                     r"first: a \(.*\), b \("):
            engine.load_model(data, name="c")
        assert engine.model_names() == ["a", "b"]
        engine.load_model(data, name="b", replace=True)  # a hot swap counts once
        engine.unload_model("a")
        engine.load_model(data, name="c")
        assert sorted(engine.model_names()) == ["b", "c"]
    finally:
        engine.close()


_HELD = 2**20   # what each session holds in the tests of the cap's bookkeeping


def _room_for(sessions: float, monkeypatch) -> int:
    """``max_models_bytes`` for that many sessions, each said to hold :data:`_HELD` (the
    measurement, a heap's growth, is tested on its own below: the bookkeeping is tested
    on fixed sizes, not on a figure another thread's allocation could move)."""
    import core.models.cache as cache
    from core.models.session import create_session
    monkeypatch.setattr(cache, "created_session",
                        lambda data, options, arena=True, fold=True: (
                            create_session(data, options, arena, fold), _HELD))
    return int(sessions * _HELD)


def test_sessions_kept_for_unloaded_models_count_and_give_way(monkeypatch):
    """An unloaded model's session stays cached (a reload is instant) only while the loaded
    models and the cached ones together fit ``max_models_bytes``: a load that needs the
    room drops the least recently used of them."""
    import hashlib
    import onnx
    from core import build_demo_model

    variants = []
    for i in range(3):
        m = onnx.load_from_string(build_demo_model("tiny"))
        m.doc_string = f"variant {i}"
        variants.append(m.SerializeToString())
    sha = [hashlib.sha256(v).hexdigest() for v in variants]
    engine = Engine(EngineConfig(demo_models=False, probe_models=False,
                                 max_models_bytes=_room_for(2.5, monkeypatch)))
    try:
        engine.load_model(variants[0], name="a")
        engine.unload_model("a")
        engine.load_model(variants[1], name="b")   # 1 + 1 of 2.5 sessions: both kept
        engine.unload_model("b")
        assert {e.sha256 for e in engine.cache_entries()} == {sha[0], sha[1]}
        engine.load_model(variants[2], name="c")   # 1 + 1 + 1 > 2.5: the oldest gives way
        assert {e.sha256 for e in engine.cache_entries()} == {sha[1], sha[2]}
        engine.predict("c", engine.sample_input("c"))
        engine.load_model(variants[1], name="b")   # a reload reuses its cached session
        assert {e.sha256: e.loads for e in engine.cache_entries()}[sha[1]] == 2
    finally:
        engine.close()


def test_an_unloaded_model_is_freed_without_waiting_for_the_collector():
    """Unloading a model frees its batcher and session (with the model's bytes) at once:
    no reference cycle leaves them to a full collection, which a server (thresholds
    raised) seldom runs: each load and unload of a 190 MiB model kept 190 MiB before."""
    import gc
    import threading
    import weakref
    from core import build_demo_model

    engine = Engine(EngineConfig(demo_models=False, probe_models=False))
    try:
        engine.load_model(build_demo_model("tiny"), name="t")
        engine.predict("t", engine.sample_input("t"))
        served = engine._registry.models["t"].served
        gone = [weakref.ref(served), weakref.ref(served.executor)]
        del served
        gc.collect()
        gc.disable()
        try:
            engine.unload_model("t")
            engine.evict_cache()
            for th in threading.enumerate():   # its threads, stopped, may still be leaving
                if th.name.startswith("batcher-t"):
                    th.join(60)
            assert [r() is None for r in gone] == [True, True]
        finally:
            gc.enable()
    finally:
        engine.close()


def test_by_default_models_may_hold_the_memory_budget():
    from core.errors import ResourceLimitError

    engine = Engine(EngineConfig(demo_models=False))
    try:
        assert engine.config.max_models_bytes is None
        with pytest.raises(ResourceLimitError, match="over the .* they may hold"):
            engine._loader.check_room("huge", engine.memory_budget_bytes // 2 + 1)
        engine._loader.check_room("fits", engine.memory_budget_bytes // 2 - 2**20)
    finally:
        engine.close()


def test_an_idle_models_supervisor_sleeps_until_a_request_arrives():
    """Nothing live: the supervisor waits without a timeout (1,000 idle models cost 72 % of
    a core at its 50 ms watch, 0.04 % now: docs/benchmarks.md); a request, with a
    deadline or without one, wakes it to watch again."""
    import time

    from core.batching import Batcher
    from core.config import BatchConfig
    from tests.helpers import GatedRun

    def until(what, predicate):
        deadline = time.monotonic() + WAIT_S
        while not predicate():
            assert time.monotonic() < deadline, f"never: {what}"
            time.sleep(0.005)

    for cfg in (BatchConfig(max_batch_size=1, max_wait_ms=0),
                BatchConfig(max_batch_size=1, max_wait_ms=0, timeout_ms=None)):
        run = GatedRun(gated=True)
        b = Batcher("fake", run, ["y"], cfg)
        try:
            until("the supervisor sleeps idle", lambda: b.queue.supervisor_idle)
            fut = b.submit((np.zeros((1, 3), np.float32),), 1)
            assert run.started.wait(WAIT_S)
            until("a request wakes it", lambda: not b.queue.supervisor_idle)
            time.sleep(0.2)            # several watch intervals: still awake while it runs
            assert not b.queue.supervisor_idle
            run.gate.set()
            assert fut.result(WAIT_S).rows == 1
            until("idle again", lambda: b.queue.supervisor_idle)
        finally:
            run.gate.set()
            b.close()


def test_request_bodies_held_at_once_are_bounded():
    """Bodies of requests not yet answered count against a quarter of the budget: past it a
    request is answered 503 before its body is read (40 hung 32 MiB requests held 1.3 GB),
    and a body given back (its request answered or cancelled) makes room again."""
    import time

    from core import BatchConfig
    from core.models import build_loop_model

    engine = Engine(EngineConfig(demo_models=False))
    engine.load_model(build_loop_model(10**10), name="hang",
                      batch=BatchConfig(max_batch_size=1, max_wait_ms=0.0))
    server = EngineServer(engine, port=0).start()
    app = server.app
    pad = "x" * (2 * 2**20)                          # a 2 MiB body for a one-row request
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32",
                                   "data": [1.0]}],
                       "parameters": {"timeout_ms": 300_000, "pad": pad}}).encode()

    def until(what, predicate):
        deadline = time.monotonic() + WAIT_S
        while not predicate():
            assert time.monotonic() < deadline, f"never: {what}"
            time.sleep(0.01)

    try:
        budget = engine.memory_budget_bytes            # a quarter of it, by default
        assert app.max_bodies_in_flight == max(2 * server.routes.max_body_bytes,
                                               budget // 8 * 2, 2 * 64 * 2**20)
        app.max_bodies_in_flight = len(body) + 1000
        held = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_S)
        held.request("POST", "/v2/models/hang/infer", body)
        until("the first body is held", lambda: app.bodies_in_flight == len(body))
        # a small second body (it fits the socket's buffers: the server answers without
        # reading it), over the bound with the first
        small = body.replace(pad.encode(), b"x" * 8192)
        status, raw, _ = post(server, "/v2/models/hang/infer", small)
        assert status == 503 and b"request bodies not yet answered" in raw, raw[:200]
        assert app.bodies_in_flight == len(body)     # the refused one's was never counted
        held.close()                                  # answered by going away: cancelled
        until("its body is given back", lambda: app.bodies_in_flight == 0)
    finally:
        server.close()
        engine.close()


def test_heads_that_declare_large_bodies_and_send_nothing_hold_nothing(served):
    """A body counts by the bytes that arrive, not by its declared length: three heads that
    declare 200 MB each and never send a byte (2.6 KB in all) hold none of the bound, and
    everyone else's requests are served beside them (they held 600 MB and refused every
    body for minutes)."""
    import socket
    import time
    server = served
    app = server.app
    app.max_bodies_in_flight = 2**20
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                                   "data": [1, 2, 3]}]}).encode()
    heads = []
    try:
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S)
            sock.sendall(b"POST /v2/models/ident/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 209715200"
                         b"\r\n\r\n")
            heads.append(sock)
        deadline = time.monotonic() + WAIT_S
        while app.open_connections() < 3:   # the server has taken all three
            assert time.monotonic() < deadline, "the three heads were not all kept (refused?)"
            time.sleep(0.01)
        for _ in range(5):
            status, raw, _ = post(server, "/v2/models/ident/infer", body)
            assert status == 200, raw[:300]
        assert app.bodies_in_flight == 0
    finally:
        for sock in heads:
            sock.close()


def _send_chunked(port: int, path: str, body: bytes):
    """POST ``body`` with chunked transfer encoding (64 KiB chunks) on a socket of its own;
    the socket, still open (a refusal may have cut the sending short)."""
    import socket
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                 "application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    try:
        for i in range(0, len(body), 65536):
            piece = body[i:i + 65536]
            sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
    except OSError:      # answered and closed part-way: the answer is still there to read
        pass
    return sock


def _answer_of(sock) -> bytes:
    out = b""
    try:
        while not out.endswith(b"}") or b"\r\n\r\n" not in out:
            part = sock.recv(65536)
            if not part:
                break
            out += part
    finally:
        sock.close()
    return out


def test_chunked_bodies_count_against_the_bodies_held_as_they_arrive():
    """Issue 25: a body without a declared length (chunked) counted 0 against the bound on
    bodies held, so chunked uploads could pass it. Now it counts as it arrives: held, it
    makes the server refuse others; past the bound beside others it is refused part-way
    (503 in words once the rest is read and dropped, the connection closed); one that
    arrives in one piece counts too; alone it is never refused."""
    import time

    from core import BatchConfig
    from core.models import build_loop_model

    engine = Engine(EngineConfig(demo_models=False))
    engine.load_model(build_loop_model(10**10), name="hang",
                      batch=BatchConfig(max_batch_size=1, max_wait_ms=0.0))
    engine.load_model(identity_model(shape=["N", 1]), name="echo")
    server = EngineServer(engine, port=0).start()
    app = server.app
    pad = "x" * (2 * 2**20)

    def body_for(timeout_ms: float) -> bytes:
        return json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32",
                                       "data": [1.0]}],
                           "parameters": {"timeout_ms": timeout_ms, "pad": pad}}).encode()

    def until(what, predicate):
        deadline = time.monotonic() + WAIT_S
        while not predicate():
            assert time.monotonic() < deadline, f"never: {what}"
            time.sleep(0.01)

    body = body_for(300_000)
    try:
        app.max_bodies_in_flight = len(body) + 1000
        held = _send_chunked(server.port, "/v2/models/hang/infer", body)
        until("the chunked body is counted", lambda: app.bodies_in_flight == len(body))
        small = body.replace(pad.encode(), b"x" * 8192)
        status, raw, _ = post(server, "/v2/models/hang/infer", small)
        assert status == 503 and b"request bodies not yet answered" in raw, raw[:200]
        # another chunked body beside it, from an ordinary client: refused part-way, its
        # count given back, and the client reads the answer (the rest was read, not reset)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_S)
        conn.request("POST", "/v2/models/echo/infer", encode_chunked=True,
                     body=(body[i:i + 65536] for i in range(0, len(body), 65536)),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        words = resp.read()
        assert resp.status == 503 and b"this body's" in words, words[:300]
        assert resp.getheader("connection") == "close"
        conn.close()
        assert app.bodies_in_flight == len(body)
        held.close()                                   # cancelled: its bytes given back
        until("the held body is given back", lambda: app.bodies_in_flight == 0)
        # a small chunked body, arriving in one piece, counts while its request is held
        small_held = _send_chunked(server.port, "/v2/models/hang/infer", small)
        until("the one-piece body is counted", lambda: app.bodies_in_flight == len(small))
        small_held.close()
        until("it is given back", lambda: app.bodies_in_flight == 0)
        # alone, a chunked body over the bound is read and answered
        app.max_bodies_in_flight = 2**20
        answer = _answer_of(_send_chunked(server.port, "/v2/models/echo/infer", body))
        assert answer.startswith(b"HTTP/1.1 200") and b'"outputs"' in answer, answer[:300]
        until("the answered body is given back", lambda: app.bodies_in_flight == 0)
    finally:
        server.close()
        engine.close()


def test_the_arena_gives_back_a_large_outputs_memory_once_it_is_gone(engine):
    """Issue 25: after a 64 MB answer the process kept the arena's chunk for good (+504 MiB
    after a 256 MB one). Now, once the output is let go, the shared arena is shrunk in the
    background and the process's resident memory comes back down."""
    from onnx import TensorProto, helper
    from core.models import current_rss_bytes
    from core.models.shrink import shrinks, wait_for_shrinks
    from tests.helpers import make_model

    value = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    model = make_model([helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                       [helper.make_node("ConstantOfShape", ["s"], ["y"], value=value)])
    engine.load_model(model.SerializeToString(), name="fill", probe=False)
    try:
        engine.configure("fill", max_wait_ms=0)
        small = np.array([10, 10], np.int64)
        engine.predict("fill", small)           # not large: nothing to give back
        before = shrinks()
        pred = engine.predict("fill", np.array([4096, 4096], np.int64))   # 64 MiB
        assert pred.outputs["y"].shape == (4096, 4096)
        held = current_rss_bytes()
        del pred
        assert wait_for_shrinks(before + 1, WAIT_S), "the arena was never shrunk"
        assert held - current_rss_bytes() >= 48 * 2**20, (held, current_rss_bytes())
        engine.predict("fill", small)
        assert shrinks() == before + 1          # small outputs ask for nothing
    finally:
        engine.unload_model("fill")


def test_a_json_body_past_the_bound_is_refused_as_it_arrives_and_never_parsed(served):
    """The JSON part is counted chunk by chunk while the body is read: past the bound the
    body is dropped (not kept, not joined, not parsed) and the answer is the same 413; a
    binary part full of brackets is not counted."""
    served.routes.max_json_bytes = 4 * 2**20
    parsed = []
    real = served.routes.parser.parse
    served.routes.parser.parse = lambda *a: parsed.append(1) or real(*a)
    empties = b'{"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [' \
        + b",".join([b"[]"] * 300_000) + b"]}]}"
    status, raw, _ = post(served, "/v2/models/ident/infer", empties)
    answer = json.loads(raw)
    assert status == 413 and "would take" in answer["error"] and "binary" in answer["error"]
    assert parsed == []                     # refused by the reader: the route never ran
    # 2 MiB of '[' as binary data after a short JSON part: served
    blob = np.frombuffer(b"[" * (2 * 2**20), np.uint8).view(np.float32).reshape(1, -1)
    head = json.dumps({"inputs": [{"name": "x", "shape": list(blob.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": blob.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    status, raw, headers = post(served, "/v2/models/ident/infer", head + blob.tobytes(),
                                {"Inference-Header-Content-Length": str(len(head))})
    assert status == 200, raw[:300]
    assert parsed == [1]
    split = int({k.lower(): v for k, v in headers.items()}["inference-header-content-length"])
    assert raw[split:] == blob.tobytes()


def test_inflating_is_bounded_and_refuses_broken_streams():
    """The client's own inflating (core/remote/reading.py): gzip, zlib and raw deflate read
    back exactly; a stream cut short, one with bytes after its end, or one that is not
    compressed at all are refused in words; the cap and the JSON bound stop it part-way."""
    import gzip
    import zlib

    from core.remote.reading import BadEncoding, TooLarge, _inflate
    raw = b'{"a": [' + b",".join([b"1.5"] * 100_000) + b"]}"
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    for encoding, wire in (("gzip", gzip.compress(raw)), ("deflate", zlib.compress(raw)),
                           ("deflate", raw_deflate.compress(raw) + raw_deflate.flush())):
        assert _inflate(wire, encoding, 10**9, None, None) == raw
    assert _inflate(gzip.compress(b""), "gzip", 10, None, None) == b""
    for wire, words in ((gzip.compress(raw)[:200], "cut short"),
                        (gzip.compress(raw) + b"xx", "bytes after its end"),
                        (b"not gzip at all", "does not decompress")):
        with pytest.raises(BadEncoding, match=words):
            _inflate(wire, "gzip", 10**9, None, None)
    with pytest.raises(TooLarge, match="more than 1,000 bytes decompressed"):
        _inflate(gzip.compress(raw), "gzip", 1000, None, None)
    with pytest.raises(jsontext.JSONTooLarge) as err:
        _inflate(gzip.compress(raw), "gzip", 10**9, 400_000, None)
    assert err.value.values < 20_000                  # stopped after a piece or two
    # a binary answer's JSON part only is counted
    assert _inflate(gzip.compress(b"{}" + b"," * 200_000), "gzip", 10**9, 1000, 2) \
        .startswith(b"{}")


def test_an_answer_is_bounded_whatever_the_request_repeats_or_names(served):
    """Two ways an adversary passed the bounds: asking for one output 400,000 times (the
    JSON answer's bound counted each output once, and a 5.7 MiB request got a 268 MiB
    answer, the server peaking at 3.2 GB), and an input named with 4 MiB (quoted whole in
    the 400 and kept whole among the model's 50 recent errors: 14 such requests took 576 MiB
    and broke RemoteEngine.metrics()). A repeated output is refused before anything runs;
    a message quoting the caller is cut in the answer and in the recent errors."""
    from core.metrics.model import MAX_MESSAGE_CHARS
    from core.protocol import MAX_ERROR_CHARS
    engine = served.engine
    x = {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}
    for outputs in ([{"name": "y"}, {"name": "y"}], [{"name": "y"}] * 100_000):
        status, raw, _ = post(served, "/v2/models/ident/infer",
                              json.dumps({"inputs": [x], "outputs": outputs}).encode())
        assert status == 400 and b"asked for more than once" in raw, raw[:200]
    assert engine.metrics("ident").total_requests == 0     # refused before the queue
    status, raw, _ = post(served, "/v2/models/ident/infer",
                          json.dumps({"inputs": [x], "outputs": [{"name": "y"}]}).encode())
    assert status == 200 and json.loads(raw)["outputs"][0]["data"] == [1.0, 2.0]
    long = "A" * (4 * 2**20)
    status, raw, _ = post(served, "/v2/models/ident/infer", json.dumps(
        {"inputs": [x, dict(x, name=long)]}).encode())
    error = json.loads(raw)["error"]
    assert status == 400 and len(error) < MAX_ERROR_CHARS + 100, len(error)
    assert "unknown 'AAAA" in error and "x" in error    # it still says what was wrong
    kept = engine.metrics("ident").recent_errors
    assert kept and all(len(e["message"]) <= MAX_MESSAGE_CHARS + 60 for e in kept)
    assert "unknown 'AAAA" in kept[-1]["message"]


def test_only_short_bodies_are_parsed_on_the_event_loop(served, monkeypatch):
    """The event loop answers every connection: a JSON body parsed there holds all of them
    (~40 us a KiB here). An adversary's one client sending 244 KiB bodies, parsed on the
    loop, took another model's p50 from 6.5 to 29 ms; bodies past 32 KiB now parse on a
    thread (and past CHILD_MIN in the parser's child), short ones stay on the loop."""
    from core.serving import asgi
    seen = []
    begin = served.routes.begin

    def spy(method, path, req, *a):
        seen.append((len(req._body), threading.current_thread().name))
        return begin(method, path, req, *a)
    monkeypatch.setattr(served.routes, "begin", spy)
    for k in (16, 8_000, 24_000):   # ~0.1, 40 and 120 KiB of JSON
        row = [0.5] * k
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, k], "datatype": "FP32",
                                       "data": row}]}).encode()
        status, raw, _ = post(served, "/v2/models/ident/infer", body)
        assert status == 200, raw[:200]
    loop_thread = seen[0][1]
    assert seen[0][0] < asgi.INLINE_MAX <= 32 * 2**10
    from core.serving.bodyparse import CHILD_MIN   # a part parsed on the loop never waits
    assert asgi.INLINE_MAX < CHILD_MIN             # for the parser child's pipe
    for size, thread in seen[1:]:
        assert size > asgi.INLINE_MAX and thread != loop_thread, (size, thread)
    # A binary request is as quick to parse as its short JSON part (the tensor is a view):
    # 120 KiB of it stays on the loop, where a thread hop would cost more than the parse.
    k = 30_000
    head = json.dumps({"inputs": [{"name": "x", "shape": [1, k], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 4 * k}}]}).encode()
    status, raw, _ = post(served, "/v2/models/ident/infer",
                          head + np.full(k, 0.5, "<f4").tobytes(),
                          {"Inference-Header-Content-Length": str(len(head))})
    assert status == 200, raw[:200]
    assert seen[-1][0] > 3 * asgi.INLINE_MAX and seen[-1][1] == loop_thread, seen[-1]
    # Its answer likewise: 120 KiB of numbers as binary data are views (on the loop); as
    # JSON, ~1.2 MB of text to write (on a thread).
    from core.protocol import oip
    encode, encoded = oip.encode_infer_response_parts, []

    def spy_encode(*a, **kw):
        encoded.append(threading.current_thread().name)
        return encode(*a, **kw)
    monkeypatch.setattr(oip, "encode_infer_response_parts", spy_encode)
    for binary in (True, False):
        asked = dict(json.loads(head), parameters={"binary_data_output": binary})
        part = json.dumps(asked).encode()
        status, raw, _ = post(served, "/v2/models/ident/infer",
                              part + np.full(k, 0.5, "<f4").tobytes(),
                              {"Inference-Header-Content-Length": str(len(part))})
        assert status == 200, raw[:200]
    assert encoded[0] == loop_thread and encoded[1] != loop_thread, encoded


def test_what_an_answer_encodes_element_by_element_is_weighed_and_checked():
    """The server encodes an answer on its event loop unless it is long to encode: numbers
    asked as binary data are views (free at any size); JSON, strings and memory that is not
    one block are encoded element by element. The outputs a request names are checked once,
    the same way before queueing and at encoding; an id is a short string (it is echoed)."""
    from core.protocol import HTTPError, oip
    nums = np.zeros((64, 1024), np.float32)
    outputs = {"y": nums, "label": np.array(["a"] * 100, dtype=object), "t": nums.T}
    binary = {"parameters": {"binary_data_output": True}}
    assert oip.text_answer_bytes(dict(binary, outputs=[{"name": "y"}]), outputs) == 0
    assert oip.text_answer_bytes({"outputs": [{"name": "y"}]}, outputs) == nums.nbytes
    assert oip.text_answer_bytes(dict(binary, outputs=[{"name": "label"}]), outputs) == \
        outputs["label"].nbytes + 100                      # strings: one by one, by length
    assert oip.text_answer_bytes(dict(binary, outputs=[{"name": "t"}]), outputs) == \
        nums.nbytes                                        # not one block: copied first
    mixed = {"outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "t"}]}
    assert oip.text_answer_bytes(mixed, outputs) == nums.nbytes
    assert oip.text_answer_bytes({"outputs": [{"name": "nope"}]}, outputs) == 0  # refused later
    with pytest.raises(HTTPError, match=r"\['y'\] asked for more than once; ask for each of "
                                        r"model 'm'\'s outputs at most once"):
        oip.check_outputs_asked("m", ["y", "y"], None)     # outputs not declared (remote)
    oip.check_outputs_asked("m", ["whatever"], None)       # ... so not checked by name
    with pytest.raises(HTTPError, match=r"unknown output\(s\) \['None'\]"):
        oip.check_outputs_asked("m", [None], ["y"])        # a direct caller's non-string: 400
    x = {"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}
    for bad in (7, "i" * (oip.MAX_ID_CHARS + 1)):
        with pytest.raises(HTTPError, match="'id' must be a string of at most 1024"):
            oip.parse_infer_request(json.dumps({"id": bad, "inputs": [x]}).encode())
    assert oip.parse_infer_request(json.dumps({"id": "r1", "inputs": [x]}).encode())[1]["id"] \
        == "r1"


def test_a_json_part_longer_than_the_body_is_refused(served):
    head = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 16}}]}).encode()
    body = head + np.zeros(4, "<f4").tobytes()
    for length in (str(len(body) + 10), "0"):
        status, raw, _ = post(served, "/v2/models/ident/infer", body,
                              {"Inference-Header-Content-Length": length})
        assert status == 400, (length, raw[:200])


def _sigmoid_chain(n: int) -> bytes:
    from onnx import TensorProto, helper
    from tests.helpers import make_model
    nodes = [helper.make_node("Sigmoid", ["x" if i == 0 else f"t{i - 1}"],
                              [f"t{i}" if i < n - 1 else "y"]) for i in range(n)]
    return make_model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                      nodes).SerializeToString()


def test_the_loaded_models_cap_counts_what_a_session_holds_not_its_file():
    """A chain of 150,000 Sigmoid nodes is a 4 MB file whose session holds 440 MB: counted
    as twice its file, three of them took a server past its budget, and stayed in the
    cache after an unload (an adversary). A session is counted as what it holds."""
    from core import Engine, EngineConfig
    from core.errors import ResourceLimitError
    chain = _sigmoid_chain(20_000)                  # ~0.5 MB file, ~60 MB of session
    with Engine(EngineConfig(demo_models=False, max_models_bytes=40 * 2**20)) as e:
        small = e.load_model(_sigmoid_chain(1_000), name="small")
        assert small.held_bytes > 10 * small.size_bytes > 0   # (measured, not 2 x the file)
        with pytest.raises(ResourceLimitError, match=r"model 'chain' \(.* file, ~\d+\.\d MiB "
                                                     r"loaded\) would bring the loaded models"):
            e.load_model(chain, name="chain")
        assert e.model_names() == ["small"]
        # its session, which no model holds, is not kept past the cap either
        assert [c.sha256 for c in e.cache_entries()] == [small.sha256]


def test_folding_is_not_sized_where_onnx_runtime_does_not_fold():
    """A quantized weight's DequantizeLinear (left for kernels that take it quantized) was
    sized as 4 times the weight and a legitimate model refused; with graph optimization
    disabled nothing is folded at all (a reviewer)."""
    from onnx import TensorProto, helper, numpy_helper
    from core.config import SessionConfig
    from core.errors import ModelLoadError
    from core.models import build_memory_bomb
    from core.models.folding import largest_folded
    from core.models.loading import load_model_bytes
    from tests.helpers import make_model
    q = make_model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1024])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5120])],
                   [helper.make_node("DequantizeLinear", ["w", "scale", "zero"], ["wf"]),
                    helper.make_node("MatMul", ["x", "wf"], ["y"])],
                   initializers=[numpy_helper.from_array(np.ones((1024, 5120), np.int8), "w"),
                                 numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
                                 numpy_helper.from_array(np.array(0, np.int8), "zero")])
    assert largest_folded(q) is None                     # (was 20 MiB of floats for 5 MiB)
    bomb = build_memory_bomb(16000)
    with pytest.raises(ModelLoadError, match="would compute a constant of 976.6 MiB"):
        load_model_bytes(bomb, "b", budget_bytes=256 * 2**20)
    loaded = load_model_bytes(bomb, "b", budget_bytes=256 * 2**20,
                              options=SessionConfig(graph_optimization="disabled"))
    assert loaded.info.name == "b"


def test_a_run_past_the_whole_arena_is_a_413_that_says_what_to_do(tmp_path):
    """A run that asked ONNX Runtime's capped arena for more than it had was a 500 quoting
    the allocator (an adversary). Past the whole arena it is a 413 (fewer rows, or a larger
    budget); short of it, with the rest held by other runs, a 503 (retry)."""
    from onnx import TensorProto, helper

    from core.errors import ArenaBusyError, RunTooLargeError
    from core.protocol import status_of
    from core.serving import RemoteEngine, ServerProcess
    k = 2**20   # a row's output: 4 x 2**20 floats, 16 MiB
    graph = helper.make_graph(
        [helper.make_node("Tile", ["x", "reps"], ["y"])], "tile",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4 * k])],
        initializer=[helper.make_tensor("reps", TensorProto.INT64, [2], [1, k])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    srv = ServerProcess(args=["--no-probe", "--memory-budget-mib", "64"],
                        log_path=tmp_path / "server.log").start()
    try:
        remote = RemoteEngine(srv.url, token=srv.token, timeout_s=WAIT_S)
        remote.load_model(model.SerializeToString(), name="tile")
        assert remote.predict("tile", np.ones((1, 4), np.float32)).outputs["y"].shape == \
            (1, 4 * k)   # 16 MiB: within the 48 MiB arena
        with pytest.raises(RunTooLargeError, match=r"more than ONNX Runtime's whole shared "
                                                   r"arena \(48\.0 MiB") as err:
            remote.predict("tile", np.ones((4, 4), np.float32))   # 64 MiB
        assert "send fewer rows per request" in str(err.value) and status_of(err.value) == 413
        assert remote.predict("tile", np.ones((1, 4), np.float32)).outputs["y"].shape == \
            (1, 4 * k)   # and it serves on
        remote.close()
    finally:
        srv.stop()
    # the other case, from ONNX Runtime's words: the rest held by other runs
    from core.batching.runerrors import run_error
    busy = run_error("m", RuntimeError("BFCArena::AllocateRawInternal: Available memory of "
                                       "1048576 is smaller than requested bytes of 4194304"),
                     arena_bytes=48 * 2**20, rows=2)
    assert isinstance(busy, ArenaBusyError) and status_of(busy) == 503
    assert "had 1.0 MiB left and the run asked for 4.0 MiB" in str(busy)


def test_sizing_the_folding_stays_small_whatever_the_graph_declares():
    """The folding check was itself a memory bomb: ONNX's whole-graph shape inference with
    data propagation writes an entry per element of every 1-D value of known length, so a
    130-byte model declaring a 40-million-float weight took the check to 3 GB (an
    adversary). Sized node by node now: the peak stays flat and the answers hold."""
    code = """if True:
        import json
        import onnx
        from onnx import TensorProto as T, helper as h
        from core.models.folding import largest_folded

        def hwm():
            return [int(l.split()[1]) * 1024 for l in open("/proc/self/status")
                    if l.startswith("VmHWM")][0]

        def model(nodes, inits):
            g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N"])],
                             [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
            return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])

        w = onnx.TensorProto(name="w", data_type=T.FLOAT, dims=[40_000_000])  # declared only
        idx = h.make_tensor("idx", T.INT64, [1], [0])
        shape = h.make_tensor("s", T.INT64, [1], [10_000_000])
        models = [model([h.make_node("Gather", ["w", "idx"], ["g"]),
                         h.make_node("Add", ["x", "g"], ["y"])], [w, idx]),
                  model([h.make_node("Add", ["w", "w"], ["g"]),
                         h.make_node("Add", ["x", "g"], ["y"])], [w]),
                  model([h.make_node("ConstantOfShape", ["s"], ["c"]),
                         h.make_node("Add", ["c", "c"], ["g"]),
                         h.make_node("Add", ["x", "g"], ["y"])], [shape])]
        base = hwm()
        found = [largest_folded(m) for m in models]
        print(json.dumps({"found": found, "base": base, "peak": hwm()}))
    """
    out = _json_of_child(code)
    assert out["found"] == [[4, "the Gather making 'g'"], [160_000_000, "the Add making 'g'"],
                            [40_000_000, "the ConstantOfShape making 'c'"]], out
    assert out["peak"] < out["base"] + 64 * 2**20, out   # (was +2.8 GB for the first)


def test_folding_is_sized_through_the_shapes_computed_on_the_way():
    """The shapes a folded tensor takes may themselves be computed from constants (a
    ``Concat`` of two, the ``Shape`` of a large weight): sized through them."""
    import onnx
    from onnx import TensorProto as T, helper as h

    from core.models.folding import largest_folded

    def model(nodes, inits):
        g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, ["N"])],
                         [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
        return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])

    concat = model([h.make_node("Concat", ["a", "b"], ["s"], axis=0),
                    h.make_node("ConstantOfShape", ["s"], ["big"]),
                    h.make_node("ReduceSum", ["big"], ["r"], keepdims=0),
                    h.make_node("Add", ["x", "r"], ["y"])],
                   [h.make_tensor("a", T.INT64, [1], [16000]),
                    h.make_tensor("b", T.INT64, [1], [16000])])
    assert largest_folded(concat) == (1_024_000_000, "the ConstantOfShape making 'big'")
    w = onnx.TensorProto(name="w", data_type=T.FLOAT, dims=[3000, 2000])
    shaped = model([h.make_node("Shape", ["w"], ["s"]),
                    h.make_node("Slice", ["s", "zero", "one"], ["first"]),
                    h.make_node("Concat", ["first", "s"], ["s3"], axis=0),
                    h.make_node("Expand", ["one_f", "s3"], ["big"], name="grow"),
                    h.make_node("ReduceSum", ["big"], ["r"], keepdims=0),
                    h.make_node("Add", ["x", "r"], ["y"])],
                   [w, h.make_tensor("zero", T.INT64, [1], [0]),
                    h.make_tensor("one", T.INT64, [1], [1]),
                    h.make_tensor("one_f", T.FLOAT, [1], [1.0])])
    assert largest_folded(shaped) == (3000 * 3000 * 2000 * 4, "Expand node 'grow'")
    # ONNX Runtime folds the Shape of an input whose dims are fixed: sized too (a reviewer:
    # x [6000, 6000] -> Shape -> ConstantOfShape took a session to +283 MiB unsized)
    fixed = h.make_graph([h.make_node("Shape", ["x"], ["s"]),
                          h.make_node("ConstantOfShape", ["s"], ["big"]),
                          h.make_node("ReduceSum", ["big"], ["r"], keepdims=0),
                          h.make_node("Add", ["x", "r"], ["y"])], "g",
                         [h.make_tensor_value_info("x", T.FLOAT, [6000, 6000])],
                         [h.make_tensor_value_info("y", T.FLOAT, None)])
    assert largest_folded(h.make_model(fixed, opset_imports=[h.make_opsetid("", 17)])) == (
        6000 * 6000 * 4, "the ConstantOfShape making 'big'")


def test_the_heap_is_trimmed_once_grown_and_idle_never_beside_large_bodies():
    """What a burst freed is given back when the process grew past the threshold since the
    last trim and no large body is held; not while one is, not for small growth."""
    from core.serving.heap import HeapTrimmer
    mib = 2**20
    rss, trims, busy = [200 * mib], [], [False]

    def trim(pad: int) -> int:
        trims.append(pad)
        rss[0] = 210 * mib
        return 1
    t = HeapTrimmer(idle=lambda: not busy[0], resident=lambda: rss[0], trim=trim,
                    grown_bytes=64 * mib)
    rss[0] = 250 * mib
    assert not t.check() and trims == []                 # grown 50 MiB: left
    rss[0] = 600 * mib
    busy[0] = True
    assert not t.check() and trims == []                 # a large body held: left
    busy[0] = False
    assert t.check() and trims == [0] and t.trims == 1
    assert t.given_back == 390 * mib
    rss[0] = 260 * mib
    assert not t.check()                                 # 50 MiB over the new floor
    rss[0] = 100 * mib
    assert not t.check()
    rss[0] = 170 * mib                                   # the floor followed it down
    assert t.check() and t.trims == 2


def test_an_engine_server_gives_back_what_a_flood_of_large_bodies_left():
    """After floods of 32 MiB requests the engine server rested ~380 MiB above where it
    started, no Python object holding it (glibc's free lists; an adversary): it trims its
    heap once no large body is held, and comes back near where it was."""
    import time
    from pathlib import Path

    from core.serving import RemoteEngine, ServerProcess
    from tests.helpers import identity_model
    srv = ServerProcess(args=["--no-probe", "--no-demo-models", "--memory-budget-mib",
                              "1024"]).start()

    def rss() -> int:
        status = Path(f"/proc/{srv.pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1]) * 1024
    try:
        back = RemoteEngine.connect(srv.url, token=srv.token)
        back.load_model(identity_model(shape=["N", "K"]), name="ident")
        width = 8 * 2**20
        x = np.ones((1, width), np.float32).tobytes()
        head = json.dumps({"inputs": [{"name": "x", "shape": [1, width], "datatype": "FP32",
                                       "parameters": {"binary_data_size": len(x)}}],
                           "outputs": [{"name": "y", "parameters": {"binary_data": True}}]
                           }).encode()
        back.predict("ident", np.ones((1, 4), np.float32))
        before = rss()
        codes: list[int] = []
        n = 2**20 + 2**19
        text = ('{"inputs":[{"name":"x","shape":[1,%d],"datatype":"FP32","data":[%s]}],'
                '"outputs":[{"name":"y","parameters":{"binary_data":true}}]}'
                % (n, ",".join(["0.125"] * n))).encode()
        bodies = {"binary": (head + x, {"Inference-Header-Content-Length": str(len(head)),
                                        "Content-Type": "application/octet-stream"}),
                  "json": (text, {"Content-Type": "application/json"})}

        def flood(kind: str, each: int) -> None:
            body, headers = bodies[kind]
            for _ in range(each):
                conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
                try:
                    conn.request("POST", "/v2/models/ident/infer", body=body, headers={
                        **headers, "Authorization": f"Bearer {srv.token}"})
                    resp = conn.getresponse()
                    resp.read()
                    codes.append(resp.status)
                except OSError:
                    codes.append(0)
                finally:
                    conn.close()
        # (the mix the adversary sent: 32 MiB binary bodies, then large JSON ones)
        for kind, clients, each in (("binary", 12, 6), ("json", 6, 4)):
            threads = [threading.Thread(target=flood, args=(kind, each))
                       for _ in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
        assert codes.count(200) >= 8, codes   # (others: 503s, the bodies held at their bound)
        deadline = time.monotonic() + WAIT_S
        while rss() > before + 128 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert rss() <= before + 128 * 2**20, (before / 2**20, rss() / 2**20)
        assert back.predict("ident", np.ones((1, 4), np.float32)).outputs["y"].shape == (1, 4)
        back.close()
    finally:
        srv.stop()


_HIDDEN_FOLDS = """if True:
    import json
    import onnx
    from onnx import TensorProto as T, helper as h
    N = 16000
    X = h.make_tensor_value_info("x", T.FLOAT, ["N", 4])
    Y = h.make_tensor_value_info("y", T.FLOAT, ["N", 4])
    cv = h.make_tensor("v", T.FLOAT, [1], [1.0])
    shape = lambda: h.make_tensor("shape", T.INT64, [2], [N, N])
    tail = [h.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
            h.make_node("Add", ["x", "s"], ["y"])]

    def model(nodes, inits, functions=(), sparse=(), opsets=None):
        g = h.make_graph(nodes, "m", [X], [Y], initializer=inits, sparse_initializer=list(sparse))
        m = h.make_model(g, opset_imports=opsets or [h.make_opsetid("", 17)],
                         functions=list(functions))
        m.ir_version = 8
        return m.SerializeToString()
    then_g = h.make_graph([h.make_node("ConstantOfShape", ["shape"], ["big"], value=cv),
                           h.make_node("ReduceSum", ["big"], ["st"], keepdims=0)], "then", [],
                          [h.make_tensor_value_info("st", T.FLOAT, [])])
    else_g = h.make_graph([h.make_node("Constant", [], ["se"],
                                       value=h.make_tensor("z", T.FLOAT, [], [0.0]))],
                          "else", [], [h.make_tensor_value_info("se", T.FLOAT, [])])
    fn = h.make_function("local", "Bomb", ["sh"], ["s"],
                         [h.make_node("ConstantOfShape", ["sh"], ["big"], value=cv),
                          h.make_node("ReduceSum", ["big"], ["s"], keepdims=0)],
                         [h.make_opsetid("", 17)])
    models = {
        "if": model([h.make_node("If", ["c"], ["s"], then_branch=then_g, else_branch=else_g),
                     h.make_node("Add", ["x", "s"], ["y"])],
                    [shape(), h.make_tensor("c", T.BOOL, [], [False])]),
        "function": model([h.make_node("Bomb", ["shape"], ["s"], domain="local"),
                           h.make_node("Add", ["x", "s"], ["y"])], [shape()], functions=[fn],
                          opsets=[h.make_opsetid("", 17), h.make_opsetid("local", 1)]),
        "order": model([h.make_node("ConstantOfShape", ["sh"], ["big"], value=cv),
                        h.make_node("Identity", ["shape"], ["sh"])] + tail, [shape()]),
        "pad": model([h.make_node("Pad", ["one", "pads", "cval"], ["sh"]),
                      h.make_node("ConstantOfShape", ["sh"], ["big"], value=cv)] + tail,
                     [h.make_tensor("one", T.INT64, [1], [N]),
                      h.make_tensor("pads", T.INT64, [2], [1, 0]),
                      h.make_tensor("cval", T.INT64, [], [N])]),
        "ai.onnx": model([h.make_node("ConstantOfShape", ["shape"], ["big"], value=cv)] + tail,
                         [shape()], opsets=[h.make_opsetid("ai.onnx", 17)]),
        "if-over-x": model([h.make_node("ReduceSum", ["x"], ["r"], keepdims=0),
                            h.make_node("Greater", ["r", "zero"], ["c"]),
                            h.make_node("If", ["c"], ["s"], then_branch=h.make_graph(
                                [h.make_node("Identity", ["r"], ["st"])], "t", [],
                                [h.make_tensor_value_info("st", T.FLOAT, [])]),
                                else_branch=else_g),
                            h.make_node("Add", ["x", "s"], ["y"])],
                           [h.make_tensor("zero", T.FLOAT, [], [0.0])]),
        "sparse-in-if": model([h.make_node("ReduceSum", ["x"], ["r"], keepdims=0),
                               h.make_node("Greater", ["r", "zero"], ["c"]),
                               h.make_node("If", ["c"], ["s"], then_branch=h.make_graph(
                                   [h.make_node("Constant", [], ["sp"], sparse_value=(
                                       h.make_sparse_tensor(
                                           h.make_tensor("sv", T.FLOAT, [1], [1.0]),
                                           h.make_tensor("si", T.INT64, [1], [0]), [N, N]))),
                                    h.make_node("ReduceSum", ["sp"], ["st"], keepdims=0)],
                                   "t", [], [h.make_tensor_value_info("st", T.FLOAT, [])]),
                                   else_branch=else_g),
                               h.make_node("Add", ["x", "s"], ["y"])],
                              [h.make_tensor("zero", T.FLOAT, [], [0.0])]),
        "sparse": model(tail[1:], [], sparse=[h.make_sparse_tensor(
            h.make_tensor("s", T.FLOAT, [1], [1.0]), h.make_tensor("i", T.INT64, [1], [0]),
            [N, N])]),
    }

    def hwm():
        return [int(l.split()[1]) * 1024 for l in open("/proc/self/status")
                if l.startswith("VmHWM")][0]
    from core import Engine, EngineConfig
    e = Engine(EngineConfig(demo_models=False, probe_models=False,
                            memory_budget_bytes=256 * 2**20))
    base, out = hwm(), {}
    for name, data in models.items():
        try:
            info = e.load_model(data, name=name.replace(".", "-"))
            out[name] = [w for w in info.warnings if "constant folding" in w]
        except Exception as err:
            out[name] = f"{type(err).__name__}: {err}"
    e.close()
    print(json.dumps({"out": out, "base": base, "peak": hwm()}))
"""


def test_folding_that_cannot_be_sized_is_left_off_and_sparse_giants_refused():
    """The folding check sized the main graph's constant nodes in order: ONNX Runtime
    folded 1 GB past it inside an ``If`` branch (outside the trial run's cap, in the
    server), a function of the model's own, nodes out of order, a shape made by a ``Pad``;
    an ``ai.onnx`` opset was not read; a sparse initializer was made dense at 1 GB (an
    adversary: 2.2-4.1 GB peaks). Where the sizes cannot be told, folding is left off (said
    in the model's warnings); what can be sized past the budget is refused."""
    out = _json_of_child(_HIDDEN_FOLDS)
    words = {"if": "a subgraph of an If node has a part made of constants only",
             "function": "the model defines functions of its own",
             "order": "its nodes are not in order (ConstantOfShape uses a later node's output)",
             "pad": "the size of what the ConstantOfShape node 'big' makes cannot be told"}
    for name, why in words.items():
        assert out["out"][name] == [f"constant folding is left off: {why}, so what ONNX "
                                    "Runtime would fold cannot be sized before it does; it is "
                                    "computed as the model runs instead, under the memory "
                                    "budget (graph_optimization='disabled' says so outright; "
                                    "an export with its constants folded, e.g. by onnxsim, "
                                    "gets the folding back)"], (name, out["out"][name])
    assert out["out"]["ai.onnx"].startswith("ModelLoadError: opening this model would compute "
                                            "a constant of 976.6 MiB (the ConstantOfShape")
    assert out["out"]["sparse"].startswith("ModelLoadError: opening this model would make "
                                           "the sparse initializer 's' dense, 976.6 MiB: ONNX "
                                           "Runtime does so as it loads a model")
    # a sparse Constant inside a branch is made dense too (only the main graph's were sized)
    assert out["out"]["sparse-in-if"].startswith(
        "ModelLoadError: opening this model would make the sparse Constant making 'sp' "
        "dense, 976.6 MiB"), out["out"]["sparse-in-if"]
    # a subgraph without a constant part keeps the folding (it was left off for any If)
    assert out["out"]["if-over-x"] == []
    assert out["peak"] < out["base"] + 256 * 2**20, out   # (was 2.2 GB and more)


def test_sizing_stops_past_twenty_thousand_constant_nodes():
    """500,000 small constant nodes (11 MB) took the check 41 s and 2.9 GB (an adversary):
    past 20,000 nodes computed from constants it stops, and folding is left off."""
    from onnx import TensorProto as T, helper as h

    from core.models.folding import size_folding
    n = 20_001
    nodes = [h.make_node("Expand", ["v", "shape"], [f"e{i}"]) for i in range(n)]
    g = h.make_graph(nodes + [h.make_node("Identity", ["x"], ["y"])], "many",
                     [h.make_tensor_value_info("x", T.FLOAT, ["N"])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N"])],
                     [h.make_tensor("v", T.DOUBLE, [1], [1.0]),
                      h.make_tensor("shape", T.INT64, [1], [512])])
    found = size_folding(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))
    assert found.unknown == "over 20,000 constant nodes"
    assert found.largest == (4096, "the Expand making 'e0'")


def test_a_memory_measurement_job_stops_when_cancelled_and_lets_uploads_in_between(
        monkeypatch):
    """Cancel did nothing: the job ran all nine sizes in one child (up to 60 s each) and
    held the one trial-run slot from every upload all along (an adversary). The job runs
    a child a size, lets the slot go between them, and stops at the next size."""
    import pandas as pd

    from core import Engine, EngineConfig, build_demo_model
    from core.engine import loading
    asked: list = []
    engine = Engine(EngineConfig(demo_models=False))
    engine.load_model(build_demo_model("tiny"), name="tiny")
    job_ref: dict = {}
    known = threading.Event()

    def probe(data, batch_sizes, budget, time_limit_s, threads=None, graph_optimization="all"):
        asked.append(list(batch_sizes))
        if len(asked) == 2:   # cancelled while the second size is measured
            assert known.wait(WAIT_S)
            engine.cancel_job(job_ref["id"])
        return pd.DataFrame({"batch_size": list(batch_sizes), "peak_mib": 1.0,
                             "run_ms": 1.0, "error": None})

    monkeypatch.setattr(loading, "probe_model", probe)
    try:
        job = engine.start_job("measure_memory", "tiny", batch_sizes=[1, 2, 4, 8])
        job_ref["id"] = job.job_id
        known.set()
        done = engine.wait_job(job.job_id, timeout_s=WAIT_S)
        assert done.state == "cancelled", done
        assert asked[:2] == [[1], [2]] and [1, 2] == list(
            engine.memory_profile("tiny")["batch_size"])   # the sizes measured are kept
        assert len(asked) == 2
    finally:
        engine.close()


def test_a_memory_measurement_stopped_before_its_first_size_starts_no_child(monkeypatch):
    """Stopped before its first size, the measurement still started a child process (a
    trial-run slot's turn) only to get an empty frame with the probe's columns (a
    reviewer). Now none is started; the frame has the same columns."""
    from core import Engine, EngineConfig, build_demo_model
    from core.engine import loading
    from core.models.probe import PROBE_COLUMNS
    asked: list = []
    monkeypatch.setattr(loading, "probe_model", lambda *a, **kw: asked.append(a))
    engine = Engine(EngineConfig(demo_models=False))
    try:
        stop = threading.Event()
        stop.set()
        out = engine._loader.probe_each(build_demo_model("tiny"), [1, 2], None, stop)
        assert asked == [] and out.empty and list(out.columns) == PROBE_COLUMNS
    finally:
        engine.close()
