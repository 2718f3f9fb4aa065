"""What ``add_remote`` learns from a server: the server, the model's metadata (its tensors,
or the ones a user declares), readiness, and the batch settings the server reports.

Example:
    >>> remote = connect_remote("m", "http://127.0.0.1:8080", "mlp")
    >>> remote.info.inputs, remote.batching.source
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from core.errors import ConfigError, RemoteTargetError
from core.models import ModelInfo, TensorSpec, batch_mode, onnx_type, OIP_DTYPES
from core.protocol import triton
from .model import RemoteModel
from .settings import BatchingSource, ServerBatching
from .target import OIPTarget, describe_failure, server_words

__all__ = ["connect_remote", "parse_tensor_list"]


def _specs(entries: Any, kind: str, where: str) -> tuple[TensorSpec, ...]:
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise RemoteTargetError(f"{where}: the model metadata's {kind!r} is not a list")
    specs = []
    for i, t in enumerate(entries):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise RemoteTargetError(f"{where}: {kind}[{i}] has no name")
        dt = t.get("datatype")
        onnx_name = onnx_type(dt) if isinstance(dt, str) else None
        if onnx_name is None:
            raise RemoteTargetError(f"{where}: {kind} {t['name']!r} has datatype {dt!r}; "
                                    f"expected one of {', '.join(OIP_DTYPES)} or BYTES")
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                  for d in shape):
            raise RemoteTargetError(f"{where}: {kind} {t['name']!r} has shape {shape!r}; "
                                    "expected a list of integers (-1 for dynamic)")
        dims = tuple(("N" if k == 0 else None) if d < 0 else d for k, d in enumerate(shape))
        if any(sp.name == t["name"] for sp in specs):
            raise RemoteTargetError(f"{where}: two {kind} are named {t['name']!r}")
        specs.append(TensorSpec(t["name"], onnx_name, OIP_DTYPES.get(dt, np.dtype(object)),
                                dims))
    return tuple(specs)


def declared_tensors(specs: Any) -> list[dict[str, Any]] | None:
    """User-given tensors ({name, datatype, shape}) checked, or None."""
    if specs is None:
        return None
    if not isinstance(specs, (list, tuple)) or not specs:
        raise ConfigError("inputs/outputs must be a non-empty list of "
                          '{"name": ..., "datatype": "FP32", "shape": [-1, 4]}')
    out = []
    for t in specs:
        if not isinstance(t, dict) or not {"name", "datatype", "shape"} <= set(t):
            raise ConfigError("each declared tensor needs name, datatype and shape, e.g. "
                              '{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}')
        out.append({"name": t["name"], "datatype": t["datatype"], "shape": list(t["shape"])})
    return out


def parse_tensor_list(text: str | None) -> list[dict[str, Any]] | None:
    """Tensors typed by a person (JSON list of ``{name, datatype, shape}``), checked; None
    when empty."""
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError as err:
        raise ConfigError(f"the tensors are not valid JSON ({err}); expected e.g. "
                          '[{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]') from None
    return declared_tensors(value)


def connect_remote(name: str, url: str, model: str, version: str | None = None,
                   headers: dict[str, str] | None = None, *, inputs: Any = None,
                   outputs: Any = None, timeout_s: float = 10.0, max_connections: int = 64,
                   binary: bool | None = None, policy: Any = None) -> RemoteModel:
    """Check the endpoint and read the model's metadata; raises
    :class:`RemoteTargetError` saying what was tried. ``policy``: an
    :class:`~core.remote.OutboundPolicy` the URL's addresses must pass (a server's)."""
    inputs_given, outputs_given = declared_tensors(inputs), declared_tensors(outputs)
    target = OIPTarget(url, model, version, headers, timeout_s, max_connections, binary,
                       policy=policy)
    try:
        return _connect(name, target, inputs_given, outputs_given, auto_binary=binary is None)
    except BaseException:
        target.close()
        raise


def _connect(name: str, target: OIPTarget, inputs_given: Any, outputs_given: Any,
             auto_binary: bool = False) -> RemoteModel:
    base = target.url

    def get(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        try:
            return target.fetch_json(method, path, body)
        except Exception as err:
            raise RemoteTargetError(
                f"could not add remote model {name!r}: "
                f"{describe_failure(err, base + path, target.timeout_s)}. Tried {method} "
                f"{base}{path}; check the URL (scheme, host, port) and that the server is "
                "running") from None

    status, server = get("GET", "/v2")
    if status != 200 or not isinstance(server, dict):
        server = {}
    if status in (401, 403):
        raise RemoteTargetError(f"{base} refused access ({status}) to GET /v2: give a "
                                "bearer token (headers={'Authorization': 'Bearer ...'})")
    status, meta = get("GET", target.model_path)
    if status != 200 or not isinstance(meta, dict):
        listed = ""
        s2, index = (0, None)
        try:
            s2, index = target.fetch_json("POST", "/v2/repository/index", {})
        except Exception:
            pass
        if s2 == 200 and isinstance(index, list):
            names = [m.get("name") for m in index if isinstance(m, dict)]
            listed = f"; it lists: {', '.join(map(str, names)) or 'no models'}"
        words = server_words(meta)
        if status in (401, 403):
            raise RemoteTargetError(f"{base} refused access ({status}) to model "
                                    f"{target.model!r}: give a bearer token")
        if status == 200:
            raise RemoteTargetError(f"{base}{target.model_path} answered something that is "
                                    "not Open Inference Protocol model metadata (a JSON "
                                    "object with name, inputs, outputs)")
        raise RemoteTargetError(
            f"{base} has no model {target.model!r}"
            f"{' version ' + repr(target.version) if target.version else ''} "
            f"(GET {target.model_path} answered {status}: {words}){listed}")
    where = f"{base}{target.model_path}"
    status, ready = get("GET", target.model_path + "/ready")
    if status != 200 or (isinstance(ready, dict) and ready.get("ready") is False):
        raise RemoteTargetError(f"model {target.model!r} on {base} is not ready "
                                f"(GET {target.model_path}/ready answered {status}); wait for "
                                "it to load, or load it on the server")
    in_specs = _specs(inputs_given if inputs_given is not None else meta.get("inputs"),
                      "inputs", where)
    out_specs = _specs(outputs_given if outputs_given is not None else meta.get("outputs"),
                       "outputs", where)
    declared = bool(meta.get("inputs")) and inputs_given is None
    kind = str(server.get("name", "")).lower()
    if auto_binary:
        # MLServer (1.7) answers binary inputs over HTTP with 422; every other server here
        # takes the binary tensor extension, which is cheaper to encode and parse.
        target.binary = kind != "mlserver"
    target.send_timeout = kind in ("batchlab", "triton")
    batching = _server_batching(target, meta, kind, server.get("extensions") or [], get)
    mode, reason = batch_mode(in_specs, rows_ok=False)
    if not in_specs:
        reason = ("the server declares no input tensors: Batchlab sends what you give it "
                  "(a single array as 'input-0', or a dict by name) and learns the inputs "
                  "from the first request that succeeds")
    info = ModelInfo(
        name=name, sha256=hashlib.sha256(f"{where}".encode()).hexdigest(), size_bytes=0,
        inputs=in_specs, outputs=out_specs, opset={}, ir_version=0,
        producer=f"{server.get('name', 'OIP server')} {server.get('version', '')}".strip(),
        batch_mode=mode, batch_reason=reason, source=f"remote {where}",
        description=f"model {target.model!r} served by {base}",
        providers=("remote",), dynamic_dims=("N",) if mode == "dynamic" else ())
    return RemoteModel(name, target, info, server_name=str(server.get("name", "?")),
                       server_version=str(server.get("version", "?")), kind=kind or "oip",
                       batching=batching, declared=declared)


def _server_batching(target: OIPTarget, meta: dict[str, Any], kind: str, extensions: list,
                     get: Any) -> ServerBatching:
    """The server's batch settings for the model, and how a client can change them."""
    if kind == "batchlab":
        configurable: str | None = "batchlab"
    elif any(str(e).startswith("model_repository") for e in extensions):
        configurable = "repository"
    else:
        configurable = None
    config_path = target.model_path + "/config"
    status, cfg = get("GET", config_path)
    if status == 200 and isinstance(cfg, dict):
        mbs, wait = triton.read_batching(cfg.get("config", cfg))  # KServe wraps it
        if mbs is not None or wait is not None:
            return ServerBatching(mbs, wait, BatchingSource.SERVER_CONFIG, configurable,
                                  f"GET {config_path}")
    params = meta.get("parameters") if isinstance(meta.get("parameters"), dict) else {}
    mbs, seconds = params.get("max_batch_size"), params.get("max_batch_time")
    mbs = mbs if isinstance(mbs, int) and not isinstance(mbs, bool) else None
    wait = float(seconds) * 1000.0 if isinstance(seconds, (int, float)) \
        and not isinstance(seconds, bool) and seconds >= 0 else None
    if mbs is not None or wait is not None:
        return ServerBatching(mbs, wait, BatchingSource.SERVER_METADATA, configurable)
    return ServerBatching(source=BatchingSource.UNKNOWN, configurable=configurable, detail=(
        "not reported by the server (MLServer reads max_batch_size and max_batch_time from "
        "model-settings.json)" if kind == "mlserver" else ""))
