"""What the benchmarks share: raw ONNX Runtime limits, the systems under test, and the
capacity search on top of :func:`core.lab.open_loop`.

Every system is driven through the same interface, ``submit(x) -> Future``, by the same
load generator the dashboard and notebooks use (``core.lab``): open loop at a constant
rate with latency measured from each request's *intended* send time, or closed loop with
a fixed number of clients. A system's *capacity* is the highest constant rate it sustains:
every request served, >= 95 % of the offered rate achieved and p99 under a limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnxruntime as ort

from benchmarks.seed_port import SeedBatcher
from core import BatchConfig, Engine, EngineConfig, SessionConfig
from core.lab import closed_loop, open_loop

Submit = Callable[[np.ndarray], Future]
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class System:
    """One system under test: how to send a request and how to shut it down."""

    name: str
    submit: Submit
    close: Callable[[], None]
    kind: str = ""  # "batchlab", "baseline" or "peer", for the tables and the chart


def machine_info(threads: int) -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": ort.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "intra_op_threads": threads,
            "date": time.strftime("%Y-%m-%d")}


def make_session(data: bytes, threads: int) -> ort.InferenceSession:
    """A plain session the way the baselines would build one (same threads as the engine)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def raw_items_per_s(session: ort.InferenceSession, feed: dict[str, np.ndarray],
                    seconds: float) -> tuple[float, float]:
    """(items/s, ms per run) of ``session.run`` in a tight loop on ``feed``."""
    rows = len(next(iter(feed.values())))
    for _ in range(30):
        session.run(None, feed)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        session.run(None, feed)
        n += 1
    elapsed = time.perf_counter() - t0
    return n * rows / elapsed, elapsed / n * 1000.0


def raw_limit(data: bytes, feed: dict[str, np.ndarray], seconds: float,
              log: Callable[[str], None] = print,
              ) -> tuple[float, int, dict[int, tuple[float, float]]]:
    """The best batched ``session.run`` rate at any intra-op thread count: (items/s, threads,
    (items/s, ms per run) per thread count). No system is flattered by a slow raw baseline."""
    runs = {}
    for t in range(1, (os.cpu_count() or 1) + 1):
        runs[t] = rate, ms = raw_items_per_s(make_session(data, t), feed, seconds)
        log(f"  raw batch {len(next(iter(feed.values())))}, {t} thread(s): "
            f"{rate:,.0f} items/s ({ms:.3f} ms per run)")
    best = max(runs, key=lambda t: runs[t][0])
    return runs[best][0], best, runs


# -- load ---------------------------------------------------------------------------------------

def open_trial(submit: Submit, x: np.ndarray, rate_rps: float, duration_s: float,
               pattern: str = "constant") -> dict:
    """One open-loop run (constant rate unless ``pattern`` says otherwise); the summary of
    :class:`core.lab.LoadResult`."""
    res = open_loop(submit, lambda rng: x, rate_rps, pattern=pattern, duration_s=duration_s,
                    seed=None if pattern == "constant" else 7, drain_s=5.0)
    out = res.summary()
    out["offered_rps"] = rate_rps
    return out


def closed_trial(submit: Submit, x: np.ndarray, clients: int, duration_s: float) -> dict:
    res = closed_loop(submit, lambda rng: x, clients, duration_s=duration_s, seed=None,
                      timeout_s=10.0)
    out = res.summary()
    out["clients"] = clients
    return out


def sustained(s: dict, p99_limit_ms: float) -> bool:
    return (s["failed"] == 0 and s["succeeded"] == s["sent"] and s["sent"] > 0
            and s["achieved_rps"] >= 0.95 * s["offered_rps"] and s["p99_ms"] <= p99_limit_ms)


def find_capacity(submit: Submit, x: np.ndarray, start_rps: float, duration_s: float,
                  p99_limit_ms: float, steps: int = 5,
                  log: Callable[[str], None] = print) -> tuple[float, dict | None]:
    """Highest constant rate sustained: doubling from ``start_rps`` until a rate fails,
    then ``steps`` bisections. A rate counts if one of two tries sustains it: one GC pause
    or a noisy neighbour on a shared VM should not decide a system's capacity."""

    def trial(rate: float) -> dict:
        s = open_trial(submit, x, rate, duration_s)
        if not sustained(s, p99_limit_ms):
            time.sleep(0.2)
            s = open_trial(submit, x, rate, duration_s)
        log(f"    {rate:9.0f} rps -> achieved {s['achieved_rps']:9.0f}, "
            f"p99 {s['p99_ms']:8.2f} ms, {'ok' if sustained(s, p99_limit_ms) else 'FAIL'}")
        time.sleep(0.2)
        return s

    lo, hi, best, rate = 0.0, None, None, start_rps
    while hi is None:
        s = trial(rate)
        if sustained(s, p99_limit_ms):
            lo, best, rate = rate, s, rate * 2
        else:
            hi = rate
    for _ in range(steps):
        rate = (lo + hi) / 2
        s = trial(rate)
        if sustained(s, p99_limit_ms):
            lo, best = rate, s
        else:
            hi = rate
    return lo, best


