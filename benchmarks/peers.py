"""Batchlab beside its peers: same models, same loads, one process, one run.

Models (the built-in demo models): the compute-bound MLP (256->1024->1024->10), the cheap
``tiny`` model (y = 2x + 1, where per-request overhead is everything) and a small CNN
(28x28 images). Every request carries one row.

Systems: Batchlab's engine with each policy (deadline, fixed_window, adaptive) and with
two instances (two batches running at once, deadline policy); no
batching (a 4-thread pool calling ``session.run``); the seed-design port
(``benchmarks/seed_port.py``); and Ray Serve's ``@serve.batch`` used in-process (when
installed: ``pip install -r requirements-bench.txt``). All use the same ``max_batch_size``
and ``max_wait_ms`` and sessions with the same intra-op thread count.

Loads (``core.lab``): open loop at constant rates (latency from the intended send
time) for p50/p95/p99 at fixed rates and for capacity; closed loop with a fixed number of
clients for throughput. Writes ``benchmarks/results/peers.json`` and the chart
``docs/img/peers.png`` (needs kaleido, from requirements-bench.txt).

Usage:
    .venv/bin/python -m benchmarks.peers            # all models, ~20-25 minutes
    .venv/bin/python -m benchmarks.peers --quick    # shorter trials, ~12 minutes
    .venv/bin/python -m benchmarks.peers --models mlp
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (RESULTS, System, batchlab_systems, closed_trial, find_capacity,
                               machine_info, make_session, no_batching_system, open_trial,
                               raw_items_per_s, raw_limit, ray_serve_system, seed_system,
                               sustained)
from core import build_demo_model
from core.config import default_intra_op_threads
from core.serving import tune_for_serving

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "docs" / "img" / "peers.png"
MODELS = {"mlp": "MLP 256-1024-1024-10", "tiny": "cheap (y = 2x + 1)", "cnn": "small CNN"}
SEED = "seed design (port)"
RAY = "Ray Serve @serve.batch (in-process)"
BATCHLAB = "Batchlab engine (deadline)"


def one_row(session) -> tuple[str, np.ndarray]:
    inp = session.get_inputs()[0]
    shape = [1] + [d for d in inp.shape[1:]]
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    x.flags.writeable = False   # never written: Batchlab's submit takes it without a copy
    return inp.name, x


def build_systems(data: bytes, session, input_name: str, threads: int, max_batch: int,
                  max_wait_ms: float) -> list[System]:
    systems = batchlab_systems(data, threads, max_batch, max_wait_ms, instances=(2,))
    systems.append(no_batching_system(session, input_name))
    systems.append(seed_system(session, input_name, max_batch, max_wait_ms))
    ray = ray_serve_system(session, input_name, max_batch, max_wait_ms)
    if ray is not None:
        systems.append(ray)
    return systems


def bench_model(model: str, args: argparse.Namespace, log) -> dict:
    data = build_demo_model(model)
    session = make_session(data, args.threads)
    input_name, x1 = one_row(session)
    log(f"\n== {model}: {MODELS.get(model, model)} ==")
    feed32 = {input_name: np.repeat(x1, args.max_batch, axis=0)}
    limit, limit_threads, by_threads = raw_limit(data, feed32, args.trial_s, log=log)
    raw1, ms1 = raw_items_per_s(session, {input_name: x1}, args.trial_s)
    log(f"  raw batch 1, {args.threads} thread(s): {raw1:,.0f} items/s ({ms1:.3f} ms)")
    out = {"raw": {"limit_items_s": limit, "limit_threads": limit_threads,
                   "batch_items_s_by_threads": {t: r[0] for t, r in by_threads.items()}, "batch1_items_s": raw1,
                   "batch1_ms": ms1},
           "systems": {}}
    systems = build_systems(data, session, input_name, args.threads, args.max_batch,
                            args.max_wait_ms)
    if not any(s.kind == "peer" for s in systems):
        log("  Ray Serve is not installed (pip install -r requirements-bench.txt): left out")
    try:
        for sysm in systems:
            log(f"  {sysm.name}")
            closed_trial(sysm.submit, x1, args.clients, 0.5)  # warm-up, not recorded
            fixed = []
            for rate in args.rates:
                s = open_trial(sysm.submit, x1, rate, args.trial_s)
                s["sustained"] = sustained(s, args.p99_limit_ms)
                fixed.append(s)
                log(f"    at {rate:,.0f} rps: p50 {s['p50_ms']:.2f} / p95 {s['p95_ms']:.2f} / "
                    f"p99 {s['p99_ms']:.2f} ms{'' if s['sustained'] else ' (not sustained)'}")
            cap, at_cap = find_capacity(sysm.submit, x1, args.start_rps, args.trial_s,
                                        args.p99_limit_ms, steps=args.steps, log=log)
            # The issue-22 check: Poisson arrivals at 85 % of the system's own capacity.
            poisson = open_trial(sysm.submit, x1, 0.85 * cap, 2 * args.trial_s, "poisson")
            poisson["served_frac"] = poisson["succeeded"] / max(poisson["sent"], 1)
            log(f"    Poisson at 85 % of capacity ({0.85 * cap:,.0f} rps): served "
                f"{poisson['served_frac'] * 100:.2f} %, p99 {poisson['p99_ms']:.2f} ms")
            closed = closed_trial(sysm.submit, x1, args.clients, args.trial_s)
            log(f"    capacity {cap:,.0f} rps ({cap / limit:.2f}x the limit); closed loop "
                f"{args.clients} clients: {closed['achieved_rps']:,.0f} rps, "
                f"p99 {closed['p99_ms']:.2f} ms")
            out["systems"][sysm.name] = {
                "kind": sysm.kind, "capacity_rps": cap, "x_limit": cap / limit,
                "p99_at_capacity_ms": at_cap["p99_ms"] if at_cap else None,
                "fixed_rates": fixed, "closed_loop": closed, "poisson_85": poisson}
    finally:
        for sysm in systems:
            sysm.close()
    return out


def ratios(model_result: dict) -> dict:
    sy = model_result["systems"]
    cap = sy[BATCHLAB]["capacity_rps"]
    best_name = max((n for n, s in sy.items() if s["kind"] == "batchlab"),
                    key=lambda n: sy[n]["capacity_rps"])
    r = {"batchlab_best_policy": best_name,
         "batchlab_deadline_x_limit": sy[BATCHLAB]["x_limit"],
         "batchlab_best_x_limit": sy[best_name]["x_limit"]}
    for key, name in (("over_seed_port", SEED), ("over_ray_serve", RAY)):
        other = sy.get(name, {}).get("capacity_rps")
        r[key] = cap / other if other else None
    return r


def chart(results: dict, path: Path) -> Path | None:
    """Capacity per model and system, and the first model's p99 at the fixed rates; PNG
    through kaleido (HTML beside it when kaleido is missing)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from core.ui.charts import style

    models = list(results["models"])
    names = list(next(iter(results["models"].values()))["systems"])
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08, subplot_titles=(
        "Capacity, one-row requests (req/s, open loop, p99 ≤ "
        f"{results['settings']['p99_limit_ms']:g} ms)",
        f"p99 latency at fixed rates, {models[0]} (ms, log; no bar: overloaded)"))
    palette = ["#1f77b4", "#4c9be8", "#9cc7f2", "#7f7f7f", "#d62728", "#ff7f0e"]
    first = results["models"][models[0]]
    for i, name in enumerate(names):
        color = palette[i % len(palette)]
        caps = [results["models"][m]["systems"][name]["capacity_rps"] for m in models]
        fig.add_trace(go.Bar(
            name=name, x=[MODELS.get(m, m) for m in models], y=caps, marker_color=color,
            text=[f"{c / 1000:.1f}k" for c in caps], textposition="outside",
            legendgroup=name), row=1, col=1)
        fixed = first["systems"][name]["fixed_rates"]
        fig.add_trace(go.Bar(
            name=name, x=[f"{f['offered_rps']:,.0f} req/s" for f in fixed],
            y=[f["p99_ms"] if f["sustained"] else None for f in fixed], marker_color=color,
            legendgroup=name, showlegend=False), row=1, col=2)
    m = results["machine"]
    style(fig, f"Batchlab and its peers, one process, one run ({m['cpus']} cores, "
               f"onnxruntime {m['onnxruntime']}, {m['date']})", "")
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_layout(barmode="group", height=500, width=1300, margin=dict(t=100),
                      legend=dict(orientation="h", y=-0.12))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.write_image(path, scale=1)
        return path
    except Exception as err:  # noqa: BLE001 - kaleido or its browser missing
        html = path.with_suffix(".html")
        fig.write_html(html, include_plotlyjs="cdn")
        print(f"could not write {path.name} ({type(err).__name__}: {err}); wrote {html} "
              "instead (pip install -r requirements-bench.txt for kaleido)", file=sys.stderr)
        return None


