"""Remote models: add one (a model another Open Inference Protocol server serves), what is
known of it, and what its server says of it (the statistics extension).

Example:
    >>> engine.add_remote("mlp-triton", url="http://triton:8000", model="mlp")
    >>> engine.server_stats("mlp-triton")["mean_batch_rows"]
"""

from __future__ import annotations

from typing import Any

from core.config import BatchConfig
from core.models import ModelInfo
from core.remote import RemoteInfo

__all__ = ["RemoteMethods"]


class RemoteMethods:
    """Mixed into the engine: uses its loader (``self._loader``) and namespace (``self._ns``)."""

    _loader: Any
    _ns: Any

    def add_remote(self, name: str, url: str, model: str, version: str | None = None,
                   headers: dict[str, str] | None = None, *, inputs: Any = None,
                   outputs: Any = None, timeout_s: float = 10.0, max_connections: int = 64,
                   binary: bool | None = None, replace: bool = False,
                   batch: BatchConfig | None = None) -> ModelInfo:
        """Register ``name``: model ``model`` served by an Open Inference Protocol (KServe
        v2) HTTP endpoint at ``url`` (Triton, KServe, MLServer, Seldon, a Batchlab server).

        The server's metadata gives the inputs and outputs (checked at submit as for a local
        model); where it declares none, pass ``inputs``/``outputs`` as
        ``[{"name": ..., "datatype": "FP32", "shape": [-1, 4]}]`` or let the first request
        that succeeds define them. ``headers`` go with every request (e.g.
        ``{"Authorization": "Bearer ..."}``; a ``user:password@`` in the URL becomes Basic
        auth and is not kept in the URL). ``timeout_s`` bounds each of ``add_remote``'s own
        calls (metadata, readiness, config); a request's timeout is ``timeout_ms``
        (``batch=`` or :meth:`configure`), and the time it has left is passed on to Triton
        and Batchlab servers. Requests are sent as they come over up to
        ``max_connections`` keep-alive connections, with binary tensors (``binary=None``:
        unless the server is MLServer, which takes JSON only); the server batches. Latency
        is measured here, at the client.

        The server's batch settings are read where it reports them (``GET .../config``:
        Triton, a Batchlab server); for a server that does not (MLServer), ``batch`` says how
        it is deployed (shown as given, used by sweeps over load). ``timeout_ms`` and
        ``max_queue`` of ``batch`` are the client's.

        An unreachable or wrong endpoint raises :class:`~core.errors.RemoteTargetError`
        saying what was tried; nothing is registered then.
        """
        return self._loader.add_remote(name, url, model, version, headers, inputs=inputs,
                                       outputs=outputs, timeout_s=timeout_s,
                                       max_connections=max_connections, binary=binary,
                                       replace=replace, batch=batch)

    def remote_info(self, name: str) -> RemoteInfo | None:
        """For a remote model (:meth:`add_remote`): its URL, server, model name, whether the
        server declared its tensors, and its batch settings as the server reports them
        (:class:`~core.remote.ServerBatching`: who reported them, whether Batchlab can
        change them there); None for a local model."""
        remote = self._ns.entry(name).remote
        return remote.describe() if remote is not None else None

    def remote_endpoint(self, name: str) -> dict[str, Any] | None:
        """For a remote model: what a client elsewhere needs to send it requests directly
        (``url``, ``model``, ``version``, ``headers`` with its token): the load agents'
        target. None for a local model."""
        remote = self._ns.entry(name).remote
        if remote is None:
            return None
        t = remote.target
        return {"url": t.url, "model": t.model, "version": t.version,
                "headers": dict(t.headers) or None}

    def server_stats(self, name: str) -> dict[str, Any] | None:
        """For a remote model: what its server reports of it through the statistics
        extension (Triton, a Batchlab server) — its own queue/compute split and executions
        per batch size, cumulative since the server started — or ``available`` False and
        the reason (MLServer has no such extension). None for a local model."""
        remote = self._ns.entry(name).remote
        return remote.server_statistics() if remote is not None else None

