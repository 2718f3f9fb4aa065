"""How a stored sweep is named on the Experiments page: what it was run with, and whether
that is the form on the page (a sweep started in another tab, a notebook, or opened from
the history shows there too).

Example:
    >>> sweep_caption(sweep_params_of({"max_batch_sizes": [8], "max_waits_ms": [0],
    ...                                "load_kind": "rate", "loads": [100]}),
    ...               3, [8], [0], [100], 50.0)
    'Run 3: batch sizes 8; waits 0 ms; loads 100 req/s.'
"""

from __future__ import annotations

from typing import Any

__all__ = ["sweep_caption", "sweep_params_of", "sweep_cut_words"]


def sweep_params_of(config: Any) -> dict[str, Any]:
    """A stored sweep's config (``engine.store.get(id)["config"]``) as the sweep job's
    parameters :func:`sweep_caption` reads (loads as rates or clients, as it ran)."""
    config = config if isinstance(config, dict) else {}
    loads = list(config.get("loads") or [])
    clients = config.get("load_kind") == "clients"
    return {"max_batch_sizes": list(config.get("max_batch_sizes") or []),
            "max_waits_ms": list(config.get("max_waits_ms") or []),
            "rates_rps": None if clients else loads, "concurrencies": loads if clients else None,
            "slo_p99_ms": config.get("slo_p99_ms"), "agents": config.get("agents"),
            "ray_address": config.get("ray_address")}


def sweep_caption(params: dict[str, Any], run_id: int, sizes: list, waits: list,
                  loads: list, slo_ms: float) -> str:
    """What a sweep's result on the page was run with, and whether that is the form above
    it (a sweep started in another tab or a notebook shows here too)."""
    ran = (list(params.get("max_batch_sizes") or []),
           [float(w) for w in params.get("max_waits_ms") or []],
           [float(v) for v in (params.get("rates_rps") or params.get("concurrencies") or [])])
    unit = "req/s" if params.get("rates_rps") else "clients"
    text = (f"Run {run_id}: batch sizes {', '.join(map(str, ran[0]))}; waits "
            f"{', '.join(f'{w:g}' for w in ran[1])} ms; loads "
            f"{', '.join(f'{v:g}' for v in ran[2])} {unit}")
    if params.get("agents"):
        text += (f", sent by {params['agents']} load agent(s) on the Ray cluster at "
                 f"{params.get('ray_address') or 'a local Ray'}")
    target = params.get("slo_p99_ms")
    if target is not None and float(target) != float(slo_ms):
        text += (f"; run for a p99 target of {float(target):g} ms, judged here against "
                 f"{slo_ms:g} ms")
    form = ([int(v) for v in sizes], [float(w) for w in waits], [float(v) for v in loads])
    if (sorted(ran[0]), sorted(ran[1]), sorted(ran[2])) != tuple(sorted(x) for x in form):
        text += " (not the form above: started elsewhere or before it changed)"
    return text + "."


def sweep_cut_words(config: Any, frame: Any) -> str:
    """``'From the 1 point(s) measured of the grid's 10 (the sweep did not finish): '``
    for a run cancelled or cut off, to go before its recommendation; '' for a whole one."""
    if not isinstance(config, dict) or config.get("complete", True):
        return ""
    p = sweep_params_of(config)
    planned = (len(p["max_batch_sizes"]) * len(p["max_waits_ms"])
               * len(p["rates_rps"] or p["concurrencies"] or [1]))
    # (the grid's points: one equal to the model's own setting is marked its baseline)
    measured = int((frame["max_batch_size"].isin(p["max_batch_sizes"])
                    & frame["max_wait_ms"].isin(p["max_waits_ms"])).sum()) \
        if {"max_batch_size", "max_wait_ms"} <= set(frame.columns) else len(frame)
    return (f"From the {measured} point(s) measured of the grid's {planned} (the sweep did "
            "not finish): ")
