"""One-row requests through the Open Inference Protocol route vs in-process.

The MLP demo model (max batch 32, max wait 2 ms) served three ways, measured with the same
open-loop generator (latency from each request's intended send time):

* ``in-process``: ``Engine.submit`` in this process;
* ``OIP JSON``: ``POST /v2/models/mlp/infer`` with JSON tensors, to ``python -m core.server``
  in a child process, from a pool of keep-alive HTTP connections (urllib3);
* ``OIP binary``: the same with the binary tensor data extension (input and output).

For each: p50 at a low load (``--low`` req/s) and the capacity (highest constant rate with
every request served, >= 95 % of it achieved and p99 under ``--p99-limit`` ms). The client
and the server share this machine's cores, so the HTTP figures include the client's cost:
they are what a Python client on the same host sees, not the server alone.

Run: ``python -m benchmarks.oip_route [--seconds 3]``; JSON to
``benchmarks/results/oip_route.json``.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import urllib3

from benchmarks.common import RESULTS, find_capacity, machine_info, open_trial
from core import Engine
from core.serving import ServerProcess
from core.serving import tune_for_serving


def http_submitter(url: str, binary: bool, workers: int = 64):
    pool = urllib3.PoolManager(maxsize=workers, block=True, retries=False)
    ex = ThreadPoolExecutor(workers, thread_name_prefix="oip-client")
    path = f"{url}/v2/models/mlp/infer"

    def call(x: np.ndarray) -> np.ndarray:
        if binary:
            raw = np.ascontiguousarray(x).tobytes()
            head = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape),
                                           "datatype": "FP32",
                                           "parameters": {"binary_data_size": len(raw)}}],
                               "parameters": {"binary_data_output": True}}).encode()
            r = pool.request("POST", path, body=head + raw, headers={
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(head))})
            n = int(r.headers["Inference-Header-Content-Length"])
            if r.status != 200:
                raise RuntimeError(r.data[:200])
            return np.frombuffer(r.data[n:], np.float32)
        body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                       "data": x.reshape(-1).tolist()}]}).encode()
        r = pool.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        if r.status != 200:
            raise RuntimeError(r.data[:200])
        return np.asarray(json.loads(r.data)["outputs"][0]["data"], np.float32)

    return lambda x: ex.submit(call, x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--low", type=float, default=100.0)
    ap.add_argument("--p99-limit", type=float, default=50.0)
    args = ap.parse_args()
    tune_for_serving()
    x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
    rows = []

    def measure(name: str, submit) -> None:
        for _ in range(2):  # settle: connections, sessions, caches
            open_trial(submit, x, args.low, 1.0)
        low = open_trial(submit, x, args.low, args.seconds)
        print(f"{name}: p50 at {args.low:g} req/s = {low['p50_ms']:.2f} ms", flush=True)
        cap, best = find_capacity(submit, x, 500.0, args.seconds, args.p99_limit)
        rows.append({"system": name, "low_rps": args.low, "p50_low_ms": low["p50_ms"],
                     "p99_low_ms": low["p99_ms"], "capacity_rps": cap,
                     "p99_at_capacity_ms": best["p99_ms"] if best else None})
        print(f"{name}: capacity {cap:,.0f} req/s", flush=True)

    with Engine() as engine:
        engine.configure("mlp", max_batch_size=32, max_wait_ms=2.0)
        measure("in-process", lambda v: engine.submit("mlp", v))
    server = ServerProcess().start()
    try:
        from core.serving import RemoteEngine
        remote = RemoteEngine.connect(server.url, token=server.token)
        remote.configure("mlp", max_batch_size=32, max_wait_ms=2.0)
        remote.close()
        measure("OIP JSON", http_submitter(server.url, binary=False))
        measure("OIP binary", http_submitter(server.url, binary=True))
    finally:
        server.stop()
    RESULTS.mkdir(exist_ok=True)
    out = {"benchmark": "oip_route", "machine": machine_info(1), "args": vars(args),
           "rows": rows}
    (RESULTS / "oip_route.json").write_text(json.dumps(out, indent=2))
    for r in rows:
        print(f"{r['system']:>11}: p50 {r['p50_low_ms']:.2f} ms at {r['low_rps']:g} req/s, "
              f"capacity {r['capacity_rps']:,.0f} req/s")


if __name__ == "__main__":
    main()
