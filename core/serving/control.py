"""The control API: everything the dashboard does to an engine, over HTTP.

``POST /v1/engine/{method}`` with ``{"args": [...], "kwargs": {...}}`` calls that method of
the server's :class:`~core.Engine` and answers ``{"result": ...}``; ``/v1/store/{method}``
does the same for the experiment history. Arguments and results travel in the
:mod:`core.protocol.wire` encoding, so :class:`~core.serving.client.RemoteEngine` gets the engine's own types
back. Only the methods listed here can be called; a method that takes a callback in-process
(warm-up progress, sweeps) is a job here (``start_job``), watched with ``job``/``jobs``.

Errors come back as ``{"error": message, "type": class name}`` with the status the data
plane uses (400 bad input or an argument of the wrong type, 404 unknown name, 413 more than
the server's memory budget or limits take, 503 overloaded or closed, 500 failed).

Example:
    $ curl -s -XPOST localhost:8000/v1/engine/status -d '{}'
    {"result": {"models": 3, "queue_depth": 0, ...}}
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from core.config import plain_types
from core.errors import ConfigError
from core.protocol import HTTPError, WireError
from . import timeouts
from .wire_types import WIRE

__all__ = ["Method", "ENGINE_CONTRACT", "ENGINE_METHODS", "STATE_METHODS", "STORE_CONTRACT",
           "STORE_METHODS",
           "ARGUMENT_TYPES", "call", "server_info"]

@dataclass(frozen=True)
class Method:
    """How a method travels: whether it only reads (a client may send it again when a pooled
    connection turns out dead), and how long a client waits for its answer (seconds; None:
    as long as it takes; ``DEFAULT``: the client's own timeout). ``waits_by``: the keyword
    arguments that say how long instead, with what makes them seconds."""

    reads: bool = False
    wait_s: float | None | str = "default"
    waits_by: tuple[tuple[str, float], ...] = ()


DEFAULT = "default"
_R = Method(reads=True)
_W = Method()

#: The engine methods the control API serves (the contract the pages and notebooks use):
#: the one list, read by the server (what may be called) and :class:`RemoteEngine` (its
#: methods, retries and timeouts).
ENGINE_CONTRACT: dict[str, Method] = {
    "load_model": Method(wait_s=900.0), "unload_model": _W, "models": _R, "model_names": _R,
    "model_info": _R, "sample_input": _R, "cache_entries": _R, "evict_cache": _W,
    "configure": _W, "batch_config": _R, "learned_cost": _R,
    "policy_state": _R, "class_metrics": _R,
    "class_comparison": _R,
    "predict": Method(wait_s=120.0, waits_by=(("timeout_ms", 1e-3), ("timeout", 1.0))),
    "metrics": _R, "reset_metrics": _W, "queue_depth": _R, "timeline": _R,
    "breakdown": _R,
    "warmup": Method(wait_s=600.0), "is_warm": _R, "warm_sizes": _R, "last_warmup": _R,
    "measure_memory": Method(wait_s=900.0), "memory_profile": _R, "status": _R,
    "create_ab": _W, "update_ab": _W, "delete_ab": _W, "ab_arms": _R, "ab_experiments": _R,
    "ab_report": _R, "ab_metrics": _R, "ab_match_settings": _W,
    "start_traffic": _W, "stop_traffic": _W,
    "wait_traffic": Method(wait_s=None, waits_by=(("timeout_s", 1.0),)),
    "traffic": _R, "traffic_running": _R, "start_job": _W, "jobs": _R, "job": _R,
    "cancel_job": _W, "wait_job": Method(wait_s=None, waits_by=(("timeout_s", 1.0),)),
    "counters": _R, "model_bytes": _R,
    "add_remote": _W, "remote_info": _R, "server_stats": _R,
    "set_inputs": _W, "clear_inputs": _W, "input_source": _R, "session_config": _R,
    "events": _R, "model_file": Method(reads=True, wait_s=300.0),
}
ENGINE_METHODS = frozenset(ENGINE_CONTRACT)
#: The methods that change what a server keeps across a restart (core/serving/state.py):
#: after one of these the state is written before the answer; other writes (predict,
#: traffic, jobs...) leave it to the periodic save.
STATE_METHODS = frozenset({
    "load_model", "unload_model", "configure", "create_ab", "update_ab", "delete_ab",
    "ab_match_settings", "add_remote", "set_inputs", "clear_inputs",
    "reset_metrics"})   # (it clears A/B segments: a crash after its answer brought them back)

#: Experiment-history methods (``engine.store``).
STORE_CONTRACT: dict[str, Method] = {
    "list": _R, "get": _R, "delete": _W, "compare": _R, "export_csv": _R, "save": _W,
    "usage": _R}
STORE_METHODS = frozenset(STORE_CONTRACT)

#: The only types an argument may be (built with their own validation).
ARGUMENT_TYPES = frozenset({"BatchConfig", "SessionConfig"})

#: Keyword arguments a remote caller may not pass: callbacks and events live in-process.
LOCAL_ONLY = frozenset({"progress", "stop"})


def _check_no_server_paths(room: str, method: str, fn: Any, args: list, kwargs: dict) -> None:
    """Nothing over HTTP names a file on the server: a model and real inputs travel as bytes
    (the client reads the path on its side), and the history's CSV comes back as text."""
    bound = inspect.signature(fn).bind(*args, **kwargs).arguments
    if room == "engine" and method == "load_model":
        if not isinstance(bound.get("source"), (bytes, bytearray)):
            raise ConfigError("load_model over HTTP takes the model's bytes, not a path on the "
                              "server (RemoteEngine.load_model reads a local path and sends it)")
        if "probe" in bound:
            raise ConfigError("load_model over HTTP cannot choose whether the upload is tried "
                              "in a child process first: the server decides (--no-probe)")
    if room == "engine" and method == "set_inputs" \
            and not isinstance(bound.get("data"), (bytes, bytearray)):
        raise ConfigError("set_inputs over HTTP takes the file's bytes with filename=, not a "
                          "path on the server (RemoteEngine.set_inputs reads a local file or "
                          "folder and sends it)")
    if room == "store" and method == "export_csv" and bound.get("path") is not None:
        raise ConfigError("export_csv over HTTP returns the CSV text; it writes no file on the "
                          "server (leave path unset and save the text where you want it)")


def _check_types(method: str, fn: Any, args: list, kwargs: dict) -> None:
    """A remote caller's argument of the wrong type is its mistake, said as such (a 400
    that names the parameter), not a TypeError from deep in the method (a 500)."""
    sig = inspect.signature(fn)
    for name, value in sig.bind(*args, **kwargs).arguments.items():
        kinds = plain_types(sig.parameters[name].annotation)
        if kinds is None or isinstance(value, kinds):
            continue
        shown = repr(value)
        raise ConfigError(f"{method}: {name} must be {sig.parameters[name].annotation}, got "
                          f"{type(value).__name__} {shown[:60]}{'…' if len(shown) > 60 else ''}")


def _decoded(method: str, body: dict, part: str, empty: Any) -> Any:
    """``body[part]`` decoded: a payload the wire did not make (a tag without its fields, too
    deep...) is the caller's mistake, a 400 that names the tag and its form, not a 500."""
    try:
        return WIRE.decode(body.get(part) or empty, allowed=ARGUMENT_TYPES)
    except WireError as err:
        raise ConfigError(f"{method}: {part!r}: {err}") from None


def server_info(engine: Any) -> dict[str, Any]:
    """What a client needs once: the budget, the engine's configuration, the methods."""
    return {"name": "batchlab", "memory_budget_bytes": engine.memory_budget_bytes,
            "config": WIRE.encode(engine.config), "engine_methods": sorted(ENGINE_METHODS),
            "store_methods": sorted(STORE_METHODS)}


def call(engine: Any, room: str, method: str, body: Any,
         max_timeout_ms: float | None = None) -> Any:
    """Run ``room.method(*args, **kwargs)`` from a decoded request body; the result is
    encoded for the wire. Raises what the method raises. A timeout the call would set is
    checked against ``max_timeout_ms`` (:mod:`.timeouts`)."""
    allowed = ENGINE_METHODS if room == "engine" else STORE_METHODS
    if method not in allowed:
        raise HTTPError(404, f"no control method {room}.{method}; available: "
                             f"{', '.join(sorted(allowed))}")
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ConfigError("the body must be a JSON object with 'args' (a list) and 'kwargs' "
                          "(an object)")
    args, kwargs = _decoded(method, body, "args", []), _decoded(method, body, "kwargs", {})
    # Decoded: the JSON text (an upload's base64, a third larger than the model) goes
    # before the call makes the model's session.
    body.clear()
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ConfigError("'args' must be a list and 'kwargs' an object")
    bad = LOCAL_ONLY & set(kwargs)
    if bad:
        raise ConfigError(f"{method}: {', '.join(sorted(bad))} cannot be passed over HTTP; "
                          "use a job (start_job) to get progress and cancel")
    fn = getattr(engine if room == "engine" else engine.store, method)
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as err:
        raise ConfigError(f"{method}: {err}") from None
    _check_no_server_paths(room, method, fn, args, kwargs)
    _check_types(method, fn, args, kwargs)
    if room == "engine":
        timeouts.check_call(fn, method, args, kwargs, max_timeout_ms)
        if method == "warmup":
            args, kwargs = timeouts.cap_warmup(fn, args, kwargs, max_timeout_ms,
                                              engine.config.warmup_time_limit_s)
    if room == "engine" and method == "load_model":
        # An upload is an upload, whatever it calls itself ("demo" would skip the probe
        # and the size limit).
        label = str(kwargs.get("source_label") or "upload")
        kwargs["source_label"] = label if label.startswith("upload") else f"upload: {label}"
    return WIRE.encode(fn(*args, **kwargs))
