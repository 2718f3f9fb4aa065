"""Words for the What-if (Experiments page): the engine's work a profile measured, and how
far the ceiling at a batch size rests on measurement."""

from __future__ import annotations

from core.lab import CostModel

__all__ = ["whatif_work_words", "whatif_ceiling_caveat", "whatif_accuracy"]


def _sizes(sizes: tuple[int, ...]) -> str:
    return ", ".join(str(k) for k in sizes[:-1]) + f" and {sizes[-1]}"


def whatif_work_words(cost: CostModel) -> str:
    """What the engine's own work per request is, and where it was measured."""
    if cost.capacity_batches and cost.per_batch_ms <= 0:
        return (f"engine work {cost.per_request_ms * 1000:.1f} µs per request, the same at "
                f"every batch size (from the capacity measured with bursts of requests at "
                f"max batch sizes {_sizes(cost.capacity_batches)}: bigger batches were no "
                "cheaper a request; past the capacity, the queue grows)")
    if cost.capacity_batches:
        per_request = (f"{cost.per_request_ms * 1000:.1f} µs per request + "
                       if cost.per_request_ms > 0 else "all of it per batch: ")
        return (f"engine work {per_request}"
                f"{cost.per_batch_ms * 1000:.1f} µs per batch (from the capacity measured "
                f"with bursts of requests at max batch sizes {_sizes(cost.capacity_batches)}"
                f": {cost.work_ms(cost.capacity_batch) * 1000:.1f} µs a request at "
                f"{cost.capacity_batch}; past the capacity, the queue grows)")
    return (f"engine work {cost.per_request_ms * 1000:.1f} µs per request (1 / the "
            "capacity measured with bursts of requests: past it, the queue grows)")


def whatif_ceiling_caveat(cost: CostModel, batch_size: int) -> str | None:
    """A caption when the ceiling at ``batch_size`` is not where the work was measured:
    extrapolated from two or more sizes, or, from one, blind to the work per batch."""
    sizes = cost.capacity_batches
    if sizes:
        if min(sizes) <= batch_size <= max(sizes):
            return None
        return (f"The engine's work was measured at max batch sizes {_sizes(sizes)}; at "
                f"{batch_size} the line through them (per request + per batch / size) is "
                "extrapolated, so the ceiling is rougher: set the model to that size and "
                "profile again to measure it there.")
    if cost.capacity_batch and batch_size != cost.capacity_batch:
        return (f"The engine's work per request was measured at max batch size "
                f"{cost.capacity_batch} only; at {batch_size} its work per batch (not told "
                "apart from it) makes the ceiling rougher: set the model to that size and "
                "profile again to measure it there.")
    return None


#: Past this p50 error (either way) at any point, the what-if says it does not hold here.
P50_ERROR_OK = 0.2


def whatif_accuracy(cost: CostModel, p50_errors: list[float]) -> tuple[bool, str]:
    """``(holds, words)`` under the table of predicted against measured: whether every
    p50 is within :data:`P50_ERROR_OK`, and what to make of it (the reassurance only when
    it holds: a 130 % error under "predicts well" was read as a contradiction)."""
    tail = ("a p99 is one point's tail: trust the measurement when its interval is narrow, "
            "and a point measured 3 times was an outlier re-checked.")
    worst = max((abs(e) for e in p50_errors if e == e), default=0.0)
    if worst <= P50_ERROR_OK:
        return True, ("The p50 is what the model predicts well (within a few percent below "
                      "capacity on the demo models, docs/benchmarks.md); " + tail)
    return False, (f"Here the predicted p50 is off by up to {worst:.0%}: the profile does not "
                   f"describe these measurements (its overhead, {cost.overhead_ms:.3f} ms a "
                   f"request + {cost.overhead_per_krps_ms:.3f} ms per 1,000 req/s, was "
                   "calibrated with traffic in the profile; a busy engine or machine then, or "
                   "now, moves it). Trust the measurements; profile again with nothing else "
                   "running to compare. " + tail[0].upper() + tail[1:])
