"""The other metrics a request is counted in besides its model's (its A/B arm's, its
experiment's callers'): one record per batch for each of them, holding that batch's
requests that are theirs. A run that failed is in their batches as it is in the model's
(an arm's batch sizes left it out).
"""

from __future__ import annotations

from typing import Any, Sequence

from core.metrics import ModelMetrics

__all__ = ["record_sinks", "record_failed_run"]


def record_sinks(won: Sequence[Any], rows: int, reason: str, compute_s: float,
                 queue_s: Sequence[float], total_s: Sequence[float], runs: int = 1) -> None:
    """A batch that ran: its successful requests ``won`` (with their queue and total
    seconds) in each metrics object they are counted in."""
    groups: dict[int, tuple[ModelMetrics, list[float], list[float], list[int]]] = {}
    for r, q, tot in zip(won, queue_s, total_s):
        for m in r._sink or ():
            g = groups.setdefault(id(m), (m, [], [], []))
            g[1].append(q)
            g[2].append(tot)
            g[3].append(r._rows)
    for m, qs, ts, ns in groups.values():
        m.record_batch(rows, reason, compute_s, qs, total_s=ts, runs=runs, ok_rows=sum(ns))


def record_failed_run(requests: Sequence[Any], rows: int, reason: str, compute_s: float,
                      runs: int = 1, err: BaseException | None = None) -> None:
    """A run that raised, in the batches of each metrics object its ``requests`` are counted
    in; with ``err``, their failures too (without: they are re-run alone)."""
    groups: dict[int, list[Any]] = {}
    for r in requests:
        for m in r._sink or ():
            groups.setdefault(id(m), [m, 0])[1] += 1
    for m, n in groups.values():
        failed = None if err is None else {type(err).__name__: [str(err)] * n}
        m.record_batch(rows, reason, compute_s, (), failed, runs=runs, run_ok=False)
