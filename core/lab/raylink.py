"""Connecting to a Ray cluster (Ray imported only here, when asked): shared by the load
agents (:mod:`core.lab.agents`) and the engine replicas (:mod:`core.cluster`)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable

from core.errors import ConfigError

__all__ = ["connect", "check_cpus", "CORE_DIR"]

#: The ``core`` package's directory (shipped to the cluster with every job).
CORE_DIR = str(Path(__file__).resolve().parents[1])


def connect(address: str | None = None) -> Any:
    """Connect this process to Ray (``address``: a cluster's ``HOST:PORT`` or ``ray://``
    URL; None: the one already connected, else a local Ray started here), with the ``core``
    package shipped to the cluster (``runtime_env`` ``py_modules``). Connected already by
    ``ray.init`` without it, replicas need Batchlab importable on every node."""
    import ray
    with _CONNECTING:   # (two threads of a server may ask at once: one ray.init)
        if ray.is_initialized():
            return _connect(ray, address)
        # ray.init on a thread that lives as long as the process: a local Ray's processes
        # (gcs_server, raylet) die with the *thread* that started them (their parent-death
        # signal); started on a sweep's thread, they died when the sweep ended, and a
        # minute later Ray's client ended the whole engine server (an adversary, 4 of 4)
        return _ray_thread().submit(_connect, ray, address).result()


_CONNECTING = threading.Lock()
_RAY_THREAD: list[_KeptThread] = []


class _KeptThread:
    """One daemon thread that runs what it is given and then waits for more, for the
    life of the process: never joined at exit (a pool's worker is joined before the atexit
    hooks run, Ray's shutdown among them: its processes would die first)."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name="batchlab-ray", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            fut, fn, args = self._work.get()
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(*args))
                except BaseException as err:  # noqa: BLE001 - handed to the caller
                    fut.set_exception(err)

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._work.put((fut, fn, args))
        return fut


def _ray_thread() -> _KeptThread:
    """The one thread Ray is started from."""
    if not _RAY_THREAD:
        _RAY_THREAD.append(_KeptThread())
    return _RAY_THREAD[0]


def _connect(ray: Any, address: str | None) -> Any:
    if ray.is_initialized():
        now = ray.get_runtime_context().gcs_address
        # (by port: the cluster reports its node's address, the caller may say 127.0.0.1)
        if address not in (None, "auto") and not address.startswith("ray://") \
                and address.rpartition(":")[2] != now.rpartition(":")[2]:
            raise ConfigError(f"this process is connected to the Ray cluster at {now}, not "
                              f"{address}; call ray.shutdown() first to use another cluster")
        return ray
    # Ray's crash handler in this process turned an engine server's SIGTERM (its graceful
    # stop) into an abort once load agents had been used: left out (the server then
    # stopped with code 0, its requests answered).
    with contextlib.suppress(ImportError, AttributeError):
        from ray._private import ray_constants
        ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    # The ``core`` package goes with this job (Ray uploads it), so replicas on any node run
    # the code this process runs (a local path is allowed only at the job level).
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             configure_logging=False, runtime_env={"py_modules": [CORE_DIR]})
    return ray


def check_cpus(n: int, each: float, what: str, others: str, knob: str,
               settle_s: float = 15.0) -> None:
    """ConfigError when the cluster has fewer free CPUs than ``n`` ``what`` of ``each`` CPU
    need (Ray would wait for them for ever). CPUs of actors just ended come back a moment
    later: short of them, it asks again for up to ``settle_s``."""
    import ray
    deadline = time.monotonic() + settle_s
    while True:
        free = ray.available_resources().get("CPU", 0.0)
        if n * each <= free + 1e-9 or time.monotonic() >= deadline:
            break
        time.sleep(0.25)
    if n * each > free + 1e-9:
        raise ConfigError(f"{n} {what} of {each:g} CPU need {n * each:g} CPUs; the cluster "
                          f"has {free:g} free ({others} hold the rest). Lower {knob}, or add "
                          "nodes")


def _free_per_node(ray: Any) -> dict[str | None, float]:
    """Free CPUs of each alive node (Ray's own accounting); ``{None: total}`` where the
    cluster does not say per node (a ``ray://`` client)."""
    try:
        from ray._private.state import state   # (no public per-node form in Ray 2.x)
        alive = {nd["NodeID"] for nd in ray.nodes() if nd.get("Alive")}
        return {node: float(res.get("CPU", 0.0))
                for node, res in state.available_resources_per_node().items()
                if node in alive}
    except Exception:  # noqa: BLE001 - client mode: the total, placed by Ray itself
        return {None: float(ray.available_resources().get("CPU", 0.0))}


def place(n: int, cpus: float | None, what: str = "load agent",
          settle_s: float = 15.0) -> list[tuple[str, float]]:
    """Where ``n`` actors of ``cpus`` CPUs each go, spread round-robin over the alive nodes
    that have room: ``(node id, CPUs)`` each (node None: wherever Ray puts it, for a client
    that is not told free CPUs per node). ``cpus`` None: each agent on the node where it
    gets the most, the nodes' free CPUs shared out, up to one each (at least 0.1). ConfigError when they don't fit, with what each
    node has free (Ray would keep them pending for ever). CPUs of actors just ended come
    back a moment later: short of room, it asks again for up to ``settle_s``."""
    import ray
    deadline = time.monotonic() + settle_s
    while True:
        free = _free_per_node(ray)
        if not free:
            raise ConfigError(f"the Ray cluster has no alive node to run a {what} on")
        out = _auto(free, n) if cpus is None else _greedy(free, n, cpus)
        if out is not None:
            return out
        if time.monotonic() >= deadline:
            each = f"{cpus:g} CPU each" if cpus is not None else "at least 0.1 CPU each"
            have = ", ".join(f"{v:g}" for _, v in sorted(free.items()))
            raise ConfigError(f"{n} {what}(s) of {each} don't fit on the cluster: its "
                              f"{len(free)} node(s) have {have} CPU free (replicas and other "
                              "actors hold the rest). Use fewer, or fewer CPUs each, or add "
                              "nodes")
        time.sleep(0.25)


def _auto(free: dict[Any, float], n: int) -> list[tuple[Any, float]] | None:
    """Each agent in turn on the node where it would get the most CPU (its free CPUs shared
    by the agents on it), up to one each, at least 0.1."""
    count = dict.fromkeys(free, 0)
    picks = []
    for _ in range(n):
        node = max(sorted(free, key=str), key=lambda nd: free[nd] / (count[nd] + 1))
        count[node] += 1
        picks.append(node)
    # (rounded down to Ray's granularity: a hair over the free CPUs would never start)
    out = [(nd, math.floor(min(1.0, free[nd] / count[nd]) * 1e4) / 1e4) for nd in picks]
    return out if all(c >= 0.1 for _, c in out) else None


def _greedy(free: dict[str, float], n: int, cpus: float) -> list[tuple[str, float]] | None:
    """Round-robin over the nodes, each actor on the next node with ``cpus`` free."""
    left = dict(free)
    nodes = sorted(left, key=str)
    out = []
    for k in range(n):
        for node in nodes[k % len(nodes):] + nodes[:k % len(nodes)]:
            if left[node] + 1e-9 >= cpus:
                out.append((node, cpus))
                left[node] -= cpus
                break
        else:
            return None
    return out
