"""The engine server's routes, independent of the HTTP stack that carries them: the Open
Inference Protocol data plane, Triton's repository extension, ``/metrics`` and the control
API, each answered as ``(status, body)`` (a dict for JSON, or :class:`Text`).

Example:
    >>> routes = Routes(engine)
    >>> routes.route("GET", "/v2/health/live", request)
    (200, {'live': True})
"""

from __future__ import annotations

import dataclasses
import re
from concurrent.futures import Future, TimeoutError as FuturesTimeout
from typing import Any, Callable, Protocol

import numpy as np

from core.engine import settle_late, wait_s_for
from core.errors import AnswerRefusedError, InputValidationError, ModelNotFoundError
from core.models import ModelInfo, request_bytes_limit
from core.protocol import HTTPError, jsontext, oip, triton
from core.remote import HOPS_HEADER
from . import control, prom, timeouts
from .bodyparse import BodyParser
from .guard import RequestGuard
from .repository import Repository
from .wirestats import WireStats

__all__ = ["Routes", "RequestIn", "Text", "Pending", "EXTENSIONS", "DEFAULT_MAX_BODY",
           "parse_json"]

_MODEL_PATH = re.compile(
    r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer|/config|/stats)?$")
_REPO_PATH = re.compile(r"^/v2/repository/models/([^/]+)/(load|unload)$")
_CONTROL_PATH = re.compile(r"^/v1/(engine|store)/([a-z_]+)$")
#: The protocol extensions this server has (``GET /v2``).
EXTENSIONS = ("binary_tensor_data", "model_repository", "statistics", "batchlab_control",
              "metrics")
#: The largest inference request body by default.
DEFAULT_MAX_BODY = 64 * 2**20


class Text:
    """A non-JSON answer (the Prometheus text, a binary inference answer). ``data``: the
    body, or its parts in order (a large binary output is a view of the output's memory)."""

    def __init__(self, data: bytes | list[Any], content_type: str,
                 headers: dict[str, str] | None = None) -> None:
        self.data, self.content_type, self.headers = data, content_type, headers or {}


class Pending:
    """An inference the engine has accepted: the answer is ``answer(prediction)`` once
    ``future`` is done; a caller that waited ``wait_s`` in vain calls ``late()`` (which
    settles it with the timeout, or returns the answer that just arrived). ``weigh``: the
    bytes ``answer(prediction)`` encodes element by element (None: all its outputs')."""

    def __init__(self, future: Future, wait_s: float | None,
                 answer: Callable[[Any], Any], late: Callable[[], Any],
                 weigh: Callable[[Any], int] | None = None) -> None:
        self.future, self.wait_s, self.answer, self.late = future, wait_s, answer, late
        self.weigh = weigh

    def encodes_bytes(self, pred: Any, closer_above: int = 0) -> int:
        """What encoding ``pred``'s answer walks element by element: its outputs' bytes,
        weighed more closely (``weigh``) when they are more than ``closer_above``."""
        outputs = getattr(pred, "outputs", None) or {}
        total = sum(getattr(a, "nbytes", 0) for a in outputs.values())  # (not walked here:
        # on the event loop; strings count 8 each, weighed by length past closer_above)
        return total if self.weigh is None or total <= closer_above else self.weigh(pred)

    def result(self) -> tuple[int, Any]:
        """Wait for it here (blocking): ``(200, answer)``, or the request's error."""
        try:
            pred = self.future.result(self.wait_s)
        except FuturesTimeout:
            pred = self.late()
        return 200, self.answer(pred)


