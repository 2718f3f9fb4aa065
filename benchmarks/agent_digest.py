"""What a load agent sends back, rows against a digest (``LoadAgents.run(..., rows=False)``):
bytes per agent result (pickled, as Ray ships it), the agent's time to digest its rows, and
the driver's time to merge the agents' results into one summary and per-second series.

Synthetic agent results (no Ray, no server): ``--agents`` agents sharing ``--rate`` one-row
req/s for ``--seconds``, lognormal latencies, 1 % failures, the rows an agent's open loop
returns (core.lab.LOAD_COLUMNS).

    .venv/bin/python -m benchmarks.agent_digest [--agents 4] [--rate 20000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import pickle
import time

import numpy as np
import pandas as pd

from benchmarks.common import RESULTS
from core.lab import LOAD_COLUMNS, LoadResult
from core.lab.digest import LoadDigest, digest_frame, encode_histogram, histogram_of


def agent_frame(k: int, n_agents: int, rate: float, seconds: float) -> pd.DataFrame:
    rng = np.random.default_rng(k)
    n = int(rate * seconds / n_agents)
    intended = np.sort(rng.uniform(0.0, seconds, n))
    lat = rng.lognormal(mean=1.2, sigma=0.6, size=n)
    ok = rng.random(n) > 0.01
    return pd.DataFrame({
        "request": np.arange(n), "client": np.zeros(n, np.int64), "intended_s": intended,
        "sent_s": intended + 1e-5, "done_s": np.where(ok, intended + lat / 1e3, np.nan),
        "latency_ms": np.where(ok, lat, np.nan), "engine_ms": np.full(n, np.nan),
        "queue_ms": np.full(n, np.nan), "compute_ms": np.full(n, np.nan),
        "batch_rows": np.zeros(n, np.int64), "ok": ok,
        "error": np.where(ok, "", "ServerError").tolist()}, columns=LOAD_COLUMNS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", type=int, default=4)
    ap.add_argument("--rate", type=float, default=20_000.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    frames = [agent_frame(k, args.agents, args.rate, args.seconds) for k in range(args.agents)]
    n = sum(len(f) for f in frames)

    # What each agent returns
    t = time.perf_counter()
    rows_out = [{"frame": f, "histogram": encode_histogram(histogram_of(
        f.loc[f["ok"], "latency_ms"].to_numpy()))} for f in frames]
    rows_agent_s = (time.perf_counter() - t) / args.agents
    t = time.perf_counter()
    digests = [digest_frame(f) for f in frames]
    digest_agent_s = (time.perf_counter() - t) / args.agents
    rows_bytes = sum(len(pickle.dumps(o, protocol=5)) for o in rows_out)
    digest_bytes = sum(len(pickle.dumps(d, protocol=5)) for d in digests)

    # What the driver does with them: one summary and the per-second series
    t = time.perf_counter()
    merged = pd.concat([o["frame"] for o in rows_out], ignore_index=True).sort_values(
        "intended_s", ignore_index=True)
    res = LoadResult("open", merged, args.seconds, 0.0)
    res.summary()
    res.per_second()
    rows_driver_s = time.perf_counter() - t
    t = time.perf_counter()
    d = LoadDigest()
    for part in digests:
        d.add(part)
    res = LoadResult("open", merged.iloc[:0], args.seconds, 0.0, digest=d)
    s = res.summary()
    series = res.per_second()
    digest_driver_s = time.perf_counter() - t

    out = {"agents": args.agents, "rate_rps": args.rate, "seconds": args.seconds,
           "requests": n,
           "rows": {"bytes": rows_bytes, "bytes_per_request": rows_bytes / n,
                    "agent_s": rows_agent_s, "driver_s": rows_driver_s},
           "digest": {"bytes": digest_bytes, "bytes_per_second_per_agent":
                      digest_bytes / args.agents / args.seconds,
                      "agent_s": digest_agent_s, "driver_s": digest_driver_s},
           "bytes_ratio": rows_bytes / digest_bytes, "p99_ms": s["p99_ms"],
           "series_rows": len(series)}
    print(json.dumps(out, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "agent_digest.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
