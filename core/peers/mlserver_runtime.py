"""An MLServer custom runtime that serves one ONNX model with ONNX Runtime.

Imported only inside MLServer's own virtualenv (``.venv-mlserver``), never by Batchlab:
``core.peers.mlserver`` copies this file into MLServer's model repository as a top-level module,
because importing it as ``core.peers.mlserver_runtime`` would run ``core/__init__.py``, which
needs packages (onnx, scipy, ...) that MLServer's virtualenv does not have. So it depends on
mlserver, onnxruntime and numpy only.

``model-settings.json`` of a model served by it (``parameters.uri`` is resolved by MLServer
relative to the folder of ``model-settings.json``)::

    {"name": "tiny", "implementation": "batchlab_onnx_runtime.OnnxRuntimeModel",
     "parameters": {"uri": "./model.onnx", "extra": {"declare_tensors": true}},
     "max_batch_size": 16, "max_batch_time": 0.005}

When the settings declare no inputs or outputs, ``load()`` fills them from the ONNX graph so
``GET /v2/models/NAME`` lists the tensors; ``extra.declare_tensors: false`` turns that off, to
reproduce a server whose metadata lists no tensors. Each session run observes its row count in
the ``batchlab_onnx_run_rows`` histogram on MLServer's ``/metrics``, which shows whether
MLServer's adaptive batching merged requests.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor, ResponseOutput
from mlserver.utils import get_model_uri
from prometheus_client import REGISTRY, Histogram

__all__ = ["OnnxRuntimeModel", "RUN_ROWS_METRIC"]

RUN_ROWS_METRIC = "batchlab_onnx_run_rows"

# MLServer started by Batchlab stops when the process that started it is gone (a notebook
# kernel that died, a test run killed): nothing is left serving on a port nobody owns.
_PARENT_ENV = "BATCHLAB_PARENT_PID"


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        try:
            os.kill(parent, 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:  # a process with that pid that is not ours: not the parent
            pass
        folder = os.environ.get("BATCHLAB_MLSERVER_FOLDER", "")
        if os.path.basename(folder).startswith("batchlab-mlserver-"):
            import shutil
            shutil.rmtree(folder, ignore_errors=True)  # the repository written for it
        os.killpg(os.getpgrp(), signal.SIGTERM)
        return


if os.environ.get(_PARENT_ENV, "").isdigit() and not any(
        t.name == "batchlab-parent-watch" for t in threading.enumerate()):
    threading.Thread(target=_watch_parent, args=(int(os.environ[_PARENT_ENV]),),
                     name="batchlab-parent-watch", daemon=True).start()
_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# ONNX Runtime's type strings -> Open Inference Protocol datatypes.
_OIP_DATATYPES = {
    "tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
    "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(int16)": "INT16",
    "tensor(int8)": "INT8", "tensor(uint64)": "UINT64", "tensor(uint32)": "UINT32",
    "tensor(uint16)": "UINT16", "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


def _metadata(args: list[Any]) -> list[MetadataTensor]:
    """ONNX Runtime's NodeArgs as OIP metadata; symbolic or unknown dims become -1."""
    return [MetadataTensor(name=a.name, datatype=_OIP_DATATYPES.get(a.type, "BYTES"),
                           shape=[d if isinstance(d, int) else -1 for d in (a.shape or [])])
            for a in args]


def _run_rows_histogram() -> Histogram:
    """The rows-per-run histogram, in prometheus_client's default registry.

    Not ``mlserver.register``/``mlserver.log``: those go to MLServer's own registry, which its
    ``/metrics`` does not serve with ``parallel_workers: 0`` (it serves the default registry
    then, and a multiprocess collector otherwise, which sees this one too). Looked up before
    created because MLServer re-imports (reloads) this module for every model it loads.
    """
    existing = REGISTRY._names_to_collectors.get(RUN_ROWS_METRIC)  # no public lookup
    if isinstance(existing, Histogram):
        return existing
    return Histogram(RUN_ROWS_METRIC, "Rows of each ONNX Runtime session run (the batch size)",
                     labelnames=["model_name"], buckets=_ROWS_BUCKETS)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


class OnnxRuntimeModel(MLModel):
    """One ``onnxruntime.InferenceSession`` on the CPU, one intra-op thread.

    Example (``model-settings.json``)::

        {"name": "mlp", "implementation": "batchlab_onnx_runtime.OnnxRuntimeModel",
         "parameters": {"uri": "./model.onnx"}}
    """

    async def load(self) -> bool:
        # get_model_uri resolves a relative uri against the folder of model-settings.json;
        # settings.parameters.uri itself stays as written.
        path = await get_model_uri(self.settings, wellknown_filenames=["model.onnx"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(path, sess_options=options,
                                             providers=["CPUExecutionProvider"])
        self._input_names = {a.name for a in self._session.get_inputs()}
        self._output_names = [a.name for a in self._session.get_outputs()]
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        if _truthy(extra.get("declare_tensors", True)):
            if not self.inputs:
                self.inputs = _metadata(self._session.get_inputs())
            if not self.outputs:
                self.outputs = _metadata(self._session.get_outputs())
        self._run_rows = _run_rows_histogram().labels(model_name=self.name)
        self.ready = True
        return self.ready

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds: dict[str, np.ndarray] = {}
        for request_input in payload.inputs:
            if request_input.name not in self._input_names:
                raise InferenceError(f"model {self.name!r} has no input {request_input.name!r};"
                                     f" its inputs are {sorted(self._input_names)}")
            feeds[request_input.name] = NumpyCodec.decode_input(request_input)
        missing = self._input_names - feeds.keys()
        if missing:
            raise InferenceError(f"model {self.name!r} needs inputs {sorted(missing)}")
        names = self._output_names
        if payload.outputs:
            names = [o.name for o in payload.outputs]
            unknown = set(names) - set(self._output_names)
            if unknown:
                raise InferenceError(f"model {self.name!r} has no outputs {sorted(unknown)};"
                                     f" its outputs are {self._output_names}")
        try:
            results = self._session.run(names, feeds)
        except Exception as e:  # ORT's own errors: bad shapes, bad dtypes
            raise InferenceError(f"model {self.name!r}: {e}") from e
        self._observe_rows(feeds)
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 id=payload.id,
                                 outputs=[self._encode(n, r) for n, r in zip(names, results)])

    @staticmethod
    def _encode(name: str, array: np.ndarray) -> ResponseOutput:
        output = NumpyCodec.encode_output(name, np.ascontiguousarray(array))
        # NumpyCodec turns a 1-D [N] into [N, 1]; the model's real shape is what clients expect.
        output.shape = list(array.shape)
        return output

    def _observe_rows(self, feeds: dict[str, np.ndarray]) -> None:
        first = next(iter(feeds.values()), None)
        if first is not None and first.ndim > 0:
            self._run_rows.observe(int(first.shape[0]))
