"""Sweeps over a cluster's dimensions: replicas x per-replica concurrency x max batch x max
wait, at one offered load sent by load agents.

What users trip over when they scale out: each replica batches only its share of the
traffic, so at a fixed load batches shrink as replicas are added, and a per-replica
concurrency (``max_ongoing_requests``) below ``max_batch_size`` keeps batches from ever
filling. :func:`sweep_replicas` measures it: for each combination, the deployment is changed
in place (:func:`core.cluster.configure`), the agents send the same schedule, and the
replicas' own statistics give the mean batch size (each replica's inferences / executions
over the step, summed over the replicas: Triton's statistics form, asked of every replica).
:func:`recommend_replicas` picks the fewest replicas meeting a p99 target, and says the
per-replica concurrency it assumes.

Example:
    >>> frame = sweep_replicas("mlp", model, rate_rps=2000, replicas=(1, 2, 4), address=addr)
    >>> recommend_replicas(frame, p99_ms=50)["text"]
"""

from __future__ import annotations

import itertools
import json
import threading
import urllib.request
from typing import Any, Callable, Sequence

import numpy as np

from core.errors import ConfigError
from .agents import LoadAgents
from .deploy import configure, deploy, undeploy
from .replica import REPLICA_HEADER

__all__ = ["sweep_replicas", "recommend_replicas", "REPLICA_SWEEP_COLUMNS", "replica_counts"]

REPLICA_SWEEP_COLUMNS = ["replicas", "max_ongoing_requests", "max_batch_size", "max_wait_ms",
                         "rate_rps", "offered_rps", "achieved_rps", "p50_ms", "p99_ms", "error_rate",
                         "mean_batch_rows", "replicas_seen", "agents_bound"]


def replica_counts(url: str, name: str, replicas: int, tries: int = 200
                   ) -> dict[str, tuple[int, int]]:
    """Each replica's (inferences, executions) so far, asked until ``replicas`` different
    replicas have answered (or ``tries`` requests): the statistics of one deployment."""
    seen: dict[str, tuple[int, int]] = {}
    for _ in range(tries):
        with urllib.request.urlopen(f"{url}/v2/models/{name}/stats", timeout=30) as r:
            stats = json.loads(r.read())["model_stats"][0]
            rid = r.headers[REPLICA_HEADER]
        seen[rid] = (int(stats["inference_count"]), int(stats["execution_count"]))
        if len(seen) >= replicas:
            break
    return seen


def sweep_replicas(name: str, model: bytes | str, *, rate_rps: float,
                   replicas: Sequence[int] = (1, 2),
                   max_ongoing_requests: Sequence[int | None] = (None,),
                   max_batch_size: Sequence[int] = (32,), max_wait_ms: Sequence[float] = (5.0,),
                   duration_s: float = 5.0, agents: int = 2, address: str | None = None,
                   agent_cpus: float = 1.0, replica_cpus: float = 1.0, x: Any = None,
                   seed: int = 0, progress: Callable[[int, int, str], None] | None = None,
                   stop: threading.Event | None = None, keep: bool = False) -> Any:
    """Deploy ``model`` as ``name`` and measure every combination at ``rate_rps`` (see the
    module docstring); one row per combination (:data:`REPLICA_SWEEP_COLUMNS`). ``None`` in
    ``max_ongoing_requests`` is twice the max batch size. ``keep``: leave the deployment
    up after (at the last combination)."""
    import pandas as pd
    from pathlib import Path
    from .deploy import deployments
    if name in {d.name for d in deployments()}:
        raise ConfigError(f"{name!r} is deployed already: a sweep deploys (and deletes) its "
                          f"own; give it another name, e.g. {name + '-sweep'!r}")
    if isinstance(model, (str, Path)):
        model = Path(model).read_bytes()
    combos = list(itertools.product(replicas, max_ongoing_requests, max_batch_size,
                                    max_wait_ms))
    if not combos:
        raise ConfigError("nothing to sweep: give at least one value of each dimension")
    for n in replicas:
        if not (isinstance(n, int) and n >= 1):
            raise ConfigError(f"replicas must be whole numbers >= 1, got {n!r}")
    rows = []
    first = True
    with LoadAgents(agents, address=address, agent_cpus=agent_cpus) as pool:
        try:
            for k, (n, ongoing, mbs, wait) in enumerate(combos):
                if stop is not None and stop.is_set():
                    break
                ongoing = 2 * mbs if ongoing is None else ongoing
                label = (f"{n} replica(s), max_ongoing_requests={ongoing}, "
                         f"max_batch_size={mbs}, max_wait_ms={wait:g}")
                if progress is not None:
                    progress(k, len(combos), label)
                if first:
                    d = deploy(name, model, address=address, num_replicas=n,
                               max_ongoing_requests=ongoing, replica_cpus=replica_cpus,
                               batch={"max_batch_size": mbs, "max_wait_ms": wait})
                    first = False
                else:
                    d = configure(name, num_replicas=n, max_ongoing_requests=ongoing,
                                  max_batch_size=mbs, max_wait_ms=wait)
                if x is None:
                    x = _sample_input(model)
                before = replica_counts(d.url, name, n)
                res = pool.run(d.url, name, x, rate_rps=rate_rps, duration_s=duration_s,
                               seed=seed)
                after = replica_counts(d.url, name, n)
                # Only replicas asked both times: a replica's counters since it started
                # hold earlier steps too. Fewer than n seen shows in replicas_seen.
                both = [r for r in after if r in before]
                inf = sum(after[r][0] - before[r][0] for r in both)
                exe = sum(after[r][1] - before[r][1] for r in both)
                s = res.summary()
                rows.append({"replicas": n, "max_ongoing_requests": ongoing,
                             "max_batch_size": mbs, "max_wait_ms": float(wait),
                             "rate_rps": float(rate_rps),
                             "offered_rps": s["sent"] / duration_s,
                             "achieved_rps": s["achieved_rps"],
                             "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
                             "error_rate": s["error_rate"],
                             "mean_batch_rows": inf / exe if exe else float("nan"),
                             "replicas_seen": len(both),
                             "agents_bound": res.agents_bound})
            if progress is not None:
                progress(len(combos), len(combos), "done")
        finally:
            if not first and not keep:
                undeploy(name)
    return pd.DataFrame(rows, columns=REPLICA_SWEEP_COLUMNS)


