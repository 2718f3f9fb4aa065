"""Remote models: a model served by any Open Inference Protocol (KServe v2) HTTP endpoint
(Triton, KServe, MLServer, Seldon, a Batchlab server), used like a local one.

``connect_remote`` reads the model's metadata (:mod:`.discovery`) into a
:class:`RemoteModel` (the backend, with its :class:`ServerBatching`); a
:class:`RemoteDispatcher` takes the batcher's place and sends each request as it comes
over the shared client loop (:mod:`.loop`, :mod:`.target`).

Example:
    >>> engine.add_remote("mlp-mlserver", url="http://127.0.0.1:8080", model="mlp")
    >>> engine.predict("mlp-mlserver", x).total_ms     # measured at the client
"""

from __future__ import annotations

from .discovery import connect_remote, declared_tensors, parse_tensor_list
from .dispatcher import RemoteDispatcher, RemoteValidator
from .loop import client_loop
from .model import RemoteModel
from .policy import HOPS_HEADER, OutboundPolicy
from .settings import BatchingSource, RemoteInfo, ServerBatching
from .target import MAX_ANSWER_BYTES, MAX_CONTROL_ANSWER_BYTES, OIPTarget, points_at

__all__ = ["connect_remote", "declared_tensors", "parse_tensor_list", "RemoteDispatcher", "RemoteValidator",
           "client_loop", "RemoteModel", "BatchingSource", "RemoteInfo", "ServerBatching",
           "MAX_ANSWER_BYTES", "MAX_CONTROL_ANSWER_BYTES", "OIPTarget", "points_at",
           "OutboundPolicy", "HOPS_HEADER"]
