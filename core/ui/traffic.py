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
from core.lab.traffic_status import RECENT_S

__all__ = ["traffic_reaching", "traffic_warning", "traffic_elsewhere", "cores_warning",
           "replay_traffic_warning", "via_experiments", "catch_up", "lag_note",
           "BURST_LAG_MS", "BURST_REQUESTS", "sends_caption"]

#: How far behind its schedule a sender must fall, and how many late requests it must then
#: send at once, before the arrivals recorded from it are said to hold a catch-up burst.
BURST_LAG_MS = 5.0
BURST_REQUESTS = 5


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


def catch_up(engine: Any, model: str) -> tuple[float, int]:
    """The worst catch-up burst of the traffic reaching ``model`` over the last few seconds:
    how far behind its schedule its sender fell (ms) and about how many requests that sent
    at once (the lag times the rate); (0, 0) when none runs."""
    worst = max(((t.recent_lag_ms, int(t.recent_lag_ms * t.rate_rps / 1000.0))
                 for t, _ in traffic_reaching(engine, model)), key=lambda w: w[1],
                default=(0.0, 0))
    return float(worst[0]), worst[1]


def lag_note(model: str, lag_ms: float, burst: int, recorded: bool = False) -> str | None:
    """What arrivals recorded from traffic ``lag_ms`` behind its schedule, ``burst``
    requests sent at once, hold, in words (``recorded``: said of a replay done, else of one
    about to be); None for a lag under :data:`BURST_LAG_MS` or a burst under
    :data:`BURST_REQUESTS` (a sender's hiccup at a low rate bunches one or two requests)."""
    if not (lag_ms > BURST_LAG_MS and burst >= BURST_REQUESTS):
        return None
    what = f"up to {lag_ms:,.0f} ms behind its schedule (about {burst:,} requests sent at once)"
    if recorded:
        return (f"The arrivals replayed were recorded while the traffic to {model} had been "
                f"{what} in the {RECENT_S} s before: they may hold its catch-up bursts, and "
                "every policy was replayed with them.")
    return (f"The traffic to {model} fell {what} in the last {RECENT_S} s (a busy machine, "
            "or a rate its sender cannot keep): the last 2 s of arrivals may hold its catch-up "
            "bursts, and the replay would send those bursts too. Lower the rate, or replay a "
            "file of arrivals instead.")


def sends_caption(engine: Any, target: str, verb: str = "Sends") -> str:
    """What generated load sends ``target`` (a model, or an A/B experiment: arm A's inputs to
    both arms, said when B has real inputs of its own that are then not used)."""
    source = engine.input_source(target)   # (one call: over HTTP for the dashboard)
    # (said beside real inputs too; a newcomer)
    where = "" if source.startswith("real") else " (the Models page sets real ones)"
    if target not in engine.ab_experiments():
        return f"{verb} {source}{where}."
    a, b = engine.ab_arms(target)
    theirs = engine.input_source(b)
    return (f"{verb} both arms {a}'s inputs: {source}{where}."
            + (f" {b}'s own {theirs} are not used: B gets A's requests (or, in shadow mode, "
               "copies of them)." if theirs.startswith("real") and theirs != source else ""))
