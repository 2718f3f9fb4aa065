"""Submit-time input validation and config validation."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import BatchConfig, EngineConfig, SessionConfig
from core.models import build_demo_model
from core.errors import ConfigError, InputValidationError
from core.models import load_model_bytes
from core.models import RequestValidator
from tests.helpers import ORT_DATASETS


def validator(name: str) -> RequestValidator:
    return RequestValidator(load_model_bytes(build_demo_model(name), name).info)


def test_accepts_good_input_and_counts_rows():
    arrays, rows = validator("mlp")(np.zeros((3, 256), np.float32))
    assert rows == 3 and arrays[0].shape == (3, 256)


def test_accepts_mapping_for_single_input():
    _, rows = validator("mlp")({"x": np.zeros((2, 256), np.float32)})
    assert rows == 2


@pytest.mark.parametrize("x, message", [
    (np.zeros((3, 255), np.int64), r"input 'x' expects float32 \[N,256\], got int64 \[3,255\]"),
    (np.zeros((3, 256), np.float64), r"expects float32 \[N,256\], got float64 \[3,256\] "
                                     r"\(convert it with \.astype\(np\.float32\)\)"),
    (np.zeros(256, np.float32), r"rank 1, expected rank 2"),
    (np.zeros((0, 256), np.float32), "0 rows"),
    ([[0.0] * 256], "must be a numpy array.*got list"),
    ("hello", "got str"),
    ({"y": np.zeros((1, 256), np.float32)}, "missing 'x' and unknown 'y'"),
])
def test_refuses_bad_input_with_actionable_message(x, message):
    with pytest.raises(InputValidationError, match=message):
        validator("mlp")(x)


def test_two_inputs_need_a_mapping_with_matching_rows():
    v = validator("two-input")
    ok = {"features": np.ones((2, 16), np.float32), "weights": np.ones((2, 16), np.float32)}
    assert v(ok)[1] == 2
    with pytest.raises(InputValidationError, match="pass a dict"):
        v(np.ones((2, 16), np.float32))
    with pytest.raises(InputValidationError, match="same number of rows"):
        v({"features": np.ones((2, 16), np.float32), "weights": np.ones((3, 16), np.float32)})
    with pytest.raises(InputValidationError, match="unknown 'extra'"):
        v({**ok, "extra": np.ones((2, 16), np.float32)})
    with pytest.raises(InputValidationError, match="'weights' must be a numpy array"):
        v({"features": ok["features"], "weights": [1.0]})


def test_nan_and_inf_are_valid_input():
    x = np.full((2, 256), np.nan, np.float32)
    x[1] = np.inf
    assert validator("mlp")(x)[1] == 2


def test_exact_model_needs_exact_shape():
    v = RequestValidator(load_model_bytes((ORT_DATASETS / "logreg_iris.onnx").read_bytes(),
                                          "iris").info)
    assert v(np.zeros((3, 2), np.float32))[1] == 1
    with pytest.raises(InputValidationError, match=r"expects float32 \[3,2\].*not batchable"):
        v(np.zeros((4, 2), np.float32))


@pytest.mark.parametrize("kwargs, message", [
    ({"max_batch_size": 0}, "max_batch_size must be an int >= 1"),
    ({"max_batch_size": 2.5}, "max_batch_size must be an int"),
    ({"max_batch_size": True}, "max_batch_size must be an int"),
    ({"max_wait_ms": -1}, "max_wait_ms must be a number >= 0"),
    ({"max_wait_ms": float("nan")}, "max_wait_ms must be a number"),
    ({"policy": "fastest"}, "policy must be one of 'deadline', 'fixed_window'"),
    ({"max_queue": 0}, "max_queue must be an int >= 1"),
    ({"timeout_ms": 0}, "timeout_ms must be a number"),
])
def test_batch_config_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        BatchConfig(**kwargs)


def test_batch_config_replace_validates_and_refuses_unknown_names():
    cfg = BatchConfig()
    assert cfg.replace(max_wait_ms=2).max_wait_ms == 2.0
    with pytest.raises(ConfigError, match="unknown batch setting"):
        cfg.replace(batch_size=3)
    with pytest.raises(ConfigError, match="max_batch_size"):
        cfg.replace(max_batch_size=-1)


def test_session_and_engine_config_validation():
    with pytest.raises(ConfigError, match="graph_optimization must be one of"):
        SessionConfig(graph_optimization="max")
    with pytest.raises(ConfigError, match="provider must be one of"):
        SessionConfig(provider="tpu")
    with pytest.raises(ConfigError, match="cache_size"):
        EngineConfig(cache_size=0)
    with pytest.raises(ConfigError, match="session must be a SessionConfig"):
        EngineConfig(session={"intra_op_threads": 1})  # type: ignore[arg-type]


def test_an_unknown_model_name_close_to_a_loaded_one_is_suggested():
    """``predict("MLP", x)`` was told to load a model named 'MLP' (a newcomer)."""
    from core import Engine, ModelNotFoundError
    with Engine() as engine:
        for typed in ("MLP", "mlpp"):
            with pytest.raises(ModelNotFoundError, match=rf"no model named '{typed}' \(did you "
                                                         r"mean 'mlp'\?\); loaded models: "):
                engine.predict(typed, engine.sample_input("mlp"))
        with pytest.raises(ModelNotFoundError) as err:
            engine.predict("zzz", engine.sample_input("mlp"))
        assert "did you mean" not in str(err.value)
