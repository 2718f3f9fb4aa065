"""Shared test helpers: fake models driven by events, ONNX model builders, packaged models."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper

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


class SlowModel:
    """A fake model with a known cost: each batch takes ``per_batch_s`` (a blocking wait
    that releases the GIL, like ``session.run``) and doubles its input."""

    def __init__(self, per_batch_s: float) -> None:
        self.per_batch_s = per_batch_s
        self.never = threading.Event()

    def __call__(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.never.wait(self.per_batch_s)
        return [arrays[0] * 2.0]


def failing_model() -> bytes:
    """Loads fine, fails every run of fewer than two rows: x [N, 3] is reshaped to [2, 3]."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2, 3])
    m = make_model([helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                   [helper.make_node("Reshape", ["x", "shape"], ["y"])], [shape])
    return m.SerializeToString()
