"""Remote models (issue 16): any Open Inference Protocol endpoint as a model of the engine.

The good server is a real Batchlab engine server on loopback; the bad ones are a small real
HTTP server that answers correct metadata and then misbehaves on purpose (errors, silence,
dropped connections, no declared tensors, a token required)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import time

import numpy as np
import pytest

from core import (ConfigError, Engine, EngineClosedError, InputValidationError,
                  RemoteConnectionError, RemoteServerError, RemoteTargetError,
                  RequestTimeoutError, RequestTooLargeError, build_demo_model)
from core.serving import RemoteEngine
from core.serving import free_port
from core.serving import EngineServer
from tests.helpers import WAIT_S, fake_oip_server


@pytest.fixture(scope="module")
def served():
    """A Batchlab engine server (the remote side) with the demo models."""
    engine = Engine()
    server = EngineServer(engine, port=0).start()
    yield engine, server
    server.close()
    engine.close()


@pytest.fixture
def client():
    """The local engine that adds remote models (no demo models but the MLP, to compare)."""
    e = Engine(demo_models=False)
    e.load_model(build_demo_model("mlp"), name="mlp", source_label="demo")
    yield e
    e.close()


@pytest.fixture
def bad():
    with fake_oip_server() as srv:
        yield srv


# -- a good server ---------------------------------------------------------------------------
def test_remote_model_reads_metadata_and_answers_like_the_local_one(served, client):
    _, server = served
    info = client.add_remote("mlp-remote2", url=server.url, model="mlp")
    local = client.model_info("mlp")
    assert [(t.name, t.dtype, t.shape) for t in info.inputs] == \
        [(t.name, t.dtype, ("N",) + tuple(t.shape[1:])) for t in local.inputs]
    assert [t.name for t in info.outputs] == [t.name for t in local.outputs]
    assert info.source.startswith("remote ") and info.batchable
    x = client.sample_input("mlp", rows=3)
    got = client.predict("mlp-remote2", x)
    want = client.predict("mlp", x)
    np.testing.assert_allclose(got.outputs["logits"], want.outputs["logits"], rtol=1e-5)
    assert got.release_reason == "remote" and got.rows == 3
    assert got.total_ms >= got.compute_ms > 0           # measured at the client
    r = client.remote_info("mlp-remote2")
    assert r.kind == "batchlab" and r.declared and r.configurable == "batchlab"
    assert client.remote_info("mlp") is None


def test_bad_input_is_refused_at_submit_and_nothing_is_sent(client, bad):
    client.add_remote("m", url=bad.url, model="m")
    with pytest.raises(InputValidationError, match="float32"):
        client.submit("m", np.ones((2, 5), np.float32))
    assert bad.seen == []
    assert client.predict("m", np.ones((2, 4), np.float32)).outputs["y"].tolist() == \
        [[2.0] * 4] * 2


def test_json_and_binary_requests_give_the_same_answer(served, client):
    _, server = served
    client.add_remote("bin", url=server.url, model="tiny")
    client.add_remote("json", url=server.url, model="tiny", binary=False)
    x = client.sample_input("bin", rows=4)
    np.testing.assert_array_equal(client.predict("bin", x).outputs["y"],
                                  client.predict("json", x).outputs["y"])


def test_a_replaced_model_numbers_its_batches_on_local_or_remote(served, client):
    """The trace is kept across a replace: a remote model's batch ids began again at 1
    (a reviewer), so its timeline merged two batches; local to remote and back too."""
    _, server = served
    x = client.sample_input("mlp")
    first = [client.predict("mlp", x).batch_id for _ in range(3)]
    client.add_remote("mlp", url=server.url, model="mlp", replace=True)
    remote = [client.predict("mlp", x).batch_id for _ in range(3)]
    client.add_remote("mlp", url=server.url, model="mlp", replace=True)
    again = [client.predict("mlp", x).batch_id for _ in range(3)]
    client.load_model(build_demo_model("mlp"), name="mlp", replace=True)
    local = [client.predict("mlp", x).batch_id for _ in range(3)]
    ids = first + remote + again + local
    assert ids == sorted(ids) and len(set(ids)) == 12, ids
    assert client.timeline("mlp", last_s=None)["batch_id"].is_unique


def test_batch_settings_are_the_servers_and_change_there(served, client):
    engine, server = served
    engine.configure("tiny", max_batch_size=32, max_wait_ms=5.0)
    client.add_remote("t", url=server.url, model="tiny")
    cfg = client.batch_config("t")
    assert (cfg.max_batch_size, cfg.max_wait_ms) == (32, 5.0)   # read from the server
    client.configure("t", max_batch_size=8, max_wait_ms=2.0)
    assert (engine.batch_config("tiny").max_batch_size,
            engine.batch_config("tiny").max_wait_ms) == (8, 2.0)  # changed on the server
    assert client.remote_info("t").batching.max_batch_size == 8
    client.configure("t", timeout_ms=1234.0)                     # the client's own
    assert client.batch_config("t").timeout_ms == 1234.0
    with pytest.raises(ConfigError, match="belong to its server"):
        client.configure("t", policy="adaptive")
    with pytest.raises(RequestTooLargeError, match="max_batch_size=8"):
        client.submit("t", client.sample_input("t", rows=9))
    engine.configure("tiny", max_batch_size=32, max_wait_ms=5.0)


def test_a_sweep_does_not_start_while_a_change_is_sent_to_the_server(served, client,
                                                                   monkeypatch):
    """configure() of a remote model asked the sweep guard, then sent the change to the
    server without the engine's lock: a sweep starting meanwhile read the old settings and
    put them back at its end, undoing the change unsaid (a reviewer). While the change is
    on its way the model is busy: a sweep starting then is refused, saying why."""
    import threading
    import core.lab.lab as lab_mod
    engine, server = served
    engine.configure("tiny", max_batch_size=32, max_wait_ms=5.0)
    client.add_remote("t", url=server.url, model="tiny")
    monkeypatch.setitem(lab_mod.JOB_KINDS, "sweep", (lambda engine, job, target: None, True))
    remote = client._ns.entry("t").remote
    sending, gate, real = threading.Event(), threading.Event(), remote.apply_batch

    def slow_apply(*args):   # the real call, once the test has tried its sweep
        sending.set()
        assert gate.wait(WAIT_S)
        return real(*args)

    monkeypatch.setattr(remote, "apply_batch", slow_apply)
    change = threading.Thread(target=lambda: client.configure("t", max_batch_size=8))
    change.start()
    try:
        assert sending.wait(WAIT_S)
        with pytest.raises(ConfigError, match=r"sweep of 't' not started: a change of its "
                                              r"settings sent to its server is going on"):
            client.start_job("sweep", "t")
    finally:
        gate.set()
        change.join(WAIT_S)
    assert engine.batch_config("tiny").max_batch_size == 8
    status = client.start_job("sweep", "t")   # once it is made: free
    assert client.wait_job(status.job_id, WAIT_S).state == "done"
    engine.configure("tiny", max_batch_size=32, max_wait_ms=5.0)


def test_a_server_that_does_not_let_clients_change_batching_says_so(client, bad):
    client.add_remote("m", url=bad.url, model="m")
    assert client.remote_info("m").configurable is None
    with pytest.raises(ConfigError, match="does not let a client change batch settings"):
        client.configure("m", max_batch_size=4)


def test_traffic_metrics_timeline_and_warmup_on_a_remote_model(served, client):
    _, server = served
    client.add_remote("r", url=server.url, model="mlp")
    client.start_traffic("r", rate_rps=300, pattern="poisson", duration_s=1.0, seed=3)
    status = client.wait_traffic("r", timeout_s=WAIT_S)
    m = client.metrics("r")
    assert status.sent > 100 and m.success_count == status.sent and m.error_count == 0
    t = client.timeline("r", last_s=None)
    assert len(t) == status.sent and (t["release_reason"] == "remote").all() and t["ok"].all()
    # the server's own view of the same model (statistics extension): what its engine did
    stats = client.server_stats("r")
    own = served[0].counters("mlp")
    assert stats["available"] and stats["source"].endswith("/v2/models/mlp/stats")
    assert stats["success"] == own["success_count"] >= status.sent
    assert stats["executions"] == own["batches_ok"] and stats["inferences"] == own["rows_ok"]
    assert sum(b["executions"] for b in stats["batch_sizes"].values()) == own["batches"]
    assert stats["mean_queue_ms"] == pytest.approx(own["sum_queue_s"] / own["success_count"]
                                                   * 1e3, rel=1e-6)
    assert client.server_stats("mlp") is None  # a local model: its metrics are the engine's
    report = client.warmup("r", iterations=2, batch_sizes=[1, 4])
    assert client.warm_sizes("r") == [1, 4] and len(report.frame) > 0
    with pytest.raises(ConfigError, match="remote"):
        client.measure_memory("r")
    with pytest.raises(ConfigError, match="remote"):
        client.model_bytes("r")


def test_ab_between_a_remote_and_a_local_model(served, client):
    _, server = served
    client.add_remote("mlp-remote", url=server.url, model="mlp")
    client.create_ab("exp", a="mlp", b="mlp-remote", b_share=0.5, seed=1)
    for i in range(60):
        client.predict("exp", client.sample_input("mlp"), key=i)
    report = client.ab_report("exp")
    assert any("served in different places (A by this engine; B by " + server.url in w for w in report.warnings)
    arms = report.arms
    assert arms["a"].success_count > 10 and arms["b"].success_count > 10
    assert arms["a"].success_count + arms["b"].success_count == 60


def test_add_remote_through_the_engine_server_and_its_client(served):
    """The dashboard's path: the engine server is the client of another OIP server."""
    _, server = served
    front_engine = Engine(demo_models=False)
    front = EngineServer(front_engine, port=0).start()
    try:
        remote = RemoteEngine.connect(front.url, timeout_s=WAIT_S)
        info = remote.add_remote("tiny-back", url=server.url, model="tiny")
        assert info.inputs[0].name == "x"
        assert remote.remote_info("tiny-back").url == server.url
        out = remote.predict("tiny-back", np.ones((2, 4), np.float32))
        assert out.outputs["y"].shape == (2, 4)
        with pytest.raises(RemoteTargetError, match="has no model 'nope'"):
            remote.add_remote("x", url=server.url, model="nope")
        remote.close()
    finally:
        front.close()
        front_engine.close()


