"""Malformed values on the wire are said as such (found by an adversary): a Triton queue
policy of the wrong shape is a 400 that names the field, a control call's arguments that
are not the wire's encoding are a 400 that names the tag and its form (never a 500, a
RecursionError or a KeyError's 404), and a RemoteEngine talking to a server whose JSON is
not Batchlab's raises EngineUnavailableError naming the method, never a raw KeyError,
TypeError, ValueError or RecursionError."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from core import BatchConfig, ConfigError, EngineUnavailableError
from core.protocol import WireError, triton
from core.protocol.wire import MAX_DEPTH
from core.serving import WIRE, RemoteEngine
from tests.helpers import WAIT_S, identity_server


@pytest.fixture(scope="module")
def served():
    with identity_server() as (engine, server):
        yield engine, server


def _post(server, path: str, body: object) -> tuple[int, dict]:
    """POST ``body`` (JSON text as it is, else the value as JSON); the status and answer."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_S)
    try:
        conn.request("POST", path, body=body.encode() if isinstance(body, str)
                     else json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


# -- 1. a Triton queue policy over the repository extension ------------------------------------
_POLICY = "config.dynamic_batching.default_queue_policy"


@pytest.mark.parametrize("policy, words", [
    ('"max_queue_size"', f"{_POLICY} must be an object, e.g. "),
    ("[]", f"{_POLICY} must be an object"),
    ('{"max_queue_size": null}',
     f"{_POLICY}.max_queue_size must be an integer >= 0 (requests; 0: no limit), got NoneType"),
    ('{"max_queue_size": "abc"}', f"{_POLICY}.max_queue_size must be an integer >= 0"),
    ('{"max_queue_size": 1e400}', "max_queue_size must be an integer >= 0 (requests; 0: no "
                                  "limit), got float inf"),
    ('{"max_queue_size": 2.5}', "max_queue_size must be an integer >= 0"),
    ('{"max_queue_size": -1}', "max_queue_size must be an integer >= 0"),
    ('{"max_queue_size": true}', "max_queue_size must be an integer >= 0"),
    ('{"default_timeout_microseconds": [1]}',
     f"{_POLICY}.default_timeout_microseconds must be a number >= 0 (microseconds; 0: no "
     "timeout), got list [1]"),
    ('{"default_timeout_microseconds": 1e400}', "default_timeout_microseconds must be a number"),
    ('{"default_timeout_microseconds": "5000"}', "default_timeout_microseconds must be a number"),
    ('{"default_timeout_microseconds": -5}', "default_timeout_microseconds must be a number"),
    ('{"default_timeout_microseconds": ' + "9" * 400 + "}",
     "default_timeout_microseconds must be a number"),
])
def test_a_malformed_queue_policy_is_a_400_naming_the_field(served, policy, words):
    engine, server = served
    before = engine.batch_config("ident")
    config = '{"dynamic_batching": {"default_queue_policy": %s}}' % policy
    status, body = _post(server, "/v2/repository/models/ident/load",
                         {"parameters": {"config": config}})
    assert status == 400, body
    assert words in body["error"] and body["type"] == "ConfigError", body
    assert engine.batch_config("ident") == before       # refused: nothing changed


def test_the_other_triton_fields_are_checked_the_same_way(served):
    _, server = served
    for config, words in [
            ({"dynamic_batching": {"max_queue_delay_microseconds": 10**400}},
             "max_queue_delay_microseconds must be a number >= 0"),
            ({"max_batch_size": "x" * 1000}, "max_batch_size must be an integer >= 0, got 'xxx"),
            ({"instance_group": [{"count": "2"}]}, "count must be an integer >= 1, got '2'")]:
        status, body = _post(server, "/v2/repository/models/ident/load",
                             {"parameters": {"config": json.dumps(config)}})
        assert status == 400 and words in body["error"], body
        assert len(body["error"]) < 300, body               # a value is quoted, not echoed
    # nested past what JSON's reader recurses: a 400, not a 500 "internal error"
    status, body = _post(server, "/v2/repository/models/ident/load",
                         {"parameters": {"config": "[" * 100_000}})
    assert status == 400 and "parameters.config is not valid JSON: it nests JSON too deeply" \
        in body["error"], body
    # read leniently (a server's configuration): a delay no float holds is unknown
    assert triton.read_batching({"max_batch_size": 4, "dynamic_batching": {
        "max_queue_delay_microseconds": 10**400}}) == (4, None)


def test_a_valid_queue_policy_still_applies_and_unknown_policy_fields_are_named(served):
    engine, server = served
    config = {"max_batch_size": 8, "dynamic_batching": {
        "max_queue_delay_microseconds": 1000, "default_queue_policy": {
            "max_queue_size": 77, "default_timeout_microseconds": 5_000_000,
            "timeout_action": "REJECT"}}}
    status, body = _post(server, "/v2/repository/models/ident/load",
                         {"parameters": {"config": json.dumps(config)}})
    assert status == 200, body
    assert body["ignored"] == ["dynamic_batching.default_queue_policy.timeout_action"]
    cfg = engine.batch_config("ident")
    assert (cfg.max_batch_size, cfg.max_wait_ms, cfg.max_queue, cfg.timeout_ms) == \
        (8, 1.0, 77, 5000.0)
    # 0 is Triton's "no limit": the queue bound is kept as it is
    changes, _ = triton.batch_changes({"dynamic_batching": {"default_queue_policy": {
        "max_queue_size": 0, "default_timeout_microseconds": 0}}})
    assert changes == {"max_wait_ms": 0.0, "timeout_ms": None}
    assert triton.batch_changes({"dynamic_batching": {"default_queue_policy": None}})[0] == \
        {"max_wait_ms": 0.0}


# -- 2. control arguments that are not the wire's encoding ------------------------------------
class _Text(str):
    """An argument as JSON text (too deep for json.dumps in a test's stack)."""


@pytest.mark.parametrize("arg, words", [
    (_Text("[" * 500 + "]" * 500), f"nested deeper than {MAX_DEPTH} levels"),
    (_Text("[" * 898 + "]" * 898), f"nested deeper than {MAX_DEPTH} levels"),  # 900 in all
    (_Text('{"a": [{"b": ' + "[" * 300 + "]" * 300 + "}]}"),
     f"nested deeper than {MAX_DEPTH} levels"),
    ({"__t": "tuple"}, "a 'tuple' value must be {\"__t\": \"tuple\", \"v\": [values]} "
                       "(it has no 'v')"),
    ({"__t": "dict", "v": [[{"a": 1}, 2]]}, "a 'dict' value must be"),
    ({"__t": "dict", "v": [[1, 2, 3]]}, "a 'dict' value must be {\"__t\": \"dict\", \"v\": "
                                        "[[key, value], ...]}"),
    ({"__t": "dtype", "v": "V99999999999999"}, "a 'dtype' value must be"),
    ({"__t": "nd", "dtype": "<f4", "shape": [3], "v": "AAAA"}, "a 'nd' value must be"),
    ({"__t": "ndobj", "shape": [3], "v": [1, 2]}, "a 'ndobj' value must be"),
    ({"__t": "df", "cols": 5}, "a 'df' value must be"),
    # (ten values of a 200 MB string dtype: 2 GB made in the server before any check)
    ({"__t": "df", "cols": [{"name": "a", "dtype": "S200000000", "v": [None] * 10}],
      "index": None}, "a DataFrame column's dtype must be a number, true/false or text (at "
                      "most 16 bytes a value), got 'S200000000'"),
    ({"__t": "df", "cols": [{"name": "a", "dtype": "(100000000000000000000000,)f8",
                             "v": [None]}], "index": None},
     "a DataFrame column's dtype '(100000000000000000000000,)f8' is not one numpy makes"),
    ({"__t": "float", "v": [1]}, "a 'float' value must be"),
    ({"__t": "bytes", "v": 7}, "a 'bytes' value must be"),
    ({"__t": "dc", "cls": "BatchConfig", "v": [1]}, "a 'dc' value must be"),
    ({"__t": "dc", "cls": ["BatchConfig"], "v": {}}, "its cls is list, not a name"),
    ({"__t": ["tuple"]}, "unknown wire tag ['tuple']"),
])
def test_arguments_that_are_not_wire_encoding_are_a_400(served, arg, words):
    _, server = served
    text = arg if isinstance(arg, _Text) else json.dumps(arg)
    status, body = _post(server, "/v1/engine/model_names", '{"args": [%s]}' % text)
    assert status == 400, body
    assert body["type"] == "ConfigError" and words in body["error"], body
    assert body["error"].startswith("model_names: 'args': "), body
    status, body = _post(server, "/v1/engine/model_names", '{"kwargs": {"x": %s}}' % text)
    assert status == 400 and body["error"].startswith("model_names: 'kwargs': "), body
    assert _post(server, "/v1/engine/model_names", {}) == (200, {"result": ["ident"]})


def test_a_type_an_argument_may_not_be_is_refused_inside_a_frame_too(served):
    _, server = served
    frame = WIRE.encode(pd.DataFrame({"c": pd.Series([BatchConfig()], dtype=object)}))
    frame["cols"][0]["v"][0]["cls"] = "JobStatus"
    status, body = _post(server, "/v1/engine/model_names", {"args": [frame]})
    assert status == 400 and "an argument cannot be a JobStatus" in body["error"], body


def test_decode_raises_one_error_type_and_bounds_depth():
    assert WIRE.decode(_nested(MAX_DEPTH)) == _nested(MAX_DEPTH)
    with pytest.raises(WireError, match=f"nested deeper than {MAX_DEPTH} levels"):
        WIRE.decode(_nested(MAX_DEPTH + 1))
    deep: object = 1   # tagged values count a level each, and nest as deep as lists
    for _ in range(MAX_DEPTH):
        deep = {"__t": "tuple", "v": [deep]}
    value = WIRE.decode(deep)
    for _ in range(MAX_DEPTH):
        value = value[0]
    assert value == 1
    with pytest.raises(WireError, match="nested deeper"):
        WIRE.decode({"__t": "tuple", "v": [deep]})
    bad = WIRE.encode(BatchConfig())
    bad["v"]["max_batch_size"] = 0     # the class's own check, said as the wire's error
    with pytest.raises(WireError, match="cannot build BatchConfig: max_batch_size must be"):
        WIRE.decode(bad)
    for payload in ({"__t": "tuple", "v": 5}, {"__t": "nd", "v": "", "dtype": {}, "shape": []},
                    {"__t": "df", "cols": [{"name": "a", "dtype": 5, "v": []}]},
                    {"__t": "df", "cols": [{"name": "a", "dtype": "int64", "v": [1, 2]}],
                     "index": [1]},
                    {"__t": "nd", "v": "", "dtype": "<f4", "shape": [2**70]}):
        with pytest.raises(WireError, match="not valid wire encoding"):
            WIRE.decode(payload)
    # what the wire makes still comes back as it was
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    back = WIRE.decode(json.loads(json.dumps(WIRE.encode({"x": (1, arr), 2: b"\x00"}))))
    assert back[2] == b"\x00" and back["x"][0] == 1 and (back["x"][1] == arr).all()


# -- 3. a RemoteEngine whose server's JSON is not Batchlab's -----------------------------------
class _Fixed(BaseHTTPRequestHandler):
    """Answers each path with fixed JSON (``server.answers``), HTTP 200."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        raw = self.server.answers.get(self.path, b'{"result": null}')
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_batchlab():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Fixed)
    srv.daemon_threads = True
    srv.answers = {}
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_remote_engine_says_an_answer_is_not_batchlabs(not_batchlab):
    srv, url = not_batchlab
    srv.answers.update({
        "/v1/engine/model_names": json.dumps({"result": _nested(500)}).encode(),
        "/v1/engine/models": b'{"nothing": 1}',
        "/v1/engine/model_info": json.dumps({"result": {
            "__t": "nd", "dtype": "<f4", "shape": [3], "v": "AAAA"}}).encode(),
        "/v1/engine/batch_config": json.dumps({"result": {
            "__t": "dict", "v": [[{"a": 1}, 2]]}}).encode(),
        "/v1/engine/metrics": b"[1, 2, 3]",
        "/v1/engine/status": b'"just text"',
        "/v1/store/get": b'{"nothing": 1}',
        "/v1/info": b"[1]",
        "/v1/engine/queue_depth": b'{"result": 3}'})
    remote = RemoteEngine(url, timeout_s=WAIT_S)
    try:
        assert remote.queue_depth() == 3          # a Batchlab-shaped answer reads as before
        for call, method, why in [
                (remote.model_names, "engine.model_names", "nested deeper than"),
                (remote.models, "engine.models", "(no 'result')"),
                (lambda: remote.model_info("m"), "engine.model_info", "a 'nd' value"),
                (lambda: remote.batch_config("m"), "engine.batch_config", "a 'dict' value"),
                (lambda: remote.metrics("m"), "engine.metrics", "list indices"),
                (remote.status, "engine.status", "string indices"),
                (lambda: remote.store.get(1), "store.get", "(no 'result')")]:
            with pytest.raises(EngineUnavailableError) as info:
                call()
            text = str(info.value)
            assert not isinstance(info.value, KeyError)   # pages read KeyError as "no run"
            assert f"({method}) answered with JSON that is not a Batchlab answer" in text, text
            assert why in text and text.endswith("is this a Batchlab engine server?"), text
        with pytest.raises(EngineUnavailableError, match=r"/v1/info \(server_info\) answered "
                                                         "with JSON that is not a Batchlab"):
            remote.server_info()
        with pytest.raises(EngineUnavailableError, match="is this a Batchlab engine server"):
            RemoteEngine.connect(url, timeout_s=0.3).close()
    finally:
        remote.close()


def test_a_real_servers_bad_argument_is_still_the_callers_config_error(served):
    _, server = served
    remote = RemoteEngine(server.url, timeout_s=WAIT_S)
    try:
        with pytest.raises(ConfigError, match=r"'args': not valid wire encoding: a 'tuple'"):
            remote._t.request("POST", "/v1/engine/model_names", {"args": [{"__t": "tuple"}]})
        assert remote.model_names() == ["ident"]
    finally:
        remote.close()


def test_configs_and_numpy_numbers_are_taken_or_refused_the_same_both_ways(served):
    """An adversary's parity table: numpy numbers were refused by an Engine (configure's
    np.int64(8), a priority np.int64(1); create_ab's np.int64 seed raised a bare TypeError)
    and taken by a RemoteEngine, whose wire made them Python's; a dict for batch= was an
    AttributeError here and an HTTP 500 there. Both now take the numbers (stored as
    Python's) and refuse the dict in words."""
    from core.models import build_demo_model
    engine, server = served
    remote = RemoteEngine.connect(server.url, timeout_s=WAIT_S)
    before = engine.batch_config("ident")
    try:
        for side in (engine, remote):
            side.configure("ident", max_batch_size=np.int64(8), max_wait_ms=np.float32(2.5))
            cfg = side.batch_config("ident")
            assert (cfg.max_batch_size, cfg.max_wait_ms) == (8, 2.5)
            assert type(cfg.max_batch_size) is int and type(cfg.max_wait_ms) is float
            x = np.zeros((1, 3), np.float32)
            assert side.predict("ident", x, priority=np.int64(1)).rows == 1
            with pytest.raises(ConfigError, match=r"batch must be a BatchConfig .* got dict"):
                side.load_model(build_demo_model("tiny"), name="t",
                                batch={"max_batch_size": 4})
            assert "t" not in side.model_names()
        from core.ab import ABExperiment
        exp = ABExperiment("e", a="a", b="b", seed=np.int64(3))   # (what create_ab makes)
        assert exp.seed == 3 and type(exp.seed) is int
        with pytest.raises(ConfigError, match="seed must be a whole number"):
            ABExperiment("e", a="a", b="b", seed="three")
        # the same for warm-up, the stability rule and agents (the reviewer: not yet there)
        report = engine.warmup("ident", iterations=np.int64(2), batch_sizes=[np.int64(1)])
        assert report.frame["iterations"].tolist() == [2]
        from core.lab.stability import StabilityRule
        from core.lab.agents import agents_for
        rule = StabilityRule(window_s=np.float64(0.5), windows=np.int64(2),
                             max_windows=np.int32(4))
        assert rule == StabilityRule(window_s=0.5, windows=2, max_windows=4)
        assert type(rule.windows) is int
        with agents_for(np.int64(0), None) as team:
            assert team is None      # no agents (a numpy 0 was taken for a team of them)
    finally:
        engine.configure("ident", max_batch_size=before.max_batch_size,
                         max_wait_ms=before.max_wait_ms)
        remote.close()


def test_a_connect_that_gives_up_leaves_no_http_session_open():
    """RemoteEngine.connect gave up on an unreachable server and left its aiohttp session
    open: "Unclosed client session" once per failed connect (a dashboard retrying would
    pile them up). In a child process, so the warning at exit is seen."""
    import subprocess
    import sys
    from pathlib import Path

    import socket
    with socket.socket() as s:     # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import gc, warnings; warnings.simplefilter('always')\n"
            "from core.serving import RemoteEngine\n"
            "from core.errors import EngineUnavailableError\n"
            f"try:\n    RemoteEngine.connect('http://127.0.0.1:{port}', timeout_s=0.3)\n"
            "except EngineUnavailableError:\n    print('refused')\n"
            "gc.collect()\n")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.strip() == "refused", (done.stdout, done.stderr)
    assert "Unclosed client session" not in done.stderr, done.stderr


def test_a_wait_that_is_not_one_is_refused_in_words_both_ways(served):
    """An API user: a RemoteEngine used its timeouts before the server saw them, so "5"
    was a TypeError, inf an OverflowError and nan a timeout blamed on the server; an
    Engine's wait_job/wait_traffic raised a bare TypeError for "1". Now each is a
    ConfigError, in-process and over HTTP, and a numpy number is still a timeout."""
    engine, server = served
    remote = RemoteEngine.connect(server.url, timeout_s=WAIT_S)
    x = np.zeros((1, 3), np.float32)
    try:
        for side in (engine, remote):
            for kw in ({"timeout_ms": "5"}, {"timeout_ms": float("inf")},
                       {"timeout": float("nan")}):
                with pytest.raises(ConfigError, match="timeout"):
                    side.predict("ident", x, **kw)
            assert side.predict("ident", x, timeout_ms=np.float64(5000)).rows == 1
            with pytest.raises(ConfigError, match="timeout_s must be"):
                side.wait_job(1, timeout_s="1")
            with pytest.raises(ConfigError, match="timeout_s must be a number of seconds"):
                side.wait_traffic("ident", timeout_s=float("inf"))
            # (a window that is not a number: TypeError in-process, ConfigError remotely)
            with pytest.raises(ConfigError, match="window_s"):
                side.metrics("ident", window_s="30")
            with pytest.raises(ConfigError, match="last_s"):
                side.timeline("ident", last_s="2")
    finally:
        remote.close()


def test_lab_work_that_loads_a_model_says_to_run_it_as_a_job_over_http(served):
    """An API user's replay (and sweep over session_threads) on a RemoteEngine said
    "load_model over HTTP cannot choose whether the upload is tried in a child process",
    about an argument they never passed. Now: run it on the server, as a job."""
    from core.lab import Constraints, quick_search, replay, sweep
    engine, server = served
    remote = RemoteEngine.connect(server.url, timeout_s=WAIT_S)
    try:
        with pytest.raises(ConfigError, match=r"^replay loads a private copy of the model in "
                           r"the engine's own process.*engine.start_job\('replay'"):
            replay(remote, "ident", [0.0, 0.001, 0.01], policies=["deadline"])
        with pytest.raises(ConfigError, match=r"^a sweep over session_threads loads the model "
                           r".*engine.start_job\('sweep'"):
            sweep(remote, "ident", [8], [1.0], rates_rps=[100], duration_s=0.3,
                  stability=False, session_threads=[1, 2])
        # (the quick search said "load_model over HTTP cannot choose..." still; an adversary)
        with pytest.raises(ConfigError, match=r"^a quick search over session_threads loads "
                           r"the model .*engine.start_job\('search'"):
            quick_search(remote, "ident", [8], [1.0], [100.0], Constraints(p99_ms=50),
                         duration_s=0.3, stability=False, session_threads=[1, 2])
        assert engine.model_names() == ["ident"]      # nothing was loaded on the way
    finally:
        remote.close()


def test_a_seed_below_zero_is_named_for_traffic_and_taken_by_an_experiment(served):
    """An API user: start_traffic(seed=-1) said numpy's "expected non-negative integer"
    (which parameter? what range?) both ways, and create_ab(seed=-1) failed the same way
    although an A/B seed may be any whole number (its bandit's generator took none below 0)."""
    from core.ab import ABExperiment
    engine, server = served
    remote = RemoteEngine.connect(server.url, timeout_s=WAIT_S)
    try:
        for side in (engine, remote):
            with pytest.raises(ConfigError, match=r"^seed must be a whole number of at least 0 "
                                                  r"\(or None for a fresh one\), got -1$"):
                side.start_traffic("ident", rate_rps=10, duration_s=0.2, seed=-1)
        a, b = (ABExperiment("e", a="a", b="b", seed=-1, mode="bandit") for _ in range(2))
        assert [a.route()[0] for _ in range(50)] == [b.route()[0] for _ in range(50)]
        assert a.bandit.p_b_better() == b.bandit.p_b_better()      # seeded, as 0 or 7 are
        assert ABExperiment("e", a="a", b="b", seed=1, mode="bandit").bandit._entropy \
            != a.bandit._entropy                                  # (-1 is not 1)
    finally:
        remote.close()
