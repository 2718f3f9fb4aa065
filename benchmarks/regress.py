"""Whole-engine before/after: this tree against a baseline commit, side by side in one run.

A change to the request path must come with this ratio (docs/benchmarks.md, "The house
rule"): a micro-benchmark of one function once hid a 38 % capacity loss that the whole
engine showed. The baseline is checked out in a ``git worktree``; each measurement is a
fresh child process of the same interpreter, run from one tree or the other, and the trees
alternate round by round so that drift of the machine falls on both.

Each measurement is the closed loop of issue 22: ``Engine(EngineConfig(demo_models=False))``,
one demo model with ``max_batch_size=32``, ``max_wait_ms=5``, 64 client threads each sending
one-row ``submit(x).result()`` for ``--seconds``; it reports requests per second and the
engine process's CPU (cores). Only the engine's public contract is used, so any commit can
be the baseline.

Usage:
    .venv/bin/python -m benchmarks.regress --baseline HEAD            # this tree vs HEAD
    .venv/bin/python -m benchmarks.regress --baseline b9c7da7 --rounds 3 --models mlp
Prints a Markdown table and the ratio (this tree / baseline, median over rounds) per model;
writes benchmarks/results/regress.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

# The measurement, run in a child process from either tree (the public contract only).
_PROBE = r"""
import json, resource, sys, threading, time
from core import Engine, EngineConfig, build_demo_model
model, seconds, threads, trace = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
kw = {} if trace == "default" else {"trace_requests": int(trace)}
try:                                       # older commits have fewer settings
    config = EngineConfig(demo_models=False, probe_models=False, **kw)
except TypeError:
    config = EngineConfig(demo_models=False, **kw)
engine = Engine(config)
engine.load_model(build_demo_model(model), name=model)
engine.configure(model, max_batch_size=32, max_wait_ms=5.0)
x = engine.sample_input(model, rows=1)
for _ in range(200):                       # warm: sessions, allocator, every batch size
    engine.submit(model, x).result()
stop = threading.Event()
counts = [0] * threads

def client(i):
    n = 0
    submit = engine.submit
    while not stop.is_set():
        submit(model, x).result()
        n += 1
    counts[i] = n

ts = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(threads)]
for t in ts:
    t.start()
time.sleep(0.5)                            # ramp up, not counted
snap0 = engine.metrics(model).success_count
ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
time.sleep(seconds)
ru1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
snap1 = engine.metrics(model).success_count
stop.set()
for t in ts:
    t.join(10)
engine.close()
cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
print(json.dumps({"rps": (snap1 - snap0) / (t1 - t0), "cores": cpu / (t1 - t0)}))
"""

# ``--open``: issue 22's open-loop shape instead, in the same child-per-measurement way: the
# highest constant rate served (every request, >= 95 % achieved, p99 <= 50 ms; a rate that
# fails is tried once more), then Poisson arrivals at a fixed rate; max wait 2 ms.
_OPEN_PROBE = r"""
import json, sys
from core import Engine, EngineConfig, build_demo_model
from core.lab import open_loop
model, trial_s, instances, poisson_rps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
try:
    config = EngineConfig(demo_models=False, probe_models=False)
except TypeError:
    config = EngineConfig(demo_models=False)
engine = Engine(config)
engine.load_model(build_demo_model(model), name=model)
engine.configure(model, max_batch_size=32, max_wait_ms=2.0,
                 **({"instances": instances} if instances > 1 else {}))
x = engine.sample_input(model, rows=1)

def trial(rate, pattern="constant", seconds=trial_s):
    return open_loop(lambda v: engine.submit(model, v), lambda rng: x, rate, pattern=pattern,
                     duration_s=seconds, seed=None if pattern == "constant" else 7).summary()

def ok(rate):
    for _ in range(2):
        s = trial(rate)
        if s["failed"] == 0 and s["achieved_rps"] >= 0.95 * rate and s["p99_ms"] <= 50:
            return True
    return False

