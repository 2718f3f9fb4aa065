"""The engine's view into each model's batching: what the batcher learned, what its release
policy keeps, and the metrics of each priority class (mixed into
:class:`~core.engine.EngineCore`).

Example:
    >>> engine.policy_state("mlp")       # {'cap_rows': 12, 'grown': 40, ...} under aimd
    >>> engine.class_metrics("mlp")      # {'high': MetricsSnapshot, 'normal': ...}
"""

from __future__ import annotations

from typing import Any

from core.ab import compare_latency, format_p, too_small_words
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
        return self._ns.entry(name).served.classes.snapshots(window_s)

    def class_comparison(self, name: str) -> dict[str, Any] | None:
        """The high class against the normal one, as an A/B test compares arms: the p50
        difference (high minus normal) with its 95 % interval and bootstrap p-value over
        the recent answered requests, each class's share refused at once, and a sentence.
        None until both classes have been sent to."""
        served = self._ns.entry(name).served
        snaps = served.classes.snapshots()
        if set(snaps) != {"high", "normal"}:
            return None
        lat = compare_latency(served.classes.samples_ms("normal"),
                              served.classes.samples_ms("high"))
        refused = {k: s.errors_by_type.get("OverloadedError", 0) / s.total_requests
                   if s.total_requests else 0.0 for k, s in snaps.items()}
        if lat.n_a < 20 or lat.n_b < 20:
            words = "Too few answered requests in a class to compare them yet."
        elif lat.significant:
            faster = lat.diff_p50_ms < 0
            lo, hi = (-lat.ci_high_ms, -lat.ci_low_ms) if faster else (lat.ci_low_ms,
                                                                         lat.ci_high_ms)
            only = "" if lat.meaningful or lat.more_needed_per_arm else "only "
            words = (f"The high class is {'faster' if faster else 'slower'} by {only}"
                     f"{abs(lat.diff_p50_ms):.2f} ms at p50 than the normal one (95% CI "
                     f"{lo:.2f} to {hi:.2f} ms), {format_p(lat.p_value)}"
                     + too_small_words(lat))
        else:
            words = (f"No significant p50 difference between the classes "
                     f"({format_p(lat.p_value)})")
        if lat.n_a >= 20 and lat.n_b >= 20:
            words += (f"; refused at once: high {refused['high']:.1%}, normal "
                      f"{refused['normal']:.1%}.")
        return {"p50_high_ms": lat.p50_b_ms, "p50_normal_ms": lat.p50_a_ms,
                "diff_p50_ms": lat.diff_p50_ms, "ci_low_ms": lat.ci_low_ms,
                "ci_high_ms": lat.ci_high_ms, "p_value": lat.p_value,
                "significant": lat.significant, "refused_high": refused["high"],
                "refused_normal": refused["normal"], "verdict": words}
