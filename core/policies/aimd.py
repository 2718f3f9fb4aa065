"""``aimd``: Clipper's additive-increase / multiplicative-decrease batch size (NSDI'17).

The policy keeps a batch-size cap. A batch that the cap bound (it filled the cap, or left
because the cap's rows were queued: with requests of several rows the next whole request may
not fit) and whose run met the
latency objective grows it by ``additive_step`` rows; a batch whose run missed it shrinks it
to ``backoff`` times what it was (Clipper's 10 % backoff by default). As in Clipper, the run
is what is judged, not the queueing before it: queueing is the load's doing, and shrinking
batches because of it would cut throughput just when the queue needs it (on a burst of 2,000
requests, judging from submit to answer collapsed the cap to 1 row). The cap stays within 1
and the model's ``max_batch_size``; a batch leaves when the cap's rows are queued or when
its oldest request has waited ``max_wait_ms`` (as ``deadline``). The objective is the
model's ``latency_slo_ms`` (AIMD sheds nothing), else :attr:`AIMDPolicy.objective_ms`.

An objective below what a one-row run costs cannot be met at any size: the cap then sits at
one row and throughput with it (measured: a cheap model at half its capacity answered 12 of
15,000 req/s); ``state()["one_row_misses"]`` counts such runs and the Batching page says so.

Under a load that fills batches, the cap (and the batch sizes on the timeline) climbs until
a run misses, falls back, climbs again: the sawtooth. Where no run ever misses, the cap
reaches ``max_batch_size`` and AIMD is ``deadline``. Switched away and straight back under
the same SLO (a sweep pins ``deadline``, then restores AIMD), the model takes up its AIMD
where it was; any other switch, or a new version of the model, starts it at one row.

Example:
    >>> p = AIMDPolicy(); p.cap = 8.0
    >>> p.observe_batch(rows=8, latency_s=0.004, slo_ms=10.0)   # met, at the cap: 9
    >>> p.observe_batch(rows=9, latency_s=0.020, slo_ms=10.0)   # missed: 9 * 0.9 = 8.1
"""

from __future__ import annotations

import threading

from .base import PolicyView, ReleasePolicy, register
from .deadline import deadline_decision

__all__ = ["AIMDPolicy"]


@register
class AIMDPolicy(ReleasePolicy):
    name = "aimd"
    label = "AIMD (Clipper)"
    rank = 3
    uses_slo = True
    observes_batches = True
    #: Rows added to the cap after a full batch that met the objective (Clipper: "additive").
    additive_step = 1.0
    #: The cap is multiplied by this after a batch that missed the objective.
    backoff = 0.9
    #: The objective for a batch's run when the model has no ``latency_slo_ms``.
    objective_ms = 10.0

    def __init__(self) -> None:
        #: The batch-size cap (rows; fractional, as AIMD's window is). Starts at 1.
        self.cap = 1.0
        self.grown = self.backed_off = 0
        #: Runs of a single row that missed: the objective is below what one row costs.
        self.one_row_misses = 0
        self._lock = threading.Lock()   # runners observe their batches concurrently

    def batch_rows(self, max_rows: int) -> int:
        return max(1, min(max_rows, int(self.cap)))

    def fewest_batch_rows(self, max_rows: int) -> int:
        return 1

    def decide(self, view: PolicyView, max_rows: int, max_wait_s: float,
               now: float) -> tuple[str | None, float]:
        return deadline_decision(view.queued_rows, self.batch_rows(max_rows), view.oldest_t,
                                 max_wait_s, now)

    def observe_batch(self, rows: int, latency_s: float, slo_ms: float | None,
                      max_rows: int | None = None, full: bool = False) -> None:
        objective_s = (slo_ms if slo_ms is not None else self.objective_ms) / 1000.0
        with self._lock:
            if latency_s > objective_s:
                self.cap = max(1.0, self.cap * self.backoff)
                self.backed_off += 1
                self.one_row_misses += rows == 1
            elif full or rows >= int(self.cap):   # the cap bound this batch: room to grow
                self.cap += self.additive_step
                if max_rows is not None:
                    self.cap = min(self.cap, float(max_rows))
                self.grown += 1

    def state(self, config: object) -> dict[str, object] | None:
        slo = getattr(config, "latency_slo_ms", None)
        return {"cap_rows": self.batch_rows(getattr(config, "max_batch_size", 1 << 30)),
                "cap": round(self.cap, 3), "grown": self.grown, "backed_off": self.backed_off,
                "one_row_misses": self.one_row_misses,
                "objective_ms": slo if slo is not None else self.objective_ms,
                "objective_from": "latency_slo_ms" if slo is not None else "default"}