# -- bad endpoints at add_remote -------------------------------------------------------------
def test_refused_connection_says_what_was_tried(client):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RemoteTargetError, match="connection refused") as err:
        client.add_remote("x", url=url, model="m", timeout_s=5)
    assert url in str(err.value) and "x" not in client.model_names()


def test_an_unreachable_host_fails_within_the_timeout(client):
    """TEST-NET-1 (RFC 5737, never routed): the connect never completes (or the network
    says so at once); either way a RemoteTargetError naming the URL, never a hang. (Not
    10.x: this machine's network answers some private addresses itself.)"""
    with pytest.raises(RemoteTargetError, match=r"192\.0\.2\.1") as err:
        client.add_remote("x", url="http://192.0.2.1:8000", model="m", timeout_s=0.5)
    assert "no answer" in str(err.value) or "could not connect" in str(err.value)


def test_unknown_model_lists_what_the_server_has(served, client):
    _, server = served
    with pytest.raises(RemoteTargetError, match="has no model 'resnet'.*404.*mlp"):
        client.add_remote("x", url=server.url, model="resnet")


def test_tls_against_a_plain_http_server_is_a_tls_error(served, client):
    _, server = served
    with pytest.raises(RemoteTargetError, match="TLS handshake"):
        client.add_remote("x", url=server.url.replace("http://", "https://"), model="mlp",
                          timeout_s=5)