def print_tables(results: dict) -> None:
    for model, r in results["models"].items():
        raw = r["raw"]
        print(f"\n### {model}: {MODELS.get(model, model)} — limit {raw['limit_items_s']:,.0f} "
              f"items/s (raw batch {results['settings']['max_batch_size']}, "
              f"{raw['limit_threads']} thread(s)); raw batch 1: {raw['batch1_items_s']:,.0f}")
        rates = results["settings"]["rates_rps"]
        head = " | ".join(f"p50/p95/p99 at {x:,.0f} rps" for x in rates)
        print(f"\n| system | capacity (req/s) | × limit | Poisson at 85 % (served, p99) | "
              f"closed loop ({results['settings']['clients']} clients) | {head} |")
        print("|---|---:|---:|---:|---:|" + "---:|" * len(rates))
        for name, s in r["systems"].items():
            cells = " | ".join(
                f"{f['p50_ms']:.2f} / {f['p95_ms']:.2f} / {f['p99_ms']:.2f}"
                if f["sustained"] else "overloaded" for f in s["fixed_rates"])
            pz = s.get("poisson_85") or {}
            pois = (f"{pz['served_frac'] * 100:.2f} %, {pz['p99_ms']:.1f} ms" if pz else "n/a")
            print(f"| {name} | {s['capacity_rps']:,.0f} | {s['x_limit']:.2f} | {pois} | "
                  f"{s['closed_loop']['achieved_rps']:,.0f} req/s, p99 "
                  f"{s['closed_loop']['p99_ms']:.1f} ms | {cells} |")
        t = r["ratios"]
        fmt = lambda v: "n/a" if v is None else f"{v:.2f}x"  # noqa: E731
        print(f"\nBatchlab (deadline) / seed port: {fmt(t['over_seed_port'])}; / Ray Serve: "
              f"{fmt(t['over_ray_serve'])}; × limit: {t['batchlab_deadline_x_limit']:.2f} "
              f"(best policy: {t['batchlab_best_policy']}, "
              f"{t['batchlab_best_x_limit']:.2f})")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 s trials, 4 bisections")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=sorted(MODELS))
    ap.add_argument("--threads", type=int, default=default_intra_op_threads(),
                    help="intra-op threads of every system (default: the engine's)")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--rates", type=float, nargs="+", default=[200.0, 2000.0, 8000.0],
                    help="fixed open-loop rates for the latency columns (req/s)")
    ap.add_argument("--clients", type=int, default=64, help="closed-loop clients")
    ap.add_argument("--p99-limit-ms", type=float, default=50.0)
    ap.add_argument("--no-tune", action="store_true",
                    help="keep CPython's 5 ms GIL switch interval (see docs/benchmarks.md)")
    ap.add_argument("--chart", type=Path, default=CHART)
    args = ap.parse_args(argv)
    args.trial_s = 1.0 if args.quick else 2.0
    args.steps = 4 if args.quick else 5
    args.start_rps = 1000.0
    tuned = None if args.no_tune else tune_for_serving()
    t_start = time.perf_counter()
    results = {"machine": machine_info(args.threads),
               "settings": {"max_batch_size": args.max_batch, "max_wait_ms": args.max_wait_ms,
                            "trial_s": args.trial_s, "p99_limit_ms": args.p99_limit_ms,
                            "rates_rps": args.rates, "clients": args.clients,
                            "process_tuning": tuned},
               "models": {}}
    for model in args.models:
        r = bench_model(model, args, print)
        r["ratios"] = ratios(r)
        results["models"][model] = r
    results["elapsed_s"] = time.perf_counter() - t_start
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "peers.json").write_text(json.dumps(results, indent=2, default=float))
    print_tables(results)
    png = chart(results, args.chart)
    if png:
        print(f"\nchart: {png.relative_to(ROOT) if png.is_relative_to(ROOT) else png}")
    return results


if __name__ == "__main__":
    main()
