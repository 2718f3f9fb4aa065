"""Whether the built-in traffic reaches a model, directly or through an A/B experiment with
it as an arm: a sweep or a search on that model is then measured under disturbance.

Example:
    >>> traffic_warning(engine, "mlp")   # None when nothing else sends to mlp
"""

from __future__ import annotations

from typing import Any

__all__ = ["traffic_reaching", "traffic_warning"]


def traffic_reaching(engine: Any, model: str) -> list[tuple[Any, str | None]]:
    """The running traffic generators whose requests reach ``model``: each with the A/B
    experiment it goes through (None: sent to the model itself)."""
    via = {exp for exp in engine.ab_experiments() if model in engine.ab_arms(exp)}
    return [(t, t.target if t.target in via else None) for t in engine.traffic()
            if t.running and (t.target == model or t.target in via)]


def traffic_warning(engine: Any, model: str) -> str | None:
    """What a sweep or a search on ``model`` should know of other traffic reaching it."""
    reaching = traffic_reaching(engine, model)
    if not reaching:
        return None
    t, exp = reaching[0]
    how = (f"{t.rate_rps:,.0f} req/s" if exp is None else
           f"{t.rate_rps:,.0f} req/s to A/B experiment {exp!r}, whose arm it is")
    where = "the Batching page" if exp is None else "the A/B test page"
    return (f"Traffic is running on {model} ({how}, from {where} or another tab): its "
            "requests share the engine with a sweep's or a search's, whose points are then "
            f"measured under disturbance, and they move {model}'s settings under it. Stop it "
            f"on {where} for numbers you can rely on.")
