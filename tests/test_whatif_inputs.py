"""Hostile inputs to the what-if simulator and the exports: each is refused up front with a
ConfigError that says what was given and what is expected, never a hang (max_batch_size=0
looped for ever), a bare numpy/Python error, plausible-looking numbers or an invalid config."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import ConfigError
from core.lab import (CostModel, provenance, ray_serve_config, simulate, tf_serving_batching,
                      triton_config, what_if_curve)

COST = CostModel(a_ms=0.5, b_ms=0.05, r2=1.0, overhead_ms=0.1, per_request_ms=0.01)
NAN, INF = float("nan"), float("inf")


# -- the simulator: max_batch_size 0 looped for ever --------------------------------------------
@pytest.mark.timeout(60)
def test_simulate_refuses_a_zero_batch_size_instead_of_looping_for_ever():
    with pytest.raises(ConfigError, match=r"^max_batch_size must be an int >= 1 and <= 65536, "
                                          r"got 0$"):
        simulate(COST, max_batch_size=0, max_wait_ms=2.0, rate_rps=1000.0, n_requests=100)


@pytest.mark.timeout(60)
def test_what_if_curve_refuses_a_zero_batch_size_instead_of_looping_for_ever():
    with pytest.raises(ConfigError, match="^max_batch_size must be an int >= 1"):
        what_if_curve(COST, 0, 2.0, [100.0, 1000.0], n_requests=100)


@pytest.mark.timeout(60)
def test_a_zero_batch_size_with_given_arrivals_is_refused_too():
    with pytest.raises(ConfigError, match="^max_batch_size must be"):
        simulate(COST, 0, 1.0, 100.0, arrivals_s=np.arange(10) * 0.01)


# -- the simulator: every other bad argument -----------------------------------------------------
_BAD_SIMULATE = [
    # (keyword arguments over the good ones, the field named, what the message expects)
    ({"max_batch_size": -3}, "max_batch_size", ">= 1 and <= 65536, got -3"),
    ({"max_batch_size": 2.5}, "max_batch_size", "an int >= 1"),
    ({"max_batch_size": True}, "max_batch_size", "got True"),
    ({"max_batch_size": None}, "max_batch_size", "got None"),
    ({"max_batch_size": "8"}, "max_batch_size", "got '8'"),
    ({"max_batch_size": 10**6}, "max_batch_size", "<= 65536"),
    ({"max_wait_ms": -1.0}, "max_wait_ms", "a number >= 0 and <= 60000, got -1.0"),
    ({"max_wait_ms": NAN}, "max_wait_ms", "got nan"),
    ({"max_wait_ms": INF}, "max_wait_ms", "got inf"),
    ({"max_wait_ms": None}, "max_wait_ms", "got None"),
    ({"rate_rps": 0}, "rate_rps", "a number >= 0.001 and <= 1e+09, got 0"),
    ({"rate_rps": -100.0}, "rate_rps", "got -100.0"),
    ({"rate_rps": NAN}, "rate_rps", "got nan"),
    ({"rate_rps": INF}, "rate_rps", "got inf"),
    ({"rate_rps": None}, "rate_rps", "got None"),
    ({"n_requests": 0}, "n_requests", "an int >= 1 and <= 10000000, got 0"),
    ({"n_requests": -5}, "n_requests", "got -5"),
    ({"n_requests": 100.0}, "n_requests", "got 100.0"),
    ({"n_requests": 10**12}, "n_requests", "<= 10000000"),
    ({"pattern": "spiky"}, "pattern", "'constant', 'poisson', 'bursty', got 'spiky'"),
    ({"seed": -1}, "seed", "an int >= 0, got -1"),
    ({"seed": 1.5}, "seed", "got 1.5"),
    ({"arrivals_s": []}, "arrivals_s", "1 to 10,000,000 arrival times"),
    ({"arrivals_s": [0.0, NAN, 0.2]}, "arrivals_s", "finite numbers of seconds"),
    ({"arrivals_s": [0.0, INF]}, "arrivals_s", "finite"),
    ({"arrivals_s": [[0.0, 0.1], [0.2, 0.3]]}, "arrivals_s", "a list of"),
    ({"arrivals_s": 0.5}, "arrivals_s", "got 0.5"),
    ({"arrivals_s": ["soon"]}, "arrivals_s", "got ['soon']"),
    ({"cost": None}, "cost", "a CostModel (fit_cost_model) or a function"),
    ({"cost": CostModel(NAN, 0.1, 1.0)}, r"cost\.a_ms", "got nan"),
    ({"cost": CostModel(0.5, -0.1, 1.0)}, r"cost\.b_ms", ">= 0"),
    ({"cost": CostModel(0.5, 0.1, 1.0, overhead_ms=INF)}, r"cost\.overhead_ms", "got inf"),
    ({"cost": CostModel(0.5, 0.1, 1.0, per_request_ms=NAN)}, r"cost\.per_request_ms", "nan"),
    ({"cost": lambda n: NAN}, r"cost\(\d+\)", "a finite number of ms >= 0, got nan"),
    ({"cost": lambda n: -1.0}, r"cost\(\d+\)", "got -1.0"),
    ({"policy": ["deadline"]}, "unknown policy", "the what-if models 'deadline'"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad,field,expected", _BAD_SIMULATE,
                         ids=[f"{next(iter(b))}={next(iter(b.values()))!r}"[:40]
                              for b, _, _ in _BAD_SIMULATE])
def test_simulate_refuses_a_bad_argument_saying_what_was_given_and_what_is_expected(
        bad, field, expected):
    args = {"cost": COST, "max_batch_size": 8, "max_wait_ms": 1.0, "rate_rps": 500.0,
            "n_requests": 200} | bad
    with pytest.raises(ConfigError, match=f"^{field}") as err:
        simulate(**args)
    assert expected in str(err.value)
    assert isinstance(err.value, ValueError)   # callers that catch ValueError still do


@pytest.mark.timeout(60)
@pytest.mark.parametrize("rates,expected", [
    ([100.0, 0.0], "rates_rps[1] must be a number >= 0.001 and <= 1e+09, got 0.0"),
    ([NAN], "rates_rps[0] must be a number >= 0.001 and <= 1e+09, got nan"),
    ([100.0, -5], "rates_rps[1] must be a number"),
    ([INF], "got inf"),
    ([None], "rates_rps[0] must be a number"),
    (None, "rates_rps must be a list such as [500, 1000] (req/s), got None"),
    ("500", "rates_rps must be a list such as [500, 1000]"),
    (500.0, "rates_rps must be a list such as [500, 1000]"),
])
def test_what_if_curve_refuses_bad_rates_before_simulating_any(rates, expected):
    with pytest.raises(ConfigError) as err:
        what_if_curve(COST, 8, 1.0, rates, n_requests=200)
    assert expected in str(err.value)


@pytest.mark.timeout(60)
def test_what_if_curve_checks_its_other_arguments_like_simulate():
    for bad, field in (({"max_wait_ms": NAN}, "max_wait_ms"), ({"n_requests": 0}, "n_requests"),
                       ({"max_batch_size": None}, "max_batch_size")):
        args = {"max_batch_size": 8, "max_wait_ms": 1.0, "n_requests": 200} | bad
        with pytest.raises(ConfigError, match=f"^{field} must be"):
            what_if_curve(COST, rates_rps=[100.0], **args)


# -- valid inputs: unchanged, numpy numbers included ---------------------------------------------
def test_simulate_takes_numpy_numbers_and_gives_the_same_prediction():
    plain = simulate(COST, 16, 2.0, 1500.0, n_requests=2000, seed=3)
    numpy = simulate(COST, np.int64(16), np.float64(2.0), np.float64(1500.0),
                     n_requests=np.int32(2000), seed=np.int64(3))
    assert numpy == plain
    assert simulate(COST, 16, 2, 1500, n_requests=2000, seed=3) == plain  # ints for floats
    curve = what_if_curve(COST, np.int64(16), 2.0, np.array([500, 1500]), n_requests=2000,
                          seed=3)
    assert curve["rate_rps"].tolist() == [500.0, 1500.0]
    assert curve.iloc[1]["p99_ms"] == plain["p99_ms"]


def test_simulate_takes_the_edges_of_the_ranges():
    one = simulate(COST, 1, 0.0, 0.001, n_requests=1)    # one request, alone
    assert one["mean_batch_rows"] == 1.0 and one["p50_ms"] > 0
    # its throughput is one request over its own time (it was NaN)
    assert one["throughput_rps"] == pytest.approx(1000.0 / (one["p50_ms"] - COST.overhead_at(0.001)))
    assert simulate(lambda n: 1.0 + 0.1 * n, 65536, 60_000.0, 1000.0, n_requests=50,
                    seed=None)["p50_ms"] > 0
    arr = np.arange(1, 101) * 0.010
    r = simulate(CostModel(2.0, 0.0, 1.0), 32, 0.0, 100, arrivals_s=list(arr))
    assert r["p50_ms"] == pytest.approx(2.0)


# -- the exports --------------------------------------------------------------------------------
@pytest.mark.parametrize("call,field,expected", [
    (lambda: triton_config(None, None), "max_batch_size", "an int >= 1 and <= 65536, got None"),
    (lambda: triton_config(0, 2.0), "max_batch_size", "got 0"),
    (lambda: triton_config(-8, 2.0), "max_batch_size", "got -8"),
    (lambda: triton_config(8.0, 2.0), "max_batch_size", "got 8.0"),
    (lambda: triton_config(8, None), "max_wait_ms", "a number >= 0 and <= 60000, got None"),
    (lambda: triton_config(8, -1.0), "max_wait_ms", "got -1.0"),
    (lambda: triton_config(8, NAN), "max_wait_ms", "got nan"),
    (lambda: triton_config(8, INF), "max_wait_ms", "got inf"),
    (lambda: triton_config(32, 2.0, preferred_batch_sizes=[16, 64]), r"preferred_batch_sizes\[1\]",
     "an int >= 1 and <= 32, got 64"),
    (lambda: triton_config(32, 2.0, preferred_batch_sizes=[0]), r"preferred_batch_sizes\[0\]",
     "got 0"),
    (lambda: triton_config(32, 2.0, preferred_batch_sizes=16), "preferred_batch_sizes",
     "None or a list of ints such as [16, 32], got 16"),
    (lambda: triton_config(32, 2.0, max_queue=0), "max_queue", ">= 1 and <= 10000000, got 0"),
    (lambda: triton_config(32, 2.0, instances=0), "instances", "got 0"),
    (lambda: triton_config(32, 2.0, intra_op_threads=-1), "intra_op_threads", "got -1"),
    (lambda: triton_config(32, 2.0, comment=5), "comment", "None or a string"),
    (lambda: tf_serving_batching(None, None), "max_batch_size", "got None"),
    (lambda: tf_serving_batching(0, 2.0), "max_batch_size", "an int >= 1 and <= 65536, got 0"),
    (lambda: tf_serving_batching(8, -0.5), "max_wait_ms", "got -0.5"),
    (lambda: tf_serving_batching(8, NAN), "max_wait_ms", "got nan"),
    (lambda: tf_serving_batching(8, 1.0, num_batch_threads=0), "num_batch_threads", "got 0"),
    (lambda: tf_serving_batching(8, 1.0, max_enqueued_batches=-1), "max_enqueued_batches",
     "got -1"),
    (lambda: tf_serving_batching(8, 1.0, comment=["a"]), "comment", "got ['a']"),
    (lambda: provenance(pd.DataFrame([{"max_batch_size": 8, "max_wait_ms": 1.0}]), None, None,
                        10.0, 100.0), "max_batch_size", "got None"),
    (lambda: provenance(pd.DataFrame([{"max_batch_size": 8, "max_wait_ms": 1.0}]), 8, 1.0,
                        NAN, 100.0), "p99_ms", "got nan"),
    (lambda: ray_serve_config("mlp", 8, 1.0, num_replicas=True), "num_replicas", "got True"),
    (lambda: ray_serve_config("mlp", 8, 1.0, replica_cpus=NAN), "replica_cpus", "got nan"),
    (lambda: ray_serve_config("mlp", 8, 1.0, http_port=0), "http_port", "got 0"),
])
def test_exports_refuse_bad_settings_saying_what_was_given_and_what_is_expected(
        call, field, expected):
    with pytest.raises(ConfigError, match=f"^{field} must") as err:
        call()
    assert expected in str(err.value)


def test_exports_take_numpy_numbers_and_write_what_they_wrote():
    assert triton_config(np.int64(32), np.float64(2.5)) == triton_config(32, 2.5)
    assert (triton_config(32, 2, preferred_batch_sizes=(np.int64(16), 32), max_queue=128,
                          instances=2, intra_op_threads=0)
            == triton_config(32, 2.0, preferred_batch_sizes=[16, 32], max_queue=128,
                             instances=2, intra_op_threads=0))
    assert "max_batch_size: 1\n" in triton_config(1, 0.0)
    tf = tf_serving_batching(np.int32(64), np.float32(5.0), num_batch_threads=np.int64(2))
    assert tf == tf_serving_batching(64, 5.0, num_batch_threads=2)
    assert "batch_timeout_micros { value: 5000 }" in tf
    frame = pd.DataFrame([{"max_batch_size": 16, "max_wait_ms": 2.0}])
    assert provenance(frame, np.int64(16), np.float64(2.0), None, None).startswith(
        "Batchlab: max_batch_size=16, max_wait_ms=2.")
    assert "max_ongoing_requests: 16" in ray_serve_config("mlp", np.int64(8), 1.0)


# -- the lab's other entry points: an API user's plausible mistakes ----------------------------
def test_the_labs_functions_refuse_a_plausible_mistake_in_words():
    """An API user's table: sweep(..., 8, ...) was "TypeError: 'int' object is not
    iterable", rates_rps=[] a plain ValueError, profile_cost(batch_sizes=4) a TypeError,
    replay(..., 1.0) numpy's AxisError, policies="deadline" read letter by letter
    ("unknown policy 'd'"), fit_cost_model(a warm-up report) a TypeError, of a frame
    without compute_ms a KeyError, and of one NaN or one row a "perfect" fit (r2 = 1)."""
    from core import Engine, EngineConfig, build_demo_model
    from core.lab import fit_cost_model, profile_cost, replay, sweep
    with Engine(EngineConfig(demo_models=False)) as engine:
        engine.load_model(build_demo_model("tiny"), name="tiny")
        for call, words in (
                (lambda: sweep(engine, "tiny", 8, [0.0], rates_rps=[100]),
                 r"^max_batch_sizes must be a list such as \[8, 32\], got 8$"),
                (lambda: sweep(engine, "tiny", [8], [0.0], rates_rps=[]),
                 "^give rates_rps and/or concurrencies"),
                (lambda: sweep(engine, "tiny", [8], [0.0], rates_rps=100),
                 r"^rates_rps must be a list such as \[500\], got 100$"),
                (lambda: profile_cost(engine, "tiny", batch_sizes=4),
                 r"^batch_sizes must be a list such as \[1, 8, 32\], got 4$"),
                (lambda: replay(engine, "tiny", 1.0, policies=["deadline"]),
                 "^arrivals_s must be a list of arrival times in seconds"),
                (lambda: replay(engine, "tiny", [0.0, 0.01], policies="deadline"),
                 r"^policies must be a list of policy names, such as \['deadline'\]"),
                (lambda: fit_cost_model(engine.warmup("tiny", iterations=2,
                                                      batch_sizes=[1, 2])),
                 r"^fit_cost_model takes profile_cost's frame .*profile_cost_frame\(report\)"),
                (lambda: fit_cost_model(pd.DataFrame({"batch_size": [1, 8]})),
                 "^fit_cost_model takes profile_cost's frame"),
                (lambda: fit_cost_model(pd.DataFrame({"batch_size": [1, 8, 32],
                                                      "compute_ms": [0.3, NAN, 2.1]})),
                 "^fit_cost_model needs finite compute_ms >= 0 at two whole batch sizes"),
                (lambda: fit_cost_model(pd.DataFrame({"batch_size": [1], "compute_ms": [0.3]})),
                 "^fit_cost_model needs finite compute_ms >= 0 at two whole batch sizes")):
            with pytest.raises(ConfigError, match=words):
                call()
        assert engine.model_names() == ["tiny"]     # (no replay copy left behind)
