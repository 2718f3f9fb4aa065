"""CPU time of threads: what a load generator (the client) spends, so a result can say when
the client, not the server, set the pace.

The client is the sending threads plus the process's *helper* threads that work for every
client (the remote models' HTTP loop registers itself with :func:`register_helper`).

Example:
    >>> t0 = helpers_cpu_s(); ...; helpers_cpu_s() - t0     # CPU the HTTP loop used meanwhile
"""

from __future__ import annotations

import os
import threading
import time
import weakref

__all__ = ["thread_cpu_s", "register_helper", "helpers_cpu_s", "cores_busy_s",
           "process_cpu_s"]

_HELPERS: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def thread_cpu_s(thread: threading.Thread | None) -> float:
    """CPU seconds ``thread`` has used so far (0 when it is not running)."""
    if thread is None or thread.ident is None or not thread.is_alive():
        return 0.0
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (OSError, AttributeError, ProcessLookupError):
        return 0.0


def register_helper(thread: threading.Thread) -> None:
    """Count ``thread`` as part of every client's CPU (e.g. the remote HTTP client's loop)."""
    _HELPERS.add(thread)


def helpers_cpu_s() -> float:
    """CPU seconds the live helper threads have used so far (0 when there are none)."""
    return sum(thread_cpu_s(t) for t in list(_HELPERS))


def cores_busy_s(cores: set[int] | None = None) -> tuple[float, float] | None:
    """(busy, stolen) CPU seconds so far of ``cores`` (default: those this process may run
    on), from ``/proc/stat``: busy is user + nice + system + irq + softirq, stolen is what
    the hypervisor gave other guests. None where there is no ``/proc/stat``."""
    try:
        cores = cores if cores is not None else os.sched_getaffinity(0)
        with open("/proc/stat") as f:
            lines = f.readlines()
    except (OSError, AttributeError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = steal = 0
    for line in lines:
        name = line.split(" ", 1)[0]
        if not name.startswith("cpu") or name == "cpu":
            continue
        if int(name[3:]) not in cores:
            continue
        v = [int(x) for x in line.split()[1:9]]
        busy += v[0] + v[1] + v[2] + v[5] + v[6]
        steal += v[7]
    return busy / tick, steal / tick


def process_cpu_s() -> float:
    """CPU seconds this process (every thread) has used so far."""
    t = os.times()
    return t.user + t.system
