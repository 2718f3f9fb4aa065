"""Remote models: a model served by any Open Inference Protocol (KServe v2) HTTP endpoint
(Triton, KServe, MLServer, Seldon, a Batchlab server) used like a local one.

``Engine.add_remote(name, url=..., model=...)`` reads the model's metadata from the server
(:class:`OIPTarget`), builds a :class:`~core.models.ModelInfo` from it so requests are
validated at ``submit`` as for a local model, and registers a :class:`RemoteDispatcher` in
place of a batcher: each request is sent as it comes (the *server* batches), over pooled
keep-alive connections, with the binary tensor extension, from one asyncio loop on a
daemon thread (``batchlab-oip-client``). Every ending goes through the same
:class:`~core.settle.Ledger` as a local request, so metrics, the timeline, A/B arms,
traffic and sweeps work unchanged; latency is measured at the client (submit to answer).

Failures are typed: :class:`~core.errors.RemoteTargetError` at ``add_remote`` (what was
tried and why it failed), :class:`~core.errors.RemoteServerError` (an HTTP error answer,
with the server's words) and :class:`~core.errors.RemoteConnectionError` (refused, dropped,
TLS) in a request's future, :class:`~core.errors.RequestTimeoutError` past its timeout.

Example:
    >>> engine.add_remote("mlp-mlserver", url="http://127.0.0.1:8080", model="mlp")
    >>> engine.predict("mlp-mlserver", x).total_ms     # measured at the client
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import math
import ssl
import threading
import time
from concurrent.futures import Future
from typing import Any, Sequence
from urllib.parse import quote, urlsplit

import numpy as np

from .adaptive import CostEstimator, RateEstimator
from .config import BatchConfig, check_timeout_ms
from .errors import (ConfigError, EngineClosedError, OverloadedError, RemoteConnectionError,
                     RemoteServerError, RemoteTargetError, RequestTimeoutError,
                     RequestTooLargeError)
from .metrics import ModelMetrics
from .models import ModelInfo, TensorSpec
from .oip import (DATATYPES, HEADER_LENGTH, OIPError, datatype, encode_infer_request,
                  parse_infer_response)
from .settle import Ledger, Request

__all__ = ["OIPTarget", "RemoteModel", "RemoteDispatcher", "RemoteValidator", "connect_remote",
           "points_at", "MAX_ANSWER_BYTES",
           "client_cpu_s", "REMOTE_REASON", "parse_tensor_list"]

log = logging.getLogger("batchlab.remote")

#: The release reason of a remote request (the server's batching is not visible).
REMOTE_REASON = "remote"

_perf = time.perf_counter

# How long after its deadline a remote request is failed if its call has not ended by then
# (aiohttp's own timeout normally ends it at the deadline).
_BACKSTOP_S = 1.0

#: The largest answer read from a server: an infer answer, and a control answer (metadata,
#: config, index). A larger one fails (RemoteServerError 502) without being read further,
#: so no server can make the engine's memory grow without bound.
MAX_ANSWER_BYTES = 64 * 2**20
MAX_CONTROL_ANSWER_BYTES = 4 * 2**20

# Answers larger than this are parsed on a worker thread, not on the shared client loop
# (one remote model's large answers must not hold up every other remote model).
_PARSE_OFF_LOOP_BYTES = 256 * 2**10


class _TooLarge(Exception):
    pass


async def _read_capped(resp: Any, cap: int) -> bytes:
    """The body of ``resp``, or :class:`_TooLarge` past ``cap`` bytes (checked on the
    declared length first, then while reading)."""
    declared = resp.content_length
    if declared is not None and declared > cap:
        raise _TooLarge(f"announced {declared:,} bytes")
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > cap:
            raise _TooLarge(f"more than {cap:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)

# OIP datatypes as ONNX type names (TensorSpec.type).
_ONNX_TYPE = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
              "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32",
              "INT64": "int64", "FP16": "float16", "FP32": "float", "FP64": "double",
              "BYTES": "string"}


# -- the client's event loop ----------------------------------------------------------------
class _ClientLoop:
    """One asyncio loop on a daemon thread, shared by every remote target of the process."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="batchlab-oip-client",
                                       daemon=True)
        self.thread.start()
        self.ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self.ready.set)
        self.loop.run_forever()

    def call(self, coro: Any, timeout_s: float) -> Any:
        """Run ``coro`` on the loop and wait for its result (from any other thread)."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout_s)
        except TimeoutError:
            fut.cancel()
            raise


_LOOP: _ClientLoop | None = None
_LOOP_LOCK = threading.Lock()


def client_loop() -> _ClientLoop:
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None or not _LOOP.thread.is_alive():
            _LOOP = _ClientLoop()
        return _LOOP


def client_cpu_s() -> float:
    """CPU seconds the client's loop thread has used (0 before it started): with the load
    generator's own, it says when the client and not the server is the bottleneck."""
    from .loadgen import thread_cpu_s
    loop = _LOOP
    return thread_cpu_s(loop.thread if loop is not None else None)


