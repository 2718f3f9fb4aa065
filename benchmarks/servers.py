"""Batchlab's engine server vs MLServer, on the same model, from the same client, in one run.

Both servers run in their own process pinned to core 0; the client (this process: an
``Engine`` with the server's model added by ``engine.add_remote``, and the open-loop
generator of ``core.lab``, latency from each request's *intended* send time) is pinned to
core 1. For each server, with its batching on and off:

* **capacity**: the highest constant rate of one-row requests with every request served,
  >= 95 % of it achieved and p99 under ``--p99-limit`` ms;
* **p50 at low load** (``--low`` req/s);
* **p99 at 80 % of capacity**;
* the client's CPU (% of its core) during the capacity run, to show it was not the limit.

Batching on: Batchlab max batch 32 / max wait 2 ms (deadline policy); MLServer adaptive
batching ``max_batch_size=32``, ``max_batch_time=0.002`` s. Off: max batch 1 and no wait.
The client speaks the binary tensor extension to Batchlab and JSON to MLServer (MLServer 1.7
refuses binary inputs over HTTP); the JSON cost is the client's, on its own core.

A separate headline, issue 16's bar for the client path: one run at ``--client-rps``
(default 3,000 req/s) to Batchlab's server, reporting achieved rate, p50/p99 from the
intended send time, the sender's lag and the client's CPU.

``--baseline REV`` also measures the engine server of an older commit (checked out in a
``git worktree``) in the same run, alternating with this tree's, and reports the ratio:
how a change to the server moved its capacity.

Run: ``python -m benchmarks.servers [--seconds 3] [--baseline REV]`` (needs ``make
mlserver-env``); JSON to ``benchmarks/results/servers.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, find_capacity, machine_info, open_trial
from core import Engine
from core.models import build_demo_model
from core.serving import ServerProcess
from core.metrics import helpers_cpu_s
from core.peers import MLServerProcess
from core.serving import tune_for_serving

MODEL = "mlp"
SERVER_CORE, CLIENT_CORE = 0, 1


def pin_process(pid: int, cpus: set[int]) -> None:
    """Pin every thread of ``pid`` and of its children (sched_setaffinity on a pid moves
    one thread only)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
            children = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            pin_process(int(child), cpus)


def client_cpu_now() -> float:
    """CPU seconds of this process's client threads: the caller's and the HTTP loop."""
    return time.thread_time() + helpers_cpu_s()