def test_a_server_slower_than_the_timeout_fails_add_remote(client, bad):
    bad.mode = "slow-metadata"
    with pytest.raises(RemoteTargetError, match=r"no answer .* within 0.3 s"):
        client.add_remote("x", url=bad.url, model="m", timeout_s=0.3)
    bad.release.set()


def test_bad_urls_and_arguments_are_config_errors(client):
    for url in ("127.0.0.1:8000", "ftp://host/x", "", "http://"):
        with pytest.raises(ConfigError, match="url must"):
            client.add_remote("x", url=url, model="m")
    with pytest.raises(ConfigError, match="timeout_s"):
        client.add_remote("x", url="http://127.0.0.1:1", model="m", timeout_s=0)


def test_a_token_is_needed_and_then_works(client, bad):
    bad.token = "s3cret"
    with pytest.raises(RemoteTargetError, match="bearer token"):
        client.add_remote("m", url=bad.url, model="m")
    client.add_remote("m", url=bad.url, model="m",
                      headers={"Authorization": "Bearer s3cret"})
    assert client.model_info("m").inputs[0].name == "x"


# -- bad answers in a request's future --------------------------------------------------------
@pytest.mark.parametrize("mode, error, words", [
    ("500", RemoteServerError, "answered 500 .*out of memory"),
    ("400", RemoteServerError, "answered 400 .*expected FP32"),
    ("drop", RemoteConnectionError, "closed the connection|failed"),
    ("garbage", RemoteServerError, "cannot be read"),
])
def test_bad_answers_fail_the_request_with_the_servers_words(client, bad, mode, error, words):
    client.add_remote("m", url=bad.url, model="m")
    bad.mode = mode
    with pytest.raises(error, match=words):
        client.predict("m", np.ones((1, 4), np.float32))
    m = client.metrics("m")
    assert m.error_count == 1 and m.errors_by_type == {error.__name__: 1}


