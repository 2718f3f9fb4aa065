"""What submit's copy costs, and why: one closed loop in this tree, four client choices.

``submit`` copies an array its caller can still write into (a read-only one is taken as it
is). Each variant is the closed loop of ``benchmarks/regress.py`` (64 clients, one-row
requests, max batch 32, 5 ms wait, 4 s) in a fresh process, the variants alternating over
``--rounds`` rounds: one shared array or a fresh array per request, writable (copied by the
engine) or read-only (not copied). Prints the medians and the copied / not-copied ratios.

Run: ``python -m benchmarks.submit_copy [--rounds 3]`` (about 2 minutes, nothing else
running).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ["same-rw", "same-ro", "fresh-rw", "fresh-ro"]
MODELS = ("tiny", "mlp")

PROBE = r'''
import sys, threading, time
from core import Engine, EngineConfig, build_demo_model
model, variant = sys.argv[1], sys.argv[2]
e = Engine(EngineConfig(demo_models=False, probe_models=False))
e.load_model(build_demo_model(model), name=model)
e.configure(model, max_batch_size=32, max_wait_ms=5.0)
x = e.sample_input(model, rows=1)
if variant.endswith("ro"):
    x.flags.writeable = False
fresh = variant.startswith("fresh")
for _ in range(200): e.submit(model, x).result()
stop = threading.Event()
def client():
    submit = e.submit
    while not stop.is_set():
        if fresh:
            v = x.copy()
            if variant.endswith("ro"): v.flags.writeable = False
            submit(model, v).result()
        else:
            submit(model, x).result()
ts = [threading.Thread(target=client, daemon=True) for _ in range(64)]
[t.start() for t in ts]
time.sleep(0.5); n0 = e.metrics(model).success_count; t0 = time.perf_counter()
time.sleep(4.0); n1 = e.metrics(model).success_count; t1 = time.perf_counter()
stop.set(); [t.join(10) for t in ts]; e.close()
print((n1 - n0) / (t1 - t0))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    res: dict[tuple[str, str], list[float]] = {(m, v): [] for m in MODELS for v in VARIANTS}
    for r in range(args.rounds):
        for m in MODELS:
            for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
                out = subprocess.run([sys.executable, "-c", PROBE, m, v], capture_output=True,
                                     text=True, cwd=ROOT, check=True)
                res[(m, v)].append(float(out.stdout.strip().splitlines()[-1]))
                print(r + 1, m, v, f"{res[(m, v)][-1]:,.0f} req/s", flush=True)
    for m in MODELS:
        med = {v: statistics.median(res[(m, v)]) for v in VARIANTS}
        print(f"{m}: " + ", ".join(f"{v} {med[v]:,.0f}" for v in VARIANTS)
              + f"; one shared array, copied / not {med['same-rw'] / med['same-ro']:.3f}; "
              f"a fresh array per request, copied / not {med['fresh-rw'] / med['fresh-ro']:.3f}")


if __name__ == "__main__":
    main()
