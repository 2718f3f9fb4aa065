"""``deadline``: release when full or when the oldest request has waited ``max_wait_ms``.

The rule of Triton, TF Serving and Ray Serve: the wait clock starts when the oldest
request of the forming batch arrived. ``max_wait_ms=0`` still takes whatever is queued.

Example:
    >>> deadline_decision(queued_rows=3, max_rows=8, oldest_t=1.0, max_wait_s=0.010, now=1.004)
    (None, 0.006...)
"""

from __future__ import annotations

from .base import PolicyView, ReleasePolicy, register

__all__ = ["DeadlinePolicy", "deadline_decision"]


def deadline_decision(queued_rows: int, max_rows: int, oldest_t: float, max_wait_s: float,
                      now: float) -> tuple[str | None, float]:
    if queued_rows >= max_rows:
        return "full", 0.0
    remaining = oldest_t + max_wait_s - now
    if remaining <= 0:
        return "deadline", 0.0
    return None, remaining


@register
class DeadlinePolicy(ReleasePolicy):
    name = "deadline"
    label = "deadline (wait from oldest request)"
    rank = 0

    def decide(self, view: PolicyView, max_rows: int, max_wait_s: float,
               now: float) -> tuple[str | None, float]:
        return deadline_decision(view.queued_rows, max_rows, view.oldest_t, max_wait_s, now)
