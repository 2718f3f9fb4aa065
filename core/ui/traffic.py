"""Who else reaches a model: the A/B experiments it is an arm of, and the built-in traffic
sent to it directly or through one of them (a sweep or a search on the model is then
measured under disturbance).

Example:
    >>> traffic_reaching(engine, "clf-v2")      # [(generator, "checkout")]: via an experiment
    >>> traffic_warning(engine, "mlp")           # None when nothing else sends to mlp
"""

from __future__ import annotations

from typing import Any

from core.lab import experiments_with_arm

__all__ = ["traffic_reaching", "traffic_warning"]


def traffic_reaching(engine: Any, model: str) -> list[tuple[Any, str | None]]:
    """The running traffic generators whose requests reach ``model``: each with the A/B
    experiment it goes through (None: sent to the model itself)."""
    via = dict(experiments_with_arm(engine, model))
    return [(t, t.target if t.target in via else None) for t in engine.traffic()
            if t.running and (t.target == model or t.target in via)]


def traffic_warning(engine: Any, model: str) -> str | None:
    """What a sweep or a search on ``model`` should know of other traffic reaching it."""
    reaching = traffic_reaching(engine, model)
    if not reaching:
        return None
    senders = "; ".join(("" if exp is None else "its share of ") + f"{t.rate_rps:,.0f} req/s"
                        + ("" if t.priority is None else f" ({t.label.split(' · ')[1]} class)")
                        + ("" if exp is None else f" sent to A/B experiment {exp!r}, whose "
                           "arm it is") for t, exp in reaching)
    where = " and ".join(dict.fromkeys("the Batching page" if exp is None else
                                       "the A/B test page" for _, exp in reaching))
    return (f"Traffic is running on {model} ({senders}; from {where} or another tab): its "
            "requests share the engine with a sweep's or a search's, whose points are then "
            f"measured under disturbance, and they move {model}'s settings under it. Stop it "
            f"on {where} for numbers you can rely on.")
