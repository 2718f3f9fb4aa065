"""A client of the engine server with the engine's contract: ``RemoteEngine(url)``.

:class:`RemoteEngine` has the method names, arguments and return types of
:class:`~core.Engine` for everything the dashboard and notebooks use, so code written
against "an engine" does not know which kind it holds. Each call is one HTTP request to
the control API (:mod:`core.serving.control`) over a pooled keep-alive connection; values travel
in the :mod:`core.protocol.wire` encoding and come back as the engine's own types. Errors are the
engine's own exceptions; a server that cannot be reached raises
:class:`~core.errors.EngineUnavailableError` saying where it looked.

What differs from in-process: callbacks and events cannot cross the wire, so progress and
cancellation of long work go through jobs (``start_job``/``job``/``cancel_job``), which run
in the server and outlive the caller. ``close()`` closes this client, not the server's engine.

Example:
    >>> engine = RemoteEngine("http://127.0.0.1:8000")
    >>> engine.predict("mlp", engine.sample_input("mlp")).outputs["logits"].shape
    (1, 10)
"""

from __future__ import annotations

import functools
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from core.batching import Prediction
from core.errors import (BatchlabError, ConfigError, EngineClosedError, EngineUnavailableError)
from core.lab import Engine, ExperimentStore
from core.models import input_bytes, owned, read_model_source
from core.protocol import WireError
from .control import DEFAULT, ENGINE_CONTRACT, LOCAL_ONLY, STORE_CONTRACT
from .guard import TOKEN_ENV
from .transport import _CONTRACT, MAX_ANSWER_BYTES, _read_timeout, _Transport
from .wire_types import WIRE

__all__ = ["RemoteEngine", "DEFAULT_URL", "MAX_ANSWER_BYTES"]

DEFAULT_URL = "http://127.0.0.1:8000"


def _decoded(where: str, answer: Any, key: str) -> Any:
    """``answer[key]`` decoded; JSON not a Batchlab answer is said to be (never a KeyError)."""
    try:
        return WIRE.decode(answer[key])
    except (KeyError, TypeError, WireError) as err:
        why = f"no {err.args[0]!r}" if isinstance(err, KeyError) else str(err)[:300]
        raise EngineUnavailableError(f"{where} answered with JSON that is not a Batchlab "
                                     f"answer ({why}): is this a Batchlab engine server?") from None


def _post(t: _Transport, room: str, method: str, args: tuple, kwargs: dict, read: Any) -> Any:
    body = {"args": WIRE.encode(list(args)), "kwargs": WIRE.encode(kwargs)}
    # a call that only reads is sent again when a pooled connection turns out dead
    answer = t.request("POST", f"/v1/{room}/{method}", body, retry=_CONTRACT[method].reads,
                       read_timeout_s=read)
    return _decoded(f"{t.url}/v1/{room}/{method} ({room}.{method})", answer, "result")


def _remote(room: str, name: str, local: Callable[..., Any] | None) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self._call(room, name, args, kwargs)
    if local is not None:
        method = functools.wraps(local)(method)
    method.__name__ = name
    return method


class _RemoteStore:
    """The server's experiment history, with :class:`ExperimentStore`'s methods."""

    def __init__(self, transport: _Transport) -> None:
        self._t = transport
        self.path = f"{transport.url} (the engine server's history)"

    def _call(self, room: str, method: str, args: tuple, kwargs: dict) -> Any:
        return _post(self._t, room, method, args, kwargs, DEFAULT)


for _name in STORE_CONTRACT:
    setattr(_RemoteStore, _name, _remote("store", _name, getattr(ExperimentStore, _name)))