def parse_json(raw: bytes, max_parsed_bytes: int | None = None) -> Any:
    """A request body as JSON, or a 400 that says what is wrong with it (a 413 for one that
    could take more than ``max_parsed_bytes`` to parse)."""
    try:
        return jsontext.loads(raw, max_parsed_bytes)
    except jsontext.JSONTooLarge as err:
        raise HTTPError(413, f"the request body is too large for this server: {err}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise HTTPError(400, f"the request body is not valid JSON: {err}") from None
    except RecursionError:
        raise HTTPError(400, "the request body nests JSON too deeply") from None


class RequestIn(Protocol):
    """What a route reads of its request (the HTTP stack provides it)."""

    def header(self, name: str) -> str | None: ...

    def raw_body(self, limit: int | None = None, required: bool = True) -> bytes | None: ...

    def body(self, limit: int | None = None, required: bool = True,
             max_parsed_bytes: int | None = None) -> Any: ...


class Routes:
    """Answers requests for one engine (see :mod:`core.serving.server` for the table)."""

    def _forwards(self, name: str) -> bool:
        """Whether a request to ``name`` leaves this server (a remote model, or an A/B
        experiment with a remote arm)."""
        engine = self.engine
        names = engine.ab_arms(name) if name in engine.ab_experiments() else (name,)
        return any(engine.remote_info(n) is not None for n in names)

    def __init__(self, engine: Any, max_body_bytes: int = DEFAULT_MAX_BODY) -> None:
        self.engine = engine
        self.max_body_bytes = max_body_bytes
        # An upload travels in base64 inside JSON: 4/3 of the model size limit, plus room.
        self.max_upload_bytes = max(max_body_bytes,
                                    engine.config.max_model_bytes * 4 // 3 + 2**20)
        #: What parsing one JSON body, or encoding one JSON answer, may take in Python
        #: objects: an eighth of the memory budget, as for one generated input.
        self.max_json_bytes = request_bytes_limit(engine.memory_budget_bytes)
        #: Parses infer bodies; a long JSON part in a child process (core/serving/bodyparse.py)
        self.parser = BodyParser()
        #: The longest a request may be held (a timeout over the wire, or a model's);
        #: None: no cap (timeouts may be switched off). The server sets it.
        self.max_timeout_ms: float | None = None
        self.repository = Repository(engine)
        #: Refuses what a web page could forge (core/serving/guard.py); the server binds it.
        self.guard = RequestGuard()
        #: Called after every request that may have changed the engine's state (the
        #: server keeps its state folder up to date); None: nobody listens.
        self.on_change: Callable[[], None] | None = None
        #: What the server restored at start (core/serving/state.py), for /v1/info.
        self.restored: dict[str, Any] | None = None
        #: What the server answered and closed (core/serving/wirestats.py), on /metrics.
        self.wire = WireStats()

    @staticmethod
    def _writes(path: str) -> bool:
        """Whether a control or repository call may change state (reads are listed in the
        contract; the repository's index only reads)."""
        if path.startswith("/v2/repository"):
            return path != "/v2/repository/index"
        m = _CONTROL_PATH.match(path)
        if m is None:
            return False
        contract = control.ENGINE_CONTRACT if m.group(1) == "engine" else control.STORE_CONTRACT
        spec = contract.get(m.group(2))
        return spec is None or not spec.reads

    def body_limit(self, path: str) -> int:
        """The largest body a request to ``path`` may send: an upload may be large, every
        other request fits the data plane's limit."""
        m = _CONTROL_PATH.match(path)
        if (m is not None and m.group(2) in ("load_model", "save", "set_inputs")) \
                or _REPO_PATH.match(path) is not None:
            return self.max_upload_bytes
        return self.max_body_bytes

    @staticmethod
    def is_infer(method: str, path: str) -> bool:
        """Whether this is an inference request (answered by :meth:`begin` with a
        :class:`Pending`, which an event loop can await instead of blocking a thread)."""
        if method != "POST" or not path.endswith("/infer"):
            return False
        m = _MODEL_PATH.match(path)
        return m is not None and m.group(3) == "/infer"

    def route(self, method: str, path: str, req: RequestIn) -> tuple[int, Any]:
        """The answer, blocking the calling thread until it is ready."""
        answer = self.begin(method, path, req)
        return answer.result() if isinstance(answer, Pending) else answer

    @staticmethod
    def is_quick(method: str, path: str) -> bool:
        """Whether the answer is at hand without blocking (health and server metadata)."""
        return method == "GET" and (path == "/v2" or path.startswith("/v2/health/"))

    @staticmethod
    def is_control(path: str) -> bool:
        """Whether ``path`` is the control plane's (the engine's methods, the repository),
        whose calls may wait long (``/metrics`` is not: a scrape never waits behind them)."""
        return path.startswith(("/v1/", "/v2/repository"))

    @staticmethod
    def may_wait(path: str) -> bool:
        """Whether a control call may wait long (the contract gives it a wait of its own:
        loads, warm-up, ``wait_job``, ``wait_traffic``; the repository's loads): such calls
        run apart from the quick ones, which a page asks every second."""
        m = _CONTROL_PATH.match(path)
        if m is None:
            return _REPO_PATH.match(path) is not None
        contract = control.ENGINE_CONTRACT if m.group(1) == "engine" else control.STORE_CONTRACT
        spec = contract.get(m.group(2))
        return spec is not None and spec.wait_s != control.DEFAULT

    def check(self, method: str, path: str, req: RequestIn) -> None:
        """Refuse (HTTPError) a request its sender may not make: the guard's checks, on
        headers only (so a stack can run them before it reads the body)."""
        control = path.startswith("/v1/") or path.startswith("/v2/repository")
        self.guard.check(method, path, req, control, control and self._writes(path))
        coding = (req.header("content-encoding") or "identity").strip().lower()
        if coding != "identity":   # (gzip was read as text: "not valid JSON: 'utf-8' codec
            # can't decode byte 0x8b")
            raise HTTPError(415, f"this server reads bodies as they are sent: Content-Encoding "
                                 f"{coding[:40]!r} is not supported; send the body "
                                 "uncompressed (tritonclient: no request_compression_"
                                 "algorithm)")

    def begin(self, method: str, path: str, req: RequestIn,
              checked: bool = False) -> tuple[int, Any] | Pending:
        """The answer, or (an inference the engine accepted) a :class:`Pending` to wait
        for. ``checked``: the caller ran :meth:`check` already."""
        engine = self.engine
        if not checked:
            self.check(method, path, req)
        if path.startswith("/v1/") or path == "/metrics" or path.startswith("/v2/repository"):
            return self._route_control(method, path, req)
        if method == "GET" and path == "/v2":
            return 200, {"name": "batchlab", "version": "1", "extensions": list(EXTENSIONS)}
        if method == "GET" and path == "/v2/health/live":
            return 200, {"live": True}
        if method == "GET" and path == "/v2/health/ready":
            if engine.closed:
                raise HTTPError(503, "the engine is closed")
            return 200, {"ready": True}
        if path == "/v2/models/stats" and method == "GET":  # every model (Triton's form)
            return 200, {"model_stats": [triton.model_statistics(n, engine.counters(n))
                                         for n in engine.model_names()]}
        m = _MODEL_PATH.match(path)
        if m is None:
            raise HTTPError(404, f"no route {method} {path}; see the Open Inference Protocol "
                                  "(/v2, /v2/health/live, /v2/models/NAME, .../infer)")
        name, version, action = m.group(1), m.group(2), m.group(3)
        if version not in (None, "1"):
            raise HTTPError(404, f"model {name!r} has no version {version!r}; it serves "
                                  "version 1")
        info = self._info(name)
        if action is None and method == "GET":
            return 200, oip.metadata(name, info)
        if action == "/ready" and method == "GET":
            return 200, {"name": name, "ready": not engine.closed}
        if action == "/config" and method == "GET":
            cfg_name = engine.ab_arms(name)[0] if name in engine.ab_experiments() else name
            return 200, triton.model_config(name, engine.batch_config(cfg_name), info.batchable)
        if action == "/infer" and method == "POST":
            return self._infer(name, info, req)
        if action == "/stats" and method == "GET":
            if name not in engine.model_names():
                raise HTTPError(404, f"{name!r} is an A/B experiment: its statistics are its "
                                     f"arms' ({', '.join(engine.ab_arms(name))})")
            return 200, {"model_stats": [triton.model_statistics(name, engine.counters(name))]}
        raise HTTPError(405, f"{method} is not allowed on {path}")

    def _route_control(self, method: str, path: str, req: RequestIn) -> tuple[int, Any]:
        try:
            return self._control_answer(method, path, req)
        finally:  # a change (even one that failed half-way) may have changed the state
            if self.on_change is not None and method == "POST" and self._changes_state(path):
                self.on_change()

    @staticmethod
    def _changes_state(path: str) -> bool:
        """Whether a request may change what the server keeps across a restart."""
        if path.startswith("/v2/repository/models/"):
            return True
        m = _CONTROL_PATH.match(path)
        return m is not None and m.group(1) == "engine" and m.group(2) in control.STATE_METHODS

    def _control_answer(self, method: str, path: str, req: RequestIn) -> tuple[int, Any]:
        engine = self.engine
        if path == "/metrics":
            if method != "GET":
                raise HTTPError(405, "use GET /metrics")
            return 200, Text(prom.render(engine, self.wire), prom.CONTENT_TYPE)
        if path == "/v2/repository/index":
            if method != "POST":
                raise HTTPError(405, "use POST /v2/repository/index")
            body = req.body(required=False, max_parsed_bytes=self.max_json_bytes) or {}
            return 200, self.repository.index(bool(body.get("ready", False))
                                                if isinstance(body, dict) else False)
        m = _REPO_PATH.match(path)
        if m is not None:
            if method != "POST":
                raise HTTPError(405, f"use POST {path}")
            name, action = m.group(1), m.group(2)
            body = req.body(self.max_upload_bytes, required=False,
                            max_parsed_bytes=self.max_json_bytes) or {}
            if not isinstance(body, dict):
                raise HTTPError(400, "the body must be a JSON object")
            if action == "load":
                return 200, self.repository.load(name, body.get("parameters"),
                                             self.max_timeout_ms)
            self.repository.unload(name)
            return 200, {}
        if path == "/v1/info" and method == "GET":
            return 200, {**control.server_info(engine), "restored": self.restored}
        m = _CONTROL_PATH.match(path)
        if m is None:
            raise HTTPError(404, f"no route {method} {path}; the control API is POST "
                                  "/v1/engine/METHOD and /v1/store/METHOD (GET /v1/info lists "
                                  "the methods)")
        if method not in ("POST", "GET"):
            raise HTTPError(405, f"use POST {path}")
        body = req.body(self.body_limit(path), required=False,
                        max_parsed_bytes=self.max_json_bytes) if method == "POST" else None
        return 200, {"result": control.call(engine, m.group(1), m.group(2), body,
                                            self.max_timeout_ms)}

    def _check_both_arms_have(self, name: str, wanted: list[Any]) -> None:
        """An output asked of an experiment by name must be one both arms answer with:
        else the same request is served or refused as the split routes it."""
        (a, oa), (b, ob) = ((arm, [o.name for o in self.engine.model_info(arm).outputs])
                            for arm in self.engine.ab_arms(name))
        odd = [str(n)[:60] for n in wanted if oa and ob and (n in oa) != (n in ob)]
        if odd:
            both = [n for n in oa if n in ob]
            raise HTTPError(400, f"A/B experiment {name!r}'s arms answer with different "
                                 f"outputs (A {a!r}: {oa}; B {b!r}: {ob}), and {odd[:5]} "
                                 f"is not in both: ask for outputs both have ({both}), or "
                                 "name none and each arm answers with all of its own")

    def _info(self, name: str) -> ModelInfo:
        engine = self.engine
        if name in engine.model_names():
            return engine.model_info(name)
        if name in engine.ab_experiments():
            # the outputs both arms answer with: what a caller can ask of it by name
            ia, ib = (engine.model_info(arm) for arm in engine.ab_arms(name))
            theirs = [o.name for o in ib.outputs]
            if not theirs or [o.name for o in ia.outputs] == theirs:
                return ia
            both = tuple(o for o in ia.outputs if o.name in theirs)
            return dataclasses.replace(ia, outputs=both)
        raise ModelNotFoundError(f"no model named {name!r}; served models: "
                                 f"{', '.join(engine.model_names() + engine.ab_experiments())}")

    def _infer(self, name: str, info: ModelInfo, req: RequestIn) -> Pending:
        if req.header(HOPS_HEADER) is not None and self._forwards(name):
            # It came from another Batchlab engine's remote model and would go out again
            # to a remote model here: a cycle of servers (or a chain) ends here.
            raise HTTPError(508, f"model {name!r} is a remote model (or an experiment with "
                                 "one) on this server, and this request already came "
                                 f"through another Batchlab server ({HOPS_HEADER}): passing "
                                 "it on could loop between servers; point the first server "
                                 "at the model's own server instead")
        raw = req.raw_body()
        header = req.header(oip.HEADER_LENGTH)
        try:
            header_length = int(header) if header is not None else None
        except ValueError:
            raise HTTPError(400, f"{oip.HEADER_LENGTH} must be an integer, got "
                                  f"{header!r}") from None
        req_in = req
        arrays, req = self.parser.parse(raw or b"", header_length, self.max_json_bytes)
        for a in arrays.values():  # the body's own arrays: nothing writes into them, so
            while isinstance(a, np.ndarray):   # submit takes them as they are (no copy),
                a.flags.writeable = False      # and the arrays they view (a reshape's)
                a = a.base
        x: Any = next(iter(arrays.values())) if len(info.inputs) == 1 and len(arrays) == 1 \
            and next(iter(arrays)) == info.inputs[0].name else arrays
        params = req.get("parameters") if isinstance(req.get("parameters"), dict) else {}
        timeout_ms = timeouts.request_timeout_ms(params, self.max_timeout_ms)
        if timeout_ms is not None:   # (its wait to be parsed counts: 21 s past its 2 s)
            timeout_ms = timeouts.after_parse_ms(timeout_ms, getattr(req_in, "_read_at", None))
        engine = self.engine
        wanted = [o.get("name") for o in req.get("outputs") or [] if isinstance(o, dict)]
        if wanted and name in engine.ab_experiments():
            self._check_both_arms_have(name, wanted)
        oip.check_outputs_asked(name, wanted, [o.name for o in info.outputs] or None)

        def check(pred: Any) -> None:
            """The answer must fit the form its caller asked for before the request counts
            as served (else it fails, counted, with the 4xx its caller then gets): finite
            values in JSON (422: the model's doing), JSON within the bound (the caller's
            choice of form: AnswerRefusedError, not held against an A/B arm)."""
            try:
                oip.check_answer(req, name, pred.outputs, self.max_json_bytes)
            except HTTPError as err:
                if err.status == 400:
                    raise AnswerRefusedError(str(err)) from None
                raise

        # Triton's and KServe's priority parameter: 1 is the high class, 2 or 0 the normal
        try:
            fut = engine.submit(name, x, timeout_ms=timeout_ms, key=params.get("key"),
                                priority=params.get("priority"), check=check)
        except InputValidationError as err:
            words = oip.datatype_words(info, arrays)
            if not words:
                raise
            # (the numpy call the in-process message offers means nothing to a client)
            said = str(err).split(" (convert it with .astype(")[0]
            raise InputValidationError(f"{said} ({words})") from None
        t_ms = timeout_ms
        if t_ms is None and name in engine.model_names():
            t_ms = engine.batch_config(name).timeout_ms

        def answer(pred: Any) -> Text:
            parts, binary_header = oip.encode_infer_response_parts(
                req, name, pred.outputs, {"batch_rows": pred.batch_rows,
                                          "queue_ms": pred.queue_ms,
                                          "compute_ms": pred.compute_ms},
                self.max_json_bytes)
            if binary_header is None:   # (a large output's JSON comes in pieces)
                return Text(parts[0] if len(parts) == 1 else parts, "application/json")
            return Text(parts, "application/octet-stream",
                        {oip.HEADER_LENGTH: str(binary_header)})

        return Pending(fut, wait_s_for(t_ms), answer, lambda: settle_late(fut, name, t_ms),
                       lambda pred: oip.text_answer_bytes(req, pred.outputs))
