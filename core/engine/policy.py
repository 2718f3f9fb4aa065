"""The engine's view into each model's batching: what the batcher learned, what its release
policy keeps, and the metrics of each priority class (mixed into
:class:`~core.engine.EngineCore`).

Example:
    >>> engine.policy_state("mlp")       # {'cap_rows': 12, 'grown': 40, ...} under aimd
    >>> engine.class_metrics("mlp")      # {'high': MetricsSnapshot, 'normal': ...}
"""

from __future__ import annotations

from typing import Any

from core.metrics import MetricsSnapshot

__all__ = ["PolicyMethods"]


class PolicyMethods:
    """``learned_cost``, ``policy_state`` and ``class_metrics`` (they read ``_ns``)."""

    _ns: Any

    def learned_cost(self, name: str) -> dict[str, float] | None:
        """What the batcher has learned online: t(n) = a + b*n (ms) and the arrival rate
        (rows/s); ``None`` before the first batch has been timed (and for a remote model,
        whose server batches out of sight)."""
        return self._ns.entry(name).served.learned_cost()

    def policy_state(self, name: str) -> dict[str, Any] | None:
        """What the model's release policy keeps live (``aimd``: its batch cap, how often it
        grew and backed off, its objective); None for a policy that keeps nothing."""
        return self._ns.entry(name).served.policy_state()

    def class_metrics(self, name: str, window_s: float | None = None
                      ) -> dict[str, MetricsSnapshot]:
        """The metrics of the requests sent with a priority, per class: ``"high"``
        (``priority=1``) and ``"normal"`` (``priority=0`` or ``2``); a class nobody has
        sent to yet is absent. Requests sent without a priority count in the model's
        metrics only. ``window_s``: over the last seconds, as :meth:`metrics`."""
        return self._ns.entry(name).served.class_snapshots(window_s)
