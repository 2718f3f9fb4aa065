"""Exceptions raised by Batchlab, each with a message a person can act on.

Every error derives from :class:`BatchlabError`, and also from the closest built-in
exception (``ValueError``, ``LookupError``, ``TimeoutError`` ...) so that code which does
not know Batchlab still catches them sensibly.

Example:
    >>> try:
    ...     engine.predict("mlp", np.zeros((2, 255), np.float32))
    ... except InputValidationError as err:
    ...     print(err)   # input 'x' expects float32 [N,256], got float32 [2,255]
"""

from __future__ import annotations

__all__ = [
    "BatchlabError",
    "ConfigError",
    "ModelLoadError",
    "ModelNotFoundError",
    "JobNotFoundError",
    "TrafficNotFoundError",
    "InputValidationError",
    "RequestTooLargeError",
    "AnswerRefusedError",
    "OverloadedError",
    "SLOShedError",
    "RequestTimeoutError",
    "InferenceError",
    "EngineClosedError",
    "ResourceLimitError",
    "EngineUnavailableError",
    "RemoteTargetError",
    "RemoteServerError",
    "RemoteConnectionError",
    "ArenaBusyError",
    "RunTooLargeError",
]


class BatchlabError(Exception):
    """Base class of every error Batchlab raises on purpose."""


class ConfigError(BatchlabError, ValueError):
    """A configuration value is out of range or of the wrong type."""


class ModelLoadError(BatchlabError, ValueError):
    """A model file was refused: empty, not ONNX, invalid, unsafe or unsupported."""


class ModelNotFoundError(BatchlabError, LookupError):
    """No model (or A/B experiment) is registered under the requested name."""

    def __str__(self) -> str:  # LookupError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class JobNotFoundError(ModelNotFoundError):
    """No lab job is kept under the requested id (a ModelNotFoundError, as it was before it
    had a name of its own: code catching that still catches it)."""


class TrafficNotFoundError(ModelNotFoundError):
    """No built-in traffic was started to the requested target (a ModelNotFoundError, as it
    was before it had a name of its own)."""


class InputValidationError(BatchlabError, ValueError):
    """A request's inputs do not match the model's declared inputs."""


class AnswerRefusedError(InputValidationError):
    """The model answered, but not in the form the caller asked for (e.g. as JSON past the
    server's bound): the caller's choice, so the request fails (and is counted) without it
    being held against the model's A/B arm."""


class RequestTooLargeError(InputValidationError):
    """A request carries more rows than the model's ``max_batch_size`` allows."""


class OverloadedError(BatchlabError):
    """The model's queue is full; the request was refused at once, not queued."""


class SLOShedError(OverloadedError):
    """The adaptive policy shed the request: it could no longer finish within the SLO."""


class RequestTimeoutError(BatchlabError, TimeoutError):
    """A request did not complete within its timeout."""


class InferenceError(BatchlabError, RuntimeError):
    """ONNX Runtime failed while running this request (re-run alone, so it is this request's)."""


class EngineClosedError(BatchlabError, RuntimeError):
    """The engine (or the model's batcher) is closed and accepts no more requests."""


class ResourceLimitError(BatchlabError, MemoryError):
    """Work refused or stopped because it would exceed the engine's memory budget or a time
    limit (warm-up, a run past every deadline)."""


class EngineUnavailableError(BatchlabError, ConnectionError):
    """The engine server (``python -m core.server``) cannot be reached, or answered with
    something that is not the control API."""


class RemoteTargetError(BatchlabError, ConnectionError):
    """``add_remote`` could not use an Open Inference Protocol endpoint: unreachable, refused,
    TLS failure, no such model, or an answer that is not the protocol. The message says what
    was tried."""


class RemoteServerError(InferenceError):
    """A remote model's server answered a request with an error (HTTP 4xx/5xx); ``status``
    is the HTTP status and the message carries the server's own words."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class RemoteConnectionError(InferenceError, ConnectionError):
    """A request to a remote model failed below HTTP: refused, dropped or reset
    connection, TLS failure."""


class ArenaBusyError(InferenceError, OverloadedError):
    """A run found ONNX Runtime's shared arena taken by other runs (a 503: retry)."""


class RunTooLargeError(InferenceError, ResourceLimitError):
    """A run alone asks for more than ONNX Runtime's whole shared arena (a 413: fewer
    rows, or a larger memory budget)."""

