"""What is known of a remote server's batch settings, and what the pages show about a
remote model: typed, so no page or module branches on the words of a sentence.

Example:
    >>> b = ServerBatching(16, 2.0, BatchingSource.SERVER_CONFIG, "repository",
    ...                    "GET /v2/models/mlp/config")
    >>> b.enforced_max_batch_size, b.describe()
    (16, 'GET /v2/models/mlp/config')
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["BatchingSource", "ServerBatching", "RemoteInfo"]


class BatchingSource(str, Enum):
    """Who said what a remote model's batch settings are."""

    #: the server's model configuration (``GET .../config``: Triton, a Batchlab server)
    SERVER_CONFIG = "server_config"
    #: the model metadata's parameters (MLServer, where it reports them at all)
    SERVER_METADATA = "server_metadata"
    #: ``add_remote(batch=...)``: how the caller says the server is deployed
    GIVEN = "given"
    #: nobody: the server does not report them and none were given
    UNKNOWN = "unknown"


#: How a client can change the batch settings on a server: ``"batchlab"`` (its control
#: API), ``"repository"`` (a model load with a Triton ``config``), or None (it can't).
CONFIGURABLE = ("batchlab", "repository", None)


@dataclass(frozen=True)
class ServerBatching:
    """A remote server's batch settings for one model, and who reported them.

    ``max_batch_size`` is the server's own value (Triton's ``0``: the model takes no batch
    dimension); ``None`` where unknown. ``detail`` names the source for a person (the call
    that read them, or the file the server reads them from).
    """

    max_batch_size: int | None = None
    max_wait_ms: float | None = None
    source: BatchingSource = BatchingSource.UNKNOWN
    configurable: str | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", BatchingSource(self.source))
        if self.configurable not in CONFIGURABLE:
            raise ValueError(f"configurable must be one of {CONFIGURABLE}, got "
                             f"{self.configurable!r}")

    @property
    def known(self) -> bool:
        """Whether any setting is known (reported by the server or given by the caller)."""
        return self.max_batch_size is not None or self.max_wait_ms is not None

    @property
    def enforced_max_batch_size(self) -> int | None:
        """The row limit a request is checked against at submit: only one the server itself
        reported in its configuration (a caller's description of a deployment, or MLServer's
        count of requests, is not a row limit); None: no check."""
        mbs = self.max_batch_size
        if self.source is BatchingSource.SERVER_CONFIG and isinstance(mbs, int) and mbs > 0:
            return mbs
        return None

    def describe(self) -> str:
        """Where the settings come from, for a person."""
        if self.detail:
            return self.detail
        return {BatchingSource.SERVER_CONFIG: "the server's model configuration",
                BatchingSource.SERVER_METADATA: "the model metadata's parameters",
                BatchingSource.GIVEN: "given to add_remote (the server does not report them)",
                BatchingSource.UNKNOWN: "not reported by the server"}[self.source]


@dataclass(frozen=True)
class RemoteInfo:
    """A remote model as the pages show it (:meth:`Engine.remote_info`).

    Example:
        >>> info = engine.remote_info("mlp-mlserver")
        >>> info.server, info.url, info.batching.configurable
        ('mlserver', 'http://127.0.0.1:8080', None)
    """

    url: str
    model: str
    version: str | None
    server: str
    server_version: str
    kind: str
    #: the server listed the tensors (else the user declared them, or they were learned)
    declared: bool
    #: requests use the binary tensor extension (else JSON)
    binary: bool
    batching: ServerBatching

    @property
    def configurable(self) -> str | None:
        return self.batching.configurable

    @property
    def source(self) -> str:
        return self.batching.describe()

    def to_dict(self) -> dict[str, Any]:
        """A flat summary (for a table or JSON)."""
        b = self.batching
        return {"url": self.url, "model": self.model, "version": self.version,
                "server": self.server, "server_version": self.server_version,
                "kind": self.kind, "declared": self.declared, "binary": self.binary,
                "max_batch_size": b.max_batch_size, "max_wait_ms": b.max_wait_ms,
                "source": b.describe(), "batching_source": b.source.value,
                "configurable": b.configurable}
