"""One Batchlab engine per Ray Serve replica, behind the Open Inference Protocol.

:class:`BatchlabReplica` is the deployment's class (made a Ray Serve deployment in
:mod:`core.cluster.deploy`): each replica opens the model in an engine of its own and
serves the OIP data plane (``/v2/...``: infer, metadata, config, health, statistics) on
Ray Serve's HTTP proxy, its batching done by Batchlab (not also by ``@serve.batch``). The
batch settings are the deployment's ``user_config`` (``{"batch": {...}}``): Ray Serve calls
:meth:`BatchlabReplica.reconfigure` on every replica when it changes, live, without a
restart. Every answer carries the header ``Batchlab-Replica`` (which replica served it) and
``Batchlab-Batch`` (its max batch size / max wait in ms), so a client sees where a setting
has arrived.

The control API (``/v1/...``) and the repository extension are not served here: a call
would reach one replica of several; the deployment is changed through
:func:`core.cluster.configure` (its ``user_config``), for all of them at once.

This module imports nothing from Ray at import time; the replica runs in a Ray worker.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from typing import Any

from core.config import BatchConfig, EngineConfig, SessionConfig
from core.errors import ConfigError
from core.lab import Engine
from core.serving.asgi import OipApp
from core.serving.routes import Routes
from .store import ModelRef

__all__ = ["BatchlabReplica", "REPLICA_HEADER", "BATCH_HEADER", "batch_user_config"]

REPLICA_HEADER = "batchlab-replica"
BATCH_HEADER = "batchlab-batch"
#: Paths a replica refuses: they would change or read one replica of several.
_NOT_HERE = ("/v1/", "/v2/repository")


def batch_user_config(config: BatchConfig | dict[str, Any] | None) -> dict[str, Any]:
    """The deployment's ``user_config`` for these batch settings (checked here, before any
    replica sees them)."""
    if config is None:
        config = BatchConfig()
    elif isinstance(config, dict):
        config = BatchConfig(**config)
    elif not isinstance(config, BatchConfig):
        raise ConfigError(f"batch settings must be a BatchConfig or a dict of its fields, "
                          f"got {type(config).__name__}")
    return {"batch": dataclasses.asdict(config)}


class BatchlabReplica:
    """A Ray Serve replica: a Batchlab engine with one model (see the module docstring)."""

    def __init__(self, model: bytes | ModelRef, name: str, token: str | None = None,
                 threads: int | None = None, allowed_hosts: tuple[str, ...] = (),
                 check_rows: bool = True) -> None:
        self.name = name
        if isinstance(model, ModelRef):    # (the cluster's model store: core.cluster.store)
            model = model.fetch()
        #: Host names the replica answers to beyond loopback (with a token), as a Batchlab
        #: server's ``--allow-host``: addressed by another name, a request is refused (a
        #: web page's DNS rebinding), by IP address it is answered.
        self.allowed_hosts = tuple(allowed_hosts or ())
        self.replica_id = _replica_id()
        self.engine = Engine(EngineConfig(demo_models=False))
        # ONNX Runtime's threads fitted to the replica's CPUs (the default, all cores but
        # one, would have N replicas on a node oversubscribe it).
        session = SessionConfig(intra_op_threads=threads) if threads else None
        # (check_rows=False: batched on its owner's word, as in the engine it came from)
        self.engine.load_model(model, name=name, probe=False, session=session,
                               source_label="Ray Serve deployment", check_rows=check_rows)
        self.token = token

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Ray Serve's hook: the deployment's ``user_config`` changed (or is first set)."""
        batch = (user_config or {}).get("batch") or {}
        self.engine.configure(self.name, **batch)

    def __serve_build_asgi_app__(self) -> Any:
        routes = Routes(self.engine)
        routes.max_timeout_ms = 600_000.0
        if self.token:
            # Every request but health checks needs the token, as a server beyond loopback.
            routes.guard.token = self.token
            routes.guard.bind("0.0.0.0", 0)
            routes.guard.allowed_hosts = frozenset(
                h.strip().lower().rstrip(".") for h in self.allowed_hosts)
        return _ReplicaApp(OipApp(routes), self)

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


class _ReplicaApp:
    """The OIP app of one replica: refuses the control paths, strips Ray Serve's route
    prefix, and names the replica and its batch settings on every answer."""

    def __init__(self, app: OipApp, replica: BatchlabReplica) -> None:
        self.app = app
        self.replica = replica

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root = scope.get("root_path", "").rstrip("/")
        path = scope["path"]
        if root and path.startswith(root):
            path = path[len(root):] or "/"
            scope = {**scope, "path": path, "raw_path": path.encode("latin-1"),
                     "root_path": ""}
        if path.startswith(_NOT_HERE):
            body = (b'{"error": "a Ray Serve replica serves the inference data plane (/v2/...)'
                    b' only: change its settings for every replica with '
                    b'core.cluster.configure(...)", "type": "NotServedHere"}')
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        replica = self.replica
        cfg = replica.engine.batch_config(replica.name)
        extra = [(REPLICA_HEADER.encode(), replica.replica_id.encode()),
                 (BATCH_HEADER.encode(),
                  f"{cfg.max_batch_size}/{cfg.max_wait_ms:g}".encode())]

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _replica_id() -> str:
    """This replica's id from Ray Serve's context (a fresh one outside Ray)."""
    try:
        from ray import serve
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # noqa: BLE001 - outside a replica (tests of the app alone)
        return f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
