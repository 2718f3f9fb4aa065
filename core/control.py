"""The control API: everything the dashboard does to an engine, over HTTP.

``POST /v1/engine/{method}`` with ``{"args": [...], "kwargs": {...}}`` calls that method of
the server's :class:`~core.Engine` and answers ``{"result": ...}``; ``/v1/store/{method}``
does the same for the experiment history. Arguments and results travel in the
:mod:`core.wire` encoding, so :class:`~core.client.RemoteEngine` gets the engine's own types
back. Only the methods listed here can be called; a method that takes a callback in-process
(warm-up progress, sweeps) is a job here (``start_job``), watched with ``job``/``jobs``.

Errors come back as ``{"error": message, "type": class name}`` with the status the data
plane uses (400 bad input, 404 unknown name, 503 overloaded or closed, 500 failed).

Example:
    $ curl -s -XPOST localhost:8000/v1/engine/status -d '{}'
    {"result": {"models": 3, "queue_depth": 0, ...}}
"""

from __future__ import annotations

import inspect
from typing import Any

from .errors import ConfigError
from .wire import decode, encode

__all__ = ["ENGINE_METHODS", "STORE_METHODS", "call", "server_info"]

#: Engine methods the control API serves (the contract the pages and notebooks use).
ENGINE_METHODS = frozenset({
    "load_model", "unload_model", "models", "model_names", "model_info", "sample_input",
    "cache_entries", "evict_cache", "configure", "batch_config", "learned_cost",
    "predict", "metrics", "reset_metrics", "queue_depth", "timeline",
    "warmup", "is_warm", "warm_sizes", "last_warmup", "measure_memory", "memory_profile",
    "status", "create_ab", "update_ab", "delete_ab", "ab_arms", "ab_experiments",
    "ab_report", "ab_metrics", "ab_match_settings",
    "start_traffic", "stop_traffic", "wait_traffic", "traffic", "traffic_running",
    "start_job", "jobs", "job", "cancel_job", "wait_job", "counters", "model_bytes",
    "add_remote", "remote_info",
})

#: The only classes an argument may be (built with their own validation).
ARGUMENT_TYPES = frozenset({"core.config:BatchConfig", "core.config:SessionConfig"})

#: Experiment-history methods (``engine.store``).
STORE_METHODS = frozenset({"list", "get", "delete", "compare", "export_csv", "save"})

# Keyword arguments a remote caller may not pass: callbacks and events live in-process.
_LOCAL_ONLY = frozenset({"progress", "stop"})


def _check_no_server_paths(room: str, method: str, fn: Any, args: list, kwargs: dict) -> None:
    """Nothing over HTTP names a file on the server: a model travels as bytes (the client
    reads the path on its side), and the history's CSV comes back as text."""
    bound = inspect.signature(fn).bind(*args, **kwargs).arguments
    if room == "engine" and method == "load_model":
        if not isinstance(bound.get("source"), (bytes, bytearray)):
            raise ConfigError("load_model over HTTP takes the model's bytes, not a path on the "
                              "server (RemoteEngine.load_model reads a local path and sends it)")
        if "probe" in bound:
            raise ConfigError("load_model over HTTP cannot choose whether the upload is tried "
                              "in a child process first: the server decides (--no-probe)")
    if room == "store" and method == "export_csv" and bound.get("path") is not None:
        raise ConfigError("export_csv over HTTP returns the CSV text; it writes no file on the "
                          "server (leave path unset and save the text where you want it)")


def server_info(engine: Any) -> dict[str, Any]:
    """What a client needs once: the budget, the engine's configuration, the methods."""
    return {"name": "batchlab", "memory_budget_bytes": engine.memory_budget_bytes,
            "config": encode(engine.config), "engine_methods": sorted(ENGINE_METHODS),
            "store_methods": sorted(STORE_METHODS)}


def call(engine: Any, room: str, method: str, body: Any) -> Any:
    """Run ``room.method(*args, **kwargs)`` from a decoded request body; the result is
    encoded for the wire. Raises what the method raises."""
    allowed = ENGINE_METHODS if room == "engine" else STORE_METHODS
    if method not in allowed:
        raise LookupError(f"no control method {room}.{method}; available: "
                          f"{', '.join(sorted(allowed))}")
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ConfigError("the body must be a JSON object with 'args' (a list) and 'kwargs' "
                          "(an object)")
    args = decode(body.get("args") or [], allowed=ARGUMENT_TYPES)
    kwargs = decode(body.get("kwargs") or {}, allowed=ARGUMENT_TYPES)
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ConfigError("'args' must be a list and 'kwargs' an object")
    bad = _LOCAL_ONLY & set(kwargs)
    if bad:
        raise ConfigError(f"{method}: {', '.join(sorted(bad))} cannot be passed over HTTP; "
                          "use a job (start_job) to get progress and cancel")
    fn = getattr(engine if room == "engine" else engine.store, method)
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as err:
        raise ConfigError(f"{method}: {err}") from None
    _check_no_server_paths(room, method, fn, args, kwargs)
    if room == "engine" and method == "load_model":
        # An upload is an upload, whatever it calls itself ("demo" would skip the probe
        # and the size limit).
        label = str(kwargs.get("source_label") or "upload")
        kwargs["source_label"] = label if label.startswith("upload") else f"upload: {label}"
    return encode(fn(*args, **kwargs))
