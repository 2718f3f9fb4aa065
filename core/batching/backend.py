"""The two seams of a served model, as protocols: what *runs* it (a :class:`Backend`) and
what *serves* it (a :class:`ServedModel`); plus the runner of a local backend.

A local model is a :class:`~core.models.LoadedModel` (an ONNX Runtime session) served by a
:class:`~core.batching.batcher.Batcher`; a remote model is a
:class:`~core.remote.RemoteModel` (an OIP server) served by a
:class:`~core.remote.RemoteDispatcher`. The engine holds every model through these two
protocols and never asks which kind it has.

Example:
    >>> runner = ModelRunner(loaded)            # loaded: a LoadedModel
    >>> Batcher("mlp", runner, loaded.output_names)
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from core.config import BatchConfig, SessionConfig
from core.models import ModelInfo

__all__ = ["Backend", "ServedModel", "ModelRunner"]


@runtime_checkable
class Backend(Protocol):
    """What runs a model: its interface, and one synchronous run (warm-up, probes)."""

    info: ModelInfo
    output_names: list[str]
    #: batch sizes this backend has run (traffic and warm-up alike)
    sizes_run: set[int]
    #: the session options it runs with (None: not ours to choose, e.g. a remote server)
    session_config: SessionConfig | None

    def run(self, arrays: Sequence[np.ndarray], run_options: Any = None) -> list[Any]: ...


@runtime_checkable
class ServedModel(Protocol):
    """What serves a model's requests: admits them, holds the batch settings, and drains
    on close. Every request it accepts ends through its ledger."""

    name: str
    #: per-priority-class metrics (:class:`core.metrics.classes.PriorityClasses`)
    classes: Any

    @property
    def config(self) -> BatchConfig: ...

    @property
    def closed(self) -> bool: ...

    def submit(self, arrays: Sequence[np.ndarray], rows: int, timeout_ms: float | None = None,
               arm: str | None = None, sink: Any = None,
               priority: int | None = None, check: Any = None) -> Future: ...

    def configure(self, config: BatchConfig) -> None: ...

    def queue_depth(self) -> int: ...

    def pending(self) -> int: ...

    def learned_cost(self) -> dict[str, float] | None: ...

    def policy_state(self) -> dict[str, Any] | None: ...

    def begin_close(self) -> None: ...

    def wait_drained(self, deadline: float | None) -> Any: ...

    def abort(self) -> int: ...

    def join_threads(self, deadline: float) -> None: ...

    def finish_close(self, deadline: float | None) -> int: ...


class ModelRunner:
    """Runs one batch of a local model; stoppable through ONNX Runtime's ``RunOptions``.

    Models whose batch axis is fixed at 1 (``batch_mode == "rows"``) run a request's rows
    one at a time and the outputs are joined.
    """

    terminable = True  # the executor passes a RunOptions it can terminate

    def __init__(self, loaded: Backend) -> None:
        self.loaded = loaded
        self.by_rows = loaded.info.batch_mode == "rows"
        self.rows_started = 0   # row by row: the runs the last call started

    def __call__(self, arrays: Sequence[np.ndarray], run_options: Any = None) -> list[Any]:
        loaded = self.loaded
        rows = arrays[0].shape[0] if arrays and arrays[0].ndim else 1
        if not self.by_rows or rows == 1:
            self.rows_started = 1
            out = loaded.run(arrays, run_options)
            loaded.sizes_run.add(rows if not self.by_rows else 1)  # warm for this shape now
            return out
        parts = []
        for i in range(rows):   # (how far it got: a failed request counts the runs it made)
            self.rows_started = i + 1
            parts.append(loaded.run([a[i:i + 1] for a in arrays], run_options))
        out: list[Any] = []
        for k in range(len(parts[0])):
            pieces = [p[k] for p in parts]
            if isinstance(pieces[0], np.ndarray):
                out.append(np.concatenate(pieces))
            else:
                out.append([item for piece in pieces for item in piece])
        loaded.sizes_run.add(1)
        return out
