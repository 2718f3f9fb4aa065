"""Batching: the life of a local request from admission to settlement, and the seams every
served model (local or remote) implements.

``Batcher`` = ``AdmissionQueue`` (bounded FIFO, release policy) + ``Executor`` (run once,
split rows, re-run alone on failure) + ``Supervisor`` (timeouts, collector restarts) +
``Ledger`` (the one way a request ends).

Example:
    >>> b = Batcher("m", ModelRunner(loaded), loaded.output_names, BatchConfig(max_batch_size=8))
    >>> b.submit((x,), rows=1).result().outputs
"""

from __future__ import annotations

from .admission import AdmissionQueue
from .backend import Backend, ModelRunner, ServedModel
from .batcher import RELEASE_REASONS, REMOTE_REASON, Batcher
from .executor import Executor, RunFn, queue_timeout_message
from .prediction import Prediction
from .settle import DEAD, DROPPED, QUEUED, TAKEN, Ledger, Request
from .supervisor import Supervisor

__all__ = ["AdmissionQueue", "Backend", "ModelRunner", "ServedModel", "RELEASE_REASONS",
           "REMOTE_REASON", "Batcher", "Executor", "RunFn", "queue_timeout_message", "Ledger",
           "Prediction", "Request", "QUEUED", "TAKEN", "DROPPED", "DEAD", "Supervisor"]
