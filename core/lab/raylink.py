"""Connecting to a Ray cluster (Ray imported only here, when asked): shared by the load
agents (:mod:`core.lab.agents`) and the engine replicas (:mod:`core.cluster`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

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
    if ray.is_initialized():
        now = ray.get_runtime_context().gcs_address
        # (by port: the cluster reports its node's address, the caller may say 127.0.0.1)
        if address not in (None, "auto") and not address.startswith("ray://") \
                and address.rpartition(":")[2] != now.rpartition(":")[2]:
            raise ConfigError(f"this process is connected to the Ray cluster at {now}, not "
                              f"{address}; call ray.shutdown() first to use another cluster")
        return ray
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
