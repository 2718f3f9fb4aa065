"""Issue 27's offered-load bar: how many one-row req/s one load agent sustains against an
engine server that is not the bottleneck, and how many two agents do (one on each node of a
two-node Ray cluster on this machine), in the same run.

The server: ``python -m core.server`` with the tiny demo model, batching on (32 rows, 2 ms).
For each number of agents, a ladder of rates (x1.25 from ``--start``) until a step is not
sustained: at least 95 % of the offered rate answered, under 1 % errors, and no agent more
than 100 ms behind its schedule (latency is from the intended send time).

    .venv/bin/python -m benchmarks.agents            # ~3 minutes
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.common import RESULTS, climb
from core.cluster import LoadAgents, LocalCluster
from core.models import build_demo_model
from core.serving import RemoteEngine, ServerProcess

MODEL = "tiny"


def sustained(s: dict, rate: float, agents: tuple) -> bool:
    return (s["achieved_rps"] >= 0.95 * rate and s["error_rate"] < 0.01
            and max(a["max_lag_ms"] for a in agents) <= 100.0)


def ladder(agents: LoadAgents, url: str, headers: dict, start: float, duration: float,
           log) -> dict:
    x = np.ones((1, 4), np.float32)

    def step(rate: float) -> dict:
        res = agents.run(url, MODEL, x, rate_rps=rate, duration_s=duration, headers=headers,
                         seed=int(rate))
        s = res.summary()
        ok = sustained(s, rate, res.agents)
        row = {"rate_rps": rate, "achieved_rps": round(s["achieved_rps"]),
               "p99_ms": round(s["p99_ms"], 2), "error_rate": s["error_rate"],
               "agent_cpu_pct": [round(a["client_cpu_pct"]) for a in res.agents],
               "agent_lag_ms": [round(a["max_lag_ms"]) for a in res.agents],
               "sustained": ok}
        log(f"  {len(agents.actors)} agent(s) {rate:8.0f} req/s -> {row}")
        return row

    return climb(step, start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--start", type=float, default=1000.0)
    ap.add_argument("--duration", type=float, default=4.0)
    args = ap.parse_args()
    log = print
    out: dict = {"when": time.strftime("%Y-%m-%d %H:%M"), "model": MODEL}
    srv = ServerProcess(args=["--no-probe", "--no-demo-models"]).start()
    try:
        back = RemoteEngine.connect(srv.url, token=srv.token)
        back.load_model(build_demo_model(MODEL), name=MODEL)
        back.configure(MODEL, max_batch_size=32, max_wait_ms=2.0)
        back.warmup(MODEL, iterations=3)
        back.close()
        headers = {"Authorization": f"Bearer {srv.token}"}
        with LocalCluster(nodes=2, cpus_per_node=1) as address:
            for n in (1, 2):
                with LoadAgents(n, address=address, agent_cpus=0.5) as agents:
                    out[f"agents_{n}"] = ladder(agents, srv.url, headers, args.start,
                                                args.duration, log)
    finally:
        srv.stop()
    one = (out["agents_1"]["best"] or {}).get("achieved_rps", 0)
    two = (out["agents_2"]["best"] or {}).get("achieved_rps", 0)
    out["ratio_2_vs_1"] = round(two / one, 3) if one else None
    log(f"one agent sustained {one} req/s, two agents {two} req/s: {out['ratio_2_vs_1']}x")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "agents.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
