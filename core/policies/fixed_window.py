"""``fixed_window``: the seed design, kept so the dashboard can show the difference.

A free-running timer of ``max_wait_ms``, restarted after each flush: a request waits for
the end of whatever window it arrived in, however long the queue has been empty.

Example:
    >>> fixed_window_decision(1, 8, oldest_t=0.023, max_wait_s=0.010, now=0.023,
    ...                       window_start=0.0)
    (None, 0.007...)
"""

from __future__ import annotations

import math

from .base import PolicyView, ReleasePolicy, register

__all__ = ["FixedWindowPolicy", "fixed_window_decision"]


def fixed_window_decision(queued_rows: int, max_rows: int, oldest_t: float, max_wait_s: float,
                          now: float, window_start: float) -> tuple[str | None, float]:
    if queued_rows >= max_rows:
        return "full", 0.0
    # Windows of max_wait_s from the end of the last flush: the first request waits for
    # the end of the window it arrived in.
    k = max(1, math.ceil((oldest_t - window_start) / max_wait_s)) if max_wait_s > 0 else 0
    remaining = window_start + k * max_wait_s - now
    if remaining <= 0:
        return "deadline", 0.0
    return None, remaining


@register
class FixedWindowPolicy(ReleasePolicy):
    name = "fixed_window"
    label = "fixed window (seed design)"
    rank = 1

    def decide(self, view: PolicyView, max_rows: int, max_wait_s: float,
               now: float) -> tuple[str | None, float]:
        return fixed_window_decision(view.queued_rows, max_rows, view.oldest_t, max_wait_s,
                                     now, view.window_start)