trial(2000, seconds=0.5)
good, rate = 0.0, 4000.0
while rate <= 400_000 and ok(rate):
    good, rate = rate, 2 * rate
lo, hi = good, rate
for _ in range(4):
    mid = (lo + hi) / 2
    lo, hi = (mid, hi) if ok(mid) else (lo, mid)
p99 = [trial(poisson_rps, "poisson", 2 * trial_s)["p99_ms"] for _ in range(3)] if poisson_rps else []
engine.close()
print(json.dumps({"rps": lo, "cores": 0.0, "poisson_p99_ms": p99}))
"""


def _worktree(rev: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="batchlab-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT,
                   check=True, capture_output=True)
    return path


def _measure(tree: Path, model: str, seconds: float, threads: int, trace: str,
             open_args: tuple[int, float] | None = None) -> dict:
    probe = [_PROBE, model, str(seconds), str(threads), trace] if open_args is None else \
        [_OPEN_PROBE, model, str(seconds), str(open_args[0]), str(open_args[1])]
    out = subprocess.run([sys.executable, "-c", *probe], cwd=tree, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin",
                                                 "HOME": str(Path.home())},
                         capture_output=True, text=True, timeout=seconds * 40 + 300)
    if out.returncode != 0:
        raise RuntimeError(f"measurement in {tree} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default="HEAD", help="commit to compare against")
    ap.add_argument("--models", default="mlp,tiny,clf-v1", help="demo models, comma-separated")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--threads", type=int, default=64, help="closed-loop client threads")
    ap.add_argument("--trace", default="default",
                    help="EngineConfig.trace_requests for both trees ('default': theirs)")
    ap.add_argument("--open", action="store_true",
                    help="open loop instead: capacity (trials of --seconds) and Poisson p99")
    ap.add_argument("--instances", type=int, default=2, help="with --open")
    ap.add_argument("--poisson-rps", type=float, default=0.0,
                    help="with --open: Poisson arrivals at this rate, 3 trials (0: none)")
    args = ap.parse_args()
    open_args = (args.instances, args.poisson_rps) if args.open else None
    rev = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    base = _worktree(rev)
    trees = {"this tree": ROOT, f"baseline {rev}": base}
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    runs: dict[str, dict[str, list[dict]]] = {t: {m: [] for m in models} for t in trees}
    try:
        for r in range(args.rounds):
            order = list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]
            for model in models:
                for label, tree in order:
                    got = _measure(tree, model, args.seconds, args.threads, args.trace,
                                   open_args)
                    runs[label][model].append(got)
                    extra = (f"Poisson p99 {', '.join(f'{p:.1f}' for p in got['poisson_p99_ms'])}"
                             " ms" if args.open else f"{got['cores']:.2f} cores")
                    print(f"round {r + 1} {model:8s} {label:20s} {got['rps']:9,.0f} req/s "
                          f"{extra}", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT,
                       capture_output=True)
    this, old = trees
    print(f"\n| model | this tree req/s | baseline {rev} req/s | ratio | cores (this / base) |")
    print("|---|---:|---:|---:|---:|")
    summary = {}
    for model in models:
        a = [x["rps"] for x in runs[this][model]]
        b = [x["rps"] for x in runs[old][model]]
        ca = statistics.median(x["cores"] for x in runs[this][model])
        cb = statistics.median(x["cores"] for x in runs[old][model])
        ratio = statistics.median(a) / statistics.median(b)
        summary[model] = {"this": a, "baseline": b, "ratio": ratio, "cores": [ca, cb]}
        print(f"| {model} | {min(a):,.0f}–{max(a):,.0f} | {min(b):,.0f}–{max(b):,.0f} | "
              f"{ratio:.3f} | {ca:.2f} / {cb:.2f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "regress.json").write_text(json.dumps(
        {"baseline": rev, "seconds": args.seconds, "threads": args.threads,
         "rounds": args.rounds, "trace": args.trace, "models": summary}, indent=2))


if __name__ == "__main__":
    main()