def test_a_slow_server_times_the_request_out_and_traffic_never_hangs(client, bad):
    client.add_remote("m", url=bad.url, model="m")
    bad.mode = "slow"
    with pytest.raises(RequestTimeoutError, match="did not answer within 200 ms"):
        client.predict("m", np.ones((1, 4), np.float32), timeout_ms=200)
    client.configure("m", timeout_ms=200.0)
    client.start_traffic("m", rate_rps=50, duration_s=0.5, seed=0)
    status = client.wait_traffic("m", timeout_s=WAIT_S)
    assert status.sent > 5 and not status.running
    bad.release.set()
    m = client.metrics("m")
    assert m.errors_by_type.get("RequestTimeoutError", 0) >= status.sent


def test_dropping_server_under_traffic_counts_every_failure(client, bad):
    client.add_remote("m", url=bad.url, model="m")
    bad.mode = "drop"
    client.start_traffic("m", rate_rps=100, duration_s=0.5, seed=0)
    status = client.wait_traffic("m", timeout_s=WAIT_S)
    m = client.metrics("m")
    assert status.sent > 10 and m.total_requests == status.sent
    assert m.success_count == 0 and m.errors_by_type == {"RemoteConnectionError": status.sent}
    assert status.problem                      # the page shows it


def test_close_settles_requests_still_waiting_for_the_server(bad):
    from core import EngineConfig
    e = Engine(EngineConfig(close_timeout_s=0.5), demo_models=False)
    e.add_remote("m", url=bad.url, model="m")
    bad.mode = "slow"
    futs = [e.submit("m", np.ones((1, 4), np.float32)) for _ in range(5)]
    e.close()
    for f in futs:
        assert f.done()
        with pytest.raises(EngineClosedError):
            f.result(0)
    bad.release.set()


# -- a server that declares no tensors ---------------------------------------------------------
def test_a_server_without_the_statistics_extension_says_so(client, bad):
    client.add_remote("plain", url=bad.url, model="m")
    stats = client.server_stats("plain")
    assert stats["available"] is False
    assert "answered 404 to GET /v2/models/m/stats" in stats["reason"]
    assert "no statistics extension" in stats["reason"]


