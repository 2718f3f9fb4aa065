"""``adaptive``: wait only while waiting pays (see :mod:`core.policies.estimators` for the estimators).

Learns the batch cost t(n) = a + b*n and the arrival rate online and waits (never past
``max_wait_ms``) only while the next row is expected sooner than a run's fixed cost ``a``.
With ``latency_slo_ms`` it sheds requests that can no longer finish within the SLO.

Example:
    >>> AdaptivePolicy().decide(view, max_rows=32, max_wait_s=0.005, now=view.oldest_t)
    ('adaptive', 0.0)
"""

from __future__ import annotations

from .estimators import adaptive_decision
from .base import PolicyView, ReleasePolicy, register

__all__ = ["AdaptivePolicy"]


@register
class AdaptivePolicy(ReleasePolicy):
    name = "adaptive"
    label = "adaptive (learns cost and load)"
    rank = 2
    uses_slo = True

    def decide(self, view: PolicyView, max_rows: int, max_wait_s: float,
               now: float) -> tuple[str | None, float]:
        rate = view.rate.observe(view.arrived_rows, now)
        # Until a batch has been timed there is no evidence that waiting pays: release at
        # once (batches still form under load) and learn the cost.
        fixed = view.cost.a_s if view.cost.ready else 0.0
        return adaptive_decision(view.queued_rows, max_rows, now - view.oldest_t, max_wait_s,
                                 fixed, rate, idle_s=now - view.newest_t)

    def shed_after_s(self, view: PolicyView, rows: int, latency_slo_ms: float | None
                     ) -> float | None:
        if latency_slo_ms is None or not view.cost.ready:
            return None
        # A request that has waited longer than this cannot finish within the SLO.
        return latency_slo_ms / 1000.0 - view.cost.predict(rows)
