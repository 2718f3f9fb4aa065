"""Process-wide interpreter settings that keep batching latency low next to other work.

An engine shares its process (and the GIL) with whatever else runs there: a Streamlit
server building charts, a notebook, a load generator. Three CPython defaults then show up
in the tail latency:

* the GIL switch interval (5 ms): a thread woken at a batch deadline can wait that long
  for a CPU-bound thread to let go, several times per batch;
* full garbage collections, which walk every long-lived object (a web server's heap) while
  holding the GIL: 50-100 ms pauses were seen in the dashboard's process;
* the collector's trigger (700 net new container objects): a queue that grows under
  overload *is* net new objects (a Future, its Condition, a request record per request), so
  collections come ever more often and each walks the whole backlog. On the MLP at 32k
  req/s offered, the defaults gave 12 full collections of ~90 ms in 10 s and the engine
  served 16k req/s; with the thresholds below, 1 full collection and 29k req/s.

:func:`tune_for_serving` lowers the switch interval, moves everything alive at start-up
into the collector's permanent generation (``gc.freeze``), so full collections only walk
what was allocated since, and raises the collection thresholds (cyclic garbage is still
collected, less often: the young generation holds at most ~50k objects, a few MB). It
changes the whole process, so it is opt-in: the dashboard and the benchmarks call it;
notebooks and scripts may.

Example:
    >>> from core.serving import tune_for_serving
    >>> tune_for_serving()
    {'switch_interval_s': 0.001, 'frozen_objects': 183211, 'gc_thresholds': (50000, 50, 100)}
"""

from __future__ import annotations

import gc
import sys
from typing import Any

__all__ = ["tune_for_serving", "limit_malloc_arenas"]

#: glibc's ``mallopt`` parameter for the most malloc arenas (M_ARENA_MAX).
_M_ARENA_MAX = -8


def tune_for_serving(switch_interval_s: float = 0.001,
                     gc_thresholds: tuple[int, int, int] = (50_000, 50, 100),
                     ) -> dict[str, Any]:
    """Lower the GIL switch interval, freeze start-up objects out of the GC's way and
    raise the collection thresholds (see the module docstring for why and by how much)."""
    if not 0 < switch_interval_s <= 0.1:
        raise ValueError(f"switch_interval_s must be > 0 and <= 0.1, got {switch_interval_s!r}")
    if (len(gc_thresholds) != 3 or not all(isinstance(t, int) and t >= 1 for t in gc_thresholds)):
        raise ValueError("gc_thresholds must be three ints >= 1 (as for gc.set_threshold), "
                         f"got {gc_thresholds!r}")
    sys.setswitchinterval(switch_interval_s)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*gc_thresholds)
    return {"switch_interval_s": sys.getswitchinterval(), "frozen_objects": gc.get_freeze_count(),
            "gc_thresholds": gc.get_threshold()}


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (as ``MALLOC_ARENA_MAX=2`` would), before the process
    starts its threads; True when set. By default glibc gives each thread that allocates an
    arena of its own, up to 8 per core, and keeps what a burst freed in each: the engine
    server, after seven rounds of floods of large requests, rested at 1,191 MiB (from 262)
    with the defaults and at 680 MiB with two arenas (an adversary; ``python -m
    benchmarks.flood_rss``). Left alone when ``MALLOC_ARENA_MAX`` is set (glibc read it
    already) or the C library is not glibc."""
    import os

    from core.models.memory import libc_function
    mallopt = libc_function("mallopt")
    if os.environ.get("MALLOC_ARENA_MAX") or mallopt is None:
        return False
    return bool(mallopt(_M_ARENA_MAX, int(arenas)))
