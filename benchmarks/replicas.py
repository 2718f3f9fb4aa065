"""Issue 27's replica bars: the MLP's capacity with 2 Ray Serve replicas against 1 (one CPU
each on a two-node Ray cluster on this 2-core machine; load from 2 agents), the mean batch
against replicas at one offered load (the chart users need), and the cost of merging the
agents' histograms.

Capacity: a ladder of rates (x1.25 from ``--start``) until a step is not sustained (95 % of
the offered load answered per second, under 1 % errors, p99 <= 200 ms from the intended send
time).

    .venv/bin/python -m benchmarks.replicas          # ~6 minutes
"""

from __future__ import annotations

import argparse
import base64
import json
import time

import numpy as np

from benchmarks.common import RESULTS, climb
from core.cluster import (LoadAgents, LocalCluster, configure, deploy, replica_counts,
                          sweep_replicas, undeploy)
from core.models import build_demo_model

MODEL = "mlp"


def capacity(agents: LoadAgents, url: str, x: np.ndarray, start: float, duration: float,
             log) -> dict:
    def step(rate: float) -> dict:
        res = agents.run(url, MODEL, x, rate_rps=rate, duration_s=duration, seed=int(rate))
        s = res.summary()
        offered = s["sent"] / duration
        ok = (s["achieved_rps"] >= 0.95 * offered and s["error_rate"] < 0.01
              and s["p99_ms"] <= 200.0)
        row = {"rate_rps": round(rate, 1), "achieved_rps": round(s["achieved_rps"], 1),
               "p50_ms": round(s["p50_ms"], 1), "p99_ms": round(s["p99_ms"], 1),
               "error_rate": round(s["error_rate"], 4), "sustained": ok,
               "agents_bound": res.agents_bound}
        log(f"    {rate:7.1f} req/s -> {row}")
        return row

    return climb(step, start)


def merge_cost(n: int = 1000) -> dict:
    """Seconds to decode and add ``n`` agent histograms of 10,000 values each."""
    from hdrh.histogram import HdrHistogram
    from core.cluster.agents import _HIST
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(10):
        h = HdrHistogram(*_HIST)
        for v in rng.lognormal(8.5, 0.6, 10_000):
            h.record_value(int(v))
        blobs.append(base64.b64encode(h.encode()).decode())
    t = time.perf_counter()
    merged = HdrHistogram(*_HIST)
    for k in range(n):
        merged.add(HdrHistogram.decode(base64.b64decode(blobs[k % 10])))
    dt = time.perf_counter() - t
    return {"histograms": n, "seconds": round(dt, 3), "ms_each": round(dt / n * 1000, 3),
            "bytes_each": len(blobs[0]), "count": merged.get_total_count()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--start", type=float, default=40.0)
    ap.add_argument("--duration", type=float, default=4.0)
    args = ap.parse_args()
    log = print
    out: dict = {"when": time.strftime("%Y-%m-%d %H:%M"), "model": MODEL}
    model = build_demo_model(MODEL)
    x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
    with LocalCluster(nodes=2, cpus_per_node=1) as address:
        d = deploy(MODEL, model, address=address, num_replicas=1, replica_cpus=0.5,
                   batch={"max_batch_size": 32, "max_wait_ms": 5})
        try:
            with LoadAgents(2, address=address, agent_cpus=0.25) as agents:
                for n in (1, 2):
                    configure(MODEL, num_replicas=n)
                    log(f"  {n} replica(s):")
                    out[f"replicas_{n}"] = capacity(agents, d.url, x, args.start,
                                                    args.duration, log)
                    out[f"replicas_{n}"]["seen"] = len(replica_counts(d.url, MODEL, n))
        finally:
            undeploy(MODEL)
        frame = sweep_replicas(MODEL, model, rate_rps=60, replicas=(1, 2),
                               max_ongoing_requests=(4, None), max_batch_size=(32,),
                               max_wait_ms=(20.0,), duration_s=args.duration, agents=2,
                               address=address, agent_cpus=0.25, replica_cpus=0.5, x=x)
        out["sweep"] = frame.drop(columns="agents_bound").to_dict("records")
        log(frame.drop(columns="agents_bound").to_string())
    out["merge"] = merge_cost()
    log(f"  histogram merge: {out['merge']}")
    one = (out["replicas_1"]["best"] or {}).get("achieved_rps", 0)
    two = (out["replicas_2"]["best"] or {}).get("achieved_rps", 0)
    out["ratio_2_vs_1"] = round(two / one, 3) if one else None
    log(f"capacity: 1 replica {one} req/s, 2 replicas {two} req/s: {out['ratio_2_vs_1']}x")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "replicas.json").write_text(json.dumps(out, indent=2, default=str))
    try:
        from core.ui.replicas import replica_sweep_figure
        replica_sweep_figure(frame).write_image("docs/img/replicas.png", width=900,
                                                height=360)
    except Exception as err:  # noqa: BLE001 - the chart image needs kaleido (make bench)
        log(f"  (no chart image: {err})")


if __name__ == "__main__":
    main()