def test_undeclared_tensors_are_learned_from_the_first_request(client, bad):
    bad.mode = "undeclared"
    info = client.add_remote("m", url=bad.url, model="m")
    assert info.inputs == () and not client.remote_info("m").declared
    assert "declares no input tensors" in info.batch_reason
    with pytest.raises(InputValidationError, match="declares no input tensors"):
        client.submit("m", {"x": np.ones((1, 4), np.float32)})
    bad.mode = "ok"
    out = client.predict("m", np.ones((2, 4), np.float32))
    assert out.outputs["y"].shape == (2, 4)
    info = client.model_info("m")
    assert [t.name for t in info.inputs] == ["input-0"] and info.inputs[0].shape == ("N", 4)
    assert "learned" in info.batch_reason
    with pytest.raises(InputValidationError):           # now checked like a declared model
        client.submit("m", np.ones((2, 5), np.float32))


def test_user_declared_tensors_are_used_when_the_server_has_none(client, bad):
    bad.mode = "undeclared"
    client.add_remote("m", url=bad.url, model="m",
                      inputs=[{"name": "x", "datatype": "FP32", "shape": [-1, 4]}])
    bad.mode = "ok"
    assert client.predict("m", {"x": np.ones((1, 4), np.float32)}).outputs["y"].shape == (1, 4)


def test_the_load_generator_reports_its_cpu_and_says_when_it_is_the_bottleneck(served, client):
    from dataclasses import replace
    _, server = served
    client.add_remote("r", url=server.url, model="tiny")
    client.start_traffic("r", rate_rps=200, duration_s=1.5, seed=0)
    status = client.wait_traffic("r", timeout_s=WAIT_S)
    assert 0 < status.client_cpu_pct < 100
    assert status.client_bound is None                       # 200 req/s is easy
    busy = replace(status, client_cpu_pct=97.0)
    assert "client is the bottleneck" in busy.client_bound and "97 %" in busy.client_bound
    late = replace(status, running=True, max_lag_ms=400.0, recent_lag_ms=400.0)
    assert "behind its schedule in the last 5 s" in late.client_bound
    # a sidebar's line: the traffic named, what to do (the first clause alone said
    # neither; a reviewer)
    assert busy.client_bound_brief == ("r: the client is the bottleneck (97 % of a core): "
                                       "send less, or load the server from more processes.")
    assert late.client_bound_brief == ("r: the sender fell up to 400 ms behind its schedule; "
                                       "latencies include that delay.")
    assert status.client_bound_brief is None
    # a lag long past (the all-time worst) is not a warning about now
    assert replace(status, running=True, max_lag_ms=400.0, recent_lag_ms=3.0
                   ).client_bound is None
    # a local model's traffic counts the sender thread alone
    client.start_traffic("mlp", rate_rps=100, duration_s=1.2, seed=0)
    assert 0 < client.wait_traffic("mlp", timeout_s=WAIT_S).client_cpu_pct < 100


# -- what the server reports is what the engine says ---------------------------------------------
def test_a_server_without_dynamic_batching_holds_nobody_and_a_sweep_restores_it(served, client):
    from core.lab import sweep
    engine, server = served
    engine.configure("tiny", max_batch_size=1, max_wait_ms=0.0)
    try:
        client.add_remote("t", url=server.url, model="tiny")
        cfg = client.batch_config("t")
        assert (cfg.max_batch_size, cfg.max_wait_ms) == (1, 0.0)   # not the client's 5 ms
        sweep(client, "t", [4], [1.0], concurrencies=[2], duration_s=0.3)
        back = engine.batch_config("tiny")
        assert (back.max_batch_size, back.max_wait_ms) == (1, 0.0)  # restored as it was
    finally:
        engine.configure("tiny", max_batch_size=32, max_wait_ms=5.0)


def test_only_a_limit_the_server_reported_refuses_large_requests(client, bad):
    from core import BatchConfig
    client.add_remote("m", url=bad.url, model="m", batch=BatchConfig(max_batch_size=4))
    assert client.remote_info("m").source.startswith("given to add_remote")
    out = client.predict("m", np.ones((5, 4), np.float32))      # the server decides
    assert out.outputs["y"].shape == (5, 4)


