"""Exports of a chosen setting to the servers people deploy: Triton (``config.pbtxt``),
TF Serving (batching parameters), MLServer (``model-settings.json``), KServe (an
InferenceService with its batcher) and Ray Serve (a config of Batchlab engine replicas).

Example:
    >>> print(triton_config(32, 2.0))
    max_batch_size: 32
    dynamic_batching {
    ...
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Sequence

from core.config import BatchConfig, _MAX_BATCH_LIMIT, _MAX_WAIT_LIMIT_MS, _check_float, _check_int, _shown
from core.config import plain as _plain
from core.errors import ConfigError
from core.peers import RUNTIME_MODULE
from core.protocol import triton

__all__ = ["triton_config", "tf_serving_batching", "mlserver_settings", "MLSERVER_BATCHLAB_RUNTIME",
           "kserve_inference_service", "kserve_name", "provenance", "ray_serve_config",
           "RAY_SERVE_IMPORT_PATH"]


def triton_config(max_batch_size: int, max_wait_ms: float,
                  preferred_batch_sizes: Sequence[int] | None = None,
                  max_queue: int | None = None, instances: int | None = None,
                  intra_op_threads: int | None = None, comment: str | None = None) -> str:
    """A Triton ``config.pbtxt`` fragment: ``max_batch_size``, a ``dynamic_batching`` block,
    given ``instances`` an ``instance_group``, given ``intra_op_threads`` the ONNX Runtime
    backend's thread count, and ``comment`` lines saying where it comes from
    (:func:`core.protocol.triton.pbtxt`; :func:`provenance` writes one for a sweep).

    Triton's ``max_queue_delay_microseconds`` is the same deadline rule as Batchlab's
    default policy (the wait starts with the oldest request).
    """
    _check_batching(max_batch_size, max_wait_ms)
    if preferred_batch_sizes is not None and (isinstance(preferred_batch_sizes, str)
                                              or not isinstance(preferred_batch_sizes, Sequence)):
        raise ConfigError("preferred_batch_sizes must be None or a list of ints such as [16, "
                          f"32], got {_shown(preferred_batch_sizes)}")
    for i, size in enumerate(preferred_batch_sizes or ()):  # Triton: none past max_batch_size
        _check_int(f"preferred_batch_sizes[{i}]", _plain(size), 1, int(max_batch_size))
    _check_optional_ints(max_queue=(max_queue, 1, 10_000_000), instances=(instances, 1, 1024),
                         intra_op_threads=(intra_op_threads, 0, 1024))
    _check_comment(comment)
    return triton.pbtxt(max_batch_size, max_wait_ms, preferred_batch_sizes, max_queue,
                        instances, intra_op_threads, comment)


def provenance(frame: Any, max_batch_size: int, max_wait_ms: float, p99_ms: float | None,
               load: float | None, run_id: int | None = None,
               runs_policy: bool = False) -> str:
    """Where exported settings come from, for the export's comment lines: the run, the
    target and load, and every setting that was pinned while they were measured; a policy
    other than ``deadline`` is named with a warning (production servers batch by the
    deadline rule), unless the server ``runs_policy`` (Batchlab's replicas on Ray Serve)."""
    _check_batching(max_batch_size, max_wait_ms)
    for field, value in (("p99_ms", p99_ms), ("load", load)):
        if value is not None:
            _check_float(field, _plain(value), 0.0, 1e12)
    rows = frame[(frame["max_batch_size"] == max_batch_size)
                 & (frame["max_wait_ms"] == max_wait_ms)]
    first = rows.iloc[0] if len(rows) else frame.iloc[0]
    policy = first.get("policy", "deadline")
    slo = first.get("latency_slo_ms")
    threads = first.get("session_threads")
    text = (f"Batchlab: max_batch_size={max_batch_size}, max_wait_ms={max_wait_ms:g}"
            + (f", chosen by sweep run {run_id}" if run_id is not None else "")
            + (f" for p99 <= {p99_ms:g} ms at {load:,.0f} req/s" if p99_ms and load else "")
            + ".\nMeasured under policy " + str(policy)
            + (f", latency_slo_ms={float(slo):g}" if slo is not None and slo == slo
               else ", no latency SLO")
            + f", {int(first.get('instances', 1) or 1)} instance(s)"
            + (f", {int(threads)} ONNX Runtime thread(s)" if threads is not None
               and threads == threads else "") + ".")
    if policy != "deadline" and not runs_policy:
        text += ("\nWARNING: measured under Batchlab's " + str(policy) + " policy; this "
                 "server batches by the deadline rule. Sweep under policy deadline before "
                 "relying on these numbers here.")
    return text


def tf_serving_batching(max_batch_size: int, max_wait_ms: float, num_batch_threads: int = 1,
                        max_enqueued_batches: int = 100, comment: str | None = None) -> str:
    """A TF Serving ``--batching_parameters_file`` (protobuf text format); ``comment`` lines
    (where it comes from) as ``#`` lines at the top."""
    _check_batching(max_batch_size, max_wait_ms)
    _check_int("num_batch_threads", _plain(num_batch_threads), 1, 1024)
    _check_int("max_enqueued_batches", _plain(max_enqueued_batches), 1, 10_000_000)
    _check_comment(comment)
    head = "".join(f"{line}\n" for line in _comment_lines(comment))
    return head + (f"max_batch_size {{ value: {int(max_batch_size)} }}\n"
            f"batch_timeout_micros {{ value: {int(round(max_wait_ms * 1000))} }}\n"
            f"max_enqueued_batches {{ value: {int(max_enqueued_batches)} }}\n"
            f"num_batch_threads {{ value: {int(num_batch_threads)} }}\n")


#: The MLServer runtime Batchlab ships (``core/peers/mlserver_runtime.py``, which
#: ``core.peers.mlserver`` copies next to the models as the module ``batchlab_onnx_runtime``).
#: MLServer has no ONNX runtime of its own, so a ``model-settings.json`` must name one.
MLSERVER_BATCHLAB_RUNTIME = f"{RUNTIME_MODULE}.OnnxRuntimeModel"

# MLServer reads max_batch_time <= 0 as "adaptive batching off" (docs: user-guide/adaptive-
# batching, "0, will disable adaptive batching"; mlserver/batching/hooks.py load_batching). A
# Batchlab wait of 0 still batches what is already queued, and so does MLServer with a tiny
# positive wait: its batcher takes queued requests at once and waits only for an empty queue.
_MLSERVER_MIN_BATCH_TIME_S = 1e-6

# KServe's InferenceService names (its validating webhook's IsvcNameFmt), at most 63
# characters: the name becomes Kubernetes Service and host names (DNS-1035 labels).
_KSERVE_NAME_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_KSERVE_NAME_MAX = 63
_K8S_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# KServe's batcher sidecar reads maxLatency <= 0 as its default, 5000 ms (pkg/batcher/handler.go).
_KSERVE_DEFAULT_MAX_LATENCY_MS = 5000


def _check_batching(max_batch_size: Any, max_wait_ms: Any) -> None:
    """Batch settings checked as :class:`core.config.BatchConfig` checks them (numpy numbers
    too): :class:`ConfigError` says what was given and what is expected."""
    _check_int("max_batch_size", _plain(max_batch_size), 1, _MAX_BATCH_LIMIT)
    _check_float("max_wait_ms", _plain(max_wait_ms), 0.0, _MAX_WAIT_LIMIT_MS)


def _check_optional_ints(**fields: tuple[Any, int, int]) -> None:
    for field, (value, low, high) in fields.items():
        if value is not None:
            _check_int(field, _plain(value), low, high)


def _check_comment(comment: Any) -> None:
    if comment is not None and not isinstance(comment, str):
        raise ConfigError(f"comment must be None or a string (lines for the top of the file, "
                          f"e.g. provenance(...)), got {_shown(comment)}")


def _comment_lines(comment: str | None) -> list[str]:
    """``comment`` as ``#`` lines (YAML's, protobuf text's: Triton's own in
    :func:`core.protocol.triton.pbtxt`)."""
    return [f"# {line}".rstrip() for line in (comment or "").splitlines()]


def _check_text(field: str, value: object, example: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{field} must be a non-empty string such as {example!r}, got {value!r}")


def mlserver_settings(name: str, max_batch_size: int, max_wait_ms: float, *,
                      implementation: str = MLSERVER_BATCHLAB_RUNTIME,
                      uri: str = "./model.onnx") -> str:
    """MLServer's ``model-settings.json`` (indented JSON text) serving ``uri`` with adaptive
    batching at these settings.

    Fields (MLServer's ModelSettings reference and its adaptive-batching guide):
    ``max_batch_size`` is the most *requests* MLServer merges (Batchlab counts rows; the same
    for one-row requests), and 0 or 1 turns adaptive batching off; ``max_batch_time`` is in
    **seconds** (``max_wait_ms / 1000``), and 0 turns it off too, so a wait of 0 with
    ``max_batch_size > 1`` is written as 1e-6 s (MLServer then merges what is already queued,
    as Batchlab does with a wait of 0). ``parameters.uri`` is resolved relative to the folder
    of ``model-settings.json``.

    ``implementation`` is the Python path of the MLServer runtime that loads the model.
    MLServer ships no ONNX runtime; the default is Batchlab's
    (:data:`MLSERVER_BATCHLAB_RUNTIME`, ``batchlab_onnx_runtime.OnnxRuntimeModel``): copy
    ``core/peers/mlserver_runtime.py`` as ``batchlab_onnx_runtime.py`` into the folder given
    to ``mlserver start`` (what ``core.peers.mlserver.MLServerProcess`` does). To use your own
    runtime, pass its path (``my_package.MyOnnxModel``).

    Example:
        >>> print(mlserver_settings("mlp", 32, 2.0))
        {
          "name": "mlp",
          "implementation": "batchlab_onnx_runtime.OnnxRuntimeModel",
          "platform": "onnxruntime",
          "max_batch_size": 32,
          "max_batch_time": 0.002,
          "parameters": {
            "uri": "./model.onnx"
          }
        }
    """
    _check_batching(max_batch_size, max_wait_ms)
    _check_text("name", name, "mlp")
    _check_text("implementation", implementation, MLSERVER_BATCHLAB_RUNTIME)
    module, _, cls = implementation.strip().rpartition(".")
    if not module or not cls.isidentifier():
        raise ConfigError("implementation must be the Python path of an MLServer runtime class "
                          f"('package.module.ClassName', e.g. {MLSERVER_BATCHLAB_RUNTIME!r}), "
                          f"got {implementation!r}")
    _check_text("uri", uri, "./model.onnx")
    batch_time_s = float(max_wait_ms) / 1000.0
    if max_batch_size > 1 and batch_time_s == 0.0:
        batch_time_s = _MLSERVER_MIN_BATCH_TIME_S
    settings = {"name": name, "implementation": implementation.strip(), "platform": "onnxruntime",
                "max_batch_size": int(max_batch_size), "max_batch_time": batch_time_s,
                "parameters": {"uri": uri}}
    return json.dumps(settings, indent=2) + "\n"


def kserve_name(name: str) -> str:
    """``name`` made a valid KServe InferenceService name: lowercase letters, digits and '-',
    starting with a letter, ending with a letter or digit, at most 63 characters.

    Example:
        >>> kserve_name("ResNet_50.v2"), kserve_name("3d_unet")
        ('resnet-50-v2', 'model-3d-unet')
    """
    out = re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")
    if not out:
        return "model"
    if not out[0].isalpha():  # KServe names start with a letter
        out = f"model-{out}"
    return out[:_KSERVE_NAME_MAX].rstrip("-")


def kserve_inference_service(name: str, max_batch_size: int, max_wait_ms: float, *,
                             storage_uri: str = "s3://bucket/path/to/model",
                             runtime: str | None = None, comment: str | None = None) -> str:
    """A KServe ``InferenceService`` (YAML text) serving the ONNX model at ``storage_uri``
    over the Open Inference Protocol, with KServe's batcher at these settings.

    ``name`` must already be a valid InferenceService name (KServe's rule: lowercase letters,
    digits and '-', starting with a letter, at most 63 characters); :class:`ConfigError` says
    so and suggests one, and :func:`kserve_name` makes one from any model name.

    How KServe batches (its Inference Batcher guide and ``pkg/batcher/handler.go``): the
    predictor's ``batcher`` block (``maxBatchSize``: instances, i.e. rows; ``maxLatency``:
    whole **milliseconds**, the wait from the first request of a batch) runs in the model
    agent sidecar. ``max_wait_ms`` is rounded to whole milliseconds, at least 1, because
    KServe reads ``maxLatency`` 0 as its default of 5000 ms. The sidecar batches only v1
    ``:predict`` requests; Open Inference Protocol (v2) requests pass through it unbatched,
    so with ``protocolVersion: v2`` the model server's own batching is what counts: put
    :func:`triton_config`'s ``config.pbtxt`` (Triton, KServe's default runtime for
    ``onnx`` + v2) or :func:`mlserver_settings`'s ``model-settings.json`` (an MLServer-based
    ServingRuntime) next to the model at ``storage_uri``. The YAML says this in a comment.

    ``runtime`` pins a ServingRuntime by name (e.g. ``kserve-tritonserver``, or one of your
    own); None lets KServe choose one that supports ``onnx`` over v2. ``comment``: lines
    saying where the settings come from (:func:`provenance`), at the top.

    Example:
        >>> print(kserve_inference_service("mlp", 32, 2.0, storage_uri="s3://models/mlp"))
    """
    _check_batching(max_batch_size, max_wait_ms)
    if not isinstance(name, str) or not (
            _KSERVE_NAME_RE.fullmatch(name) and len(name) <= _KSERVE_NAME_MAX):
        raise ConfigError(f"name must be a KServe InferenceService name (lowercase letters, "
                          f"digits and '-', starting with a letter, ending with a letter or "
                          f"digit, at most {_KSERVE_NAME_MAX} characters), got {name!r}; "
                          f"try {kserve_name(name if isinstance(name, str) else '')!r}")
    _check_text("storage_uri", storage_uri, "s3://bucket/path/to/model")
    if "://" not in storage_uri:
        raise ConfigError("storage_uri must be a URI with a scheme, such as 's3://bucket/"
                          f"path/to/model' or 'pvc://claim/path', got {storage_uri!r}")
    if runtime is not None and not (isinstance(runtime, str) and _K8S_LABEL_RE.fullmatch(runtime)
                                    and len(runtime) <= 63):
        raise ConfigError("runtime must be None (KServe chooses) or a ServingRuntime name such "
                          f"as 'kserve-tritonserver', got {runtime!r}")
    _check_comment(comment)
    latency_ms = max(1, int(math.floor(float(max_wait_ms) + 0.5)))
    lines = [*_comment_lines(comment),
        f"# From Batchlab: max_batch_size={int(max_batch_size)}, "
        f"max_wait_ms={float(max_wait_ms):g}.",
        "# batcher: maxBatchSize counts instances (rows); maxLatency is whole milliseconds,",
        f"# at least 1 (KServe reads 0 as its default, {_KSERVE_DEFAULT_MAX_LATENCY_MS} ms).",
        "# KServe's batcher batches v1 :predict requests only; v2 (Open Inference Protocol)",
        "# requests pass through it unbatched. So also put the server's own batching next",
        "# to the model at storageUri: Batchlab's Triton config.pbtxt or MLServer",
        "# model-settings.json.",
        "apiVersion: serving.kserve.io/v1beta1",
        "kind: InferenceService",
        "metadata:",
        f"  name: {name}",
        "spec:",
        "  predictor:",
        "    batcher:",
        f"      maxBatchSize: {int(max_batch_size)}",
        f"      maxLatency: {latency_ms}",
        "    model:",
        "      modelFormat:",
        "        name: onnx",
        "      protocolVersion: v2",
    ]
    if runtime is not None:
        lines.append(f"      runtime: {runtime}")
    # A JSON string is a valid YAML double-quoted scalar: any URI is quoted safely.
    lines.append(f"      storageUri: {json.dumps(storage_uri)}")
    return "\n".join(lines) + "\n"


#: The Ray Serve application builder of Batchlab engine replicas (core/cluster/app.py).
RAY_SERVE_IMPORT_PATH = "core.cluster.app:build"


def ray_serve_config(name: str, max_batch_size: int, max_wait_ms: float, *,
                     num_replicas: int = 1, max_ongoing_requests: int | None = None,
                     replica_cpus: float = 1.0, model_path: str = "./model.onnx",
                     http_port: int = 8000, check_rows: bool = True,
                     policy: str = "deadline", latency_slo_ms: float | None = None,
                     comment: str | None = None) -> str:
    """A Ray Serve config file (YAML text, for ``serve deploy``) serving ``model_path`` as
    Batchlab engine replicas (``core.cluster``) at these batch settings, which travel as the
    deployment's ``user_config`` (changed live by editing them and deploying again).

    ``max_ongoing_requests`` (per replica) defaults to twice ``max_batch_size``: a replica
    sent fewer requests at once than a batch has rows never fills a batch (Ray Serve issue
    43288). ``check_rows=False``: the replicas batch the model without its row check
    (``Engine.load_model``'s), on its owner's word. The cluster's Python needs Batchlab's
    ``core`` package importable (the ``runtime_env``'s ``working_dir`` set to a checkout
    does it). ``policy`` and ``latency_slo_ms``: the release policy the replicas batch by
    (the one the settings were measured under: the replicas are Batchlab's engine, and run
    it); ``comment``: lines saying where the settings come from, at the top.

    Example:
        >>> print(ray_serve_config("mlp", 32, 2.0, num_replicas=2))   # doctest: +ELLIPSIS
        # Ray Serve config: serve deploy this file ...
    """
    _check_batching(max_batch_size, max_wait_ms)
    _check_text("name", name, "mlp")
    _check_text("model_path", model_path, "./model.onnx")
    if isinstance(num_replicas, bool) or not (isinstance(num_replicas, int) and num_replicas >= 1):
        raise ConfigError(f"num_replicas must be a whole number >= 1, got {num_replicas!r}")
    ongoing = 2 * int(max_batch_size) if max_ongoing_requests is None else max_ongoing_requests
    if isinstance(ongoing, bool) or not (isinstance(ongoing, int) and ongoing >= 1):
        raise ConfigError(f"max_ongoing_requests must be a whole number >= 1, got {ongoing!r}")
    _check_float("replica_cpus", _plain(replica_cpus), 0.0, 1024.0)
    _check_int("http_port", _plain(http_port), 1, 65535)
    if not isinstance(check_rows, bool):
        raise ConfigError(f"check_rows must be True or False, got {check_rows!r}")
    _check_comment(comment)
    BatchConfig(max_batch_size=int(max_batch_size), max_wait_ms=float(max_wait_ms),
                policy=policy, latency_slo_ms=_plain(latency_slo_ms))   # (checked as one)
    warn = "".join(f"{line}\n" for line in _comment_lines(comment))
    if ongoing < max_batch_size:
        warn += (f"# WARNING: max_ongoing_requests={ongoing} < max_batch_size={max_batch_size}:"
                " a replica's batches never fill.\n")
    q = json.dumps
    return (f"# Ray Serve config: serve deploy this file (Batchlab engine replicas, "
            f"core.cluster).\n{warn}"
            f"http_options:\n  host: 0.0.0.0\n  port: {int(http_port)}\n"
            f"applications:\n"
            f"  - name: {q('batchlab-' + name)}\n"
            f"    route_prefix: {q('/' + name)}\n"
            f"    import_path: {RAY_SERVE_IMPORT_PATH}\n"
            f"    args:\n      name: {q(name)}\n      model_path: {q(model_path)}\n"
            + ("" if check_rows else "      check_rows: false\n") +
            f"    deployments:\n"
            f"      - name: {q(name)}\n"
            f"        num_replicas: {int(num_replicas)}\n"
            f"        max_ongoing_requests: {int(ongoing)}\n"
            f"        ray_actor_options:\n          num_cpus: {float(replica_cpus):g}\n"
            f"        user_config:\n          batch:\n"
            f"            max_batch_size: {int(max_batch_size)}\n"
            f"            max_wait_ms: {float(max_wait_ms):g}\n"
            + (f"            policy: {q(policy)}\n" if policy != "deadline" else "")
            + (f"            latency_slo_ms: {float(latency_slo_ms):g}\n"
               if latency_slo_ms is not None else ""))
