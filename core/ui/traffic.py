"""Who else reaches a model: the A/B experiments it is an arm of, and the built-in traffic
sent to it directly or through one of them (a sweep or a search on the model is then
measured under disturbance); and the traffic to other targets, which shares the cores with
a sweep, a search or a replay all the same.

Example:
    >>> traffic_reaching(engine, "clf-v2")      # [(generator, "checkout")]: via an experiment
    >>> traffic_warning(engine, "mlp")           # None when nothing else sends to mlp
"""

from __future__ import annotations

from typing import Any

from core.lab import experiments_with_arm

__all__ = ["traffic_reaching", "traffic_warning", "traffic_elsewhere", "cores_warning",
           "replay_traffic_warning", "via_experiments"]


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
    senders = "; ".join(("" if exp is None else "its part of ") + f"{t.rate_rps:,.0f} req/s"
                        + ("" if t.priority is None else f" ({t.label.split(' · ')[1]} class)")
                        + ("" if exp is None else f" sent to A/B experiment {exp!r}, whose "
                           "arm it is") for t, exp in reaching)
    where = _pages(engine, [t for t, _ in reaching])
    return (f"Traffic is running on {model} ({senders}; from {where} or another tab): its "
            "requests share the engine with a sweep's or a search's, whose points are then "
            f"measured under disturbance, and they move {model}'s settings under it. Stop it "
            f"on {where} for numbers you can rely on.")


def via_experiments(engine: Any, model: str) -> str | None:
    """The traffic reaching ``model`` through A/B experiments, in words, for the page where
    the model's own traffic is shown (its arm's share is queued with it)."""
    via = [(t, exp) for t, exp in traffic_reaching(engine, model) if exp is not None]
    if not via:
        return None
    return ("Also reaching " + model + ": " + "; ".join(
        f"its part of {t.rate_rps:,.0f} req/s sent to A/B experiment {exp!r}" for t, exp in via)
        + ", queued with this model's own requests (stop it on the A/B test page).")


def traffic_elsewhere(engine: Any, model: str) -> list[Any]:
    """The running traffic generators whose requests do not reach ``model``: they still
    share the engine's cores (and the client's) with whatever measures it."""
    reaching = {model, *(exp for exp, _ in experiments_with_arm(engine, model))}
    return [t for t in engine.traffic() if t.running and t.target not in reaching]


def _senders(gens: list[Any]) -> str:
    return ", ".join(f"{t.label} at {t.rate_rps:,.0f} req/s" for t in gens)


def _pages(engine: Any, gens: list[Any]) -> str:
    experiments = set(engine.ab_experiments())
    return " and ".join(dict.fromkeys("the A/B test page" if t.target in experiments
                                      else "the Batching page" for t in gens))


def cores_warning(engine: Any, model: str) -> str | None:
    """What a sweep or a search on ``model`` should know of traffic to other targets."""
    other = traffic_elsewhere(engine, model)
    if not other:
        return None
    return (f"Traffic to other targets is running ({_senders(other)}): it shares this "
            "machine's cores with a sweep's or a search's requests, whose points are then "
            f"measured under disturbance. Stop it on {_pages(engine, other)} for numbers you "
            "can rely on.")


def replay_traffic_warning(engine: Any) -> str | None:
    """What a replay should know of the traffic running: its runs go to a private copy (no
    request of that traffic joins its batches) but share the engine's cores with it."""
    running = [t for t in engine.traffic() if t.running]
    if not running:
        return None
    return (f"Traffic is running ({_senders(running)}): the replay's runs go to a private "
            "copy, but share this machine's cores with it, so each policy is measured under "
            "whatever that traffic does meanwhile. Keep 'Stop the traffic when the replay "
            "starts' on for numbers you can rely on (the arrivals are recorded first).")