def test_an_answer_with_other_rows_than_the_request_is_refused(client, bad):
    client.add_remote("m", url=bad.url, model="m")
    bad.mode = "short"
    with pytest.raises(RemoteServerError, match="answered 1 rows of output 'y' for a request "
                                                "of 3 row"):
        client.predict("m", np.ones((3, 4), np.float32))


def test_bytes_tensors_are_sent_in_the_protocols_layout():
    import struct
    from core.protocol import encode_infer_request
    a = {"s": np.array([b"hello", "world!!"], dtype=object)}
    body, head = encode_infer_request(a, binary=True)
    assert body[head:] == struct.pack("<I", 5) + b"hello" + struct.pack("<I", 7) + b"world!!"
    body, head = encode_infer_request(a, binary=False)
    assert head is None and b'"data": ["hello", "world!!"]' in body


def test_undeclared_inputs_refuse_generated_load_with_the_reason(client, bad):
    bad.mode = "undeclared"
    client.add_remote("m", url=bad.url, model="m")
    for call in (lambda: client.sample_input("m"),
                 lambda: client.start_traffic("m", rate_rps=10, duration_s=0.2),
                 lambda: client.warmup("m", iterations=1)):
        with pytest.raises(ConfigError, match="declares no input tensors.*send one request"):
            call()


def test_bounded_load_runs_report_the_clients_cpu(served, client):
    from core.lab import closed_loop, open_loop
    _, server = served
    client.add_remote("t", url=server.url, model="tiny")
    x = np.ones((1, 4), np.float32)
    for res in (open_loop(lambda v: client.submit("t", v), lambda rng: x, 200, duration_s=0.5),
                closed_loop(lambda v: client.submit("t", v), lambda rng: x, 4, duration_s=0.5)):
        s = res.summary()
        assert s["failed"] == 0 and 0 < s["client_cpu_pct"] < 200



# -- what an adversary tried -------------------------------------------------------------------
def test_an_answer_over_the_size_limit_fails_without_being_read(client, bad, monkeypatch):
    import core.remote.target
    client.add_remote("m", url=bad.url, model="m")
    monkeypatch.setattr(core.remote.target, "MAX_ANSWER_BYTES", 64)
    with pytest.raises(RemoteServerError, match="over the 64-byte limit.*announced"):
        client.predict("m", np.ones((4, 4), np.float32))
    assert client.metrics("m").errors_by_type == {"RemoteServerError": 1}


def test_cancelling_a_request_ends_its_http_call(client, bad):
    client.add_remote("m", url=bad.url, model="m")
    bad.mode = "slow"
    futs = [client.submit("m", np.ones((1, 4), np.float32)) for _ in range(5)]
    dispatcher = client._registry.get("m").served
    deadline = time.monotonic() + WAIT_S
    while len(bad.seen) < 5:                       # all five are on the wire
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for f in futs:
        assert f.cancel()
    done, pending = cf.wait(futs, timeout=WAIT_S)   # wait() sees cancelled futures
    assert len(done) == 5 and not pending
    while dispatcher._tasks:                       # ...and the calls are gone too
        assert time.monotonic() < deadline, f"{len(dispatcher._tasks)} calls still running"
        time.sleep(0.01)
    assert client.metrics("m").errors_by_type == {"CancelledError": 5}


def test_credentials_in_the_url_become_basic_auth_and_are_never_shown(client, bad):
    import base64
    bad.token = "Basic " + base64.b64encode(b"alice:hunter2").decode()
    url = bad.url.replace("http://", "http://alice:hunter2@")
    client.add_remote("m", url=url, model="m")
    assert client.predict("m", np.ones((1, 4), np.float32)).outputs["y"].shape == (1, 4)
    shown = [client.remote_info("m").url, client.model_info("m").source]
    assert shown[0] == bad.url and not any("hunter2" in s for s in shown)
    bad.mode = "500"
    with pytest.raises(RemoteServerError) as err:
        client.predict("m", np.ones((1, 4), np.float32))
    assert "hunter2" not in str(err.value)
    with pytest.raises(RemoteTargetError) as err:
        client.add_remote("x", url=url, model="nope")
    assert "hunter2" not in str(err.value)


