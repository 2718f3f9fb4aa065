"""``/metrics`` with many models: how long one scrape takes (issue 25's bar: 1,000 loaded
models scrape "in well under a second"; it once took 9.6 s for 933 KB).

Loads ``--models`` copies of ``tiny`` beside the demo models into one engine, serves it
with :class:`core.serving.EngineServer` on loopback, and times ``--scrapes`` GETs of
``/metrics`` (the whole answer read), after sending each model one request so every
series has values. Prints each scrape's time and size.

Run: ``python -m benchmarks.metrics_scrape [--models 1000]``.
"""

from __future__ import annotations

import argparse
import http.client
import time

import numpy as np

from core import Engine, EngineConfig
from core.serving import EngineServer, tune_for_serving


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--scrapes", type=int, default=5)
    args = ap.parse_args()
    tune_for_serving()
    engine = Engine(EngineConfig(demo_models=True, max_models_bytes=2**34))
    data = engine.model_file("tiny")
    x = np.ones((1, 4), np.float32)
    for i in range(args.models):
        engine.load_model(data, name=f"tiny-{i}", probe=False)
        engine.predict(f"tiny-{i}", x)
    with EngineServer(engine, port=0, token="scrape") as server:
        for k in range(args.scrapes):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            t = time.perf_counter()
            conn.request("GET", "/metrics", headers={"Authorization": "Bearer scrape"})
            resp = conn.getresponse()
            body = resp.read()
            dt = time.perf_counter() - t
            conn.close()
            print(f"scrape {k + 1}: {resp.status}, {dt * 1000:.0f} ms, {len(body) / 1e3:,.0f} KB "
                  f"({args.models} models + the demo models)", flush=True)
    engine.close()


if __name__ == "__main__":
    main()