class RemoteEngine:
    """The engine of a Batchlab server, with :class:`~core.Engine`'s contract.

    Construction does not contact the server (a dashboard may start before its engine);
    use :meth:`connect` to wait until it answers, :meth:`reachable` to check.

    ``max_answer_bytes`` bounds an answer's bytes, ``max_parsed_bytes`` what its JSON may
    parse into (default: an eighth of this process's memory budget, at least 64 MiB).

    Example:
        >>> engine = RemoteEngine.connect("http://127.0.0.1:8000", timeout_s=10)
        >>> engine.configure("mlp", max_batch_size=16)
        BatchConfig(max_batch_size=16, ...)
    """

    def __init__(self, url: str = DEFAULT_URL, timeout_s: float = 30.0,
                 pool_size: int = 64, token: str | None = None,
                 max_answer_bytes: int = MAX_ANSWER_BYTES,
                 max_parsed_bytes: int | None = None) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"the engine URL must start with http:// or https://, got {url!r}")
        if not (isinstance(timeout_s, (int, float)) and 0 < timeout_s < float("inf")):
            raise ConfigError(f"timeout_s is the most one call may take, in seconds (a "
                              f"positive number); got {timeout_s!r}")
        if max_parsed_bytes is not None and (isinstance(max_parsed_bytes, bool) or not (
                isinstance(max_parsed_bytes, int) and max_parsed_bytes > 0)):
            raise ConfigError("max_parsed_bytes bounds what one answer's JSON may parse into "
                              f"(bytes, a positive int, or None); got {max_parsed_bytes!r}")
        self.url = url.rstrip("/")
        # The server's token (its log prints it; the dashboard's own server is given one):
        # by default from BATCHLAB_TOKEN.
        token = token if token is not None else os.environ.get(TOKEN_ENV, "").strip()
        self._t = _Transport(self.url, timeout_s, pool_size, token or None,
                             max_answer_bytes, max_parsed_bytes)
        self._info: dict[str, Any] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._pool_size = pool_size
        self._closed = False
        self.store = _RemoteStore(self._t)

    @classmethod
    def connect(cls, url: str = DEFAULT_URL, timeout_s: float = 10.0, **kw: Any) -> RemoteEngine:
        """A client once the server at ``url`` answers (waits up to ``timeout_s``)."""
        engine = cls(url, **kw)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                engine.server_info()
                return engine
            except BaseException as err:   # (any give-up closes its HTTP session: it leaked)
                if not isinstance(err, EngineUnavailableError) or time.monotonic() >= deadline:
                    engine.close()
                    raise
                time.sleep(0.1)

    # -- plumbing --------------------------------------------------------------------
    def _call(self, room: str, method: str, args: tuple, kwargs: dict) -> Any:
        if self._closed:
            raise EngineClosedError("this RemoteEngine is closed; create a new one")
        bad = LOCAL_ONLY & {k for k, v in kwargs.items() if v is not None}
        if bad:
            raise ConfigError(f"{method}: {', '.join(sorted(bad))} cannot cross to the engine "
                              f"server; run it as a job (start_job({method!r}, ...)) and "
                              "watch job(job_id) for progress, cancel_job to stop")
        kwargs = {k: v for k, v in kwargs.items() if k not in LOCAL_ONLY}
        read = _read_timeout(method, kwargs, self._t.timeout_s)
        return _post(self._t, room, method, args, kwargs, read)

    def server_info(self, refresh: bool = False) -> dict[str, Any]:
        """The server's budget, configuration and methods (fetched once; ``refresh``: now),
        and what it restored from its state folder at start (``restored``, or None)."""
        if self._info is None or refresh:
            info = self._t.request("GET", "/v1/info", retry=True)
            info["config"] = _decoded(f"{self.url}/v1/info (server_info)", info, "config")
            self._info = info
        return self._info

    def reachable(self) -> bool:
        """True when the server answers its liveness check now."""
        try:  # a short wait: a page asks this on every run
            self._t.request("GET", "/v2/health/live", retry=False, read_timeout_s=2.0)
            return True
        except BatchlabError:
            return False

    @property
    def config(self) -> Any:
        """The server engine's :class:`~core.config.EngineConfig`."""
        return self.server_info()["config"]

    @property
    def memory_budget_bytes(self) -> int:
        return int(self.server_info()["memory_budget_bytes"])

    # -- requests: futures from a local pool of HTTP callers ------------------------------
    def submit(self, name: str, x: Any, timeout_ms: float | None = None,
               key: Any = None, priority: int | None = None, *,
               check: Callable[[Prediction], None] | None = None) -> Future:
        """Like :meth:`Engine.submit`: a Future of the :class:`Prediction`. Errors that the
        engine raises at submit arrive through the future here (the server is elsewhere).
        ``check`` runs here, on the answer: the server has counted the request already."""
        with self._pool_lock:
            if self._closed:
                raise EngineClosedError("this RemoteEngine is closed")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._pool_size, thread_name_prefix="remote")
            kw = {"priority": priority} if priority is not None else {}
            # what was sent, as submit does locally: encoded later, on a pool thread
            x = {k: owned(v) for k, v in x.items()} if isinstance(x, dict) else owned(x)
            if check is None:
                return self._pool.submit(self.predict, name, x, key=key,
                                         timeout_ms=timeout_ms, **kw)
            return self._pool.submit(self._checked, check, name, x, key=key,
                                     timeout_ms=timeout_ms, **kw)

    def _checked(self, check: Callable[[Prediction], None], *args: Any,
                 **kwargs: Any) -> Prediction:
        pred = self.predict(*args, **kwargs)
        check(pred)
        return pred

    @functools.wraps(Engine.predict)
    def predict(self, name: str, x: Any, *args: Any, check: Any = None,
                **kwargs: Any) -> Prediction:
        # (check runs here, on the answer, as submit's: a function does not travel)
        if check is not None and not callable(check):
            raise ConfigError(f"check must be a function of the prediction (raising "
                                     f"to refuse the answer), got {type(check).__name__}")
        pred = self._call("engine", "predict", (name, x, *args), kwargs)
        if check is not None:
            check(pred)
        return pred

    @functools.wraps(Engine.load_model)
    def load_model(self, source: Any, name: str | None = None, **kwargs: Any) -> Any:
        # A path names a file here, on the client: read it and send its bytes.
        data, where = read_model_source(source, self.config.max_model_bytes) \
            if not isinstance(source, (bytes, bytearray, memoryview)) else (source, None)
        if where not in (None, "upload"):
            name = Path(where).stem if name is None else name
            kwargs.setdefault("source_label", where)
        return self._call("engine", "load_model", (bytes(data),),
                          {"name": name, **kwargs})

    @functools.wraps(Engine.set_inputs)
    def set_inputs(self, name: str, data: Any, filename: str | None = None,
                   label: str | None = None, preprocess: Any = None) -> str:
        # A path names a file or folder here, on the client: read it and send its bytes
        # (an array, as the .npy it would be).
        filename, data = input_bytes(data, filename)
        return self._call("engine", "set_inputs", (name, data),
                          {"filename": filename, "label": label, "preprocess": preprocess})

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close this client (its connections and threads); the server keeps running."""
        with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:  # calls under way end by their own read timeouts
            pool.shutdown(wait=False, cancel_futures=True)
        self._t.close()

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteEngine({self.url!r})"


for _name in ENGINE_CONTRACT:
    if not hasattr(RemoteEngine, _name):
        setattr(RemoteEngine, _name, _remote("engine", _name, getattr(Engine, _name)))