def test_an_engine_cannot_add_its_own_server(served):
    engine, server = served
    with pytest.raises(ConfigError, match="this engine's own server"):
        engine.add_remote("loop", url=server.url.replace("127.0.0.1", "localhost"),
                          model="tiny")


def test_the_time_left_is_passed_on_to_servers_that_read_it(client, bad):
    bad.server_name = "batchlab"
    client.add_remote("m", url=bad.url, model="m", binary=False)
    client.predict("m", np.ones((1, 4), np.float32), timeout_ms=800)
    sent = json.loads(bad.seen[-1])
    assert 0 < sent["parameters"]["timeout"] <= 800_000     # microseconds, as Triton reads


def test_an_output_of_another_datatype_is_refused(client, bad):
    client.add_remote("m", url=bad.url, model="m")
    bad.mode = "int"
    with pytest.raises(RemoteServerError, match="answered output 'y' as int64.*float32"):
        client.predict("m", np.ones((1, 4), np.float32))


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:8000?x=1",
                                 "http://127.0.0.1:8000#top", "http://127.0.0.1:99999"])
def test_malformed_urls_are_config_errors(client, url):
    with pytest.raises(ConfigError, match="url"):
        client.add_remote("x", url=url, model="m")


def test_headers_with_line_breaks_are_config_errors(client, bad):
    with pytest.raises(ConfigError, match="line break"):
        client.add_remote("x", url=bad.url, model="m",
                          headers={"Authorization": "Bearer a\r\nX-Evil: 1"})


def test_ab_between_two_remote_models_on_different_servers(served, client, bad):
    """Remote vs remote: the batchlab server's tiny and the fake server's m share an
    interface (x: float32 [N,4])."""
    _, server = served
    client.add_remote("a-remote", url=server.url, model="tiny")
    client.add_remote("b-remote", url=bad.url, model="m")
    client.create_ab("rr", a="a-remote", b="b-remote", b_share=0.5, seed=2)
    client.start_traffic("rr", rate_rps=200, duration_s=0.5, seed=0)
    status = client.wait_traffic("rr", timeout_s=WAIT_S)
    report = client.ab_report("rr")
    assert report.arms["a"].success_count + report.arms["b"].success_count == status.sent
    assert report.arms["a"].success_count > 10 and report.arms["b"].success_count > 10
    assert any(f"A by {server.url}; B by {bad.url}" in w for w in report.warnings)


def test_a_warm_up_of_a_slow_remote_model_stops_at_its_cancel(client, bad):
    """Cancel (and the time limit) did not stop a warm-up of a remote model: the wait for
    a slow server's answer went on up to the model's timeout (25 s after Cancel; up to
    600 s allowed; an adversary). The wait ends at the stop now, as a local run does."""
    import threading
    client.add_remote("slow", url=bad.url, model="m", binary=False, timeout_s=60.0)
    bad.mode = "slow"   # (answers only once released, or after WAIT_S)
    stop = threading.Event()
    raised: list = []

    def warm() -> None:
        try:
            client.warmup("slow", iterations=2, batch_sizes=[2], stop=stop)
        except Exception as err:  # noqa: BLE001
            raised.append(err)

    t = threading.Thread(target=warm)
    t.start()
    deadline = time.monotonic() + WAIT_S
    while not bad.seen and time.monotonic() < deadline:   # the request reached the server
        time.sleep(0.01)
    assert bad.seen
    stop.set()
    t.join(WAIT_S / 2)   # (the server holds its answer WAIT_S: the old wait outlasted this)
    assert not t.is_alive(), "the warm-up went on waiting for the server"
    assert raised and "was cancelled" in str(raised[0]), raised
    bad.release.set()