# -- failures, in words ---------------------------------------------------------------------
def describe_failure(err: BaseException, where: str, timeout_s: float) -> str:
    """What went wrong talking to ``where``, for a person (no stack trace needed)."""
    import aiohttp
    if isinstance(err, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer from {where} within {timeout_s:g} s"
    if isinstance(err, (aiohttp.ClientSSLError, ssl.SSLError)) or isinstance(
            getattr(err, "__cause__", None), ssl.SSLError) or "SSL" in str(err):
        return (f"the TLS handshake with {where} failed ({err}); check https:// vs http:// "
                "and the server's certificate")
    if isinstance(err, aiohttp.ClientConnectorError):
        os_err = getattr(err, "os_error", None)
        if isinstance(os_err, ConnectionRefusedError):
            return f"could not connect to {where}: connection refused (nothing listens there)"
        why = getattr(os_err, "strerror", None) or str(os_err or err)
        return f"could not connect to {where} ({why})"
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return f"{where} closed the connection without answering"
    if isinstance(err, (aiohttp.ClientPayloadError, aiohttp.ClientOSError,
                        ConnectionError)):
        return f"the connection to {where} failed mid-answer ({err})"
    if isinstance(err, aiohttp.InvalidURL):
        return f"the URL {where} is not valid ({err})"
    return f"talking to {where} failed: {type(err).__name__}: {err}"


def points_at(url: Any, served: set[tuple[str, int]]) -> bool:
    """Whether ``url`` names one of the (host, port) pairs in ``served`` (a loopback or
    wildcard host matches any loopback name)."""
    try:
        parts = urlsplit(str(url).strip())
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    local = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"}
    return any(port == p and (host == h or (host in local and h in local))
               for h, p in served)


def _redact(url: str) -> str:
    """``url`` without a password (for messages)."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            return url.replace(f":{parts.password}@", ":***@", 1)
    except ValueError:
        pass
    return url


def _server_words(answer: Any) -> str:
    """The error text of an OIP error answer (``{"error": ...}``), else the answer's start.
    ``answer`` is the raw body, or what ``OIPTarget.fetch_json`` made of it (None: empty)."""
    if answer is None:
        return ""
    body = answer
    if isinstance(answer, bytes):
        try:
            body = json.loads(answer)
        except (ValueError, UnicodeDecodeError):
            body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    raw = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
    text = raw[:300].decode("utf-8", "replace").strip()
    return text or "(empty body)"


# -- one endpoint and model -----------------------------------------------------------------
class OIPTarget:
    """A model on an OIP v2 HTTP server: metadata, readiness, config, and infer.

    Connections are pooled and kept alive (at most ``max_connections`` at once); requests
    use the binary tensor extension unless ``binary=False``.
    """

    def __init__(self, url: str, model: str, version: str | None = None,
                 headers: dict[str, str] | None = None, timeout_s: float = 10.0,
                 max_connections: int = 64, binary: bool | None = True) -> None:
        if not isinstance(url, str) or not url.strip():
            raise ConfigError("url must be the server's base URL, e.g. http://127.0.0.1:8080")
        try:
            parts = urlsplit(url.strip())
            parts.port  # noqa: B018 - raises on a bad port or an unclosed [ipv6
        except ValueError as err:
            raise ConfigError(f"url is not a valid URL ({err}), e.g. http://127.0.0.1:8080"
                              ) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"url must start with http:// or https:// and name a host "
                              f"(e.g. http://127.0.0.1:8080), got {_redact(url)!r}")
        if parts.query or parts.fragment:
            raise ConfigError("url must be the server's base URL without ?query or #fragment "
                              f"(e.g. http://127.0.0.1:8080/prefix), got {_redact(url)!r}")
        if not isinstance(model, str) or not model:
            raise ConfigError("model must be the model's name on the server, e.g. 'mlp'")
        if not (isinstance(timeout_s, (int, float)) and 0 < timeout_s <= 3600):
            raise ConfigError(f"timeout_s must be in (0, 3600] seconds, got {timeout_s!r}")
        if not (isinstance(max_connections, int) and 1 <= max_connections <= 1024):
            raise ConfigError("max_connections must be an integer in 1..1024, got "
                              f"{max_connections!r}")
        headers = dict(headers or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise ConfigError("headers must map header names to string values")
        bad = [k for k, v in headers.items() if any(c in k + v for c in "\r\n\0")
               or not k.strip()]
        if bad:
            raise ConfigError(f"header(s) {bad} contain a line break or are empty; give "
                              "each header on its own, e.g. {'Authorization': 'Bearer ...'}")
        if parts.username is not None or parts.password is not None:
            # user:password@host: sent as Basic auth, never kept in the URL (which is shown
            # on pages, in errors and in metrics)
            import base64
            from urllib.parse import unquote
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            headers.setdefault("Authorization",
                               "Basic " + base64.b64encode(pair.encode()).decode())
            host = parts.hostname if ":" not in (parts.hostname or "") else f"[{parts.hostname}]"
            netloc = host + (f":{parts.port}" if parts.port else "")
            url = parts._replace(netloc=netloc).geturl()
        self.url = url.strip().rstrip("/")
        self.model = model
        self.version = None if version in (None, "") else str(version)
        self.headers = headers
        self.timeout_s = float(timeout_s)
        self.max_connections = max_connections
        self.binary = True if binary is None else bool(binary)
        # Triton and Batchlab servers read a request's "timeout" (microseconds): the time
        # left is passed on, so a chain of servers cannot outlive its caller.
        self.send_timeout = False
        self.model_path = f"/v2/models/{quote(model, safe='')}" + (
            f"/versions/{quote(self.version, safe='')}" if self.version else "")
        self._loop = client_loop()
        self._session: Any = None
        self._closed = False
        self._infer_url = self.url + self.model_path + "/infer"

    def __repr__(self) -> str:
        return f"OIPTarget({self.url!r}, model={self.model!r})"

    @property
    def where(self) -> str:
        return self.url

    # -- plumbing (on the loop) ------------------------------------------------------------
    def _get_session(self) -> Any:
        import aiohttp
        if self._closed:
            raise RemoteConnectionError(f"the client of {self.url} is closed (its model was "
                                        "unloaded or the engine closed)")
        if self._session is None:
            conn = aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=30,
                                        enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=conn, headers=self.headers,
                                                  skip_auto_headers=("User-Agent",))
        return self._session

    async def _fetch(self, method: str, path: str, body: Any = None,
                     timeout_s: float | None = None) -> tuple[int, bytes]:
        import aiohttp
        data = None if body is None else json.dumps(body).encode()
        timeout = aiohttp.ClientTimeout(total=timeout_s or self.timeout_s)
        async with self._get_session().request(
                method, self.url + path, data=data, timeout=timeout,
                headers={"Content-Type": "application/json"} if data else None) as resp:
            try:
                return resp.status, await _read_capped(resp, MAX_CONTROL_ANSWER_BYTES)
            except _TooLarge as err:
                raise RemoteServerError(f"{self.url}{path} sent an answer too large to be "
                                        f"Open Inference Protocol metadata ({err})", 502) from None

    def fetch(self, method: str, path: str, body: Any = None,
              timeout_s: float | None = None) -> tuple[int, bytes]:
        """One control request (from any thread); raises what aiohttp raises."""
        t = timeout_s or self.timeout_s
        return self._loop.call(self._fetch(method, path, body, t), t + 5.0)

    def fetch_json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, raw = self.fetch(method, path, body)
        try:
            return status, json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError):
            return status, raw

    async def infer_async(self, arrays: dict[str, np.ndarray], timeout_s: float
                          ) -> dict[str, Any]:
        """The outputs of one infer call (on the loop); typed errors."""
        import aiohttp
        try:
            body, head_len = encode_infer_request(
                arrays, self.binary,
                {"timeout": max(1, int(timeout_s * 1e6))} if self.send_timeout else None)
        except (TypeError, ValueError, UnicodeDecodeError) as err:
            from .errors import InputValidationError
            raise InputValidationError(f"the request to {self.url} cannot be encoded as "
                                       f"Open Inference Protocol tensors: {err}") from None
        headers = {"Content-Type": "application/octet-stream" if head_len is not None
                   else "application/json"}
        if head_len is not None:
            headers[HEADER_LENGTH] = str(head_len)
        try:
            async with self._get_session().post(
                    self._infer_url, data=body, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
                status = resp.status
                answer_len = resp.headers.get(HEADER_LENGTH)
                raw = await _read_capped(resp, MAX_ANSWER_BYTES)
        except _TooLarge as err:
            raise RemoteServerError(f"{self.url} sent an answer for model {self.model!r} "
                                    f"over the {MAX_ANSWER_BYTES:,}-byte limit ({err})",
                                    502) from None
        except (asyncio.TimeoutError, TimeoutError, RemoteServerError):
            raise
        except Exception as err:  # aiohttp's and the OS's connection errors
            raise RemoteConnectionError(
                describe_failure(err, self._infer_url, timeout_s)) from None
        if status != 200:
            raise RemoteServerError(
                f"{self.url} answered {status} for model {self.model!r}: "
                f"{_server_words(raw)}", status)
        try:
            head = int(answer_len) if answer_len else None
            if len(raw) > _PARSE_OFF_LOOP_BYTES:
                return await asyncio.get_running_loop().run_in_executor(
                    None, parse_infer_response, raw, head)
            return parse_infer_response(raw, head)
        except (OIPError, ValueError, TypeError, OverflowError, RecursionError) as err:
            raise RemoteServerError(f"{self.url} sent an answer for model {self.model!r} "
                                    f"that cannot be read: {err}", 502) from None

    def infer(self, arrays: dict[str, np.ndarray], timeout_s: float | None = None
              ) -> dict[str, Any]:
        """Blocking infer (warm-up, the first request of an undeclared model)."""
        t = timeout_s or self.timeout_s
        try:
            return self._loop.call(self.infer_async(arrays, t), t + 5.0)
        except (asyncio.TimeoutError, TimeoutError):
            raise RequestTimeoutError(f"model {self.model!r} on {self.url} did not answer "
                                      f"within {t:g} s") from None

    def close(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._loop.thread.is_alive():
            try:
                self._loop.call(session.close(), 5.0)
            except Exception:  # closing is best effort; the loop is shared
                log.debug("closing the session of %r failed", self, exc_info=True)


# -- what add_remote learns -----------------------------------------------------------------
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
        if dt not in _ONNX_TYPE:
            raise RemoteTargetError(f"{where}: {kind} {t['name']!r} has datatype {dt!r}; "
                                    f"expected one of {', '.join(_ONNX_TYPE)}")
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                  for d in shape):
            raise RemoteTargetError(f"{where}: {kind} {t['name']!r} has shape {shape!r}; "
                                    "expected a list of integers (-1 for dynamic)")
        dims = tuple(("N" if k == 0 else None) if d < 0 else d for k, d in enumerate(shape))
        if any(sp.name == t["name"] for sp in specs):
            raise RemoteTargetError(f"{where}: two {kind} are named {t['name']!r}")
        specs.append(TensorSpec(t["name"], f"tensor({_ONNX_TYPE[dt]})",
                                DATATYPES.get(dt, np.dtype(object)), dims))
    return tuple(specs)


def _batch_mode(inputs: Sequence[TensorSpec]) -> tuple[str, str]:
    if not inputs:
        return "dynamic", "the server declares no inputs; rows are the leading axis"
    lead = [s.shape[0] if s.shape else None for s in inputs]
    if all(d == "N" for d in lead):
        return "dynamic", "the server declares a dynamic leading dimension on every input"
    return "exact", ("the server declares a fixed leading dimension; each request must "
                     "match the declared shape")


def _declared(specs: Any) -> list[dict[str, Any]] | None:
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
    return _declared(value)


class RemoteModel:
    """A model on an OIP server, as the registry keeps it (in place of a
    :class:`~core.models.LoadedModel`): its info, its server and what is known about the
    server's batching."""

    def __init__(self, name: str, target: OIPTarget, info: ModelInfo, server: dict[str, Any],
                 batching: dict[str, Any], declared: bool) -> None:
        self.name = name
        self.target = target
        self.info = info
        self.server = server            # {"name", "version", "extensions", "kind"}
        self.batching = batching        # {"max_batch_size", "max_wait_ms", "source", ...}
        self.declared = declared        # the server listed the tensors (else the user did)
        self.output_names = [t.name for t in info.outputs]
        self.sizes_run: set[int] = set()
        self.session_config = None
        self.lock = threading.Lock()

    @property
    def can_configure(self) -> str | None:
        """How batch settings can be changed on this server (``"batchlab"``: the control
        API; ``"repository"``: a model load with a Triton ``config``), or None."""
        return self.batching.get("configurable")

    def describe(self) -> dict[str, Any]:
        """What the pages show about it."""
        return {"url": self.target.url, "model": self.target.model,
                "version": self.target.version, "server": self.server.get("name", "?"),
                "server_version": self.server.get("version", "?"),
                "kind": self.server.get("kind", "oip"), "declared": self.declared,
                "binary": self.target.binary, **self.batching}

    def apply_batch(self, max_batch_size: int | None = None,
                    max_wait_ms: float | None = None) -> dict[str, Any]:
        """Change the server's batch settings for this model where the server lets a client
        (a model load with a Triton ``config``: Triton, a Batchlab server); returns the
        settings read back. Raises :class:`ConfigError` where it does not (MLServer)."""
        t = self.target
        if self.can_configure is None:
            raise ConfigError(
                f"{self.server.get('name', 'the server')} at {t.url} does not let a client "
                "change batch settings"
                + (": MLServer reads max_batch_size and max_batch_time from the model's "
                   "model-settings.json at load. Export them (Experiments page, "
                   "core.experiments.mlserver_settings) and reload the model there"
                   if self.server.get("kind") == "mlserver" else
                   "; change them where the model is deployed") )
        load = f"/v2/repository/models/{quote(t.model, safe='')}/load"

        def call(method: str, path: str, body: Any = None) -> Any:
            try:
                status, answer = t.fetch_json(method, path, body)
            except Exception as err:  # aiohttp's and the OS's errors, in words
                raise ConfigError(f"could not change the batch settings of {t.model!r}: "
                                  f"{describe_failure(err, t.url + path, t.timeout_s)}"
                                  ) from None
            if status != 200:
                words = _server_words(answer)
                hint = (" (Triton loads models from a client only with "
                        "--model-control-mode=explicit)" if path == load else "")
                raise ConfigError(f"{t.url} answered {status} to {method} {path} while "
                                  f"changing the batch settings of {t.model!r}: {words}{hint}")
            return answer

        current = call("GET", t.model_path + "/config")
        cfg = dict(current.get("config", current)) if isinstance(current, dict) else {}
        if max_batch_size is not None:
            cfg["max_batch_size"] = int(max_batch_size)
        if max_wait_ms is not None:
            db = dict(cfg.get("dynamic_batching") or {})
            db["max_queue_delay_microseconds"] = int(round(float(max_wait_ms) * 1000))
            cfg["dynamic_batching"] = db
        call("POST", load, {"parameters": {"config": json.dumps(cfg)}})
        current = call("GET", t.model_path + "/config")
        if isinstance(current, dict):
            self.batching.update(_batching_from_config(current.get("config", current)))
        return dict(self.batching)

    def run(self, arrays: Sequence[np.ndarray], run_options: Any = None) -> list[Any]:
        """Run one request synchronously (warm-up); outputs in ``output_names`` order."""
        outs = self.target.infer(dict(zip([s.name for s in self.info.inputs], arrays)))
        rows = arrays[0].shape[0] if arrays and arrays[0].ndim else 1
        self.sizes_run.add(rows)
        return [outs[n] for n in self.output_names] if self.output_names else list(outs.values())


def _batching_from_config(cfg: Any) -> dict[str, Any]:
    """The server's batch settings from a Triton-style model configuration."""
    if not isinstance(cfg, dict):
        return {}
    out: dict[str, Any] = {}
    if isinstance(cfg.get("max_batch_size"), int):
        out["max_batch_size"] = cfg["max_batch_size"]
    db = cfg.get("dynamic_batching")
    if isinstance(db, dict):
        delay = db.get("max_queue_delay_microseconds", 0)
        if isinstance(delay, (int, float, str)):
            try:
                out["max_wait_ms"] = float(delay) / 1000.0
            except ValueError:
                pass
    elif "max_batch_size" in out:
        out["max_wait_ms"] = 0.0       # no dynamic batching: requests are not held
    return out


def _mlserver_batching(meta: dict[str, Any]) -> dict[str, Any]:
    """MLServer reports its adaptive batching in the metadata's parameters, if at all."""
    params = meta.get("parameters") if isinstance(meta.get("parameters"), dict) else {}
    out: dict[str, Any] = {}
    for key in ("max_batch_size", "max_batch_time"):
        if key in params:
            out[key] = params[key]
    return out


def connect_remote(name: str, url: str, model: str, version: str | None = None,
                   headers: dict[str, str] | None = None, *, inputs: Any = None,
                   outputs: Any = None, timeout_s: float = 10.0, max_connections: int = 64,
                   binary: bool | None = None) -> RemoteModel:
    """Check the endpoint and read the model's metadata; raises
    :class:`RemoteTargetError` saying what was tried."""
    inputs_given, outputs_given = _declared(inputs), _declared(outputs)
    target = OIPTarget(url, model, version, headers, timeout_s, max_connections, binary)
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
        words = _server_words(meta)
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
    batching: dict[str, Any] = {}
    s_cfg, cfg = get("GET", target.model_path + "/config")
    if s_cfg == 200 and isinstance(cfg, dict):
        cfg = cfg.get("config", cfg)  # KServe wraps it
        batching = _batching_from_config(cfg)
        if batching:
            batching["source"] = f"GET {target.model_path}/config"
    if not batching:
        batching = _mlserver_batching(meta)
        if batching:
            batching["source"] = "the model metadata's parameters"
    extensions = server.get("extensions") or []
    if kind == "batchlab":
        batching["configurable"] = "batchlab"
    elif "model_repository" in extensions or any(
            str(e).startswith("model_repository") for e in extensions):
        batching["configurable"] = "repository"
    else:
        batching["configurable"] = None
    if not batching.get("source"):
        batching["source"] = ("not reported by the server (MLServer reads max_batch_size and "
                              "max_batch_time from model-settings.json)" if kind == "mlserver"
                              else "not reported by the server")
    mode, reason = _batch_mode(in_specs)
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
    server_info = {"name": server.get("name", "?"), "version": server.get("version", "?"),
                   "extensions": list(extensions), "kind": kind or "oip"}
    return RemoteModel(name, target, info, server_info, batching, declared)


class RemoteValidator:
    """Checks a remote model's requests against the tensors the server declared (as for a
    local model). While none are known, a single array is sent as ``input-0`` (MLServer's
    default name) and the tensors are learned from the first request that succeeds."""

    def __init__(self, remote: RemoteModel) -> None:
        self.remote = remote
        self._for: ModelInfo | None = None
        self._check: Any = None

    def __call__(self, x: Any) -> tuple[tuple[np.ndarray, ...], int]:
        info = self.remote.info
        if info.inputs:
            if self._for is not info:
                from .validation import RequestValidator
                self._check, self._for = RequestValidator(info), info
            return self._check(x)
        if not isinstance(x, np.ndarray) or x.ndim == 0 or x.dtype == object:
            from .errors import InputValidationError
            raise InputValidationError(
                f"the server of remote model {info.name!r} declares no input tensors: send one "
                "numpy array (rows on the leading axis; it goes as 'input-0'), or add the "
                "model again with inputs=[{'name': ..., 'datatype': 'FP32', 'shape': [-1, 4]}]")
        if not x.shape[0]:
            from .errors import InputValidationError
            raise InputValidationError("a request needs at least one row")
        return (x,), x.shape[0]


# -- the dispatcher (the batcher's place for a remote model) --------------------------------
class RemoteDispatcher:
    """Sends each request of a remote model as it comes; the Batcher's interface for the
    engine (submit, config, queue depth, close), the ledger's endings for everything else.

    At most ``config.max_queue`` requests are outstanding; more are refused at once with
    :class:`OverloadedError` (a client never queues without bound). A request's timeout
    (``timeout_ms``, default the config's) bounds its HTTP call.
    """

    batchable = True

    def __init__(self, name: str, remote: RemoteModel, config: BatchConfig,
                 metrics: ModelMetrics, trace: Any = None) -> None:
        self.name = name
        self.remote = remote
        self.metrics = metrics
        self.ledger = Ledger(name, metrics, _perf, trace=trace)
        self.config = config
        self.cost = CostEstimator()
        self.rate = RateEstimator()
        self.restarts = 0
        self.loop_errors = 0
        self._ids = itertools.count(1)
        self._loop = remote.target._loop
        self._sending = 0          # requests on the wire (loop thread only)
        self._closed = False
        # submit admits and clears, endings check and set, under one lock: "drained" can
        # never be seen while a request is admitted
        self._lock = threading.Lock()
        self._drained = threading.Event()
        self._drained.set()
        self._tasks: set[Any] = set()   # asyncio keeps tasks only weakly

    @property
    def closed(self) -> bool:
        return self._closed

    def configure(self, config: BatchConfig) -> None:
        self.config = config

    def queue_depth(self) -> int:
        """Requests accepted and not yet answered beyond the connections in use."""
        return max(0, self.ledger.pending() - self.remote.target.max_connections)

    def pending(self) -> int:
        return self.ledger.pending()

    def submit(self, arrays: Sequence[np.ndarray], rows: int,
               timeout_ms: float | None = None, arm: str | None = None,
               sink: Any = None) -> Future:
        cfg = self.config
        # Only a limit the server itself reported is enforced here (a user's description of
        # a deployment, or MLServer's count of requests, is not a row limit).
        mbs = self.remote.batching.get("max_batch_size") if str(
            self.remote.batching.get("source", "")).startswith("GET ") else None
        if isinstance(mbs, int) and mbs > 0 and rows > mbs:
            raise RequestTooLargeError(
                f"request has {rows} rows but {self.remote.target.url} takes at most "
                f"max_batch_size={mbs} rows for model {self.remote.target.model!r}; split it")
        # In flight: requests not yet answered, and calls still ending (cancelled ones).
        outstanding = max(self.ledger.pending(), len(self._tasks))
        if outstanding >= cfg.max_queue:
            raise OverloadedError(
                f"remote model {self.name!r} has {outstanding} requests outstanding "
                f"(max_queue={cfg.max_queue}); the server is slower than the traffic: send "
                "less, or raise max_queue with engine.configure()")
        if isinstance(sink, ModelMetrics):
            sink = (sink,)
        if timeout_ms is not None:
            check_timeout_ms(timeout_ms)
        t_ms = cfg.timeout_ms if timeout_ms is None else timeout_ms
        now = _perf()
        deadline = now + (t_ms / 1000.0 if t_ms is not None else self.remote.target.timeout_s)
        r = Request(self.ledger, arrays, rows, now, deadline, arm, sink)
        with self._lock:
            if self._closed:
                raise EngineClosedError(f"remote model {self.name!r} is closed and accepts "
                                        "no more requests")
            self.ledger.admit(r)
            self._drained.clear()
        try:
            self._loop.loop.call_soon_threadsafe(self._start, r)
        except RuntimeError:  # the loop is gone (interpreter exit)
            self.ledger.fail([r], EngineClosedError("the remote client's loop has stopped"))
        return r

    def _start(self, r: Request) -> None:
        loop = self._loop.loop
        # A backstop: whatever happens to the call, the request ends soon after its deadline
        # (the call cancels it when it ends, which also drops its references).
        holder: list[Any] = []
        backstop = loop.call_at(loop.time() + max(0.0, r._deadline - _perf()) + _BACKSTOP_S,
                                self._expire, r, holder)
        task = loop.create_task(self._send(r, backstop))
        holder.append(task)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # A caller's cancel() ends the HTTP call too (its connection, task and arrays).
        r.add_done_callback(lambda fut: fut.cancelled() and loop.call_soon_threadsafe(
            task.cancel))

    def _expire(self, r: Request, holder: list[Any]) -> None:
        if r in self.ledger.live:
            for task in holder:
                task.cancel()
            self.ledger.fail([r], RequestTimeoutError(
                f"remote model {self.name!r} ({self.remote.target.url}) did not answer "
                f"within {(r._deadline - r._t_submit) * 1000.0:.0f} ms"))
            self._check_drained()

    async def _send(self, r: Request, backstop: Any) -> None:
        ledger = self.ledger
        if r not in ledger.live:           # cancelled or failed before it was sent
            backstop.cancel()
            self._check_drained()
            return
        remote = self.remote
        names = [s.name for s in remote.info.inputs] or (
            ["input-0"] if len(r._arrays) == 1 else [f"input-{i}" for i in range(len(r._arrays))])
        t0 = _perf()
        remaining = r._deadline - t0
        self._sending += 1
        depth = self._sending
        try:
            if remaining <= 0:
                raise asyncio.TimeoutError
            outs = await remote.target.infer_async(dict(zip(names, r._arrays)), remaining)
            t1 = _perf()
            out_names = remote.output_names or list(outs)
            missing = [n for n in out_names if n not in outs]
            if missing:
                raise RemoteServerError(f"{remote.target.url} answered without output(s) "
                                        f"{missing} of model {remote.target.model!r}", 502)
            self._check_rows(outs, r._rows)
            self._check_types(outs)
            ledger.succeed([r], [outs[n] for n in out_names], out_names, next(self._ids),
                           r._rows, REMOTE_REASON, t0, t1, depth)
            remote.sizes_run.add(r._rows)
            if not remote.info.inputs:
                self._learn(names, r._arrays, outs)
        except asyncio.CancelledError:
            return                       # the backstop ended it
        except (asyncio.TimeoutError, TimeoutError):
            t_ms = (r._deadline - r._t_submit) * 1000.0
            ledger.fail([r], RequestTimeoutError(
                f"remote model {self.name!r} ({remote.target.url}) did not answer within "
                f"{t_ms:.0f} ms; raise timeout_ms, send less, or check the server"),
                batch=(r._rows, REMOTE_REASON, _perf() - t0, depth))
        except Exception as err:  # typed remote errors, and anything unexpected
            from .errors import InputValidationError
            if not isinstance(err, (RemoteServerError, RemoteConnectionError,
                                    InputValidationError)):
                log.exception("remote request to %s failed unexpectedly", remote.target)
                err = RemoteConnectionError(f"request to {remote.target.url} failed: "
                                            f"{type(err).__name__}: {err}")
            ledger.fail([r], err, batch=(r._rows, REMOTE_REASON, _perf() - t0, depth))
        finally:
            backstop.cancel()
            self._sending -= 1
            self._check_drained()

    def _check_rows(self, outs: dict[str, Any], rows: int) -> None:
        """Outputs the server declares with a dynamic leading axis must have the request's
        rows: an answer for another request (or a broken batcher) is not handed over."""
        if self.remote.info.batch_mode != "dynamic":
            return
        for spec in self.remote.info.outputs:
            a = outs.get(spec.name)
            if (isinstance(a, np.ndarray) and spec.shape and spec.shape[0] == "N"
                    and (a.ndim == 0 or a.shape[0] != rows)):
                raise RemoteServerError(
                    f"{self.remote.target.url} answered {a.shape[0] if a.ndim else 0} rows of "
                    f"output {spec.name!r} for a request of {rows} row(s) (model "
                    f"{self.remote.target.model!r})", 502)

    def _check_types(self, outs: dict[str, Any]) -> None:
        """Outputs must have the datatype the server's metadata declares."""
        for spec in self.remote.info.outputs:
            a = outs.get(spec.name)
            if spec.dtype is not None and spec.dtype != np.dtype(object) and isinstance(
                    a, np.ndarray) and a.dtype != spec.dtype:
                raise RemoteServerError(
                    f"{self.remote.target.url} answered output {spec.name!r} as {a.dtype}, but "
                    f"its metadata declares {spec.dtype} (model {self.remote.target.model!r})",
                    502)

    def _learn(self, names: list[str], arrays: Sequence[np.ndarray],
               outs: dict[str, Any]) -> None:
        """An undeclared model's tensors, from its first request that succeeded."""
        remote = self.remote
        with remote.lock:
            if remote.info.inputs:
                return
            from dataclasses import replace

            def spec(n: str, a: Any) -> TensorSpec:
                a = np.asarray(a)
                tail = tuple(a.shape[1:])
                dt = a.dtype if a.dtype != object else None
                kind = f"tensor({_ONNX_TYPE.get(datatype(a.dtype), 'string')})"
                return TensorSpec(n, kind, dt, ("N",) + tail)

            remote.info = replace(
                remote.info, inputs=tuple(spec(n, a) for n, a in zip(names, arrays)),
                outputs=tuple(spec(n, a) for n, a in outs.items()),
                batch_reason="the server declares no tensors: these were learned from the "
                             "first request that succeeded")
            remote.output_names = list(outs)

    def _check_drained(self) -> None:
        with self._lock:
            if not self.ledger.pending():
                self._drained.set()

    # -- closing (the registry's calls) ------------------------------------------------------
    def begin_close(self) -> None:
        with self._lock:
            self._closed = True
        self._check_drained()

    def wait_drained(self, deadline: float | None) -> bool:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self._drained.wait(left) or not self.ledger.pending()

    def abort(self) -> int:
        n = self.ledger.fail_all(EngineClosedError(
            f"remote model {self.name!r} was closed before its server answered"))
        self.remote.target.close()
        return n

    def join_threads(self, deadline: float) -> None:
        pass

    def finish_close(self, deadline: float | None) -> int:
        self.begin_close()
        self.wait_drained(deadline)
        return self.abort()