def _sample_input(model: bytes) -> Any:
    """One row of input for ``model`` (as the engine generates it)."""
    from core.config import EngineConfig
    from core.lab import Engine
    with Engine(EngineConfig(demo_models=False)) as e:
        e.load_model(model, name="m", probe=False)
        return e.sample_input("m", rows=1)


def recommend_replicas(frame: Any, p99_ms: float, min_served: float = 0.95) -> dict[str, Any]:
    """The fewest replicas (then the largest mean batch) whose p99 met ``p99_ms`` with at
    least ``min_served`` of the requests sent answered; a sentence that states the
    per-replica concurrency it assumes. ``{"row": dict | None, "text": str}``."""
    ok = frame[(frame["p99_ms"] <= p99_ms) & (1.0 - frame["error_rate"] >= min_served)]
    if ok.empty:
        best = frame.sort_values("p99_ms").iloc[0] if len(frame) else None
        # (what to change, from what was measured: "add replicas" was said where the wait
        # took 40 of a 50 ms target and more replicas made smaller batches; a newcomer)
        waits = best is not None and best["max_wait_ms"] >= 0.5 * p99_ms
        kept_up = best is not None and best["achieved_rps"] >= 0.95 * best["offered_rps"]
        advice = (f" Its max wait ({best['max_wait_ms']:g} ms) takes most of the target: "
                  "give a shorter max_wait_ms." if waits else
                  " Add replicas, or send less." if not kept_up else
                  " The load was served, not within the target: a shorter max_wait_ms or "
                  "smaller batches, or a faster model.")
        return {"row": None, "text": (
            f"No combination met p99 <= {p99_ms:g} ms at {frame['rate_rps'].iloc[0]:g} req/s"
            + (f"; the lowest p99 was {best['p99_ms']:.1f} ms with {int(best['replicas'])} "
               f"replica(s)" if best is not None and np.isfinite(best["p99_ms"]) else "")
            + "." + advice if len(frame) else "Nothing was measured.")}
    row = ok.sort_values(["replicas", "mean_batch_rows"], ascending=[True, False]).iloc[0]
    return {"row": row.to_dict(), "text": (
        f"{int(row['replicas'])} replica(s) met p99 <= {p99_ms:g} ms at "
        f"{row['rate_rps']:g} req/s (p99 {row['p99_ms']:.1f} ms, mean batch "
        f"{row['mean_batch_rows']:.1f} rows), with max_batch_size={int(row['max_batch_size'])}, "
        f"max_wait_ms={row['max_wait_ms']:g} and a per-replica concurrency of "
        f"max_ongoing_requests={int(row['max_ongoing_requests'])}: Ray Serve must let each "
        "replica hold that many requests at once for these batches to form.")}