def climb(step: Callable[[float], dict], start_rps: float, factor: float = 1.25) -> dict:
    """A ladder of rates from ``start_rps`` (times ``factor`` each step) until a step is not
    sustained: ``step(rate)`` measures one rate and returns its row, with ``"sustained"``.
    Returns ``{"best": the last sustained row (None if none), "steps": every row}``."""
    rate, best, steps = start_rps, None, []
    while True:
        row = step(rate)
        steps.append(row)
        if not row["sustained"]:
            return {"best": best, "steps": steps}
        best = row
        rate *= factor


# -- systems under test -------------------------------------------------------------------------

def direct_system(session: ort.InferenceSession, input_name: str) -> System:
    """``session.run`` called inline by the sender: the latency floor at low load."""

    def submit(x: np.ndarray) -> Future:
        fut: Future = Future()
        fut.set_result(session.run(None, {input_name: x}))
        return fut

    return System("direct session.run (inline)", submit, lambda: None, "baseline")


def no_batching_system(session: ort.InferenceSession, input_name: str,
                       workers: int = 4) -> System:
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nobatch")
    return System(f"no batching ({workers}-thread pool)",
                  lambda x: pool.submit(session.run, None, {input_name: x}),
                  pool.shutdown, "baseline")


def seed_system(session: ort.InferenceSession, input_name: str, max_batch: int,
                max_wait_ms: float) -> System:
    seed = SeedBatcher(session, input_name, max_batch, max_wait_ms)
    return System("seed design (port)", seed.submit, seed.close, "baseline")


def batchlab_systems(data: bytes, threads: int, max_batch: int, max_wait_ms: float,
                     policies: tuple[str, ...] = ("deadline", "fixed_window", "adaptive"),
                     instances: tuple[int, ...] = (),
                     ) -> list[System]:
    """Batchlab's engine, one model per policy (one engine, one collector per model), and
    for each of ``instances`` one more deadline model with that many runs at once."""
    engine = Engine(EngineConfig(session=SessionConfig(intra_op_threads=threads)),
                    demo_models=False)
    variants = [(p, 1, f"Batchlab engine ({p})") for p in policies]
    variants += [("deadline", k, f"Batchlab engine (deadline, {k} instances)")
                 for k in instances]
    systems = []
    for i, (policy, k, label) in enumerate(variants):
        name = f"model-{policy}-{k}"
        engine.load_model(data, name=name,
                          batch=BatchConfig(max_batch_size=max_batch, max_wait_ms=max_wait_ms,
                                            policy=policy, max_queue=100_000, instances=k))
        systems.append(System(label, lambda x, n=name: engine.submit(n, x),
                              engine.close if i == len(variants) - 1 else (lambda: None),
                              "batchlab"))
    return systems


def ray_serve_system(session: ort.InferenceSession, input_name: str, max_batch: int,
                     max_wait_ms: float) -> System | None:
    """Ray Serve's ``@serve.batch`` used in-process (no cluster, no HTTP): an asyncio event
    loop in a background thread, requests handed to it with ``run_coroutine_threadsafe``,
    the batch handler concatenating, running the session and splitting, as in Ray's docs.
    ``None`` when Ray Serve is not installed (``pip install -r requirements-bench.txt``).
    """
    try:
        from ray import serve
        from ray.serve import batching
    except ImportError:
        return None
    # Outside a deployment, _BatchQueue's start-up check of max_ongoing_requests asks for a
    # replica context that does not exist; it only logs a warning, so skip it. Nothing on
    # the request path is changed.
    batching._BatchQueue._warn_if_max_batch_size_exceeds_max_ongoing_requests = (
        lambda self: None)

    class Model:
        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=max_wait_ms / 1000.0)
        async def __call__(self, xs: list[np.ndarray]) -> list[np.ndarray]:
            out = session.run(None, {input_name: np.concatenate(xs)})[0]
            return [out[i:i + 1] for i in range(len(xs))]

    model = Model()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="ray-serve-loop", daemon=True)
    thread.start()

    async def cancel_tasks() -> None:  # Ray's batch-queue task, so the loop stops cleanly
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close() -> None:
        asyncio.run_coroutine_threadsafe(cancel_tasks(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)

    return System("Ray Serve @serve.batch (in-process)",
                  lambda x: asyncio.run_coroutine_threadsafe(model(x), loop), close, "peer")


@contextlib.contextmanager
def baseline_tree(rev: str) -> Iterator[Path]:
    """The tree of commit ``rev``, checked out in a ``git worktree`` for the benchmark's
    side-by-side rounds (the house rule: before and after in one run), removed after."""
    root = Path(__file__).resolve().parent.parent   # (the repository, wherever it is run from)
    with tempfile.TemporaryDirectory(prefix="batchlab-baseline-") as tmp:
        base = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), rev], cwd=root,
                       check=True, capture_output=True)
        try:
            yield base
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=root,
                           check=False, capture_output=True)
