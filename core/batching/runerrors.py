"""What a run's failure says to its caller: an :class:`~core.errors.InferenceError` with the
model's words, and for ONNX Runtime's shared arena running out, what to do about it.

The process's sessions share one capped arena (:mod:`core.models.memory`). A run that asks
for more than is left fails with ONNX Runtime's "Available memory of X is smaller than
requested bytes of Y" — answered 500 with the allocator's words. Two cases, said apart:
the arena was full with other runs (503, :class:`ArenaBusyError`: retry), or this run alone
asks for more than the whole arena (413, :class:`RunTooLargeError`: fewer rows, or a larger
budget).

Example:
    >>> run_error("mlp", RuntimeError("... Available memory of 10 is smaller than "
    ...                               "requested bytes of 20"), arena_bytes=100)
    ArenaBusyError("model 'mlp' could not run: ONNX Runtime's shared arena ...")
"""

from __future__ import annotations

import re

from core.errors import ArenaBusyError, InferenceError, RunTooLargeError
from core.models import format_bytes
from core.models.memory import arena_limit, memory_budget

__all__ = ["run_error", "run_error_message"]

_ARENA = re.compile(r"Available memory of (\d+) is smaller than requested bytes of (\d+)")


def run_error_message(model: str, err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    text = " ".join(text.split())
    if len(text) > 500:
        text = text[:500] + "..."
    return f"model {model!r} failed on this request: {text}"


def run_error(model: str, err: BaseException, arena_bytes: int | None = None,
              rows: int | None = None) -> InferenceError:
    """The error a failed run's requests get (``arena_bytes``: the arena's cap; default
    the one in force in this process)."""
    m = _ARENA.search(str(err))
    if m is None:
        return InferenceError(run_error_message(model, err))
    avail, asked = int(m.group(1)), int(m.group(2))
    if arena_bytes is None:
        budget = memory_budget()
        arena_bytes = arena_limit(budget) if budget else None
    of = f" of {rows} row(s)" if rows else ""
    if arena_bytes is not None and asked > arena_bytes:
        return RunTooLargeError(
            f"model {model!r} could not run this request{of}: one of its tensors needs "
            f"{format_bytes(asked)}, more than ONNX Runtime's whole shared arena "
            f"({format_bytes(arena_bytes)}, three quarters of the engine's memory budget); "
            "send fewer rows per request, or start the engine with a larger memory budget "
            "(EngineConfig.memory_budget_bytes, --memory-budget-mib)")
    cap = f" of {format_bytes(arena_bytes)}" if arena_bytes else ""
    return ArenaBusyError(
        f"model {model!r} could not run this request{of}: ONNX Runtime's shared arena{cap} "
        f"had {format_bytes(avail)} left and the run asked for {format_bytes(asked)}, the "
        "rest held by other runs; retry shortly (if it keeps failing, the run needs most of "
        "the arena itself: send fewer rows, or raise the memory budget)")