def measure(engine: Engine, name: str, args: argparse.Namespace, log) -> dict:
    x = engine.sample_input(name, rows=1)

    def submit(v):
        return engine.submit(name, v)

    for _ in range(200):  # connections open, server warm
        engine.predict(name, x)
    low = open_trial(submit, x, args.low, args.seconds)
    log(f"  p50 at {args.low:.0f} req/s: {low['p50_ms']:.2f} ms")
    c0, t0 = client_cpu_now(), time.perf_counter()
    capacity, best = find_capacity(submit, x, args.start, args.seconds, args.p99_limit,
                                   steps=args.steps, log=log)
    cpu_pct = 100.0 * (client_cpu_now() - c0) / (time.perf_counter() - t0)
    at80 = open_trial(submit, x, 0.8 * capacity, args.seconds) if capacity else None
    log(f"  capacity {capacity:,.0f} req/s; p99 at 80 %: "
        f"{at80['p99_ms'] if at80 else float('nan'):.2f} ms; client CPU {cpu_pct:.0f} %")
    return {"p50_low_ms": low["p50_ms"], "capacity_rps": capacity,
            "p99_at_80pct_ms": at80["p99_ms"] if at80 else None,
            "achieved_at_80pct_rps": at80["achieved_rps"] if at80 else None,
            "client_cpu_pct_during_search": cpu_pct, "best": best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--low", type=float, default=100.0)
    ap.add_argument("--start", type=float, default=500.0)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--p99-limit", type=float, default=50.0)
    ap.add_argument("--client-rps", type=float, default=3000.0)
    ap.add_argument("--only", choices=("client", "servers"), default=None)
    ap.add_argument("--mlserver-workers", type=int, nargs="*", default=[0, 1],
                    help="MLServer parallel_workers to measure (0: inference on its event "
                         "loop; 1: its default, a worker process); none: skip MLServer")
    ap.add_argument("--baseline", default=None, metavar="REV",
                    help="also measure the engine server of this commit (a git worktree), "
                         "in the same run")
    ap.add_argument("--batching", choices=("on", "off", "both"), default="both")
    ap.add_argument("--rounds", type=int, default=1,
                    help="with --baseline: alternate the two servers this many times")
    args = ap.parse_args()
    if os.cpu_count() and os.cpu_count() >= 2:
        os.sched_setaffinity(0, {CLIENT_CORE})   # before any thread exists: all inherit it
    tune_for_serving()   # as the dashboard's engine server does (core/serving/tuning.py)
    log = lambda s: print(s, flush=True)  # noqa: E731
    out: dict = {"machine": machine_info(1), "model": MODEL, "args": vars(args)}
    data = build_demo_model(MODEL)
    engine = Engine(demo_models=False)
    try:
        if args.only in (None, "client"):
            out["client"] = client_headline(engine, args, log)
        if args.only in (None, "servers"):
            out["servers"] = compare_servers(engine, data, args, log)
    finally:
        engine.close()
    path = Path(RESULTS) / "servers.json"
    path.write_text(json.dumps(out, indent=2, default=float))
    log(f"wrote {path}")


def client_headline(engine: Engine, args: argparse.Namespace, log) -> dict:
    log(f"Client path: {args.client_rps:,.0f} one-row req/s to Batchlab's server (tiny)")
    srv = ServerProcess(args=["--no-probe"], cpus={SERVER_CORE}).start()
    try:
        engine.add_remote("client-tiny", url=srv.url, model="tiny", replace=True)
        x = engine.sample_input("client-tiny", rows=1)
        for _ in range(500):
            engine.predict("client-tiny", x)
        runs = []
        for _ in range(3):
            c0, t0 = client_cpu_now(), time.perf_counter()
            s = open_trial(lambda v: engine.submit("client-tiny", v), x, args.client_rps,
                           max(args.seconds, 5.0))
            s["client_cpu_pct"] = 100.0 * (client_cpu_now() - c0) / (time.perf_counter() - t0)
            runs.append(s)
            log(f"  achieved {s['achieved_rps']:,.0f} req/s of {args.client_rps:,.0f}, "
                f"failed {s['failed']}, p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms "
                f"(from the intended send time), sender lag max {s['max_lag_ms']:.1f} ms, "
                f"client CPU {s['client_cpu_pct']:.0f} %")
        engine.unload_model("client-tiny")
        return {"offered_rps": args.client_rps, "runs": runs,
                "server_config": srv.url and "tiny: max batch 32, max wait 5 ms (defaults)"}
    finally:
        srv.stop()


def start_batchlab(engine: Engine, data: bytes, batching: bool,
                   root: Path | None = None) -> ServerProcess:
    """An engine server (of the tree at ``root``; None: this one) on the server core, with
    ``data`` loaded as the MLP, batching on (32, 2 ms) or off, warm, and added to
    ``engine`` as the remote model "target"."""
    from core.serving import RemoteEngine
    srv = ServerProcess(args=["--no-probe", "--no-demo-models"], cpus={SERVER_CORE},
                        root=root).start()
    try:
        back = RemoteEngine.connect(srv.url, token=srv.token)
        back.load_model(data, name=MODEL)
        back.configure(MODEL, max_batch_size=32 if batching else 1,
                       max_wait_ms=2.0 if batching else 0.0)
        back.warmup(MODEL, iterations=3)
        back.close()
        engine.add_remote("target", url=srv.url, model=MODEL, replace=True)
    except BaseException:
        srv.stop()
        raise
    return srv


def measure_batchlab(engine: Engine, data: bytes, batching: bool, args: argparse.Namespace,
                     log, root: Path | None = None) -> dict:
    srv = start_batchlab(engine, data, batching, root)
    try:
        return measure(engine, "target", args, log)
    finally:
        engine.unload_model("target") if "target" in engine.model_names() else None
        srv.stop()


def compare_servers(engine: Engine, data: bytes, args: argparse.Namespace, log) -> list:
    rows = []
    with tempfile.TemporaryDirectory(prefix="servers-baseline-") as tmp:
        base_root = None
        if args.baseline:
            base_root = Path(tmp) / "tree"
            subprocess.run(["git", "worktree", "add", "--detach", str(base_root),
                            args.baseline], check=True, capture_output=True)
        try:
            for batching in {"on": (True,), "off": (False,)}.get(args.batching,
                                                                    (True, False)):
                rows += _batchlab_rows(engine, data, batching, args, log, base_root)
                rows += _mlserver_rows(engine, data, batching, args, log)
        finally:
            if base_root is not None:
                subprocess.run(["git", "worktree", "remove", "--force", str(base_root)],
                               check=False, capture_output=True)
    return rows


def _batchlab_rows(engine: Engine, data: bytes, batching: bool, args: argparse.Namespace,
                   log, base_root: Path | None) -> list:
    label = "batching on" if batching else "batching off"
    if base_root is None:
        log(f"Batchlab server, {label}")
        return [{"server": "batchlab", "batching": batching,
                 **measure_batchlab(engine, data, batching, args, log)}]
    rows, caps = [], {"this tree": [], args.baseline: []}
    for k in range(args.rounds):
        for name, root in (("this tree", None), (args.baseline, base_root))[::1 - 2 * (k % 2)]:
            log(f"Batchlab server ({name}), {label}, round {k + 1}")
            r = measure_batchlab(engine, data, batching, args, log, root)
            caps[name].append(r["capacity_rps"])
            rows.append({"server": "batchlab" if root is None else f"batchlab@{args.baseline}",
                         "batching": batching, "round": k + 1, **r})
    new, old = np.median(caps["this tree"]), np.median(caps[args.baseline])
    log(f"  capacity, {label}: this tree {new:,.0f} / {args.baseline} {old:,.0f} req/s "
        f"= {new / old if old else float('nan'):.2f}")
    return rows


def _mlserver_rows(engine: Engine, data: bytes, batching: bool, args: argparse.Namespace,
                   log) -> list:
    rows = []
    label = "batching on" if batching else "batching off"
    for workers in args.mlserver_workers:
        log(f"MLServer, {label}, parallel_workers={workers}")
        ml = MLServerProcess({MODEL: data}, max_batch_size=32 if batching else 0,
                             max_batch_time_s=0.002 if batching else 0.0,
                             parallel_workers=workers).start()
        try:
            pin_process(ml.pid, {SERVER_CORE})
            engine.add_remote("target", url=ml.url, model=MODEL, replace=True)
            r = measure(engine, "target", args, log)
            rows.append({"server": "mlserver", "parallel_workers": workers,
                         "batching": batching, **r})
        finally:
            engine.unload_model("target") if "target" in engine.model_names() else None
            ml.stop()
    return rows


if __name__ == "__main__":
    main()
