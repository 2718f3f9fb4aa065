"""Memory bombs against a serving engine: peak RSS stays within the budget, others keep serving.

While open-loop traffic runs to the MLP demo model (300 req/s), the script loads and
requests: the 218-byte ``ConstantOfShape([n, n])`` bomb at n = 30,000 (3.6 GB on its first
run) and n = 70,000 (19.6 GB), and two declared-shape bombs (``float [1, 2^31-1]`` and
``[N, 2e8]``) through ``sample_input`` and warm-up. Reported: what each did, the process's
peak resident memory (VmHWM) against its resident memory before plus the budget, and the
MLP's errors and p99 during all of it.

Run: ``python -m benchmarks.bombs [--budget-mib 1024]`` (default budget: the engine's, a
quarter of the machine's memory); JSON in ``benchmarks/results/bombs.json``.
"""

from __future__ import annotations

import argparse
import json
import threading

import numpy as np

from benchmarks.common import RESULTS, machine_info
from core import BatchlabError, Engine, EngineConfig
from core.models import build_declared_shape, build_memory_bomb
from core.lab import open_loop
from core.models import current_rss_bytes, peak_rss_bytes


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-mib", type=int, default=None)
    args = ap.parse_args(argv)
    budget = args.budget_mib * 2**20 if args.budget_mib else None
    out: dict = {"machine": machine_info(0), "cases": []}
    with Engine(EngineConfig(memory_budget_bytes=budget)) as engine:
        x = engine.sample_input("mlp")
        engine.predict("mlp", x)
        base = current_rss_bytes()
        out.update(budget_bytes=engine.memory_budget_bytes, rss_before_bytes=base)
        stop = threading.Event()
        holder: dict = {}

        def traffic() -> None:
            holder["res"] = open_loop(lambda v: engine.submit("mlp", v), lambda rng: x, 300.0,
                                      duration_s=120.0, stop=stop, seed=0)

        t = threading.Thread(target=traffic, name="mlp-traffic", daemon=True)
        t.start()
        cases = [("Expand 30000^2 (3.6 GB)", build_memory_bomb(30000, at_run=True), "predict"),
                 ("Expand 70000^2 (19.6 GB)", build_memory_bomb(70000, at_run=True), "predict"),
                 ("declared float [1, 2^31-1]", build_declared_shape([1, 2**31 - 1]), "sample+warmup"),
                 ("declared float [N, 2e8]", build_declared_shape(["N", 200_000_000]), "sample+warmup")]
        for i, (label, data, how) in enumerate(cases):
            name = f"bomb{i}"
            engine.load_model(data, name=name)
            results = []
            calls = ([lambda: engine.predict(name, np.ones((1, 4), np.float32), timeout_ms=60_000)]
                     if how == "predict" else
                     [lambda: engine.sample_input(name), lambda: engine.warmup(name, iterations=2)])
            for call in calls:
                try:
                    call()
                    results.append("ran")
                except BatchlabError as err:
                    results.append(f"{type(err).__name__}: {' '.join(str(err).split())[:160]}")
            case = {"case": label, "bytes": len(data), "results": results,
                    "peak_rss_bytes": peak_rss_bytes(), "rss_after_bytes": current_rss_bytes()}
            out["cases"].append(case)
            print(json.dumps(case), flush=True)
        stop.set()
        t.join(60)
        s = holder["res"].summary()
        out["mlp"] = {k: s[k] for k in ("sent", "succeeded", "failed", "p50_ms", "p99_ms")}
    out["peak_rss_bytes"] = peak_rss_bytes()
    out["within_budget"] = out["peak_rss_bytes"] <= base + out["budget_bytes"]
    print(json.dumps({k: v for k, v in out.items() if k not in ("machine", "cases")}, indent=1))
    RESULTS.mkdir(exist_ok=True)
    name = "bombs.json" if not args.budget_mib else f"bombs-{args.budget_mib}mib.json"
    (RESULTS / name).write_text(json.dumps(out, indent=1, default=float))
    return out


if __name__ == "__main__":
    main()
