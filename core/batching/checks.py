"""Answers a caller refuses: ``submit(..., check=fn)`` runs ``fn(prediction)`` on the
settling thread before a request that ran is settled as a success; what it raises fails
the request instead, counted as that error everywhere the request is counted (the model's
metrics, an A/B arm's, a priority class's, the trace). The engine server checks that an
answer can be sent in the form the caller asked for (e.g. no NaN in strict JSON), so a
request whose caller got an error is never counted as served.
"""

from __future__ import annotations

from typing import Any

from core.errors import RequestTimeoutError
from .prediction import Prediction

__all__ = ["run_checks", "drop_late", "errors_by_type"]


def run_checks(model: str, won: list[tuple[Any, dict[str, Any], int]], queue_s: list[float],
               total_s: list[float], batch_id: int, rows: int, reason: str,
               compute_ms: float) -> list[tuple[Any, BaseException]]:
    """Run each request's ``check`` on its prediction (``won``: request, outputs, rows).
    Those refused are removed from ``won``, ``queue_s`` and ``total_s`` (only after every
    check ran) and returned with what their check raised."""
    bad = []
    for i, (r, out, n) in enumerate(won):
        check = r._check
        if check is not None:
            try:
                check(Prediction(out, model, batch_id, rows, reason, queue_s[i] * 1000.0,
                                 compute_ms, total_s[i] * 1000.0, n, r._arm))
            except BaseException as err:  # noqa: BLE001 - refused (however): the request
                bad.append((i, r, err))          # fails with it, counted like the others
    for i, _, _ in reversed(bad):
        del won[i], queue_s[i], total_s[i]
    return [(r, err) for _, r, err in bad]


def drop_late(model: str, won: list[tuple[Any, dict[str, Any], int]], queue_s: list[float],
              total_s: list[float], t_done: float, rows: int,
              compute_ms: float) -> list[tuple[Any, BaseException]]:
    """Requests of ``won`` answered past their deadline (the watcher had not failed them
    yet: successes came 4.8 ms after a timeout of 3 ms; an adversary), removed from
    ``won``, ``queue_s`` and ``total_s`` and returned with a RequestTimeoutError: past its
    timeout a request fails, as the contract says, and no success is slower than it."""
    bad = [i for i, (r, _, _) in enumerate(won) if r._deadline < t_done]
    out = []
    for i in reversed(bad):
        r = won[i][0]
        out.append((r, RequestTimeoutError(
            f"request to model {model!r} was answered {total_s[i] * 1000:.1f} ms after it "
            f"was sent, past its timeout of {(r._deadline - r._t_submit) * 1000:g} ms (its "
            f"batch of {rows} rows ran {compute_ms:.1f} ms): the answer came too late and "
            "was dropped; raise timeout_ms or lower the load")))
        del won[i], queue_s[i], total_s[i]
    return out[::-1]


def errors_by_type(refused: list[tuple[Any, BaseException]]) -> dict[str, list[str]] | None:
    """The refused requests' errors as ``ModelMetrics.record_batch`` takes them."""
    if not refused:
        return None
    out: dict[str, list[str]] = {}
    for _, err in refused:
        out.setdefault(type(err).__name__, []).append(str(err))
    return out
